"""A strict OpenAI API on the real server, through the official ``openai`` client and raw HTTP:
what OpenAI refuses is a 400 naming the parameter; vLLM's sampling extras change what is generated
exactly as documented; ``HEAD /health``."""

from __future__ import annotations

import httpx
import pytest

from gptlab.generate.sampler import SamplingParams, generate_text
from gptlab.train.checkpoint import load_checkpoint

from .conftest import no_end_bias

openai = pytest.importorskip("openai")

MODEL = "tiny-run"


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    return load_checkpoint(tiny_run)


def refused(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("kwargs, param, code", [
    ({"extra_body": {"frobnicate": True}}, "frobnicate", "unknown_parameter"),
    ({"best_of": 2}, "best_of", "unsupported_parameter"),
    ({"extra_body": {"response_format": {"type": "json_object"}}}, "response_format", "unsupported_parameter"),
    ({"extra_body": {"tools": [{"type": "function", "function": {"name": "f"}}]}}, "tools", "unsupported_parameter"),
])
def test_the_openai_client_gets_a_400_for_what_is_not_supported(client, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="a", max_tokens=2, **kwargs)
    assert info.value.body["param"] == param and info.value.code == code


def test_chat_refuses_json_mode_and_tools(client):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="json_object") as info:
        client.chat.completions.create(model=MODEL, messages=msgs, response_format={"type": "json_object"})
    assert info.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=msgs, tools=[
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}])
    assert info.value.body["param"] == "tools"
    # what changes nothing is accepted, and an assistant message from a response goes back as it is
    out = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3,
                                         response_format={"type": "text"}, seed=1)
    again = client.chat.completions.create(model=MODEL, max_tokens=3, seed=1,
                                           messages=[*msgs, out.choices[0].message, {"role": "user", "content": "ok"}])
    assert again.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize("body, param", [
    ({"prompt": "a", "stream": "yes"}, "stream"),
    ({"prompt": "a", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 5.0}, "max_tokens"),
    ({"prompt": "a", "echo": 1}, "echo"),
    ({"prompt": 5}, "prompt"),
])
def test_json_types_are_strict(http, body, param):
    assert refused(http.post("/v1/completions", json=body))["param"] == param


def test_null_message_content_is_400(http):
    error = refused(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": None}]}))
    assert error["param"] == "messages" and "not null" in error["message"]


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/completions", b'{"prompt": "def \\ud800(x):", "max_tokens": 2}', "prompt"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\udc00"}]}', "messages"),
    ("/tokenize", b'{"prompt": "a\\ud83d"}', "prompt"),
])
def test_a_lone_surrogate_is_a_400_that_says_so(http, path, raw, param):
    error = refused(http.post(path, content=raw, headers={"Content-Type": "application/json"}))
    assert error["param"] == param and error["code"] == "invalid_unicode"
    assert "lone surrogate" in error["message"]
    # a well-formed pair in the same escapes is one character, and fine
    ok = http.post("/tokenize", content=b'{"prompt": "\\ud83d\\ude42"}', headers={"Content-Type": "application/json"})
    assert ok.status_code == 200


def test_a_too_long_prompt_names_the_prompt(client):
    with pytest.raises(openai.BadRequestError, match="maximum context length") as info:
        client.completions.create(model=MODEL, prompt="x" * 200, max_tokens=5)
    assert info.value.body["param"] == "prompt" and info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 200}], max_tokens=5)
    assert info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as info:  # the prompt fits; with max_tokens it does not
        client.completions.create(model=MODEL, prompt="abc", max_tokens=126)
    assert info.value.body["param"] == "max_tokens"


def test_head_health(server):
    response = httpx.head(server.url + "/health")
    assert response.status_code == 200 and response.content == b""


# -- vLLM's extras, on the real server -------------------------------------------------------


def greedy(client, prompt: str, max_tokens: int = 20, seed: int | None = None, **extra) -> tuple[str, str, int]:
    """Greedy, or seeded sampling at temperature 1 with a seed (the same draws up to any stop)."""
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, seed=seed,
                                    temperature=0 if seed is None else 1, extra_body=extra or None)
    return out.choices[0].text, out.choices[0].finish_reason, out.usage.completion_tokens


