"""From an API request to engine requests: prompts and chat messages to token ids, sampling
parameters, stop conditions, and every check that needs the model (context length, vocabulary).

A chat is rendered by :func:`gptlab.data.chat.render_chat`, gptlab's chat template (ChatML), or by
the model's own template when it was imported with one (:mod:`gptlab.interop.hf_chat`). The
template's turn markers become special tokens, but the text of the messages is encoded as plain
text, so a user who writes ``<|im_end|>`` in a message cannot end a turn or open one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gptlab.data.chat import render_chat
from gptlab.errors import GenerationError, GptlabError
from gptlab.generate.sampler import SamplingParams, end_token_ids
from gptlab.server.engine import GenerationRequest
from gptlab.server.errors import APIError, bad_request
from gptlab.server.protocol import ChatMessageIn, SamplingRequest
from gptlab.server.state import LoadedModel, ServerSettings
from gptlab.data.tokenizer import Tokenizer

_PLACEHOLDER = re.compile("\x00(\\d+)\x00")


@dataclass(frozen=True)
class Prompt:
    """One prompt ready for the engine: its token ids and the text that ``echo`` shows."""

    ids: list[int]
    text: str


def _check_chars(text_length: int, settings: ServerSettings, param: str) -> None:
    if text_length > settings.max_prompt_chars:
        raise bad_request(
            f"{param} is {text_length} characters, over the limit of {settings.max_prompt_chars}",
            param=param, code="prompt_too_long",
        )


def _check_ids(ids: Sequence[int], loaded: LoadedModel, param: str) -> None:
    bad = next((t for t in ids if not 0 <= t < loaded.vocab_size), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary [0, {loaded.vocab_size})",
                          param=param, code="invalid_token_id")


def _encode(tokenizer: Tokenizer, text: str, allow_special: bool, param: str) -> list[int]:
    try:
        return tokenizer.encode(text, allow_special=allow_special)
    except GptlabError as exc:  # e.g. a lone surrogate
        raise bad_request(str(exc), param=param) from None


def text_ids(text: str, loaded: LoadedModel, settings: ServerSettings, allow_special: bool = True,
             param: str = "prompt") -> list[int]:
    """Token ids of a text prompt, after the prompt length limit."""
    _check_chars(len(text), settings, param)
    return _encode(loaded.tokenizer, text, allow_special, param)


def completion_prompts(
    prompt: str | list[str] | list[int] | list[list[int]], loaded: LoadedModel, settings: ServerSettings
) -> list[Prompt]:
    """The prompts of a completions request. Special-token strings in text (``<|endoftext|>``)
    are special tokens, as in OpenAI's completions API; an empty prompt starts a new document
    (``<|endoftext|>``)."""
    if isinstance(prompt, str):
        items: list[str | list[int]] = [prompt]
    elif prompt and isinstance(prompt[0], int):
        items = [list(prompt)]  # type: ignore[arg-type]
    else:
        items = list(prompt)  # type: ignore[arg-type]
    tokenizer = loaded.tokenizer
    prompts = []
    for item in items:
        if isinstance(item, str):
            ids, text = text_ids(item, loaded, settings), item
        else:
            if len(item) > loaded.context_length:
                raise _too_long(len(item), loaded.context_length)
            _check_ids(item, loaded, "prompt")
            ids, text = list(item), tokenizer.decode(item)
        prompts.append(Prompt(ids or [tokenizer.eot_id], text))
    return prompts


def chat_prompt(messages: Sequence[ChatMessageIn], loaded: LoadedModel, settings: ServerSettings) -> Prompt:
    """The prompt for the assistant's next turn after ``messages``."""
    contents = [m.text for m in messages]
    _check_chars(sum(len(c) for c in contents), settings, "messages")
    return Prompt(chat_ids(messages, loaded.tokenizer, loaded.chat_template), "")


def chat_ids(messages: Sequence[ChatMessageIn], tokenizer: Tokenizer, chat_template: Any = None) -> list[int]:
    """Token ids of ``render_chat(messages)`` — or of the model's own ``chat_template`` (a
    :class:`gptlab.finetune.loader.ChatTemplate`) — with the message contents encoded as plain text.

    The template is rendered with a placeholder for each content; the template's own text is
    encoded with special tokens, each content without.
    """
    shells = [{"role": m.template_role, "content": f"\x00{i}\x00"} for i, m in enumerate(messages)]
    try:
        if chat_template is None:
            rendered = render_chat(shells)
        else:
            from gptlab.interop.hf_chat import render_chat_template

            rendered = render_chat_template(chat_template.template, shells,
                                            special_tokens=chat_template.special_tokens)
    except GptlabError as exc:
        raise bad_request(str(exc), param="messages") from None
    ids: list[int] = []
    for i, part in enumerate(_PLACEHOLDER.split(rendered)):
        if i % 2 == 0:
            ids += _encode(tokenizer, part, True, "messages")
        else:
            ids += _encode(tokenizer, messages[int(part)].text, False, f"messages.{part}.content")
    return ids


