"""The GPT: a decoder-only transformer, with a KV cache for generation.

One file covers GPT-2's shape (2019) and today's Llama / Qwen2 / Mistral family; the config picks
the parts (norm, positions, MLP, key/value heads, biases, tied head, QK-norm), not subclasses.
Parameter names follow Hugging Face's GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn``, ...)
so GPT-2 weights map one-to-one (HF stores Linear weights transposed, as Conv1D); the family keeps
them too, with q, k, v fused in ``c_attn`` and gate, up fused in ``c_fc``. The model knows nothing
about devices, precision or parallelism: the trainer and ``gptlab.train.distributed`` wrap it from outside.

Shapes in comments: B batch, T new tokens, S = cached + new tokens, C n_embd, H query heads,
K key/value heads, D head_dim, F the MLP's inner width, V vocab.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlab.model import attention
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
        shape = (batch_size, config.kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.lengths = torch.zeros(batch_size, dtype=torch.long)  # tokens held by each row (on the CPU)
        # the token ids themselves: the hashed bigram embedding pairs each new token with the one before
        self.tokens = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
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
        view.tokens = self.tokens[start:stop]
        view.max_len = self.max_len
        return view

    def copy_row(self, src: int, dst: int) -> None:
        """Make row ``dst`` hold what row ``src`` holds (to keep a batch's live rows packed)."""
        n = int(self.lengths[src])
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[dst, :, :n] = b[src, :, :n]
        self.tokens[dst, :n] = self.tokens[src, :n]
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


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` with its weight cast to the input's dtype: under bf16 autocast QK-norm gets
    bf16 queries and keys, and with an fp32 weight PyTorch would fall back to its unfused kernel
    (and warn). In fp32 the cast is a no-op and this is ``nn.RMSNorm`` exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


def make_norm(config: GPTConfig, width: int) -> nn.Module:
    """The config's norm over the last ``width`` features: LayerNorm (with a bias if ``bias``) or RMSNorm."""
    if config.norm == "rmsnorm":
        return RMSNorm(width, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(width, eps=config.layer_norm_epsilon, bias=config.bias)


def rotary_frequencies(config: GPTConfig) -> torch.Tensor:
    """(D/2,) angular frequency of each rotary pair, with Llama 3's scaling when the config asks for it."""
    D = config.head_dim
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, D, 2).float() / D)  # float32, as HF computes it
    factor = config.rope_scaling_factor
    if factor == 1.0:
        return inv_freq
    # Llama 3: long wavelengths are slowed down by ``factor``, short ones kept, the band between blended
    old = config.rope_original_context
    low_wavelen, high_wavelen = old / config.rope_low_freq_factor, old / config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - config.rope_low_freq_factor) / (
        config.rope_high_freq_factor - config.rope_low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    between = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(between, blended, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head's (first half, second half) pairs of ``x`` (..., D) by the position's angles.

    The half-split layout of Hugging Face's Llama, so its checkpoints need no permutation. The
    angles are cast to ``x``'s dtype as Hugging Face does, so under bf16 autocast q and k stay in
    bf16 like v (fp32 angles would promote them).
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Rotary(NamedTuple):
    """cos and sin of every position's angles, (T or B, ..., D), broadcastable over heads."""

    cos: torch.Tensor
    sin: torch.Tensor


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.n_embd = config.n_embd
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        D, H, K = self.head_dim, self.n_head, self.n_kv_head
        # q (H heads), k and v (K heads each) in one matmul
        self.c_attn = Linear(config.n_embd, (H + 2 * K) * D, bias=config.has_qkv_bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(D, eps=config.layer_norm_epsilon)
            self.k_norm = RMSNorm(D, eps=config.layer_norm_epsilon)
        self.qk_norm = config.qk_norm
        self.resid_dropout = nn.Dropout(config.dropout)

    def heads(self, qkv: torch.Tensor, rotary: Rotary | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, T, H, D), k and v (B, T, K, D) from ``c_attn``'s output (B, T, (H + 2K) D):
        split into heads, QK-normed and rotated as the config says."""
        B, T, _ = qkv.shape
        D, H, K = self.head_dim, self.n_head, self.n_kv_head
        q, k, v = qkv.view(B, T, H + 2 * K, D).split((H, K, K), dim=2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        return q, k, v

    def forward(self, x: torch.Tensor, rotary: Rotary | None = None, step: CacheStep | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(self.c_attn(x), rotary)
        if step is not None and T == 1:
            return self.resid_dropout(self.c_proj(self._decode_one(q[:, 0], k[:, 0], v[:, 0], step, layer)))
        if step is None and not (self.training and self.dropout > 0) and attention.fits(q, k, v):
            # training at short contexts on the CPU: only the products the causal mask keeps
            return self.resid_dropout(self.c_proj(attention.blocked_causal_attention(q, k, v)))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or K, T, D)
        mask, is_causal = None, T > 1
        if step is not None:
            cache, past = step.cache, step.first  # a prefill continues rows of one common length
            cache.keys[layer][:, :, past : past + T] = k
            cache.values[layer][:, :, past : past + T] = v
            k, v = cache.keys[layer][:, :, : past + T], cache.values[layer][:, :, : past + T]  # (B, K, S, D)
            if past > 0:  # new token i (absolute position past + i) sees keys 0 .. past + i
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                is_causal = False
        y = self._attend(q, k, v, mask, is_causal)  # (B, H, T, D)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool = False) -> torch.Tensor:
        """Scaled dot-product attention of q (B, H, T, D) over k, v (B, K, S, D); K divides H."""
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv_head != self.n_head,
        )

    def _decode_one(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: CacheStep,
                    layer: int) -> torch.Tensor:
        """Attention of one new token per row, q (B, H, D), k and v (B, K, D); rows may hold different
        numbers of tokens."""
        B = q.size(0)
        first, last = step.first, step.last
        keys, values = step.cache.keys[layer], step.cache.values[layer]  # (B, K, max_len, D)
        if first == last:
            keys[:, :, last] = k
            values[:, :, last] = v
        else:
            at = step.positions.view(B)  # each row's new token goes after its own length
            rows = torch.arange(B, device=q.device)
            keys[rows, :, at] = k
            values[rows, :, at] = v
        y = self._attend(q.unsqueeze(2), keys[:, :, : last + 1], values[:, :, : last + 1], step.visible)
        return y.transpose(1, 2).reshape(B, 1, self.n_embd)  # (B, 1, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        fan_out = 2 * config.hidden if config.mlp == "swiglu" else config.hidden  # swiglu: gate and up
        self.c_fc = Linear(config.n_embd, fan_out, bias=config.bias)
        self.c_proj = Linear(config.hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, F) or (B, T, 2F)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:  # GPT-2's "gelu_new" is the tanh approximation; one fused kernel here
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rotary: Rotary | None = None, step: CacheStep | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rotary, step, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token embeddings (+ learned positions, or rotary ones inside attention), ``n_layer`` pre-norm
    blocks, a final norm and the LM head (tied to the token embedding, as in GPT-2, or not)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        parts: dict[str, nn.Module] = dict(wte=nn.Embedding(config.padded_vocab_size, config.n_embd))
        if config.bigram_buckets:
            parts["bigram"] = nn.Embedding(config.bigram_buckets, config.n_embd)
        if config.positions == "learned":
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        parts.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=make_norm(config, config.n_embd),
        )
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.tie_weights()
        if config.positions == "rotary":  # angles of every position: not parameters, not saved
            D = config.head_dim
            self.register_buffer("rope_cos", torch.empty(config.block_size, D), persistent=False)
            self.register_buffer("rope_sin", torch.empty(config.block_size, D), persistent=False)
            self.reset_buffers()
        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def tie_weights(self) -> None:
        """Make the LM head share the token embedding's weight, if the config ties them (again
        after ``to_empty`` or a load with ``assign=True``, which replace parameters)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def tied_keys(self) -> tuple[str, ...]:
        """State-dict keys that only repeat another parameter (saved once, under the other name)."""
        return ("lm_head.weight",) if self.config.tie_embeddings else ()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """(Re)compute the rotary angles in place, on their current device (after ``to_empty``)."""
        if self.config.positions != "rotary" or self.rope_cos.is_meta:
            return
        device = self.rope_cos.device
        positions = torch.arange(self.config.block_size, dtype=torch.float32, device=device)
        angles = torch.outer(positions, rotary_frequencies(self.config).to(device))  # (block_size, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (block_size, D): each pair's angle, twice
        self.rope_cos.copy_(angles.cos())
        self.rope_sin.copy_(angles.sin())

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
        padding = (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        n -= padding if self.config.tie_embeddings else 2 * padding
        if exclude_position_embeddings and "wpe" in self.transformer:
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

    def rotary(self, pos: torch.Tensor) -> Rotary | None:
        """The rotary angles of positions ``pos`` (T,) or (B, 1), shaped to broadcast over
        (B, T, heads, D); None for learned positions."""
        if self.config.positions != "rotary":
            return None
        # (T, 1, D) for a prefill's positions (T,), (B, 1, 1, D) for one token per row (B, 1)
        return Rotary(self.rope_cos[pos].unsqueeze(-2), self.rope_sin[pos].unsqueeze(-2))

    def _hidden(self, idx: torch.Tensor, pos: torch.Tensor, step: CacheStep | None) -> torch.Tensor:
        """Embeddings, the blocks and the final norm: (B, T) token ids → (B, T, C)."""
        x = self.transformer.wte(idx)  # (B, T, C)
        if "bigram" in self.transformer:
            x = x + self.transformer.bigram(self._bigram_rows(idx, pos, step))
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        rotary = self.rotary(pos)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rotary, step, layer)
        return self.transformer.ln_f(x)

    def _bigram_rows(self, idx: torch.Tensor, pos: torch.Tensor, step: CacheStep | None) -> torch.Tensor:
        """(B, T) rows of the hashed bigram table: (previous token, token) pairs hashed into all rows
        but the last, which is the row of a sequence's first token (it has no previous token).

        With a cache, the token before a call's first one is read from the ids the cache keeps (so
        rewinding a row's length rewinds this too), and the call's tokens are written there.
        """
        B, T = idx.shape
        prev = idx.roll(1, dims=1)
        if step is None:
            prev[:, 0] = -1
        else:
            at = pos.view(1, T).expand(B, T) if pos.dim() == 1 else pos  # (B, T) positions of the new tokens
            before = step.cache.tokens.gather(1, (at[:, :1] - 1).clamp(min=0))  # (B, 1)
            prev[:, :1] = torch.where(at[:, :1] == 0, -1, before)
            step.cache.tokens.scatter_(1, at, idx)
        buckets = self.config.bigram_buckets
        hashed = ((prev * 36313) ^ (idx * 27191)) % (buckets - 1)  # large odd multipliers spread the pairs
        return torch.where(prev < 0, buckets - 1, hashed)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # padding rows are not tokens
        return logits
