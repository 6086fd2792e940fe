"""``POST /v1/inspect``: attention maps and token probabilities of one text, for the playground's
Inspect panel. A gptlab extension, not part of the OpenAI API.

The work is :func:`gptlab.inspect.views.capture`: one forward pass with read-only hooks. The engine
thread runs forward passes on the served model all the time, so hooks on that model would fire
inside the engine's passes too. The inspector therefore runs on its own copy of the model
(``copy.deepcopy``, made on the first inspect request, inference only), one request at a time, in
a worker thread so the event loop never waits on the model. The copy costs the model's memory
once more, on the same device; a server that is never asked to inspect never makes it.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from gptlab.server.errors import APIError, bad_request
from gptlab.server.prompts import text_ids
from gptlab.server.protocol import (
    InspectAlternative,
    InspectAttention,
    InspectPosition,
    InspectProbabilities,
    InspectRequest,
    InspectResponse,
)
from gptlab.server.state import LoadedModel, ServerSettings

if TYPE_CHECKING:
    import torch

    from gptlab.model.gpt import GPT

logger = logging.getLogger(__name__)

# At most this many attention weights in one response (~30 MB of JSON): beyond it, ask for one
# layer or head. The whole map is L·H·T² numbers: GPT-2 small at 1024 tokens would be 151 million.
MAX_ATTENTION_VALUES = 1 << 22
DECIMALS = 4  # attention weights are rounded to this many decimals
ROWS_PER_CHUNK = 256  # positions whose float64 log-softmax is formed at once (T·V doubles may be GBs)


class Inspector:
    """The inspect route's copy of the model, its lock, and the requests waiting for it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._model: GPT | None = None
        self._source: GPT | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._waiting = 0

    def _copy_of(self, model: GPT) -> GPT:
        """The private copy of ``model`` (made once; under ``self._lock``)."""
        if self._model is None or self._source is not model:
            logger.info("copying the model for /v1/inspect")
            clone = copy.deepcopy(model).eval()
            clone.requires_grad_(False)
            self._model, self._source = clone, model
        return self._model

    async def inspect(self, body: InspectRequest, loaded: LoadedModel) -> InspectResponse:
        """Check ``body`` against the model, then compute its views in a worker thread."""
        ids = checked_ids(body, loaded, self.settings)
        n_layer, n_head = loaded.model.config.n_layer, loaded.model.config.n_head
        want_attention = "attention" in body.views
        if want_attention:
            check_attention_filters(body, n_layer, n_head, len(ids))
        if self._waiting >= self.settings.max_queue:
            raise APIError(429, "too many inspect requests are waiting: try again in a moment",
                           code="queue_full", headers={"Retry-After": "1"})
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)  # one forward pass at a time; the rest wait here
        self._waiting += 1
        try:
            return await anyio.to_thread.run_sync(self._run, body, loaded, ids, limiter=self._limiter)
        finally:
            self._waiting -= 1

    def _run(self, body: InspectRequest, loaded: LoadedModel, ids: list[int]) -> InspectResponse:
        from gptlab.inspect.views import capture

        want_attention = "attention" in body.views
        with self._lock:
            seen = capture(self._copy_of(loaded.model), ids, attention=want_attention, residual=False)
        show = token_namer(loaded)
        return InspectResponse(
            model=self.settings.model_name,
            tokens=[show(i) for i in ids],
            token_ids=ids,
            attention=attention_view(seen.attention, body) if want_attention else None,
            probabilities=(probability_view(seen.logits, ids, body.top_k, show)
                           if "probabilities" in body.views else None),
        )


def checked_ids(body: InspectRequest, loaded: LoadedModel, settings: ServerSettings) -> list[int]:
    """Token ids of the request's text; 400 when it is empty, too long or outside the vocabulary."""
    param = body.input_param
    ids = text_ids(body.input_text, loaded, settings, allow_special=True, param=param)
    if not ids:
        raise bad_request(f"{param} encodes to no tokens", param=param, code="empty_text")
    context = loaded.context_length
    if len(ids) > context:
        raise bad_request(f"This model's maximum context length is {context} tokens, but the {param} is "
                          f"{len(ids)} tokens. Shorten it.", param=param, code="context_length_exceeded")
    vocab = loaded.model.config.vocab_size
    bad = next((t for t in ids if t >= vocab), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the model's vocabulary of {vocab}", param=param,
                          code="invalid_token_id")
    return ids


