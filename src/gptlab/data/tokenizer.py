"""Tokenizers: text ⇄ token ids, lossless for any Unicode text.

Two kinds share one public surface (:class:`Tokenizer`):

* ``"char"`` — one id per character seen in training, then the special tokens, then 256
  byte-fallback ids, so a character never seen in training is spelled as its UTF-8 bytes.
  Saved in a small JSON format of our own (``{"type": "char", ...}``).
* ``"bpe"`` — byte-level BPE as in GPT-2, built on the Hugging Face ``tokenizers`` library and
  saved in its ``tokenizer.json`` format. GPT-2's own ``vocab.json`` + ``merges.txt`` load too,
  with ids identical to ``transformers.GPT2TokenizerFast``.

Special tokens (``<|endoftext|>`` and friends) are single ids. ``encode(text, allow_special=False)``
spells them as plain text instead, which is what corpus text needs: a file that happens to contain
``<|endoftext|>`` must not inject a document boundary.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.fileio import atomic_write_text
from gptlab.errors import TokenizerError

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
# What Hugging Face tokenizers without <|endoftext|> call the end of text (Llama 3; Llama 2 and Mistral)
EOT_ALIASES: tuple[str, ...] = ("<|end_of_text|>", "</s>")
# end of text, few-shot separator, chat turn markers
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (EOT, "<|sep|>", "<|im_start|>", "<|im_end|>")
TOKENIZER_FILE = "tokenizer.json"
GPT2_VOCAB_FILE, GPT2_MERGES_FILE = "vocab.json", "merges.txt"
N_BYTES = 256
CHAR_FORMAT_VERSION = 1


class Tokenizer(ABC):
    """Maps text to token ids and back.

    Contract shared by both kinds: every id in ``[0, vocab_size)`` decodes; decoding never raises
    on a valid id (incomplete UTF-8 becomes U+FFFD); ``decode(encode(t, allow_special=False)) == t``
    for every string ``t`` without lone surrogates; the end-of-text token (:attr:`eot_token`) is
    always a special token.
    """

    kind: str

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; ids are ``0 .. vocab_size - 1``."""

    @property
    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special token string → id."""

    @property
    def eot_token(self) -> str:
        """The end-of-text token: ``<|endoftext|>`` (a BPE imported from a model without it may
        use one of :data:`EOT_ALIASES` instead)."""
        return EOT

    @property
    def eot_id(self) -> int:
        """Id of :attr:`eot_token`, which ends every document in a prepared corpus."""
        return self.special_tokens[self.eot_token]

    @abstractmethod
    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``. With ``allow_special=False`` special-token strings are plain text."""

    def encode_batch(self, texts: Sequence[str], allow_special: bool = True) -> list[list[int]]:
        """``[encode(t) for t in texts]``, possibly in parallel."""
        return [self.encode(text, allow_special) for text in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``. Raises TokenizerError for an id outside ``[0, vocab_size)``."""

    @abstractmethod
    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Make ``tokens`` special and return their ids. New ones get ids after all existing ids,
        existing ids never change, and a token that is already special keeps its id."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`tokenizer_from_dict` rebuilds this tokenizer."""

    def save(self, directory: str | Path) -> None:
        """Write ``directory/tokenizer.json`` atomically (the directory is created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / TOKENIZER_FILE, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer from a directory holding ``tokenizer.json`` (ours or Hugging Face's),
        from such a file itself, or from a directory with GPT-2's ``vocab.json`` + ``merges.txt``.
        Raises TokenizerError when nothing usable is there."""
        path = Path(path)
        if path.is_dir():
            if (path / TOKENIZER_FILE).is_file():
                return _load_json_file(path / TOKENIZER_FILE)
            if (path / GPT2_VOCAB_FILE).is_file() and (path / GPT2_MERGES_FILE).is_file():
                return load_gpt2_vocab(path / GPT2_VOCAB_FILE, path / GPT2_MERGES_FILE)
            raise TokenizerError(
                f"{path}: no {TOKENIZER_FILE}, and no {GPT2_VOCAB_FILE} + {GPT2_MERGES_FILE}"
            )
        if path.is_file():
            return _load_json_file(path)
        raise TokenizerError(f"{path}: no such tokenizer file or directory")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={len(self.special_tokens)})"
        )


# ---------------------------------------------------------------------------------------------
# char-level


