"""The batching engine against the one sampler: same tokens batched or alone, rows freed at once."""

import asyncio

import pytest
import torch

from gptlab.errors import GenerationError
from gptlab.generate.sampler import SamplingParams, generate_tokens
from gptlab.server.engine import Engine, EngineConfig, GenerationRequest, QueueFullError


def run(engine, requests, cancel_after=None):
    """Submit all requests at once; return each one's events."""

    async def consume(req, i):
        stream = engine.submit(req)
        events = []
        async for event in stream:
            events.append(event)
            if cancel_after is not None and i in cancel_after and len(events) == cancel_after[i]:
                stream.cancel()
                break
        return events

    async def main():
        return await asyncio.gather(*(consume(r, i) for i, r in enumerate(requests)))

    engine.start()
    try:
        return asyncio.run(main())
    finally:
        engine.stop()


PROMPTS = [[5, 9, 3, 7], [1], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20], [11, 12, 13]]


@pytest.fixture(params=["gpt2", "llama", "bigram"])
def any_shape(request, model, tokenizer):
    """The conftest's GPT-2 shaped model, the same size in today's family, and with a hashed bigram
    embedding (whose cache also keeps the token ids)."""
    if request.param == "gpt2":
        return model
    from gptlab.model import GPT

    torch.manual_seed(0)
    if request.param == "bigram":
        return GPT(model.config.replace(norm="rmsnorm", positions="rotary", bias=False, qk_norm=True,
                                        bigram_buckets=53)).eval()
    return GPT(model.config.replace(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, n_head=4,
                                    n_kv_head=2, tie_embeddings=False)).eval()


def test_batched_greedy_equals_generate_tokens_alone(any_shape, tokenizer):
    model = any_shape
    params = SamplingParams(max_new_tokens=20, temperature=0)
    events = run(Engine(model, tokenizer, EngineConfig(max_batch_size=3)), [GenerationRequest(p, params) for p in PROMPTS])
    for prompt, evs in zip(PROMPTS, events):
        assert [e.token_id for e in evs] == list(generate_tokens(model, prompt, params))
        assert [e.finish_reason for e in evs] == [None] * 19 + ["length"]


def test_seeded_sampling_is_the_same_alone_and_in_a_busy_batch(model, tokenizer):
    params = SamplingParams(max_new_tokens=25, temperature=1.0, top_k=20, seed=7, frequency_penalty=0.5)
    alone = run(Engine(model, tokenizer), [GenerationRequest(PROMPTS[0], params)])[0]
    noise = [GenerationRequest(p, SamplingParams(max_new_tokens=15 + i, temperature=0.8)) for i, p in enumerate(PROMPTS)]
    busy = run(Engine(model, tokenizer), [*noise[:2], GenerationRequest(PROMPTS[0], params), *noise[2:]])[2]
    assert [e.token_id for e in busy] == [e.token_id for e in alone]
    assert [e.token_id for e in alone] == list(generate_tokens(model, PROMPTS[0], params))


def test_stop_strings_and_stop_tokens_end_with_finish_reason_stop(model, tokenizer):
    greedy = SamplingParams(max_new_tokens=30, temperature=0)
    tokens = list(generate_tokens(model, PROMPTS[0], greedy))
    text = tokenizer.decode(tokens)
    stop_text = text[10:12]
    [by_text, by_token] = run(
        Engine(model, tokenizer),
        [GenerationRequest(PROMPTS[0], greedy, stop=[stop_text]), GenerationRequest(PROMPTS[0], greedy, stop_token_ids=[tokens[5]])],
    )
    assert "".join(e.text for e in by_text) == text[: text.index(stop_text)]
    assert by_text[-1].finish_reason == "stop"
    first = tokens.index(tokens[5])
    assert [e.token_id for e in by_token] == tokens[: first + 1] and by_token[-1].finish_reason == "stop"
    assert "".join(e.text for e in by_token) == tokenizer.decode(tokens[:first])


