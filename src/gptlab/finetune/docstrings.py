"""A real fine-tuning task built offline: write a function's body from its signature and docstring.

Every function (and method) of the default corpus, the Python standard library's source, that has
a docstring and at least one statement after it becomes one example::

    {"prompt": "def name(args):\\n    \\"\\"\\"Docstring.\\"\\"\\"\\n", "completion": "    body...\\n"}

The prompt is the source from the ``def`` line (decorators left out) to the end of the docstring,
the completion is the rest of the function's source, both dedented to the ``def``'s column. Files
are read in the corpus's sorted order and functions in source order, so the dataset is the same
on every run of the same Python; duplicates (same prompt and completion) are kept once. Records
go through :func:`gptlab.finetune.data.load_records` unchanged (``prompt``/``completion``: loss on
the completion only).
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gptlab.data.corpus import iter_documents, iter_stdlib_sources
from gptlab.data.functions import dedent_block
from gptlab.errors import ConfigError, DataError
from gptlab.fileio import atomic_write_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 1200  # prompt + completion; keeps examples within a small model's context


@dataclass(frozen=True)
class DocstringExample:
    """One function: ``prompt`` = signature + docstring, ``completion`` = the body after it."""

    prompt: str
    completion: str
    source: str  # "path/in/stdlib.py:LINE" of the def

    def to_record(self) -> dict[str, str]:
        return {"prompt": self.prompt, "completion": self.completion}


def examples_from_source(text: str, name: str = "<string>") -> Iterator[DocstringExample]:
    """The docstring → body examples of one Python source text, in source order.

    A file that does not parse (e.g. Python 2 leftovers) yields nothing. Functions are skipped when
    the docstring is not a plain string literal on lines of its own (``def f(): "doc"; x = 1``),
    or nothing follows the docstring.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        logger.debug("%s: does not parse, skipped", name)
        return
    lines = text.splitlines(keepends=True)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda n: (n.lineno, n.col_offset)):
        example = _example(node, lines, name)
        if example is not None:
            yield example


def _example(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], name: str) -> DocstringExample | None:
    body = node.body
    if len(body) < 2 or ast.get_docstring(node, clean=False) is None:
        return None
    doc, first = body[0], body[1]
    if doc.lineno == node.lineno or doc.end_lineno is None or first.lineno <= doc.end_lineno:
        return None  # docstring on the def line, or code sharing the docstring's last line
    if node.end_lineno is None:
        return None
    prompt = dedent_block(lines[node.lineno - 1 : doc.end_lineno], node.col_offset)
    completion = dedent_block(lines[doc.end_lineno : node.end_lineno], node.col_offset)
    if prompt is None or completion is None:
        return None  # e.g. a continuation line less indented than the def: cannot dedent cleanly
    if not completion.endswith("\n"):
        completion += "\n"
    if not completion.strip():
        return None
    return DocstringExample(prompt, completion, f"{name}:{node.lineno}")


def build_docstring_dataset(
    max_examples: int | None = None,
    *,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    max_bytes: int | None = None,
    source: str | Path | None = None,
) -> list[DocstringExample]:
    """Docstring → body examples from ``source`` (default: the Python standard library), in order.

    ``max_chars`` drops examples whose prompt + completion is longer (None: keep all);
    ``max_examples`` stops after that many; ``max_bytes`` caps the corpus read. The result depends
    only on the arguments and the Python installation. Raises DataError when nothing qualifies.
    """
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be a positive integer, got {max_examples!r}")
    if max_chars is not None and max_chars < 1:
        raise ConfigError(f"max_chars must be a positive integer, got {max_chars!r}")
    examples: list[DocstringExample] = []
    seen: set[tuple[str, str]] = set()
    documents = (iter_stdlib_sources(max_bytes) if source is None
                 else iter_documents(source, pattern="**/*.py", max_bytes=max_bytes))
    for document in documents:
        for example in examples_from_source(document.text, document.name):
            key = (example.prompt, example.completion)
            if key in seen or (max_chars is not None and len(example.prompt) + len(example.completion) > max_chars):
                continue
            seen.add(key)
            examples.append(example)
            if max_examples is not None and len(examples) >= max_examples:
                return examples
    if not examples:
        raise DataError("no function with a docstring and a body found in the corpus")
    return examples


def write_jsonl(records: list[dict[str, str]], path: str | Path) -> Path:
    """Write ``records`` one JSON object per line, atomically (a failure leaves ``path`` as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
