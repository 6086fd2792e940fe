"""A linear layer whose one-row products use every CPU thread (the matmuls of decoding).

When a single sequence is decoded, each linear layer multiplies one row by its weight matrix.
MKL runs such a product on one core, and it is bound by reading the weights from memory
(a width-256 GPT-2 reads 12 MB of weights per token). ``linear`` splits the weight's output
rows into one chunk per thread and hands the chunks to ``bmm`` as a batch, which puts each
chunk on its own core: both cores stream weights at once. The weights are only viewed, not
copied, and the result is the same product (each output is still one dot product).

Waking the other threads costs about 25 µs, so only weights of at least 2¹⁷ numbers (512 KB in fp32) are split
(width 256 and up). Measured with ``bench/decode.py`` on 2 cores: 1.1× → 1.5× of HF's speed at
width 384, about +10 % at width 256, and +15 % at width 768 with GPT-2's vocabulary.
Only that case changes: more than one row, autograd, a GPU, small weights or a single thread
all take ``F.linear`` as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_MIN_WEIGHTS = 1 << 17  # below 512 KB of fp32 weights, waking the threads costs more than it saves


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
        or out_features % chunks
        or not weight.is_contiguous()
    ):
        return F.linear(x, weight, bias)
    w = weight.view(chunks, out_features // chunks, in_features).transpose(1, 2)  # (n, in, out/n)
    row = x.reshape(1, 1, in_features).expand(chunks, 1, in_features)  # (n, 1, in)
    if bias is None:
        y = torch.bmm(row, w)
    else:
        y = torch.baddbmm(bias.view(chunks, 1, out_features // chunks), row, w)  # (n, 1, out/n)
    return y.view(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
