"""``/metrics``: Prometheus text that prometheus_client's own parser reads, with request, token,
queue and latency metrics that move when the server works."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import no_end_bias


def scrape(url: str) -> dict[str, dict]:
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_move_with_work(server, http):
    before = scrape(server.url)
    out = http.post("/v1/completions", json={"prompt": "def ", "max_tokens": 7, "stream": True,
                                             "logit_bias": no_end_bias(http)})
    assert out.status_code == 200 and out.text.endswith("data: [DONE]\n\n")
    http.get("/v1/no-such-route")
    after = scrape(server.url)

    assert {"gptlab_http_requests", "gptlab_http_request_duration_seconds", "gptlab_prompt_tokens",
            "gptlab_generation_tokens", "gptlab_time_to_first_token_seconds",
            "gptlab_inter_token_latency_seconds", "gptlab_queue_depth", "gptlab_requests_running",
            "gptlab_sequences_finished"} <= set(after)
    assert after["gptlab_http_requests"].type == "counter"
    assert after["gptlab_time_to_first_token_seconds"].type == "histogram"
    assert after["gptlab_queue_depth"].type == "gauge"

    def delta(family: str, sample: str | None = None, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    assert delta("gptlab_generation_tokens", "gptlab_generation_tokens_total") == 7
    assert delta("gptlab_prompt_tokens", "gptlab_prompt_tokens_total") == 4
    assert delta("gptlab_time_to_first_token_seconds", "gptlab_time_to_first_token_seconds_count") == 1
    assert delta("gptlab_inter_token_latency_seconds", "gptlab_inter_token_latency_seconds_count") == 6
    assert delta("gptlab_http_requests", "gptlab_http_requests_total", route="/v1/completions",
                 status="200") == 1
    assert delta("gptlab_http_requests", "gptlab_http_requests_total", route="other", status="404") == 1
    assert value(after, "gptlab_max_queue") == 4 and value(after, "gptlab_max_batch_size") == 4


def test_a_dropped_stream_counts_its_tokens_as_abort(server, http):
    import time

    before = scrape(server.url)
    body = {"prompt": "def ", "max_tokens": 120, "stream": True, "logit_bias": no_end_bias(http)}
    received = 0
    with http.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 5:
                break  # leave: the connection closes with 115 tokens still to come
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = scrape(server.url)
        aborted = (value(after, "gptlab_sequences_finished", "gptlab_sequences_finished_total", finish_reason="abort")
                   - value(before, "gptlab_sequences_finished", "gptlab_sequences_finished_total",
                           finish_reason="abort"))
        if aborted:
            break
        time.sleep(0.05)
    assert aborted == 1
    tokens = (value(after, "gptlab_generation_tokens", "gptlab_generation_tokens_total")
              - value(before, "gptlab_generation_tokens", "gptlab_generation_tokens_total"))
    assert 5 <= tokens < 120  # what it had generated when the client left, no more


def test_401_and_413_carry_their_route(server):
    before = scrape(server.url)
    assert httpx.post(server.url + "/v1/completions", json={"prompt": "a"}).status_code == 401
    big = httpx.post(server.url + "/v1/chat/completions", content=b"x" * 70_000,
                     headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})
    assert big.status_code == 413
    assert httpx.get(server.url + "/v1/models/some-model").status_code == 401
    after = scrape(server.url)

    def delta(route: str, status: str) -> float:
        return (value(after, "gptlab_http_requests", "gptlab_http_requests_total", route=route, status=status)
                - value(before, "gptlab_http_requests", "gptlab_http_requests_total", route=route, status=status))

    assert delta("/v1/completions", "401") == 1
    assert delta("/v1/chat/completions", "413") == 1
    assert delta("/v1/models/{model_id:path}", "401") == 1
    assert delta("other", "401") == 0
