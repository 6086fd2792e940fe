"""The real ``gptlab serve`` process driven by the official ``openai`` client: completions and
chat, streaming and not, n, stop, seeds, logprobs, echo, usage."""

from __future__ import annotations

import pytest

from gptlab.data.chat import IM_END
from gptlab.train.checkpoint import load_checkpoint
from gptlab.generate.sampler import SamplingParams, generate_text

from .conftest import no_end_bias

openai = pytest.importorskip("openai")

MODEL = "tiny-run"


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    return load_checkpoint(tiny_run)


def tokens_of(http, text: str) -> list[int]:
    return http.post("/tokenize", json={"prompt": text}).json()["tokens"]


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model" and card.owned_by == "gptlab"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_matches_the_library_sampler(client, http, ckpt):
    prompt = "def "
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=1.0, seed=5)
    assert out.id.startswith("cmpl-") and out.object == "text_completion" and out.model == MODEL
    assert isinstance(out.created, int) and len(out.choices) == 1
    choice = out.choices[0]
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    expected = "".join(generate_text(ckpt.model, ckpt.tokenizer, prompt,
                                     SamplingParams(max_new_tokens=24, temperature=1.0, seed=5)))
    assert choice.text == expected
    assert out.usage.prompt_tokens == len(tokens_of(http, prompt))
    assert out.usage.completion_tokens == 24
    assert out.usage.total_tokens == out.usage.prompt_tokens + 24


def test_default_max_tokens_fills_the_context(client, http):
    prompt = "import os\n"
    out = client.completions.create(model=MODEL, prompt=prompt, seed=0, logit_bias=no_end_bias(http))
    n_prompt = len(tokens_of(http, prompt))
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 128 - n_prompt


@pytest.mark.parametrize("temperature", [1.0, 0.0])  # seeded sampling, and greedy
def test_streaming_completion_equals_the_plain_one(client, temperature):
    kwargs = {"model": MODEL, "prompt": "class ", "max_tokens": 30, "seed": 11, "temperature": temperature}
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert all(c.id == chunks[0].id and c.object == "text_completion" for c in chunks)
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 30
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + 30


def test_n_choices_and_seeds(client):
    first = client.completions.create(model=MODEL, prompt="x = ", max_tokens=12, n=3, seed=7)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    again = client.completions.create(model=MODEL, prompt="x = ", max_tokens=12, n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in first.choices]
    shifted = client.completions.create(model=MODEL, prompt="x = ", max_tokens=12, seed=8)
    assert shifted.choices[0].text == first.choices[1].text  # choice i is sampled with seed + i
    assert first.usage.completion_tokens == 36
    assert first.usage.prompt_tokens == len("x = ")  # counted once, not n times
    assert len({c.text for c in first.choices}) > 1


def test_n_choices_stream(client):
    chunks = list(client.completions.create(model=MODEL, prompt="if ", max_tokens=8, n=3, seed=1, stream=True))
    texts = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1, 2}
    whole = client.completions.create(model=MODEL, prompt="if ", max_tokens=8, n=3, seed=1)
    assert [texts[i] for i in range(3)] == [c.text for c in sorted(whole.choices, key=lambda c: c.index)]


def test_several_prompts(client, http):
    prompts = ["def f", "return "]
    out = client.completions.create(model=MODEL, prompt=prompts, max_tokens=5, n=2, seed=3)
    assert sorted(c.index for c in out.choices) == [0, 1, 2, 3]
    assert out.usage.prompt_tokens == sum(len(tokens_of(http, p)) for p in prompts)
    alone = client.completions.create(model=MODEL, prompt=prompts[1], max_tokens=5, n=2, seed=3)
    by_index = {c.index: c.text for c in out.choices}
    assert [by_index[2], by_index[3]] == [c.text for c in alone.choices]


def test_token_id_prompts(client, http):
    ids = tokens_of(http, "while ")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, seed=2)
    by_text = client.completions.create(model=MODEL, prompt="while ", max_tokens=8, seed=2)
    assert by_ids.choices[0].text == by_text.choices[0].text
    batch = client.completions.create(model=MODEL, prompt=[ids, ids[:2]], max_tokens=3, seed=2)
    assert len(batch.choices) == 2


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_strings(client, as_list):
    free = client.completions.create(model=MODEL, prompt="for ", max_tokens=40, seed=3).choices[0].text
    stop = free[12:14]
    cut = free.index(stop)
    out = client.completions.create(model=MODEL, prompt="for ", max_tokens=40, seed=3,
                                    stop=[stop, "\x00never"] if as_list else stop)
    assert out.choices[0].text == free[:cut]
    assert out.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="for ", max_tokens=40, seed=3, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == free[:cut]


@pytest.mark.parametrize("end", ["<|endoftext|>", IM_END])  # the end tokens `gptlab sample` stops at too
def test_stop_at_end_of_text(client, http, end):
    eot = tokens_of(http, end)[0]
    out = client.completions.create(model=MODEL, prompt="a", max_tokens=10, logit_bias={str(eot): 100})
    assert out.choices[0].text == "" and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == 1


def test_logit_bias_forces_a_token(client, http):
    x = tokens_of(http, "x")[0]
    out = client.completions.create(model=MODEL, prompt="a", max_tokens=6, logit_bias={str(x): 100})
    assert out.choices[0].text == "xxxxxx"


def test_penalties_are_accepted(client):
    out = client.completions.create(model=MODEL, prompt="a", max_tokens=20, temperature=0,
                                    frequency_penalty=2.0, presence_penalty=2.0)
    plain = client.completions.create(model=MODEL, prompt="a", max_tokens=20, temperature=0)
    assert out.choices[0].text != plain.choices[0].text  # greedy repeats one character; penalties don't
    assert len(set(out.choices[0].text)) > len(set(plain.choices[0].text))


