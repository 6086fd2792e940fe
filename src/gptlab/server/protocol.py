"""The OpenAI wire format: pydantic models of every request and response the server speaks.

Requests carry their bounds (temperature 0..2, up to 4 stop strings, logprobs 0..5, ...), so an
invalid request is rejected with a 400 before anything reaches the model. Checks that need the
model (context length, vocabulary range, prompt limits) live in :mod:`gptlab.server.prompts`.
Requests are strict, as OpenAI's API is: an unknown field, a value of the wrong JSON type
(``"stream": "yes"``, ``"max_tokens": "5"``), a text with a lone surrogate, and the OpenAI features
this server does not implement (``response_format`` other than text, ``tools``, ``best_of > 1``)
are a 400 that names the parameter. vLLM's common sampling extras are accepted (``min_p``,
``repetition_penalty``, ``min_tokens``, ``stop_token_ids``, ``ignore_eos``,
``include_stop_str_in_output``). Responses carry exactly the fields OpenAI's do (``id``,
``object``, ``created``, ``model``, ``choices``, ``usage``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_STOP = 4  # stop strings per request, as OpenAI
MAX_PROMPTS = 64  # prompts in one completions request
MAX_COMPLETION_LOGPROBS = 5
MAX_CHAT_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # entries, as OpenAI
MAX_INSPECT_TOP_K = 20  # alternatives per position in /v1/inspect
MAX_STOP_TOKEN_IDS = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1



def unsupported(message: str) -> PydanticCustomError:
    """A validation error for an OpenAI feature this server does not implement (a 400 naming it)."""
    return PydanticCustomError("unsupported_parameter", message)


def _valid_unicode(text: str) -> str:
    """Refuse a lone UTF-16 surrogate (JSON lets ``"\\ud800"`` through; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "invalid_unicode",
            "contains a lone surrogate ({char} at character {index}), which is not valid Unicode: "
            "send each character whole (a surrogate pair in JSON \\u escapes is fine)",
            {"char": f"U+{ord(text[exc.start]):04X}", "index": exc.start},
        ) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
StopStrings = Annotated[list[Annotated[Text, Field(max_length=256)]], Field(max_length=MAX_STOP)]
FinishReason = Literal["stop", "length"]  # "abort" (a client gone) shows only in /metrics
InspectView = Literal["attention", "probabilities"]


class Request(BaseModel):
    """Base of request bodies: strict JSON types, no unknown fields, no NaN or infinity anywhere."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(Request):
    include_usage: bool = False


class ResponseFormat(Request):
    """``response_format``: only ``{"type": "text"}``; JSON mode and JSON schemas are refused (400)."""

    model_config = ConfigDict(extra="allow")  # json_schema's own fields; refused with the type anyway
    type: Literal["text", "json_object", "json_schema"]

    @field_validator("type")
    @classmethod
    def _text_only(cls, kind: str) -> str:
        if kind != "text":
            raise unsupported(f"response_format type {kind!r} is not supported by this server: only 'text' "
                              "(constrained JSON decoding is not implemented)")
        return kind


class SamplingRequest(Request):
    """The sampling fields shared by ``/v1/completions`` and ``/v1/chat/completions``."""

    model: str | None = Field(None, description="the served model's id (see /v1/models); default: it")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; default 1 (off)")
    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens; -1 or 0: off")
    n: int = Field(1, ge=1, le=128, description="completions to generate for each prompt")
    stop: Text | StopStrings | None = Field(None, description="up to 4 strings that end generation")
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
    # vLLM's sampling extras
    min_p: float = Field(0.0, ge=0, le=1, description="drop tokens less likely than min_p × the most likely one")
    repetition_penalty: float = Field(
        1.0, gt=0, le=10, description="CTRL's penalty on every token of the prompt and the output: a "
        "positive logit is divided by it, a negative one multiplied; 1 is off")
    min_tokens: int = Field(0, ge=0, description="no end-of-text or stop token before this many tokens")
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP_TOKEN_IDS)] | None = Field(
        None, description="more token ids that end generation (finish_reason stop)")
    ignore_eos: bool = Field(False, description="do not stop at the end-of-text (or end-of-turn) token")
    include_stop_str_in_output: bool = Field(
        False, description="keep the stop string (or stop token's text) that ended generation in the text")
    response_format: ResponseFormat | None = Field(None, description='only {"type": "text"} is supported')
    tools: list[dict[str, Any]] | None = Field(None, description="not supported: must be absent, null or []")
    tool_choice: str | dict[str, Any] | None = Field(None, description='not supported: absent, null or "none"')
    parallel_tool_calls: bool | None = Field(None, description="accepted (no tools are ever called)")
    # gptlab's extra
    token_healing: bool = Field(
        False, description="back up the prompt's last token(s) when a longer token could start there, and "
        "make the first new tokens spell them again (gptlab's token healing; off unless asked)")

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if tools:
            raise unsupported("tools (function calling) are not supported by this server")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if choice not in (None, "none"):
            raise unsupported('tool_choice must be "none" (or absent): this server does not call tools')
        return choice

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
        Text
        | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
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
    best_of: int | None = Field(None, ge=1, description="only 1 is supported")

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, best_of: int | None) -> int | None:
        if best_of is not None and best_of > 1:
            raise unsupported("best_of > 1 is not supported by this server: use n and pick with logprobs")
        return best_of

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens


class TextContentPart(Request):
    type: Literal["text"]
    text: Text


class ChatMessageIn(Request):
    """A message of the conversation. ``content`` is required and not null (no tool calls here);
    the fields an assistant message from a response carries (``refusal``, ``tool_calls``, ...) are
    accepted when null, so a response's message can be sent back as it is."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextContentPart]
    name: str | None = Field(None, max_length=256)
    refusal: str | None = None
    tool_calls: Annotated[list[Any], Field(max_length=0)] | None = None
    function_call: None = None
    audio: None = None
    annotations: list[Any] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_given(cls, content: Any) -> Any:
        if content is None:
            raise PydanticCustomError("content_null", "must be a string or a list of text parts, not null")
        return content

    @property
    def text(self) -> str:
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
    prompt: Text | None = None
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


