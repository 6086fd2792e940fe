"""Fine-tuning settings: ``FinetuneConfig`` and ``LoRAConfig``, validated dataclasses without torch.

Kept apart from ``gptlab.finetune.finetuner`` and ``gptlab.finetune.lora`` (as ``train_config`` is from ``train``) so
the CLI can build its flags and ``--help`` without importing PyTorch. Every ``FinetuneConfig``
field is a ``gptlab finetune`` flag; ``LoRAConfig`` is saved with every adapter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gptlab.model.config import check_positive_ints, dataclass_from_dict
from gptlab.errors import ConfigError
from gptlab.train.config import check_optimization_settings
from gptlab.train.tracking import parse_trackers

# The four projections of every block: q/k/v, attention output, MLP up and down.
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (Hu et al. 2021): ``W x + (alpha / rank) · B A dropout(x)`` on each target.

    ``targets`` are module-name suffixes: ``"attn.c_attn"`` adapts ``transformer.h.{i}.attn.c_attn``
    in every block.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0  # peft's default; the LoRA paper used 0.1 on GPT-2. Costs time on CPU.
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ConfigError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        targets = tuple(self.targets) if not isinstance(self.targets, str) else (self.targets,)
        object.__setattr__(self, "targets", targets)
        if not targets or any(not isinstance(t, str) or not t.strip(".") for t in targets):
            raise ConfigError(f"LoRA targets must be non-empty module names, got {self.targets!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        return dataclass_from_dict(cls, dict(data), "LoRA config")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run. Validated at construction.

    Optimisation reuses the pre-training machinery (``gptlab.train.trainer.make_optimizer``, ``lr_at``):
    :meth:`schedule` gives the ``TrainConfig`` they read.
    """

    base: str = ""  # run directory or checkpoint folder of the model to fine-tune
    data: str = ""  # .jsonl or .json of text, prompt/completion, messages, Alpaca or ShareGPT records
    out: str | None = None  # run directory; default runs/<base name>-finetune[-N]
    # data
    val_fraction: float = 0.1  # held-out examples (seeded permutation); 0: no validation
    truncate: bool = False  # cut examples longer than the context instead of refusing them
    # LoRA (None: full fine-tuning)
    lora: LoRAConfig | None = None
    # optimisation
    batch_size: int = 8  # examples per micro-batch, padded to the longest
    grad_accum: int = 1
    epochs: float = 3.0  # sets max_steps when max_steps is None
    max_steps: int | None = None
    max_time: float | None = None  # seconds; stop (and save) when exceeded
    learning_rate: float | None = None  # None: 1e-4 full, 1e-3 LoRA
    min_lr_ratio: float = 0.1  # the cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # evaluation and bookkeeping
    eval_interval: int = 50
    early_stopping: int | None = None  # stop after this many evaluations without a lower val loss
    restore_best: bool = True  # a finished run ends with the weights of its lowest val loss, not the last step's
    log_interval: int = 10
    checkpoint_interval: int = 100
    keep_checkpoints: int = 3  # the newest N checkpoints stay (the fallback for a damaged one)
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    progress: bool = True
    log_to: list[str] = dataclasses.field(default_factory=list)  # trackers beside metrics.jsonl (train/tracking.py)

    def __post_init__(self) -> None:
        self.log_to = parse_trackers(self.log_to)  # "tensorboard,csv" or a list of names
        if isinstance(self.lora, dict):
            self.lora = LoRAConfig.from_dict(self.lora)
        check_positive_ints(self, ("batch_size", "grad_accum", "eval_interval", "log_interval", "checkpoint_interval",
                                   "keep_checkpoints"))
        check_positive_ints(self, ("max_steps", "early_stopping"), optional=True)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.early_stopping is not None and self.val_fraction == 0:
            raise ConfigError("early stopping watches the validation loss: it needs val_fraction > 0")
        if not self.epochs > 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.warmup_steps < 0 or self.seed < 0:
            raise ConfigError("warmup_steps and seed must be >= 0")
        check_optimization_settings(self)

    @property
    def lr(self) -> float:
        """The peak learning rate, with the default for the mode filled in."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.lora is not None else 1e-4

    def schedule(self, max_steps: int) -> Any:
        """The ``TrainConfig`` that ``gptlab.train.trainer.lr_at`` and ``make_optimizer`` read (optimizer
        and learning-rate settings; the model and data fields keep their defaults). Fine-tuning uses
        AdamW and a cosine decay over all the steps after warmup, whatever pre-training's defaults are."""
        from gptlab.train.config import TrainConfig

        return TrainConfig(
            optimizer="adamw", decay="cosine", cooldown_fraction=1.0,
            max_steps=max_steps, warmup_steps=self.warmup_steps, learning_rate=self.lr,
            min_lr=self.lr * self.min_lr_ratio, weight_decay=self.weight_decay,
            beta1=self.beta1, beta2=self.beta2, grad_clip=self.grad_clip,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lora"] = self.lora.to_dict() if self.lora is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from a dict (a saved run); unknown keys are an error."""
        return dataclass_from_dict(cls, dict(data), "fine-tuning config")
