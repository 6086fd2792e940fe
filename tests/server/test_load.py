"""Load: two waves of 240 mixed requests at 32 concurrent clients against a real ``gptlab serve``,
some of them leaving early. No 5xx, every finished response well-formed, the engine back to
zero running and waiting afterwards, and the server's memory flat from one wave to the next."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptlab.server.protocol import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionResponse,
)

pytestmark = pytest.mark.slow

REQUESTS = 240
CONCURRENCY = 32
RSS_TOLERANCE = 32 * 2**20  # bytes the second wave may add


@pytest.fixture(scope="module")
def load_server(tiny_run, serve):
    return serve(tiny_run)  # the defaults: 16 sequences at once, 64 waiting


def disconnected_requests(url: str) -> float:
    """Plain requests the server cancelled because their client left (status 499 in the metrics)."""
    text = httpx.get(url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "gptlab_http_requests_total" and s.labels.get("status") == "499")


def engine_gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name in ("gptlab_requests_running", "gptlab_queue_depth")}


async def plain(client: httpx.AsyncClient, rng: random.Random, outcomes: list[str]) -> None:
    chat = rng.random() < 0.5
    n = rng.choice([1, 1, 2])
    body = {"max_tokens": rng.randint(4, 48), "n": n, "seed": rng.randint(0, 10**6)}
    if chat:
        body["messages"] = [{"role": "user", "content": "hello " * rng.randint(1, 5)}]
    else:
        body["prompt"] = "def " * rng.randint(1, 8)
    response = await client.post("/v1/chat/completions" if chat else "/v1/completions", json=body)
    outcomes.append(str(response.status_code))
    if response.status_code != 200:
        assert response.status_code == 429, response.text
        return
    model = ChatCompletionResponse if chat else CompletionResponse
    parsed = model.model_validate(response.json())
    assert sorted(c.index for c in parsed.choices) == list(range(n))
    assert all(c.finish_reason in ("stop", "length") for c in parsed.choices)
    assert parsed.usage is not None and parsed.usage.completion_tokens <= n * body["max_tokens"]


async def streamed(client: httpx.AsyncClient, rng: random.Random, outcomes: list[str], leave_after: int | None) -> None:
    chat = rng.random() < 0.5
    body = {"max_tokens": rng.randint(8, 64), "stream": True, "seed": rng.randint(0, 10**6),
            "stream_options": {"include_usage": True}}
    if chat:
        body.update(messages=[{"role": "user", "content": "write"}], logprobs=True, top_logprobs=2)
    else:
        body.update(prompt="import ", logprobs=2)
    url = "/v1/chat/completions" if chat else "/v1/completions"
    async with client.stream("POST", url, json=body) as response:
        outcomes.append(str(response.status_code))
        if response.status_code != 200:
            assert response.status_code == 429
            return
        frames = []
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            frames.append(line[6:])
            if leave_after is not None and len(frames) >= leave_after:
                outcomes.append("left")
                return  # closing the stream mid-way: the server must free the slot
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert not any("error" in c for c in chunks), chunks
    model = ChatCompletionChunk if chat else CompletionResponse
    parsed = [model.model_validate(c) for c in chunks]
    assert parsed[-1].choices == [] and parsed[-1].usage is not None
    assert any(c.choices and c.choices[0].finish_reason for c in parsed[:-1])


async def impatient(client: httpx.AsyncClient, outcomes: list[str]) -> None:
    """A non-streaming request whose client gives up before the answer."""
    try:
        await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 100}, timeout=0.05)
        outcomes.append("200")
    except httpx.TimeoutException:
        outcomes.append("left")


async def wave(url: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    outcomes: list[str] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(i: int) -> None:
            async with gate:
                kind = i % 10
                if kind < 4:
                    await plain(client, rng, outcomes)
                elif kind < 7:
                    await streamed(client, rng, outcomes, leave_after=None)
                elif kind < 9:
                    await streamed(client, rng, outcomes, leave_after=rng.randint(1, 4))
                else:
                    await impatient(client, outcomes)

        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    return outcomes


def settle(url: str, timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        gauges = engine_gauges(url)
        if (gauges["gptlab_requests_running"] == 0 and gauges["gptlab_queue_depth"] == 0) or \
                time.monotonic() > deadline:
            return gauges
        time.sleep(0.1)


def test_two_waves_of_mixed_load(load_server):
    url = load_server.url
    first = asyncio.run(wave(url, seed=1))
    assert not [o for o in first if o.startswith("5")], first
    assert first.count("left") >= REQUESTS // 10, "some clients should have left early"
    assert disconnected_requests(url) >= 1, "an impatient client's request was not cancelled"
    assert settle(url) == {"gptlab_requests_running": 0.0, "gptlab_queue_depth": 0.0}
    rss_after_first = load_server.rss_bytes()

    second = asyncio.run(wave(url, seed=2))
    assert not [o for o in second if o.startswith("5")], second
    assert settle(url) == {"gptlab_requests_running": 0.0, "gptlab_queue_depth": 0.0}
    rss_after_second = load_server.rss_bytes()
    assert rss_after_second - rss_after_first < RSS_TOLERANCE, (rss_after_first, rss_after_second)

    assert httpx.get(url + "/health").status_code == 200
    ok = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 5}).json()
    assert ok["usage"]["completion_tokens"] == 5
    assert "Traceback" not in load_server.log(), load_server.log()[-3000:]