def test_logprobs_are_the_models_log_softmax(model, tokenizer):
    params = SamplingParams(max_new_tokens=5, temperature=0)
    [events] = run(Engine(model, tokenizer), [GenerationRequest(PROMPTS[2], params, logprobs=3, prompt_logprobs=True)])
    seq = PROMPTS[2] + [e.token_id for e in events]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq]))[0][0], dim=-1)  # (T, V)
    n = len(PROMPTS[2])
    for i, e in enumerate(events):
        assert e.logprob == pytest.approx(float(logp[n - 1 + i, e.token_id]), abs=1e-4)
        assert [t for t, _ in e.top_logprobs] == logp[n - 1 + i].topk(3).indices.tolist()
        assert e.top_logprobs[0][0] == e.token_id  # greedy picks the most likely token


def test_prompt_logprobs_and_zero_new_tokens(model, tokenizer):
    engine = Engine(model, tokenizer)
    req = GenerationRequest(PROMPTS[0], SamplingParams(max_new_tokens=0), prompt_logprobs=True)

    async def main():
        stream = engine.submit(req)
        events = [e async for e in stream]
        return stream, events

    engine.start()
    try:
        stream, events = asyncio.run(main())
    finally:
        engine.stop()
    assert [(e.token_id, e.finish_reason) for e in events] == [(None, "length")]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([PROMPTS[0]]))[0][0], dim=-1)
    expected = [float(logp[i, PROMPTS[0][i + 1]]) for i in range(len(PROMPTS[0]) - 1)]
    assert stream.prompt_logprobs[0] is None
    assert stream.prompt_logprobs[1:] == pytest.approx(expected, abs=1e-5)


def test_cancelled_requests_free_their_rows(model, tokenizer):
    engine = Engine(model, tokenizer, EngineConfig(max_batch_size=2))
    params = SamplingParams(max_new_tokens=40, temperature=0)
    events = run(engine, [GenerationRequest(p, params) for p in PROMPTS], cancel_after={0: 3, 2: 1})
    assert len(events[0]) == 3 and len(events[2]) == 1
    for i in (1, 3):  # the others still get every token, the same as alone
        assert [e.token_id for e in events[i]] == list(generate_tokens(model, PROMPTS[i], params))
    assert engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0
    assert engine.cache.lengths.tolist() == [0, 0]


def test_bad_requests_and_a_full_queue_are_typed_errors(model, tokenizer):
    engine = Engine(model, tokenizer, EngineConfig(max_queue=1))  # not started: requests stay queued

    async def main():
        with pytest.raises(GenerationError, match="context length"):
            engine.submit(GenerationRequest([1] * 60, SamplingParams(max_new_tokens=10)))
        with pytest.raises(GenerationError, match="empty"):
            engine.submit(GenerationRequest([], SamplingParams()))
        with pytest.raises(GenerationError, match="token ids"):
            engine.submit(GenerationRequest([10**6], SamplingParams(max_new_tokens=1)))
        engine.submit(GenerationRequest([1], SamplingParams(max_new_tokens=1)))
        with pytest.raises(QueueFullError):
            engine.submit(GenerationRequest([1], SamplingParams(max_new_tokens=1)))

    asyncio.run(main())


def test_token_healing_in_the_engine_is_generate_texts(corpus_text):
    """A request with token_healing backs up the prompt's tail as generate_text does: the same
    seeded tokens and text; without it, the plain sampler's tokens."""
    from gptlab.data.tokenizer import train_bpe_tokenizer
    from gptlab.generate.healing import heal_prompt
    from gptlab.generate.sampler import generate_text
    from gptlab.model import GPT, GPTConfig

    bpe = train_bpe_tokenizer([corpus_text], vocab_size=400)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)).eval()
    prompt = "def "
    ids = bpe.encode(prompt)
    healed = heal_prompt(bpe, ids)
    assert healed.text == " "  # the space goes: ` name` is a token of this vocabulary
    requests = [GenerationRequest(ids, SamplingParams(max_new_tokens=8, seed=s, token_healing=heal))
                for s in range(3) for heal in (True, False)]
    events = run(Engine(model, bpe, EngineConfig(max_batch_size=4)), requests)
    for request, evs in zip(requests, events):
        tokens = [e.token_id for e in evs]
        text = "".join(e.text for e in evs)
        if request.params.token_healing:
            assert tokens == list(generate_tokens(model, healed.prompt_ids, request.params,
                                                  constraint=healed.constraint()))
            assert bpe.decode(tokens).startswith(" ")
        else:
            assert tokens == list(generate_tokens(model, ids, request.params))
        assert text == "".join(generate_text(model, bpe, prompt, request.params, stop_at_eot=False))
