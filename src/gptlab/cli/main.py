"""The ``gptlab`` command. Thin: it parses arguments, calls the library, and turns typed errors into
a one-line message and a non-zero exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gptlab.errors import GptlabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlab",
        description="From the perceptron to GPT: train, sample, inspect and count small GPTs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from gptlab.cli import core as cli_core
    from gptlab.cli import count as cli_count
    from gptlab.cli import finetune as cli_finetune
    from gptlab.cli import gguf as cli_gguf
    from gptlab.cli import hf as cli_hf
    from gptlab.cli import inspect as cli_inspect
    from gptlab.cli import neurons as cli_neurons
    from gptlab.cli import serve as cli_serve

    for module in (cli_core, cli_neurons, cli_count, cli_finetune, cli_inspect, cli_hf, cli_gguf, cli_serve):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if next((w for w in words if not w.startswith("-")), None) == "serve":
        from gptlab.cli.serve import prepare_process

        prepare_process()  # before build_parser imports torch: OpenMP reads its settings once
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GptlabError as exc:
        print(f"gptlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `gptlab sample ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        print(f"gptlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk, permissions, a vanished file: the machine's answer, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"gptlab {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
