"""Corpus → token shards → random sliding windows.

The story, in the order of this file:

1. **Documents.** A source is a text file, a directory of text files, a ``.jsonl`` file of
   ``{"text": ...}`` records, or ``None``: the embedded default corpus, the Python standard
   library's own source code (present wherever Python is).
2. **Split.** Documents go to train or val: whole documents when there are several, the last
   ``val_fraction`` of the characters when there is one (as nanoGPT splits tinyshakespeare).
3. **Prepare.** Each side is tokenized in pieces (~256k characters each) and appended to
   ``train.bin`` / ``val.bin``: raw uint16/uint32 token arrays, one ``<|endoftext|>`` after each
   document, with ``tokenizer.json`` and ``manifest.json`` beside them. Neither the whole text
   nor the whole token stream is ever held in memory.
4. **Windows.** :class:`WindowSampler` draws random ``(x, y)`` windows from a memory-mapped
   shard, deterministically from a seed and a batch counter, so training resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from tqdm.auto import tqdm

from gptlab.fileio import atomic_write_text
from gptlab.errors import ConfigError, DataError, TokenizerError
from gptlab.tokenizer import (
    TOKENIZER_FILE,
    Tokenizer,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

logger = logging.getLogger(__name__)

PIECE_CHARS = 1 << 18  # documents are tokenized in pieces of about this many characters
BATCH_CHARS = 1 << 21  # pieces go to the tokenizer (in parallel for BPE) in batches of about this many
SNIFF_BYTES = 8192  # a NUL byte in a file's first bytes marks it as binary
DEFAULT_BPE_VOCAB_SIZE = 2048
MANIFEST_FORMAT = 1
MANIFEST_FILE, TRAIN_FILE, VAL_FILE = "manifest.json", "train.bin", "val.bin"

# Directories of the standard library left out of the default corpus: installed third-party
# packages, and the test suites (which include lib2to3's deliberately odd test data).
EXCLUDED_STDLIB_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)

Side = Literal["train", "val"]
Pieces = Iterator[str]  # one document's text, in order, in pieces of about PIECE_CHARS characters


# ---------------------------------------------------------------------------------------------
# 1. documents


@dataclass(frozen=True)
class Document:
    """One unit of the corpus: a file, or one record of a ``.jsonl`` file."""

    name: str  # path relative to the source (or "file.jsonl:LINE"); part of the corpus hash
    text: str


def default_corpus_files(max_bytes: int | None = None) -> list[Path]:
    """The ``.py`` files of this interpreter's standard library that form the default corpus.

    Sorted by POSIX path relative to the stdlib root; site-packages, dist-packages and test
    directories are left out, as are files that are not UTF-8. With ``max_bytes``, files are
    taken in that order until their cumulative size reaches ``max_bytes``.
    """
    return [path for _, path, _ in _iter_default_corpus(max_bytes)]


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _iter_default_corpus(max_bytes: int | None) -> Iterator[tuple[str, Path, str]]:
    """(relative name, path, text) of each default-corpus file, in order, within the budget."""
    root = _stdlib_root()
    candidates: list[tuple[str, Path]] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_STDLIB_DIRS and not d.startswith(".")]
        for file in files:
            if file.endswith(".py"):
                path = Path(directory, file)
                candidates.append((path.relative_to(root).as_posix(), path))
    candidates.sort()
    budget = _ByteBudget(max_bytes)
    for name, path in candidates:
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

    ``None``: the default corpus (one document per stdlib file). A ``.jsonl`` file: one document
    per line's ``"text"`` field. Any other file: one document. A directory: its files matching
    ``pattern`` (hidden ones skipped), sorted by relative path, binaries skipped with a warning.
    Empty documents are skipped. ``max_bytes`` keeps whole documents until their UTF-8 size
    reaches it; a single text file is cut to its first ``max_bytes`` bytes.

    Raises DataError (naming the path) for a missing path, a binary or non-UTF-8 file given
    directly, a malformed ``.jsonl`` line (naming file:line), or a corpus with no text.
    """
    found = False
    for name, pieces in _iter_sources(source, pattern, max_bytes):
        text = "".join(pieces)
        if text:
            found = True
            yield Document(name, text)
    if not found:
        raise DataError(f"{_describe(source)}: the corpus is empty (no documents with text)")


