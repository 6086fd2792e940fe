"""Fine-tuning data: JSON records → token ids with a loss mask → padded per-example batches.

A file holds one JSON object per line (JSONL), or one JSON array of objects (what Alpaca and
ShareGPT files usually are, whatever their extension), in UTF-8 with or without a byte-order
mark. A record has one of five shapes:

* ``{"text": ...}`` — the loss covers every token;
* ``{"prompt": ..., "completion": ...}`` — the loss covers the completion only;
* ``{"messages": [{"role": ..., "content": ...}, ...]}`` — rendered with the chat template
  (``gptlab.data.chat``); the loss covers the assistant turns (content and closing ``<|im_end|>``);
* Alpaca, ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` may be empty or
  missing) — a chat of one user turn (the instruction, then a blank line and the input when there
  is one) and one assistant turn (the output);
* ShareGPT, ``{"conversations": [{"from": ..., "value": ...}, ...]}`` — a chat, roles ``human``
  → user, ``gpt`` → assistant, ``system`` → system (``user`` and ``assistant`` are taken too).

A record with the fields of two shapes (``text`` beside ``prompt``/``completion``, say) is an
error that names its line, not a silent choice.

``text`` and ``completion`` records end with a trained ``<|endoftext|>``, so the model learns to
stop; chat turns end with their own ``<|im_end|>``. Each piece is encoded separately (so a mask
boundary is a token boundary) with special tokens recognised, as ``generate_text`` encodes a
prompt: training and inference see the same ids. Other keys in a record are ignored.

An example of L ids gives inputs ``ids[:-1]`` and targets ``ids[1:]``, targets set to
``IGNORE_INDEX`` where the predicted token is not trained. Batches are whole examples padded to
the longest with ``IGNORE_INDEX`` targets (right padding: causal attention never looks at it).
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptlab.data.chat import IM_END, IM_START, chat_segments
from gptlab.errors import ConfigError, DataError
from gptlab.fileio import json_lines
from gptlab.model.gpt import IGNORE_INDEX
from gptlab.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

Segments = list[tuple[str, bool]]  # (text, trained) pieces of one example, in order

# each shape's name in messages, and the fields that announce it
SHAPES: dict[str, tuple[str, ...]] = {
    "'text'": ("text",),
    "'prompt'/'completion'": ("prompt", "completion"),
    "'messages'": ("messages",),
    "Alpaca 'instruction'/'output'": ("instruction", "output"),
    "ShareGPT 'conversations'": ("conversations",),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


@dataclass(frozen=True)
class Record:
    """One line of a fine-tuning file, as (text, trained) segments."""

    kind: str  # "text", "completion" or "chat"
    segments: Segments
    where: str  # "file.jsonl:LINE", for error messages


def record_segments(obj: Any, where: str) -> tuple[str, Segments]:
    """The kind (``text``, ``completion`` or ``chat``) and segments of one parsed record.
    Raises DataError naming ``where``."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    shapes = [name for name, keys in SHAPES.items() if any(key in obj for key in keys)]
    if len(shapes) > 1:
        raise DataError(f"{where}: the record has both {' and '.join(shapes)}; keep the fields of one shape")
    if "messages" in obj:
        return "chat", _chat(obj["messages"], where, "'messages'")
    if "conversations" in obj:
        return "chat", _chat(_sharegpt_messages(obj["conversations"], where), where, "'conversations'")
    if "instruction" in obj or "output" in obj:
        return "chat", _chat(_alpaca_messages(obj, where), where, "Alpaca")
    if "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if key not in obj:
                raise DataError(f"{where}: a record with 'prompt' needs 'completion' too (and vice versa)")
            if not isinstance(obj[key], str):
                raise DataError(f"{where}: '{key}' must be a string, got {type(obj[key]).__name__}")
        return "completion", [(obj["prompt"], False), (obj["completion"], True)]
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise DataError(f"{where}: 'text' must be a string, got {type(obj['text']).__name__}")
        if not obj["text"]:
            raise DataError(f"{where}: empty 'text'")
        return "text", [(obj["text"], True)]
    keys = ", ".join(sorted(map(str, obj))) or "none"
    raise DataError(f"{where}: expected 'text', 'prompt' + 'completion', 'messages', Alpaca "
                    f"'instruction' + 'output', or ShareGPT 'conversations' (keys: {keys})")


def _chat(messages: Any, where: str, field: str) -> Segments:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: {field} must be a non-empty list of messages")
    try:
        segments = chat_segments(messages)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    if not any(trained for _, trained in segments):
        raise DataError(f"{where}: no assistant message, so nothing to learn")
    return segments


