import ast
import json
import textwrap

import pytest

from gptlab.cli.main import main
from gptlab.finetune.docstrings import build_docstring_dataset, examples_from_source, write_jsonl
from gptlab.errors import ConfigError, DataError
from gptlab.finetune.data import load_records

SOURCE = textwrap.dedent('''\
    import functools


    def no_doc(x):
        return x


    @functools.cache
    def square(x: int) -> int:
        """Return x squared."""
        # a comment stays with the body
        return x * x


    class Box:
        def __init__(self, value):
            """Hold a value.

            Any value.
            """
            self.value = value

            def inner():
                """Nested."""
                return 1

        async def get(self):
            """Fetch."""
            return self.value

        def only_doc(self):
            """Nothing after me."""

        def same_line(self): "doc on the def line"; return 1
    ''')


def test_examples_from_source_cut_at_the_docstring_and_dedent():
    examples = list(examples_from_source(SOURCE, "m.py"))
    assert [e.source for e in examples] == ["m.py:9", "m.py:16", "m.py:23", "m.py:27"]
    square, init, inner, get = examples
    assert square.prompt == 'def square(x: int) -> int:\n    """Return x squared."""\n'  # decorator left out
    assert square.completion == "    # a comment stays with the body\n    return x * x\n"
    assert init.prompt == 'def __init__(self, value):\n    """Hold a value.\n\n    Any value.\n    """\n'
    assert init.completion.startswith("    self.value = value\n\n    def inner():\n")
    assert inner.prompt == 'def inner():\n    """Nested."""\n' and inner.completion == "    return 1\n"
    assert get.prompt.startswith("async def get(self):")


def test_source_that_does_not_parse_yields_nothing():
    assert list(examples_from_source("def f(:\n    pass\n")) == []


def test_stdlib_dataset_examples_are_functions_that_parse_back():
    examples = build_docstring_dataset(40, max_bytes=3_000_000)
    assert len(examples) == 40
    assert len({(e.prompt, e.completion) for e in examples}) == 40
    for example in examples:
        assert example.prompt.startswith(("def ", "async def ")), example.source
        assert example.completion.strip() and example.completion.endswith("\n")
        assert len(example.prompt) + len(example.completion) <= 1200
        (node,) = ast.parse(example.prompt + example.completion).body  # the pair is the whole function again
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ast.get_docstring(node) is not None and len(node.body) >= 2
        (head,) = ast.parse(example.prompt + "    pass\n").body  # the prompt alone: signature + docstring
        assert ast.get_docstring(head) == ast.get_docstring(node)


def test_dataset_is_deterministic_and_respects_its_caps():
    first = build_docstring_dataset(30, max_chars=300, max_bytes=2_000_000)
    assert first == build_docstring_dataset(30, max_chars=300, max_bytes=2_000_000)
    assert all(len(e.prompt) + len(e.completion) <= 300 for e in first)
    assert build_docstring_dataset(10, max_chars=300, max_bytes=2_000_000) == first[:10]


def test_dataset_from_a_directory_and_errors(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    (tmp_path / "notes.txt").write_text("def f():\n    'doc'\n    return 1\n")  # not .py: ignored
    assert len(build_docstring_dataset(source=tmp_path)) == 4
    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(DataError, match="no function"):
        build_docstring_dataset(source=tmp_path)
    with pytest.raises(ConfigError):
        build_docstring_dataset(0)


def test_jsonl_round_trip_into_fine_tuning_records(tmp_path):
    examples = build_docstring_dataset(5, max_bytes=1_000_000)
    path = write_jsonl([e.to_record() for e in examples], tmp_path / "out" / "ds.jsonl")
    records = load_records(path)
    assert [r.kind for r in records] == ["completion"] * 5
    assert [r.segments for r in records] == [[(e.prompt, False), (e.completion, True)] for e in examples]


def test_cli_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "ds.jsonl"
    assert main(["dataset", "docstrings", "--out", str(out), "--max-examples", "7", "--max-bytes", "1000000"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and all(set(json.loads(line)) == {"prompt", "completion"} for line in lines)
    assert "7 docstring" in capsys.readouterr().err
    assert main(["dataset", "docstrings", "--out", str(out), "--source", str(tmp_path / "missing")]) == 1
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7  # a failed run leaves the file alone
