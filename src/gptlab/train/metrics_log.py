"""A run's ``metrics.jsonl``: one JSON record per line, appended as training goes.

The log is not fsynced line by line (a crash or a full disk can leave a partial last line), so
reading it skips an unparsable last line, and resuming rewrites it to the records up to the step
of the checkpoint resumed from. A fresh run starts an empty log: a run that died before its
first checkpoint leaves nothing to resume, and its records are not this run's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gptlab.errors import CheckpointError, DataError
from gptlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file, in order. An unparsable *last* line (a write cut short)
    is skipped; one elsewhere is a DataError naming ``file:line``."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    records: list[dict] = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if index == len(numbered) - 1:
                log.debug("%s:%d: skipping a partial last record", path, number)
                break
            raise DataError(f"{path}:{number}: not a JSON record")
        records.append(record)
    return records


class MetricsLog:
    """Appends records to ``RUN/metrics.jsonl``. Build it with :meth:`fresh` or :meth:`resumed`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def fresh(cls, run_dir: Path) -> MetricsLog:
        """An empty log for a new run (a dead run's leftover log is replaced)."""
        path = run_dir / METRICS_FILE
        if path.exists():
            log.info("%s: starting a new log (the one there belongs to a run with no checkpoint)", path)
            _rewrite(path, [])
        return cls(path)

    @classmethod
    def resumed(cls, run_dir: Path, step: int) -> MetricsLog:
        """The log of a run resumed at ``step``: records after it (the lost tail) are dropped."""
        path = run_dir / METRICS_FILE
        if path.exists():
            try:
                records = read_metrics(path)
            except DataError as exc:
                log.warning("%s; starting a new log", exc)
                records = []
            _rewrite(path, [r for r in records if r.get("step", 0) <= step])
        return cls(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (CheckpointError when the disk refuses it)."""
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot append metrics ({exc.strerror})") from None


def _rewrite(path: Path, records: list[dict]) -> None:
    try:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot rewrite the metrics log ({exc.strerror})") from None
