"""Causal self-attention in blocks of queries, for training on the CPU at short contexts.

PyTorch's CPU flash-attention kernel walks the keys in blocks of 512, so at contexts up to 512 it
computes every query's score against every key and masks half of them away afterwards: causal
attention costs what full attention costs (measured: the same time with and without the mask).
Here the queries are cut into ``blocks`` equal runs of positions, and each run is multiplied only
with the keys it can see, the ones up to its last position: with four runs, 5/8 of the full
products. The products are batched matrix products, and the probabilities are kept for the
backward pass; that is what makes this fast at short contexts, and what limits it to them (their
memory grows with the context squared; ``fits`` says when).

In bfloat16 (the Trainer's CPU autocast: ``--dtype bfloat16``, or ``auto`` on a CPU with bf16
units) the products run in bf16 and the softmax sums in fp32, as in Hugging Face's eager
attention: the scores come out of their product rounded to bf16 and the probabilities go into
theirs rounded to bf16. The backward pass works out the scores' gradients and adds up the
blocks' key and value gradients in fp32. On the CPU the flash kernel is slower in bf16 than in
fp32, so in bf16 the blocks pay from context 64.

With grouped-query attention the G query heads that share a key/value head are folded into the
rows of one product (rows ordered by position, then head), so keys and values are never repeated.

Shapes: B batch, T tokens, H query heads, K key/value heads, G = H / K, D head size.
"""

from __future__ import annotations

import math

import torch

BLOCKS = 4  # runs of queries: 2 do 3/4 of the full products, 4 do 5/8; more, smaller ones cost more than they save
MAX_PROBS_BYTES = 64 * 2**20  # per layer: the probabilities kept for the backward pass
MIN_CONTEXT = {torch.float32: 256, torch.float64: 256, torch.bfloat16: 64}  # below, the flash kernel is as fast
MAX_CONTEXT = 512  # above it the flash kernel skips whole blocks of keys itself, and is as fast


def fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: int = BLOCKS) -> bool:
    """Whether ``blocked_causal_attention`` suits q (B, T, H, D), k and v (B, T, K, D): a backward pass
    to come (the gain is there: without one, the flash kernel's forward is faster), on the CPU, in
    float32, float64 or bfloat16 (q, k and v alike: its backward runs outside autocast), T from
    ``MIN_CONTEXT`` (by dtype) to ``MAX_CONTEXT`` and a multiple of ``blocks``, and the kept
    probabilities under ``MAX_PROBS_BYTES``."""
    B, T, H, _ = q.shape
    kept = B * H * T * T * (blocks + 1) // (2 * blocks)  # the blocks' probabilities: 5/8 of T x T for 4
    return (
        q.requires_grad
        and q.device.type == "cpu"
        and q.dtype in MIN_CONTEXT
        and k.dtype == v.dtype == q.dtype
        and T % blocks == 0
        and MIN_CONTEXT[q.dtype] <= T <= MAX_CONTEXT
        and kept * q.element_size() <= MAX_PROBS_BYTES
        and H % k.size(2) == 0
    )


def blocked_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: int = BLOCKS
) -> torch.Tensor:
    """Causal softmax(q kᵀ / √D) v for q (B, T, H, D), k and v (B, T, K, D) → (B, T, H·D), query
    head h reading key/value head h // G as in Hugging Face's ``repeat_kv``. No dropout, no padding
    mask: the training path. The result equals ``F.scaled_dot_product_attention(is_causal=True)``
    up to float rounding."""
    B, T, H, D = q.shape
    K = k.size(2)
    G = H // K
    # fold: q (B, T, K, G, D) -> (B*K, T*G, D), row t*G + g; k, v -> (B*K, T, D)
    q_rows = q.reshape(B, T, K, G, D).permute(0, 2, 1, 3, 4).reshape(B * K, T * G, D)
    k_rows = k.permute(0, 2, 1, 3).reshape(B * K, T, D)
    v_rows = v.permute(0, 2, 1, 3).reshape(B * K, T, D)
    y = _BlockedCausal.apply(q_rows, k_rows, v_rows, blocks)  # (B*K, T*G, D)
    return y.view(B, K, T, G, D).permute(0, 2, 1, 3, 4).reshape(B, T, H * D)


def _spans(T: int, G: int, blocks: int) -> list[tuple[int, int, int]]:
    """(first row, end row, keys seen) of each run of queries, rows counted in the folded layout."""
    size = T // blocks
    return [(i * size * G, (i + 1) * size * G, (i + 1) * size) for i in range(blocks)]


def _above_diagonal(size: int, G: int, device: torch.device) -> torch.Tensor:
    """(size*G, size) bool, True where a run's row would see a key after its own position, in the
    run's last ``size`` keys (the diagonal square; every key before it is visible to the whole run)."""
    positions = torch.arange(size, device=device).repeat_interleave(G)
    return torch.arange(size, device=device).view(1, -1) > positions.view(-1, 1)


class _BlockedCausal(torch.autograd.Function):
    """The folded rows' attention, forward and backward, one run of queries at a time."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: int
    ) -> torch.Tensor:
        BK, R, D = q.shape
        T = k.size(1)
        G = R // T
        q = q * (1.0 / math.sqrt(D))  # scaled once here rather than every score
        size = T // blocks
        hidden = _above_diagonal(size, G, q.device)  # the same triangle in every run's last keys
        outputs, probs = [], []
        for first, end, keys in _spans(T, G, blocks):
            scores = torch.bmm(q[:, first:end], k[:, :keys].transpose(1, 2))  # (BK, rows, keys)
            scores[:, :, keys - size :].masked_fill_(hidden, float("-inf"))
            p = torch.softmax(scores, dim=-1)  # in bf16 too, it sums in fp32
            outputs.append(torch.bmm(p, v[:, :keys]))  # (BK, rows, D)
            probs.append(p)
        y = torch.cat(outputs, dim=1)
        ctx.save_for_backward(q, k, v, y, *probs)
        ctx.blocks = blocks
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):  # type: ignore[override]
        q, k, v, y, *probs = ctx.saved_tensors
        BK, R, D = q.shape
        T = k.size(1)
        G = R // T
        grad_y = grad_y.contiguous()  # of y's dtype, which is q's
        wide = torch.promote_types(q.dtype, torch.float32)  # fp32 for bf16: softmax and the blocks' sums
        # softmax backward: dS = P * (dP - rowsum(dY * Y)), as rowsum(P * dP) = rowsum(dY * Y)
        row_dot = (grad_y.to(wide) * y.to(wide)).sum(dim=-1, keepdim=True)  # (BK, R, 1)
        grad_k, grad_v = torch.zeros_like(k, dtype=wide), torch.zeros_like(v, dtype=wide)
        grad_q = []
        for (first, end, keys), p in zip(_spans(T, G, ctx.blocks), probs):
            dy = grad_y[:, first:end]
            grad_v[:, :keys] += torch.bmm(p.transpose(1, 2), dy)
            dp = torch.bmm(dy, v[:, :keys].transpose(1, 2)).to(wide)
            dscores = dp.sub_(row_dot[:, first:end]).mul_(p).to(q.dtype)
            grad_q.append(torch.bmm(dscores, k[:, :keys]))
            grad_k[:, :keys] += torch.bmm(dscores.transpose(1, 2), q[:, first:end])
        return torch.cat(grad_q, dim=1).mul_(1.0 / math.sqrt(D)), grad_k.to(k.dtype), grad_v.to(v.dtype), None
