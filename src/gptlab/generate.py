"""Generation: prefill the prompt into a KV cache, then sample one token at a time.

This is the only sampler in gptlab: the CLI, the Python API and the server all call it.
``generate_tokens`` yields token ids; ``generate_text`` wraps it with decoding, stop sequences and
UTF-8-safe streaming of text pieces.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from gptlab.errors import GenerationError
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature == 0`` means greedy (argmax)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise GenerationError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")


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
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick the next token id for each row of ``logits`` (B, V); returns (B,) int64."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), params).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


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
        for _ in range(params.max_new_tokens):
            logits, _ = model(idx, cache=cache, last_only=True)  # (1, 1, V)
            next_id = sample_next(logits[:, -1, :], params, generator)  # (1,)
            token = int(next_id.item())
            yield token
            idx = next_id.view(1, 1)
    finally:
        model.train(was_training)


def generate_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    params: SamplingParams,
    stop: Sequence[str] = (),
    stop_at_eot: bool = True,
) -> Iterator[str]:
    """Yield the generated continuation of ``prompt`` as text pieces, as soon as they are safe to show.

    A piece is held back while it could still become the start of a stop sequence, or while it
    ends in an incomplete UTF-8 character. Generation ends at the first stop sequence (which is
    not yielded), at the end-of-text token when ``stop_at_eot``, or after ``max_new_tokens``.
    """
    stops = [s for s in stop if s]
    prompt_ids = tokenizer.encode(prompt)
    generated: list[int] = []
    shown = 0  # characters of the decoded continuation already yielded
    text = ""
    for token in generate_tokens(model, prompt_ids, params):
        if stop_at_eot and token == tokenizer.eot_id:
            break
        generated.append(token)
        text = tokenizer.decode(generated)
        cut = _first_stop(text, stops, start=max(0, shown - max((len(s) for s in stops), default=0)))
        if cut is not None:
            if cut > shown:
                yield text[shown:cut]
            return
        safe = len(text) - _held_back(text, stops)
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    if len(text) > shown:
        yield text[shown:]


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
