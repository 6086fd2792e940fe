import gc
import weakref

import pytest
import torch

from gptlab.generate.compiled import compiled_decode_step, forget, has_cpp_compiler
from gptlab.model.config import GPTConfig
from gptlab.errors import GenerationError
from gptlab.generate.sampler import (
    SamplingParams,
    SequenceSampler,
    TextStream,
    filter_logits,
    generate_text,
    generate_tokens,
    sample_rows,
)
from gptlab.model.gpt import GPT

needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")


def test_greedy_matches_uncached_argmax(model):
    prompt = [5, 9, 3, 7]
    got = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=20, temperature=0)))
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            logits, _ = model(torch.tensor([seq]))
            seq.append(int(logits[0, -1].argmax()))
    assert got == seq[len(prompt):]


def test_seeded_sampling_is_reproducible(model):
    params = SamplingParams(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=123)
    first = list(generate_tokens(model, [1, 2, 3], params))
    assert list(generate_tokens(model, [1, 2, 3], params)) == first
    other = list(generate_tokens(model, [1, 2, 3], SamplingParams(max_new_tokens=30, seed=124)))
    assert other != first


def test_top_k_one_is_greedy(model):
    greedy = list(generate_tokens(model, [4, 4], SamplingParams(max_new_tokens=15, temperature=0)))
    top1 = list(generate_tokens(model, [4, 4], SamplingParams(max_new_tokens=15, top_k=1, seed=0)))
    assert top1 == greedy


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda params: torch.isfinite(filter_logits(logits, params))[0].tolist()
    assert kept(SamplingParams(top_k=2)) == [True, True, False, False, False]
    assert kept(SamplingParams(top_p=0.5)) == [True, False, False, False, False]
    assert kept(SamplingParams(top_p=0.7)) == [True, True, False, False, False]
    assert kept(SamplingParams(top_p=0.71)) == [True, True, True, False, False]
    assert kept(SamplingParams(top_p=1.0)) == [True] * 5


def test_samples_follow_the_softmax_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    # 20,000 draws: 100 seeded sequences (rows of one batch), 200 steps each
    samplers = [SequenceSampler(SamplingParams(temperature=1.0, seed=seed), 4) for seed in range(100)]
    logits = probs.log().repeat(len(samplers), 1)
    draws = torch.cat([sample_rows(logits, samplers) for _ in range(200)])
    assert len(draws) == 20000
    freq = torch.bincount(draws, minlength=4).float() / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_invalid_parameters_and_prompts(model):
    with pytest.raises(GenerationError):
        SamplingParams(temperature=-1)
    with pytest.raises(GenerationError):
        SamplingParams(top_p=0)
    with pytest.raises(GenerationError):
        SamplingParams(top_k=0)
    with pytest.raises(GenerationError, match="empty"):
        list(generate_tokens(model, [], SamplingParams()))


@pytest.mark.parametrize("prompt_len", [10, 100])
def test_generation_goes_on_past_the_context(model, prompt_len):
    """Greedy tokens equal an uncached reference that sees what the sampler promises: the prompt's
    last block_size tokens, then, whenever the context is full, the last block_size // 2 again."""
    block, keep = model.config.block_size, model.config.block_size // 2
    prompt = torch.randint(0, model.config.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(3))
    got = list(generate_tokens(model, prompt.tolist(), SamplingParams(max_new_tokens=150, temperature=0)))
    history, start = prompt.tolist(), max(0, prompt_len - block)
    with torch.no_grad():
        for _ in range(150):
            if len(history) - start > block:
                start = len(history) - keep
            logits = model(torch.tensor([history[start:]]))[0][0, -1]
            history.append(int(logits.argmax()))
    assert got == history[prompt_len:]


def test_streamed_pieces_join_to_the_decoded_text(model, tokenizer):
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=7)
    pieces = list(generate_text(model, tokenizer, "def ", params, stop_at_eot=False))
    tokens = list(generate_tokens(model, tokenizer.encode("def "), params))
    assert "".join(pieces) == tokenizer.decode(tokens)


def test_stop_sequence_cuts_the_text_before_it(model, tokenizer):
    params = SamplingParams(max_new_tokens=40, temperature=0)
    full = "".join(generate_text(model, tokenizer, "import ", params, stop_at_eot=False))
    stop = full[10:13]
    cut = "".join(generate_text(model, tokenizer, "import ", params, stop=[stop], stop_at_eot=False))
    assert cut == full[: full.index(stop)]
    assert stop not in cut


