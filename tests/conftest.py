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


@pytest.fixture(scope="module")
def tokenizer(corpus_text):
    """A character tokenizer of ``corpus_text`` (test files that need another one define their own)."""
    from gptlab.data.tokenizer import train_char_tokenizer

    return train_char_tokenizer([corpus_text])


@pytest.fixture(scope="module")
def model(tokenizer):
    """A seeded 2-layer, width-32, context-64 GPT in eval mode for ``tokenizer``."""
    import torch

    from gptlab.model.config import GPTConfig
    from gptlab.model.gpt import GPT

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


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
