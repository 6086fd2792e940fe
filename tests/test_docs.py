"""The documentation site cannot rot.

- ``mkdocs build --strict`` passes: a broken link, a missing page, an unresolved API reference or
  a docstring griffe cannot read fails it (skipped when the ``docs`` extra is not installed).
- Every command of docs/getting-started.md runs, in order, in an empty folder. A code block there
  is marked by the HTML comment on the line just before it:

      <!-- run -->                    run as shown
      <!-- run: --max-steps 20 -->    a one-line command run with these flags appended (argparse
                                      lets the last flag win), to keep the test short
      <!-- skip: why -->              not run (installs packages, starts a server)

  A ``bash`` or ``python`` block without a mark fails the test, so a new block is run unless
  someone says why not. (The tutorial's commands are run by tests/test_tutorial.py.)
- Every module of the package has a place in the API reference, and the README's links into the
  docs lead to pages that exist.
- Every ``gptlab`` command shown in a bash block of the README or of a docs page (most of them are
  not run: they need a corpus, a GPU, a download) is one the CLI's own parser takes, and a
  ``gptlab train`` line gives a valid training config: a renamed flag or a refused combination
  shows up here. Likewise every python block parses, imports names that exist, and calls what it
  imports from gptlab with keywords their signatures take.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
SOURCE = ROOT / "src" / "gptlab"

MARK = re.compile(r"^<!-- (run|skip)(?::\s*(.*?))? -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
RUNNABLE = {"bash", "python"}


@dataclass(frozen=True)
class Block:
    line: int  # where the fence opens, 1-based
    lang: str
    code: str
    mark: str | None  # "run", "skip" or None
    arg: str  # the flags after "run:", or the reason after "skip:"


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks at the top level of a Markdown page, each with the mark just above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{path.name}:{i + 1}: the code block is never closed"
        mark = MARK.match(lines[i - 1].strip()) if i > 0 else None
        blocks.append(Block(
            line=i + 1, lang=opening.group(1), code="\n".join(lines[i + 1:end]),
            mark=mark.group(1) if mark else None, arg=(mark.group(2) or "") if mark else "",
        ))
        i = end + 1
    return blocks


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", PYTHONIOENCODING="utf-8")
    # The models here are tiny: one thread is as fast, and far less slowed by a busy neighbour.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("GPTLAB_API_KEY", None)
    return env


def run_block(block: Block, workdir: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a bash block with ``gptlab`` and ``python`` meaning this interpreter, or a python block."""
    if block.lang == "python":
        argv = [sys.executable, "-c", block.code]
    else:
        code = block.code
        if block.arg:
            assert "\n" not in code.strip(), f"line {block.line}: `run: FLAGS` needs a one-line command"
            code = f"{code.strip()} {block.arg}"
        python = shlex.quote(sys.executable)
        prelude = f'gptlab() {{ {python} -m gptlab "$@"; }}\npython() {{ {python} "$@"; }}\nset -euo pipefail\n'
        argv = ["bash", "-c", prelude + code]
    return subprocess.run(
        argv, cwd=workdir, env=command_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


@dataclass
class SiteBuild:
    """``mkdocs build --strict`` running in the background into ``site``."""

    process: subprocess.Popen[bytes]
    site: Path
    log: Path

    def result(self) -> tuple[int, str]:
        """Wait for the build: its exit code and output."""
        code = self.process.wait(timeout=240)
        return code, self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def site_build(tmp_path_factory: pytest.TempPathFactory):
    """The site, built by a ``mkdocs build`` started as soon as a test asks for it; None when the
    ``docs`` extra is not installed. test_getting_started_runs asks too, so that the build (one
    process) runs while the page's commands (one process at a time) do."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")):
        yield None
        return
    folder = tmp_path_factory.mktemp("mkdocs")
    site, log = folder / "site", folder / "build.log"
    env = command_env()
    env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's notice about its successor
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
             "--site-dir", str(site)],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    yield SiteBuild(process, site, log)
    if process.poll() is None:  # no test waited for it (deselected, or skipped)
        process.kill()
    process.wait()


# ---------------------------------------------------------------------------------------------
# getting-started.md


def test_every_block_of_getting_started_is_marked() -> None:
    blocks = code_blocks(GETTING_STARTED)
    unmarked = [b.line for b in blocks if b.lang in RUNNABLE and b.mark is None]
    assert not unmarked, f"getting-started.md: mark these blocks <!-- run --> or <!-- skip: why -->: lines {unmarked}"
    for block in blocks:
        if block.mark is not None:
            assert block.lang in RUNNABLE, f"line {block.line}: only bash and python blocks run"
        if block.mark == "skip":
            assert block.arg, f"line {block.line}: say why the block is skipped"
        if block.mark == "run" and block.arg:
            assert block.lang == "bash" and "\n" not in block.code.strip(), (
                f"line {block.line}: `run: FLAGS` is for a one-line bash command")
    runs = [b for b in blocks if b.mark == "run"]
    assert {b.lang for b in runs} == RUNNABLE and len(runs) >= 5, "the page should run its commands"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_getting_started_runs(tmp_path: Path, site_build: SiteBuild | None) -> None:
    if shutil.which("bash") is None:
        pytest.skip("the page's commands run with bash")
    pytest.importorskip("matplotlib")  # `gptlab inspect` and `gptlab perceptron` draw pictures
    pytest.importorskip("sklearn")  # `gptlab perceptron` loads scikit-learn's digits
    blocks = [b for b in code_blocks(GETTING_STARTED) if b.mark == "run"]
    for block in blocks:
        proc = run_block(block, tmp_path)
        output = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, (
            f"getting-started.md, block at line {block.line} exited with {proc.returncode}:\n"
            f"{block.code}\n---\n{output}")
    # what the page says the commands leave behind
    assert (tmp_path / "runs" / "python-stdlib" / "LATEST").is_file()
    assert (tmp_path / "runs" / "demo" / "LATEST").is_file()
    assert (tmp_path / "runs" / "inspect" / "attention.html").is_file()


# ---------------------------------------------------------------------------------------------
# the site


def test_every_module_is_in_the_api_reference() -> None:
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.MULTILINE))
    modules = set()
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    missing = sorted(m for m in modules - documented if m != "gptlab")
    assert not missing, f"add these modules to a page of docs/api/: {missing}"
    gone = sorted(documented - modules)
    assert not gone, f"docs/api/ documents modules that no longer exist: {gone}"


def shown_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, arguments) of each ``gptlab ...`` command of the page's bash blocks: lines joined at
    a trailing backslash, the comment and anything after a pipe left out; a command run through
    ``.venv/bin/gptlab`` or ``torchrun ... -m gptlab`` counts too."""
    found = []
    for block in code_blocks(path):
        if block.lang != "bash":
            continue
        lines = block.code.splitlines()
        i = 0
        while i < len(lines):
            first, line = i, lines[i].strip()
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            command = re.match(r"(?:\.venv/bin/|torchrun .*-m )?gptlab(\s.*)?$", line)
            if command:
                words = shlex.split(command.group(1) or "", comments=True)
                found.append((block.line + 1 + first, words[: words.index("|")] if "|" in words else words))
            i += 1
    return found


def test_every_command_the_docs_show_parses() -> None:
    from gptlab.cli.core import train_config_from_args
    from gptlab.cli.main import build_parser

    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    shown = [(page, line, words) for page in pages for line, words in shown_commands(page)]
    assert len(shown) >= 80, "the pages' commands were not found"
    for page, line, words in shown:
        where = f"{page.relative_to(ROOT)}:{line}: gptlab {shlex.join(words)}"
        try:
            args = build_parser().parse_args(words)
        except SystemExit as exit:
            assert not exit.code, f"{where}: the CLI refuses it"
            continue  # --help
        if args.command == "train" and not args.resume and not args.config:
            train_config_from_args(args)  # a ConfigError names the line's problem


def test_every_python_example_uses_names_that_exist() -> None:
    import ast
    import importlib
    import inspect

    pages = [ROOT / "README.md", *sorted(p for p in DOCS.glob("*.md") if p.name != "tutorial.md")]  # the tutorial runs
    blocks = [(page, block) for page in pages for block in code_blocks(page) if block.lang == "python"]
    assert len(blocks) >= 15, "the pages' python examples were not found"
    for page, block in blocks:
        where = f"{page.relative_to(ROOT)}:{block.line}"
        tree = ast.parse(block.code, filename=where)
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gptlab":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
                    imported[alias.asname or alias.name] = getattr(module, alias.name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
                continue
            try:
                parameters = inspect.signature(imported[node.func.id]).parameters
            except (TypeError, ValueError):  # no signature to check against
                continue
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                continue
            unknown = [kw.arg for kw in node.keywords if kw.arg and kw.arg not in parameters]
            assert not unknown, f"{where}: {node.func.id}() takes no {unknown}"


def test_readme_links_into_the_docs_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs|bench)/[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links, "the README should link into the docs"
    broken = sorted({link for link in links if not (ROOT / link).exists()})
    assert not broken, f"README.md links to missing files: {broken}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mkdocs_build_strict(site_build: SiteBuild | None) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    assert site_build is not None
    code, output = site_build.result()
    assert code == 0, output[-9000:]
    site = site_build.site
    for page in ("index.html", "getting-started/index.html", "tutorial/index.html", "benchmarks/index.html",
                 "design/index.html", "api/model/index.html"):
        assert (site / page).is_file(), page
    assert (site / "tutorial" / "attention-attention.png").is_file()
    api = (site / "api" / "model" / "index.html").read_text(encoding="utf-8")
    assert "GPTConfig" in api and "gptlab.model.gpt.GPT" in api
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "time_to_quality.py" in bench and "--8&lt;--" not in bench and "--8<--" not in bench
