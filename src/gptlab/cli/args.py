"""argparse pieces that several ``gptlab`` subcommands share (no PyTorch imported here)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum`` (the error names the bound)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse's "invalid int value: 'x'"
    return parse


def _flag_type(annotation: Any) -> Any:
    """The argparse type of a dataclass field annotation such as ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object such as ``'{"mlp": "relu2", "qk_norm": true}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"need a JSON object such as '{{\"mlp\": \"relu2\"}}', got {text!r}")
    return value


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, help_texts: Mapping[str, str], skip: Collection[str] = ()
) -> None:
    """One ``--field-name`` flag per field of the dataclass ``cls`` (bools get ``--no-...`` too).

    Flags left off are absent from the namespace (``argparse.SUPPRESS``), so that a config file or
    a saved run can fill them; the help shows ``help_texts[name]`` and the dataclass default.
    """
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _flag_type(hints[field.name])
        if typing.get_origin(kind) is dict:
            kind = json_object
        help_text = f"{help_texts[field.name]} (default: {getattr(defaults, field.name)})"
        if typing.get_origin(kind) is list:  # repeatable: --flag a --flag b
            parser.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_text,
                                metavar=field.name.upper())
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text,
                                metavar=field.name.upper())
