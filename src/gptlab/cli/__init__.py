"""The ``gptlab`` command: one thin module per command group, over the library.

- :mod:`~gptlab.cli.main` — the parser and :func:`main`, which turns typed errors into one line
  and an exit code;
- :mod:`~gptlab.cli.core` — ``prepare``, ``train``, ``sample``; :mod:`~gptlab.cli.finetune` —
  ``finetune``, ``lora``, ``docstrings``; :mod:`~gptlab.cli.inspect`, :mod:`~gptlab.cli.count`,
  :mod:`~gptlab.cli.hf` (``import-hf``, ``export-hf``), :mod:`~gptlab.cli.serve`,
  :mod:`~gptlab.cli.neurons` (the first chapter);
- :mod:`~gptlab.cli.args` — the shared argument helpers; :mod:`~gptlab.cli.malloc` — glibc's
  malloc settings for a training process.
"""

from gptlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
