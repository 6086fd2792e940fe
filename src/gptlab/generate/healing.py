"""Token healing: back up the prompt's last tokens and let the model spell them again.

A byte-level BPE learns ``def`` + `` name``, so it almost never sees a token that ends in a space
before a name. A prompt ``"def "`` encodes as ``def`` + `` ``, a split the model never met in
training, and what it writes next suffers. Healing (as in guidance, llama.cpp and transformers'
``generate(token_healing=True)``) removes the prompt's tail tokens as long as their text is the
start of a longer vocabulary entry, and then allows the next generated tokens only where they
spell the removed text first (`` name``, or `` `` again): the model picks the split itself.

Unlike transformers (which strips the prompt's whitespace and only favours the extensions with a
logit bias), the constraint here is exact: a token that does not fit the removed text gets
probability zero, and the prompt's text is never changed. The tail may be several tokens (the
removed text grows while some token still extends it); backing up the whole prompt leaves
``<|endoftext|>``, the start of a document, to generate from.

:func:`heal_prompt` plans it; :class:`PrefixConstraint` is the per-sequence state the sampler
applies (``SequenceSampler(constraint=...)``). Only tokenizers whose tokens have known bytes can
heal: the char tokenizer (where healing never changes anything: no token extends another) and
byte-level BPEs; for any other (e.g. a Llama-style BPE with byte fallback) the prompt is left as is.
"""

from __future__ import annotations

import bisect
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from gptlab.data.tokenizer import BPETokenizer, CharTokenizer, Tokenizer
from gptlab.errors import GenerationError

log = logging.getLogger(__name__)


class TokenBytes:
    """The bytes of every token of a tokenizer (``None`` for special and added tokens), indexed
    for prefix search: tokens are sorted by their bytes, so those that start with a given prefix
    form one run of the sorted list."""

    def __init__(self, pieces: Sequence[bytes | None]) -> None:
        self.pieces = list(pieces)
        entries = sorted((piece, i) for i, piece in enumerate(self.pieces) if piece)
        self._sorted = [piece for piece, _ in entries]
        self._ids = [i for _, i in entries]
        self._by_bytes: dict[bytes, list[int]] = {}
        for piece, i in entries:
            self._by_bytes.setdefault(piece, []).append(i)

    def __len__(self) -> int:
        return len(self.pieces)

    def extends(self, prefix: bytes) -> bool:
        """Whether some token's bytes start with ``prefix`` and are longer than it."""
        after = bisect.bisect_right(self._sorted, prefix)  # the first entry sorted past ``prefix`` itself
        return after < len(self._sorted) and self._sorted[after].startswith(prefix)

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose bytes start with ``prefix`` (non-empty)."""
        lo = hi = bisect.bisect_left(self._sorted, prefix)
        while hi < len(self._sorted) and self._sorted[hi].startswith(prefix):
            hi += 1
        return self._ids[lo:hi]

    def fitting(self, rest: bytes) -> list[int]:
        """Ids of the tokens that can come next when the text must go on with ``rest``: those
        that start with all of it, and those that are a shorter start of it."""
        shorter = [i for n in range(1, len(rest)) for i in self._by_bytes.get(rest[:n], ())]
        return self.starting_with(rest) + shorter


_VOCABS: weakref.WeakKeyDictionary[Tokenizer, tuple[int, TokenBytes | None]] = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Tokenizer) -> TokenBytes | None:
    """The :class:`TokenBytes` of ``tokenizer`` (built once per tokenizer and vocabulary size), or
    None when its tokens' bytes are not known (a BPE whose decoder is not GPT-2's byte level)."""
    cached = _VOCABS.get(tokenizer)
    if cached is None or cached[0] != tokenizer.vocab_size:
        cached = _VOCABS[tokenizer] = (tokenizer.vocab_size, _build_token_bytes(tokenizer))
    return cached[1]


def _build_token_bytes(tokenizer: Tokenizer) -> TokenBytes | None:
    special = set(tokenizer.special_tokens.values())
    pieces: list[bytes | None] = [None] * tokenizer.vocab_size
    if isinstance(tokenizer, CharTokenizer):
        chars = tokenizer.chars
        for i, char in enumerate(chars):
            pieces[i] = char.encode("utf-8")
        # the 256 byte-fallback ids are the ids that are neither characters nor special, in order
        byte_ids = [i for i in range(len(chars), tokenizer.vocab_size) if i not in special]
        for byte, i in enumerate(byte_ids):
            pieces[i] = bytes([byte])
        return TokenBytes(pieces)
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import decoders

        backend = tokenizer.backend
        if not isinstance(backend.decoder, decoders.ByteLevel):
            log.info("token healing is off for this tokenizer: its tokens' bytes are not known")
            return None
        added = set(backend.get_added_tokens_decoder())
        alphabet = _byte_level_alphabet()
        for i in range(tokenizer.vocab_size):
            piece = backend.id_to_token(i)
            if i in added or piece is None or not all(c in alphabet for c in piece):
                continue
            pieces[i] = bytes(alphabet[c] for c in piece)
        return TokenBytes(pieces)
    return None


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each of the 256 bytes, as a map stand-in → byte: printable
    Latin-1 bytes stand for themselves, the others for code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_in, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_in[chr(byte)] = byte
        else:
            stand_in[chr(256 + extra)] = byte
            extra += 1
    return stand_in


class PrefixConstraint:
    """One sequence's healing state: the text its next tokens must spell before they go free.

    ``allowed(width, device)`` is the (width,) boolean mask of the tokens that may come next;
    ``observe(token)`` moves past a generated token. Once the text is spelled (``done``), every
    token is allowed again.
    """

    def __init__(self, vocab: TokenBytes, rest: bytes) -> None:
        self.vocab = vocab
        self.rest = rest
        self._mask: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return not self.rest

    def allowed(self, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(width,) bool: True for the tokens that fit the rest of the removed text (ids past the
        tokenizer's vocabulary, e.g. a padded embedding, never fit)."""
        if self._mask is None or self._mask.numel() != width or self._mask.device != torch.device(device):
            mask = torch.zeros(width, dtype=torch.bool)
            ids = [i for i in self.vocab.fitting(self.rest) if i < width]
            mask[ids] = True
            self._mask = mask.to(device)
        return self._mask

    def observe(self, token: int) -> None:
        if self.done:
            return
        piece = self.vocab.pieces[token] if 0 <= token < len(self.vocab) else None
        if not piece or not (piece.startswith(self.rest) or self.rest.startswith(piece)):
            raise GenerationError(f"token {token} does not fit the healed text {self.rest!r}")
        self.rest = self.rest[len(piece):]
        self._mask = None


