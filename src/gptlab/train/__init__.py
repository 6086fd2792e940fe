"""Stage 4, training: next-token prediction on windows of the corpus, saved as checkpoints.

- :mod:`~gptlab.train.config` — :class:`TrainConfig`, everything a run needs;
- :mod:`~gptlab.train.trainer` — :func:`build_trainer` and :class:`Trainer`: the loop, evaluation,
  learning-rate schedule, metrics and resuming;
- :mod:`~gptlab.train.muon` — the Muon optimizer (AdamW for the rest);
- :mod:`~gptlab.train.distributed` — DDP / FSDP2 wrapping from outside the model, for ``torchrun``;
- :mod:`~gptlab.train.gpus` — peak FLOPS per device, for MFU;
- :mod:`~gptlab.train.checkpoint` — atomic safetensors checkpoints, loaded back with their tokenizer;
- :mod:`~gptlab.train.curves` — the loss curve from ``metrics.jsonl``;
- :mod:`~gptlab.train.tracking` — ``--log-to``: the same metrics to TensorBoard, CSV or W&B.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptlab.lazy import lazy_exports
from gptlab.train.config import TrainConfig

if TYPE_CHECKING:
    from gptlab.train.checkpoint import Checkpoint, find_checkpoint, load_checkpoint, load_config, save_checkpoint
    from gptlab.train.muon import MuonAdamW
    from gptlab.train.trainer import Trainer, TrainResult, build_trainer, resolve_device

# the modules that need torch load on first use (gptlab.lazy)
__getattr__ = lazy_exports(__name__, {
    "checkpoint": ["Checkpoint", "find_checkpoint", "load_checkpoint", "load_config", "save_checkpoint"],
    "muon": ["MuonAdamW"],
    "trainer": ["Trainer", "TrainResult", "build_trainer", "resolve_device"],
})

__all__ = [
    "Checkpoint",
    "MuonAdamW",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_trainer",
    "find_checkpoint",
    "load_checkpoint",
    "load_config",
    "resolve_device",
    "save_checkpoint",
]
