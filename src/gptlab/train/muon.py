"""Muon for the hidden matrices, AdamW for everything else, in one torch optimizer.

Muon (Keller Jordan, 2024) replaces each weight matrix's update by the nearest orthogonal matrix
to its Nesterov momentum, found with a few Newton-Schulz iterations; embeddings, the LM head,
biases and LayerNorms keep AdamW. The learning-rate scale is Moonshot's (``0.2·sqrt(max(A, B))``,
"Muon is Scalable for LLM Training", 2025), which gives Muon's updates the RMS of AdamW's, so
one learning rate and weight decay serve both kinds of parameter.

``torch.optim.Muon`` implements the same update, but it orthogonalizes in bfloat16 one matrix at
a time, which is tens of times slower on CPUs without bf16 units. Here the iterations run
in fp32 on the CPU (bf16 on CUDA, as the reference does) and same-shape matrices are
orthogonalized together in batched matmuls (up to ``STACK_ELEMENTS`` numbers at a time, which
bounds the memory the stack takes at large sizes). The AdamW part is PyTorch's own: this class *is* a
``torch.optim.AdamW`` whose groups marked ``muon=True`` are stepped by Muon instead, so
``state_dict``/``load_state_dict`` and checkpoints work unchanged.

Under FSDP2 each rank holds a slice of every matrix (a DTensor sharded by rows), and Newton-Schulz
needs whole ones. The momentum is kept in slices, as AdamW's moments are; each step gathers the
whole Nesterov updates, every rank orthogonalizes them (the same numbers on every rank), and each
keeps the rows of its own slice: Moonshot's "distributed Muon" (2025), which trades one all-gather
of the updates and repeated orthogonalization for an exact match with one process.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic iteration of the reference implementation
STACK_ELEMENTS = 1 << 25  # same-shape matrices orthogonalized together, up to this many numbers (128 MB in fp32)


def orthogonalize(
    updates: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Approximately U·Vᵀ of the SVD of each matrix of ``updates`` (N, A, B), by Newton-Schulz.

    The iteration pushes every singular value into roughly [0.7, 1.2] rather than exactly 1, which
    is all Muon needs. It works on the wide orientation (A ≤ B), so X·Xᵀ is the small Gram matrix.
    ``dtype`` of the iterations: by default bfloat16 on CUDA, float32 elsewhere.
    """
    a, b, c = NS_COEFFICIENTS
    if dtype is None:
        dtype = torch.bfloat16 if updates.is_cuda else torch.float32
    x = updates.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        gram = x @ x.mT  # (N, A, A)
        # x ← a·x + (b·gram + c·gram²)·x, the scalings done by the products (fewer passes over x)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if tall:
        x = x.mT
    return x.to(updates.dtype)


class MuonAdamW(torch.optim.AdamW):
    """AdamW, except that parameter groups with ``"muon": True`` (2-D matrices only) use Muon.

    Muon groups take ``lr``, ``weight_decay`` (decoupled, as in AdamW), ``momentum`` (Nesterov)
    and ``ns_steps``; the other groups take AdamW's keys. Build it with
    :func:`gptlab.train.trainer.make_optimizer` (``TrainConfig.optimizer = "muon"``).
    """

    def __init__(
        self, params: Iterable[dict[str, Any]], *, momentum: float = 0.95, ns_steps: int = 5, **adamw: Any
    ) -> None:
        super().__init__(params, **adamw)
        for group in self.param_groups:
            if group.get("muon"):
                group.setdefault("momentum", momentum)
                group.setdefault("ns_steps", ns_steps)
                if any(p.dim() != 2 for p in group["params"]):
                    raise ValueError("Muon groups may hold 2-D weight matrices only")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        for group in groups:
            if group.get("muon"):
                self._muon_step(group)
        self.param_groups = [g for g in groups if not g.get("muon")]
        try:
            super().step()
        finally:
            self.param_groups = groups
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] = torch.tensor(0.0)  # AdamW's load_state_dict expects a step in every state
            state["step"] += 1
            buffers.append(state["momentum_buffer"])
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        torch._foreach_mul_(buffers, mu)
        torch._foreach_add_(buffers, grads)
        nesterov = torch._foreach_add(grads, buffers, alpha=mu)
        by_shape: dict[torch.Size, list[int]] = {}
        for i, p in enumerate(params):
            by_shape.setdefault(p.shape, []).append(i)
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        for shape, index in by_shape.items():
            scale = 0.2 * math.sqrt(max(shape))  # Moonshot's match-AdamW-RMS rule
            per_stack = max(1, STACK_ELEMENTS // shape.numel())
            for start in range(0, len(index), per_stack):
                chunk = index[start : start + per_stack]
                ortho = orthogonalize(torch.stack([whole(nesterov[i]) for i in chunk]), group["ns_steps"])
                updates = [shard_like(params[i], o) for i, o in zip(chunk, ortho.unbind(0))]
                torch._foreach_add_([params[i] for i in chunk], updates, alpha=-lr * scale)


def whole(t: torch.Tensor) -> torch.Tensor:
    """The whole matrix of ``t``: all-gathered from the ranks when it is a sharded DTensor (FSDP2)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def shard_like(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full``, which every rank holds alike, cut as ``param`` is sharded: this rank's rows only,
    without communication; ``full`` itself when ``param`` is a plain tensor."""
    if not hasattr(param, "device_mesh"):
        return full
    return _distribute_local()(full, param.device_mesh, param.placements)


@functools.cache
def _distribute_local() -> Callable[..., torch.Tensor]:
    """``distribute_tensor`` that keeps this rank's part of a tensor every rank holds, looked up once."""
    from torch.distributed.tensor import distribute_tensor

    if "src_data_rank" in inspect.signature(distribute_tensor).parameters:
        return functools.partial(distribute_tensor, src_data_rank=None)
    return distribute_tensor  # older torch: rank 0 scatters the same rows
