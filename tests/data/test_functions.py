"""The default corpus's unit: the module-level functions and methods of a source, dedented."""

from __future__ import annotations

import ast

from gptlab.data.functions import dedent_block, iter_functions

SOURCE = '''"""A module."""
import os

X = 1


@decorator(1)
def top(a, b=2):
    """Doc."""
    def inner():
        return a
    return inner()


class Outer:
    attribute = 3

    def method(self):
        text = """
a string whose lines start
at column 0"""
        return text

    class Inner:
        async def deep(self):
            await other()

    @property
    def value(self):
        return self.attribute
'''


def test_functions_and_methods_with_decorators_dedented_nested_ones_inside() -> None:
    functions = list(iter_functions(SOURCE))
    assert [f.line for f in functions] == [8, 25, 29]  # the def lines; `method` is skipped (below)
    top, deep, value = (f.text for f in functions)
    assert top.startswith("@decorator(1)\ndef top(a, b=2):\n") and "    def inner():\n" in top
    assert deep == "async def deep(self):\n    await other()\n"
    assert value == "@property\ndef value(self):\n    return self.attribute\n"
    for function in functions:  # each parses alone as one module-level function
        body = ast.parse(function.text).body
        assert len(body) == 1 and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
    everything = "".join(f.text for f in functions)
    assert "import os" not in everything and "X = 1" not in everything and "attribute = 3" not in everything


def test_a_function_that_cannot_be_dedented_is_skipped_and_bad_source_yields_nothing() -> None:
    assert all(not f.text.startswith("def method") for f in iter_functions(SOURCE))
    assert dedent_block(["    x = 1\n", "\n", "   \n", "      y\n"], 4) == "x = 1\n\n\n  y\n"
    assert dedent_block(["    x = '''\n", "left'''\n"], 4) is None
    assert list(iter_functions("def broken(:\n")) == []
    assert list(iter_functions("def f(): return 1"))[0].text == "def f(): return 1\n"  # line break added