class CharTokenizer(Tokenizer):
    """One id per known character; unknown characters are spelled as UTF-8 bytes.

    Id layout: ``chars`` are ``0 .. len(chars) - 1``; the 256 byte-fallback ids start at
    ``byte_offset``; special tokens hold the remaining ids (those given at training time sit
    between the characters and the bytes, those added later come after the bytes).
    """

    kind = "char"

    def __init__(self, chars: Sequence[str], special_tokens: Mapping[str, int], byte_offset: int) -> None:
        self._chars = list(chars)
        self._special = dict(special_tokens)
        self._byte_offset = byte_offset
        self._validate()
        self._char_to_id = {c: i for i, c in enumerate(self._chars)}
        self._lookup: np.ndarray | None = None  # code point → id (-1: unknown); built on first use
        self._special_re: re.Pattern[str] | None = None
        self._id_to_special = {i: s for s, i in self._special.items()}

    def _validate(self) -> None:
        if any(not isinstance(c, str) or len(c) != 1 for c in self._chars):
            raise TokenizerError("char tokenizer: every entry of 'chars' must be one character")
        if len(set(self._chars)) != len(self._chars):
            raise TokenizerError("char tokenizer: duplicate characters")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in self._chars):
            raise TokenizerError("char tokenizer: lone surrogates are not characters")
        if EOT not in self._special:
            raise TokenizerError(f"char tokenizer: special tokens must include {EOT}")
        if any(not isinstance(s, str) or not s for s in self._special):
            raise TokenizerError("char tokenizer: special tokens must be non-empty strings")
        ids = list(range(len(self._chars)))
        ids += list(self._special.values())
        ids += range(self._byte_offset, self._byte_offset + N_BYTES)
        if sorted(ids) != list(range(len(ids))):
            raise TokenizerError(
                "char tokenizer: ids of characters, specials and bytes overlap or leave gaps"
            )

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + len(self._special) + N_BYTES

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def chars(self) -> list[str]:
        """The characters with their own ids, in id order."""
        return list(self._chars)

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        if not allow_special:
            return self._encode_plain(text)
        ids: list[int] = []
        # re.split with one capturing group alternates: plain, special, plain, special, ..., plain
        for i, part in enumerate(self._special_pattern().split(text)):
            if i % 2:
                ids.append(self._special[part])
            elif part:
                ids.extend(self._encode_plain(part))
        return ids

    def _special_pattern(self) -> re.Pattern[str]:
        if self._special_re is None:
            longest_first = sorted(self._special, key=len, reverse=True)  # "<|a|>x" before "<|a|>"
            self._special_re = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        return self._special_re

    def _encode_plain(self, text: str) -> list[int]:
        # Vectorised lookup: code points → ids through a table; only unknown characters take
        # the slow path through their UTF-8 bytes.
        try:
            code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError as e:
            raise TokenizerError(f"cannot encode lone surrogate at position {e.start}") from e
        lookup = self._lookup_table()
        ids = lookup[np.minimum(code_points, len(lookup) - 1)]
        unknown = np.flatnonzero(ids < 0)
        if len(unknown) == 0:
            return ids.tolist()
        out: list[int] = []
        start = 0
        for pos in unknown.tolist():
            out.extend(ids[start:pos].tolist())
            out.extend(self._byte_offset + b for b in text[pos].encode("utf-8"))
            start = pos + 1
        out.extend(ids[start:].tolist())
        return out

    def _lookup_table(self) -> np.ndarray:
        if self._lookup is None:
            size = max((ord(c) for c in self._chars), default=0) + 2  # last entry: "unknown"
            table = np.full(size, -1, dtype=np.int32)
            for i, c in enumerate(self._chars):
                table[ord(c)] = i
            self._lookup = table
        return self._lookup

    def decode(self, ids: Iterable[int]) -> str:
        parts: list[str] = []
        pending = bytearray()  # consecutive byte-fallback ids decode together
        n_chars, vocab_size = len(self._chars), self.vocab_size
        for raw in ids:
            i = int(raw)
            byte = i - self._byte_offset
            if 0 <= byte < N_BYTES:
                pending.append(byte)
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if 0 <= i < n_chars:
                parts.append(self._chars[i])
            elif i in self._id_to_special:
                parts.append(self._id_to_special[i])
            else:
                raise TokenizerError(f"token id {i} is outside the vocabulary [0, {vocab_size})")
        if pending:
            parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        ids = []
        for token in _as_token_list(tokens):
            if token not in self._special:
                self._special[token] = self.vocab_size
                self._id_to_special[self._special[token]] = token
                self._special_re = None
            ids.append(self._special[token])
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "char",
            "version": CHAR_FORMAT_VERSION,
            "chars": "".join(self._chars),
            "special_tokens": dict(self._special),
            "byte_offset": self._byte_offset,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CharTokenizer:
        """Rebuild from :meth:`to_dict` output. Raises TokenizerError on a malformed dict."""
        if data.get("version") != CHAR_FORMAT_VERSION:
            raise TokenizerError(f"char tokenizer: unsupported version {data.get('version')!r}")
        chars, special, offset = data.get("chars"), data.get("special_tokens"), data.get("byte_offset")
        if not isinstance(chars, str) or not isinstance(special, dict) or not isinstance(offset, int):
            raise TokenizerError(
                "char tokenizer: 'chars', 'special_tokens' or 'byte_offset' missing or mistyped"
            )
        if not all(isinstance(i, int) for i in special.values()):
            raise TokenizerError("char tokenizer: special token ids must be integers")
        return cls(list(chars), special, offset)


