"""Fixtures for the server tests: a tiny checkpoint saved like a user's, and real ``gptlab serve``
processes on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

API_KEY = "test-key-123"
BLOCK_SIZE = 128


def build_tiny_checkpoint(run_dir: Path, text: str, block_size: int = BLOCK_SIZE, n_embd: int = 32,
                          train_steps: int = 40) -> Path:
    """A 2-layer GPT and a char tokenizer, saved with save_checkpoint like a user's run.

    A few optimizer steps on ``text`` teach it the character frequencies, so it writes plain
    characters (not the tokenizer's byte-fallback ids) and its token probabilities vary.
    """
    import torch

    from gptlab.train.checkpoint import save_checkpoint
    from gptlab.model.config import GPTConfig
    from gptlab.model.gpt import GPT
    from gptlab.data.tokenizer import train_char_tokenizer

    tokenizer = train_char_tokenizer([text])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2, n_head=2,
                          n_embd=n_embd))
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(train_steps):
        starts = torch.randint(0, len(data) - 33, (8,), generator=generator)
        x = torch.stack([data[s : s + 32] for s in starts])
        y = torch.stack([data[s + 1 : s + 33] for s in starts])
        _, loss = model(x, targets=y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_checkpoint(run_dir, model.eval(), tokenizer, step=train_steps)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("server") / "tiny-run", corpus_text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A ``gptlab serve`` child process."""

    process: subprocess.Popen
    url: str
    log_path: Path
    api_key: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(run: Path, log_dir: Path, *flags: str, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> ServerProcess:
    """Start ``python -m gptlab serve RUN`` on a free port and wait until /health is 200."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if k != "GPTLAB_API_KEY"}
    child_env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gptlab", "serve", str(run), "--port", str(port), "--device", "cpu", *flags],
            stdout=log, stderr=subprocess.STDOUT, env=child_env,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path, child_env.get("GPTLAB_API_KEY"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gptlab serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"gptlab serve did not become healthy in {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: API key from $GPTLAB_API_KEY; small limits (4 running + 4 waiting
    sequences, 8 choices, 64 KiB bodies, 2000-character prompts) so the tests can reach them."""
    proc = start_server(tiny_run, tmp_path_factory.mktemp("logs"), "--max-batch-size", "4", "--max-queue", "4",
                        "--max-choices", "8", "--max-body-bytes", "65536", "--max-prompt-chars", "2000",
                        env={"GPTLAB_API_KEY": API_KEY})
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


def no_end_bias(http: httpx.Client) -> dict[str, int]:
    """A ``logit_bias`` that keeps a completion from ending before ``max_tokens``: both tokens that end
    one (``gptlab.generate.sampler.end_token_ids``), ``<|endoftext|>`` and ``<|im_end|>``, banned."""
    ends = (http.post("/tokenize", json={"prompt": end}).json()["tokens"][0] for end in ("<|endoftext|>", "<|im_end|>"))
    return {str(t): -100 for t in ends}


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start more ``gptlab serve`` processes: ``serve(run, *flags, env=...)``; stopped at the end."""
    started: list[ServerProcess] = []

    def start(run: Path, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        started.append(start_server(run, tmp_path_factory.mktemp("serve"), *flags, env=env))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()
