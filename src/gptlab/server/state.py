"""What a running server holds: its settings, and the model + engine once they are loaded.

Loading happens in a background thread after the server starts listening, so ``/health`` can
answer 503 ("loading") until the engine is ready, then 200.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gptlab.errors import ConfigError
from gptlab.server.errors import APIError

if TYPE_CHECKING:
    from gptlab.model.gpt import GPT
    from gptlab.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# returns (model, tokenizer), or (model, tokenizer, chat template) for a model with its own
Loader = Callable[[], "tuple[GPT, Tokenizer] | tuple[GPT, Tokenizer, Any]"]


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``gptlab serve`` can be told, with safe defaults."""

    model_name: str
    api_key: str | None = None  # when set, every /v1 route (and /tokenize, /detokenize) needs it
    max_batch_size: int = 16  # sequences decoded together by the engine
    max_queue: int = 64  # requests waiting for a slot; beyond it, 429
    max_body_bytes: int = 1 << 20  # larger request bodies are a 413
    max_prompt_chars: int = 100_000  # per prompt or conversation, checked before tokenizing
    max_choices: int = 16  # prompts × n in one request
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_prompt_chars", "max_choices"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class LoadedModel:
    """The model, its tokenizer and the engine that owns them."""

    model: GPT
    tokenizer: Tokenizer
    engine: Any  # gptlab.server.engine.Engine
    created: int
    texts: Any = None  # gptlab.server.logprobs.TokenTexts: how each token is shown
    chat_template: Any = None  # gptlab.finetune.loader.ChatTemplate: the model's own, else ChatML

    @property
    def context_length(self) -> int:
        return int(self.model.config.block_size)

    @property
    def vocab_size(self) -> int:
        """Valid token ids are ``0 .. vocab_size - 1`` (the tokenizer's; the model may have more rows)."""
        return int(self.tokenizer.vocab_size)


@dataclass
class ServerState:
    settings: ServerSettings
    loader: Loader
    on_load_failure: Callable[[BaseException], None] | None = None
    status: Literal["loading", "ok", "failed"] = "loading"
    error: str | None = None
    loaded: LoadedModel | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start_loading(self) -> None:
        """Load the model and start the engine in a background thread."""
        self._thread = threading.Thread(target=self._load, name="gptlab-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        import time

        from gptlab.server.engine import Engine, EngineConfig
        from gptlab.server.logprobs import TokenTexts

        try:
            model, tokenizer, *own_template = self.loader()
            config = EngineConfig(max_batch_size=self.settings.max_batch_size, max_queue=self.settings.max_queue)
            texts = TokenTexts(tokenizer)
            engine = Engine(model, tokenizer, config)
            engine.start()
        except BaseException as exc:  # noqa: BLE001 - reported through /health and the callback
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            logger.error("loading the model failed: %s", self.error)
            if self.on_load_failure is not None:
                self.on_load_failure(exc)
            return
        self.loaded = LoadedModel(model=model, tokenizer=tokenizer, engine=engine, created=int(time.time()),
                                  texts=texts, chat_template=own_template[0] if own_template else None)
        self.status = "ok"
        logger.info("model %s ready", self.settings.model_name)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status == "ok"

    def stop(self) -> None:
        """Stop the engine (if it started)."""
        if self._thread is not None:
            self._thread.join(30)
        if self.loaded is not None:
            self.loaded.engine.stop()

    def ready(self) -> LoadedModel:
        """The loaded model, or a 503 while loading (or after a failed load)."""
        if self.loaded is None:
            detail = "the model is still loading" if self.status == "loading" else f"the model failed to load: {self.error}"
            raise APIError(503, detail, code="model_not_ready", headers={"Retry-After": "1"})
        return self.loaded

    def check_model(self, name: str | None) -> None:
        """404 unless ``name`` is absent or the served model's id."""
        if name is not None and name != self.settings.model_name:
            raise APIError(
                404, f"The model `{name}` does not exist: this server serves `{self.settings.model_name}`",
                param="model", code="model_not_found",
            )
