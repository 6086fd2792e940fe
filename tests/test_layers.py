"""The package layout is the story, and data flows one way through it: a module never imports a
later stage (every ``import``, including those inside functions and under ``TYPE_CHECKING``), and
the first chapter (``neurons``) stands apart from the GPT half."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gptlab"

# Stages in the order of the story; a module may import its own stage or an earlier one.
STAGES: list[set[str]] = [
    {"errors", "fileio", "config_file", "plotting", "lazy"},  # shared leaves
    {"data"},
    {"model"},
    {"generate"},
    {"train"},
    {"finetune"},
    {"inspect", "interop"},
    {"server"},
    {"cli", "__main__"},
]
APART = {"neurons"}  # the first chapter: imports only the shared leaves, and only the CLI imports it
RANK = {name: rank for rank, stage in enumerate(STAGES) for name in stage}


def stage_of(module: str) -> str:
    """``gptlab.train.trainer`` -> ``train``; ``gptlab`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``gptlab...`` module that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # ``from gptlab import x`` / ``from gptlab.cli import core`` import the module named
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "gptlab"}
    return {m for m in found if m == "gptlab" or m.startswith("gptlab.")}


def test_every_module_is_in_a_stage() -> None:
    for path in PACKAGE.glob("*"):
        if path.name.startswith((".", "_")) and path.name not in ("__main__.py",):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").is_file()):
            name = path.stem if path.suffix == ".py" else path.name
            assert name in RANK or name in APART, f"gptlab.{name} is in no stage of tests/test_layers.py"


def _edges() -> list[tuple[str, str]]:
    return [(module_name(path), target)
            for path in sorted(PACKAGE.rglob("*.py"))
            for target in sorted(imported_modules(path))]


def test_no_stage_imports_a_later_one() -> None:
    upward = []
    for source, target in _edges():
        src, dst = stage_of(source), stage_of(target)
        if dst in ("", "__version__") or src in APART or dst in APART:
            continue
        if RANK[dst] > RANK[src]:
            upward.append(f"{source} imports {target}")
    assert not upward, "lower stages import higher ones:\n" + "\n".join(upward)


def test_the_first_chapter_stands_apart() -> None:
    wrong = []
    for source, target in _edges():
        src, dst = stage_of(source), stage_of(target)
        if src in APART and dst not in APART and dst not in STAGES[0]:
            wrong.append(f"{source} imports {target}")
        if dst in APART and src not in APART and src != "cli":
            wrong.append(f"{source} imports {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source, target, upward", [
    ("gptlab.model.gpt", "gptlab.train.trainer", True),
    ("gptlab.train.trainer", "gptlab.model.gpt", False),
    ("gptlab.cli.core", "gptlab.server.app", False),
    ("gptlab.data.shards", "gptlab.generate", True),
])
def test_the_rule_itself(source: str, target: str, upward: bool) -> None:
    assert (RANK[stage_of(target)] > RANK[stage_of(source)]) is upward


def test_imports_are_found_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from gptlab.train import trainer\n    import gptlab.cli.main\n",
                    encoding="utf-8")
    assert imported_modules(path) == {"gptlab.train", "gptlab.cli.main"}


def test_help_and_count_start_without_torch():
    """Importing torch takes seconds: `gptlab --help` and `gptlab count` never do (gptlab.lazy)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys\n"
        "from gptlab.cli.main import build_parser, main\n"
        "build_parser().format_help()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['count', 'llama-3.2-1b']) == 0\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", ["data", "model", "train", "finetune"])
def test_every_exported_name_resolves(package):
    """The lazily exported names are the modules' own objects, and a wrong name is an AttributeError."""
    import importlib

    pkg = importlib.import_module(f"gptlab.{package}")
    for name in pkg.__all__:
        value = getattr(pkg, name)
        owner = importlib.import_module(getattr(value, "__module__", None) or pkg.__name__)
        assert getattr(owner, name) is value, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pkg.nope  # noqa: B018
