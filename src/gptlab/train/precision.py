"""The precision a training step runs in: ``--dtype`` turned into an autocast context.

``auto`` is bf16 autocast on CUDA and fp32 elsewhere. On the CPU ``bfloat16`` is opt-in: where
the CPU has bf16 units (AVX512-BF16, e.g. AMD Zen 4 and Intel Cooper Lake on; AMX, Intel Sapphire
Rapids on) its matrix products run about twice as fast as fp32 ones; elsewhere they are emulated
and slower, which is said once, in the log.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from typing import Any

import torch

log = logging.getLogger(__name__)


def cpu_has_bf16_units() -> bool | None:
    """Whether this x86 CPU multiplies bf16 natively (AVX512-BF16 or AMX); None off x86, where
    PyTorch cannot tell."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def uses_bf16(dtype: str, device: torch.device) -> bool:
    """Whether ``--dtype`` (auto, float32, bfloat16) means bf16 autocast on ``device``."""
    return dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")


def autocast_for(dtype: str, device: torch.device) -> Any:
    """The context a step's forward pass runs in: bf16 autocast, or nothing (fp32)."""
    if not uses_bf16(dtype, device):
        return contextlib.nullcontext()
    if device.type == "cpu" and cpu_has_bf16_units() is False:
        log.warning("this CPU has no bf16 units (AVX512-BF16 or AMX): --dtype bfloat16 emulates them "
                    "and is likely slower here than float32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
