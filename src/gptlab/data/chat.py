"""The chat template: how a list of messages becomes one prompt string (ChatML layout).

Each message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a generation prompt appends
``<|im_start|>assistant\\n`` and the model's turn ends when it emits ``<|im_end|>``. The markers are
the tokenizer's special tokens (gptlab tokenizers carry them from the start; a model imported from
elsewhere gets them added). The server's ``/v1/chat/completions``, chat fine-tuning and few-shot
chat prompts all render through this one module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gptlab.errors import DataError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise DataError(f"unknown chat role {self.role!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(self.content, str):
            raise DataError(f"chat message content must be a string, got {type(self.content).__name__}")


def as_messages(items: Iterable[ChatMessage | Mapping[str, object]]) -> list[ChatMessage]:
    """Messages from ChatMessage objects or ``{"role": ..., "content": ...}`` mappings."""
    messages = []
    for i, item in enumerate(items):
        if isinstance(item, ChatMessage):
            messages.append(item)
            continue
        if not isinstance(item, Mapping) or "role" not in item or "content" not in item:
            raise DataError(f"message {i} needs a 'role' and a 'content'")
        messages.append(ChatMessage(str(item["role"]), item["content"]))  # type: ignore[arg-type]
    return messages


def render_message(message: ChatMessage) -> str:
    return f"{IM_START}{message.role}\n{message.content}{IM_END}\n"


def generation_prompt() -> str:
    """What follows the messages when the model is to write the assistant's next turn."""
    return f"{IM_START}assistant\n"


def render_chat(
    messages: Sequence[ChatMessage | Mapping[str, object]], add_generation_prompt: bool = True
) -> str:
    """The prompt text for ``messages``; with ``add_generation_prompt`` it ends where the assistant writes."""
    text = "".join(render_message(m) for m in as_messages(messages))
    return text + generation_prompt() if add_generation_prompt else text


def chat_segments(messages: Sequence[ChatMessage | Mapping[str, object]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) pieces, for fine-tuning on assistant turns only.

    An assistant turn's header ``<|im_start|>assistant\\n`` is context (not trained); its content and
    closing ``<|im_end|>`` are trained, so the model learns what to say and when to stop.
    """
    segments: list[tuple[str, bool]] = []
    for m in as_messages(messages):
        if m.role == "assistant":
            segments.append((generation_prompt(), False))
            segments.append((f"{m.content}{IM_END}", True))
            segments.append(("\n", False))
        else:
            segments.append((render_message(m), False))
    return segments