def train_char_tokenizer(
    texts: Iterable[str], special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS
) -> CharTokenizer:
    """A char tokenizer over the sorted set of characters in ``texts`` (streamed, not stored).

    ``<|endoftext|>`` is added in front of ``special_tokens`` if missing. Raises TokenizerError
    when ``texts`` hold no characters.
    """
    if isinstance(texts, str):
        texts = [texts]
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    if not seen:
        raise TokenizerError("cannot train a char tokenizer on empty text")
    chars = sorted(seen)
    specials = _special_token_list(special_tokens)
    special_ids = {s: len(chars) + i for i, s in enumerate(specials)}
    return CharTokenizer(chars, special_ids, byte_offset=len(chars) + len(specials))


# ---------------------------------------------------------------------------------------------
# byte-level BPE (Hugging Face tokenizers)


class BPETokenizer(Tokenizer):
    """BPE backed by a ``tokenizers.Tokenizer``: GPT-2's byte-level pipeline when trained here,
    any BPE pipeline of a Hugging Face ``tokenizer.json`` (e.g. Llama's byte fallback) when loaded.

    The end-of-text token is ``<|endoftext|>`` if the vocabulary has it, else the first of
    :data:`EOT_ALIASES` that is a special token.
    """

    kind = "bpe"

    def __init__(self, backend: Any) -> None:
        from tokenizers import models

        if not isinstance(backend.model, models.BPE):
            raise TokenizerError(f"unsupported tokenizer model {type(backend.model).__name__}: need BPE")
        self._backend = backend
        self._eot = _end_of_text_token(backend)
        if self._eot not in self.special_tokens:  # e.g. present in the vocabulary but not marked special
            self.add_special_tokens([self._eot])
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what depends on the added tokens (after construction or adding specials)."""
        self._added = {i: t.content for i, t in self._backend.get_added_tokens_decoder().items()}
        self._vocab_size = max(self._backend.get_vocab(with_added_tokens=True).values()) + 1
        self._plain_backend: Any = None  # copy with special-token splitting disabled, built on demand

    @property
    def eot_token(self) -> str:
        return self._eot

    @property
    def backend(self) -> Any:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return {t.content: i for i, t in self._backend.get_added_tokens_decoder().items() if t.special}

    def _backend_for(self, allow_special: bool) -> Any:
        if allow_special:
            return self._backend
        if self._plain_backend is None:
            # A separate copy rather than toggling a flag on the shared one: safe across threads.
            from tokenizers import Tokenizer as HFTokenizer

            self._plain_backend = HFTokenizer.from_str(self._backend.to_str())
            self._plain_backend.encode_special_tokens = True
        return self._plain_backend

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        try:
            return self._backend_for(allow_special).encode(text, add_special_tokens=False).ids
        except TypeError as e:  # raised for lone surrogates, which Rust strings cannot hold
            raise TokenizerError(f"cannot encode text: {e}") from e

    def encode_batch(self, texts: Sequence[str], allow_special: bool = True) -> list[list[int]]:
        try:
            encodings = self._backend_for(allow_special).encode_batch(list(texts), add_special_tokens=False)
        except TypeError as e:
            raise TokenizerError(f"cannot encode text: {e}") from e
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        # Added tokens are emitted verbatim: the ByteLevel decoder would garble non-ASCII ones.
        parts: list[str] = []
        run: list[int] = []
        for raw in ids:
            i = int(raw)
            if not 0 <= i < self._vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary [0, {self._vocab_size})")
            if i in self._added:
                if run:
                    parts.append(self._backend.decode(run, skip_special_tokens=False))
                    run = []
                parts.append(self._added[i])
            else:
                run.append(i)
        if run:
            parts.append(self._backend.decode(run, skip_special_tokens=False))
        return "".join(parts)

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        from tokenizers import AddedToken

        tokens = _as_token_list(tokens)
        self._backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        self._refresh()
        return [self._backend.token_to_id(t) for t in tokens]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self._backend.to_str())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BPETokenizer:
        """Rebuild from a Hugging Face ``tokenizer.json`` dict. Raises TokenizerError if invalid."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            backend = HFTokenizer.from_str(json.dumps(data))
        except Exception as e:  # tokenizers raises plain Exception for malformed JSON models
            raise TokenizerError(f"invalid Hugging Face tokenizer: {e}") from e
        return cls(backend)