def test_logit_bias_and_penalties_follow_openais_formula():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    params = SamplingParams(logit_bias={0: 5.0, 3: -100.0}, frequency_penalty=0.5, presence_penalty=1.0)
    sampler = SequenceSampler(params, 4)
    for token in (1, 1, 2):  # counts [0, 2, 1, 0]
        sampler.observe(token)
    got = sampler.adjust(logits[0])
    torch.testing.assert_close(got, torch.tensor([6.0, 2.0 - 1.0 - 1.0, 3.0 - 0.5 - 1.0, -96.0]))
    greedy = SequenceSampler(SamplingParams(temperature=0, logit_bias={0: 100.0}), 4)
    assert int(sample_rows(logits, [greedy])) == 0
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        SequenceSampler(SamplingParams(logit_bias={9: 1.0}), 4)
    with pytest.raises(GenerationError, match="presence_penalty"):
        SamplingParams(presence_penalty=3.0)


def test_frequency_penalty_discourages_repeats(model):
    plain = list(generate_tokens(model, [1, 2, 3], SamplingParams(max_new_tokens=40, temperature=0)))
    penalised = list(generate_tokens(model, [1, 2, 3], SamplingParams(max_new_tokens=40, temperature=0, frequency_penalty=2.0)))
    assert len(set(penalised)) > len(set(plain))


def test_text_stream_holds_back_stop_prefixes_and_partial_utf8(tokenizer):
    stream = TextStream(tokenizer, stop=["END"])
    pieces = [stream.push(t) for t in tokenizer.encode("abc EN")]
    assert "".join(pieces) == "abc " and not stream.stopped  # "EN" could start "END"
    assert stream.push(tokenizer.encode("D")[0]) == "" and stream.stopped
    assert stream.flush() == ""
    stream = TextStream(tokenizer)
    ids = tokenizer.encode("é€")  # byte-fallback ids for characters the char vocab lacks
    shown = "".join(stream.push(t) for t in ids) + stream.flush()
    assert shown == "é€" and "\ufffd" not in shown


def test_sample_rows_keeps_exactly_the_tokens_filter_logits_keeps():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    params = [SamplingParams(temperature=0.7, top_k=5), SamplingParams(top_p=0.6),
              SamplingParams(temperature=1.3, top_k=10, top_p=0.8), SamplingParams(temperature=0)]
    samplers = [SequenceSampler(p, 50) for p in params]
    seen = [set() for _ in params]
    for _ in range(400):
        for row, token in enumerate(sample_rows(logits, samplers).tolist()):
            seen[row].add(token)
    for row, p in enumerate(params[:3]):
        allowed = set(torch.nonzero(filter_logits(logits[row : row + 1], p)[0] > float("-inf")).flatten().tolist())
        assert seen[row] == allowed  # 400 draws reach every kept token here, and nothing else
    assert seen[3] == {int(logits[3].argmax())}


def test_sample_rows_draws_in_proportion_to_the_probabilities():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    samplers = [SequenceSampler(SamplingParams(seed=seed), 3) for seed in range(1, 31)]  # 30 rows x 100 steps
    draws = torch.cat([sample_rows(logits.expand(30, 3), samplers) for _ in range(100)])
    counts = torch.bincount(draws, minlength=3)
    torch.testing.assert_close(counts / 3000, torch.tensor([0.5, 0.3, 0.2]), atol=0.03, rtol=0)


def test_a_seeded_row_samples_the_same_alone_or_beside_others():
    torch.manual_seed(0)
    logits = torch.randn(20, 3, 30)
    params = SamplingParams(seed=5, top_p=0.9)
    alone = SequenceSampler(params, 30)
    together = [SequenceSampler(SamplingParams(temperature=0), 30), SequenceSampler(params, 30),
                SequenceSampler(SamplingParams(seed=9, top_k=3), 30)]
    for step in logits:
        assert sample_rows(step[1:2], [alone]).item() == sample_rows(step, together)[1].item()


def test_text_stream_decodes_incrementally_to_the_full_decode():
    from gptlab.data.tokenizer import train_bpe_tokenizer

    text = "naïve café — 東京 🙂 and plain ASCII; ümlaut\n" * 3
    tokenizer = train_bpe_tokenizer([text], vocab_size=300)
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids]
    assert "".join(pieces) + stream.flush() == tokenizer.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.slow
