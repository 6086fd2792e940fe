"""Generation: prefill the prompt into a KV cache, then sample one token at a time.

This is the only sampler in gptlab: the CLI, the Python API and the server all call it.
``generate_tokens`` yields token ids; ``generate_text`` wraps it with decoding, stop sequences and
UTF-8-safe streaming of text pieces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from gptlab.generate.compiled import compiled_decode_step
from gptlab.generate.healing import HealedPrompt, PrefixConstraint, heal_prompt
from gptlab.errors import GenerationError
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer
from gptlab.data.chat import IM_END


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature == 0`` means greedy (argmax).

    The logits are adjusted in the order OpenAI documents: ``logit_bias`` (token id → added value),
    then ``frequency_penalty`` × (times the token was generated so far) and ``presence_penalty`` ×
    (1 if it was generated at all) are subtracted; then ``repetition_penalty`` (CTRL's, as in
    transformers and vLLM: the logit of every token seen in the prompt or the output is divided by
    it when positive, multiplied when negative); then temperature, top-k, top-p and ``min_p``
    (keep the tokens at least ``min_p`` × as likely as the most likely one) apply.

    ``token_healing`` (on by default) backs up the prompt's last token(s) when a longer token
    could start there, and makes the first generated tokens spell them again (see
    :mod:`gptlab.generate.healing`): ``generate_text`` and the server's engine do it, as they know
    the tokenizer; ``generate_tokens`` works on ids alone and takes the constraint as an argument.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    token_healing: bool = True
    min_p: float = 0.0
    repetition_penalty: float = 1.0

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
        if not 0.0 <= self.min_p <= 1.0:
            raise GenerationError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise GenerationError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        for token, bias in (self.logit_bias or {}).items():
            if not -100.0 <= bias <= 100.0:
                raise GenerationError(f"logit_bias for token {token} must be in [-100, 100], got {bias}")

    @property
    def penalised(self) -> bool:
        """Whether the next token depends on the tokens generated so far (penalties)."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits (B, V) with everything outside top-k / top-p set to -inf.

    The definition of top-k then top-p, row by row; ``sample_rows`` computes the same kept set for
    a whole batch with per-row parameters (tested equal).
    """
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
    if params.min_p > 0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
    return logits


class SequenceSampler:
    """The sampling state of one sequence: its parameters, random generator and token counts.

    Each sequence draws from its own generator (seeded by ``params.seed``, else at random), so a
    seeded sequence gets the same tokens alone or in a batch with others. ``prompt_ids`` are the
    tokens the repetition penalty counts as seen before the first generated one. A ``constraint``
    (token healing) allows only the tokens that spell the prompt's backed-up text until it is spelled.
    """

    def __init__(
        self, params: SamplingParams, vocab_size: int, device: torch.device | str = "cpu",
        constraint: PrefixConstraint | None = None, prompt_ids: Sequence[int] = (),
    ) -> None:
        self.params = params
        self.constraint = constraint
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.counts = torch.zeros(vocab_size, device=device) if params.penalised else None
        self.seen = None
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self.seen[torch.tensor(list(prompt_ids), dtype=torch.long, device=device)] = True
        self.bias = None  # (V,) added to every step's logits: dense, so a batch adds all rows' at once
        if params.logit_bias:
            ids = list(params.logit_bias)
            if min(ids) < 0 or max(ids) >= vocab_size:
                raise GenerationError(f"logit_bias names a token id outside the vocabulary of {vocab_size}")
            self.bias = torch.zeros(vocab_size, device=device)
            values = torch.tensor([float(v) for v in params.logit_bias.values()], device=device)
            self.bias[torch.tensor(ids, device=device)] = values

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """One row's logits (V,) with logit_bias added and the presence/frequency penalties
        (on the tokens generated so far) subtracted, in the order OpenAI documents, then the
        repetition penalty; while token healing constrains the next token, every token that does
        not fit is set to -inf (probability exactly zero, whatever the temperature, top-k or top-p)."""
        if self.bias is not None:
            logits = logits + self.bias.to(logits.dtype)
        return self.constrain(self.penalise(logits))

    @property
    def penalised(self) -> bool:
        return self.counts is not None or self.seen is not None

    @property
    def constrained(self) -> bool:
        """Whether token healing still constrains the next token."""
        return self.constraint is not None and not self.constraint.done

    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with every token that token healing does not allow next set to -inf."""
        if not self.constrained:
            return logits
        assert self.constraint is not None
        allowed = self.constraint.allowed(logits.size(-1), logits.device)
        return logits.masked_fill(~allowed, float("-inf"))

    def penalise(self, logits: torch.Tensor) -> torch.Tensor:
        """``adjust`` without the logit_bias: the penalties on the tokens seen so far."""
        if self.counts is not None:
            p = self.params
            logits = logits - p.frequency_penalty * self.counts - p.presence_penalty * (self.counts > 0).float()
        if self.seen is not None:
            penalty = self.params.repetition_penalty
            logits = torch.where(self.seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
        return logits

    def observe(self, token: int) -> None:
        """Count a generated token (for the penalties) and move the healing constraint past it."""
        if self.counts is not None:
            self.counts[token] += 1
        if self.constraint is not None:
            self.constraint.observe(token)
        if self.seen is not None:
            self.seen[token] = True


def sample_rows(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> torch.Tensor:
    """The next token of each row of ``logits`` (B, V), row b sampled with ``samplers[b]``; (B,) int64.

    The work is batched across rows: logit_bias and penalties (rows that have them), temperature,
    top-k and top-p (one sort, only when some row filters), min_p, then inverse-CDF sampling with one
    uniform number per row drawn from that row's generator. Greedy rows (temperature 0) take the
    argmax of their adjusted logits.
    """
    logits = logits.float()
    V = logits.size(-1)
    if any(s.bias is not None for s in samplers):
        none = logits.new_zeros(V)
        logits = logits + torch.stack([none if s.bias is None else s.bias for s in samplers])
    if any(s.penalised for s in samplers):
        logits = torch.stack([s.penalise(row) if s.penalised else row for s, row in zip(samplers, logits)])
    if any(s.constrained for s in samplers):
        logits = torch.stack([s.constrain(row) for s, row in zip(samplers, logits)])
    greedy = [s.params.temperature == 0 for s in samplers]
    if all(greedy):
        return logits.argmax(dim=-1)
    device = logits.device
    temperature = torch.tensor([s.params.temperature or 1.0 for s in samplers], device=device)
    probs = (logits / temperature.unsqueeze(1)).softmax(dim=-1)  # (B, V)
    order = None
    if any(s.params.top_k is not None or s.params.top_p is not None for s in samplers):
        probs, order = probs.sort(dim=-1, descending=True)
        top_k = torch.tensor([s.params.top_k or V for s in samplers], device=device)
        top_p = torch.tensor([s.params.top_p or 2.0 for s in samplers], device=device)
        probs = probs * (torch.arange(V, device=device) < top_k.unsqueeze(1))  # top-k first
        probs = probs / probs.sum(dim=-1, keepdim=True)
        # then, as filter_logits: a token goes when the tokens ranked above it already reach top_p
        probs = probs * ((probs.cumsum(dim=-1) - probs) < top_p.unsqueeze(1))
    if any(s.params.min_p > 0 for s in samplers):  # last, as vLLM: a ratio to the best token left
        min_p = torch.tensor([s.params.min_p for s in samplers], device=device)
        probs = probs * (probs >= min_p.unsqueeze(1) * probs.amax(dim=-1, keepdim=True))
    cdf = probs.cumsum(dim=-1)  # (B, V)
    u = torch.cat([torch.rand(1, generator=s.generator, device=device) for s in samplers])  # (B,)
    index = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp_(max=V - 1)
    # a token of probability zero is never chosen: step back over any (only at the very end)
    index = torch.where(probs.gather(-1, index) > 0, index, (probs > 0).cumsum(-1).argmax(-1, keepdim=True))
    tokens = (order.gather(-1, index) if order is not None else index).squeeze(1)
    if any(greedy):
        tokens = torch.where(torch.tensor(greedy, device=device), logits.argmax(dim=-1), tokens)
    return tokens


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
    model: GPT, prompt_ids: Sequence[int], params: SamplingParams, *, compile: bool = False,
    constraint: PrefixConstraint | None = None,
) -> Iterator[int]:
    """Yield up to ``params.max_new_tokens`` sampled token ids that continue ``prompt_ids``.

    The prompt is run once through the model (prefill) into a KV cache; each next token then costs
    one forward pass of a single position. Generation goes on past the context, as nanoGPT's does:
    a prompt longer than the context keeps its last ``block_size`` tokens, and when the cache is
    full the last ``block_size // 2`` tokens become a new prompt (one prefill), so the model always
    sees between half a context and a full one. With ``compile``, the one-token passes run through
    ``torch.compile`` (see ``gptlab.generate.compiled``): the first call compiles for tens of
    seconds, later calls with the same weights reuse it; the tokens are the same up to float
    rounding. ``params.token_healing`` is not read here (healing needs the tokens' text): pass
    ``constraint=heal_prompt(tokenizer, ids).constraint()`` with the healed prompt's ids, as
    ``generate_text`` does. Raises GenerationError if the prompt is empty.
    """
    if len(prompt_ids) == 0:
        raise GenerationError("the prompt is empty: give at least one token")
    if params.max_new_tokens == 0:
        return
    block_size = model.config.block_size
    history = deque(prompt_ids, maxlen=block_size)  # what the model may see: the end of the text so far
    keep = max(1, block_size // 2)  # tokens a full cache starts over with
    # the prefill makes the first token: a compiled step is for the ones after it
    step = compiled_decode_step(model) if compile and params.max_new_tokens > 1 else None
    was_training = model.training
    model.eval()
    device = model.transformer.wte.weight.device
    sampler = SequenceSampler(params, model.config.vocab_size, device, constraint, prompt_ids=history)
    # a compiled step is built for one cache shape: give every generation the full context
    fits = len(history) + params.max_new_tokens <= block_size
    cache = model.new_cache(batch_size=1, max_len=len(history) + params.max_new_tokens
                            if fits and step is None else block_size)
    try:
        idx = torch.tensor([list(history)], dtype=torch.long, device=device)  # (1, T)
        prefill = True
        for _ in range(params.max_new_tokens):
            if not prefill and int(cache.lengths[0]) == cache.max_len:  # full: start over from the end
                cache.reset()
                idx = torch.tensor([list(history)[-keep:]], dtype=torch.long, device=device)  # (1, keep)
                prefill = True
            if prefill or step is None:
                logits = model(idx, cache=cache, last_only=True)[0][:, -1]  # (1, V)
            else:
                logits = step(idx, cache.lengths.to(device), cache)  # (1, V)
                cache.lengths += 1
            prefill = False
            next_id = sample_rows(logits, [sampler])  # (1,)
            token = int(next_id.item())
            sampler.observe(token)
            history.append(token)
            yield token
            idx = next_id.view(1, 1)
    finally:
        model.train(was_training)


class TextStream:
    """Turns generated token ids into text pieces that are safe to show, and finds stop sequences.

    ``push(token)`` returns the text that became safe: a piece is held back while it could still
    become the start of a stop sequence, or while it ends in an incomplete UTF-8 character.
    Once a stop sequence appears, ``stopped`` is True and the text before it is all that was shown
    (the text up to its end, with ``include_stop``).
    ``flush()`` returns whatever is still held back at the end. The server streams through this
    class too, so the CLI and the API cut text the same way.

    Decoding is incremental: only the tokens since the last complete character are decoded again
    (byte-level tokenizers decode a concatenation of tokens to the concatenation of their bytes).

    ``skip`` characters at the start are the prompt's own, spelled again by token healing: they
    are never shown, and stop sequences are looked for only after them.
    """

    MAX_PENDING = 8  # tokens; more than a UTF-8 character needs, so nothing valid waits longer

    def __init__(
        self, tokenizer: Tokenizer, stop: Sequence[str] = (), skip: int = 0, include_stop: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stop if s]
        self.include_stop = include_stop
        self.tokens: list[int] = []
        self.text = ""  # decoded text of the tokens before ``pending``
        self.pending: list[int] = []  # tokens whose text may still be an incomplete character
        self.skip = skip
        self.shown = skip  # characters of the decoded text already returned (or skipped)
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.tokens.append(token)
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        if piece.endswith("\ufffd") and len(self.pending) < self.MAX_PENDING:
            return ""  # wait for the rest of the character
        self.text += piece
        self.pending = []
        longest = max((len(s) for s in self.stops), default=0)
        cut = self._stop_cut(start=max(self.skip, self.shown - longest))
        if cut is not None:
            self.stopped = True
            return self._show(cut)
        return self._show(len(self.text) - _held_back(self.text, self.stops))

    def flush(self) -> str:
        """The rest of the text (at the end of generation), unless a stop sequence ended it."""
        if self.stopped:
            return ""
        if self.pending:
            self.text += self.tokenizer.decode(self.pending)
            self.pending = []
            cut = self._stop_cut(start=self.skip)
            if cut is not None:
                self.stopped = True
                return self._show(cut)
        return self._show(len(self.text))

    def _stop_cut(self, start: int) -> int | None:
        """Where the shown text ends if a stop sequence begins in ``text[start:]``, else None."""
        span = _first_stop(self.text, self.stops, start)
        return None if span is None else span[1] if self.include_stop else span[0]

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
    *,
    compile: bool = False,
) -> Iterator[str]:
    """Yield the generated continuation of ``prompt`` as text pieces, as soon as they are safe to show.

    Generation ends at the first stop sequence (which is not yielded), at the end-of-text token
    (and ``<|im_end|>``, the end of a chat turn, when the tokenizer has it) when ``stop_at_eot``,
    or after ``max_new_tokens``. See TextStream for what is held back;
    ``compile`` is ``generate_tokens``'s. With ``params.token_healing`` the prompt's last token(s)
    may be backed up and spelled again by the first new tokens (which count towards
    ``max_new_tokens``); the text yielded is still only what follows ``prompt``.
    """
    healed = heal_prompt_if(tokenizer, tokenizer.encode(prompt), params)
    stream = TextStream(tokenizer, stop, skip=healed.backed_up)
    tokens = generate_tokens(model, healed.prompt_ids, params, compile=compile, constraint=healed.constraint())
    ends = end_token_ids(tokenizer) if stop_at_eot else []
    for token in tokens:
        if token in ends:
            break
        piece = stream.push(token)
        if piece:
            yield piece
        if stream.stopped:
            return
    rest = stream.flush()
    if rest:
        yield rest


def end_token_ids(tokenizer: Tokenizer) -> list[int]:
    """The tokens that end a generation: ``<|im_end|>`` (the end of a chat turn) when the tokenizer
    has it, and ``<|endoftext|>``. The server's completions stop at the same ones, and so does its chat
    route unless the model brings its own chat template."""
    special = tokenizer.special_tokens
    return [special[IM_END], tokenizer.eot_id] if IM_END in special else [tokenizer.eot_id]


def heal_prompt_if(
    tokenizer: Tokenizer, prompt_ids: Sequence[int], params: SamplingParams, *, enabled: bool = True
) -> HealedPrompt:
    """``heal_prompt(tokenizer, prompt_ids)`` when ``params.token_healing`` (and ``enabled``), else
    the prompt unchanged."""
    if params.token_healing and enabled:
        return heal_prompt(tokenizer, prompt_ids)
    return HealedPrompt(list(prompt_ids))


def _first_stop(text: str, stops: Sequence[str], start: int) -> tuple[int, int] | None:
    """(start, end) of the earliest stop sequence in ``text[start:]``, or None."""
    hits = [(i, i + len(s)) for i, s in ((text.find(s, start), s) for s in stops) if i >= 0]
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