def _iter_sources(
    source: str | Path | None, pattern: str, max_bytes: int | None
) -> Iterator[tuple[str, Pieces]]:
    """(name, pieces) for each non-empty document of ``source``. A streamed single file may
    still turn out empty; callers check. Consume each document's pieces before the next."""
    budget = _ByteBudget(max_bytes)
    if source is None:
        for name, _, text in _iter_default_corpus(max_bytes):
            if text:
                yield name, _split_text(text)
        return
    path = Path(source)
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
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if budget.exhausted:
                    return
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line_number}: not valid JSON ({e.msg})") from e
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f'{path}:{line_number}: expected an object with a "text" string')
                text = record["text"]
                budget.spend(len(text.encode("utf-8")))
                if text:
                    yield f"{name}:{line_number}", _split_text(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text") from e


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
    return f"python {platform.python_version()} stdlib" if source is None else str(source)


# ---------------------------------------------------------------------------------------------
# 2. train/val split


@dataclass(frozen=True)
class CorpusSplit:
    """A source's documents divided into train and val; each side can be iterated many times.

    With n ≥ 2 documents the split is by document: ``round(n * val_fraction)`` evenly spaced
    documents (clamped to 1 .. n-1, always including the last) are val. A single document is
    split by characters: the first ``int(n_chars * (1 - val_fraction))`` are train, the rest val.
    """

    source: str | Path | None
    pattern: str
    max_bytes: int | None
    val_fraction: float
    n_documents: int
    val_indices: frozenset[int]  # by-document split: indices of the val documents
    split_at: int | None  # by-character split: first val character
    chars: dict[str, int]  # characters per side

    @property
    def by_characters(self) -> bool:
        return self.split_at is not None

    @property
    def documents(self) -> dict[str, int]:
        """Number of documents on each side (1 and 1 for a split by characters)."""
        if self.by_characters:
            return {"train": 1, "val": 1}
        return {"train": self.n_documents - len(self.val_indices), "val": len(self.val_indices)}

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
            name, pieces = next(sources)
            start, stop = (0, self.split_at) if side == "train" else (self.split_at, None)
            yield name, _clip(pieces, start, stop)
            return
        for index, (name, pieces) in enumerate(sources):
            if (index in self.val_indices) == (side == "val"):
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
    doc_chars = [sum(len(p) for p in pieces) for _, pieces in _iter_sources(source, pattern, max_bytes)]
    doc_chars = [n for n in doc_chars if n > 0]  # only a streamed single file can be empty here
    n = len(doc_chars)
    if n == 0:
        raise DataError(f"{_describe(source)}: the corpus is empty (no documents with text)")
    if n == 1:
        val_indices: frozenset[int] = frozenset()
        split_at: int | None = int(doc_chars[0] * (1 - val_fraction))
        if not 0 < split_at < doc_chars[0]:
            raise DataError(
                f"{_describe(source)}: a single document of {doc_chars[0]} characters is too short "
                f"to split with val_fraction={val_fraction}"
            )
        val_chars = doc_chars[0] - split_at
    else:
        n_val = min(n - 1, max(1, round(n * val_fraction)))
        val_indices, split_at = frozenset((j + 1) * n // n_val - 1 for j in range(n_val)), None
        val_chars = sum(doc_chars[i] for i in val_indices)
    return CorpusSplit(
        source=source,
        pattern=pattern,
        max_bytes=max_bytes,
        val_fraction=val_fraction,
        n_documents=n,
        val_indices=val_indices,
        split_at=split_at,
        chars={"train": sum(doc_chars) - val_chars, "val": val_chars},
    )


# ---------------------------------------------------------------------------------------------
# 3. prepare: token shards on disk


class Manifest(TypedDict):
    """Contents of ``manifest.json``, which describes a prepared directory."""

    format: int
    dtype: str  # "uint16" or "uint32"
    vocab_size: int
    tokenizer_kind: str
    train_tokens: int
    val_tokens: int
    source: str
    source_sha256: str  # over each document's name and text, train documents then val
    documents: dict[str, int]  # {"train": n, "val": n}
    split: str  # "documents" or "characters"
    val_fraction: float
    max_bytes: int | None


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def prepare(
    source: str | Path | None,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    tokenizer_kind: str = "char",
    vocab_size: int = DEFAULT_BPE_VOCAB_SIZE,
    val_fraction: float = 0.1,
    max_bytes: int | None = None,
    pattern: str = "**/*",
    progress: bool = True,
) -> Manifest:
    """Tokenize ``source`` into ``out_dir``: train.bin, val.bin, tokenizer.json, manifest.json.

    Without ``tokenizer``, one of ``tokenizer_kind`` ("char" or "bpe", with ``vocab_size``) is
    trained on the train split only; with one, ``tokenizer_kind`` and ``vocab_size`` are ignored. Text is tokenized with ``allow_special=False`` (a literal
    "<|endoftext|>" in a file is text, not a boundary) and ``<|endoftext|>`` follows each
    document. The manifest is written last and the shards are renamed into place just before
    it, so a crash leaves no directory that :func:`is_prepared` accepts. Returns the manifest.
    """
    split = split_documents(source, val_fraction, pattern=pattern, max_bytes=max_bytes)
    if tokenizer is None:
        tokenizer = _train_tokenizer(split, tokenizer_kind, vocab_size, progress)
    dtype = token_dtype(tokenizer.vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # the directory is invalid until we finish
    corpus_hash = hashlib.sha256()
    counts: dict[str, int] = {}
    tmp_paths = {side: out / f".{side}.bin.tmp" for side in ("train", "val")}
    try:
        for side in ("train", "val"):
            counts[side] = _write_shard(split, side, tokenizer, dtype, tmp_paths[side], corpus_hash, progress)
        tokenizer.save(out)
        for side, file in (("train", TRAIN_FILE), ("val", VAL_FILE)):
            os.replace(tmp_paths[side], out / file)
    finally:
        for tmp in tmp_paths.values():
            tmp.unlink(missing_ok=True)
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        dtype=dtype.name,
        vocab_size=tokenizer.vocab_size,
        tokenizer_kind=tokenizer.kind,
        train_tokens=counts["train"],
        val_tokens=counts["val"],
        source=_describe(source),
        source_sha256=corpus_hash.hexdigest(),
        documents=split.documents,
        split="characters" if split.by_characters else "documents",
        val_fraction=val_fraction,
        max_bytes=max_bytes,
    )
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    logger.info(
        "prepared %s: %d train + %d val tokens (%s, vocab %d)",
        out,
        counts["train"],
        counts["val"],
        dtype.name,
        tokenizer.vocab_size,
    )
    return manifest


def _progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    # disable=None: tqdm shows the bar only when stderr is a terminal
    return tqdm(total=total, desc=desc, unit="char", unit_scale=True, disable=None if progress else True)


def _train_tokenizer(split: CorpusSplit, kind: str, vocab_size: int, progress: bool) -> Tokenizer:
    if kind not in ("char", "bpe"):
        raise ConfigError(f"tokenizer_kind must be 'char' or 'bpe', got {kind!r}")

    def train_texts() -> Iterator[str]:
        with _progress_bar(split.chars["train"], f"training {kind} tokenizer", progress) as bar:
            for _, pieces in split.iter_pieces("train"):
                for piece in pieces:
                    bar.update(len(piece))
                    yield piece

    if kind == "char":
        return train_char_tokenizer(train_texts())
    return train_bpe_tokenizer(train_texts(), vocab_size)


def _write_shard(
    split: CorpusSplit,
    side: Side,
    tokenizer: Tokenizer,
    dtype: np.dtype,
    path: Path,
    corpus_hash: Any,
    progress: bool,
) -> int:
    """Tokenize one side of the split into ``path``; returns the number of tokens written."""
    eot, n_tokens = tokenizer.eot_id, 0
    batch: list[str] = []  # pieces to encode together; "" closes a document (gets only an eot)
    batch_chars = 0
    with open(path, "wb") as f, _progress_bar(split.chars[side], f"tokenizing {side}", progress) as bar:

        def flush() -> None:
            nonlocal n_tokens, batch_chars
            for piece, ids in zip(batch, tokenizer.encode_batch(batch, allow_special=False)):
                tokens = np.asarray(ids + [eot] if piece == "" else ids, dtype=dtype)
                f.write(tokens.tobytes())
                n_tokens += len(tokens)
            bar.update(batch_chars)
            batch.clear()
            batch_chars = 0

        for name, pieces in split.iter_pieces(side):
            text_hash = hashlib.sha256()
            for piece in pieces:
                text_hash.update(piece.encode("utf-8"))
                if batch_chars + len(piece) > BATCH_CHARS:
                    flush()
                batch.append(piece)
                batch_chars += len(piece)
            batch.append("")
            corpus_hash.update(hashlib.sha256(name.encode("utf-8")).digest() + text_hash.digest())
        flush()
        f.flush()
        os.fsync(f.fileno())
    return n_tokens


# ---------------------------------------------------------------------------------------------
# 4. opening a prepared directory


_MANIFEST_TYPES: dict[str, Any] = {
    "format": int,
    "dtype": str,
    "vocab_size": int,
    "tokenizer_kind": str,
    "train_tokens": int,
    "val_tokens": int,
    "source": str,
    "source_sha256": str,
    "documents": dict,
    "val_fraction": (int, float),
    "max_bytes": (int, type(None)),
}


def load_manifest(directory: str | Path) -> Manifest:
    """The validated manifest of a prepared directory. Raises DataError if missing or invalid."""
    path = Path(directory) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: missing or unreadable manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: manifest must be a JSON object")
    for key, expected in _MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), expected) or isinstance(manifest.get(key), bool):
            raise DataError(f"{path}: manifest field {key!r} missing or of the wrong type")
    if manifest["format"] != MANIFEST_FORMAT:
        raise DataError(f"{path}: unsupported manifest format {manifest['format']}")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"{path}: unsupported dtype {manifest['dtype']!r}")
    return manifest  # type: ignore[return-value]


