"""What bit-exact resumption depends on, recorded in every checkpoint and checked on ``--resume``.

A resumed run repeats an uninterrupted one bit for bit when the same code runs the same
arithmetic in the same order: the same PyTorch version, the same number of intra-op threads
(reductions split differently over 1 and 2 threads round differently), the same kind of device,
the same number of processes and the same precision (``--dtype auto`` is bf16 autocast on a CPU
with bf16 units and fp32 on one without, so a run moved between machines can change it). The
weights, optimizer moments, RNG states and data position come back from the checkpoint; these
conditions cannot, so they are recorded and compared.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def conditions(device: torch.device, precision: str, world_size: int = 1) -> dict[str, Any]:
    """The conditions of this process that bit-exact resumption depends on; ``precision`` is what
    ``gptlab.train.precision.describe`` says of the run's ``--dtype``."""
    found: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "world_size": world_size,
        "precision": precision,
    }
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"name saved → now"`` for every recorded condition that differs (unrecorded ones are skipped)."""
    return [f"{key} {saved[key]} → {now.get(key)}" for key in saved if saved[key] != now.get(key)]


def warn_if_changed(saved: dict[str, Any] | None, device: torch.device, precision: str,
                    world_size: int = 1) -> list[str]:
    """Log a warning when the run resumes under other conditions than it was saved under."""
    if not saved:
        return []
    changed = differences(saved, conditions(device, precision, world_size))
    if changed:
        log.warning(
            "resuming under other conditions than the checkpoint was saved under (%s): training goes on "
            "correctly, but not bit-identically to an uninterrupted run", ", ".join(changed),
        )
    return changed
