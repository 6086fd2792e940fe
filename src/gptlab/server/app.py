"""The FastAPI application: routes only. Each route checks, hands over, and returns.

``create_app(settings, loader)`` builds the app; the model loads in the background once the server
starts (``/health`` is 503 until then). Middleware, outermost first: metrics, CORS (only when
origins are given), API key, body limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from gptlab import __version__
from gptlab.generate.sampler import end_token_ids
from gptlab.server.auth import APIKeyMiddleware
from gptlab.server.chat_completions import ChatWriter
from gptlab.server.cors import CORSMiddleware
from gptlab.server.completions import CompletionWriter
from gptlab.server.disconnect import ClientDisconnected, unless_disconnected
from gptlab.server.errors import bad_request, install_error_handlers
from gptlab.server.generation import Generation
from gptlab.server.inspect_route import Inspector
from gptlab.server.limits import BodyLimitMiddleware
from gptlab.server.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics
from gptlab.server.prompts import (
    chat_prompt,
    chat_stop_token_ids,
    completion_prompts,
    engine_requests,
    text_ids,
)
from gptlab.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    Health,
    InspectRequest,
    InspectResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from gptlab.server.sse import EventStreamResponse
from gptlab.server.state import LoadedModel, Loader, ServerSettings, ServerState

STATIC = Path(__file__).parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "invalid parameters"), (401, "missing or wrong API key"), (404, "unknown model"),
        (413, "request body too large"), (429, "the engine queue is full"), (503, "the model is loading"),
    ]
}
STREAM = {"content": {"text/event-stream": {}}, "description": "with stream: true, server-sent events"}
DESCRIPTION = """An OpenAI-compatible API for a gptlab model: completions and chat completions
(streaming with server-sent events, n, stop, seed, logprobs, echo, penalties, logit_bias, and
vLLM's min_p, repetition_penalty, min_tokens, stop_token_ids, ignore_eos and
include_stop_str_in_output). Requests are strict: unknown fields, wrong JSON types, and OpenAI
features not implemented here (tools, response_format other than text, best_of > 1) are a 400.
tokenize/detokenize, health and Prometheus metrics. The playground is at `/`.

`POST /v1/inspect` is a gptlab extension, not part of the OpenAI API: the attention maps and the
per-token probabilities of a text, which the playground's Inspect panel draws."""


