"""Corpus: where training text comes from, as documents, split into train and val.

1. **Documents.** A source is a text file, a directory of text files, a ``.jsonl`` file of
   ``{"text": ...}`` records, or ``None``: the embedded default corpus, the functions and methods
   of the Python standard library's own source code (present wherever Python is), one document
   each (see :mod:`gptlab.data.functions`).
2. **Split.** Documents go to train or val: whole documents when there are several (the default
   corpus's by file: all the functions of a file go to the same side), the last ``val_fraction``
   of the characters when there is one (as nanoGPT splits tinyshakespeare).

Documents are produced lazily, in pieces of about ``PIECE_CHARS`` characters, so a corpus is
never held in memory whole; the one exception is the default corpus's functions (7 MB for
Python 3.11), kept once parsed, since preparing a run reads them three times.
``gptlab.data.shards`` turns the pieces into token shards.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gptlab.data.functions import iter_functions
from gptlab.errors import ConfigError, DataError
from gptlab.fileio import iter_jsonl

logger = logging.getLogger(__name__)

PIECE_CHARS = 1 << 18  # documents are tokenized in pieces of about this many characters
SNIFF_BYTES = 8192  # a NUL byte in a file's first bytes marks it as binary

# Directories of the standard library left out of the default corpus: installed third-party
# packages, the test suites (which include lib2to3's deliberately odd test data), and modules
# that are mostly generated data rather than code (codec tables in encodings/, the help texts
# in pydoc_data/), which would otherwise fill a size-capped corpus with tables.
EXCLUDED_STDLIB_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
     "encodings", "pydoc_data"}
)

Side = Literal["train", "val"]
Pieces = Iterator[str]  # one document's text, in order, in pieces of about PIECE_CHARS characters
# (group, name, pieces) of one document: documents of one group go to the same side of the split
# (the functions of one stdlib file); elsewhere every document is a group of its own
Source = tuple[int, str, Pieces]

# ---------------------------------------------------------------------------------------------
# 1. documents


@dataclass(frozen=True)
class Document:
    """One unit of the corpus: a file, one record of a ``.jsonl`` file, or one function of the
    default corpus."""

    name: str  # path relative to the source ("file.jsonl:LINE", "stdlib/file.py:LINE"); hashed
    text: str


def default_corpus_files(max_bytes: int | None = None) -> list[Path]:
    """The ``.py`` files of this interpreter's standard library that the default corpus reads.

    Sorted by POSIX path relative to the stdlib root; site-packages, dist-packages and test
    directories are left out, as are files that are not UTF-8. With ``max_bytes``, files are
    taken in that order until their cumulative size reaches ``max_bytes``.
    """
    return [path for _, path, _ in _iter_default_corpus(max_bytes)]


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _default_corpus_candidates() -> list[tuple[str, Path]]:
    """(relative name, path) of every file the default corpus may take, in order."""
    root = _stdlib_root()
    candidates: list[tuple[str, Path]] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_STDLIB_DIRS and not d.startswith(".")]
        for file in files:
            if file.endswith(".py"):
                path = Path(directory, file)
                candidates.append((path.relative_to(root).as_posix(), path))
    return sorted(candidates)


def source_bytes(source: str | Path | None, pattern: str = "**/*") -> int:
    """About how many bytes of text ``source`` holds (file sizes; the ``text`` fields of a
    ``.jsonl``), without reading it into memory: to tell whether ``max_bytes`` cuts it. A
    missing source counts 0 (reading it is what reports the error)."""
    if source is None:
        return sum(path.stat().st_size for _, path in _default_corpus_candidates())
    path = Path(source)
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.glob(pattern)
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if path.suffix == ".jsonl":
            return sum(len(r["text"].encode("utf-8")) for _, r in iter_jsonl(path)
                       if isinstance(r, dict) and isinstance(r.get("text"), str))
        return path.stat().st_size
    except (OSError, DataError):
        return 0


def iter_stdlib_sources(max_bytes: int | None = None) -> Iterator[Document]:
    """The default corpus's files whole, one document per non-empty file (name: the path
    relative to the stdlib root), in order, ``max_bytes`` counting file sizes."""
    for name, _, text in _iter_default_corpus(max_bytes):
        if text:
            yield Document(name, text)


def _iter_default_functions(max_bytes: int | None) -> Iterator[Source]:
    """(file index, "path.py:LINE", pieces) of each function of the default corpus, the file
    index counting the non-empty files read; ``max_bytes`` counts the functions' bytes."""
    budget = _ByteBudget(max_bytes)
    for index, name, text in _stdlib_functions():
        if budget.exhausted:
            return
        budget.spend(len(text.encode("utf-8")))
        yield index, name, _split_text(text)