@dataclass(frozen=True)
class HealedPrompt:
    """A prompt with its tail backed up: prefill ``prompt_ids``, then constrain the next tokens to
    spell ``removed`` (``text`` is the same as characters: what the caller already showed and must
    not show twice). ``removed == b""`` means nothing was backed up."""

    prompt_ids: list[int]
    removed: bytes = b""
    text: str = ""
    vocab: TokenBytes | None = field(default=None, repr=False)

    @property
    def backed_up(self) -> int:
        """How many characters of the prompt the generated tokens spell again."""
        return len(self.text)

    def constraint(self) -> PrefixConstraint | None:
        """A fresh per-sequence constraint, or None when nothing was backed up."""
        if not self.removed or self.vocab is None:
            return None
        return PrefixConstraint(self.vocab, self.removed)


def heal_prompt(tokenizer: Tokenizer, prompt_ids: Sequence[int]) -> HealedPrompt:
    """Back up the tail of ``prompt_ids`` for token healing (see the module docs).

    Tokens are removed from the end while the removed text is the start of a longer token, never
    a special token and never cutting a character in two. When every token goes,
    ``<|endoftext|>`` is what is left to generate from.
    """
    ids = list(prompt_ids)
    vocab = token_bytes(tokenizer) if ids else None
    if vocab is None:
        return HealedPrompt(ids)
    removed, cut = b"", len(ids)
    best: tuple[bytes, int] | None = None  # the longest backup whose text is whole characters
    while cut > 0:
        piece = vocab.pieces[ids[cut - 1]] if 0 <= ids[cut - 1] < len(vocab) else None
        if not piece or not vocab.extends(piece + removed):
            break
        removed, cut = piece + removed, cut - 1
        try:
            removed.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the cut falls inside a character: back up further or not at all
        best = (removed, cut)
    if best is None:
        return HealedPrompt(ids)
    removed, cut = best
    kept = ids[:cut] or [tokenizer.eot_id]
    text = removed.decode("utf-8")
    return HealedPrompt(kept, removed, text, vocab)
