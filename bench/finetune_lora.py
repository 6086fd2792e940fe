"""LoRA versus full fine-tuning: trainable parameters and time per training step, same model, same batches.

Both sides start from the same GPT (same weights), see the same padded batches of examples
(random lengths, loss on the second half of each, as a prompt/completion record gives), and take
the step ``gptlab.finetune.finetuner`` takes: forward with loss, backward, gradient clipping over the
trained parameters, AdamW (``gptlab.train.trainer.make_optimizer``, which only takes parameters that
require gradients), zero_grad. The LoRA side wraps the attention and MLP projections
(``gptlab.finetune.lora``, rank 8 by default). After warm-up the sides run in interleaved rounds; the
headline is the median over rounds of LoRA step time / full step time.

    python bench/finetune_lora.py                  # preset small (4 layers, width 128, context 128)
    python bench/finetune_lora.py --preset mini    # 6 layers, width 384, context 256
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from _common import interleaved_rounds, machine_line, median_ratio, print_table

from gptlab.model.config import preset
from gptlab.finetune.config import DEFAULT_LORA_TARGETS, FinetuneConfig, LoRAConfig
from gptlab.finetune.lora import inject_lora, trainable_fraction
from gptlab.model.gpt import GPT, IGNORE_INDEX
from gptlab.train.trainer import make_optimizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="model shape (tiny, small, mini, gpt2, ...)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--block-size", type=int, default=None, help="override the preset's context")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default: 0, as gptlab and peft)")
    p.add_argument("--targets", default=",".join(DEFAULT_LORA_TARGETS))
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side before timing")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=3, help="training steps per side per round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_batches(n: int, batch_size: int, block_size: int, vocab_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Padded batches of random-length examples, targets IGNORE_INDEX on the prompt half and the padding."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        lengths = torch.randint(block_size // 2, block_size + 1, (batch_size,), generator=g)
        width = int(lengths.max())
        x = torch.randint(0, vocab_size, (batch_size, width), generator=g)
        y = torch.randint(0, vocab_size, (batch_size, width), generator=g)
        for row, length in enumerate(lengths.tolist()):
            y[row, : length // 2] = IGNORE_INDEX
            y[row, length:] = IGNORE_INDEX
        batches.append((x, y))
    return batches


def step_fn(model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> Callable[[], None]:
    """One fine-tuning step per call, cycling over ``batches``."""
    schedule = FinetuneConfig(learning_rate=lr).schedule(max_steps=1000)
    optimizer = make_optimizer(model, schedule, torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = {"i": 0}

    def step() -> None:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"vocab_size": args.vocab_size, "dropout": 0.0}
    if args.block_size:
        overrides["block_size"] = args.block_size
    config = preset(args.preset, **overrides)
    torch.manual_seed(args.seed)
    full = GPT(config).train()
    lora = copy.deepcopy(full)
    lora_config = LoRAConfig(rank=args.rank, alpha=args.alpha, dropout=args.dropout,
                             targets=tuple(t for t in args.targets.split(",") if t))
    inject_lora(lora, lora_config)
    batches = make_batches(8, args.batch_size, config.block_size, config.vocab_size, args.seed)
    steps = {"full": step_fn(full, batches, 1e-4), "lora": step_fn(lora, batches, 1e-3)}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    times = interleaved_rounds(steps, rounds=args.rounds, repeats=args.steps)
    full_trainable, full_total = trainable_fraction(full)
    lora_trainable, lora_total = trainable_fraction(lora)
    ratio = median_ratio(times["lora"], times["full"])
    results = {
        "full": {"trainable": full_trainable, "total": full_total, "step_ms": 1000 * statistics.median(times["full"])},
        "lora": {"trainable": lora_trainable, "total": lora_total, "step_ms": 1000 * statistics.median(times["lora"])},
        "trainable_fraction": lora_trainable / full_total,
        "step_time_ratio": ratio,
    }
    print(machine_line())
    print_table(
        f"LoRA vs full fine-tuning: preset {args.preset} ({config.n_layer} layers, width {config.n_embd}, "
        f"context {config.block_size}, vocab {config.vocab_size}), batch {args.batch_size}, "
        f"LoRA r={args.rank}, dropout {args.dropout} on {', '.join(lora_config.targets)}",
        {
            "full: trained parameters": f"{full_trainable:,} of {full_total:,} (100%)",
            "LoRA: trained parameters": f"{lora_trainable:,} of {full_total:,} base "
            f"({100 * lora_trainable / full_total:.2f}%)",
            "full: ms/step (median)": f"{results['full']['step_ms']:.1f}",
            "LoRA: ms/step (median)": f"{results['lora']['step_ms']:.1f}",
            "full: AdamW state": f"{2 * full_trainable * 4 / 1e6:.1f} MB (fp32 exp_avg + exp_avg_sq)",
            "LoRA: AdamW state": f"{2 * lora_trainable * 4 / 1e6:.2f} MB",
            "LoRA / full step time": f"{ratio:.2f}x (median over {args.rounds} rounds)",
        },
    )
    return results


if __name__ == "__main__":
    main()
