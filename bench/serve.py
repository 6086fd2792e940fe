"""Serving throughput: aggregate generated tokens/s with 16 concurrent streaming clients ÷ with 1.

The script saves a seeded random GPT (and a char tokenizer) as a checkpoint, starts ``gptlab serve``
on it (a real server process on a loopback port, continuous batching with ``--max-batch-size`` =
clients), and drives it over HTTP with streaming ``/v1/completions`` requests: in each round, first
1 client, then ``--clients`` clients at once, each sending ``--requests`` requests one after the
other. ``<|endoftext|>`` is banned (``logit_bias``) so every request generates exactly ``--tokens``
tokens. Same server, same run, interleaved rounds; the headline is the median over rounds of
(concurrent tokens/s) / (single-client tokens/s), with time to first token (TTFT) and inter-token
latency (ITL, between streamed chunks) p50/p99 of both.

    python bench/serve.py                    # 4 layers, width 128, 16 clients, 128 tokens each
    python bench/serve.py --clients 32 --n-embd 256 --tokens 200
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ)
    env.pop("GPTLAB_API_KEY", None)
    env["OMP_NUM_THREADS"] = str(args.threads)
    command = [sys.executable, "-m", "gptlab", "serve", str(run), "--port", str(port), "--device", args.device,
               "--max-batch-size", str(max(args.clients, 1)), "--max-queue", str(max(64, args.clients)),
               "--log-level", "warning"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gptlab serve exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.prompt_len + args.tokens > args.block_size:
        raise SystemExit("prompt-len + tokens must fit in block-size")
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-serve-") as tmp:
        run = build_checkpoint(Path(tmp), args)
        process, url = start_server(run, args, Path(tmp) / "server.log")
        try:
            eot = httpx.post(url + "/tokenize", json={"prompt": "<|endoftext|>"}).json()["tokens"][0]
            body = {"prompt": ("def wrap(text):\n" * args.prompt_len)[: args.prompt_len], "max_tokens": args.tokens,
                    "temperature": 1.0, "stream": True, "stream_options": {"include_usage": True},
                    "logit_bias": {str(eot): -100}}
            asyncio.run(run_phase(url, min(args.clients, 4), body, 1))  # warm-up, untimed
            single: list[Phase] = []
            concurrent: list[Phase] = []
            for _ in range(args.rounds):
                single.append(asyncio.run(run_phase(url, 1, body, args.requests)))
                concurrent.append(asyncio.run(run_phase(url, args.clients, body, args.requests)))
        finally:
            process.terminate()
            process.wait(timeout=30)
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
    }
    s, c = results["single"], results["concurrent"]
    print_table(f"serve: streaming /v1/completions, {args.clients} clients vs 1, same server, fp32, {args.device}", {
        "model": f"GPT-2 arch, {args.n_layer} layers, {args.n_head} heads, width {args.n_embd}, "
                 f"context {args.block_size} (seeded random weights, char tokenizer)",
        "requests": f"prompt {args.prompt_len} tokens, {args.tokens} new tokens, {args.requests} per client "
                    f"per round, {args.rounds} rounds",
        "machine": f"{machine_line()}; server: {args.threads} torch thread(s)",
        "1 client": f"{s['tokens_per_s']:8.1f} tokens/s   TTFT p50 {s['ttft_p50_ms']:.1f} ms, p99 "
                    f"{s['ttft_p99_ms']:.1f} ms   ITL p50 {s['itl_p50_ms']:.2f} ms, p99 {s['itl_p99_ms']:.2f} ms",
        f"{args.clients} clients": f"{c['tokens_per_s']:8.1f} tokens/s   TTFT p50 {c['ttft_p50_ms']:.1f} ms, p99 "
                    f"{c['ttft_p99_ms']:.1f} ms   ITL p50 {c['itl_p50_ms']:.2f} ms, p99 {c['itl_p99_ms']:.2f} ms",
        "ratio": f"{results['ratio']:.2f}x aggregate tokens/s, {args.clients} clients / 1 "
                 f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 5x on CPU)",
    })
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
