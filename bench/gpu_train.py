"""GPU training speed: throughput and MFU at GPT-2 124M's size, and time to a validation loss on tiny-shakespeare.

``throughput``: GPT-2 (124M, context 1024, vocabulary padded to 50,304), or with ``--preset
smollm2-135m --block-size 1024`` the Llama family's shape at about the same size (GQA, SwiGLU,
RMSNorm, rotary positions), trained the way the Trainer trains on CUDA — bf16 autocast, TF32,
fused AdamW, flash attention through SDPA, torch.compile — on random tokens, with the largest batch that fits (powers of two, found by trying) unless
``--batch-size`` is given. Prints tokens/s and MFU against the GPU's dense bf16 peak (A100 312,
H100 SXM / H200 989 TFLOP/s); on an unknown GPU, MFU is not printed rather than guessed.

``quality``: the well-known single-GPU character-level tiny-shakespeare recipe (6 layers, 6 heads,
width 384, context 256, batch 64, dropout 0.2, lr 1e-3) through ``bench/time_to_quality.py`` on
CUDA, stopping when the full validation loss reaches 1.47. Target: under 90 s on one H100. The
recipe is nanoGPT's, with AdamW; flags after the path override it (e.g. ``--optimizer muon --lr
4e-3``: Muon, which moved the CPU time-to-quality run most, has not been tried on a GPU yet).

    python bench/gpu_train.py throughput                  # on a CUDA machine
    python bench/gpu_train.py throughput --preset smollm2-135m --block-size 1024   # the Llama family, 135M
    python bench/gpu_train.py quality ../shared/data/tinyshakespeare.txt
    python bench/gpu_train.py throughput --device cpu --preset tiny --batch-size 2 --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from _common import machine_line, print_table

from gptlab.model.config import preset
from gptlab.model.count import count_config
from gptlab.train.gpus import peak_flops_of
from gptlab.model.gpt import GPT
from gptlab.train.trainer import TrainConfig, make_optimizer, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput", help="tokens/s and MFU (GPT-2 124M, or --preset smollm2-135m)")
    t.add_argument("--preset", default="gpt2")
    t.add_argument("--block-size", type=int, default=None, help="default: the preset's (1024 for gpt2)")
    t.add_argument("--batch-size", type=int, default=None, help="default: the largest power of two that fits")
    t.add_argument("--max-batch-size", type=int, default=64)
    t.add_argument("--steps", type=int, default=20, help="timed steps")
    t.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    t.add_argument("--no-compile", action="store_true")
    t.add_argument("--device", default="cuda")
    q = sub.add_parser("quality", help="seconds to val loss 1.47 on tiny-shakespeare (char level)")
    q.add_argument("data", nargs="?", default=None, help="tiny-shakespeare text file")
    q.add_argument("rest", nargs=argparse.REMAINDER, help="more flags for bench/time_to_quality.py")
    return p.parse_args(argv)


def _setup(args: argparse.Namespace, batch_size: int) -> tuple[Any, Any, Any]:
    device = resolve_device(args.device)
    overrides = {"block_size": args.block_size} if args.block_size else {}
    config = preset(args.preset, vocab_pad_multiple=64 if device.type == "cuda" else 1, **overrides)
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, TrainConfig(learning_rate=6e-4, min_lr=6e-5), device)
    step_model = model if args.no_compile or device.type != "cuda" else torch.compile(model)
    x = torch.randint(0, config.vocab_size, (batch_size, config.block_size), device=device)
    bf16 = device.type == "cuda"

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, loss = step_model(x, x)
        loss.backward()
        loss = loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return model, step, device


def _fits(args: argparse.Namespace, batch_size: int) -> bool:
    try:
        _, step, device = _setup(args, batch_size)
        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def largest_batch(args: argparse.Namespace) -> int:
    batch, best = 1, 0
    while batch <= args.max_batch_size and _fits(args, batch):
        best, batch = batch, batch * 2
    if best == 0:
        raise SystemExit("not even a batch of 1 fits")
    return best


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batch = args.batch_size or largest_batch(args)
    model, step, device = _setup(args, batch)
    tokens_per_step = batch * model.config.block_size
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - t0) / args.steps
    tokens_per_s = tokens_per_step / seconds
    flops_per_token = count_config(model.config).training_flops_per_token
    peak = peak_flops_of(device)
    mfu = tokens_per_s * flops_per_token / peak if peak else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print_table(f"gpu_train throughput: {args.preset} training step, bf16 autocast + TF32 + fused AdamW + compile", {
        "model": f"{args.preset}: {model.num_parameters():,} params, context {model.config.block_size}, "
                 f"vocab {model.config.vocab_size} (padded to {model.config.padded_vocab_size})",
        "batch": f"{batch} x {model.config.block_size} = {tokens_per_step:,} tokens/step"
                 + ("" if args.batch_size else " (largest power of two that fits)"),
        "device": f"{device} ({gpu}); peak {'unknown: MFU not reported' if peak is None else f'{peak / 1e12:.0f} TFLOP/s bf16'}",
        "flops": f"{flops_per_token / 1e9:.3f} GFLOP per token (6N + attention, count_config)",
        "machine": machine_line(),
    })
    print(f"warm-up {args.warmup} steps {warmup_s:.1f} s (includes compilation); last loss {loss.item():.3f}")
    mfu_text = f", MFU {mfu:.1%} (target >= 50%)" if mfu is not None else ""
    print(f"{tokens_per_s:,.0f} tokens/s, {seconds * 1e3:.1f} ms/step{mfu_text}")
    return {"batch_size": batch, "tokens_per_s": tokens_per_s, "step_s": seconds, "mfu": mfu, "gpu": gpu}


QUALITY_RECIPE = [
    "--device", "cuda", "--dtype", "bfloat16", "--compile", "--target", "1.47", "--model", "{}",  # GPT-2's shape
    "--n-layer", "6", "--n-head", "6", "--n-embd", "384", "--block-size", "256", "--dropout", "0.2",
    "--batch-size", "64", "--optimizer", "adamw", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup", "100", "--schedule-steps", "5000",
    "--beta2", "0.99", "--eval-interval", "250", "--eval-iters", "20", "--max-time", "600",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.what == "throughput":
        return throughput(args)
    import time_to_quality

    data = [args.data] if args.data else []
    return time_to_quality.main([*data, *QUALITY_RECIPE, *args.rest])


if __name__ == "__main__":
    main(sys.argv[1:])
