"""Chat templates and generation settings in a Hugging Face model directory.

Export writes the chat layout gptlab fine-tunes with (ChatML, :mod:`gptlab.data.chat`) as a Jinja
``chat_template`` in ``tokenizer_config.json``, so that ``tokenizer.apply_chat_template`` in
``transformers`` gives the ids gptlab's own chat formatting gives; a model imported with a template
of its own keeps that one and exports it again. ``generation_config.json`` names the ids that
``generate`` needs: bos, eos (the end of text and, when the tokenizer has it, ``<|im_end|>``, where
a chat turn ends) and pad.

Import reads a directory's template from ``tokenizer_config.json`` (a string, or the ``default``
of a list of named templates) or from ``chat_template.jinja``, where ``transformers`` 4.43+ saves it.
:func:`render_chat_template` renders a template as ``transformers`` does (Jinja2, sandboxed,
``trim_blocks`` and ``lstrip_blocks``), for the server's chat route on an imported model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gptlab.data.chat import IM_END, IM_START, ROLES
from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import CheckpointError, DataError
from gptlab.finetune.loader import ChatTemplate
from gptlab.interop.hf_files import read_json

__all__ = ["CHATML_TEMPLATE", "GENERATION_CONFIG_FILE", "TEMPLATE_FILE", "generation_config",
           "read_chat_settings", "read_chat_template", "render_chat_template"]

GENERATION_CONFIG_FILE = "generation_config.json"
TEMPLATE_FILE = "chat_template.jinja"

# gptlab.data.chat.render_chat in Jinja: each message as <|im_start|>{role}\n{content}<|im_end|>\n,
# then <|im_start|>assistant\n for the generation prompt; an unknown role is an error, as there
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in " + json.dumps(list(ROLES)) + " %}"
    "{{ raise_exception('unknown chat role ' + message['role']) }}{% endif %}"
    "{{ '" + IM_START + "' + message['role'] + '\\n' + message['content'] + '" + IM_END + "' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + IM_START + "assistant\\n' }}{% endif %}"
)


def generation_config(tokenizer: Tokenizer, bos_token_id: int, stop: Sequence[str] | None = None) -> dict[str, Any]:
    """``generation_config.json``: ``bos_token_id``; ``eos_token_id`` the end of text and the tokens
    that end a chat turn (``stop``, a model's own; by default ``<|im_end|>`` when the tokenizer has
    it); ``pad_token_id`` the end of text (gptlab pads with it)."""
    special = tokenizer.special_tokens
    turn_ends = [IM_END] if stop is None else list(stop)
    ids = list(dict.fromkeys([tokenizer.eot_id, *(special[t] for t in turn_ends if t in special)]))
    return {"bos_token_id": bos_token_id, "eos_token_id": ids[0] if len(ids) == 1 else ids,
            "pad_token_id": tokenizer.eot_id}


def read_chat_template(directory: Path) -> str | None:
    """The chat template of a Hugging Face model directory, or None when it has none.
    CheckpointError for a template that is neither a string nor a list of named templates."""
    jinja = directory / TEMPLATE_FILE
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{jinja}: cannot read ({exc})") from None
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from None
    if template is None or isinstance(template, str):
        return template or None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
    raise CheckpointError(f"{path}: chat_template is neither a string nor a list with a 'default' template")


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str) and value["content"]:
        return str(value["content"])
    return None


def read_chat_settings(directory: Path, tokenizer: Tokenizer) -> ChatTemplate | None:
    """A model directory's own chat template (:func:`read_chat_template`) with the special tokens
    it may refer to (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token`` of
    ``tokenizer_config.json``) and the tokens that end a turn: ``generation_config.json``'s
    ``eos_token_id`` (one id or several) and the tokenizer's ``eos_token``, those that are special
    tokens of ``tokenizer``. None when the directory has no template."""
    template = read_chat_template(directory)
    if template is None:
        return None
    config_path, generation_path = directory / "tokenizer_config.json", directory / GENERATION_CONFIG_FILE
    config = read_json(config_path) if config_path.is_file() else {}
    generation = read_json(generation_path) if generation_path.is_file() else {}
    config = config if isinstance(config, dict) else {}
    tokens = {name: token for name in ("bos_token", "eos_token", "unk_token", "pad_token")
              if (token := _token_content(config.get(name))) is not None}
    by_id = {i: token for token, i in tokenizer.special_tokens.items()}
    eos_ids = generation.get("eos_token_id") if isinstance(generation, dict) else None
    eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
    stop = [by_id[i] for i in eos_ids if isinstance(i, int) and i in by_id]
    if tokens.get("eos_token") in tokenizer.special_tokens:
        stop.append(tokens["eos_token"])
    return ChatTemplate(template, tokens, tuple(dict.fromkeys(stop)))


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
) -> str:
    """``template`` rendered for ``messages`` as ``transformers``' ``apply_chat_template(...,
    tokenize=False)`` renders it: a sandboxed Jinja2 environment with ``trim_blocks`` and
    ``lstrip_blocks``, ``raise_exception``, ``strftime_now`` and a ``tojson`` filter, and the
    tokenizer's special tokens (``bos_token``, ``eos_token``, ...) as variables. DataError for a
    template that fails (syntax, or ``raise_exception``)."""
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise DataError("rendering a model's own chat template needs jinja2 (pip install jinja2)") from None

    def raise_exception(message: str) -> None:
        raise DataError(f"chat template: {message}")

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template).render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
            **dict(special_tokens or {}),
        )
    except TemplateError as exc:
        raise DataError(f"chat template: {exc}") from None
