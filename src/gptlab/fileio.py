"""Crash-safe file writing and hashing, shared by tokenizers, prepared data and checkpoints."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gptlab.errors import DataError


def make_output_folder(path: str | Path) -> Path:
    """Create the folder ``path`` (and its parents) if needed; DataError naming it if that fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{path}: cannot create the output folder ({exc.strerror})") from None
    return path


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a moment in which threads see 022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` the mode an ordinary ``open``/``mkdir`` would have: 0644 / 0755 under umask 022.

    ``tempfile`` creates 0600 files and 0700 folders, and safetensors writes 0600: a checkpoint
    renamed from either would be unreadable by other users and containers.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


def temp_dir(parent: str | Path, name: str) -> Path:
    """A new hidden temporary folder ``.NAME.tmp-PID-XXXX`` in ``parent`` (mode per the umask).

    The PID in its name lets :func:`remove_leftovers` tell a crashed writer's folder from a live one's.
    """
    path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-{os.getpid()}-"))
    follow_umask(path)
    return path


def aside_path(path: Path) -> Path:
    """Where a folder about to be replaced is moved first: ``.NAME.old-PID`` beside it."""
    return path.with_name(f".{path.name}.old-{os.getpid()}")


_LEFTOVER_PID = re.compile(r"\.(?:tmp|old)-(\d+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(parent: str | Path, name_glob: str) -> None:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` folders (``NAME`` matching ``name_glob``) that this
    process left, or whose writer is gone (a crash); another live process's are never touched."""
    parent = Path(parent)
    for stale in [*parent.glob(f".{name_glob}.tmp-*"), *parent.glob(f".{name_glob}.old-*")]:
        match = _LEFTOVER_PID.search(stale.name)
        pid = int(match.group(1)) if match else None
        if pid is None or pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota) is full, as an OSError or a library's message."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` fill a temporary file in ``path``'s directory, fsync it and ``os.replace``
    it onto ``path``: readers see either the old file or the complete new one, never a part.
    The file gets the umask's mode (0644 under 022). The temporary file is removed if anything
    fails."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        follow_umask(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSONL file, streamed.

    Raises DataError naming ``file:line`` for a line that is not JSON, and for a file that is
    missing or not UTF-8. What a record must contain is the caller's to check.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            yield from json_lines(f, path)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def json_lines(lines: Iterable[str], path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line; DataError naming ``path:line`` for a
    line that is not JSON."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