def check_attention_filters(body: InspectRequest, n_layer: int, n_head: int, n_tokens: int) -> None:
    """400 for a layer or head the model does not have, or for a map too large to send."""
    if body.layer is not None and body.layer >= n_layer:
        raise bad_request(f"layer {body.layer} does not exist: the model has layers 0 .. {n_layer - 1}",
                          param="layer", code="invalid_layer")
    if isinstance(body.head, int) and body.head >= n_head:
        raise bad_request(f"head {body.head} does not exist: the model has heads 0 .. {n_head - 1}",
                          param="head", code="invalid_head")
    layers = 1 if body.layer is not None else n_layer
    heads = n_head if body.head is None else 1
    values = layers * heads * n_tokens * n_tokens
    if values > MAX_ATTENTION_VALUES:
        raise bad_request(
            f"the attention of {layers} layer(s) × {heads} head(s) × {n_tokens}² tokens is {values:,} numbers, "
            f"over the limit of {MAX_ATTENTION_VALUES:,}: ask for one layer and/or head, or a shorter text",
            param="layer", code="attention_too_large",
        )


def token_namer(loaded: LoadedModel) -> Callable[[int], str]:
    """id → the token's string, as completions logprobs show it (``<id N>`` beyond the tokenizer)."""
    texts, known = loaded.texts, loaded.vocab_size

    def show(token_id: int) -> str:
        return texts.string(token_id) if token_id < known else f"<id {token_id}>"

    return show


def attention_view(weights: torch.Tensor | None, body: InspectRequest) -> InspectAttention:
    """The requested slice of the (L, H, T, T) attention probabilities, rounded."""
    assert weights is not None
    n_layer, n_head = weights.shape[0], weights.shape[1]
    layers = [body.layer] if body.layer is not None else list(range(n_layer))
    picked = weights[layers]  # (L', H, T, T)
    heads = list(range(n_head))
    if body.head == "mean":
        picked = picked.mean(dim=1, keepdim=True)  # (L', 1, T, T)
    elif body.head is not None:
        heads = [body.head]
        picked = picked[:, heads]  # (L', 1, T, T)
    # round in float64, so the JSON carries 0.1235, not float32's 0.12349999696016312
    rounded = picked.double().numpy().round(DECIMALS)
    return InspectAttention(n_layer=n_layer, n_head=n_head, layers=layers, heads=heads,
                            head_mean=body.head == "mean", weights=rounded.tolist())


def probability_view(
    logits: torch.Tensor, ids: list[int], top_k: int, show: Callable[[int], str]
) -> InspectProbabilities:
    """For each position t >= 1, p(token t | tokens before it) and the top_k alternatives; then the
    top_k after the last token. The softmax of the model's own logits (T, V), in float64."""
    import torch

    k = min(top_k, logits.size(-1))
    positions: list[InspectPosition] = []
    next_token: list[InspectAlternative] = []
    for start in range(0, len(ids), ROWS_PER_CHUNK):
        log_probs = torch.log_softmax(logits[start : start + ROWS_PER_CHUNK].double(), dim=-1)  # (t, V)
        top = torch.topk(log_probs, k, dim=-1)
        top_ids, top_lps = top.indices.tolist(), top.values.tolist()
        for row in range(log_probs.size(0)):
            alternatives = [InspectAlternative(token=show(i), token_id=i, prob=math.exp(lp))
                            for i, lp in zip(top_ids[row], top_lps[row], strict=True)]
            t = start + row + 1  # this row predicts token t
            if t == len(ids):
                next_token = alternatives
                continue
            logprob = float(log_probs[row, ids[t]])
            positions.append(InspectPosition(
                position=t, token=show(ids[t]), token_id=ids[t], prob=math.exp(logprob), logprob=logprob,
                surprisal_bits=-logprob / math.log(2.0), top=alternatives,
            ))
    mean_bits = sum(p.surprisal_bits for p in positions) / len(positions) if positions else None
    return InspectProbabilities(
        positions=positions, next_token=next_token, mean_surprisal_bits=mean_bits,
        perplexity=2.0 ** min(mean_bits, 1000.0) if mean_bits is not None else None,  # no OverflowError
    )
