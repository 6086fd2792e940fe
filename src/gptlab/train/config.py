"""Training settings: one validated dataclass; every field is a CLI flag and a config-file key.

Kept apart from ``gptlab.train.trainer`` so that reading, validating and printing settings (the CLI's
``--help``) does not import PyTorch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gptlab.model.config import GPTConfig, check_positive_ints, dataclass_from_dict, preset
from gptlab.errors import ConfigError
from gptlab.train.tracking import parse_trackers

WINDOW_ORDERS = ("epochs", "random")  # gptlab.data.shards.WindowSampler's orders (kept free of torch here)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Validated at construction."""

    # data
    data: str | None = None  # text file, directory, .jsonl, or prepared dir; None = the stdlib's functions
    tokenizer: str = "bpe"  # "char", "bpe", or a path to a tokenizer (dir, tokenizer.json, vocab.json+merges.txt)
    vocab_size: int = 2048  # for a BPE tokenizer trained on the corpus
    max_bytes: int | None = 16_000_000  # cap on corpus size read (None: all of it)
    val_fraction: float = 0.1
    # model
    preset: str = "qwen3-small"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # more GPTConfig fields, e.g. {"mlp": "relu2"}
    # optimisation
    batch_size: int = 16
    windows: str = "random"  # "random": windows at random offsets (nanoGPT); "epochs": each once an epoch, shuffled
    grad_accum: int = 1
    max_steps: int = 1000
    max_time: float | None = None  # seconds; stop (and save) when exceeded
    optimizer: str = "muon"  # "muon": Muon for the blocks' weight matrices, AdamW for the rest; or "adamw"
    learning_rate: float = 6e-3
    min_lr: float = 0.0
    warmup_steps: int = 100
    decay: str = "linear"  # shape of the decay to min_lr: "linear" or "cosine"
    cooldown_fraction: float = 0.5  # share of the post-warmup steps spent decaying (< 1: hold the peak first)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # bookkeeping
    out: str | None = None  # run directory; default runs/<data name>
    eval_interval: int = 200
    eval_iters: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 200
    keep_checkpoints: int = 3  # the newest N checkpoints stay (older ones are the fallback for a damaged one)
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with bf16 units, else fp32), float32, bfloat16
    compile: bool | None = None  # None: on for CUDA, off elsewhere
    fsdp: bool = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2)
    vocab_pad_multiple: int | None = None  # None: 64 on CUDA (tensor-core friendly), 1 elsewhere
    progress: bool = True
    sample_tokens: int = 300  # tokens to sample at the end (0: none)
    sample_prompt: str = ""
    log_to: list[str] = dataclasses.field(default_factory=list)  # trackers beside metrics.jsonl (tracking.py)

    def __post_init__(self) -> None:
        check_positive_ints(self, ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_iters",
                                   "log_interval", "checkpoint_interval", "keep_checkpoints", "vocab_size"))
        for name in ("warmup_steps", "sample_tokens", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.learning_rate > 0 or not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError("need learning_rate > 0 and 0 <= min_lr <= learning_rate")
        if self.decay not in ("cosine", "linear") or not 0 < self.cooldown_fraction <= 1:
            raise ConfigError(f"need decay cosine or linear and 0 < cooldown_fraction <= 1, "
                              f"got {self.decay!r} and {self.cooldown_fraction!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.vocab_pad_multiple is not None and self.vocab_pad_multiple < 1:
            raise ConfigError(f"vocab_pad_multiple must be positive, got {self.vocab_pad_multiple!r}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ConfigError(f"max_bytes must be positive, got {self.max_bytes!r}")
        check_optimization_settings(self)
        self.log_to = parse_trackers(self.log_to)  # "tensorboard,csv" or a list of names
        if self.windows not in WINDOW_ORDERS:
            raise ConfigError(f"windows must be epochs or random, got {self.windows!r}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"optimizer must be adamw or muon, got {self.optimizer!r}")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model must be a table of model config fields, got {self.model!r}")
        settable = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size", "vocab_pad_multiple"}
        unknown = sorted(set(self.model) - settable)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)} (choose from {', '.join(sorted(settable))})")
        self.model_config(vocab_size=256)  # an unknown preset or a bad shape fails here, before any work

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a config file or a saved run); unknown keys are an error."""
        return dataclass_from_dict(cls, data, "training config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int, device_type: str = "cpu") -> GPTConfig:
        """The preset with this config's overrides and the tokenizer's vocabulary size."""
        overrides = {
            name: getattr(self, name)
            for name in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
            if getattr(self, name) is not None
        }
        overrides.update(self.model)
        pad = self.vocab_pad_multiple or (64 if device_type == "cuda" else 1)
        return preset(self.preset, vocab_size=vocab_size, vocab_pad_multiple=pad, **overrides)


def check_optimization_settings(cfg: Any) -> None:
    """The checks pre-training and fine-tuning configs share: time budget, dtype, AdamW settings."""
    if cfg.max_time is not None and not cfg.max_time > 0:
        raise ConfigError(f"max_time must be positive, got {cfg.max_time!r}")
    if cfg.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"dtype must be auto, float32 or bfloat16, got {cfg.dtype!r}")
    if cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ConfigError("weight_decay and grad_clip must be >= 0")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1):
        raise ConfigError("beta1 and beta2 must be in [0, 1)")
