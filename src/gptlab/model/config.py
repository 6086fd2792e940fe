"""The model's shape: a small validated dataclass, and a table of named presets.

A config is saved inside every checkpoint, so a checkpoint describes itself. Presets range from
models that train in seconds on a CPU to the GPT-3 family, which can be counted without ever
being instantiated (see ``gptlab.model.count``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from gptlab.errors import ConfigError

GPT2_VOCAB_SIZE = 50257

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)``, with unknown keys and wrong arguments reported as ConfigError."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} keys: {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary")
MLPS = ("gelu", "swiglu", "relu2")


def check_positive_ints(obj: Any, names: tuple[str, ...], *, optional: bool = False) -> None:
    """Raise ConfigError unless each named field of ``obj`` is a positive int (or None, if ``optional``)."""
    for name in names:
        value = getattr(obj, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer{' or null' if optional else ''}, got {value!r}")


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a decoder-only transformer. Validated at construction: a bad config never reaches the model.

    The defaults are GPT-2 (2019): LayerNorm, learned positions, a GELU MLP, biases, one key/value
    head per query head, a head tied to the token embedding. The other choices give today's
    Llama / Qwen2 / Mistral family: RMSNorm, rotary positions, a SwiGLU MLP, grouped-query
    attention (``n_kv_head`` < ``n_head``), no biases (Qwen2: q/k/v biases only), often an untied
    head. ReLU² and QK-norm come from the modded-nanogpt speedrun, and so does the hashed bigram
    embedding (``bigram_buckets``).
    """

    vocab_size: int = GPT2_VOCAB_SIZE
    block_size: int = 1024  # context length: the longest sequence the model can attend over
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as in GPT-2
    layer_norm_epsilon: float = 1e-5  # epsilon of every norm, LayerNorm or RMSNorm
    # The embedding/LM-head matrices get rows up to a multiple of this (64 suits GPU tensor cores);
    # the extra rows are never a target and their logits are cut off: vocab_size stays the truth.
    vocab_pad_multiple: int = 1
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    positions: str = "learned"  # "learned" (a wpe table) | "rotary" (RoPE on q and k)
    rope_theta: float = 10000.0
    # Llama 3's frequency scaling ("rope_type": "llama3"); factor 1.0 means none
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    mlp: str = "gelu"  # "gelu" (tanh approximation) | "swiglu" (silu(gate) * up) | "relu2" (relu(x)²)
    mlp_hidden: int | None = None  # the MLP's inner width; None means 4 * n_embd
    n_kv_head: int | None = None  # key/value heads: None = n_head (MHA), fewer = GQA, 1 = MQA
    qkv_bias: bool | None = None  # biases on q, k, v; None follows ``bias`` (Qwen2: True with bias False)
    qk_norm: bool = False  # RMSNorm over each head's queries and keys before the rotary embedding
    tie_embeddings: bool = True  # the LM head shares the token embedding's weights
    # Rows of a hashed bigram embedding added to the token embedding: each token also looks up a
    # row for (previous token, this token), hashed into this many rows (the last row is the first
    # token's, which has no previous one). 0 means none. Cheap per token (a lookup, no FLOPs), it
    # hands the model the local statistics it would otherwise spend layers learning; it has no
    # Hugging Face or GGUF equivalent, so such models do not export.
    bigram_buckets: int = 0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_pad_multiple",
                                   "rope_original_context"))
        check_positive_ints(self, ("mlp_hidden", "n_kv_head"), optional=True)
        if not isinstance(self.bigram_buckets, int) or isinstance(self.bigram_buckets, bool) \
                or self.bigram_buckets < 0 or self.bigram_buckets == 1:
            raise ConfigError(f"bigram_buckets must be 0 (none) or an integer >= 2, got {self.bigram_buckets!r}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.n_head % self.kv_heads != 0:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.kv_heads})")
        for name, choices in (("norm", NORMS), ("positions", POSITIONS), ("mlp", MLPS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ConfigError(f"rotary positions need an even head dimension, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("layer_norm_epsilon", "rope_theta", "rope_low_freq_factor", "rope_high_freq_factor"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.rope_scaling_factor >= 1.0:
            raise ConfigError(f"rope_scaling_factor must be >= 1, got {self.rope_scaling_factor!r}")
        if self.rope_high_freq_factor <= self.rope_low_freq_factor and self.rope_scaling_factor != 1.0:
            raise ConfigError("rope_high_freq_factor must be greater than rope_low_freq_factor")

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``n_kv_head``, or ``n_head`` when it is None)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        """The MLP's inner width (``mlp_hidden``, or 4 * n_embd when it is None)."""
        return 4 * self.n_embd if self.mlp_hidden is None else self.mlp_hidden

    @property
    def has_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and LM-head matrices: vocab_size rounded up to vocab_pad_multiple."""
        m = self.vocab_pad_multiple
        return (self.vocab_size + m - 1) // m * m

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Build a config from a dict (e.g. a checkpoint's JSON); unknown keys are an error."""
        return dataclass_from_dict(cls, data, "model config")

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# The Llama family's choices, shared by its presets below.
LLAMA: dict[str, Any] = dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=False)

# Shapes of published models (GPT-2: Radford et al. 2019 / HF configs; GPT-3: Brown et al. 2020,
# Table 2.1). Two rows of that table cannot be built as printed; PRESET_NOTES says what we chose.
# Where a preset departs from the paper it is named after, and why; `gptlab count` prints these.
PRESET_NOTES: dict[str, str] = {
    "gpt3-xl": "GPT-3's Table 2.1 lists 24 heads of d_head 128 for d_model 2048, but 24 × 128 = 3,072 ≠ 2,048 "
    "and 2,048 is not divisible by 24; we keep d_model 2048 and d_head 128, so 16 heads (n_head × d_head "
    "= d_model, as in every other row), which also gives the table's 1.3B parameters",
    "gpt3-13b": "GPT-3's Table 2.1 lists d_model 5140, but its 40 heads of 128 make 5,120 (5,140 is not "
    "divisible by 40, so likely a typo); we use 5,120, which also gives the table's 13B parameters",
}

PRESETS: dict[str, dict[str, Any]] = {
    # tiny models for tests and laptops; vocab_size is set from the tokenizer at train time
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=256),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=512),
    "mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=512),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    "gpt3-small": dict(n_layer=12, n_head=12, n_embd=768, block_size=2048),
    "gpt3-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=2048),
    "gpt3-large": dict(n_layer=24, n_head=16, n_embd=1536, block_size=2048),
    "gpt3-xl": dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048),
    "gpt3-2.7b": dict(n_layer=32, n_head=32, n_embd=2560, block_size=2048),
    "gpt3-6.7b": dict(n_layer=32, n_head=32, n_embd=4096, block_size=2048),
    "gpt3-13b": dict(n_layer=40, n_head=40, n_embd=5120, block_size=2048),
    "gpt3-175b": dict(n_layer=96, n_head=96, n_embd=12288, block_size=2048),
    # today's family at small sizes: RMSNorm, rotary positions, SwiGLU, grouped-query attention,
    # no biases, untied head (vocab_size is set from the tokenizer at train time)
    "llama-tiny": dict(LLAMA, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp_hidden=192, block_size=64,
                       vocab_size=256),
    "llama-small": dict(LLAMA, n_layer=4, n_head=4, n_kv_head=2, n_embd=128, mlp_hidden=384,
                        block_size=128, vocab_size=512),
    "llama-mini": dict(LLAMA, n_layer=6, n_head=6, n_kv_head=2, n_embd=384, mlp_hidden=1024,
                       block_size=256, vocab_size=512),
    # llama-small + QK-norm (RMSNorm on each head's queries and keys) and the LM head tied to the
    # token embedding, as Qwen3's small models have them: the main job's model, chosen by the recipe
    # search in bench/README (QK-norm −0.05 bits/byte at equal steps, the tied head −0.07 over 4 seeds)
    "qwen3-small": dict(LLAMA, n_layer=4, n_head=4, n_kv_head=2, n_embd=128, mlp_hidden=384,
                        block_size=128, vocab_size=512, qk_norm=True, tie_embeddings=True),
    # shapes of public checkpoints (their config.json on the Hugging Face Hub)
    "smollm2-135m": dict(LLAMA, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, mlp_hidden=1536,
                         block_size=8192, vocab_size=49152, rope_theta=100000.0, tie_embeddings=True),
    "smollm2-360m": dict(LLAMA, n_layer=32, n_head=15, n_kv_head=5, n_embd=960, mlp_hidden=2560,
                         block_size=8192, vocab_size=49152, rope_theta=100000.0, tie_embeddings=True),
    "llama-3.2-1b": dict(LLAMA, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, mlp_hidden=8192,
                         block_size=131072, vocab_size=128256, rope_theta=500000.0, tie_embeddings=True,
                         rope_scaling_factor=32.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                         rope_original_context=8192),
    "llama-3.1-8b": dict(LLAMA, n_layer=32, n_head=32, n_kv_head=8, n_embd=4096, mlp_hidden=14336,
                         block_size=131072, vocab_size=128256, rope_theta=500000.0, rope_scaling_factor=8.0,
                         rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_context=8192),
    "qwen2.5-0.5b": dict(LLAMA, n_layer=24, n_head=14, n_kv_head=2, n_embd=896, mlp_hidden=4864,
                         block_size=32768, vocab_size=151936, rope_theta=1000000.0, qkv_bias=True,
                         tie_embeddings=True, layer_norm_epsilon=1e-6),
    "mistral-7b-v0.3": dict(LLAMA, n_layer=32, n_head=32, n_kv_head=8, n_embd=4096, mlp_hidden=14336,
                            block_size=32768, vocab_size=32768, rope_theta=1000000.0),
    "tinyllama-1.1b": dict(LLAMA, n_layer=22, n_head=32, n_kv_head=4, n_embd=2048, mlp_hidden=5632,
                           block_size=2048, vocab_size=32000),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The named preset as a config, with optional field overrides. Unknown names raise ConfigError."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})
