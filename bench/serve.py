"""Serving throughput: aggregate generated tokens/s with 16 concurrent streaming clients ÷ with 1.

The script saves a seeded random GPT (and a char tokenizer) as a checkpoint, starts ``gptlab serve``
on it (a real server process on a loopback port, continuous batching with ``--max-batch-size`` =
clients), and drives it over HTTP with streaming ``/v1/completions`` requests: in each round, first
1 client, then ``--clients`` clients at once, each sending ``--requests`` requests one after the
other. ``ignore_eos`` (vLLM's option: end tokens do not end a generation) makes every request
generate exactly ``--tokens`` tokens. Same server, same run, interleaved rounds; the headline is the median over rounds of
(concurrent tokens/s) / (single-client tokens/s), with time to first token (TTFT) and inter-token
latency (ITL, between streamed chunks) p50/p99 of both.

A second case, **shared CPU**, starts servers the way a user does (no thread pinning: one torch
thread per core) and measures one client's tokens/s on a quiet machine and beside as many
CPU-bound processes as there are cores (pure-Python busy loops), interleaved, for three setups:
``serve``'s default (OpenMP wait policy PASSIVE), ``--threads 1``, and ``OMP_WAIT_POLICY=ACTIVE``
(libgomp's own default, what ``serve`` ran with before it chose): the ratio busy/quiet of each,
measured in the same run, shows what spinning OpenMP threads cost on a shared CPU.

    python bench/serve.py                    # 4 layers, width 128, 16 clients, 128 tokens each
    python bench/serve.py --clients 32 --n-embd 256 --tokens 200
    python bench/serve.py --no-shared-cpu    # only the batching ratio
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from _common import machine_line, print_table

from gptlab.train.checkpoint import save_checkpoint
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import train_char_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--clients", type=int, default=16, help="concurrent streaming clients")
    p.add_argument("--requests", type=int, default=2, help="requests per client per round, one after the other")
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt length in characters (= tokens)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1 client, then N)")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="torch threads of the server (default: half the cores; the clients need the rest)")
    p.add_argument("--shared-cpu", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure one client beside CPU-bound processes (default: on)")
    p.add_argument("--shared-tokens", type=int, default=64, help="tokens per request in the shared-CPU case")
    p.add_argument("--shared-rounds", type=int, default=3, help="quiet/busy rounds in the shared-CPU case")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def build_checkpoint(directory: Path, args: argparse.Namespace) -> Path:
    tokenizer = train_char_tokenizer([inspect.getsource(textwrap)])
    torch.manual_seed(args.seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    save_checkpoint(directory / "bench-model", GPT(config), tokenizer, step=0)
    return directory / "bench-model"


_handed_out: set[int] = set()  # servers started together must not be given the same free port


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def start_server(run: Path, args: argparse.Namespace, log_path: Path, *, threads: int | None = -1,
                 wait_policy: str | None = None) -> tuple[subprocess.Popen, str]:
    """``gptlab serve`` on a free port, once it answers: see ``launch_server``."""
    process, url = launch_server(run, args, log_path, threads=threads, wait_policy=wait_policy)
    wait_until_healthy(process, url, log_path)
    return process, url


def launch_server(run: Path, args: argparse.Namespace, log_path: Path, *, threads: int | None = -1,
                  wait_policy: str | None = None) -> tuple[subprocess.Popen, str]:
    """``gptlab serve`` started on a free port (not yet answering): ``threads`` -1 is ``--threads``,
    None leaves serve's default; ``wait_policy`` sets ``$OMP_WAIT_POLICY`` (None: serve's choice)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPTLAB_API_KEY", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    threads = args.threads if threads == -1 else threads
    command = [sys.executable, "-m", "gptlab", "serve", str(run), "--port", str(port), "--device", args.device,
               "--max-batch-size", str(max(args.clients, 1)), "--max-queue", str(max(64, args.clients)),
               "--log-level", "warning", *(["--threads", str(threads)] if threads is not None else [])]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}"


