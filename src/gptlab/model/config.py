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


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2 style decoder. Validated at construction: a bad config never reaches the model."""

    vocab_size: int = GPT2_VOCAB_SIZE
    block_size: int = 1024  # context length: the longest sequence the model can attend over
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as in GPT-2
    layer_norm_epsilon: float = 1e-5
    # The embedding/LM-head matrices get rows up to a multiple of this (64 suits GPU tensor cores);
    # the extra rows are never a target and their logits are cut off: vocab_size stays the truth.
    vocab_pad_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_pad_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon!r}")

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


# Shapes of published models (GPT-2: Radford et al. 2019 / HF configs; GPT-3: Brown et al. 2020,
# Table 2.1). The paper lists GPT-3 XL with 24 heads of 128 (≠ d_model 2048) and 13B with
# d_model 5140; we use 16 heads and 5120, which keep n_embd = n_head * head_dim and the same
# parameter count.
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
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The named preset as a config, with optional field overrides. Unknown names raise ConfigError."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})
