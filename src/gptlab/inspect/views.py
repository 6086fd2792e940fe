"""Looking inside a GPT: attention maps, next-token probabilities, surprisal, the logit lens, embeddings.

Everything here returns numpy arrays and token strings; pictures and the interactive page live in
:mod:`gptlab.inspect.plots` and :mod:`gptlab.inspect.html`, text tables in :mod:`gptlab.inspect.text`.

The model is never changed. What we need is captured from outside with forward hooks, removed in a
``finally`` block, during one ordinary forward pass in eval mode (no dropout, no KV cache):

* a hook on each block's ``attn.c_attn`` sees q, k, v of every head; the block's own attention
  module turns them into heads (QK-norm and rotary positions included, as the config says), and the
  attention probabilities are recomputed from q and k exactly as
  ``F.scaled_dot_product_attention(is_causal=True)`` forms them: ``softmax(q·kᵀ/√D + causal mask)``,
  each query head with its key/value head under grouped-query attention. The model itself never
  materialises that matrix.
* a pre-hook on ``transformer.h[0]`` and a hook on every ``transformer.h[i]`` see the residual
  stream after the embeddings and after each block, which the logit lens reads with the model's
  own final norm (``ln_f``, LayerNorm or RMSNorm) and ``lm_head``.

Layers and heads are numbered from 0, as in the parameter names (``transformer.h.0``).
Shapes: L layers, H heads, T tokens, C width, V vocabulary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from gptlab.errors import GenerationError, TokenizerError
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# text → token ids, and one forward pass with hooks


def encode_text(model: GPT, tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` (special-token strings such as ``<|endoftext|>`` become their ids).

    Raises GenerationError when the text is empty or longer than the model's context, and
    TokenizerError when an id falls outside the model's vocabulary.
    """
    if not text:
        raise GenerationError("the text is empty: give at least one character")
    ids = tokenizer.encode(text)
    if not ids:
        raise GenerationError("the text encodes to no tokens")
    block_size = model.config.block_size
    if len(ids) > block_size:
        raise GenerationError(
            f"the text is {len(ids)} tokens, longer than the model's context of {block_size} tokens"
        )
    if max(ids) >= model.config.vocab_size:
        raise TokenizerError(
            f"token id {max(ids)} is outside the model's vocabulary of {model.config.vocab_size}"
        )
    return ids


def _byte_fallback_offset(tokenizer: Tokenizer) -> int | None:
    """First of the 256 byte-fallback ids of a char tokenizer (None for other kinds)."""
    if tokenizer.kind != "char":
        return None
    offset = tokenizer.to_dict().get("byte_offset")
    return offset if isinstance(offset, int) else None


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:  # bytes without a printable character of their own are moved past 255
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def _bytes_text(raw: bytes) -> str:
    """``raw`` as text: its complete UTF-8 characters, and ``<0xAB>`` for each byte that is only
    part of one (so that a byte-level token never reads as an anonymous U+FFFD)."""
    out, i = [], 0
    while i < len(raw):
        for n in (1, 2, 3, 4):
            try:
                out.append(raw[i : i + n].decode("utf-8"))
            except UnicodeDecodeError:
                continue
            i += n
            break
        else:
            out.append(f"<0x{raw[i]:02X}>")
            i += 1
    return "".join(out)


def token_text(tokenizer: Tokenizer, token_id: int, byte_offset: int | None = None) -> str:
    """The text of one token. A char tokenizer's byte-fallback ids read ``<0xAB>`` (given its
    ``byte_offset``), an id the tokenizer does not know (padding rows of the embedding) reads
    ``<id N>``; otherwise the decoded text, where a byte-level BPE token holding only part of a
    UTF-8 character shows its bytes as ``<0xAB>`` instead of U+FFFD."""
    if byte_offset is not None and 0 <= token_id - byte_offset < 256:
        return f"<0x{token_id - byte_offset:02X}>"
    try:
        text = tokenizer.decode([token_id])
    except TokenizerError:
        return f"<id {token_id}>"
    if "\ufffd" in text and tokenizer.kind == "bpe" and token_id not in tokenizer.special_tokens.values():
        piece = tokenizer.backend.id_to_token(token_id)  # type: ignore[attr-defined]
        alphabet = _byte_level_alphabet()
        if piece is not None and all(ch in alphabet for ch in piece):
            return _bytes_text(bytes(alphabet[ch] for ch in piece))
    return text


