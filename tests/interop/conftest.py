"""Fixtures for the Hugging Face tests: no test may reach the network, and tokenizers in each style
of the Llama family are built here, small and offline, with the ``tokenizers`` library and
``transformers``' own tokenizer classes (which write the ``tokenizer.json`` a real model ships)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

# Text that exercises every path of a tokenizer: accents, CJK and emoji (byte fallback where the
# vocabulary lacks them), digits, contractions, runs of spaces and newlines, a literal "<0x41>",
# and special tokens of each family written in the text.
TEXTS = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces,  double  spaces and trailing   ",
    "Ça va? naïve café, Größe — déjà vu",
    "日本語のテキストと中文 🚀🎉👩‍💻 emoji",
    "numbers 1234567 and 3.14159, don't won't it's",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "a literal <0x41> and </s> and <s>[INST] hi [/INST]",
    "<|endoftext|>next <|im_start|>user\nhi<|im_end|> <|begin_of_text|>x<|end_of_text|><|eot_id|>",
    "\u0301 combining, \ufeff bom, \x00 nul, \U0010ffff",
)
CORPUS = "\n".join(TEXTS[:3]) + "\n" + "the cat sat on the mat with the hat. " * 20 + "def f(x): return x + 1\n" * 5


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub and gptlab's hub lookup stay offline unless a test says otherwise."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _trained_bpe(pre_tokenizer, vocab_size: int, *, byte_level: bool):
    """Vocabulary and merges of a BPE trained on CORPUS behind ``pre_tokenizer``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator([CORPUS], trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def sentencepiece_style(directory: Path) -> Path:
    """A Llama 2 / Mistral style tokenizer: ``<unk> <s> </s>``, the 256 ``<0xNN>`` byte tokens,
    then merges over ``▁``-marked words; saved by transformers' LlamaTokenizer."""
    from tokenizers import pre_tokenizers
    from transformers import LlamaTokenizer

    trained, merges = _trained_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                                   400, byte_level=False)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for token in sorted(trained, key=trained.get):
        vocab.setdefault(token, len(vocab))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens(["[INST]", "[/INST]"], special_tokens=True)
    tokenizer.add_tokens(["<tool>"])  # an added token that is not special
    tokenizer.save_pretrained(str(directory))
    return directory


def qwen2_style(directory: Path) -> Path:
    """A Qwen2 style tokenizer: NFC, Qwen's split regex, byte-level BPE, ``<|endoftext|>``,
    ``<|im_start|>``, ``<|im_end|>``; saved by transformers' Qwen2Tokenizer."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab, merges = _trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), 400, byte_level=True)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.add_tokens(["<think>"])
    tokenizer.save_pretrained(str(directory))
    return directory


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_style(directory: Path) -> Path:
    """A Llama 3 style tokenizer: its split regex, byte-level BPE with ``ignore_merges``,
    ``<|begin_of_text|>`` prepended by the post-processor, ``<|end_of_text|>`` and ``<|eot_id|>``;
    saved through the generic PreTrainedTokenizerFast, as Meta's is."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab, merges = _trained_bpe(pre, 400, byte_level=True)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                        eos_token="<|end_of_text|>")
    tokenizer.save_pretrained(str(directory))
    return directory


TOKENIZER_STYLES = {"sentencepiece": sentencepiece_style, "qwen2": qwen2_style, "llama3": llama3_style}


@pytest.fixture(scope="session")
def styled_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory):
    """``styled_tokenizer_dir(style)``: a directory holding a tokenizer of that style (built once)."""
    pytest.importorskip("transformers")
    built: dict[str, Path] = {}

    def get(style: str) -> Path:
        if style not in built:
            built[style] = TOKENIZER_STYLES[style](tmp_path_factory.mktemp(f"tok-{style}"))
        return built[style]

    return get


# model_type → (config class, tokenizer style, extra config): the shapes under test
KINDS = {
    "llama": ("LlamaConfig", "sentencepiece", {}),
    "llama3": ("LlamaConfig", "llama3", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500.0, "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}, "tie_word_embeddings": True}),
    "llama-biases": ("LlamaConfig", "sentencepiece", {"attention_bias": True, "mlp_bias": False}),
    "mistral": ("MistralConfig", "sentencepiece", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "qwen2", {"tie_word_embeddings": True, "rms_norm_eps": 1e-6}),
    "qwen3": ("Qwen3Config", "qwen2", {"head_dim": 16}),
}
ARCHITECTURE = {"llama": "LlamaForCausalLM", "llama3": "LlamaForCausalLM", "llama-biases": "LlamaForCausalLM",
                "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Norm weights start at 1 and biases at 0: move every 1-D parameter so that mistakes show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return model


@pytest.fixture(scope="session")
def family_dir(styled_tokenizer_dir, tmp_path_factory: pytest.TempPathFactory):
    """``family_dir(kind)``: a random tiny model of that kind and its tokenizer, both saved by
    transformers into one directory (built once per kind)."""
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind in built:
            return built[kind]
        config_class, style, extra = KINDS[kind]
        directory = tmp_path_factory.mktemp(kind) / "model"
        shutil.copytree(styled_tokenizer_dir(style), directory)
        import transformers

        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
        seed = list(KINDS).index(kind)
        torch.manual_seed(seed)
        config = getattr(transformers, config_class)(
            vocab_size=len(hf_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.1,
            **{"tie_word_embeddings": False, **extra},
        )
        perturbed(getattr(transformers, ARCHITECTURE[kind])(config), seed).save_pretrained(str(directory))
        built[kind] = directory
        return directory

    return get
