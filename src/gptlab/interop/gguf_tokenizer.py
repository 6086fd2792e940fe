"""A gptlab tokenizer as GGUF metadata, the ``tokenizer.ggml.*`` keys llama.cpp reads.

A byte-level BPE is written as llama.cpp's ``"gpt2"`` tokenizer model: every id's token text
(byte-level strings such as ``Ġthe``, special tokens verbatim), a type per token (special tokens
are *control* tokens, other added tokens *user-defined*, ids the tokenizer does not fill up to the
model's vocabulary *unused* ``[PAD<id>]`` placeholders), the merges in rank order, and the name of
the pre-tokenizer split: ``"gpt-2"`` for gptlab's own pipeline (GPT-2's regex), ``"qwen2"`` for
Qwen2's. A pipeline llama.cpp has no name for (e.g. Llama 3's or a SentencePiece-style byte
fallback) is a TokenizerError, since llama.cpp would split text differently and give other ids.

A char tokenizer is written as llama.cpp's ``"llama"`` (SentencePiece) model, which gives the
same ids: each known character is a token (a space is spelled ``▁``, as SentencePiece does) and
its 256 byte-fallback ids are the ``<0xNN>`` byte tokens; no merge ever applies, since no token is
longer than a character. A char tokenizer whose characters include ``▁`` itself cannot be
written that way (TokenizerError).

The end-of-text token is both bos and eos, llama.cpp adds neither (gptlab never does), and a
tokenizer with ChatML's markers gets the ChatML chat template that gptlab's chat rendering
follows (:mod:`gptlab.data.chat`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gptlab.data.chat import IM_END, IM_START
from gptlab.data.tokenizer import N_BYTES, BPETokenizer, CharTokenizer, Tokenizer
from gptlab.errors import TokenizerError
from gptlab.interop.hf_chat import CHATML_TEMPLATE  # gptlab's chat layout, which llama.cpp and ollama know as ChatML
from gptlab.interop.hf_tokenizer import _is_gpt2_pipeline, is_qwen2_pipeline

# gguf.TokenType's values (kept here so that this module does not import gguf)
NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6
SPM_SPACE = "\u2581"  # SentencePiece's visible space, "▁"



@dataclass(frozen=True)
class GGUFVocab:
    """What a GGUF file says about a tokenizer (the ``tokenizer.ggml.*`` and chat-template keys)."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None  # the pre-tokenizer split llama.cpp applies (BPE only)
    tokens: list[str]
    token_types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    eot_id: int = 0
    chat_template: str | None = None


def _pre_tokenizer(tokenizer: BPETokenizer) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; TokenizerError if it has none."""
    data = tokenizer.to_dict()
    if _is_gpt2_pipeline(data):
        return "gpt-2"
    if is_qwen2_pipeline(tokenizer):
        return "qwen2"
    raise TokenizerError(
        "llama.cpp knows no pre-tokenizer that splits text as this tokenizer does (gptlab writes "
        "GPT-2's byte-level pipeline, as gptlab trains it, and Qwen2's); its ids would differ"
    )


def _merges(tokenizer: BPETokenizer) -> list[str]:
    """The merges in rank order as ``"left right"`` strings (tokenizers writes pairs or strings)."""
    merges = tokenizer.to_dict()["model"].get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _bpe_tokens(tokenizer: BPETokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    data = tokenizer.to_dict()
    tokens: list[str | None] = [None] * n_vocab
    types = [UNUSED] * n_vocab
    for text, i in data["model"]["vocab"].items():
        tokens[i], types[i] = text, NORMAL
    for added in data.get("added_tokens", []):
        i = added["id"]
        tokens[i], types[i] = added["content"], CONTROL if added.get("special") else USER_DEFINED
    return [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)], types


def _char_tokens(tokenizer: CharTokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    chars = tokenizer.chars
    if SPM_SPACE in chars:
        raise TokenizerError(f"a char tokenizer with the character {SPM_SPACE!r} cannot be written for llama.cpp, "
                             "whose SentencePiece tokenizer spells a space that way")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [UNUSED] * n_vocab
    for i, c in enumerate(chars):
        tokens[i], types[i] = SPM_SPACE if c == " " else c, NORMAL
    byte_offset = tokenizer.to_dict()["byte_offset"]
    for b in range(N_BYTES):
        tokens[byte_offset + b], types[byte_offset + b] = f"<0x{b:02X}>", BYTE
    for text, i in tokenizer.special_tokens.items():
        tokens[i], types[i] = text, CONTROL
    return tokens, types


def _chat_template(special: Sequence[str]) -> str | None:
    return CHATML_TEMPLATE if IM_START in special and IM_END in special else None


def gguf_vocab(tokenizer: Tokenizer, n_vocab: int) -> GGUFVocab:
    """The GGUF description of ``tokenizer`` for a model with ``n_vocab`` embeddings (ids the
    tokenizer does not use become unused placeholders). TokenizerError for a tokenizer larger than
    ``n_vocab``, or one llama.cpp would split differently (see the module docs)."""
    if tokenizer.vocab_size > n_vocab:
        raise TokenizerError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {n_vocab} embeddings")
    chat_template = _chat_template(list(tokenizer.special_tokens))
    if isinstance(tokenizer, BPETokenizer):
        pre = _pre_tokenizer(tokenizer)
        tokens, types = _bpe_tokens(tokenizer, n_vocab)
        return GGUFVocab("gpt2", pre, tokens, types, _merges(tokenizer), eot_id=tokenizer.eot_id,
                         chat_template=chat_template)
    if isinstance(tokenizer, CharTokenizer):
        tokens, types = _char_tokens(tokenizer, n_vocab)
        # equal scores: nothing merges anyway, every token being a single character
        return GGUFVocab("llama", None, tokens, types, scores=[0.0] * n_vocab, eot_id=tokenizer.eot_id,
                         chat_template=chat_template)
    raise TokenizerError(f"cannot write a {type(tokenizer).__name__} to GGUF")
