"""docs/tutorial.md cannot rot: every command of docs/make_tutorial.py still runs (in --fast mode,
tiny settings) and draws its pictures, and the committed page shows every step of the script."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_tutorial.py"
PAGE = ROOT / "docs" / "tutorial.md"

pytestmark = pytest.mark.slow


def load_script():
    spec = importlib.util.spec_from_file_location("make_tutorial", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


tutorial = load_script()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    if shutil.which("bash") is None:
        pytest.skip("the tutorial's commands run with bash")
    for module in ("matplotlib", "sklearn", "fastapi", "uvicorn", "openai", "gguf", "tensorboard"):  # the dev extras
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("tutorial")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--out", str(out), "--workdir", str(out / "work"),
         "--report", str(out / "report.json"), "--save-results", str(out / "results.json"), "--keep-going"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert (out / "report.json").is_file(), proc.stderr[-3000:]
    return out, proc


@pytest.mark.timeout(900)
def test_every_step_runs_in_fast_mode(fast_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = fast_run
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in report] == [step.id for step in tutorial.STEPS]
    page = (out / "tutorial.md").read_text(encoding="utf-8")
    for step, done in zip(tutorial.STEPS, report):
        assert done["ok"], f"{step.id}: {done['error']}"
        assert len(done["commands"]) == len(step.commands)
        assert all(c["returncode"] == 0 for c in done["commands"]), done
        assert len(done["pictures"]) == len(step.pictures)
        for picture in done["pictures"]:
            path = out / picture
            assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
            assert f"]({picture})" in page
        assert f"<!-- step: {step.id} -->" in page
    assert "This step failed" not in page
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_page_is_rendered_again_from_saved_results(fast_run: tuple[Path, subprocess.CompletedProcess[str]],
                                                      tmp_path: Path) -> None:
    """--render writes the same page from the saved outputs, without running anything."""
    out, _ = fast_run
    assert tutorial.main(["--fast", "--out", str(tmp_path), "--render", str(out / "results.json")]) == 0
    assert (tmp_path / "tutorial.md").read_text(encoding="utf-8") == (out / "tutorial.md").read_text(encoding="utf-8")


def test_committed_page_shows_every_step_of_the_script() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert "Fast mode" not in page, "docs/tutorial.md must be made with --full"
    assert "This step failed" not in page
    markers = [line.removeprefix("<!-- step: ").removesuffix(" -->")
               for line in page.splitlines() if line.startswith("<!-- step: ")]
    assert markers == [step.id for step in tutorial.STEPS]
    for step in tutorial.STEPS:
        assert step.title in page, step.id
        for command in step.commands + ((step.server,) if step.server else ()):
            assert f"```bash\n{command.text}\n```" in page, f"{step.id}: {command.text}"
        for source, _ in step.pictures:
            picture = f"tutorial/{step.id}-{Path(source).name}"
            assert f"]({picture})" in page, picture
            assert (PAGE.parent / picture).is_file(), picture


def test_progress_bars_are_removed_and_messages_kept(tmp_path: Path) -> None:
    raw = (
        "model: 1 parameter\n"
        "\rtrain:   0%|          | 0/30 [00:00<?, ?step/s]\rtrain:  50%|█████     | 15/30 [00:01<00:01]"
        "\r                    \rstep 15: val loss 6.75\n"
        "\rtrain: 100%|██████████| 30/30 [00:02<00:00]\n"
        f"run saved in {tmp_path}/runs/x\n\n"
    )
    assert tutorial.clean_output(raw, tmp_path) == ["model: 1 parameter", "step 15: val loss 6.75", "run saved in runs/x"]
    lines = [str(i) for i in range(100)]
    assert tutorial.cut(lines, 3, 2) == ["0", "1", "2", "[… 95 lines cut …]", "98", "99"]
    assert tutorial.cut(lines[:6], 3, 2) == lines[:6]
