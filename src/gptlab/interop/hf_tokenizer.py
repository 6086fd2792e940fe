"""Tokenizers in a Hugging Face model directory, in and out, with identical token ids.

Import reads ``tokenizer.json`` and keeps its whole pipeline (normalizer, pre-tokenizer, BPE model,
decoder, added tokens) by wrapping a ``tokenizers.Tokenizer`` in our :class:`BPETokenizer`: GPT-2's
and Qwen2's / Llama 3's byte-level BPE, and Llama 2's / Mistral's SentencePiece-style BPE
(``▁`` for spaces, ``<0xNN>`` byte-fallback tokens) all load as they are. The end of text is
``<|endoftext|>``, else Llama 3's ``<|end_of_text|>``, else ``</s>``. Without ``tokenizer.json``,
GPT-2's ``vocab.json`` + ``merges.txt`` are read.

Export writes ``tokenizer.json``, and a ``tokenizer_config.json`` whose class makes
``AutoTokenizer`` load it unchanged: ``GPT2Tokenizer`` for GPT-2's exact pipeline (which that class
rebuilds from the vocabulary and merges alone), else the generic ``PreTrainedTokenizerFast``,
which loads ``tokenizer.json`` verbatim.

A char tokenizer has an exact Hugging Face equivalent, so it is exported too: a ``BPE`` model
with no merges (so every character is one token) and ``byte_fallback`` (so an unknown character
is spelled as ``<0xNN>`` byte tokens, Llama-style) holds the same ids; import recognises that
layout and gives the char tokenizer back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptlab.data.tokenizer import (
    GPT2_MERGES_FILE,
    GPT2_VOCAB_FILE,
    N_BYTES,
    TOKENIZER_FILE,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_gpt2_vocab,
    tokenizer_from_dict,
)
from gptlab.errors import CheckpointError, TokenizerError
from gptlab.interop.hf_files import read_json

TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE = "tokenizer_config.json", "special_tokens_map.json"


def _byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def _char_tokenizer_from_hf(data: Mapping[str, Any]) -> CharTokenizer | None:
    """The char tokenizer that :func:`_hf_json_of_char` wrote, or None for any other JSON."""
    model = data.get("model") or {}
    if not (
        model.get("type") == "BPE"
        and model.get("byte_fallback")
        and not model.get("merges")
        and data.get("normalizer") is None
        and data.get("pre_tokenizer") is None
        and isinstance(model.get("vocab"), dict)
    ):
        return None
    vocab: dict[str, int] = model["vocab"]
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    byte_ids = [vocab.get(_byte_token(b)) for b in range(N_BYTES)]
    if None in byte_ids or byte_ids != list(range(byte_ids[0], byte_ids[0] + N_BYTES)):
        return None
    byte_id_set = set(byte_ids)
    chars = sorted(
        ((i, token) for token, i in vocab.items() if token not in specials and i not in byte_id_set),
        key=lambda item: item[0],
    )
    if any(len(token) != 1 for _, token in chars) or [i for i, _ in chars] != list(range(len(chars))):
        return None
    try:
        return CharTokenizer([c for _, c in chars], specials, byte_offset=byte_ids[0])
    except TokenizerError:
        return None


def _hf_json_of_char(tokenizer: CharTokenizer) -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` with exactly ``tokenizer``'s ids (see the module docs)."""
    data = tokenizer.to_dict()
    offset, specials = data["byte_offset"], data["special_tokens"]
    vocab = {c: i for i, c in enumerate(data["chars"])}
    vocab.update(specials)
    vocab.update({_byte_token(b): offset + b for b in range(N_BYTES)})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(token, i) for token, i in sorted(specials.items(), key=lambda s: s[1])],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
            "merges": [],
        },
    }


