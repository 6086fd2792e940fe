"""Generation: prefill the prompt into a KV cache, then sample one token at a time.

This is the only sampler in gptlab: the CLI, the Python API and the server all call it.
``generate_tokens`` yields token ids; ``generate_text`` wraps it with decoding, stop sequences and
UTF-8-safe streaming of text pieces.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from gptlab.errors import GenerationError
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature == 0`` means greedy (argmax).

    The logits are adjusted in the order OpenAI documents: ``logit_bias`` (token id → added value),
    then ``frequency_penalty`` × (times the token was generated so far) and ``presence_penalty`` ×
    (1 if it was generated at all) are subtracted; then temperature, top-k and top-p apply.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise GenerationError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise GenerationError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        for token, bias in (self.logit_bias or {}).items():
            if not -100.0 <= bias <= 100.0:
                raise GenerationError(f"logit_bias for token {token} must be in [-100, 100], got {bias}")

    @property
    def penalised(self) -> bool:
        """Whether the next token depends on the tokens generated so far (penalties)."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def adjust_logits(
    logits: torch.Tensor, params: SamplingParams, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """``logits`` (B, V) with logit_bias added and presence/frequency penalties subtracted.

    ``counts`` (B, V) holds how often each token has been generated so far in each row.
    """
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), device=logits.device)
        if int(ids.min()) < 0 or int(ids.max()) >= logits.size(-1):
            raise GenerationError(f"logit_bias names a token id outside the vocabulary of {logits.size(-1)}")
        bias = torch.tensor(list(params.logit_bias.values()), device=logits.device, dtype=logits.dtype)
        logits = logits.index_add(-1, ids, bias.expand(logits.size(0), -1))
    if counts is not None and params.penalised:
        counts = counts.to(logits.dtype)
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits (B, V) with everything outside top-k / top-p set to -inf."""
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.size(-1):
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the best one always stays)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick the next token id for each row of ``logits`` (B, V); returns (B,) int64.

    ``counts`` (B, V): tokens generated so far per row, for the penalties.
    """
    logits = adjust_logits(logits.float(), params, counts)
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, params).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def top_logprobs(logits: torch.Tensor, token: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities under the model's own distribution (before sampling adjustments).

    For ``logits`` (B, V) and the chosen ``token`` (B,): the chosen token's log-prob (B,), and the
    k most likely tokens' ids and log-probs (B, k), best first. This is what the API's
    ``logprobs`` reports (vLLM's default too): temperature and top-k/top-p do not change it.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, token.view(-1, 1)).squeeze(-1)
    values, ids = torch.topk(logp, min(k, logp.size(-1)), dim=-1)
    return chosen, ids, values


@torch.inference_mode()
def generate_tokens(
    model: GPT, prompt_ids: Sequence[int], params: SamplingParams
) -> Iterator[int]:
    """Yield up to ``params.max_new_tokens`` sampled token ids that continue ``prompt_ids``.

    The prompt is run once through the model (prefill) into a KV cache; each next token then costs
    one forward pass of a single position. Raises GenerationError if the prompt is empty or the
    prompt plus the new tokens do not fit in the context.
    """
    if len(prompt_ids) == 0:
        raise GenerationError("the prompt is empty: give at least one token")
    block_size = model.config.block_size
    total = len(prompt_ids) + params.max_new_tokens
    if len(prompt_ids) > block_size:
        raise GenerationError(
            f"prompt is {len(prompt_ids)} tokens, longer than the context length of {block_size}"
        )
    if total > block_size:
        raise GenerationError(
            f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({params.max_new_tokens}) "
            f"exceeds the context length of {block_size}"
        )
    if params.max_new_tokens == 0:
        return
    was_training = model.training
    model.eval()
    device = model.transformer.wte.weight.device
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    cache = model.new_cache(batch_size=1, max_len=total)
    try:
        idx = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
        counts = torch.zeros(1, model.config.vocab_size, device=device) if params.penalised else None
        for _ in range(params.max_new_tokens):
            logits, _ = model(idx, cache=cache, last_only=True)  # (1, 1, V)
            next_id = sample_next(logits[:, -1, :], params, generator, counts)  # (1,)
            token = int(next_id.item())
            if counts is not None:
                counts[0, token] += 1
            yield token
            idx = next_id.view(1, 1)
    finally:
        model.train(was_training)


class TextStream:
    """Turns generated token ids into text pieces that are safe to show, and finds stop sequences.

    ``push(token)`` returns the text that became safe: a piece is held back while it could still
    become the start of a stop sequence, or while it ends in an incomplete UTF-8 character.
    Once a stop sequence appears, ``stopped`` is True and the text before it is all that was shown.
    ``flush()`` returns whatever is still held back at the end. The server streams through this
    class too, so the CLI and the API cut text the same way.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stop if s]
        self.tokens: list[int] = []
        self.text = ""
        self.shown = 0  # characters of the decoded text already returned
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens)
        longest = max((len(s) for s in self.stops), default=0)
        cut = _first_stop(self.text, self.stops, start=max(0, self.shown - longest))
        if cut is not None:
            self.stopped = True
            return self._show(cut)
        return self._show(len(self.text) - _held_back(self.text, self.stops))

    def flush(self) -> str:
        """The rest of the text (at the end of generation), unless a stop sequence ended it."""
        return "" if self.stopped else self._show(len(self.text))

    def _show(self, upto: int) -> str:
        if upto <= self.shown:
            return ""
        piece = self.text[self.shown : upto]
        self.shown = upto
        return piece


def generate_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    params: SamplingParams,
    stop: Sequence[str] = (),
    stop_at_eot: bool = True,
) -> Iterator[str]:
    """Yield the generated continuation of ``prompt`` as text pieces, as soon as they are safe to show.

    Generation ends at the first stop sequence (which is not yielded), at the end-of-text token
    when ``stop_at_eot``, or after ``max_new_tokens``. See TextStream for what is held back.
    """
    stream = TextStream(tokenizer, stop)
    for token in generate_tokens(model, tokenizer.encode(prompt), params):
        if stop_at_eot and token == tokenizer.eot_id:
            break
        piece = stream.push(token)
        if piece:
            yield piece
        if stream.stopped:
            return
    rest = stream.flush()
    if rest:
        yield rest


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Index where the earliest stop sequence begins in ``text[start:]``, or None."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters to hold back: a partial UTF-8 character, or a stop-sequence prefix."""
    hold = 1 if text.endswith("\ufffd") else 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold
