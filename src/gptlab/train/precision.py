"""The precision a training step runs in: ``--dtype`` turned into an autocast context.

``auto`` is bf16 autocast wherever the hardware multiplies bf16 natively: on CUDA, and on CPUs
with bf16 units (AVX512-BF16: AMD Zen 4 on, Intel Cooper Lake on; AMX: Intel Sapphire Rapids on),
whose matrix products run about twice as fast in bf16 as in fp32. Elsewhere (older x86 CPUs, Arm,
Apple's MPS) ``auto`` is fp32: there bf16 products are emulated and slower. ``bfloat16`` asks for
bf16 autocast anywhere (on a CPU without bf16 units the log says it is likely slower), ``float32``
for fp32 anywhere. litgpt trains in bf16-mixed by default on the CPU too; this takes it only where
it pays.
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
    """Whether ``--dtype`` (auto, float32, bfloat16) means bf16 autocast on ``device``: ``auto``
    does on CUDA and on a CPU with bf16 units."""
    if dtype == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units() is True)
    return dtype == "bfloat16"


def describe(dtype: str, device: torch.device) -> str:
    """What a run's header says of its precision: ``bf16 autocast`` or ``fp32``."""
    return "bf16 autocast" if uses_bf16(dtype, device) else "fp32"


def autocast_for(dtype: str, device: torch.device) -> Any:
    """The context a step's forward pass runs in: bf16 autocast, or nothing (fp32)."""
    if not uses_bf16(dtype, device):
        return contextlib.nullcontext()
    if device.type == "cpu" and cpu_has_bf16_units() is False:
        log.warning("this CPU has no bf16 units (AVX512-BF16 or AMX): --dtype bfloat16 emulates them "
                    "and is likely slower here than float32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
