"""Training throughput: gptlab's GPT vs Hugging Face's GPT2LMHeadModel (SDPA attention), on CPU.

Both models get the same GPT-2 shape, the same weights, the same batches and the same AdamW
(built by ``gptlab.train.trainer.make_optimizer`` for both, so groups, betas and implementation agree),
the same precision, that of the Trainer for ``--dtype`` (``gptlab.train.precision``): by default
``auto``, as in ``gptlab train``, which puts both forwards under bf16 autocast on a CPU with bf16
units and leaves them in fp32 elsewhere; ``--dtype float32`` or ``bfloat16`` asks for one. Dropout 0.
One training step is what the Trainer does: forward with loss, backward, gradient clipping, AdamW
step, zero_grad. After warm-up the two sides run in interleaved rounds; the headline is the median
over rounds of (gptlab tokens/s) / (HF tokens/s).

A third side, ``gemms``, runs only the weight matmuls of a step: for every linear layer (lm_head
included) the forward product, the input gradient and the weight gradient, at the step's shapes.
Both models must do these, so HF's step time ÷ this time is the most any implementation could
gain over HF here (attention, GELU, LayerNorm, loss and AdamW all free): printed as the ceiling.

    python bench/train_throughput.py                 # defaults: 4 layers, width 256, context 256
    python bench/train_throughput.py --compile       # also time torch.compile'd gptlab
    python bench/train_throughput.py --dtype float32  # fp32 on every CPU (auto: bf16 where it has bf16 units)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from _common import SHAPES, bench_config, hf_twin, shape_line, interleaved_rounds, machine_line, median_ratio, print_table
from gptlab.model.gpt import GPT
from gptlab.train import precision
from gptlab.train.trainer import TrainConfig, make_optimizer

CHAR_VOCAB = 65 + 4 + 256  # tiny-shakespeare's characters + special tokens + byte fallback


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="gpt2",
                   help="GPT-2's shape against GPT2LMHeadModel, or the Llama family's against LlamaForCausalLM")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=CHAR_VOCAB)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side before timing")
    p.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=3, help="training steps per side per round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(gptlab model)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="every side's precision, as `gptlab train --dtype`: auto (the default) is bf16 autocast "
                        "on a CPU with bf16 units and fp32 elsewhere")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train_step_fn(
    model: torch.nn.Module, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]], grad_clip: float,
    autocast: Any,
) -> Callable[[], None]:
    """One Trainer step per call (forward + loss, backward, clip, AdamW, zero_grad), cycling over
    ``batches``; the forward runs in ``autocast``, the Trainer's context for its ``--dtype``."""
    state = {"i": 0}
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast:
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def gemm_floor(model: nn.Module, rows: int, dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    """The weight matmuls of one training step of ``model`` on ``rows`` tokens, and nothing else
    (in ``dtype``: under bf16 autocast all three products of a linear layer run in bf16)."""
    operands = []
    for layer in (m for m in model.modules() if isinstance(m, nn.Linear)):
        operands.append((
            torch.randn(rows, layer.in_features, dtype=dtype),  # the layer's input
            torch.randn(layer.out_features, layer.in_features, dtype=dtype),  # its weight
            torch.randn(rows, layer.out_features, dtype=dtype),  # the gradient arriving at its output
        ))

    def step() -> None:
        for x, w, grad in operands:
            torch.mm(x, w.t())  # forward
            torch.mm(grad, w)  # gradient of the input
            torch.mm(grad.t(), x)  # gradient of the weight

    return step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = bench_config(args.shape, vocab_size=args.vocab_size, block_size=args.block_size,
                          n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    train_cfg = TrainConfig(optimizer="adamw")  # the Trainer's AdamW settings, which work on HF's modules too
    device = torch.device("cpu")
    ours = GPT(config).train()
    hf = hf_twin(ours).train()
    batches = [
        (torch.randint(0, config.vocab_size, (args.batch_size, config.block_size)),
         torch.randint(0, config.vocab_size, (args.batch_size, config.block_size)))
        for _ in range(4)
    ]
    opt_ours = make_optimizer(ours, train_cfg, device)
    opt_hf = make_optimizer(hf, train_cfg, device)  # same groups, betas, foreach/fused choice
    impl = "fused" if opt_ours.defaults.get("fused") else "foreach" if opt_ours.defaults.get("foreach") else "default"

    # same weights, same batch: the first losses must agree before anything is timed
    x, y = batches[0]
    with torch.no_grad():
        loss_ours = float(ours(x, y)[1])
        loss_hf = float(hf(input_ids=x, labels=y, shift_labels=y).loss)
    if abs(loss_ours - loss_hf) > 1e-4:
        raise RuntimeError(f"models disagree before training: loss {loss_ours} vs {loss_hf}")

    bf16 = precision.uses_bf16(args.dtype, device)
    autocast = precision.autocast_for(args.dtype, device)
    steps: dict[str, Callable[[], None]] = {
        "gptlab": train_step_fn(ours, lambda x, y: ours(x, y)[1], opt_ours, batches, train_cfg.grad_clip, autocast),
        "hf": train_step_fn(
            hf, lambda x, y: hf(input_ids=x, labels=y, shift_labels=y).loss, opt_hf, batches, train_cfg.grad_clip,
            autocast,
        ),
        "gemms": gemm_floor(ours, args.batch_size * config.block_size, torch.bfloat16 if bf16 else torch.float32),
    }
    compile_s = None
    if args.compile:
        twin = GPT(config).train()
        twin.load_state_dict(ours.state_dict())
        compiled = torch.compile(twin)
        opt_twin = make_optimizer(twin, train_cfg, device)
        steps["gptlab+compile"] = train_step_fn(
            twin, lambda x, y: compiled(x, y)[1], opt_twin, batches, train_cfg.grad_clip, autocast
        )
        start = time.perf_counter()
        steps["gptlab+compile"]()
        compile_s = time.perf_counter() - start

    tokens = args.batch_size * config.block_size
    numbers = precision.describe(args.dtype, device) + (" (--dtype auto)" if args.dtype == "auto" else "")
    print_table(f"train_throughput: one Trainer step (fwd + loss + bwd + clip + AdamW), {numbers}, CPU", {
        "model": f"{shape_line(config)}, {config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
                 f"context {config.block_size}, vocab {config.vocab_size}, {ours.num_parameters():,} params",
        "batch": f"{args.batch_size} x {config.block_size} = {tokens} tokens/step",
        "optimizer": f"AdamW ({impl}) lr {train_cfg.learning_rate}, betas ({train_cfg.beta1}, {train_cfg.beta2}), "
                     f"wd {train_cfg.weight_decay}, clip {train_cfg.grad_clip}",
        "reference": f"transformers.{type(hf).__name__}, attn_implementation='sdpa', loss via labels/shift_labels",
        "gemms": "only the step's weight matmuls (forward, input and weight gradients): the floor",
        "timing": f"{args.warmup} warm-up steps, then {args.rounds} interleaved rounds x {args.steps} steps, median",
        "machine": machine_line(),
        "initial loss": f"gptlab {loss_ours:.5f}  hf {loss_hf:.5f}",
    })
    if compile_s is not None:
        print(f"  torch.compile first step: {compile_s:.1f} s")
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = interleaved_rounds(steps, args.rounds, args.steps)
    results: dict[str, Any] = {"config": vars(args), "tokens_per_step": tokens}
    print("results")
    for name, secs in times.items():
        tok_s = tokens / statistics.median(secs)
        ratio = median_ratio(times["hf"], secs)
        results[name] = {"tokens_per_s": tok_s, "ratio_vs_hf": ratio, "step_s": secs}
        print(f"  {name:<15} {tok_s:9,.0f} tokens/s   {statistics.median(secs) * 1e3:7.1f} ms/step"
              f"   ratio vs hf {ratio:5.2f}x")
    results["ratio"] = results["gptlab"]["ratio_vs_hf"]
    results["ceiling"] = results["gemms"]["ratio_vs_hf"]
    print(f"ceiling here (hf step / gemms-only step): {results['ceiling']:.2f}x")
    target = 1.5 if args.shape == "gpt2" else 1.2  # the targets set for each shape (bench/README)
    print(f"gptlab / hf training throughput, {numbers}: {results['ratio']:.2f}x (target >= {target}x)")
    if "gptlab+compile" in results:
        print(f"compiled gptlab / hf: {results['gptlab+compile']['ratio_vs_hf']:.2f}x")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
