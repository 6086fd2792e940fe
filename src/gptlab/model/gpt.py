"""The GPT: a GPT-2 style decoder-only transformer, with a KV cache for generation.

Parameter names follow Hugging Face's GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn``, ...)
so weights map one-to-one (HF stores Linear weights transposed, as Conv1D). The model knows nothing
about devices, precision or parallelism: the trainer and ``gptlab.train.distributed`` wrap it from outside.

Shapes in comments: B batch, T new tokens, S = cached + new tokens, C n_embd, H heads, D head_dim,
V vocab.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlab.model.config import GPTConfig
from gptlab.errors import GenerationError
from gptlab.model.linear import Linear

IGNORE_INDEX = -100  # targets with this value do not count in the loss (e.g. prompt tokens when fine-tuning)


class KVCache:
    """Pre-allocated keys and values of every layer, for ``batch_size`` rows of up to ``max_len`` tokens.

    Each row has its own length (``lengths``), so rows can hold sequences of different lengths:
    a forward call of T > 1 tokens needs its rows at one common length (prefill), a call of
    one token per row does not (batched decoding, as the server's engine does). ``rows(i, j)``
    is a view of rows i..j-1 that shares the buffers, e.g. to prefill one new sequence into a
    running batch.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        max_len = config.block_size if max_len is None else max_len
        if not 0 < max_len <= config.block_size:
            raise GenerationError(f"cache length must be in [1, {config.block_size}], got {max_len}")
        shape = (batch_size, config.n_head, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.lengths = torch.zeros(batch_size, dtype=torch.long)  # tokens held by each row (on the CPU)
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def length(self) -> int:
        """The common length of all rows (raises GenerationError if the rows differ)."""
        lengths = self.lengths.tolist()
        if len(set(lengths)) > 1:
            raise GenerationError(f"cache rows have different lengths {lengths}")
        return lengths[0] if lengths else 0

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of rows ``start:stop``: writes through it land in this cache, lengths included."""
        if not 0 <= start < stop <= self.batch_size:
            raise GenerationError(f"rows {start}:{stop} out of range for a cache of {self.batch_size}")
        view = object.__new__(KVCache)
        view.keys = [k[start:stop] for k in self.keys]
        view.values = [v[start:stop] for v in self.values]
        view.lengths = self.lengths[start:stop]
        view.max_len = self.max_len
        return view

    def copy_row(self, src: int, dst: int) -> None:
        """Make row ``dst`` hold what row ``src`` holds (to keep a batch's live rows packed)."""
        n = int(self.lengths[src])
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[dst, :, :n] = b[src, :, :n]
        self.lengths[dst] = n

    def reset(self, row: int | None = None) -> None:
        """Forget the tokens of one row, or of every row (the buffers are kept for reuse)."""
        if row is None:
            self.lengths.zero_()
        else:
            self.lengths[row] = 0


class CacheStep(NamedTuple):
    """Where one forward call writes in a KV cache: worked out once, used by every layer."""

    cache: KVCache
    first: int  # tokens in the shortest row before this call
    last: int  # tokens in the longest row (equal to first for a prefill)
    positions: torch.Tensor  # (B, 1) the position of each row's one new token, or (T,) for a prefill
    visible: torch.Tensor | None = None  # (B, 1, 1, last + 1): row b sees keys 0 .. lengths[b] (ragged decode only)


def _visible_keys(positions: torch.Tensor, n_keys: int) -> torch.Tensor:
    """(B, 1, 1, n_keys) attention mask: the row whose new token is at ``positions[b]`` (B, 1)
    sees keys 0 .. positions[b]."""
    return (torch.arange(n_keys, device=positions.device) <= positions).view(-1, 1, 1, n_keys)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, step: CacheStep | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        if step is not None and T == 1:
            return self.resid_dropout(self.c_proj(self._decode_one(self.c_attn(x), step, layer)))
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        mask, is_causal = None, T > 1
        if step is not None:
            cache, past = step.cache, step.first  # a prefill continues rows of one common length
            cache.keys[layer][:, :, past : past + T] = k
            cache.values[layer][:, :, past : past + T] = v
            k, v = cache.keys[layer][:, :, : past + T], cache.values[layer][:, :, : past + T]  # (B, H, S, D)
            if past > 0:  # new token i (absolute position past + i) sees keys 0 .. past + i
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, D)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))

    def _decode_one(self, qkv: torch.Tensor, step: CacheStep, layer: int) -> torch.Tensor:
        """Attention of one new token per row; rows may hold different numbers of tokens."""
        B = qkv.size(0)
        q, k, v = qkv.view(B, 3, self.n_head, self.head_dim).unbind(1)  # each (B, H, D)
        first, last = step.first, step.last
        keys, values = step.cache.keys[layer], step.cache.values[layer]  # (B, H, max_len, D)
        if first == last:
            keys[:, :, last] = k
            values[:, :, last] = v
        else:
            at = step.positions.view(B)  # each row's new token goes after its own length
            rows = torch.arange(B, device=qkv.device)
            keys[rows, :, at] = k
            values[rows, :, at] = v
        y = F.scaled_dot_product_attention(
            q.unsqueeze(2), keys[:, :, : last + 1], values[:, :, : last + 1], attn_mask=step.visible
        )  # (B, H, 1, D)
        return y.transpose(1, 2).reshape(B, 1, self.n_embd)  # (B, 1, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2's "gelu_new" is the tanh approximation; one fused kernel here
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, step: CacheStep | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), step, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2: token + position embeddings, ``n_layer`` pre-norm blocks, final LayerNorm, tied LM head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias),
            )
        )
        self.lm_head = Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_position_embeddings: bool = False) -> int:
        """Number of parameters (tied weights counted once; vocabulary padding rows not counted)."""
        n = sum(p.numel() for p in self.parameters())
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if exclude_position_embeddings:
            n -= self.transformer.wpe.weight.numel()
        return n

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        """An empty KV cache on this model's device and dtype."""
        weight = self.transformer.wte.weight
        return KVCache(self.config, batch_size, max_len, device=weight.device, dtype=weight.dtype)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for token ids ``idx`` (B, T), and the mean cross-entropy against ``targets`` if given.

        With ``cache``, ``idx`` continues the cached sequences: positions start at ``cache.length``
        and the cache grows by T. ``last_only`` computes logits for the last position only
        (B, 1, V), which saves the LM-head matmul over the prompt during generation.
        Targets equal to ``IGNORE_INDEX`` are left out of the loss.
        """
        B, T = idx.shape
        step = None
        if cache is None:
            if T > self.config.block_size:
                raise GenerationError(
                    f"sequence of {T} tokens exceeds the context length of {self.config.block_size}"
                )
            pos = torch.arange(T, device=idx.device)  # (T,)
        else:
            if cache.batch_size != B:
                raise GenerationError(f"cache has {cache.batch_size} rows, the input has {B}")
            lengths = cache.lengths.tolist()
            first, last = min(lengths), max(lengths)
            if last + T > cache.max_len:
                raise GenerationError(
                    f"sequence of {last + T} tokens exceeds the context length of {cache.max_len}"
                )
            if T == 1:  # one new token per row, each at its own position
                pos = cache.lengths.to(idx.device).view(B, 1)  # (B, 1)
            elif first == last:
                pos = torch.arange(first, first + T, device=idx.device)  # (T,)
            else:
                raise GenerationError(f"cache rows have different lengths {lengths}")
            visible = _visible_keys(pos, last + 1) if T == 1 and first != last else None
            step = CacheStep(cache, first, last, pos, visible)
        x = self._hidden(idx, pos, step)  # (B, T, C)
        if cache is not None:
            cache.lengths += T
        if targets is not None:
            logits = self._logits(x)  # (B, T, V)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
            return logits, loss
        if last_only:
            x = x[:, -1:, :]
        return self._logits(x), None

    def decode_step(self, idx: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, V) of one new token per row, ``idx`` (B, 1), at ``positions`` (B,) of ``cache``.

        Unlike ``forward``, every shape here is fixed by the cache: each layer attends over the
        whole key buffer with a mask (``positions`` rows see keys 0 .. their position) rather than
        a slice of the cached length, and nothing reads a tensor's value in Python. So
        ``torch.compile`` builds this once for a whole generation (``gptlab.generate.sampler`` does),
        at the price of attending over all ``max_len`` keys at every position. ``positions`` must
        be on ``idx``'s device and below ``cache.max_len``; the cache's ``lengths`` are the
        caller's to advance.
        """
        B = idx.size(0)
        pos = positions.view(B, 1)
        # first < last sends every layer down the per-row path of _decode_one, over all max_len keys
        step = CacheStep(cache, 0, cache.max_len - 1, pos, _visible_keys(pos, cache.max_len))
        return self._logits(self._hidden(idx, pos, step))[:, -1]

    def _hidden(self, idx: torch.Tensor, pos: torch.Tensor, step: CacheStep | None) -> torch.Tensor:
        """Embeddings, the blocks and the final LayerNorm: (B, T) token ids → (B, T, C)."""
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, step, layer)
        return self.transformer.ln_f(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # padding rows are not tokens
        return logits
