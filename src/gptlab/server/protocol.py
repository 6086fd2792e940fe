"""The OpenAI wire format: pydantic models of every request and response the server speaks.

Requests carry their bounds (temperature 0..2, up to 4 stop strings, logprobs 0..5, ...), so an
invalid request is rejected with a 400 before anything reaches the model. Checks that need the
model (context length, vocabulary range, prompt limits) live in :mod:`gptlab.server.prompts`.
Unknown request fields are ignored, as OpenAI-compatible servers do; responses carry exactly the
fields OpenAI's do (``id``, ``object``, ``created``, ``model``, ``choices``, ``usage``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

MAX_STOP = 4  # stop strings per request, as OpenAI
MAX_PROMPTS = 64  # prompts in one completions request
MAX_COMPLETION_LOGPROBS = 5
MAX_CHAT_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # entries, as OpenAI
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
StopStrings = Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=MAX_STOP)]
FinishReason = Literal["stop", "length"]


class Request(BaseModel):
    """Base of request bodies: unknown fields ignored, no NaN or infinity anywhere."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(Request):
    include_usage: bool = False


class SamplingRequest(Request):
    """The sampling fields shared by ``/v1/completions`` and ``/v1/chat/completions``."""

    model: str | None = Field(None, description="the served model's id (see /v1/models); default: it")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; default 1 (off)")
    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens; -1 or 0: off")
    n: int = Field(1, ge=1, le=128, description="completions to generate for each prompt")
    stop: str | StopStrings | None = Field(None, description="up to 4 strings that end generation")
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX, description="choice i uses seed + i")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: (
        Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=MAX_LOGIT_BIAS)]
        | None
    ) = Field(None, description="token id (as a string) → bias added to its logit, -100..100")
    user: str | None = Field(None, max_length=256, description="an end-user id; accepted, not used")

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``: continue one or more prompts (text or token ids)."""

    prompt: (
        Annotated[str, Field()]
        | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(description="a string, a list of strings, a list of token ids, or a list of those")
    max_tokens: int | None = Field(
        None, ge=0, description="tokens to generate; default: what is left of the context"
    )
    logprobs: int | None = Field(
        None, ge=0, le=MAX_COMPLETION_LOGPROBS, description="return the top-k alternatives of each token"
    )
    echo: bool = Field(False, description="prepend the prompt to the returned text")
    suffix: str | None = Field(None, description="not supported: must be absent or null")


class TextContentPart(Request):
    type: Literal["text"]
    text: str


class ChatMessageIn(Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart] | None = None
    name: str | None = Field(None, max_length=256)

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    @property
    def template_role(self) -> str:
        """The role in the chat template: OpenAI's ``developer`` is the ``system`` role."""
        return "system" if self.role == "developer" else self.role


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``: the assistant's next turn in a conversation."""

    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=1024)]
    max_tokens: int | None = Field(None, ge=1, description="deprecated name of max_completion_tokens")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="tokens to generate; default: what is left of the context"
    )
    logprobs: bool = Field(False, description="return the log probability of each token")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizeRequest(Request):
    """``POST /tokenize``: the token ids of a prompt, or of chat messages rendered as the server does."""

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=1024)] | None = None
    add_special_tokens: bool = Field(
        True, description="read special-token strings in the prompt as special tokens"
    )

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(Request):
    model: str | None = None
    tokens: Annotated[list[TokenId], Field(max_length=1_000_000)]


# ---------------------------------------------------------------------------------------------
# responses


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Response):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class CompletionResponse(Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TopLogprob(Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Response):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatMessageOut(Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(Response):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class DeltaMessage(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: Any) -> dict[str, Any]:
        # OpenAI sends {"role": "assistant", "content": ""} first, then {"content": "..."}, then {}
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(Response):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gptlab"
    max_model_len: int


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(Response):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeResponse(Response):
    prompt: str


class Health(Response):
    status: Literal["ok", "loading", "failed"]
    detail: str | None = None


class ErrorDetail(Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Response):
    error: ErrorDetail
