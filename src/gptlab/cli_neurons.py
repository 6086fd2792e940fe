"""CLI for the first chapter (owned by the issue-4 work): `gptlab perceptron`, `adaline`, `xor`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``gptlab`` parser."""