def token_texts(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[str]:
    """:func:`token_text` of each id."""
    offset = _byte_fallback_offset(tokenizer)
    return [token_text(tokenizer, i, offset) for i in token_ids]


@dataclass
class Capture:
    """What one hooked forward pass saw (float32, on the CPU, batch dimension dropped)."""

    token_ids: list[int]
    logits: torch.Tensor  # (T, V): the model's own output, untouched by the hooks
    attention: torch.Tensor | None  # (L, H, T, T): attention probabilities, rows sum to 1
    residual: torch.Tensor | None  # (L + 1, T, C): after the embeddings, then after each block


def attention_probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal attention probabilities (B, H, T, T) from queries (B, T, H, D) and keys (B, T, K, D).

    The same computation as SDPA with ``is_causal=True``: scores q·kᵀ scaled by 1/√D, −∞ above the
    diagonal (a token never sees later tokens), softmax over the keys. Under grouped-query attention
    (K < H), query head h reads key head h // (H / K). Computed in float32.
    """
    B, T, H, D = q.shape
    q = q.float().transpose(1, 2)  # (B, H, T, D)
    k = k.float().transpose(1, 2).repeat_interleave(H // k.size(2), dim=1)  # (B, H, T, D)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


@torch.no_grad()
def capture(
    model: GPT, token_ids: Sequence[int], *, attention: bool = True, residual: bool = True
) -> Capture:
    """Run ``token_ids`` through ``model`` once, in eval mode, and capture what was asked for.

    The hooks only read; the logits are exactly what ``model(idx)`` returns. Hooks are removed and
    the model's train/eval mode restored even when the forward pass raises. ``token_ids`` must fit
    the context (see :func:`encode_text`).
    """
    blocks = model.transformer.h
    n_layer = len(blocks)
    maps: list[torch.Tensor | None] = [None] * n_layer
    stream: list[torch.Tensor | None] = [None] * (n_layer + 1)
    handles = []
    device = model.transformer.wte.weight.device
    # every layer's positions; an input longer than the context fails in the forward pass, as it should
    rotary = model.rotary(torch.arange(min(len(token_ids), model.config.block_size), device=device))

    def on_qkv(layer: int):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            q, k, _ = blocks[layer].attn.heads(output, rotary)
            maps[layer] = attention_probabilities(q, k)[0].cpu()

        return hook

    def on_block_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]
        stream[0] = x[0].float().cpu()

    def on_block_output(layer: int):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            stream[layer + 1] = output[0].float().cpu()

        return hook

    was_training = model.training
    try:
        if attention:
            handles += [b.attn.c_attn.register_forward_hook(on_qkv(i)) for i, b in enumerate(blocks)]
        if residual:
            handles.append(blocks[0].register_forward_pre_hook(on_block_input, with_kwargs=True))
            handles += [b.register_forward_hook(on_block_output(i)) for i, b in enumerate(blocks)]
        model.eval()
        idx = torch.tensor([list(token_ids)], dtype=torch.long, device=device)  # (1, T)
        logits, _ = model(idx)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if (attention and any(m is None for m in maps)) or (residual and any(s is None for s in stream)):
        raise RuntimeError("a hook did not fire: the model's module layout is not the one expected")
    return Capture(
        token_ids=list(token_ids),
        logits=logits[0].float().cpu(),
        attention=torch.stack(maps) if attention else None,  # type: ignore[arg-type]
        residual=torch.stack(stream) if residual else None,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# attention


@dataclass
class AttentionMaps:
    """Who attends to whom. ``weights[l, h, i, j]`` is how much token ``i`` (the query) takes from
    token ``j`` (a key) in head ``h`` of layer ``l``; each row sums to 1 and is 0 for ``j > i``."""

    tokens: list[str]
    token_ids: list[int]
    weights: np.ndarray  # (L, H, T, T) float32

    @property
    def n_layer(self) -> int:
        return self.weights.shape[0]

    @property
    def n_head(self) -> int:
        return self.weights.shape[1]

    def top_attended(self, query: int, layer: int, head: int, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` (position, weight) pairs that ``query`` attends to most, largest first."""
        row = self.weights[layer, head, query, : query + 1]
        order = np.argsort(-row, kind="stable")[:k]
        return [(int(j), float(row[j])) for j in order]


def attention(model: GPT, tokenizer: Tokenizer, text: str) -> AttentionMaps:
    """The attention probabilities of every layer and head for ``text``."""
    ids = encode_text(model, tokenizer, text)
    seen = capture(model, ids, attention=True, residual=False)
    assert seen.attention is not None
    return AttentionMaps(tokens=token_texts(tokenizer, ids), token_ids=ids, weights=seen.attention.numpy())


# ---------------------------------------------------------------------------------------------
# next-token probabilities and surprisal


@dataclass
class NextToken:
    """The model's distribution over the token that follows ``tokens``."""

    tokens: list[str]  # the context
    token_ids: list[int]
    probs: np.ndarray  # (V,) float64, sums to 1
    top_ids: list[int]  # the k most probable next tokens, most probable first
    top_tokens: list[str]
    top_probs: np.ndarray  # (k,)


def next_token(model: GPT, tokenizer: Tokenizer, text: str, k: int = 10) -> NextToken:
    """The ``k`` most probable next tokens after ``text``, with the full distribution."""
    if k < 1:
        raise GenerationError(f"k must be >= 1, got {k}")
    ids = encode_text(model, tokenizer, text)
    logits = capture(model, ids, attention=False, residual=False).logits[-1]  # (V,)
    probs = torch.softmax(logits.double(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    top_ids = top.indices.tolist()
    return NextToken(
        tokens=token_texts(tokenizer, ids),
        token_ids=ids,
        probs=probs.numpy(),
        top_ids=top_ids,
        top_tokens=token_texts(tokenizer, top_ids),
        top_probs=top.values.numpy(),
    )


@dataclass
class Surprisal:
    """How surprised the model is by each token of a text, given the tokens before it.

    Entry ``i`` is about token ``i + 1`` (the first token has no context and is not scored):
    ``nats[i] = −ln p(token[i+1] | token[0..i])``, ``bits = nats / ln 2``.
    """

    tokens: list[str]
    token_ids: list[int]
    probs: np.ndarray  # (T-1,) probability the model gave each actual next token
    nats: np.ndarray  # (T-1,)
    bits: np.ndarray  # (T-1,)

    @property
    def mean_nats(self) -> float:
        """Mean surprisal: the model's cross-entropy loss on this text."""
        return float(self.nats.mean())

    @property
    def mean_bits(self) -> float:
        return float(self.bits.mean())

    @property
    def perplexity(self) -> float:
        """exp(mean nats): the number of equally likely choices the model is as unsure as."""
        return float(math.exp(self.mean_nats))


def surprisal(model: GPT, tokenizer: Tokenizer, text: str) -> Surprisal:
    """Per-token surprisal of ``text`` (which must be at least 2 tokens) and its perplexity."""
    ids = encode_text(model, tokenizer, text)
    if len(ids) < 2:
        raise GenerationError("surprisal needs a text of at least 2 tokens: the first one has no context")
    logits = capture(model, ids, attention=False, residual=False).logits  # (T, V)
    log_probs = torch.log_softmax(logits[:-1].double(), dim=-1)  # (T-1, V)
    targets = torch.tensor(ids[1:], dtype=torch.long)
    nats = -log_probs.gather(1, targets[:, None])[:, 0]
    return Surprisal(
        tokens=token_texts(tokenizer, ids),
        token_ids=ids,
        probs=torch.exp(-nats).numpy(),
        nats=nats.numpy(),
        bits=(nats / LN2).numpy(),
    )


# ---------------------------------------------------------------------------------------------
# logit lens


@dataclass
class LogitLens:
    """What the model would predict if it stopped early (nostalgebraist's logit lens, 2020).

    Row 0 reads the residual stream after the embeddings, row ``l + 1`` after block ``l``; each is
    put through the final LayerNorm and the LM head. The last row is the model's own prediction.
    """

    tokens: list[str]
    token_ids: list[int]
    layers: list[str]  # row names: "embed", "layer 0", ..., "layer L-1"
    top_ids: np.ndarray  # (L + 1, T, k) int64, most probable first
    top_tokens: list[list[list[str]]]  # (L + 1, T, k)
    top_probs: np.ndarray  # (L + 1, T, k)
    target_probs: np.ndarray  # (L + 1, T - 1): probability of the actual next token


def logit_lens(model: GPT, tokenizer: Tokenizer, text: str, k: int = 1) -> LogitLens:
    """Top-``k`` predictions at every position after the embeddings and after every block."""
    if k < 1:
        raise GenerationError(f"k must be >= 1, got {k}")
    ids = encode_text(model, tokenizer, text)
    seen = capture(model, ids, attention=False, residual=True)
    assert seen.residual is not None
    weight = model.transformer.wte.weight
    targets = torch.tensor(ids[1:], dtype=torch.long)
    top_ids, top_probs, target_probs = [], [], []
    with torch.no_grad():
        for stream in seen.residual:  # (T, C), one row at a time: (L + 1)·T·V floats may be GBs
            x = stream.to(device=weight.device, dtype=weight.dtype)
            probs = torch.softmax(model.lm_head(model.transformer.ln_f(x)).double().cpu(), dim=-1)
            top = torch.topk(probs, min(k, probs.size(-1)), dim=-1)
            top_ids.append(top.indices)
            top_probs.append(top.values)
            target_probs.append(probs[:-1].gather(1, targets[:, None])[:, 0])
    ids_array = torch.stack(top_ids).numpy()
    return LogitLens(
        tokens=token_texts(tokenizer, ids),
        token_ids=ids,
        layers=["embed"] + [f"layer {i}" for i in range(len(model.transformer.h))],
        top_ids=ids_array,
        top_tokens=[[token_texts(tokenizer, row) for row in layer.tolist()] for layer in ids_array],
        top_probs=torch.stack(top_probs).numpy(),
        target_probs=torch.stack(target_probs).numpy(),
    )


# ---------------------------------------------------------------------------------------------
# token embeddings


class Neighbour(NamedTuple):
    token: str
    token_id: int
    similarity: float  # cosine similarity of the embedding rows, in [-1, 1]


def resolve_token(tokenizer: Tokenizer, token: str | int) -> int:
    """The id of ``token``: an id, or a string that must be exactly one token."""
    if isinstance(token, int):
        if not 0 <= token < tokenizer.vocab_size:
            raise TokenizerError(f"token id {token} is outside the vocabulary [0, {tokenizer.vocab_size})")
        return token
    ids = tokenizer.encode(token)
    if len(ids) != 1:
        pieces = ", ".join(repr(t) for t in token_texts(tokenizer, ids))
        raise TokenizerError(f"{token!r} is {len(ids)} tokens ({pieces or 'none'}), not one")
    return ids[0]


def _embedding_rows(model: GPT, tokenizer: Tokenizer) -> torch.Tensor:
    """The token embedding matrix (N, C) in float64, restricted to ids the tokenizer knows."""
    n = min(tokenizer.vocab_size, model.config.vocab_size)
    return model.transformer.wte.weight.detach()[:n].double().cpu()


def nearest_tokens(
    model: GPT, tokenizer: Tokenizer, token: str | int, k: int = 10, *, exclude_self: bool = False
) -> list[Neighbour]:
    """The ``k`` tokens whose embedding rows (``transformer.wte``) have the highest cosine
    similarity with ``token``'s, most similar first. The token itself is normally first (similarity
    1) unless ``exclude_self``."""
    if k < 1:
        raise GenerationError(f"k must be >= 1, got {k}")
    query = resolve_token(tokenizer, token)
    rows = _embedding_rows(model, tokenizer)
    if query >= rows.size(0):
        raise TokenizerError(f"token id {query} has no embedding row (model vocabulary {rows.size(0)})")
    sims = F.cosine_similarity(rows, rows[query][None, :], dim=1)  # (N,)
    if exclude_self:
        sims[query] = float("-inf")
    top = torch.topk(sims, min(k, rows.size(0) - int(exclude_self)))
    ids = top.indices.tolist()
    return [Neighbour(t, i, s) for t, i, s in zip(token_texts(tokenizer, ids), ids, top.values.tolist())]


@dataclass
class EmbeddingPCA:
    """Token embeddings projected on their first two principal components."""

    tokens: list[str]
    token_ids: list[int]
    coords: np.ndarray  # (N, 2)
    explained_variance_ratio: np.ndarray  # (2,) share of the variance each component carries
    method: str  # "sklearn" (sklearn.decomposition.PCA) or "svd" (torch.linalg.svd)


def embedding_pca(
    model: GPT,
    tokenizer: Tokenizer,
    tokens: Sequence[str | int] | None = None,
    n: int = 100,
    *,
    method: str = "auto",
) -> EmbeddingPCA:
    """Project the embedding rows of ``tokens`` (default: the first ``n`` ids of the vocabulary —
    for a char tokenizer, its characters in order) onto their own first two principal components.

    ``method``: "sklearn" (``sklearn.decomposition.PCA``, from the ``neurons`` extra), "svd"
    (centred ``torch.linalg.svd``; each component's sign is chosen so that its largest loading is
    positive), or "auto" (sklearn when installed). The two agree up to the sign of each axis.
    """
    if method not in ("auto", "sklearn", "svd"):
        raise GenerationError(f"method must be auto, sklearn or svd, got {method!r}")
    if tokens is None:
        ids = list(range(min(n, tokenizer.vocab_size, model.config.vocab_size)))
    else:
        ids = list(dict.fromkeys(resolve_token(tokenizer, t) for t in tokens))  # unique, in order
    rows = _embedding_rows(model, tokenizer)
    if any(i >= rows.size(0) for i in ids):
        raise TokenizerError(f"a token id is outside the model's {rows.size(0)} embedding rows")
    if len(ids) < 2 or rows.size(1) < 2:
        raise TokenizerError(f"PCA needs at least 2 distinct tokens and width 2, got {len(ids)} tokens")
    X = rows[ids].numpy()  # (N, C)
    if method == "auto":
        try:
            import sklearn  # noqa: F401

            method = "sklearn"
        except ImportError:
            method = "svd"
    if method == "sklearn":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="full").fit(X)
        coords, ratio = pca.transform(X), pca.explained_variance_ratio_
    else:
        centred = torch.from_numpy(X - X.mean(axis=0))
        _, S, Vh = torch.linalg.svd(centred, full_matrices=False)
        signs = torch.sign(Vh[:2].gather(1, Vh[:2].abs().argmax(dim=1, keepdim=True)))  # (2, 1)
        coords = (centred @ (Vh[:2] * signs).T).numpy()
        variance = S**2
        ratio = (variance[:2] / variance.sum()).numpy()
    logger.debug("embedding PCA of %d tokens with %s", len(ids), method)
    return EmbeddingPCA(
        tokens=token_texts(tokenizer, ids),
        token_ids=ids,
        coords=np.asarray(coords, dtype=np.float64),
        explained_variance_ratio=np.asarray(ratio, dtype=np.float64),
        method=method,
    )
