"""A linear layer whose one-row products use every CPU thread (the matmuls of decoding).

When a single sequence is decoded, each linear layer multiplies one row by its weight matrix.
MKL runs such a product on one core, and it is bound by reading the weights from memory
(a width-256 GPT-2 reads 12 MB of weights per token, GPT-2 124M about 500 MB). ``linear``
splits the weight's output rows into one chunk per thread and hands the chunks to ``bmm`` as a
batch, which puts each chunk on its own core: both cores stream weights at once. The few rows
an uneven split leaves over (GPT-2's 50,257-row LM head) go through ``F.linear``. The weights
are only viewed, not copied, and each output is still one dot product.

Waking the other threads costs about 25 µs, so only weights of at least 2¹⁷ numbers (512 KB in
fp32) are split. Measured with ``bench/decode.py`` on 2 cores, as gptlab's speed ÷ HF's: GPT-2
124M's shape 1.05–1.08× → 1.37–1.44×; width 384, 6 layers 1.09–1.16× → 1.51×; the default
width 256 within the noise (1.5×). Only that case changes: more than one row, autograd, a GPU,
small weights or a single thread all take ``F.linear`` as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_MIN_WEIGHTS = 1 << 16  # below 512 KB of fp32 weights, waking the threads costs more than it saves


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; one row on a multi-threaded CPU is split across the threads."""
    out_features, in_features = weight.shape
    chunks = torch.get_num_threads()
    if (
        chunks < 2
        or weight.numel() < SPLIT_MIN_WEIGHTS
        or x.numel() != in_features  # more than one row: a real matmul, which MKL already spreads out
        or x.device.type != "cpu"
        or torch.is_grad_enabled()
        or not weight.is_contiguous()
    ):
        return F.linear(x, weight, bias)
    row = x.reshape(1, in_features)
    even = out_features - out_features % chunks  # rows that share out evenly; the rest (< chunks) go plainly
    w = weight[:even].view(chunks, even // chunks, in_features).transpose(1, 2)  # (n, in, even/n)
    if bias is None:
        y = torch.bmm(row.expand(chunks, 1, in_features), w)
    else:
        y = torch.baddbmm(bias[:even].view(chunks, 1, even // chunks), row.expand(chunks, 1, in_features), w)
    y = y.view(1, even)
    if even < out_features:  # e.g. GPT-2's LM head: 50,257 rows
        rest = F.linear(row, weight[even:], None if bias is None else bias[even:])
        y = torch.cat([y, rest], dim=1)
    return y.view(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
