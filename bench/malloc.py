"""What ``keep_freed_memory`` (``gptlab.cli.malloc``) buys a training step: glibc's defaults vs the kept thresholds.

malloc's settings hold for a whole process, so each side runs in processes of its own: a fresh
Python process per measurement builds the main job's model (``gptlab train``'s defaults: the
preset, Muon, batch 16 × 128 tokens, vocabulary 2,048), warms up, and times training steps
(forward, backward, clipping, optimizer step), with the model eager or compiled. The two sides
alternate, pair after pair, so a drift of the machine hits both; the headline is the median over
pairs of (default step time) / (kept step time), with the page faults per step of each.

    python bench/malloc.py                 # eager and compiled, 3 pairs each
    python bench/malloc.py --pairs 5 --no-compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from _common import print_table

STEP = """
import json, resource, statistics, sys, time, torch
from gptlab.cli.malloc import keep_freed_memory
from gptlab.train.config import TrainConfig
from gptlab.model.gpt import GPT
from gptlab.train.trainer import make_optimizer
kept, compiled, steps = sys.argv[1] == "kept", sys.argv[2] == "compiled", int(sys.argv[3])
if kept:
    assert keep_freed_memory()
cfg = TrainConfig()
vocab = 2048
torch.manual_seed(0)
model = GPT(cfg.model_config(vocab, "cpu")).train()
forward = torch.compile(model) if compiled else model
optimizer = make_optimizer(model, cfg, torch.device("cpu"))
x = torch.randint(0, vocab, (cfg.batch_size, model.config.block_size))
y = torch.randint(0, vocab, (cfg.batch_size, model.config.block_size))
def step():
    forward(x, y)[1].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(5):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
print(json.dumps({"step_s": statistics.median(times), "faults": faults}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="alternated (default, kept) process pairs per mode")
    p.add_argument("--steps", type=int, default=30, help="timed steps per process")
    p.add_argument("--no-compile", action="store_true", help="time the eager model only")
    return p.parse_args(argv)


def measure(side: str, mode: str, steps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # glibc's own defaults
    out = subprocess.run([sys.executable, "-c", STEP, side, mode, str(steps)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    print_table("malloc: the main job's training step, glibc's malloc defaults vs keep_freed_memory()", {
        "model": "gptlab train's defaults (qwen3-small, Muon, batch 16 x 128, vocab 2048), fp32, CPU",
        "timing": f"a fresh process per measurement, {args.steps} steps after 5 warm-up steps, median; "
                  f"{args.pairs} alternated pairs per mode",
    })
    results: dict[str, Any] = {}
    print("results")
    for mode in modes:
        pairs = [(measure("default", mode, args.steps), measure("kept", mode, args.steps)) for _ in range(args.pairs)]
        ratio = statistics.median(d["step_s"] / k["step_s"] for d, k in pairs)
        for d, k in pairs:
            print(f"  {mode:<8}  default {d['step_s'] * 1e3:6.1f} ms/step {d['faults']:7,.0f} faults"
                  f"   kept {k['step_s'] * 1e3:6.1f} ms/step {k['faults']:7,.0f} faults")
        print(f"  {mode:<8}  kept / default speed: {ratio:.3f}x (median over {args.pairs} pairs)")
        results[mode] = {"ratio": ratio, "pairs": pairs}
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
