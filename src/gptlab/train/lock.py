"""One writer per run directory: an OS lock that ``train``, ``finetune`` and ``--resume`` hold.

The lock is ``fcntl.flock`` on ``RUN/.lock``. The kernel drops it when its holder's file is
closed, which happens when the process exits however it exits (``kill -9`` included), so a
crash never leaves a stale lock to clean up. The file itself stays, holding the PID of the last
writer for the error message a second writer gets.

Inside one process the lock is shared: building a second trainer on a run while an earlier
trainer object of the same process still lives (a notebook, the tests' resume-in-process) takes
it over rather than refusing. On systems without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path

from gptlab.errors import CheckpointError
from gptlab.fileio import current_umask

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"

_held: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` or until garbage collected."""

    def __init__(self, run_dir: Path, fd: int | None, created: Path | None) -> None:
        self.run_dir = run_dir
        self._fd = fd
        self.created = created  # the outermost folder that taking the lock created (None: none)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self, *, remove_if_unused: bool = False) -> None:
        """Let go of the lock. With ``remove_if_unused``, a run directory this lock created and
        that holds nothing but the lock file is removed too (a run that failed before it began)."""
        if self._fd is None:
            return
        os.close(self._fd)  # closing the only descriptor of the open file drops the flock
        self._fd = None
        key = str(self.run_dir.resolve())
        if _held.get(key) is self:
            del _held[key]
        if remove_if_unused and self.created is not None:
            try:
                if [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
                    (self.run_dir / LOCK_FILE).unlink()
                    folder = self.run_dir
                    while True:  # and the parents it created, while empty
                        folder.rmdir()
                        if folder == self.created:
                            break
                        folder = folder.parent
            except OSError:
                pass

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run(run_dir: str | Path) -> RunLock:
    """Take the run directory's lock, creating the directory if needed.

    Raises CheckpointError naming the holder's PID when another process is writing the run.
    """
    run_dir = Path(run_dir)
    created = None
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        created = folder
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from None
    key = str(run_dir.resolve())
    mine = _held.get(key)
    if mine is not None and mine.held:
        return mine
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.debug("no fcntl: %s is not locked against a second writer", run_dir)
        return RunLock(run_dir, None, created)
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open the run's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", errors="replace").strip() or "unknown"
        os.close(fd)
        raise CheckpointError(
            f"{run_dir} is being written by another gptlab process (PID {holder}): wait for it to finish "
            "or stop it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    lock = RunLock(run_dir, fd, created)
    _held[key] = lock
    return lock
