"""Token shards: corpus → tokenized ``train.bin`` / ``val.bin`` → random sliding windows.

3. **Prepare.** Each side of a :class:`~gptlab.data.corpus.CorpusSplit` is tokenized in pieces
   (~256k characters each) and appended to ``train.bin`` / ``val.bin``: raw uint16/uint32 token
   arrays, one ``<|endoftext|>`` after each document, with ``tokenizer.json`` and
   ``manifest.json`` beside them. Neither the whole text nor the whole token stream is ever held
   in memory.
4. **Windows.** :class:`WindowSampler` draws ``(x, y)`` windows from a memory-mapped shard: at
   random offsets, or (``order="epochs"``) every window once per epoch in a shuffled order,
   deterministically from a seed and a batch counter either way, so training resumes exactly.

(Steps 1 and 2, documents and the train/val split, live in ``gptlab.data.corpus``.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from tqdm.auto import tqdm

from gptlab.data.corpus import (  # noqa: F401  (re-exported: the data API in one place)
    CorpusSplit,
    Document,
    Pieces,
    Side,
    _describe,
    default_corpus_files,
    iter_documents,
    split_documents,
)
from gptlab.errors import ConfigError, DataError, TokenizerError
from gptlab.fileio import atomic_write_text
from gptlab.data.tokenizer import (
    TOKENIZER_FILE,
    Tokenizer,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

logger = logging.getLogger(__name__)

BATCH_CHARS = 1 << 21  # pieces go to the tokenizer (in parallel for BPE) in batches of about this many
DEFAULT_BPE_VOCAB_SIZE = 2048
MANIFEST_FORMAT = 1
MANIFEST_FILE, TRAIN_FILE, VAL_FILE = "manifest.json", "train.bin", "val.bin"

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


WINDOW_ORDERS = ("epochs", "random")


class WindowSampler:
    """Sliding windows (x, y = x shifted by one) from a token array, deterministic from a seed.

    ``order="random"`` (the default) draws every window at a uniformly random offset, as nanoGPT
    does; over as many tokens as the corpus holds, that leaves about a third of it (1/e) unseen and
    shows other parts twice. ``order="epochs"`` cuts the tokens into back-to-back windows of
    ``block_size``, starting at a random phase, and visits them in a random order: every token is
    trained on once per epoch, and each epoch has its own phase and order.

    Batch number ``i`` is a function of the seed and ``i`` alone (epoch ``e`` shuffles with
    ``np.random.default_rng([seed, e])``, random offsets come from ``default_rng([seed, i])``), so
    the state to resume the stream is the seed and ``i``.
    """

    def __init__(
        self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int = 0, order: str = "random"
    ) -> None:
        for name, value, minimum in (
            ("block_size", block_size, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if order not in WINDOW_ORDERS:
            raise ConfigError(f"window order must be one of {', '.join(WINDOW_ORDERS)}, got {order!r}")
        if np.ndim(tokens) != 1:
            raise DataError(f"tokens must be a 1-D array, got shape {np.shape(tokens)}")
        if len(tokens) < block_size + 1:
            raise DataError(
                f"corpus shorter than one window: {len(tokens)} tokens, need {block_size + 1} (block_size + 1)"
            )
        self.tokens = tokens
        self.block_size, self.batch_size, self.seed = int(block_size), int(batch_size), int(seed)
        self.order = order
        self.batches_drawn = 0
        self._window = np.arange(self.block_size + 1)
        # epochs: windows phase + j·T for j < per_epoch, the last one ending (with its target) by the
        # last token; the phase takes up the slack, 0 .. max_phase (at least T - 1 when there is room)
        T = self.block_size
        self.per_epoch = max(1, (len(tokens) - T) // T)
        self._max_phase = len(tokens) - 1 - self.per_epoch * T
        self._epoch: tuple[int, np.ndarray, int] | None = None  # (epoch, window order, phase), the last one used

    def _shuffled(self, epoch: int) -> tuple[np.ndarray, int]:
        """Epoch ``epoch``'s window order (a permutation of ``per_epoch``) and phase."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch = (epoch, rng.permutation(self.per_epoch), int(rng.integers(0, self._max_phase + 1)))
        return self._epoch[1], self._epoch[2]

    def offsets(self, batch_index: int) -> np.ndarray:
        """(batch_size,) start positions of the windows of batch number ``batch_index``."""
        if self.order == "random":
            rng = np.random.default_rng([self.seed, batch_index])
            return rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        numbers = batch_index * self.batch_size + np.arange(self.batch_size)  # windows counted over all epochs
        epochs, within = np.divmod(numbers, self.per_epoch)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):  # one epoch, or two where a batch straddles
            mine = epochs == epoch
            order, phase = self._shuffled(int(epoch))
            out[mine] = phase + order[within[mine]] * self.block_size
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each int64 of shape (batch_size, block_size), with y[:, t] = x[:, t+1]."""
        offsets = self.offsets(self.batches_drawn)
        self.batches_drawn += 1
        windows = self.tokens[offsets[:, None] + self._window]  # (B, T+1), one gather
        windows = torch.from_numpy(np.asarray(windows, dtype=np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict[str, int | str]:
        """The stream position, JSON-able."""
        return {
            "seed": self.seed,
            "batches_drawn": self.batches_drawn,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "n_tokens": len(self.tokens),
            "order": self.order,
        }

    def load_state_dict(self, state: dict[str, int | str]) -> None:
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
            ("order", self.order),
        ):
            saved = state.get(key, "random" if key == "order" else current)  # before orders, all were random
            if saved != current:
                logger.warning("resuming windows with %s %s (was %s): the batches will differ", key, current, saved)
        self.seed, self.batches_drawn = seed, drawn
