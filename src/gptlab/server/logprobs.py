"""Log-probabilities in OpenAI's two shapes, and how a single token is shown.

A token's text is its UTF-8 bytes; a token that holds part of a character (byte-level BPE, or a
char tokenizer's byte fallback) is shown as ``bytes:\\xe2\\x80`` in completions, as OpenAI does,
and chat logprobs carry the raw ``bytes``. ``text_offset`` counts characters of the returned text
(from the start of the prompt with ``echo``, else of the completion), token healing included.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from functools import lru_cache

from gptlab.server.engine import TokenEvent
from gptlab.server.protocol import (
    ChatLogprobs,
    CompletionLogprobs,
    TokenLogprob,
    TopLogprob,
)
from gptlab.data.tokenizer import BPETokenizer, CharTokenizer, Tokenizer


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes) → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    byte_values = list(printable)
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, codes, strict=True)}


class TokenTexts:
    """The bytes and display string of token ids of one tokenizer (cached)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._byte_offset: int | None = None
        if isinstance(tokenizer, CharTokenizer):
            self._byte_offset = int(tokenizer.to_dict()["byte_offset"])
        self._special = {i: s for s, i in tokenizer.special_tokens.items()}
        self._cache: dict[int, bytes] = {}

    def bytes(self, token_id: int) -> bytes:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._cache[token_id] = self._bytes(token_id)
        return cached

    def _bytes(self, token_id: int) -> bytes:
        if token_id in self._special:
            return self._special[token_id].encode("utf-8")
        if self._byte_offset is not None and 0 <= token_id - self._byte_offset < 256:
            return bytes([token_id - self._byte_offset])
        if isinstance(self.tokenizer, BPETokenizer):
            piece = self.tokenizer.backend.id_to_token(token_id)
            decoder = _byte_level_decoder()
            if piece is not None and all(c in decoder for c in piece):
                return bytes(decoder[c] for c in piece)
        return self.tokenizer.decode([token_id]).encode("utf-8")

    def string(self, token_id: int) -> str:
        """The token as text, or ``bytes:\\xNN...`` when its bytes are not valid UTF-8 alone."""
        raw = self.bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class OffsetCounter:
    """Character offset of each token in the text the tokens decode to, one token at a time.

    :meth:`back_up` steps back over characters that the next tokens spell again (token healing:
    the first generated token re-spells the prompt's tail). Offsets never go below 0: a token that
    starts before the returned text (the healed prompt tail, when the prompt is not echoed) is
    placed where its shown part begins."""

    def __init__(self, texts: TokenTexts, start: int = 0) -> None:
        self.texts = texts
        self.position = start
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def back_up(self, chars: int) -> None:
        """The next tokens start ``chars`` characters earlier: they spell those again."""
        self.position -= chars

    def advance(self, token_id: int) -> int:
        """The offset where ``token_id`` starts; then move past it."""
        offset = max(self.position, 0)
        self.position += len(self._decoder.decode(self.texts.bytes(token_id)))
        return offset


def completion_logprobs(
    texts: TokenTexts,
    offsets: OffsetCounter,
    events: Iterable[TokenEvent],
    prompt_ids: Sequence[int] = (),
    prompt_logprobs: Sequence[float | None] | None = None,
    text_length: int | None = None,
    healed_chars: int = 0,
) -> CompletionLogprobs:
    """Completions ``logprobs``: prompt tokens first (echo), then generated tokens.

    ``top_logprobs`` maps each alternative's string to its log-prob and always includes the chosen
    token (up to k + 1 entries, as OpenAI); offsets are clamped to ``text_length`` (a stop string
    may cut the text inside the last tokens). ``healed_chars`` (given with the first generated
    tokens) is how much of the prompt's end token healing made them spell again: they start that
    many characters earlier.
    """
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    limit = text_length if text_length is not None else float("inf")
    for i, token in enumerate(prompt_ids):
        logprob = prompt_logprobs[i] if prompt_logprobs is not None and i < len(prompt_logprobs) else None
        out.tokens.append(texts.string(token))
        out.token_logprobs.append(logprob)
        out.top_logprobs.append(None if logprob is None else {texts.string(token): logprob})
        out.text_offset.append(int(min(offsets.advance(token), limit)))
    offsets.back_up(healed_chars)
    for event in events:
        assert event.token_id is not None
        chosen = texts.string(event.token_id)
        top: dict[str, float] = {}
        for token, logprob in event.top_logprobs:
            top.setdefault(texts.string(token), logprob)
        if event.logprob is not None:
            top.setdefault(chosen, event.logprob)
        out.tokens.append(chosen)
        out.token_logprobs.append(event.logprob)
        out.top_logprobs.append(top)
        out.text_offset.append(int(min(offsets.advance(event.token_id), limit)))
    return out


def chat_logprobs(texts: TokenTexts, events: Iterable[TokenEvent], top_k: int) -> ChatLogprobs:
    """Chat ``logprobs.content``: each token with its bytes and its ``top_k`` alternatives."""
    content = []
    for event in events:
        assert event.token_id is not None
        alternatives = [
            TopLogprob(token=texts.string(t), logprob=lp, bytes=list(texts.bytes(t)))
            for t, lp in event.top_logprobs[:top_k]
        ]
        content.append(TokenLogprob(
            token=texts.string(event.token_id),
            logprob=event.logprob if event.logprob is not None else 0.0,
            bytes=list(texts.bytes(event.token_id)),
            top_logprobs=alternatives,
        ))
    return ChatLogprobs(content=content)
