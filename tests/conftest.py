import inspect
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """About 20 kB of real Python source: textwrap.py from the running interpreter."""
    return inspect.getsource(textwrap)


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


def _kill_at_first_checkpoint(command: list[str], run_dir: Path, what: str) -> int:
    """Run ``command``, SIGKILL it as soon as ``run_dir/LATEST`` names a checkpoint, return that step."""
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run_dir / "LATEST"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, f"{what} finished before it could be killed"
    return int(latest.read_text().strip().split("-")[1])


@pytest.fixture
def kill_at_first_checkpoint():
    """``kill_at_first_checkpoint(command, run_dir, what)``: the kill -9 half of the resume tests."""
    return _kill_at_first_checkpoint