class InspectRequest(Request):
    """``POST /v1/inspect``, a gptlab extension (not part of the OpenAI API): what the model sees in
    one text: the attention of every layer and head, and the probability of every token."""

    model: str | None = Field(None, description="the served model's id (see /v1/models); default: it")
    text: Text | None = Field(None, min_length=1, description="the text to look at (at most the context)")
    prompt: Text | None = Field(None, min_length=1, description="another name for text: give one of the two")
    views: Annotated[list[InspectView], Field(min_length=1, max_length=2)] = Field(
        ["attention", "probabilities"], description="what to compute; default: both"
    )
    top_k: int = Field(5, ge=1, le=MAX_INSPECT_TOP_K, description="alternatives per position, and next tokens")
    layer: int | None = Field(None, ge=0, le=4096, description="only this layer's attention (from 0); default: all")
    head: int | Literal["mean"] | None = Field(
        None, description='only this head (from 0), or "mean": the mean over the heads; default: all heads'
    )

    @field_validator("head")
    @classmethod
    def _head_index(cls, head: int | str | None) -> int | str | None:
        if isinstance(head, int) and not 0 <= head <= 4096:
            raise ValueError(f'head must be a head index from 0, or "mean", got {head}')
        return head

    @model_validator(mode="after")
    def _one_text(self) -> InspectRequest:
        if (self.text is None) == (self.prompt is None):
            raise ValueError("give exactly one of text or prompt")
        return self

    @property
    def input_text(self) -> str:
        return self.text if self.text is not None else self.prompt  # type: ignore[return-value]

    @property
    def input_param(self) -> str:
        return "text" if self.text is not None else "prompt"


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


class InspectAlternative(Response):
    token: str = Field(description="the token as completions logprobs show it")
    token_id: int
    prob: float = Field(description="its probability at this position")


class InspectPosition(Response):
    position: int = Field(description="t, from 1: the token scored given tokens 0 .. t-1")
    token: str
    token_id: int
    prob: float = Field(description="p(token t | tokens before it)")
    logprob: float = Field(description="its natural log")
    surprisal_bits: float = Field(description="-log2 prob")
    top: list[InspectAlternative] = Field(description="the top_k most probable tokens here, most probable first")


class InspectProbabilities(Response):
    positions: list[InspectPosition] = Field(description="one per token after the first")
    next_token: list[InspectAlternative] = Field(description="the top_k most probable tokens after the text")
    mean_surprisal_bits: float | None = Field(description="mean over positions; null for a one-token text")
    perplexity: float | None = Field(description="2 ** mean_surprisal_bits; null for a one-token text")


class InspectAttention(Response):
    n_layer: int
    n_head: int
    layers: list[int] = Field(description="the layers along the first axis of weights")
    heads: list[int] = Field(description="the heads along the second axis (averaged when head_mean)")
    head_mean: bool = Field(description="the second axis holds one entry: the mean over heads")
    weights: list[list[list[list[float]]]] = Field(
        description="[layer][head][query][key], rounded to 4 decimals: how much query token i takes "
        "from key token j; each row sums to 1 and is 0 for j > i. T×T per head: grows as T²"
    )


class InspectResponse(Response):
    object: Literal["inspection"] = "inspection"
    model: str
    tokens: list[str] = Field(description="the text's tokens, as completions logprobs show them")
    token_ids: list[int]
    attention: InspectAttention | None = None
    probabilities: InspectProbabilities | None = None


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
