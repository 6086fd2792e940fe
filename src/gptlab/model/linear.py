"""A linear layer whose products with a few rows use every CPU thread (the matmuls of decoding).

When a single sequence is decoded, each linear layer multiplies one row by its weight matrix.
MKL runs such a product on one core, and it is bound by reading the weights from memory
(a width-256 GPT-2 reads 12 MB of weights per token, GPT-2 124M about 500 MB). With 2 to 64 rows
(a batch of sequences decoding together, a short prompt) MKL's matmul is slower still: at GPT-2
124M's shape a step of 2 rows took 2.5 times as long as a step of one. ``linear`` splits the
weight's output rows into one chunk per thread and hands the chunks to ``bmm`` as a batch, which
puts each chunk on its own core: both cores stream weights at once. The few rows an uneven split
leaves over (GPT-2's 50,257-row LM head) go through ``F.linear``. The weights are only viewed,
not copied, and each output is still one dot product.

Waking the other threads costs about 25 µs, so each chunk holds at least 2¹⁶ numbers (256 KB in
fp32): on 2 threads, weights of 2¹⁷ numbers and up are split; on many, small weights go to fewer
threads. Measured on 2 cores: ``bench/decode.py`` (gptlab's speed ÷ HF's) GPT-2 124M's
shape 1.05–1.08× → 1.37–1.46×, width 384 / 6 layers 1.09–1.16× → 1.51×, the default width 256
within the noise (1.5×); a batched decode step at GPT-2 124M's shape 1.55×, 1.61×, 1.44×, 1.40×
faster for 2, 4, 8, 16 rows and 1.15× for 32. Only that case changes: more rows, autograd, a GPU,
small weights or a single thread all take ``F.linear`` as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_MAX_ROWS = 64  # tokens; up to here MKL's small-M matmul is slower than the split (measured to 64)
CHUNK_MIN_WEIGHTS = 1 << 16  # each thread gets at least 256 KB of fp32 weights, or waking it costs more than it saves


def split_count(x: torch.Tensor, weight: torch.Tensor) -> int:
    """Into how many pieces :func:`linear` splits ``weight`` for the input ``x``; 0: not at all.

    The first checks are the ones ``torch.compile`` can trace (a GPU, autograd, compiling), so
    a compiled model sees a plain ``F.linear`` with no graph break.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return 0
    out_features, in_features = weight.shape
    if x.dim() == 0 or x.size(-1) != in_features:
        return 0  # F.linear says what is wrong
    tokens = x.numel() // in_features if in_features else 0  # the rows of x
    chunks = min(torch.get_num_threads(), weight.numel() // CHUNK_MIN_WEIGHTS)
    if (
        chunks < 2
        or out_features < chunks
        or not 0 < tokens <= SPLIT_MAX_ROWS  # more: a real matmul, which MKL already spreads out
        or not weight.is_contiguous()
    ):
        return 0
    return chunks


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; up to ``SPLIT_MAX_ROWS`` tokens on a multi-threaded CPU are
    computed with the weight split across the threads."""
    chunks = split_count(x, weight)
    if not chunks:
        return F.linear(x, weight, bias)
    out_features, in_features = weight.shape
    x2 = x.reshape(-1, in_features)  # (tokens, in)
    tokens = x2.size(0)
    even = out_features - out_features % chunks  # weight rows that share out evenly; the rest (< chunks) go plainly
    w = weight[:even].view(chunks, even // chunks, in_features).transpose(1, 2)  # (n, in, even/n)
    xs = x2.expand(chunks, tokens, in_features)  # (n, tokens, in), a view
    if bias is None:
        y = torch.bmm(xs, w)
    else:
        y = torch.baddbmm(bias[:even].view(chunks, 1, even // chunks), xs, w)  # (n, tokens, even/n)
    y = y.transpose(0, 1).reshape(tokens, even)  # a copy only for more than one token
    if even < out_features:  # e.g. GPT-2's LM head: 50,257 rows
        rest = F.linear(x2, weight[even:], None if bias is None else bias[even:])
        y = torch.cat([y, rest], dim=1)
    return y.view(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