def _open_shard(path: Path, dtype: np.dtype, n_tokens: int) -> np.ndarray:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{path}: missing token shard") from e
    if size != n_tokens * dtype.itemsize:
        raise DataError(
            f"{path}: {size} bytes, but the manifest promises {n_tokens} {dtype.name} tokens "
            f"({n_tokens * dtype.itemsize} bytes)"
        )
    if n_tokens == 0:  # np.memmap cannot map an empty file
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))


@dataclass
class PreparedData:
    """A prepared directory, opened: its manifest, tokenizer and memory-mapped shards."""

    directory: Path
    manifest: Manifest
    tokenizer: Tokenizer
    train: np.ndarray  # (train_tokens,) np.memmap
    val: np.ndarray  # (val_tokens,) np.memmap

    @classmethod
    def open(cls, directory: str | Path) -> PreparedData:
        """Open ``directory``. Raises DataError if the manifest is missing or invalid, a shard's
        size disagrees with it, or the tokenizer is unreadable or of another vocabulary size."""
        directory = Path(directory)
        manifest = load_manifest(directory)
        dtype = np.dtype(manifest["dtype"])
        train = _open_shard(directory / TRAIN_FILE, dtype, manifest["train_tokens"])
        val = _open_shard(directory / VAL_FILE, dtype, manifest["val_tokens"])
        try:
            tokenizer = Tokenizer.load(directory / TOKENIZER_FILE)
        except TokenizerError as e:
            raise DataError(f"{directory}: {e}") from e
        if tokenizer.vocab_size != manifest["vocab_size"]:
            raise DataError(
                f"{directory}: tokenizer has {tokenizer.vocab_size} ids, manifest says {manifest['vocab_size']}"
            )
        return cls(directory, manifest, tokenizer, train, val)