def _added_token(content: str, token_id: int) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _is_gpt2_pipeline(data: Mapping[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` is GPT-2's byte-level BPE pipeline, which ``GPT2Tokenizer``
    rebuilds from the vocabulary and merges alone (transformers 5 does exactly that)."""
    model, pre, decoder = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("decoder") or {}
    return (
        model.get("type") == "BPE"
        and not model.get("byte_fallback")
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and model.get("dropout") is None
        and data.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space")
        and pre.get("use_regex", True)
        and decoder.get("type") == "ByteLevel"
    )


# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer): like GPT-4's, but one digit at a time
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def _without_offsets(value: Any) -> Any:
    """A pipeline's JSON without ``trim_offsets`` (which moves offsets, never ids)."""
    if isinstance(value, dict):
        return {k: _without_offsets(v) for k, v in value.items() if k != "trim_offsets"}
    if isinstance(value, list):
        return [_without_offsets(v) for v in value]
    return value


def _qwen2_pipeline() -> dict[str, Any]:
    """The normalizer and pre-tokenizer that transformers' ``Qwen2Tokenizer`` builds."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    data = json.loads(backend.to_str())
    return {key: _without_offsets(data[key]) for key in ("normalizer", "pre_tokenizer")}


def is_qwen2_pipeline(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer`` gives the ids that transformers' ``Qwen2Tokenizer`` gives when it
    rebuilds a pipeline from this vocabulary and merges (it does so for every ``qwen2`` model
    directory, whatever ``tokenizer.json`` holds): NFC, Qwen2's split, byte-level BPE."""
    if not isinstance(tokenizer, BPETokenizer):
        return False
    data = tokenizer.to_dict()
    model = data.get("model") or {}
    if model.get("byte_fallback") or model.get("ignore_merges") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return False
    return all(_without_offsets(data.get(key)) == value for key, value in _qwen2_pipeline().items())


def load_hf_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer of a model directory: ``tokenizer.json`` (a char tokenizer if it has our char
    layout, else its whole BPE pipeline), else ``vocab.json`` + ``merges.txt``. Padding and
    truncation settings are dropped: gptlab encodes plain ids. CheckpointError if there is none or
    it cannot be held (e.g. a non-BPE model, or no end-of-text token)."""
    try:
        if (directory / TOKENIZER_FILE).is_file():
            data = read_json(directory / TOKENIZER_FILE)
            if not isinstance(data, dict):
                raise TokenizerError("not a JSON object")
            char = _char_tokenizer_from_hf(data)
            if char is not None:
                return char
            return tokenizer_from_dict({**data, "truncation": None, "padding": None})
        if (directory / GPT2_VOCAB_FILE).is_file() and (directory / GPT2_MERGES_FILE).is_file():
            return load_gpt2_vocab(directory / GPT2_VOCAB_FILE, directory / GPT2_MERGES_FILE)
    except TokenizerError as exc:
        raise CheckpointError(f"{directory}: tokenizer: {exc}") from None
    raise CheckpointError(
        f"{directory}: no tokenizer: need {TOKENIZER_FILE}, or {GPT2_VOCAB_FILE} + {GPT2_MERGES_FILE}"
    )


def _template_bos(data: Mapping[str, Any]) -> str | None:
    """The special token a ``TemplateProcessing`` post-processor puts first (Llama's ``<s>``), if any."""
    processor = data.get("post_processor") or {}
    for step in processor.get("processors", [processor]) if processor.get("type") == "Sequence" else [processor]:
        if step.get("type") == "TemplateProcessing" and step.get("single"):
            first = step["single"][0]
            if isinstance(first, Mapping) and "SpecialToken" in first:
                return first["SpecialToken"].get("id")
    return None


def hf_tokenizer_files(
    tokenizer: Tokenizer, model_max_length: int, chat_template: str | None = None,
    special_tokens: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """File name → JSON content of the tokenizer files ``AutoTokenizer.from_pretrained`` loads
    with ids identical to ``tokenizer``'s: ``tokenizer.json``, ``tokenizer_config.json`` (class
    ``GPT2Tokenizer`` for GPT-2's byte-level BPE pipeline, else the generic
    ``PreTrainedTokenizerFast``, which loads ``tokenizer.json`` verbatim; ``chat_template`` when
    given) and ``special_tokens_map.json`` (the end-of-text token as eos, and as bos and unk
    unless the pipeline names its own, as Llama's ``<s>`` and ``<unk>``; ``special_tokens``, a
    model's own ``bos_token``, ``eos_token``, ... kept from its import, replace these where they
    are special tokens of ``tokenizer``)."""
    if isinstance(tokenizer, CharTokenizer):
        data = _hf_json_of_char(tokenizer)
    elif isinstance(tokenizer, BPETokenizer):
        data = {**tokenizer.to_dict(), "truncation": None, "padding": None}
    else:
        raise TokenizerError(f"cannot export a {type(tokenizer).__name__} to Hugging Face")
    gpt2 = _is_gpt2_pipeline(data)
    eot = tokenizer.eot_token
    special = {"bos_token": _template_bos(data) or eot, "eos_token": eot,
               "unk_token": (data.get("model") or {}).get("unk_token") or eot}
    own = tokenizer.special_tokens
    special |= {name: token for name, token in (special_tokens or {}).items()
                if name in ("bos_token", "eos_token", "unk_token", "pad_token") and token in own}
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer" if gpt2 else "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # decode must give the text back verbatim
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in data.get("added_tokens", [])
        },
    }
    if gpt2:
        tokenizer_config["add_prefix_space"] = False
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    return {TOKENIZER_FILE: data, TOKENIZER_CONFIG_FILE: tokenizer_config, SPECIAL_TOKENS_FILE: special}