@functools.cache
def _stdlib_functions() -> tuple[tuple[int, str, str], ...]:
    """Every function of the default corpus, parsed once per process (7 MB of text for Python
    3.11; the corpus is read three times when a run prepares its data)."""
    return tuple(
        (index, f"{document.name}:{function.line}", function.text)
        for index, document in enumerate(iter_stdlib_sources())
        for function in iter_functions(document.text)
    )


def _iter_default_corpus(max_bytes: int | None) -> Iterator[tuple[str, Path, str]]:
    """(relative name, path, text) of each default-corpus file, in order, within the budget."""
    budget = _ByteBudget(max_bytes)
    for name, path in _default_corpus_candidates():
        if budget.exhausted:
            return
        data = path.read_bytes()
        text = _decode_text(data)
        if text is None:
            logger.debug("default corpus: skipping %s (not UTF-8 text)", path)
            continue
        budget.spend(len(data))
        yield name, path, text


def iter_documents(
    source: str | Path | None, *, pattern: str = "**/*", max_bytes: int | None = None
) -> Iterator[Document]:
    """The documents of ``source``, in a deterministic order.

    ``None``: the default corpus (one document per function or method of the stdlib's files,
    ``max_bytes`` counting the functions' text; see :mod:`gptlab.data.functions`). A ``.jsonl`` file: one document
    per line's ``"text"`` field. Any other file: one document. A directory: its files matching
    ``pattern`` (hidden ones skipped), sorted by relative path, binaries skipped with a warning.
    Empty documents are skipped. ``max_bytes`` keeps whole documents until their UTF-8 size
    reaches it; a single text file is cut to its first ``max_bytes`` bytes.

    Raises DataError (naming the path) for a missing path, a binary or non-UTF-8 file given
    directly, a malformed ``.jsonl`` line (naming file:line), or a corpus with no text.
    """
    found = False
    for _, name, pieces in _iter_sources(source, pattern, max_bytes):
        text = "".join(pieces)
        if text:
            found = True
            yield Document(name, text)
    if not found:
        raise DataError(f"{_describe(source)}: the corpus is empty (no documents with text)")


def _iter_sources(source: str | Path | None, pattern: str, max_bytes: int | None) -> Iterator[Source]:
    """(group, name, pieces) for each non-empty document of ``source``. A streamed single file
    may still turn out empty; callers check. Consume each document's pieces before the next."""
    if source is None:
        yield from _iter_default_functions(max_bytes)
        return
    for group, (name, pieces) in enumerate(_iter_path(Path(source), pattern, _ByteBudget(max_bytes))):
        yield group, name, pieces


def _iter_path(path: Path, pattern: str, budget: _ByteBudget) -> Iterator[tuple[str, Pieces]]:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        yield from _iter_directory(path, pattern, budget)
    elif path.suffix == ".jsonl":
        yield from _iter_jsonl(path, path.name, budget)
    else:
        _check_not_binary(path)
        yield path.name, _file_pieces(path, budget)


