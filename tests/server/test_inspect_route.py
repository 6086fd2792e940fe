"""``POST /v1/inspect`` on the real ``gptlab serve`` process: its attention maps and probabilities
equal :mod:`gptlab.inspect.views` on the same checkpoint, its errors are OpenAI-shaped 400s and 401s, and
generation running beside it is not changed by it."""

from __future__ import annotations

import math
import threading

import httpx
import numpy as np
import pytest
import torch

from gptlab.inspect import views as gi
from gptlab.train.checkpoint import load_checkpoint

from .conftest import API_KEY, BLOCK_SIZE

MODEL = "tiny-run"
TEXT = "def wrap(text, width=70):\n    return text"
ROUNDING = 0.5e-4 + 1e-9  # weights come rounded to 4 decimals


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    return load_checkpoint(tiny_run)


def inspect_ok(http: httpx.Client, **body) -> dict:
    response = http.post("/v1/inspect", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]


def test_attention_equals_the_library(http, ckpt):
    out = inspect_ok(http, model=MODEL, text=TEXT, views=["attention"])
    assert out["object"] == "inspection" and out["model"] == MODEL and out["probabilities"] is None
    expected = gi.attention(ckpt.model, ckpt.tokenizer, TEXT)
    assert out["token_ids"] == expected.token_ids
    assert "".join(out["tokens"]) == TEXT  # a char tokenizer: each token is one character
    att = out["attention"]
    L, H, T = expected.n_layer, expected.n_head, len(expected.token_ids)
    assert (att["n_layer"], att["n_head"], att["layers"], att["heads"], att["head_mean"]) == (
        L, H, list(range(L)), list(range(H)), False)
    weights = np.array(att["weights"])
    assert weights.shape == (L, H, T, T)
    assert np.all(weights == weights.round(4))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=T * ROUNDING)  # every row is a distribution
    assert np.all(np.triu(weights, k=1) == 0)  # a token never attends to later tokens
    np.testing.assert_allclose(weights, expected.weights, atol=ROUNDING, rtol=0)


def test_layer_and_head_filters(http, ckpt):
    expected = gi.attention(ckpt.model, ckpt.tokenizer, TEXT).weights  # (L, H, T, T)
    one = inspect_ok(http, text=TEXT, views=["attention"], layer=1, head=0)["attention"]
    assert (one["layers"], one["heads"], one["head_mean"]) == ([1], [0], False)
    np.testing.assert_allclose(np.array(one["weights"]), expected[1:2, 0:1], atol=ROUNDING, rtol=0)

    mean = inspect_ok(http, prompt=TEXT, views=["attention"], layer=0, head="mean")["attention"]
    assert (mean["layers"], mean["heads"], mean["head_mean"]) == ([0], [0, 1], True)
    np.testing.assert_allclose(np.array(mean["weights"])[0, 0], expected[0].mean(0), atol=ROUNDING, rtol=0)

    heads = inspect_ok(http, text=TEXT, views=["attention"], head=1)["attention"]
    assert np.array(heads["weights"]).shape == (2, 1, len(TEXT), len(TEXT))


