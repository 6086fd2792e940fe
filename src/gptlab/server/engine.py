"""The engine: one thread owns the model and runs continuous batching.

Requests wait in a bounded queue. Between two decode steps the engine admits waiting requests
into free rows of one shared KV cache (each prompt is prefilled on its own row, a bounded number
of prompt tokens per step, so running sequences keep streaming while new ones arrive), then runs
one decode step for every running row at once: the rows hold different numbers of tokens, and
the model masks each row to its own length. A sequence that finishes or is cancelled leaves at
once; the last row moves into its place, so the live rows stay packed at the top of the cache.

Each sequence samples with its own parameters and its own random generator, through the one
sampler in :mod:`gptlab.generate.sampler`, so a seeded request gives the same tokens whatever else is in
the batch. Tokens reach the asyncio side through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gptlab.errors import GenerationError, GptlabError
from gptlab.generate.sampler import (
    SamplingParams,
    SequenceSampler,
    TextStream,
    heal_prompt_if,
    sample_rows,
    top_logprobs,
)
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class QueueFullError(GptlabError):
    """The engine's waiting queue is full: try again later (HTTP 429/503)."""


@dataclass
class EngineConfig:
    max_batch_size: int = 16  # rows decoded together (KV cache rows)
    max_queue: int = 64  # requests waiting for a row
    max_prefill_tokens: int = 512  # prompt tokens prefilled between two decode steps (at least one prompt)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise GenerationError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    stop: Sequence[str] = ()  # text is cut before the first one; finish_reason "stop"
    stop_token_ids: Sequence[int] = ()  # e.g. <|endoftext|>, <|im_end|>: finish_reason "stop", not shown
    min_tokens: int = 0  # the stop tokens cannot be sampled before this many tokens
    include_stop: bool = False  # show the stop string (or the stop token's text) that ended generation
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's log-prob and the top k
    prompt_logprobs: bool = False  # log-prob of every prompt token (for echo with logprobs)


@dataclass(frozen=True)
class TokenEvent:
    token_id: int | None  # None on a final event that only carries finish_reason
    text: str  # text that became safe to show ("" while held back)
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)  # (token id, log-prob), best first
    finish_reason: str | None = None  # "stop" | "length" on the last event


