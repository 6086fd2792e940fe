"""Growing a trained model's vocabulary: new special tokens with embeddings that do no harm.

:func:`add_special_tokens` adds tokens to the tokenizer and gives each new id an embedding row.
Rows of every token the tokenizer had stay bit-for-bit unchanged; a new token's row is the
**mean of the existing tokens' rows** (Hewitt, 2021, "Initializing New Word Embeddings for
Pretrained Language Models"). With the LM head tied to ``wte``, a mean row makes the new token's
logit the average of the others', so before any fine-tuning the model's next-token distribution
over the old tokens barely moves (a random N(0, 0.02) row can instead take an arbitrary share of
the probability mass). ``init="normal"`` gives the N(0, 0.02) rows of a fresh GPT instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from gptlab.errors import ConfigError, TokenizerError
from gptlab.model.linear import Linear
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

Init = Literal["mean", "normal"]


def _grow(weight: torch.Tensor, old: torch.Tensor, fresh_ids: list[int], init: Init, keep: int | None) -> None:
    """Fill the larger ``weight`` (V_new, C): ``old``'s rows, then ``fresh_ids`` initialised per ``init``."""
    weight[: old.size(0)] = old
    if fresh_ids:
        index = torch.tensor(fresh_ids, device=old.device)
        if init == "mean":
            known = old[: old.size(0) if keep is None else keep]
            weight[index] = known.float().mean(dim=0).to(old.dtype)
        else:
            weight[index] = torch.randn(len(fresh_ids), old.size(1), device=old.device).mul_(0.02).to(old.dtype)
    weight.requires_grad_(old.requires_grad)


@torch.no_grad()
def resize_token_embeddings(
    model: GPT, vocab_size: int, new_rows: Sequence[int] = (), *, init: Init = "mean", keep: int | None = None
) -> GPT:
    """Give ``model`` a ``vocab_size``-row token embedding and LM head (tied or not), in place.

    Rows ``[0, old vocab_size)`` are copied unchanged, except the ids in ``new_rows`` (e.g. unused
    padding rows that a new token takes over), which are initialised like the added rows. ``init``:
    ``"mean"`` (mean of rows ``[0, keep)``, the ids the tokenizer knew; default: all old rows) or
    ``"normal"`` (N(0, 0.02), as a fresh GPT). ``model.config`` becomes a copy with the new
    ``vocab_size`` (``GPTConfig`` is frozen). Shrinking is refused (ConfigError): it would
    silently drop trained rows.
    """
    old = model.transformer.wte.weight  # (V_old, C)
    old_size, width = old.shape
    if vocab_size < old_size:
        raise ConfigError(f"cannot shrink the vocabulary from {old_size} to {vocab_size} rows")
    if init not in ("mean", "normal"):
        raise ConfigError(f"init must be 'mean' or 'normal', got {init!r}")
    fresh_ids = sorted(set(new_rows) | set(range(old_size, vocab_size)))
    if any(not 0 <= i < vocab_size for i in fresh_ids):
        raise ConfigError(f"new row ids must lie in [0, {vocab_size})")
    model.transformer.wte = nn.Embedding(vocab_size, width, device=old.device, dtype=old.dtype)
    _grow(model.transformer.wte.weight, old, fresh_ids, init, keep)
    if model.config.tie_embeddings:
        model.lm_head = Linear(width, vocab_size, bias=False, device="meta")  # no second copy
        model.lm_head.weight = model.transformer.wte.weight  # keep the tie
    else:  # an untied head grows the same way: its new rows predict the new tokens
        old_head = model.lm_head.weight
        model.lm_head = Linear(width, vocab_size, bias=False, device=old_head.device, dtype=old_head.dtype)
        _grow(model.lm_head.weight, old_head, fresh_ids, init, keep)
    model.config = model.config.replace(vocab_size=vocab_size)
    return model


def add_special_tokens(
    model: GPT, tokenizer: Tokenizer, tokens: Sequence[str], *, init: Init = "mean"
) -> list[int]:
    """Add ``tokens`` as special tokens to ``tokenizer`` and make room for them in ``model``.

    Returns their ids (tokens already special keep theirs; nothing changes for them). The
    embedding grows to ``max(old vocab_size, tokenizer.vocab_size)`` rows; every new token's row
    is initialised per ``init`` (see the module docstring) — also when its id falls on an unused
    padding row the model already had. Rows of existing tokens are unchanged. Raises
    TokenizerError if the tokenizer already has more ids than the model has rows (they do not
    belong together).
    """
    if tokenizer.vocab_size > model.config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size} rows"
        )
    known = tokenizer.vocab_size
    before = dict(tokenizer.special_tokens)
    ids = tokenizer.add_special_tokens(list(tokens))
    added = sorted({i for t, i in zip(tokens, ids) if t not in before})
    if not added:
        return ids
    size = max(model.config.vocab_size, tokenizer.vocab_size)
    resize_token_embeddings(model, size, new_rows=added, init=init, keep=known)
    logger.info("added %d special token(s) %s; vocabulary now %d", len(added), list(tokens), size)
    return ids