def test_probabilities_are_the_softmax_of_the_logits(http, ckpt):
    out = inspect_ok(http, text=TEXT, views=["probabilities"], top_k=7)
    assert out["attention"] is None
    probs = out["probabilities"]
    ids = out["token_ids"]
    positions = probs["positions"]
    assert [p["position"] for p in positions] == list(range(1, len(ids)))
    assert [p["token_id"] for p in positions] == ids[1:]

    surprise = gi.surprisal(ckpt.model, ckpt.tokenizer, TEXT)
    np.testing.assert_allclose([p["prob"] for p in positions], surprise.probs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([p["surprisal_bits"] for p in positions], surprise.bits, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([p["logprob"] for p in positions], -surprise.nats, rtol=1e-6, atol=1e-9)
    assert probs["mean_surprisal_bits"] == pytest.approx(surprise.mean_bits, rel=1e-6)
    assert probs["perplexity"] == pytest.approx(surprise.perplexity, rel=1e-6)

    # the alternatives at each position: the top 7 of the softmax of the logits there
    with torch.no_grad():
        logits, _ = ckpt.model.eval()(torch.tensor([ids]))
    softmax = torch.softmax(logits[0].double(), dim=-1)  # (T, V)
    for p in positions:
        top = torch.topk(softmax[p["position"] - 1], 7)
        assert len(p["top"]) == 7
        assert [a["token_id"] for a in p["top"]] == top.indices.tolist()
        np.testing.assert_allclose([a["prob"] for a in p["top"]], top.values.numpy(), rtol=1e-6, atol=1e-9)
        if p["token_id"] in top.indices.tolist():
            assert any(a["token"] == p["token"] and a["prob"] == pytest.approx(p["prob"]) for a in p["top"])

    nxt = gi.next_token(ckpt.model, ckpt.tokenizer, TEXT, k=7)
    assert [a["token_id"] for a in probs["next_token"]] == nxt.top_ids
    assert [a["token"] for a in probs["next_token"]] == nxt.top_tokens
    np.testing.assert_allclose([a["prob"] for a in probs["next_token"]], nxt.top_probs, rtol=1e-6, atol=1e-9)


def test_defaults_and_a_one_token_text(http):
    out = inspect_ok(http, text="x")
    assert out["attention"]["weights"] == [[[[1.0]], [[1.0]]], [[[1.0]], [[1.0]]]]
    probs = out["probabilities"]
    assert probs["positions"] == [] and probs["mean_surprisal_bits"] is None and probs["perplexity"] is None
    assert len(probs["next_token"]) == 5  # top_k defaults to 5
    assert sum(a["prob"] for a in probs["next_token"]) <= 1 + 1e-9


def test_the_whole_context_fits(http, ckpt):
    text = ("    return text\n" * 20)[:BLOCK_SIZE]
    out = inspect_ok(http, text=text, views=["probabilities"], top_k=1)
    assert len(out["token_ids"]) == BLOCK_SIZE and len(out["probabilities"]["positions"]) == BLOCK_SIZE - 1
    surprise = gi.surprisal(ckpt.model, ckpt.tokenizer, text)
    np.testing.assert_allclose([p["prob"] for p in out["probabilities"]["positions"]], surprise.probs,
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("body, param, code", [
    ({"text": ""}, "text", None),
    ({"prompt": ""}, "prompt", None),
    ({"text": "x" * (BLOCK_SIZE + 1)}, "text", "context_length_exceeded"),
    ({"text": "x" * 2001}, "text", "prompt_too_long"),  # the server's --max-prompt-chars
    ({"text": "ab", "layer": 2}, "layer", "invalid_layer"),
    ({"text": "ab", "layer": -1}, "layer", None),
    ({"text": "ab", "head": 2}, "head", "invalid_head"),
    ({"text": "ab", "head": -1}, "head", None),
    ({"text": "ab", "head": "max"}, "head", None),
    ({"text": "ab", "top_k": 0}, "top_k", None),
    ({"text": "ab", "top_k": 21}, "top_k", None),
    ({"text": "ab", "views": []}, "views", None),
    ({"text": "ab", "views": ["logits"]}, "views", None),
    ({}, None, None),
    ({"text": "a", "prompt": "b"}, None, None),
])
def test_errors_are_openai_shaped_400s(http, body, param, code):
    error = assert_openai_error(http.post("/v1/inspect", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    if code == "context_length_exceeded":
        assert f"maximum context length is {BLOCK_SIZE} tokens" in error["message"]


def test_unknown_model_is_404(http):
    error = assert_openai_error(http.post("/v1/inspect", json={"model": "gpt-4", "text": "ab"}), 404, "model")
    assert error["code"] == "model_not_found"


def test_the_api_key_is_needed(server):
    url = server.url + "/v1/inspect"
    error = assert_openai_error(httpx.post(url, json={"text": "ab"}, timeout=30), 401)
    assert error["code"] == "invalid_api_key"
    wrong = httpx.post(url, json={"text": "ab"}, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert_openai_error(wrong, 401)


def test_documented_as_a_gptlab_extension(server):
    doc = httpx.get(server.url + "/openapi.json", timeout=30).json()
    operation = doc["paths"]["/v1/inspect"]["post"]
    assert operation["tags"] == ["gptlab"]
    assert "not part of the OpenAI API" in operation["description"]
    assert "T²" in operation["description"]
    assert "/v1/inspect" in doc["info"]["description"]
    request = doc["components"]["schemas"]["InspectRequest"]["properties"]
    assert request["top_k"]["maximum"] == 20 and request["top_k"]["minimum"] == 1


def test_generation_is_unchanged_while_inspect_calls_hammer_the_server(client, server, http):
    """Seeded completions give the same text with and without inspect calls running beside them, and
    the inspect answers stay right: the hooks run on the inspector's copy, never on the engine's model."""
    kwargs = {"model": MODEL, "prompt": "def ", "max_tokens": 48, "temperature": 1.0, "seed": 21,
              "logprobs": 2}
    alone = client.completions.create(**kwargs)
    reference = inspect_ok(http, text=TEXT)

    stop, running = threading.Event(), threading.Event()
    answers: list[dict] = []
    failures: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
            while not stop.is_set():
                response = c.post("/v1/inspect", json={"text": TEXT})
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                answers.append(response.json())
                running.set()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert running.wait(60), failures
        before = len(answers)
        busy = [client.completions.create(**kwargs) for _ in range(3)]
        during = len(answers) - before
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures
    assert during >= 2  # the inspect calls did run alongside the completions
    for out in busy:
        assert out.choices[0].text == alone.choices[0].text
        assert out.choices[0].logprobs.token_logprobs == alone.choices[0].logprobs.token_logprobs
    for answer in answers:
        assert answer == reference
    assert math.isfinite(reference["probabilities"]["perplexity"])
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