def _iter_directory(root: Path, pattern: str, budget: _ByteBudget) -> Iterator[tuple[str, Pieces]]:
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.glob(pattern)
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    for name, path in files:
        if budget.exhausted:
            return
        if path.suffix == ".jsonl":
            yield from _iter_jsonl(path, name, budget)
            continue
        data = path.read_bytes()
        text = _decode_text(data)
        if text is None:
            logger.warning("%s: skipping binary or non-UTF-8 file", path)
            continue
        budget.spend(len(data))
        if text:
            yield name, _split_text(text)


def _iter_jsonl(path: Path, name: str, budget: _ByteBudget) -> Iterator[tuple[str, Pieces]]:
    for line_number, record in iter_jsonl(path):
        if budget.exhausted:
            return
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{line_number}: expected an object with a "text" string')
        text = record["text"]
        budget.spend(len(text.encode("utf-8")))
        if text:
            yield f"{name}:{line_number}", _split_text(text)


def _file_pieces(path: Path, budget: _ByteBudget) -> Pieces:
    """Stream a text file in pieces that end at a line break where one is near (exactly as
    :func:`_split_text` would cut it), cut to the byte budget at a character boundary."""
    try:
        with open(path, encoding="utf-8", newline="\n") as f:  # newline="\n": no translation
            while not budget.exhausted:
                piece = f.read(PIECE_CHARS)
                if not piece:
                    return
                if not piece.endswith("\n"):
                    piece += f.readline(PIECE_CHARS)
                if "\x00" in piece:
                    raise DataError(f"{path}: looks binary (contains NUL bytes)")
                piece = budget.take(piece)
                if piece:
                    yield piece
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text") from e


def _split_text(text: str) -> Pieces:
    """Pieces of ``text``: PIECE_CHARS characters, extended to the next line break if one
    comes within another PIECE_CHARS characters."""
    piece_chars, start = PIECE_CHARS, 0
    while start < len(text):
        end = min(start + piece_chars, len(text))
        if end < len(text) and text[end - 1] != "\n":
            newline = text.find("\n", end, end + piece_chars)
            end = newline + 1 if newline != -1 else min(end + piece_chars, len(text))
        yield text[start:end]
        start = end


def _decode_text(data: bytes) -> str | None:
    """``data`` as text, or None when it is not UTF-8 or contains NUL bytes (binary)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _check_not_binary(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if b"\x00" in head:
        raise DataError(f"{path}: looks binary (contains NUL bytes), expected UTF-8 text")


class _ByteBudget:
    """Counts UTF-8 bytes taken from the corpus against an optional limit."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"max_bytes must be a positive integer or None, got {limit!r}")
        self.limit, self.used = limit, 0

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def spend(self, n_bytes: int) -> None:
        self.used += n_bytes

    def take(self, text: str) -> str:
        """``text``, cut so the budget is not exceeded (at a character boundary), and spent."""
        data = text.encode("utf-8")
        if self.limit is not None and self.used + len(data) > self.limit:
            data = data[: self.limit - self.used]
            text = data.decode("utf-8", errors="ignore")  # drops only a cut trailing character
        self.used += len(data)
        return text


def _describe(source: str | Path | None) -> str:
    return f"python {platform.python_version()} stdlib functions" if source is None else str(source)


# ---------------------------------------------------------------------------------------------
# 2. train/val split


