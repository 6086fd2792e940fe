"""Experiment tracking beside ``metrics.jsonl``: TensorBoard, CSV and Weights & Biases.

As Hugging Face Trainer's ``report_to``: ``--log-to tensorboard`` (repeatable, or comma-separated:
``--log-to tensorboard,csv``) sends every record the trainer writes to ``metrics.jsonl`` to each
tracker too, under HF-like names: ``loss`` → ``train/loss``, ``lr`` → ``train/lr``,
``tokens_per_s`` → ``train/tokens_per_s``, ``mfu`` → ``train/mfu`` (model FLOPs utilisation, on a
GPU in bf16), ``val_loss`` → ``val/loss``, ``elapsed`` → ``time/elapsed_s``.

* ``tensorboard`` writes event files into ``RUN/tensorboard/`` (``tensorboard --logdir RUN``);
  it needs the ``tensorboard`` package (the ``track`` extra).
* ``csv`` writes ``RUN/metrics.csv``: one row per record, a column per key, empty where a record
  has no value (validation rows have no ``loss``).
* ``wandb`` logs to a Weights & Biases run named after the run directory, with the training
  config; it needs the ``wandb`` package (installed and logged in: ``wandb login``, or
  ``WANDB_MODE=offline``).

A tracker whose package is missing is a ConfigError before training starts. Every record is
flushed as it is logged, so a run that dies keeps what it logged.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gptlab.errors import ConfigError

TRACKERS = ("tensorboard", "csv", "wandb")
# metrics.jsonl key → the name trackers show it under (others keep their key, under "train/")
NAMES = {
    "loss": "train/loss",
    "lr": "train/lr",
    "tokens_per_s": "train/tokens_per_s",
    "mfu": "train/mfu",
    "val_loss": "val/loss",
    "elapsed": "time/elapsed_s",
}
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
_PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard (or gptlab[track])"),
             "wandb": ("wandb", "pip install wandb")}


def parse_trackers(value: str | Iterable[str] | None) -> list[str]:
    """Tracker names from ``--log-to`` values: a string or a list, each possibly comma-separated.
    Duplicates go, order stays; an unknown name is a ConfigError."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"log_to must be tracker names, got {item!r}")
        for name in (part.strip().lower() for part in item.split(",")):
            if not name or name in names:
                continue
            if name not in TRACKERS:
                raise ConfigError(f"unknown tracker {name!r} in log_to (choose from {', '.join(TRACKERS)})")
            names.append(name)
    return names


def tracker_name(key: str) -> str:
    """The name a metrics.jsonl key is shown under (see the module docs)."""
    return NAMES.get(key, f"train/{key}")


class Tracker(Protocol):
    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` (tracker names → numbers) at ``step``."""

    def close(self) -> None:
        """Flush and release what the tracker holds."""


class TensorBoardTracker:
    """Scalars in TensorBoard event files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class CSVTracker:
    """One row per record in ``path``; the header grows (the file is rewritten) when a new key appears.

    A resumed run keeps the rows of steps before its first record, as ``metrics.jsonl`` keeps
    those up to the checkpoint.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, Any]] | None = None

    def _earlier_rows(self, step: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            self.columns = list(reader.fieldnames or ["step"])
            return [{k: v for k, v in row.items() if v != ""} for row in reader if int(row["step"]) < step]

    def log(self, step: int, values: Mapping[str, float]) -> None:
        first = self.rows is None
        rows = self.rows = self._earlier_rows(step) if self.rows is None else self.rows
        row = {"step": step, **values}
        rows.append(row)
        new = [key for key in row if key not in self.columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if new or first:  # (re)write the whole file: a new header, or a resumed run's rows cut
            self.columns += new
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)
        else:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)

    def close(self) -> None:
        pass


class WandbTracker:
    """A Weights & Biases run named after the run directory, with the training config."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(name=run_dir.name, dir=str(run_dir), config=dict(config))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


class Tracking:
    """The trackers of one run. Construction checks the packages (a ConfigError names what to
    install); the trackers open on the first record, so nothing is written before training logs.
    ``enabled=False`` (ranks other than 0) makes every call a no-op."""

    def __init__(self, names: Sequence[str], run_dir: str | Path, config: Mapping[str, Any] | None = None,
                 *, enabled: bool = True) -> None:
        self.names = parse_trackers(names) if enabled else []
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})
        self._trackers: list[Tracker] | None = None
        for name in self.names:
            if name in _PACKAGES:
                module, install = _PACKAGES[name]
                if importlib.util.find_spec(module) is None:
                    raise ConfigError(f"--log-to {name} needs the {module} package: {install}")

    def _open(self) -> list[Tracker]:
        trackers: list[Tracker] = []
        for name in self.names:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(self.run_dir / TENSORBOARD_DIR))
            elif name == "csv":
                trackers.append(CSVTracker(self.run_dir / CSV_FILE))
            else:
                trackers.append(WandbTracker(self.run_dir, self.config))
        return trackers

    def log(self, record: Mapping[str, Any]) -> None:
        """Send one metrics.jsonl record (``step`` and numbers) to every tracker."""
        if not self.names:
            return
        if self._trackers is None:
            self._trackers = self._open()
        values = {tracker_name(key): float(value) for key, value in record.items()
                  if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        for tracker in self._trackers:
            tracker.log(int(record["step"]), values)

    def close(self) -> None:
        for tracker in self._trackers or []:
            tracker.close()
        self._trackers = None
