"""Package names imported on first use, so that commands which never touch torch start without it.

A stage's ``__init__`` re-exports its main names. Importing torch takes seconds, and
``gptlab --help``, ``gptlab count`` or a config check need none of it; so the modules that import
torch are listed in a table and loaded by the package's module-level ``__getattr__`` (PEP 562) the
first time one of their names is asked for. ``from gptlab.model import GPT`` works as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``package.<module>`` when one of the
    names listed for it in ``modules`` (module name -> names) is first asked for, then keeps it."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(importlib.import_module(package), name, value)  # the next lookup is a plain attribute
        return value

    return __getattr__
