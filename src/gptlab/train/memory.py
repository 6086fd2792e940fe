"""A rough memory budget of a training step, checked before any work starts.

A shape a user can type by accident (``--block-size 100000``) would otherwise prepare the data,
build the model and then swap or crawl for minutes. The estimate counts fp32 weights, gradients
and AdamW's two moments (16 bytes a parameter), the activations kept for the backward pass
(about 16 values per width per token per block) and the logits (three copies of batch × context ×
vocabulary); attention scores are left out, since fused attention does not store them. It is an
order of magnitude, not a promise: only a shape that clearly cannot fit is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptlab.errors import ConfigError
from gptlab.model.config import GPTConfig
from gptlab.model.count import count_config

GIB = 1 << 30


def training_bytes(config: GPTConfig, micro_batch: int) -> int:
    """Estimated peak bytes of one training micro-step of ``config`` at ``micro_batch`` sequences."""
    tokens = micro_batch * config.block_size
    states = 16 * count_config(config).parameters
    activations = 4 * 16 * config.n_embd * config.n_layer * tokens
    logits = 4 * 3 * config.vocab_size * tokens
    return states + activations + logits


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (GPU memory, or the host's available RAM), None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(config: GPTConfig, micro_batch: int, device: torch.device) -> None:
    """ConfigError when training ``config`` at ``micro_batch`` clearly needs more memory than ``device`` has."""
    available = available_bytes(device)
    need = training_bytes(config, micro_batch)
    if available is None or need <= available:
        return
    raise ConfigError(
        f"this shape needs about {need / GIB:,.1f} GiB to train (batch {micro_batch} x context "
        f"{config.block_size:,} tokens, {config.n_layer} blocks of width {config.n_embd}, vocabulary "
        f"{config.vocab_size:,}), more than the {available / GIB:,.1f} GiB available on {device.type}: "
        "lower --block-size or --batch-size (--grad-accum keeps the batch per step)"
    )