def _sharegpt_messages(turns: Any, where: str) -> list[dict[str, str]]:
    """ShareGPT's ``[{"from": "human", "value": ...}, ...]`` as chat messages."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of {{from, value}} objects")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise DataError(f"{where}: conversation turn {i} needs a 'from' and a string 'value'")
        role = SHAREGPT_ROLES.get(turn["from"].lower())
        if role is None:
            known = ", ".join(sorted(SHAREGPT_ROLES))
            raise DataError(f"{where}: conversation turn {i} is from {turn['from']!r}; expected one of {known}")
        messages.append({"role": role, "content": turn["value"]})
    return messages


def _alpaca_messages(obj: dict[str, Any], where: str) -> list[dict[str, str]]:
    """An Alpaca record as a user turn (instruction, blank line, input) and an assistant turn (output)."""
    for key in ("instruction", "output"):
        if key not in obj:
            raise DataError(f"{where}: an Alpaca record needs 'instruction' and 'output' ('{key}' is missing)")
    for key in ("instruction", "input", "output"):
        if key in obj and not isinstance(obj[key], str):
            raise DataError(f"{where}: '{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["instruction"].strip():
        raise DataError(f"{where}: empty 'instruction'")
    extra = obj.get("input", "")
    user = f"{obj['instruction']}\n\n{extra}" if extra.strip() else obj["instruction"]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": obj["output"]}]


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each record of a fine-tuning file: every non-blank line of
    JSONL, or every element of a file that holds one JSON array (the line where the element
    starts). UTF-8, with or without a byte-order mark.

    Raises DataError naming ``file:line`` for text that is not UTF-8 or not JSON, and for a
    missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    if text.lstrip().startswith("["):
        yield from _array_elements(text, path)
        return
    yield from json_lines(text.split("\n"), path)


def _array_elements(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """The elements of the JSON array that is all of ``text``, each with the line where it starts."""
    decoder = json.JSONDecoder()

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    i = skip(text.index("[") + 1)
    if i < len(text) and text[i] == "]":
        i = skip(i + 1)
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
            yield line_of(i), value
            i = skip(end)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < len(text) and text[i] == "]":
                i = skip(i + 1)
                break
            raise DataError(f"{path}:{line_of(i)}: not valid JSON (expected ',' or ']' after an array element)")
    if i < len(text):
        raise DataError(f"{path}:{line_of(i)}: not valid JSON (extra data after the array)")


def load_records(path: str | Path) -> list[Record]:
    """Every record of a fine-tuning file (JSONL or a JSON array, see :func:`read_records`), in order.

    Raises DataError, naming ``file:line``, for a line that is not UTF-8, not JSON or not a valid
    record, and for a missing or empty file.
    """
    path = Path(path)
    records = []
    for line_number, obj in read_records(path):
        where = f"{path}:{line_number}"
        kind, segments = record_segments(obj, where)
        records.append(Record(kind, segments, where))
    if not records:
        raise DataError(f"{path}: no examples (the file is empty)")
    return records


def missing_special_tokens(records: Sequence[Record], tokenizer: Tokenizer) -> list[str]:
    """Special tokens the records need that ``tokenizer`` lacks (the chat markers, for chat data)."""
    needed = [IM_START, IM_END] if any(r.kind == "chat" for r in records) else []
    return [t for t in needed if t not in tokenizer.special_tokens]


# ---------------------------------------------------------------------------------------------
# tokenisation


@dataclass(frozen=True)
class Example:
    """A tokenised example: model inputs and targets, ``IGNORE_INDEX`` where there is no loss."""

    inputs: np.ndarray  # (T,) int64
    targets: np.ndarray  # (T,) int64
    where: str

    @property
    def n_trained(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return len(self.inputs)


def tokenize_record(record: Record, tokenizer: Tokenizer, block_size: int, *, truncate: bool = False) -> Example | None:
    """Encode ``record`` into an :class:`Example` of at most ``block_size`` positions.

    An example longer than the context raises DataError naming its line, unless ``truncate``:
    then its end is cut off (keeping the first ``block_size + 1`` ids), and an example left with
    no trained target is dropped (returns None).
    """
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in record.segments:
        piece = tokenizer.encode(text)
        ids += piece
        trained += [is_trained] * len(piece)
    if record.kind != "chat":
        ids.append(tokenizer.eot_id)
        trained.append(True)
    while trained and not trained[-1]:  # trailing context predicts nothing (a chat's final newline)
        ids.pop()
        trained.pop()
    if len(ids) - 1 > block_size:
        if not truncate:
            raise DataError(
                f"{record.where}: example is {len(ids) - 1} tokens, longer than the model's context of "
                f"{block_size} (shorten it, or truncate long examples with --truncate)"
            )
        ids, trained = ids[: block_size + 1], trained[: block_size + 1]
    ids_array = np.asarray(ids, dtype=np.int64)
    targets = np.where(np.asarray(trained[1:], dtype=bool), ids_array[1:], IGNORE_INDEX)
    example = Example(ids_array[:-1], targets.astype(np.int64), record.where)
    if example.n_trained == 0:
        if truncate:
            return None
        raise DataError(f"{record.where}: example has no token to learn")
    return example


def tokenize_records(
    records: Sequence[Record], tokenizer: Tokenizer, block_size: int, *, truncate: bool = False
) -> list[Example]:
    """:func:`tokenize_record` over ``records``; dropped examples (see there) are logged."""
    examples = [tokenize_record(r, tokenizer, block_size, truncate=truncate) for r in records]
    kept = [e for e in examples if e is not None]
    if len(kept) < len(examples):
        logger.warning(
            "%d example(s) had nothing left to learn after truncation to %d tokens and were dropped",
            len(examples) - len(kept), block_size,
        )
    return kept


# ---------------------------------------------------------------------------------------------
# split, order, batches


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/val split of ``n`` examples: a seeded permutation, the first
    ``round(n * val_fraction)`` (at least 1 when ``val_fraction > 0``) go to val. Both lists come
    back sorted. Raises DataError when fewer than 2 examples would leave one side empty."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if n < 1:
        raise DataError("no examples")
    if val_fraction == 0:
        return list(range(n)), []
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DataError(
            f"{n} example(s) cannot be split into train and validation with val_fraction={val_fraction}: "
            "add examples or pass --val-fraction 0"
        )
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class ExampleBatcher:
    """Batches of example indices: each epoch is a fresh permutation seeded by ``(seed, epoch)``;
    the last batch of an epoch may be smaller. The position (epoch, cursor) is the whole state, so
    a restored batcher continues with exactly the batches the original would have produced."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise DataError("no training examples")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.cursor = 0, 0
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return self._order

    def next_indices(self) -> list[int]:
        if self.cursor >= self.n:
            self.epoch, self.cursor, self._order = self.epoch + 1, 0, None
        batch = self._epoch_order()[self.cursor : self.cursor + self.batch_size]
        self.cursor += len(batch)
        return batch.tolist()

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.cursor / self.n

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n, "batch_size": self.batch_size,
                "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state.get("n"), state.get("batch_size"), state.get("seed")) != (self.n, self.batch_size, self.seed):
            raise DataError(
                "the saved data position belongs to other data or settings "
                f"(saved: {state.get('n')} examples, batch {state.get('batch_size')}, seed {state.get('seed')}; "
                f"now: {self.n}, {self.batch_size}, {self.seed})"
            )
        self.epoch, self.cursor, self._order = int(state["epoch"]), int(state["cursor"]), None


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T) for ``examples``, right-padded to the longest: inputs with
    ``pad_id``, targets with ``IGNORE_INDEX``."""
    width = max(len(e) for e in examples)
    x = np.full((len(examples), width), pad_id, dtype=np.int64)
    y = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
    for row, example in enumerate(examples):
        x[row, : len(example)] = example.inputs
        y[row, : len(example)] = example.targets
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class FinetuneData:
    """Tokenised train and val examples of one JSONL file, and where they came from."""

    train: list[Example]
    val: list[Example]
    source: str
    sha256: str

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        tokenizer: Tokenizer,
        block_size: int,
        *,
        val_fraction: float,
        seed: int,
        truncate: bool = False,
        records: Sequence[Record] | None = None,
    ) -> FinetuneData:
        """Load, split (by record, before tokenising, so dropping an example never moves others
        across) and tokenise. Raises DataError for bad input (see :func:`load_records`)."""
        from gptlab.fileio import sha256_file

        records = load_records(path) if records is None else records
        train_idx, val_idx = split_indices(len(records), val_fraction, seed)
        train = tokenize_records([records[i] for i in train_idx], tokenizer, block_size, truncate=truncate)
        val = tokenize_records([records[i] for i in val_idx], tokenizer, block_size, truncate=truncate)
        if not train:
            raise DataError(f"{path}: no training examples left")
        if val_idx and not val:
            raise DataError(f"{path}: no validation examples left after truncation")
        return cls(train, val, str(path), sha256_file(path))