class RequestStream:
    """The events of one request, consumed with ``async for`` on the event loop that submitted it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        self._done = False
        self.cancelled = False
        self.prompt_logprobs: list[float | None] | None = None
        self.prompt_tokens = 0
        self.healed_chars = 0  # characters of the prompt's tail that token healing has the first tokens spell again
        self.completion_tokens = 0

    def cancel(self) -> None:
        """Stop generating (e.g. the client went away); the row is freed at the next step."""
        self.cancelled = True

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item


def _deliver(items: list[tuple[RequestStream, TokenEvent | BaseException]]) -> None:
    """Runs on the event loop: hand each event to its stream."""
    for stream, item in items:
        stream._queue.put_nowait(item)


class _Sequence:
    """Engine-side state of one request."""

    def __init__(
        self, request: GenerationRequest, stream: RequestStream, tokenizer: Tokenizer, vocab: int,
        device: torch.device,
    ) -> None:
        self.request = request
        self.stream = stream
        # token healing (opt-in per request) may back up the prompt's tail: prefill what is left
        # (never when the prompt itself is scored: echo's logprobs are for the prompt as sent)
        healed = heal_prompt_if(tokenizer, request.prompt_ids, request.params,
                                enabled=not request.prompt_logprobs)
        self.prompt_ids = healed.prompt_ids
        stream.healed_chars = healed.backed_up
        self.text = TextStream(tokenizer, request.stop, skip=healed.backed_up, include_stop=request.include_stop)
        self.sampler = SequenceSampler(request.params, vocab, device, healed.constraint(),
                                       prompt_ids=healed.prompt_ids)
        self.generated = 0
        self.last_token = 0


class Engine:
    """Owns the model; ``submit`` requests from the asyncio loop, ``start`` the batching thread."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.block_size = model.config.block_size
        self.cache = model.new_cache(batch_size=self.config.max_batch_size)
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []  # row i of the cache holds _running[i]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.device = next(model.parameters()).device
        self._outbox: list[tuple[RequestStream, TokenEvent | BaseException]] = []

    # -- the asyncio side -------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Queue a request; raises GenerationError for a request that cannot run, QueueFullError when full."""
        n_prompt = len(request.prompt_ids)
        if n_prompt == 0:
            raise GenerationError("the prompt is empty: give at least one token")
        if n_prompt + request.params.max_new_tokens > self.block_size:
            raise GenerationError(
                f"prompt ({n_prompt} tokens) + max_tokens ({request.params.max_new_tokens}) "
                f"exceeds the context length of {self.block_size}"
            )
        if request.min_tokens > request.params.max_new_tokens:
            raise GenerationError(f"min_tokens ({request.min_tokens}) must not exceed max_tokens "
                                  f"({request.params.max_new_tokens})")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in (*request.prompt_ids, *request.stop_token_ids)):
            raise GenerationError(f"prompt and stop token ids must be in [0, {vocab})")
        stream = RequestStream(asyncio.get_running_loop())
        stream.prompt_tokens = n_prompt
        seq = _Sequence(request, stream, self.tokenizer, vocab, self.device)  # checks logit_bias
        with self._lock:
            if len(self._waiting) >= self.config.max_queue:
                raise QueueFullError(f"the queue is full ({self.config.max_queue} requests waiting)")
            self._waiting.append(seq)
        self._wake.set()
        return stream

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "max_batch_size": self.config.max_batch_size,
                "max_queue": self.config.max_queue,
            }

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="gptlab-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the engine thread ------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping:
                try:
                    self._admit()
                    if self._running:
                        self._decode_step()
                    else:
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
                except Exception as exc:  # a bug must not leave clients waiting forever
                    log.exception("engine step failed")
                    self._fail_all(exc)
                self._flush()

    def _send(self, seq: _Sequence, item: TokenEvent | BaseException) -> None:
        self._outbox.append((seq.stream, item))

    def _flush(self) -> None:
        """Deliver this step's events: one wake-up of each event loop, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, TokenEvent | BaseException]]] = (
            defaultdict(list)
        )
        for stream, item in self._outbox:
            by_loop[stream._loop].append((stream, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                for stream, _ in items:
                    stream.cancelled = True

    def _admit(self) -> None:
        """Prefill waiting requests into free rows, up to ``max_prefill_tokens`` prompt tokens."""
        budget = self.config.max_prefill_tokens
        admitted = False
        while len(self._running) < self.config.max_batch_size:
            with self._lock:
                if not self._waiting:
                    return
                n_prompt = len(self._waiting[0].request.prompt_ids)
                if admitted and n_prompt > budget:  # the first prompt always goes in, however long
                    return
                seq = self._waiting.popleft()
            if seq.stream.cancelled:
                continue
            budget -= n_prompt
            admitted = True
            self._prefill(seq)
            self._flush()  # the first token goes out before the next prompt is prefilled

    def _prefill(self, seq: _Sequence) -> None:
        row = len(self._running)
        view = self.cache.rows(row, row + 1)
        view.reset()
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)  # (1, T)
        logits, _ = self.model(ids, cache=view, last_only=not seq.request.prompt_logprobs)
        if seq.request.prompt_logprobs:
            logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (T-1, V): token t+1 given t
            picked = logp.gather(-1, ids[0, 1:].view(-1, 1)).squeeze(-1).tolist()
            seq.stream.prompt_logprobs = [None, *picked]
        if seq.request.params.max_new_tokens == 0:  # e.g. echo-only scoring of a prompt
            view.reset()
            self._send(seq, TokenEvent(None, "", finish_reason="length"))
            return
        with self._lock:
            self._running.append(seq)
        self._sample([row], logits[:, -1])  # the first new token comes from the prompt's last position

    def _decode_step(self) -> None:
        n = len(self._running)
        tokens = torch.tensor([[s.last_token] for s in self._running], dtype=torch.long, device=self.device)
        logits, _ = self.model(tokens, cache=self.cache.rows(0, n))  # (n, 1, V)
        self._sample(list(range(n)), logits[:, -1])

    def _sample(self, rows: list[int], logits: torch.Tensor) -> None:
        """Sample the next token of ``rows`` from their ``logits`` (len(rows), V) in one batch, send
        the events, and retire the rows that are done or cancelled."""
        seqs = [self._running[row] for row in rows]
        early = [(i, s.request.stop_token_ids) for i, s in enumerate(seqs)
                 if s.generated < s.request.min_tokens and s.request.stop_token_ids]
        sampled_from = logits
        if early:  # min_tokens: no stop token yet (logprobs still report the model's own distribution)
            sampled_from = logits.clone()
            for i, stop_ids in early:
                sampled_from[i, list(stop_ids)] = float("-inf")
        tokens = sample_rows(sampled_from, [s.sampler for s in seqs]).tolist()
        want = [i for i, s in enumerate(seqs) if s.request.logprobs is not None]
        logprobs: dict[int, tuple[float, list[tuple[int, float]]]] = {}
        if want:
            k = max(seqs[i].request.logprobs or 0 for i in want)
            picked = torch.tensor([tokens[i] for i in want], device=logits.device)
            chosen, ids, values = top_logprobs(logits[want], picked, k)
            for j, i in enumerate(want):
                n = seqs[i].request.logprobs or 0
                logprobs[i] = (float(chosen[j]), list(zip(ids[j, :n].tolist(), values[j, :n].tolist())))
        done = [row for i, row in enumerate(rows) if self._emit(seqs[i], tokens[i], *logprobs.get(i, (None, [])))]
        for row in sorted(done, reverse=True):  # from the bottom: a release moves the last row up
            self._release(row)

    def _emit(self, seq: _Sequence, token_id: int, logprob: float | None, top: list[tuple[int, float]]) -> bool:
        """Send ``token_id`` to ``seq``'s client; True when the sequence is finished (or cancelled)."""
        if seq.stream.cancelled:
            return True
        req = seq.request
        seq.generated += 1
        seq.stream.completion_tokens = seq.generated
        seq.sampler.observe(token_id)
        if token_id in req.stop_token_ids:
            text = seq.text.push(token_id) if req.include_stop else ""
            event = TokenEvent(token_id, text + seq.text.flush(), logprob, top, finish_reason="stop")
        else:
            text = seq.text.push(token_id)
            finish = None
            if seq.text.stopped:
                finish = "stop"
            elif seq.generated >= req.params.max_new_tokens:
                finish = "length"
                text += seq.text.flush()
            event = TokenEvent(token_id, text, logprob, top, finish_reason=finish)
        self._send(seq, event)
        seq.last_token = token_id
        return event.finish_reason is not None

    def _release(self, row: int) -> None:
        """Free ``row``: the last running row moves into it."""
        with self._lock:
            last = len(self._running) - 1
            if row != last:
                self.cache.copy_row(last, row)
                self._running[row] = self._running[last]
            self._running.pop()
        self.cache.reset(last)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            failed = self._running + list(self._waiting)
            self._running.clear()
            self._waiting.clear()
        self.cache.reset()
        for seq in failed:
            self._send(seq, GenerationError(f"generation failed: {exc}"))
