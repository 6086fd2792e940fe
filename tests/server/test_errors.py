"""Errors in OpenAI's shape, as the ``openai`` client's typed exceptions; auth; limits; health."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

MODEL = "tiny-run"


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": 3.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"n": 0}, "n"),
    ({"logprobs": 6}, "logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"1": 101}}, "logit_bias"),
    ({"logit_bias": {"99999": 1}}, "logit_bias"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": 9}, "n"),  # more than --max-choices
    ({"suffix": "x"}, "suffix"),
])
def test_invalid_parameters_are_400(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="a", **{"max_tokens": 2, **kwargs})
    assert info.value.status_code == 400
    assert info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error"


def test_context_length_is_a_400_that_says_so(client):
    with pytest.raises(openai.BadRequestError, match="maximum context length is 128 tokens") as info:
        client.completions.create(model=MODEL, prompt="abc", max_tokens=126)
    assert info.value.code == "context_length_exceeded"
    client.completions.create(model=MODEL, prompt="abc", max_tokens=125)  # exactly fits
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.completions.create(model=MODEL, prompt="x" * 200)  # max_tokens omitted, no room left
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=500)


def test_chat_parameter_errors(client):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="top_logprobs requires logprobs"):
        client.chat.completions.create(model=MODEL, messages=msgs, top_logprobs=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=msgs, top_logprobs=21, logprobs=True)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="a", max_tokens=1)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])


def test_malformed_requests_are_400_never_422(http):
    assert_openai_error(http.post("/v1/completions", content=b"{not json",
                                  headers={"Content-Type": "application/json"}), 400)
    assert_openai_error(http.post("/v1/completions", json=[1, 2]), 400)
    assert_openai_error(http.post("/v1/completions", json={}), 400)
    assert_openai_error(http.post("/v1/completions", json={"prompt": {"a": 1}}), 400)
    assert_openai_error(http.post("/v1/completions", json={"prompt": "a", "max_tokens": "many"}), 400)
    assert_openai_error(http.post("/v1/completions", json={"prompt": "a", "temperature": None, "seed": 2**70}), 400)
    assert_openai_error(http.post("/v1/chat/completions", json={"messages": "hi"}), 400)
    assert_openai_error(http.post("/detokenize", json={"tokens": [10**6]}), 400)
    assert_openai_error(http.post("/tokenize", json={"prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
                        400)


def test_routes_and_methods(http):
    assert assert_openai_error(http.get("/v1/nothing"), 404)["code"] == "not_found"
    assert_openai_error(http.get("/nothing/at/all"), 404)
    error = assert_openai_error(http.get("/v1/completions"), 405)
    assert error["code"] == "method_not_allowed"
    assert_openai_error(http.delete("/v1/models"), 405)


def test_api_key(server):
    assert server.api_key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {server.api_key}"}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/tokenize"),
                             ("POST", "/detokenize"), ("GET", "/v1/does-not-exist")):
            response = httpx.request(method, server.url + path, headers=headers, json={"prompt": "a"})
            assert assert_openai_error(response, 401)["code"] == "invalid_api_key"
    with openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.models.list()
    for open_path in ("/health", "/metrics", "/openapi.json", "/"):
        assert httpx.get(server.url + open_path).status_code == 200


def test_body_size_limit(http):
    big = {"prompt": "a" * 70_000}
    assert assert_openai_error(http.post("/v1/completions", json=big), 413)["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit applies to the streamed body
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    response = http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert_openai_error(response, 413)


def test_prompt_length_limit(client):
    with pytest.raises(openai.BadRequestError, match="over the limit of 2000") as info:
        client.completions.create(model=MODEL, prompt="a" * 2001, max_tokens=1)
    assert info.value.code == "prompt_too_long"


def test_full_queue_is_429(server):
    """The shared server runs 4 sequences and queues 4 more: a burst of 16 overflows it."""

    async def burst() -> list[object]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0) as c:
            calls = [c.completions.create(model=MODEL, prompt="a", max_tokens=100, seed=i) for i in range(16)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    done = [r for r in results if not isinstance(r, Exception)]
    assert limited and done, results
    assert len(limited) + len(done) == 16, [r for r in results if isinstance(r, Exception)]
    assert limited[0].code == "queue_full"
    assert all(0 < r.usage.completion_tokens <= 100 for r in done)
    assert httpx.get(server.url + "/health").status_code == 200


def test_health_is_503_while_loading(tiny_run, free_port):
    """An in-process server whose loader waits: /health is 503, the API 503, then both ready."""
    import uvicorn

    from gptlab.train.checkpoint import load_checkpoint
    from gptlab.server.app import create_app
    from gptlab.server.state import ServerSettings

    release = threading.Event()

    def slow_load():
        release.wait(30)
        ckpt = load_checkpoint(tiny_run)
        return ckpt.model, ckpt.tokenizer

    port = free_port
    server = uvicorn.Server(uvicorn.Config(create_app(ServerSettings(model_name="slow"), slow_load),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.get(url + "/health")
        assert response.status_code == 503 and response.json()["status"] == "loading"
        error = assert_openai_error(httpx.post(url + "/v1/completions", json={"prompt": "a"}), 503)
        assert error["code"] == "model_not_ready"
        release.set()
        while httpx.get(url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json() == {"status": "ok", "detail": None}
        out = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}).json()
        assert out["model"] == "slow" and out["usage"]["completion_tokens"] == 3
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)
