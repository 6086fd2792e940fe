"""Data-parallel training with torch.distributed: DDP by default, FSDP2 (``fully_shard``) on request.

The model file knows nothing of this: the Trainer asks this module to wrap the model, to skip
gradient synchronisation on accumulation micro-steps, to average numbers across ranks, and to
gather full (unsharded) state dicts for checkpoints. Launch with ``torchrun``, which sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is a no-op for one
process.

Each step's global batch is the one a single process would draw (see ``WindowSampler``); rank r
trains on rows ``r·b .. (r+1)·b - 1`` of it, with b = batch_size / world_size. Gradients averaged
across ranks then equal the single-process gradient, so N processes follow the same curve as
one, and a run saved on N processes resumes on M.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gptlab.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (B, ...) → (B / world_size, ...)."""
        if not self.enabled:
            return batch
        per_rank = batch.size(0) // self.world_size
        return batch[self.rank * per_rank : (self.rank + 1) * per_rank]


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (NCCL on CUDA, gloo elsewhere); one process: SINGLE."""
    if not launched_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    ctx = DistContext(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return ctx


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """On CUDA each process drives the GPU of its local rank."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def check_batch(batch_size: int, ctx: DistContext) -> None:
    if batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {batch_size} must be divisible by the number of processes ({ctx.world_size})"
        )


def wrap(model: nn.Module, ctx: DistContext, fsdp: bool) -> nn.Module:
    """DDP around ``model``, or FSDP2: every block sharded, then the root (embeddings, head)."""
    if not ctx.enabled:
        if fsdp:
            raise ConfigError("--fsdp needs several processes: launch with torchrun --nproc_per_node N")
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:  # type: ignore[union-attr]
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, sync: bool) -> Iterator[None]:
    """Let backward all-reduce gradients only when ``sync`` (the last accumulation micro-step)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(wrapped, DistributedDataParallel):
        with contextlib.nullcontext() if sync else wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(sync)
    yield


def mean_across_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (itself with one process)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def is_sharded(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync") and not isinstance(model, nn.parallel.DistributedDataParallel)


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Unsharded model and optimizer state dicts of an FSDP2 model, on the CPU, in the layout a
    single process saves (optimizer state keyed by parameter index). Every rank must call it;
    only rank 0 receives the tensors (the others get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    named = get_optimizer_state_dict(model, optimizer, options=options)
    if not named:  # with cpu_offload, ranks other than 0 receive nothing
        return model_state, {}
    index = {name: i for i, name in enumerate(n for g in named["param_groups"] for n in g["params"])}
    state = {index[name]: slots for name, slots in named["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]
    return model_state, {"state": state, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a single-process optimizer state dict into the optimizer of an FSDP2 model."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    by_param = {id(p): n for n, p in model.named_parameters()}  # tied weights appear once
    order = [by_param[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if sorted(order) != sorted(by_param.values()):
        raise ConfigError("the optimizer's parameters do not match the model's")
    named = {
        "state": {order[int(i)]: slots for i, slots in state["state"].items()},
        "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(
        model, optimizer, named, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