@needs_compiler
def test_compiled_decoding_matches_eager_and_follows_weight_changes():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()
    prompt = list(range(18))  # 18 + 30 tokens: the last one lands in the cache's last slot
    greedy = SamplingParams(max_new_tokens=30, temperature=0)
    sampled = SamplingParams(max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.95, seed=7)
    before = list(generate_tokens(model, prompt, greedy, compile=True))
    assert before == list(generate_tokens(model, prompt, greedy))
    assert list(generate_tokens(model, prompt, sampled, compile=True)) == list(generate_tokens(model, prompt, sampled))
    # the compiled step bakes the weights in: changing them in place must not reuse it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after = list(generate_tokens(model, prompt, greedy, compile=True))
    assert after == list(generate_tokens(model, prompt, greedy))
    assert after != before
    # what was compiled for a model does not keep it alive
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("shape", [
    dict(mlp="swiglu", n_kv_head=2, tie_embeddings=False),  # Llama
    dict(qk_norm=True, bigram_buckets=37),  # the time-to-quality shape: its cache keeps the token ids
], ids=["llama", "bigram"])
def test_compiled_decoding_of_the_family_matches_eager(shape: dict):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32, norm="rmsnorm",
                          positions="rotary", bias=False, **shape)).eval()
    greedy = SamplingParams(max_new_tokens=40, temperature=0)  # 12 + 40 > 32: the window slides once
    prompt = list(range(12))
    assert list(generate_tokens(model, prompt, greedy, compile=True)) == list(generate_tokens(model, prompt, greedy))


@needs_compiler
def test_compiled_steps_are_kept_per_weights():
    """Building the compiled step is lazy (compiling waits for its first call), so this runs without compiling."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    first = compiled_decode_step(model)
    assert compiled_decode_step(model).func is first.func  # same weights: the same compiled step
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(2)
    assert compiled_decode_step(model).func is not first.func
    forget(model)
    with torch.inference_mode():  # weights without version counters still get a step
        frozen = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
        assert compiled_decode_step(frozen).func is compiled_decode_step(frozen).func


def test_compiled_decoding_without_a_cpp_compiler_is_a_clear_error(model, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    model.train()
    try:
        with pytest.raises(GenerationError, match="C\\+\\+ compiler"):
            next(generate_tokens(model, [1, 2], SamplingParams(max_new_tokens=3), compile=True))
        assert model.training  # the failed call left the model as it was
        # one new token comes from the prefill alone: nothing to compile, no compiler needed
        assert len(list(generate_tokens(model, [1, 2], SamplingParams(max_new_tokens=1), compile=True))) == 1
    finally:
        model.eval()


def test_min_p_keeps_the_tokens_at_least_min_p_times_as_likely_as_the_best():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda params: torch.isfinite(filter_logits(logits, params))[0].tolist()
    assert kept(SamplingParams(min_p=0.3)) == [True, True, True, False, False]  # p >= 0.15
    assert kept(SamplingParams(min_p=0.31)) == [True, True, False, False, False]
    assert kept(SamplingParams(min_p=0.0)) == [True] * 5
    # the batched path keeps the same set, with top-k and temperature beside it
    params = [SamplingParams(min_p=0.3, seed=0), SamplingParams(min_p=0.5, temperature=2.0, top_k=4, seed=1)]
    samplers = [SequenceSampler(p, 5) for p in params]
    seen = [set(), set()]
    for _ in range(300):
        for row, token in enumerate(sample_rows(logits.expand(2, 5), samplers).tolist()):
            seen[row].add(token)
    for row, p in enumerate(params):
        assert seen[row] == set(torch.nonzero(torch.isfinite(filter_logits(logits, p))[0]).flatten().tolist())
    with pytest.raises(GenerationError, match="min_p"):
        SamplingParams(min_p=1.5)


def test_repetition_penalty_is_ctrls_over_prompt_and_output():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    sampler = SequenceSampler(SamplingParams(repetition_penalty=2.0), 4, prompt_ids=[0, 1])
    assert sampler.adjust(logits).tolist() == [1.0, -4.0, 1.0, 0.5]  # seen: divided if > 0, else multiplied
    sampler.observe(3)
    assert sampler.adjust(logits).tolist() == [1.0, -4.0, 1.0, 0.25]
    # greedy decoding with a strong penalty never repeats a token while unseen ones are left
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    plain = list(generate_tokens(model, [1, 2, 3], SamplingParams(max_new_tokens=20, temperature=0)))
    tokens = list(generate_tokens(model, [1, 2, 3], SamplingParams(max_new_tokens=20, temperature=0,
                                                                   repetition_penalty=1e4)))
    assert len(set(plain)) < 20  # without the penalty the model repeats itself
    assert len(set(tokens)) == 20 and not {1, 2, 3} & set(tokens)
    with pytest.raises(GenerationError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=0)