def wait_until_healthy(process: subprocess.Popen, url: str, log_path: Path) -> None:
    """Wait until the server at ``url`` answers /health (exit with its log if it dies first)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gptlab serve exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("gptlab serve did not become healthy in 120 s")


@dataclass
class Phase:
    """What one phase (1 client or N clients) measured."""

    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


async def one_request(client: httpx.AsyncClient, body: dict[str, Any], phase: Phase) -> None:
    start = time.perf_counter()
    last = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk.get("usage"):
                phase.tokens += chunk["usage"]["completion_tokens"]
                continue
            now = time.perf_counter()
            if last is None:
                phase.ttft.append(now - start)
            else:
                phase.itl.append(now - last)
            last = now


async def run_phase(url: str, clients: int, body: dict[str, Any], requests: int) -> Phase:
    phase = Phase()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            for _ in range(requests):
                await one_request(client, body, phase)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        phase.seconds = time.perf_counter() - start
    return phase


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def latency_summary(phases: list[Phase]) -> dict[str, float]:
    ttft = [t for p in phases for t in p.ttft]
    itl = [t for p in phases for t in p.itl]
    return {"ttft_p50_ms": 1e3 * percentile(ttft, 50), "ttft_p99_ms": 1e3 * percentile(ttft, 99),
            "itl_p50_ms": 1e3 * percentile(itl, 50), "itl_p99_ms": 1e3 * percentile(itl, 99)}


SHARED_SETUPS = {  # name -> (--threads, $OMP_WAIT_POLICY); None: serve's default
    "serve's default (passive wait)": (None, None),
    "--threads 1": (1, None),
    "OMP_WAIT_POLICY=ACTIVE (before)": (None, "ACTIVE"),
}
ACTIVE = "OMP_WAIT_POLICY=ACTIVE (before)"


class BusyCPU:
    """One pure-Python busy loop per core, started and stopped on demand (the competing load)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> BusyCPU:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                          for _ in range(os.cpu_count() or 1)]
        time.sleep(0.2)  # let them get going
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def shared_cpu(run: Path, args: argparse.Namespace, tmp: Path, body: dict[str, Any]) -> dict[str, Any]:
    """One client's tokens/s, quiet and beside busy processes, for each setup in SHARED_SETUPS."""
    body = {**body, "max_tokens": args.shared_tokens}
    servers = {}
    try:
        # started together (nothing is timed while they load), then each waited for
        for i, (name, (threads, policy)) in enumerate(SHARED_SETUPS.items()):
            servers[name] = launch_server(run, args, tmp / f"shared-{i}.log", threads=threads, wait_policy=policy)
        for i, (process, url) in enumerate(servers.values()):
            wait_until_healthy(process, url, tmp / f"shared-{i}.log")
        quiet: dict[str, list[float]] = {name: [] for name in servers}
        busy: dict[str, list[float]] = {name: [] for name in servers}
        for name, (_, url) in servers.items():
            asyncio.run(run_phase(url, 1, body, 1))  # warm-up, untimed
        for _ in range(args.shared_rounds):
            for name, (_, url) in servers.items():
                quiet[name].append(asyncio.run(run_phase(url, 1, body, 1)).tokens_per_s)
            with BusyCPU():
                for name, (_, url) in servers.items():
                    busy[name].append(asyncio.run(run_phase(url, 1, body, 1)).tokens_per_s)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    return {name: {"quiet_tokens_per_s": statistics.median(quiet[name]),
                   "busy_tokens_per_s": statistics.median(busy[name]),
                   "busy_over_quiet": statistics.median(b / q for b, q in zip(busy[name], quiet[name], strict=True)),
                   "rounds": [b / q for b, q in zip(busy[name], quiet[name], strict=True)]}
            for name in servers}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.prompt_len + args.tokens > args.block_size:
        raise SystemExit("prompt-len + tokens must fit in block-size")
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-serve-") as tmp:
        run = build_checkpoint(Path(tmp), args)
        process, url = start_server(run, args, Path(tmp) / "server.log")
        try:
            body = {"prompt": ("def wrap(text):\n" * args.prompt_len)[: args.prompt_len], "max_tokens": args.tokens,
                    "temperature": 1.0, "stream": True, "stream_options": {"include_usage": True},
                    "ignore_eos": True}
            asyncio.run(run_phase(url, min(args.clients, 4), body, 1))  # warm-up, untimed
            single: list[Phase] = []
            concurrent: list[Phase] = []
            for _ in range(args.rounds):
                single.append(asyncio.run(run_phase(url, 1, body, args.requests)))
                concurrent.append(asyncio.run(run_phase(url, args.clients, body, args.requests)))
        finally:
            process.terminate()
            process.wait(timeout=30)
        shared = shared_cpu(run, args, Path(tmp), body) if args.shared_cpu else None
    ratios = [c.tokens_per_s / s.tokens_per_s for s, c in zip(single, concurrent, strict=True)]
    expected = args.tokens * args.requests
    assert all(p.tokens == expected for p in single), "a single-client request ended early"
    assert all(p.tokens == expected * args.clients for p in concurrent), "a concurrent request ended early"
    results = {
        "single": {"tokens_per_s": statistics.median(p.tokens_per_s for p in single), **latency_summary(single)},
        "concurrent": {"tokens_per_s": statistics.median(p.tokens_per_s for p in concurrent),
                       **latency_summary(concurrent)},
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "clients": args.clients,
        "shared_cpu": shared,
    }
    s, c = results["single"], results["concurrent"]
    print_table(f"serve: streaming /v1/completions, {args.clients} clients vs 1, same server, fp32, {args.device}", {
        "model": f"GPT-2 arch, {args.n_layer} layers, {args.n_head} heads, width {args.n_embd}, "
                 f"context {args.block_size} (seeded random weights, char tokenizer)",
        "requests": f"prompt {args.prompt_len} tokens, {args.tokens} new tokens, {args.requests} per client "
                    f"per round, {args.rounds} rounds",
        "machine": f"{machine_line()}; server: --threads {args.threads}",
        "1 client": f"{s['tokens_per_s']:8.1f} tokens/s   TTFT p50 {s['ttft_p50_ms']:.1f} ms, p99 "
                    f"{s['ttft_p99_ms']:.1f} ms   ITL p50 {s['itl_p50_ms']:.2f} ms, p99 {s['itl_p99_ms']:.2f} ms",
        f"{args.clients} clients": f"{c['tokens_per_s']:8.1f} tokens/s   TTFT p50 {c['ttft_p50_ms']:.1f} ms, p99 "
                    f"{c['ttft_p99_ms']:.1f} ms   ITL p50 {c['itl_p50_ms']:.2f} ms, p99 {c['itl_p99_ms']:.2f} ms",
        "ratio": f"{results['ratio']:.2f}x aggregate tokens/s, {args.clients} clients / 1 "
                 f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 5x on CPU)",
    })
    if shared is not None:
        active = shared[ACTIVE]
        rows = {name: f"quiet {r['quiet_tokens_per_s']:6.1f} tokens/s, busy {r['busy_tokens_per_s']:6.1f}: busy/quiet "
                      f"{r['busy_over_quiet']:.2f}x (rounds {', '.join(f'{x:.2f}' for x in r['rounds'])}); "
                      f"vs ACTIVE {r['quiet_tokens_per_s'] / active['quiet_tokens_per_s']:.1f}x quiet, "
                      f"{r['busy_tokens_per_s'] / active['busy_tokens_per_s']:.1f}x busy"
                for name, r in shared.items()}
        print_table(f"serve on a shared CPU: 1 client, {args.shared_tokens} tokens; busy = beside {os.cpu_count()} "
                    "busy-loop processes; servers started without thread pinning", rows)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