def create_app(
    settings: ServerSettings, loader: Loader, on_load_failure: Callable[[BaseException], None] | None = None
) -> FastAPI:
    """The server for the model ``loader`` returns (called in a background thread at startup)."""
    state = ServerState(settings, loader, on_load_failure)
    inspector = Inspector(settings)
    metrics = ServerMetrics(lambda: state.loaded.engine.stats() if state.loaded is not None else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield
        await run_in_threadpool(state.stop)

    app = FastAPI(title="gptlab", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # Swagger UI would load from a CDN: the JSON is enough
    app.state.gptlab = state
    app.state.metrics = metrics
    install_error_handlers(app)

    async def respond(request: Request, gen: Generation, writer: CompletionWriter | ChatWriter,
                      stream: bool) -> Any:
        if stream:
            return EventStreamResponse(writer.stream(gen), on_close=gen.close)
        try:
            await unless_disconnected(request, gen.run())
        except ClientDisconnected:
            return Response(status_code=499)  # nobody is listening; the code shows in the metrics
        return writer.response(gen)

    def ready(model: str | None) -> LoadedModel:
        loaded = state.ready()
        state.check_model(model)
        return loaded

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", response_model=Health, responses={503: {"model": Health}}, tags=["server"])
    async def health() -> Any:
        """200 when the model is loaded and the engine runs; 503 while loading (or if loading failed)."""
        if state.status == "ok":
            return Health(status="ok")
        return JSONResponse(Health(status=state.status, detail=state.error).model_dump(), status_code=503)

    @app.head("/health", include_in_schema=False)
    async def health_head() -> Response:
        """``GET /health``'s status, without a body (load balancers and uptime checks use HEAD)."""
        return Response(status_code=200 if state.status == "ok" else 503)

    @app.get("/metrics", response_class=Response, tags=["server"],
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus_metrics() -> Response:
        """Requests, tokens, queue depth, latency histograms (incl. time to first token)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
    async def list_models() -> ModelList:
        loaded = ready(None)
        return ModelList(data=[model_card(settings, loaded)])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS, tags=["openai"])
    async def retrieve_model(model_id: str) -> ModelCard:
        return model_card(settings, ready(model_id))

    @app.post("/v1/completions", response_model=CompletionResponse, tags=["openai"],
              responses={**ERRORS, 200: STREAM})
    async def create_completion(body: CompletionRequest, request: Request) -> Any:
        loaded = ready(body.model)
        if body.suffix is not None:
            raise bad_request("suffix is not supported", param="suffix")
        prompts = completion_prompts(body.prompt, loaded, settings)
        requests = engine_requests(
            body, prompts, loaded, settings, requested_tokens=body.max_tokens,
            stop_token_ids=end_token_ids(loaded.tokenizer), logprobs=body.logprobs,
            prompt_logprobs=body.echo and body.logprobs is not None,
        )
        gen = Generation(loaded.engine, requests, metrics, sum(len(p.ids) for p in prompts))
        writer = CompletionWriter(body, prompts, loaded.texts, settings.model_name)
        return await respond(request, gen, writer, body.stream)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["openai"],
              responses={**ERRORS, 200: STREAM})
    async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
        loaded = ready(body.model)
        prompt = chat_prompt(body.messages, loaded, settings)
        requests = engine_requests(
            body, [prompt], loaded, settings, requested_tokens=body.max_new_tokens,
            stop_token_ids=chat_stop_token_ids(loaded.tokenizer, loaded.chat_template),
            logprobs=(body.top_logprobs or 0) if body.logprobs else None, prompt_param="messages",
        )
        gen = Generation(loaded.engine, requests, metrics, len(prompt.ids))
        return await respond(request, gen, ChatWriter(body, loaded.texts, settings.model_name), body.stream)

    @app.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS, tags=["server"])
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        """Token ids of a prompt, or of chat messages as /v1/chat/completions renders them."""
        loaded = ready(body.model)
        if body.messages is not None:
            ids = chat_prompt(body.messages, loaded, settings).ids
        else:
            assert body.prompt is not None
            ids = text_ids(body.prompt, loaded, settings, allow_special=body.add_special_tokens)
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=loaded.context_length)

    @app.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS, tags=["server"])
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        loaded = ready(body.model)
        bad = next((t for t in body.tokens if t >= loaded.vocab_size), None)
        if bad is not None:
            raise bad_request(f"token id {bad} is outside the vocabulary [0, {loaded.vocab_size})",
                              param="tokens", code="invalid_token_id")
        return DetokenizeResponse(prompt=loaded.tokenizer.decode(body.tokens))

    @app.post("/v1/inspect", response_model=InspectResponse, responses=ERRORS, tags=["gptlab"],
              summary="Look inside: attention and token probabilities of a text (gptlab extension)")
    async def inspect_text(body: InspectRequest) -> Any:
        """**A gptlab extension, not part of the OpenAI API** (behind the same API key as `/v1`).

        The text (`text`, or `prompt`: at most the model's context) is run through the model once.
        `views` picks what comes back (default both):

        * `attention`: `weights[layer][head][i][j]`, how much token *i* attends to token *j*, rounded
          to 4 decimals; each row sums to 1 and is 0 above the diagonal (j > i). `layer` keeps one
          layer, `head` one head or `"mean"` (the mean over heads). The map is L×H×T×T numbers, so it
          grows as T²; more than 4,194,304 numbers is a 400: ask for one layer or head.
        * `probabilities`: for each position t ≥ 1, the probability the model gave token t after the
          tokens before it, its surprisal in bits, and the `top_k` (1–20, default 5) alternatives;
          then the `top_k` next tokens after the last one, the mean surprisal and the perplexity.

        It runs on the server's own copy of the model (made at the first call, on the same device), one
        call at a time, in a worker thread beside the engine: generation results never change (the
        two share the device's compute).
        """
        loaded = ready(body.model)
        result = await inspector.inspect(body, loaded)
        return Response(result.model_dump_json(), media_type="application/json")  # validated once

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=lambda: app.routes)
    return app


def model_card(settings: ServerSettings, loaded: LoadedModel) -> ModelCard:
    return ModelCard(id=settings.model_name, created=loaded.created, max_model_len=loaded.context_length)
