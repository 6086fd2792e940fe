"""Few-shot prompts: an instruction and worked examples laid out before a query, as in GPT-3.

Brown et al. (2020), Figure 2.1, show the layout::

    Translate English to French:        <- instruction (task description)
    sea otter => loutre de mer          <- examples
    peppermint => menthe poivrée
    cheese =>                           <- the query; the model writes the answer

:class:`FewShotFormat` holds the pieces. By default (:meth:`FewShotFormat.for_tokenizer`) they are
the tokenizer's special tokens: the prompt opens with ``<|endoftext|>`` (a document boundary, as
between pre-training documents), and ``<|sep|>`` follows the instruction and each example, so an
example boundary is one unambiguous token and generation can stop at it. A tokenizer without
``<|sep|>`` (e.g. GPT-2's own) gets a newline instead, exactly the paper's layout.

The same examples become chat messages with :func:`few_shot_messages` (a system instruction, then
a user/assistant pair per example, then the query) for ``gptlab.data.chat.render_chat``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gptlab.data.chat import ChatMessage
from gptlab.errors import DataError
from gptlab.fileio import iter_jsonl
from gptlab.data.tokenizer import EOT, Tokenizer

SEP = "<|sep|>"


@dataclass(frozen=True)
class FewShotExample:
    input: str
    output: str


@dataclass(frozen=True)
class FewShotFormat:
    """How an instruction, examples and a query are laid out.

    A prompt is ``begin + [instruction + separator] + (input + arrow + output_prefix + output +
    separator) for each example + query + arrow``. Generation should stop at ``separator`` (see
    :attr:`stop`).
    """

    separator: str = "\n"  # after the instruction and after each example
    arrow: str = " =>"  # between an input and its output
    output_prefix: str = " "  # before each example's output (the query ends at the arrow: no trailing space)
    begin: str = ""  # before everything

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer | None = None, **overrides: str) -> FewShotFormat:
        """The default format: ``<|endoftext|>`` first and ``<|sep|>`` between examples when the
        tokenizer has them as special tokens, plain newlines otherwise (or with no tokenizer)."""
        specials = tokenizer.special_tokens if tokenizer is not None else {}
        special = SEP in specials  # and then EOT too: every gptlab tokenizer has it
        fields = {"separator": SEP if special else "\n", "begin": EOT if special else ""}
        return cls(**{**fields, **overrides})

    @property
    def stop(self) -> list[str]:
        """Stop sequences that end the model's answer (pass to ``generate_text(stop=...)``)."""
        return [self.separator]

    def example(self, example: FewShotExample) -> str:
        return f"{example.input}{self.arrow}{self.output_prefix}{example.output}{self.separator}"

    def query(self, text: str) -> str:
        return f"{text}{self.arrow}"


def build_few_shot_prompt(
    examples: Sequence[FewShotExample],
    query: str | None = None,
    *,
    instruction: str | None = None,
    fmt: FewShotFormat | None = None,
    tokenizer: Tokenizer | None = None,
    max_tokens: int | None = None,
) -> str:
    """The few-shot prompt for ``query`` (without a query: everything up to where one goes).

    ``fmt`` defaults to :meth:`FewShotFormat.for_tokenizer` of ``tokenizer``. With ``max_tokens``
    (and a tokenizer), examples are kept in order as long as the whole prompt fits in that many
    tokens, as GPT-3 fills its context with as many examples as fit; DataError when not even the
    instruction and query fit.
    """
    fmt = fmt or FewShotFormat.for_tokenizer(tokenizer)
    head = fmt.begin + (f"{instruction}{fmt.separator}" if instruction else "")
    tail = fmt.query(query) if query is not None else ""
    body = [fmt.example(e) for e in examples]
    if max_tokens is None:
        return head + "".join(body) + tail
    if tokenizer is None:
        raise DataError("max_tokens needs a tokenizer to count tokens")
    count = lambda text: len(tokenizer.encode(text))
    if count(head + tail) > max_tokens:
        raise DataError(f"the instruction and query alone are longer than {max_tokens} tokens")
    kept = 0
    while kept < len(body) and count(head + "".join(body[: kept + 1]) + tail) <= max_tokens:
        kept += 1
    return head + "".join(body[:kept]) + tail


def few_shot_messages(
    examples: Iterable[FewShotExample], query: str | None = None, *, instruction: str | None = None
) -> list[ChatMessage]:
    """The examples as a chat: the instruction as a system message, one user/assistant pair per
    example, then the query as a user message. Render with ``gptlab.data.chat.render_chat``."""
    messages = [ChatMessage("system", instruction)] if instruction else []
    for example in examples:
        messages += [ChatMessage("user", example.input), ChatMessage("assistant", example.output)]
    if query is not None:
        messages.append(ChatMessage("user", query))
    return messages


def load_few_shot_examples(path: str | Path) -> tuple[list[FewShotExample], str | None]:
    """Examples and the optional instruction from a JSONL file.

    Each line is ``{"input": ..., "output": ...}``; one line may instead be
    ``{"instruction": ...}``. Raises DataError naming ``file:line`` for anything else, and for a
    file with no examples.
    """
    path = Path(path)
    examples: list[FewShotExample] = []
    instruction: str | None = None
    for number, record in iter_jsonl(path):
        where = f"{path}:{number}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object")
        if "instruction" in record and "input" not in record:
            if instruction is not None:
                raise DataError(f"{where}: a second instruction (one per file)")
            if not isinstance(record["instruction"], str):
                raise DataError(f"{where}: 'instruction' must be a string")
            instruction = record["instruction"]
            continue
        for key in ("input", "output"):
            if not isinstance(record.get(key), str):
                raise DataError(f"{where}: expected string fields 'input' and 'output' (or one 'instruction')")
        examples.append(FewShotExample(record["input"], record["output"]))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples, instruction


def few_shot_prompt_from_jsonl(
    path: str | Path,
    tokenizer: Tokenizer,
    instruction: str | None = None,
    *,
    query: str | None = None,
    fmt: FewShotFormat | None = None,
    max_tokens: int | None = None,
) -> str:
    """The few-shot prompt of a JSONL examples file (see :func:`load_few_shot_examples`) in the
    tokenizer's default format. ``instruction`` overrides the file's; ``query`` ends the prompt
    (``"cheese =>"``); ``max_tokens`` keeps only the examples that fit."""
    examples, from_file = load_few_shot_examples(path)
    return build_few_shot_prompt(
        examples, query, instruction=instruction if instruction is not None else from_file,
        fmt=fmt or FewShotFormat.for_tokenizer(tokenizer), tokenizer=tokenizer, max_tokens=max_tokens,
    )
