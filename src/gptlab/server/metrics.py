"""Prometheus metrics, in a registry of the server's own (never the process-global one).

``/metrics`` serves the text format. HTTP requests are counted and timed by a pure ASGI
middleware, labelled by route template (``/v1/models/{model_id}``), also when a middleware answered
before routing (a 401 or 413 on ``/v1/completions`` counts there); unrouted paths are "other", so
random 404 paths cannot blow up the label space. Generation records prompt and generated tokens,
sequences by finish reason ("abort" for a client that left: its tokens so far are counted too),
time to first token and the latency between tokens; the engine's running and waiting requests are
read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EngineStats = Callable[[], "dict[str, int] | None"]


class _EngineCollector(Collector):
    """Gauges read from the engine when scraped: requests running and waiting (the queue depth)."""

    def __init__(self, stats: EngineStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self.stats() or {}
        for key, name, doc in (
            ("running", "gptlab_requests_running", "sequences being decoded by the engine"),
            ("waiting", "gptlab_queue_depth", "requests waiting for an engine slot"),
            ("max_batch_size", "gptlab_max_batch_size", "engine slots"),
            ("max_queue", "gptlab_max_queue", "queue capacity (beyond it, 429)"),
        ):
            yield GaugeMetricFamily(name, doc, value=float(stats.get(key, 0)))


class ServerMetrics:
    """All metrics of one server."""

    def __init__(self, engine_stats: EngineStats) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("gptlab_http_requests", "HTTP requests by route, method and status",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("gptlab_http_request_duration_seconds",
                                      "time from request to the last byte of the response",
                                      ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("gptlab_prompt_tokens", "prompt tokens submitted", registry=r)
        self.generation_tokens = Counter("gptlab_generation_tokens", "tokens generated", registry=r)
        self.finished = Counter("gptlab_sequences_finished", "generated sequences by finish reason",
                                ["finish_reason"], registry=r)
        self.ttft = Histogram("gptlab_time_to_first_token_seconds",
                              "time from the request's arrival to its first generated token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("gptlab_inter_token_latency_seconds",
                                     "time between consecutive tokens of one sequence",
                                     buckets=TOKEN_BUCKETS, registry=r)
        self.registry.register(_EngineCollector(engine_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request by the template of the route that served it."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics,
                 routes: Callable[[], Sequence[BaseRoute]] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's routes, to label requests answered before routing

    def route_label(self, scope: Scope) -> str:
        """The template of the route that served (or would have served) the request, else "other"."""
        route = scope.get("route")  # set by the router
        if route is None and self.routes is not None:
            matches = [r for r in self.routes() if r.matches(scope)[0] is not Match.NONE]
            full = [r for r in matches if r.matches(scope)[0] is Match.FULL]
            route = (full or matches or [None])[0]
        return getattr(route, "path", None) or "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = self.route_label(scope)
            self.metrics.http_requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - start)