def is_prepared(directory: str | Path) -> bool:
    """Whether ``directory`` holds a complete prepared dataset (manifest, shards of the right
    sizes, tokenizer file). Never raises; loads no tokenizer."""
    directory = Path(directory)
    if not directory.is_dir() or not (directory / TOKENIZER_FILE).is_file():
        return False
    try:
        manifest = load_manifest(directory)
        dtype = np.dtype(manifest["dtype"])
        _open_shard(directory / TRAIN_FILE, dtype, manifest["train_tokens"])
        _open_shard(directory / VAL_FILE, dtype, manifest["val_tokens"])
    except DataError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# 5. sliding windows


class WindowSampler:
    """Random sliding windows (x, y = x shifted by one) from a token array, deterministic from a seed.

    Batch number ``i`` takes its window offsets from ``np.random.default_rng([seed, i])``, so the
    whole stream is a function of the seed, and the state to resume it is the seed and ``i``.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int = 0) -> None:
        for name, value, minimum in (
            ("block_size", block_size, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if np.ndim(tokens) != 1:
            raise DataError(f"tokens must be a 1-D array, got shape {np.shape(tokens)}")
        if len(tokens) < block_size + 1:
            raise DataError(
                f"corpus shorter than one window: {len(tokens)} tokens, need {block_size + 1} (block_size + 1)"
            )
        self.tokens = tokens
        self.block_size, self.batch_size, self.seed = int(block_size), int(batch_size), int(seed)
        self.batches_drawn = 0
        self._window = np.arange(self.block_size + 1)

    def offsets(self, batch_index: int) -> np.ndarray:
        """(batch_size,) start positions of the windows of batch number ``batch_index``."""
        rng = np.random.default_rng([self.seed, batch_index])
        return rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each int64 of shape (batch_size, block_size), with y[:, t] = x[:, t+1]."""
        offsets = self.offsets(self.batches_drawn)
        self.batches_drawn += 1
        windows = self.tokens[offsets[:, None] + self._window]  # (B, T+1), one gather
        windows = torch.from_numpy(np.asarray(windows, dtype=np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict[str, int]:
        """The stream position, JSON-able."""
        return {
            "seed": self.seed,
            "batches_drawn": self.batches_drawn,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "n_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``: the following batches equal those an uninterrupted sampler
        would give (if block size, batch size and tokens are the same; a warning says if not)."""
        try:
            seed, drawn = int(state["seed"]), int(state["batches_drawn"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"invalid window sampler state {state!r}") from e
        if seed < 0 or drawn < 0:
            raise DataError(f"invalid window sampler state {state!r}")
        for key, current in (
            ("block_size", self.block_size),
            ("batch_size", self.batch_size),
            ("n_tokens", len(self.tokens)),
        ):
            if key in state and state[key] != current:
                logger.warning(
                    "resuming windows with %s %s (was %s): the batches will differ", key, current, state[key]
                )
        self.seed, self.batches_drawn = seed, drawn
