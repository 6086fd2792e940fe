"""Time to quality: wall time for a ~0.8M-parameter char-level GPT to reach a validation loss on tiny-shakespeare.

The path is gptlab's own: ``gptlab.data.shards.prepare`` (char tokenizer, first 90% of the file for
training, last 10% for validation), then ``gptlab.train.trainer.Trainer`` with a ``TrainConfig``.

The protocol is the speedrun's (modded-nanogpt's record runs): the recipe fixes its number of steps,
the schedule runs to its end, and then the *full* validation loss (every non-overlapping window of
the validation split, ~110k tokens) must be <= the target. The headline is the training time;
the evaluation's time is printed beside it. With ``--eval-interval N`` the run is checked every N
steps instead: the Trainer's quick estimate (``eval_iters`` fixed windows) is the detector, the full
loss is measured when the estimate comes within ``--confirm-margin`` of the target, and the run
stops at the first full loss <= the target. torch.compile, when asked for, counts in the training
time; preparing the data and building the Trainer do not (both are printed separately: the
Trainer's optimizer makes torch import ``torch._dynamo``, a one-off 1-2 s).

    python bench/time_to_quality.py                                   # ../shared/data/tinyshakespeare.txt
    python bench/time_to_quality.py PATH --lr 3e-3 --batch-size 32
    python bench/time_to_quality.py --model '{}' --n-layer 4 --lr 1.6e-2 --schedule-steps 450 --eval-interval 100  # GPT-2's shape
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_line, print_table

from gptlab.train.curves import read_metrics
from gptlab.data.shards import PreparedData, prepare
from gptlab.model.gpt import GPT
from gptlab.train.trainer import TrainConfig, Trainer, resolve_device

# the shape the recipe search chose (bench/README): GPT-2's width and GELU MLP, with Qwen3's norms and
# positions, one layer, and a hashed bigram embedding of 4,096 rows holding most of the parameters
DEFAULT_SHAPE = {"norm": "rmsnorm", "positions": "rotary", "bias": False, "qk_norm": True, "bigram_buckets": 4096}
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", default=str(DEFAULT_DATA.resolve()), help="tiny-shakespeare text file")
    p.add_argument("--target", type=float, default=1.88, help="validation loss to reach")
    # model: fixed by the benchmark, overridable for smoke tests
    p.add_argument("--n-layer", type=int, default=1)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.0)
    # the recipe
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model", type=json.loads, default=dict(DEFAULT_SHAPE), metavar="JSON",
                   help="more model fields (TrainConfig.model); the default is today's family at this width "
                        f"({json.dumps(DEFAULT_SHAPE)}: RMSNorm, rotary positions, no biases, QK-norm, a hashed "
                        "bigram embedding; the GELU MLP and the tied head stay), '{}' is GPT-2's shape")
    p.add_argument("--optimizer", default="muon", choices=["adamw", "muon"], help="TrainConfig.optimizer")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--min-lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--schedule-steps", type=int, default=220, help="schedule length (TrainConfig.max_steps)")
    p.add_argument("--decay", default="cosine", choices=["cosine", "linear"], help="TrainConfig.decay")
    p.add_argument("--cooldown-fraction", type=float, default=1.0, help="TrainConfig.cooldown_fraction")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="TrainConfig.compile (compile time counts)")
    # measuring
    p.add_argument("--eval-interval", type=int, default=0,
                   help="steps between quick evaluations; 0: one evaluation, when the schedule ends (the speedrun "
                        "protocol: the recipe fixes its step count)")
    p.add_argument("--eval-iters", type=int, default=8, help="batches per quick evaluation")
    p.add_argument("--confirm-margin", type=float, default=0.03,
                   help="run the full validation when the quick estimate is below target + margin")
    p.add_argument("--max-time", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (bench/gpu_train.py quality uses cuda)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto (bf16 autocast on CUDA)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--work-dir", default=None, help="where to put the prepared data and run (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results and the curve to this file")
    return p.parse_args(argv)


@torch.inference_mode()
def full_val_loss(
    model: GPT, tokens: np.ndarray, block_size: int, batch: int = 32, autocast: Any = None
) -> float:
    """Mean next-token loss over every non-overlapping ``block_size`` window of ``tokens``."""
    n_windows = (len(tokens) - 1) // block_size
    offsets = np.arange(block_size + 1)
    was_training = model.training
    model.eval()
    total = 0.0
    for first in range(0, n_windows, batch):
        starts = np.arange(first, min(n_windows, first + batch)) * block_size
        windows = torch.from_numpy(np.asarray(tokens[starts[:, None] + offsets], dtype=np.int64))
        windows = windows.to(model.transformer.wte.weight.device)
        with autocast or contextlib.nullcontext():
            _, loss = model(windows[:, :-1], windows[:, 1:])
        total += float(loss) * len(starts)
    model.train(was_training)
    return total / n_windows


class TargetReached(Exception):
    pass


class TimeToQualityTrainer(Trainer):
    """The Trainer, stopping as soon as the full validation loss is <= ``target``."""

    def __init__(self, *args: Any, target: float, margin: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        # checked only when the schedule ends: the full validation loss, always
        self.margin = margin if self.cfg.eval_interval < self.cfg.max_steps else math.inf
        self.curve: list[dict[str, Any]] = []
        self.full_evals = 0
        self.eval_seconds = 0.0  # every evaluation, quick and full: wall time that trained nothing

    def _eval_and_log(self, start: float) -> None:
        began = time.perf_counter()
        try:
            self._evaluate_and_check(start)
        finally:
            self.eval_seconds += time.perf_counter() - began

    def _evaluate_and_check(self, start: float) -> None:
        super()._eval_and_log(start)  # the Trainer's own quick estimate, logged to metrics.jsonl
        point: dict[str, Any] = {"step": self.step, "val_quick": round(self.last_val, 4)}
        reached = False
        if self.last_val <= self.target + self.margin:
            full = full_val_loss(self.model, self.data.val, self.model.config.block_size, autocast=self.autocast)
            self.full_evals += 1
            point["val_full"] = round(full, 4)
            reached = full <= self.target
        point["elapsed"] = round(time.perf_counter() - start, 2)  # ``start``: when fit() began
        self.curve.append(point)
        if reached:
            raise TargetReached


def _train_losses(run_dir: Path) -> dict[int, float]:
    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.exists() else []
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gptlab-ttq-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        t0 = time.perf_counter()
        data_dir = work / "data"
        prepare(args.data, data_dir, tokenizer_kind="char", val_fraction=0.1, max_bytes=None, progress=False)
        prepare_s = time.perf_counter() - t0
        data = PreparedData.open(data_dir)
        cfg = TrainConfig(
            data=str(data_dir), tokenizer="char", val_fraction=0.1, preset="small",
            n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
            dropout=args.dropout, model=args.model,
            batch_size=args.batch_size, max_steps=args.schedule_steps, max_time=args.max_time,
            optimizer=args.optimizer, learning_rate=args.lr, min_lr=min(args.min_lr, args.lr), warmup_steps=args.warmup,
            decay=args.decay, cooldown_fraction=args.cooldown_fraction,
            weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2, grad_clip=args.grad_clip,
            out=str(work / "run"), eval_interval=args.eval_interval or args.schedule_steps, eval_iters=args.eval_iters,
            log_interval=10, checkpoint_interval=10**9, seed=args.seed, device=args.device, dtype=args.dtype,
            compile=args.compile, progress=False, sample_tokens=0,
        )
        torch.manual_seed(cfg.seed)
        model = GPT(cfg.model_config(data.tokenizer.vocab_size, resolve_device(args.device).type))
        n_val_windows = (len(data.val) - 1) // args.block_size
        print_table(f"time_to_quality: char-level GPT on tiny-shakespeare, {args.device}, {args.dtype}", {
            "data": f"{args.data}: {len(data.train):,} train / {len(data.val):,} val tokens, "
                    f"vocab {data.tokenizer.vocab_size} (prepare took {prepare_s:.1f} s, not counted)",
            "model": f"{args.n_layer} layers, {args.n_head} heads, width {args.n_embd}, context {args.block_size}, "
                     f"{model.num_parameters():,} params, model fields {json.dumps(args.model) if args.model else '{} (GPT-2)'}",
            "recipe": f"batch {args.batch_size}, {args.optimizer} lr {args.lr:g} -> {cfg.min_lr:g} {args.decay} over "
                      f"{args.schedule_steps} steps, warmup {args.warmup}, betas ({args.beta1}, {args.beta2}), "
                      f"wd {args.weight_decay}, clip {args.grad_clip}, compile {args.compile}",
            "target": f"full val loss <= {args.target} (all {n_val_windows} non-overlapping val windows, "
                      f"{n_val_windows * args.block_size:,} tokens)",
            "checked": (f"Trainer.evaluate every {args.eval_interval} steps on {args.eval_iters} x {args.batch_size} "
                        f"fixed windows; full val when within {args.confirm_margin} of the target")
                       if args.eval_interval else "full val once, when the schedule ends",
            "machine": machine_line(),
        })
        setup_start = time.perf_counter()
        trainer = TimeToQualityTrainer(
            cfg, model, data.tokenizer, data, work / "run",
            target=args.target, margin=args.confirm_margin,
        )
        # building the optimizer makes torch import torch._dynamo once per process (~1-2 s):
        # setup, like preparing the data, is printed and not counted
        setup_s = time.perf_counter() - setup_start
        print(f"setup (Trainer and optimizer construction) took {setup_s:.1f} s, not counted")
        clock = time.perf_counter()
        reached = True
        try:
            trainer.fit()
            reached = False
        except TargetReached:
            pass
        wall = time.perf_counter() - clock
        train_losses = _train_losses(work / "run")
        for point in trainer.curve:
            point["train"] = train_losses.get(point["step"])
        final = next((p["val_full"] for p in reversed(trainer.curve) if "val_full" in p), None)
        if final is None:
            final = full_val_loss(model, data.val, args.block_size)
        print("curve (step, elapsed s, train loss, quick val, full val)")
        for p in trainer.curve:
            train = f"{p['train']:.4f}" if p.get("train") is not None else "   -  "
            full = f"{p['val_full']:.4f}" if "val_full" in p else "   -  "
            print(f"  {p['step']:6d} {p['elapsed']:8.2f} {train} {p['val_quick']:.4f} {full}")
        tokens = trainer.step * args.batch_size * args.block_size
        verdict = "reached" if reached else "NOT reached"
        train_s = wall - trainer.eval_seconds
        print(f"target {args.target} {verdict}: trained {train_s:.1f} s ({trainer.step} steps, {tokens:,} tokens); "
              f"evaluating took {trainer.eval_seconds:.1f} s more ({trainer.full_evals} full); "
              f"{wall:.1f} s wall in all; final full val loss {final:.4f}")
        results = {
            "config": vars(args), "reached": reached, "wall_s": wall, "train_s": train_s,
            "eval_s": trainer.eval_seconds, "steps": trainer.step,
            "tokens": tokens, "final_val_loss": final, "curve": trainer.curve, "prepare_s": prepare_s,
            "setup_s": setup_s,
        }
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return results


if __name__ == "__main__":
    main(sys.argv[1:])