def chat_stop_token_ids(tokenizer: Tokenizer, chat_template: Any = None) -> list[int]:
    """A chat turn ends at ``<|im_end|>`` (when the tokenizer has it) and at ``<|endoftext|>``;
    with the model's own ``chat_template``, at its stop tokens and ``<|endoftext|>``."""
    special = tokenizer.special_tokens
    if chat_template is not None and chat_template.stop:
        stops = [special[t] for t in chat_template.stop if t in special]
        return list(dict.fromkeys([*stops, tokenizer.eot_id]))
    return end_token_ids(tokenizer)


def _too_long(prompt_tokens: int, context: int, requested: int | None = None,
              prompt_param: str = "prompt") -> APIError:
    """The 400 for a request that does not fit: it names the prompt (``messages`` for a chat) when
    the prompt alone leaves no room, and ``max_tokens`` when only the two together do not fit."""
    if requested is None or prompt_tokens >= context:
        message = (f"This model's maximum context length is {context} tokens, but the prompt is "
                   f"{prompt_tokens} tokens: no room is left to generate. Shorten the prompt.")
        return bad_request(message, param=prompt_param, code="context_length_exceeded")
    message = (f"This model's maximum context length is {context} tokens. However, you requested "
               f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, {requested} for the "
               f"completion). Please reduce the prompt or max_tokens.")
    return bad_request(message, param="max_tokens", code="context_length_exceeded")


def max_new_tokens(prompt: Prompt, requested: int | None, loaded: LoadedModel,
                   prompt_param: str = "prompt") -> int:
    """``requested``, or what is left of the context when it is None; 400 when it does not fit."""
    context, used = loaded.context_length, len(prompt.ids)
    if requested is None:
        if used >= context:
            raise _too_long(used, context, prompt_param=prompt_param)
        return context - used
    if used + requested > context:
        raise _too_long(used, context, requested, prompt_param)
    return requested


def logit_bias(body: SamplingRequest, loaded: LoadedModel) -> dict[int, float] | None:
    """``logit_bias`` with its keys parsed as token ids of this vocabulary."""
    if not body.logit_bias:
        return None
    bias = {}
    for key, value in body.logit_bias.items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < loaded.vocab_size:
            raise bad_request(f"logit_bias token id {token} is outside the vocabulary [0, {loaded.vocab_size})",
                              param="logit_bias")
        bias[token] = value
    return bias


def engine_requests(
    body: SamplingRequest,
    prompts: Sequence[Prompt],
    loaded: LoadedModel,
    settings: ServerSettings,
    *,
    requested_tokens: int | None,
    stop_token_ids: Sequence[int],
    logprobs: int | None,
    prompt_logprobs: bool = False,
    prompt_param: str = "prompt",
) -> list[GenerationRequest]:
    """``n`` engine requests per prompt, in choice order; with a seed, choice ``i`` uses ``seed + i``
    (counted within its prompt, so a prompt gets the same samples alone or in a batch).

    ``stop_token_ids`` are the route's end-of-sequence tokens: ``ignore_eos`` drops them, and the
    request's own ``stop_token_ids`` are added."""
    if len(prompts) * body.n > settings.max_choices:
        raise bad_request(
            f"{len(prompts)} prompt(s) × n={body.n} is more than the {settings.max_choices} completions "
            "one request may ask for", param="n",
        )
    bias = logit_bias(body, loaded)
    stops = [s for s in body.stop_list if s]
    stop_ids = [] if body.ignore_eos else list(stop_token_ids)
    if body.stop_token_ids:
        _check_ids(body.stop_token_ids, loaded, "stop_token_ids")
        stop_ids += [t for t in body.stop_token_ids if t not in stop_ids]
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else None
    requests = []
    for prompt in prompts:
        new_tokens = max_new_tokens(prompt, requested_tokens, loaded, prompt_param)
        if body.min_tokens > new_tokens:
            raise bad_request(f"min_tokens ({body.min_tokens}) is more than the {new_tokens} tokens this "
                              "request may generate", param="min_tokens")
        for i in range(body.n):
            try:
                params = SamplingParams(
                    max_new_tokens=new_tokens,
                    temperature=1.0 if body.temperature is None else body.temperature,
                    top_k=top_k, top_p=body.top_p,
                    seed=None if body.seed is None else body.seed + i,
                    presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                    logit_bias=bias, min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                    token_healing=body.token_healing,  # off on the server unless a request asks for it
                )
            except GenerationError as exc:
                raise bad_request(str(exc)) from None
            requests.append(GenerationRequest(
                prompt_ids=prompt.ids, params=params, stop=stops, stop_token_ids=stop_ids,
                logprobs=logprobs, prompt_logprobs=prompt_logprobs, min_tokens=body.min_tokens,
                include_stop=body.include_stop_str_in_output,
            ))
    return requests