@dataclass(frozen=True)
class CorpusSplit:
    """A source's documents divided into train and val; each side can be iterated many times.

    With n ≥ 2 documents the split is by document group (a document of its own, or a file of the
    default corpus with all its functions): ``round(n * val_fraction)`` evenly spaced groups of
    the n (clamped to 1 .. n-1, always including the last) are val. A single document is split
    by characters: the first ``int(n_chars * (1 - val_fraction))`` are train, the rest val.
    """

    source: str | Path | None
    pattern: str
    max_bytes: int | None
    val_fraction: float
    n_documents: int
    val_groups: frozenset[int]  # by-document split: the groups whose documents are val
    split_at: int | None  # by-character split: first val character
    chars: dict[str, int]  # characters per side
    n_val_documents: int

    @property
    def by_characters(self) -> bool:
        return self.split_at is not None

    @property
    def documents(self) -> dict[str, int]:
        """Number of documents on each side (1 and 1 for a split by characters)."""
        if self.by_characters:
            return {"train": 1, "val": 1}
        return {"train": self.n_documents - self.n_val_documents, "val": self.n_val_documents}

    def train(self) -> Iterator[Document]:
        """The train documents, in order."""
        return self._documents("train")

    def val(self) -> Iterator[Document]:
        """The val documents, in order."""
        return self._documents("val")

    def _documents(self, side: Side) -> Iterator[Document]:
        for name, pieces in self.iter_pieces(side):
            yield Document(name, "".join(pieces))

    def iter_pieces(self, side: Side) -> Iterator[tuple[str, Pieces]]:
        """(name, pieces) of each document of ``side``, streamed; consume pieces in order."""
        sources = _iter_sources(self.source, self.pattern, self.max_bytes)
        if self.split_at is not None:
            _, name, pieces = next(sources)
            start, stop = (0, self.split_at) if side == "train" else (self.split_at, None)
            yield name, _clip(pieces, start, stop)
            return
        for group, name, pieces in sources:
            if (group in self.val_groups) == (side == "val"):
                yield name, pieces
            else:
                for _ in pieces:  # skip, but keep the stream in step
                    pass


def _clip(pieces: Pieces, start: int, stop: int | None) -> Pieces:
    """The characters ``[start, stop)`` of the text made by ``pieces``, still as pieces."""
    position = 0
    for piece in pieces:
        end = position + len(piece)
        lo, hi = max(start, position), end if stop is None else min(stop, end)
        if lo < hi:
            yield piece[lo - position : hi - position]
        position = end
        if stop is not None and position >= stop:
            return


def split_documents(
    source: str | Path | None,
    val_fraction: float = 0.1,
    *,
    pattern: str = "**/*",
    max_bytes: int | None = None,
) -> CorpusSplit:
    """Decide the train/val split of ``source`` (see :class:`CorpusSplit`) in one streaming pass.

    Raises ConfigError for ``val_fraction`` outside (0, 1), DataError for the reasons listed in
    :func:`iter_documents` and for a single document too short to split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    documents = [(group, sum(len(p) for p in pieces)) for group, _, pieces in _iter_sources(source, pattern, max_bytes)]
    documents = [(group, n) for group, n in documents if n > 0]  # only a streamed single file can be empty here
    doc_chars = [n for _, n in documents]
    if not documents:
        raise DataError(f"{_describe(source)}: the corpus is empty (no documents with text)")
    n_groups = documents[-1][0] + 1
    if len(documents) == 1:
        val_groups: frozenset[int] = frozenset()
        split_at: int | None = int(doc_chars[0] * (1 - val_fraction))
        if not 0 < split_at < doc_chars[0]:
            raise DataError(
                f"{_describe(source)}: a single document of {doc_chars[0]} characters is too short "
                f"to split with val_fraction={val_fraction}"
            )
        val_chars, n_val_documents = doc_chars[0] - split_at, 1
    else:
        if n_groups < 2:
            raise DataError(f"{_describe(source)}: all {len(documents)} documents come from one file, "
                            "so the split by file has nothing to hold out")
        n_val = min(n_groups - 1, max(1, round(n_groups * val_fraction)))
        val_groups, split_at = frozenset((j + 1) * n_groups // n_val - 1 for j in range(n_val)), None
        val_chars = sum(n for group, n in documents if group in val_groups)
        n_val_documents = sum(group in val_groups for group, _ in documents)
    return CorpusSplit(
        source=source,
        pattern=pattern,
        max_bytes=max_bytes,
        val_fraction=val_fraction,
        n_documents=len(documents),
        val_groups=val_groups,
        split_at=split_at,
        chars={"train": sum(doc_chars) - val_chars, "val": val_chars},
        n_val_documents=n_val_documents,
    )
