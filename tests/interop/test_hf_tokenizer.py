"""Tokenizers of the Llama family imported with exactly transformers' token ids: SentencePiece-style
BPE with byte fallback (Llama 2, Mistral), byte-level BPE (Qwen2, Llama 3), added and special
tokens; and the end-of-text token each family names."""

from __future__ import annotations

import pytest

from gptlab.data.tokenizer import BPETokenizer
from gptlab.interop.hf import import_hf
from gptlab.interop.hf_tokenizer import is_qwen2_pipeline

from .conftest import TEXTS

transformers = pytest.importorskip("transformers")

# the model directories of conftest.KINDS, one per tokenizer style, and the end of text each names
STYLES = {"llama": "</s>", "mistral": "</s>", "llama3": "<|end_of_text|>", "qwen2": "<|endoftext|>"}


@pytest.mark.parametrize("kind", list(STYLES))
def test_ids_match_transformers(kind: str, family_dir) -> None:
    directory = family_dir(kind)
    _, tokenizer = import_hf(directory)
    reference = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == len(reference)
    for text in TEXTS:
        assert tokenizer.encode(text) == reference(text, add_special_tokens=False)["input_ids"], text
    assert tokenizer.encode_batch(list(TEXTS)) == [reference(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert tokenizer.eot_token == STYLES[kind]
    assert tokenizer.eot_id == reference.convert_tokens_to_ids(STYLES[kind])


@pytest.mark.parametrize("kind", list(STYLES))
def test_special_tokens_are_single_ids_unless_plain_text(kind: str, family_dir) -> None:
    _, tokenizer = import_hf(family_dir(kind))
    for token, token_id in tokenizer.special_tokens.items():
        assert token_id in tokenizer.encode(f"a{token}b")
        assert token_id not in tokenizer.encode(f"a{token}b", allow_special=False)
    assert tokenizer.encode(tokenizer.eot_token) == [tokenizer.eot_id]


def test_sentencepiece_style_spells_unknown_characters_as_bytes(family_dir) -> None:
    _, tokenizer = import_hf(family_dir("llama"))
    vocab = tokenizer.backend.get_vocab()
    rocket = tokenizer.encode("🚀")
    assert [vocab["<0xF0>"], vocab["<0x9F>"], vocab["<0x9A>"], vocab["<0x80>"]] == rocket[-4:]
    assert tokenizer.decode(tokenizer.encode("a 🚀 and 日本")) == "a 🚀 and 日本"


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_byte_level_styles_decode_what_they_encode(kind: str, family_dir) -> None:
    _, tokenizer = import_hf(family_dir(kind))
    for text in TEXTS:
        if "\u0301" not in text:  # Qwen2 normalises to NFC: a lone combining accent is not kept apart
            assert tokenizer.decode(tokenizer.encode(text, allow_special=False)) == text


def test_qwen2_pipeline_is_recognised(family_dir) -> None:
    """Only Qwen2's own pipeline may be exported as Qwen2 (transformers rebuilds that one)."""
    assert is_qwen2_pipeline(import_hf(family_dir("qwen2")).tokenizer)
    assert not is_qwen2_pipeline(import_hf(family_dir("llama3")).tokenizer)
    assert not is_qwen2_pipeline(import_hf(family_dir("llama")).tokenizer)
