"""Weights between a Hugging Face checkpoint and our state dict, for any architecture that
describes itself as a :class:`HFLayout`: a list of :class:`TensorLink` (which of their tensors
make which of ours) and a few facts about the checkpoint's names.

One mapping serves both directions: import stacks their tensors into ours (q, k, v into
``c_attn``; gate and up into ``c_fc``; GPT-2's ``Conv1D`` weights transposed), export splits ours
back. A bias that one side has and the other lacks is zero on the side that has it: imported as
zeros, exported as zeros, and refused if it is not zero where it would be dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from gptlab.errors import CheckpointError, ConfigError
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT

logger = logging.getLogger(__name__)

LM_HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"


@dataclass(frozen=True)
class TensorLink:
    """One of our tensors and the Hugging Face tensors it is made of.

    ``theirs`` are stacked along the first dimension, in order, to make ``ours`` (one name: a
    rename). ``rows`` are the rows each of ``theirs`` takes in ``ours`` (needed to split several;
    None for one). ``transpose``: theirs are stored (in, out), as GPT-2's ``Conv1D``. ``absent``
    names the side that lacks the tensor, which stands for zeros there (a bias one side has
    and the other does not), or None when both have it.
    """

    ours: str
    theirs: tuple[str, ...]
    rows: tuple[int, ...] | None = None
    transpose: bool = False
    absent: Literal["ours", "theirs"] | None = None


@dataclass(frozen=True)
class HFLayout:
    """How one Hugging Face architecture's checkpoint maps onto a gptlab model.

    ``name`` says what it is in messages ("GPT-2", "LlamaForCausalLM"); ``hf_config`` is the
    checkpoint's ``config.json``; ``prefix`` is put in front of a checkpoint name that lacks it (a
    base model saved without its LM head); names ending in ``ignored`` are buffers, not weights;
    ``hf_tied`` is the checkpoint's ``tie_word_embeddings``.
    """

    name: str
    config: GPTConfig
    hf_config: dict[str, Any]
    links: tuple[TensorLink, ...]
    prefix: str
    ignored: tuple[str, ...] = ()
    hf_tied: bool = True


def bias_link(ours: str, theirs: tuple[str, ...], rows: tuple[int, ...] | None, *, ours_has: bool,
              theirs_has: bool) -> list[TensorLink]:
    """The link of a bias that either side may lack (none if neither has it)."""
    if not ours_has and not theirs_has:
        return []
    absent = None if ours_has and theirs_has else ("theirs" if ours_has else "ours")
    return [TensorLink(ours, theirs, rows, absent=absent)]


def _their_name(name: str, prefix: str) -> str:
    return name if name.startswith(prefix) or name == LM_HEAD else prefix + name


def _part_shapes(link: TensorLink, shape: torch.Size) -> list[torch.Size]:
    """The shape (as ours, i.e. after any transpose) of each of ``link.theirs`` in a tensor ``shape``."""
    if link.rows is None:
        return [shape]
    return [torch.Size((rows, *shape[1:])) for rows in link.rows]


def to_our_weights(
    source: object,
    tensors: Iterable[tuple[str, torch.Tensor]],
    layout: HFLayout,
    expected: Mapping[str, torch.Size],
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """A checkpoint's ``tensors`` → our state dict (``expected``: our keys and shapes, tied keys left
    out), in ``dtype``. Raises CheckpointError naming the tensors that are missing, unexpected or
    misshapen, a nonzero bias we have no place for, and an LM head at odds with a tied config."""
    where = {their: (link, i) for link in layout.links for i, their in enumerate(link.theirs)}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    unexpected, lm_head = [], None
    for raw_name, tensor in tensors:
        name = _their_name(raw_name, layout.prefix)
        if name.endswith(layout.ignored):
            continue
        if name in where:
            link, i = where[name]
            parts.setdefault(link.ours, {})[i] = tensor
        elif name == LM_HEAD and layout.config.tie_embeddings:
            lm_head = tensor
        else:
            unexpected.append(raw_name)
    weights: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for link in layout.links:
        if link.absent == "theirs":
            weights[link.ours] = torch.zeros(expected[link.ours], dtype=dtype)
            continue
        got = parts.get(link.ours, {})
        if len(got) < len(link.theirs):
            missing += [their for i, their in enumerate(link.theirs) if i not in got]
            continue
        pieces = [got[i].t() if link.transpose else got[i] for i in range(len(link.theirs))]
        if link.absent == "ours":
            if any(p.count_nonzero() for p in pieces):
                raise CheckpointError(f"{source}: {link.theirs[0]} is not zero, and gptlab's {layout.name} "
                                      f"of this config has no such bias")
            continue
        for their, piece, shape in zip(link.theirs, pieces, _part_shapes(link, expected[link.ours])):
            if piece.shape != shape:
                raise CheckpointError(f"{source}: {their} has shape {tuple(piece.shape)} (as nn.Linear), "
                                      f"the config says {tuple(shape)}")
        weights[link.ours] = (torch.cat(pieces) if len(pieces) > 1 else pieces[0]).to(dtype).contiguous()
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match a {layout.name} of this config "
                              f"(missing: {sorted(missing)[:4]}, unexpected: {sorted(unexpected)[:4]})")
    if set(weights) != set(expected):  # a layout that forgets one of our tensors is a bug, not bad input
        raise RuntimeError(f"{layout.name} layout does not cover {sorted(set(expected) ^ set(weights))[:4]}")
    _check_tie(source, layout, lm_head, weights.get(WTE), dtype)
    return weights


def _check_tie(source: object, layout: HFLayout, lm_head: torch.Tensor | None, wte: torch.Tensor | None,
               dtype: torch.dtype) -> None:
    """For a tied config: an LM head the checkpoint stores must be the token embeddings (or the
    checkpoint must say it is tied, as transformers then ignores it)."""
    if not layout.config.tie_embeddings:
        return
    if lm_head is not None and wte is not None and not torch.equal(lm_head.to(dtype), wte):
        if not layout.hf_tied:
            raise CheckpointError(
                f"{source}: the LM head is not tied to the token embeddings (tie_word_embeddings = false): "
                f"gptlab imports a {layout.name} with a tied head"
            )
        logger.warning("%s differs from the token embeddings; ignored, as transformers ties them", LM_HEAD)
    elif lm_head is None and not layout.hf_tied:
        raise CheckpointError(f"{source}: tie_word_embeddings = false but the weights have no {LM_HEAD}")


def to_hf_weights(model: GPT, layout: HFLayout) -> dict[str, torch.Tensor]:
    """``model``'s weights under the checkpoint names and layout of ``layout``, on the CPU, each
    its own contiguous tensor (as safetensors wants); vocabulary padding rows are cut off and a
    tied LM head is left out, as ``save_pretrained`` does. Raises ConfigError for a nonzero
    tensor the architecture has no place for."""
    state = model.state_dict()
    vocab_size, dtype = model.config.vocab_size, state[WTE].dtype
    out: dict[str, torch.Tensor] = {}
    for link in layout.links:
        if link.absent == "ours":  # a bias they have and we lack: zeros, one per part (rows given)
            pieces = [torch.zeros(rows, dtype=dtype) for rows in link.rows or ()]
        else:
            tensor = state[link.ours].detach().cpu()
            if link.ours in (WTE, LM_HEAD):  # rows beyond the vocabulary are GPU padding, not tokens
                tensor = tensor[:vocab_size]
            if link.absent == "theirs":
                if tensor.count_nonzero():
                    raise ConfigError(f"{link.ours} is not zero, and {layout.name} has no such tensor")
                continue
            pieces = list(tensor.split(list(link.rows))) if link.rows else [tensor]
        for their, piece in zip(link.theirs, pieces):
            piece = piece.t() if link.transpose else piece
            out[their] = piece.clone(memory_format=torch.contiguous_format) if len(pieces) > 1 else piece.contiguous()
    return out


def build_model(config: GPTConfig, weights: dict[str, torch.Tensor]) -> GPT:
    """Our GPT of ``config`` holding ``weights`` (every key already checked), in eval mode."""
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()  # assign=True replaced wte: tie again
    dtype = model.transformer.wte.weight.dtype
    for module in model.modules():  # buffers (the rotary angles) are not weights: still on meta
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                setattr(module, name, torch.empty(buffer.shape, dtype=dtype))
    model.reset_buffers()
    return model.eval()


def expected_shapes(config: GPTConfig) -> dict[str, torch.Size]:
    """Our state-dict keys and shapes for ``config``, tied duplicates left out (no memory used)."""
    with torch.device("meta"):
        model = GPT(config)
    tied = set(model.tied_keys())
    return {k: v.shape for k, v in model.state_dict().items() if k not in tied}