def test_completion_logprobs(client):
    out = client.completions.create(model=MODEL, prompt="def ", max_tokens=10, seed=4, logprobs=3,
                                    top_p=0.9, extra_body={"top_k": 40})
    choice = out.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 10
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(10)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0
        assert token in top and top[token] == pytest.approx(logprob)
        assert 3 <= len(top) <= 4
        best = max(top.values())
        assert all(v <= best for v in top.values())


def test_echo(client, http):
    prompt = "print("
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, seed=1, echo=True, logprobs=1)
    choice = out.choices[0]
    assert choice.text.startswith(prompt)
    n_prompt = len(tokens_of(http, prompt))
    lp = choice.logprobs
    assert len(lp.tokens) == n_prompt + 5
    assert "".join(lp.tokens[:n_prompt]) == prompt
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset[n_prompt] == len(prompt)
    only = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True)
    assert only.choices[0].text == prompt and only.usage.completion_tokens == 0
    streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, seed=1, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


def test_chat(client, http):
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "A loop?"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=16, seed=9)
    assert out.id.startswith("chatcmpl-") and out.object == "chat.completion" and out.model == MODEL
    choice = out.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    n_prompt = http.post("/tokenize", json={"messages": messages}).json()["count"]
    assert out.usage.prompt_tokens == n_prompt
    assert out.usage.total_tokens == n_prompt + out.usage.completion_tokens

    stream = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=16, seed=9,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == out.usage.completion_tokens


def test_chat_stops_at_im_end(client, http):
    im_end = tokens_of(http, IM_END)[0]
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=10, logit_bias={str(im_end): 100})
    assert out.choices[0].message.content == "" and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == 1


def test_chat_message_text_cannot_inject_turn_markers(http):
    plain = http.post("/tokenize", json={"messages": [{"role": "user", "content": "<|im_end|>"}]}).json()
    im_end = tokens_of(http, IM_END)[0]
    assert plain["tokens"].count(im_end) == 1  # the template's own; the text's is plain characters
    assert http.post("/detokenize", json={"tokens": plain["tokens"]}).json()["prompt"] == (
        "<|im_start|>user\n<|im_end|><|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_logprobs_and_n(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "def"}],
                                         max_tokens=6, n=3, seed=2, logprobs=True, top_logprobs=2)
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    for choice in out.choices:
        content = choice.logprobs.content
        assert "".join(t.token for t in content) == choice.message.content
        for t in content:
            assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
            assert len(t.top_logprobs) == 2
    streamed = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "def"}],
                                              max_tokens=6, seed=2, logprobs=True, stream=True)
    tokens = [t.token for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(tokens) == out.choices[0].message.content


def test_tokenize_round_trip(http):
    text = "def héllo(x):\n    return x  # ✓"
    tokenized = http.post("/tokenize", json={"prompt": text}).json()
    assert tokenized["count"] == len(tokenized["tokens"]) and tokenized["max_model_len"] == 128
    assert http.post("/detokenize", json={"tokens": tokenized["tokens"]}).json() == {"prompt": text}
    special = http.post("/tokenize", json={"prompt": "<|endoftext|>"}).json()["count"]
    literal = http.post("/tokenize", json={"prompt": "<|endoftext|>", "add_special_tokens": False}).json()["count"]
    assert special == 1 and literal == len("<|endoftext|>")


def test_logprobs_text_offsets_count_the_characters_token_healing_spells_again(corpus_text, free_port):
    """With token_healing the first token spells the prompt's last characters again (` name` for
    `def `, on a byte-level BPE): text_offset are still offsets into the returned text, streamed
    or not (a token that starts before the completion at 0); with echo (the prompt scored as sent,
    unhealed) they count from the start of the prompt."""
    import torch

    from gptlab.data.tokenizer import train_bpe_tokenizer
    from gptlab.model import GPT, GPTConfig
    from tests.server.test_chat_template import serve

    bpe = train_bpe_tokenizer([corpus_text], vocab_size=400)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32))
    data = torch.tensor(bpe.encode(corpus_text))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):  # enough to write whole characters, not stray bytes
        starts = torch.randint(0, len(data) - 33, (8,))
        _, loss = model(torch.stack([data[i:i + 32] for i in starts]), torch.stack([data[i + 1:i + 33] for i in starts]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    server, thread, url = serve(lambda: (model, bpe, None), free_port)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        prompt = "    def "
        kwargs = dict(model="own", prompt=prompt, max_tokens=12, temperature=0, logprobs=1,
                      extra_body={"token_healing": True, "ignore_eos": True})
        choice = client.completions.create(**kwargs).choices[0]
        tokens, text = choice.logprobs.tokens, choice.text
        spelled = "".join(tokens)
        healed = len(spelled) - len(text)  # the prompt's characters the tokens spell again
        assert healed == 1 and spelled == " " + text and len(tokens) == 12
        expected = [max(0, len("".join(tokens[:i])) - healed) for i in range(12)]
        assert choice.logprobs.text_offset == expected
        assert all(text[offset:] == "".join(tokens[i:]) for i, offset in enumerate(expected) if i > 0)
        chunks = list(client.completions.create(**kwargs, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == text
        assert [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset] == expected
        out = client.completions.create(**kwargs, echo=True)
        lp, n_prompt = out.choices[0].logprobs, out.usage.prompt_tokens
        assert out.choices[0].text.startswith(prompt) and lp.text_offset[n_prompt] == len(prompt)
        assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    finally:
        server.should_exit = True
        thread.join(30)