def test_min_p_one_keeps_only_the_most_likely_token(client):
    text, _, _ = greedy(client, "def ")
    for seed in (1, 2):
        sampled = client.completions.create(model=MODEL, prompt="def ", max_tokens=20, temperature=1.5, seed=seed,
                                            extra_body={"min_p": 1.0})
        assert sampled.choices[0].text == text
    plain = [client.completions.create(model=MODEL, prompt="def ", max_tokens=20, temperature=1.5, seed=s)
             .choices[0].text for s in (1, 2)]
    assert plain != [text, text]  # without min_p, this temperature wanders


def test_repetition_penalty_matches_the_library_sampler(client, ckpt):
    prompt = "    def "
    text, _, _ = greedy(client, prompt, 30, repetition_penalty=1.8)
    expected = "".join(generate_text(ckpt.model, ckpt.tokenizer, prompt,
                                     SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.8,
                                                    token_healing=False)))  # the server's default
    assert text == expected
    assert text != greedy(client, prompt, 30)[0]


def test_token_healing_is_opt_in_and_matches_the_library(client, http, ckpt):
    prompt = "    def "  # ends in a space, which a byte-level BPE rarely ends a token with
    for healing in (False, True):
        text, _, _ = greedy(client, prompt, 20, token_healing=healing)
        expected = "".join(generate_text(ckpt.model, ckpt.tokenizer, prompt,
                                         SamplingParams(max_new_tokens=20, temperature=0, token_healing=healing)))
        assert text == expected
    assert greedy(client, prompt, 20)[0] == greedy(client, prompt, 20, token_healing=False)[0]
    assert refused(http.post("/v1/completions", json={"prompt": "a", "token_healing": "yes"}))["param"] == "token_healing"


def eot_of(http) -> int:
    return http.post("/tokenize", json={"prompt": "<|endoftext|>"}).json()["tokens"][0]


def test_min_tokens_and_ignore_eos(client, http):
    eot = str(eot_of(http))
    text, finish, used = greedy(client, "x", 10, logit_bias={eot: 100})
    assert (text, finish, used) == ("", "stop", 1)  # the end-of-text token comes first
    text, finish, used = greedy(client, "x", 10, logit_bias={eot: 100}, min_tokens=4)
    assert finish == "stop" and used == 5 and len(text) == 4  # four characters, then the end
    text, finish, used = greedy(client, "x", 10, logit_bias={eot: 100}, ignore_eos=True)
    assert finish == "length" and used == 10
    with pytest.raises(openai.BadRequestError) as info:
        greedy(client, "x", 3, min_tokens=4)
    assert info.value.body["param"] == "min_tokens"


def test_stop_token_ids_and_include_stop_str_in_output(client, http):
    no_end = no_end_bias(http)

    def sampled(**extra) -> tuple[str, str]:  # seeded: the same draws up to wherever it stops
        return greedy(client, "def ", 30, seed=4, logit_bias=no_end, **extra)[:2]

    text, finish = sampled()
    assert finish == "length"
    cut = next(i for i in range(3, len(text)) if text[i] not in text[:i])  # a character's first appearance
    stop_id = http.post("/tokenize", json={"prompt": text[cut]}).json()["tokens"]
    assert len(stop_id) == 1
    assert sampled(stop_token_ids=stop_id) == (text[:cut], "stop")
    assert sampled(stop_token_ids=stop_id, include_stop_str_in_output=True) == (text[: cut + 1], "stop")
    stop = text[cut : cut + 2]
    assert sampled(stop=[stop]) == (text[:cut], "stop")
    assert sampled(stop=[stop], include_stop_str_in_output=True) == (text[: cut + 2], "stop")
    with pytest.raises(openai.BadRequestError) as info:
        greedy(client, "def ", 3, stop_token_ids=[10**6])
    assert info.value.body["param"] == "stop_token_ids"


def test_extras_stream_the_same_text(client):
    kwargs = {"model": MODEL, "prompt": "class ", "max_tokens": 25, "temperature": 0.9, "seed": 3,
              "extra_body": {"min_p": 0.2, "repetition_penalty": 1.3, "min_tokens": 5}}
    whole = client.completions.create(**kwargs).choices[0].text
    assert "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True) if c.choices) == whole