def _end_of_text_token(backend: Any) -> str:
    """``<|endoftext|>`` if ``backend``'s vocabulary has it, else the first of
    :data:`EOT_ALIASES` among its special tokens; TokenizerError if neither."""
    if backend.token_to_id(EOT) is not None:
        return EOT
    special = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    for alias in EOT_ALIASES:
        if alias in special:
            return alias
    raise TokenizerError(f"BPE tokenizer has no {EOT} token (nor a special {' or '.join(EOT_ALIASES)})")


def _byte_level_backend(model: Any) -> Any:
    """A ``tokenizers.Tokenizer`` around ``model`` with GPT-2's byte-level pre-tokenizer and decoder."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, pre_tokenizers

    backend = HFTokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS
) -> BPETokenizer:
    """Train a byte-level BPE on ``texts`` (streamed) with at most ``vocab_size`` ids.

    The special tokens get the first ids, then the 256 bytes, then merges. A small corpus may
    yield fewer than ``vocab_size`` ids. Raises TokenizerError when ``vocab_size`` cannot hold
    the bytes and the special tokens, or when ``texts`` hold no characters.
    """
    from tokenizers import models, pre_tokenizers, trainers

    specials = _special_token_list(special_tokens)
    minimum = N_BYTES + len(specials)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise TokenizerError(
            f"BPE vocab_size must be at least {minimum} (256 bytes + {len(specials)} special tokens), "
            f"got {vocab_size!r}"
        )
    if isinstance(texts, str):
        texts = [texts]
    n_chars = 0

    def counted(items: Iterable[str]) -> Iterator[str]:
        nonlocal n_chars
        for text in items:
            n_chars += len(text)
            yield text

    backend = _byte_level_backend(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(counted(texts), trainer=trainer)
    if n_chars == 0:
        raise TokenizerError("cannot train a BPE tokenizer on empty text")
    tokenizer = BPETokenizer(backend)
    if tokenizer.vocab_size < vocab_size:
        logger.info(
            "BPE training stopped at %d of %d ids: the corpus has no more pairs to merge",
            tokenizer.vocab_size,
            vocab_size,
        )
    return tokenizer


def load_gpt2_vocab(vocab_json: str | Path, merges_txt: str | Path) -> BPETokenizer:
    """A BPE tokenizer from GPT-2 style ``vocab.json`` + ``merges.txt``.

    Ids equal ``transformers.GPT2TokenizerFast`` on any text; ``<|endoftext|>`` keeps its id from
    ``vocab.json`` (50256 for GPT-2) and is the only special token, so ``vocab_size`` matches
    the pretrained model. Raises TokenizerError for missing or malformed files.
    """
    from tokenizers import models

    for path in (vocab_json, merges_txt):
        if not Path(path).is_file():
            raise TokenizerError(f"{path}: no such file")
    try:
        model = models.BPE.from_file(str(vocab_json), str(merges_txt))
    except Exception as e:  # tokenizers raises plain Exception for unreadable files
        raise TokenizerError(f"cannot read GPT-2 vocabulary {vocab_json} + {merges_txt}: {e}") from e
    backend = _byte_level_backend(model)
    from tokenizers import AddedToken

    backend.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return BPETokenizer(backend)


# ---------------------------------------------------------------------------------------------
# (de)serialisation helpers


def tokenizer_from_dict(data: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_dict` output (char or Hugging Face JSON)."""
    if not isinstance(data, Mapping):
        raise TokenizerError("tokenizer JSON must be an object")
    if data.get("type") == "char":
        return CharTokenizer.from_dict(data)
    if "model" in data:
        return BPETokenizer.from_dict(data)
    raise TokenizerError("unrecognised tokenizer JSON: neither a char tokenizer nor a Hugging Face tokenizer")


def _load_json_file(path: Path) -> Tokenizer:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read tokenizer JSON: {e}") from e
    try:
        return tokenizer_from_dict(data)
    except TokenizerError as e:
        raise TokenizerError(f"{path}: {e}") from e


def _as_token_list(tokens: Sequence[str]) -> list[str]:
    if isinstance(tokens, str):
        tokens = [tokens]
    tokens = list(tokens)
    if any(not isinstance(t, str) or not t for t in tokens):
        raise TokenizerError("special tokens must be non-empty strings")
    return tokens


def _special_token_list(special_tokens: Sequence[str]) -> list[str]:
    """Deduplicated special tokens in order, with ``<|endoftext|>`` first if it was missing."""
    tokens = list(dict.fromkeys(_as_token_list(special_tokens)))
    return tokens if EOT in tokens else [EOT, *tokens]
