"""CLI for fine-tuning: ``gptlab finetune``, ``gptlab lora merge``, ``gptlab dataset docstrings``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from gptlab.cli.args import add_dataclass_flags
from gptlab.cli.core import TRAIN_HELP

FINETUNE_HELP: dict[str, str] = {
    "out": "run directory (default: runs/<base name>-finetune, or -lora)",
    "val_fraction": "fraction of the examples held out for validation (seeded permutation; 0: none)",
    "truncate": "cut examples longer than the context (their end) instead of stopping with an error",
    "batch_size": "examples per micro-batch (padded to the longest)",
    "grad_accum": "micro-batches accumulated per optimizer step",
    "epochs": "passes over the training examples (sets --max-steps when that is not given)",
    "max_steps": "optimizer steps (the cosine schedule ends here)",
    "max_time": "stop after this many seconds (a checkpoint is saved)",
    "learning_rate": "peak learning rate (default: 1e-4 full, 1e-3 LoRA)",
    "min_lr_ratio": "the cosine decays to learning_rate times this",
    "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay on matrices",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "grad_clip": "clip the gradient norm of the trained parameters to this (0: off)",
    "eval_interval": "evaluate the validation loss every N steps",
    "early_stopping": "stop after this many evaluations without a new best validation loss",
    "restore_best": "when the run is over, keep the weights of its lowest validation loss rather than the "
                    "last step's (a --max-time stop keeps the last, so that --resume continues it)",
    "log_interval": "write the training loss to metrics.jsonl every N steps",
    "checkpoint_interval": "save a checkpoint every N steps",
    "keep_checkpoints": "keep the newest N checkpoints: loading falls back to an older one when the newest is damaged",
    "seed": "random seed (split, example order, LoRA init, dropout)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, mps",
    "dtype": "auto (bf16 autocast on CUDA and on CPUs with bf16 units), float32 or bfloat16",
    "progress": "show a progress bar",
    "log_to": TRAIN_HELP["log_to"],  # the same trackers as gptlab train
}
NOT_FLAGS = ("base", "data", "lora")


def _add_finetune_flags(parser: argparse.ArgumentParser) -> None:
    from gptlab.finetune.config import DEFAULT_LORA_TARGETS, FinetuneConfig, LoRAConfig

    add_dataclass_flags(parser, FinetuneConfig, FINETUNE_HELP, skip=NOT_FLAGS)
    lora = LoRAConfig()
    group = parser.add_argument_group("LoRA", "train low-rank adapters on a frozen base instead of every weight")
    group.add_argument("--lora", action="store_true", default=argparse.SUPPRESS, help="fine-tune with LoRA")
    group.add_argument("--lora-rank", type=int, default=argparse.SUPPRESS, help=f"rank r (default: {lora.rank})")
    group.add_argument("--lora-alpha", type=float, default=argparse.SUPPRESS,
                       help=f"scale alpha; the update is (alpha / r) B A (default: {lora.alpha})")
    group.add_argument("--lora-dropout", type=float, default=argparse.SUPPRESS,
                       help=f"dropout on the adapter's input (default: {lora.dropout})")
    group.add_argument("--lora-targets", default=argparse.SUPPRESS,
                       help="comma-separated module-name suffixes to adapt "
                       f"(default: {','.join(DEFAULT_LORA_TARGETS)})")


def finetune_config_from_args(args: argparse.Namespace) -> Any:
    """Defaults ← the run's saved settings (on --resume) ← flags."""
    from gptlab.finetune.finetuner import CONFIG_FILE
    from gptlab.finetune.config import FinetuneConfig, LoRAConfig

    settings: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
        if f.name not in NOT_FLAGS and hasattr(args, f.name)
    }
    if args.base is not None:
        settings["base"] = args.base
    if args.data is not None:
        settings["data"] = args.data
    lora_flags = {k: getattr(args, f"lora_{k}") for k in ("rank", "alpha", "dropout", "targets")
                  if hasattr(args, f"lora_{k}")}
    if "targets" in lora_flags:
        lora_flags["targets"] = tuple(t.strip() for t in lora_flags["targets"].split(",") if t.strip())
    saved: dict[str, Any] = {}
    if args.resume:
        if not settings.get("out"):
            from gptlab.errors import ConfigError

            raise ConfigError("--resume needs --out RUN, the fine-tuning run to continue")
        from gptlab.train.checkpoint import saved_settings

        saved = saved_settings(Path(settings["out"]), CONFIG_FILE, "finetune_config")
    lora: Any = saved.get("lora")
    if getattr(args, "lora", False) or lora_flags:
        lora = {**(lora or LoRAConfig().to_dict()), **lora_flags}
    merged = {**saved, **settings, "lora": lora}
    return FinetuneConfig.from_dict(merged)


def cmd_finetune(args: argparse.Namespace) -> int:
    from gptlab.cli.malloc import keep_freed_memory
    from gptlab.finetune.finetuner import build_finetuner
    from gptlab.finetune.lora import trainable_fraction

    keep_freed_memory()  # a step reuses the pages the last one freed
    cfg = finetune_config_from_args(args)
    tuner = build_finetuner(cfg, resume=args.resume)
    trainable, total = trainable_fraction(tuner.model)
    base = total - trainable if cfg.lora is not None else total  # adapters are not part of the base
    mode = f"LoRA r={cfg.lora.rank} alpha={cfg.lora.alpha}" if cfg.lora is not None else "full fine-tuning"
    print(
        f"{mode}: {trainable:,} parameters trained, {100 * trainable / base:.2f}% of the base's {base:,}; "
        f"{len(tuner.data.train)} train / {len(tuner.data.val)} val examples; {tuner.max_steps} steps; "
        f"device: {tuner.device}, {tuner.precision}",
        file=sys.stderr,
    )
    result = tuner.fit()
    fmt = lambda v: f"{v:.4f}" if v is not None else "n/a"
    line = f"step {result.step}: val loss {fmt(result.val_loss)} (base {fmt(result.base_val_loss)}, " \
           f"best {fmt(result.best_val_loss)} at step {result.best_step})"
    if result.stopped_early:
        line += ", stopped early"
    if result.weights_step is not None:
        line += f", weights of step {result.weights_step} kept"
    print(f"{line}; {result.elapsed:.1f}s; run saved in {result.run_dir}", file=sys.stderr)
    if result.adapter is not None:
        print(f"adapter: {result.adapter}", file=sys.stderr)
    from gptlab.cli.core import stopped_exit_code

    return stopped_exit_code(result.stopped_by, "finetune", result.run_dir)


def cmd_lora_merge(args: argparse.Namespace) -> int:
    from gptlab.finetune.finetuner import merge_adapter_into_run

    folder = merge_adapter_into_run(args.source, args.out, base=args.base)
    print(f"merged model saved in {folder} (sample it with: gptlab sample {args.out})", file=sys.stderr)
    return 0


def cmd_dataset_docstrings(args: argparse.Namespace) -> int:
    from gptlab.finetune.docstrings import build_docstring_dataset, write_jsonl

    examples = build_docstring_dataset(args.max_examples, max_chars=args.max_chars or None,
                                       max_bytes=args.max_bytes, source=args.source)
    write_jsonl([e.to_record() for e in examples], args.out)
    print(f"{args.out}: {len(examples)} docstring → body examples", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add finetune, lora and dataset to the ``gptlab`` parser."""
    from gptlab.finetune.docstrings import DEFAULT_MAX_CHARS

    p = subparsers.add_parser(
        "finetune", help="fine-tune a trained model on JSONL examples (full or LoRA)",
        description="Fine-tune a run or checkpoint on a .jsonl file of {\"text\"}, {\"prompt\", \"completion\"} "
        "(loss on the completion) or {\"messages\"} (chat template, loss on assistant turns) records, or "
        "Alpaca {\"instruction\", \"input\", \"output\"} and ShareGPT {\"conversations\"} ones (as chats); "
        "a .json array of records works too. "
        "A held-out split is evaluated as training goes, starting with the base model; checkpoints "
        "resume exactly. With --lora only low-rank adapters train and are saved on their own.",
    )
    p.add_argument("base", nargs="?", help="run directory or checkpoint folder to start from")
    p.add_argument("--data", help=".jsonl (or .json array) file of examples")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    _add_finetune_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = subparsers.add_parser("lora", help="LoRA adapters: merge into their base",
                              description="Work with LoRA adapters saved by `gptlab finetune --lora`.")
    lora_commands = p.add_subparsers(dest="lora_command", metavar="COMMAND", required=True)
    m = lora_commands.add_parser(
        "merge", help="fold an adapter into its base and save an ordinary run",
        description="Fold a LoRA adapter into its base model (W + alpha/r · B A) and save the result as a "
        "run that `gptlab sample` and everything else loads like any other. The adapter must have been "
        "trained on that base (checked by fingerprint).",
    )
    m.add_argument("source", metavar="RUN_OR_ADAPTER", help="a LoRA run, checkpoint, or adapter directory")
    m.add_argument("--out", required=True, help="directory of the merged run (must not hold a run)")
    m.add_argument("--base", help="base model for a standalone adapter (default: the path it records)")
    m.set_defaults(func=cmd_lora_merge)

    p = subparsers.add_parser("dataset", help="build fine-tuning datasets",
                              description="Build fine-tuning datasets offline.")
    dataset_commands = p.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    d = dataset_commands.add_parser(
        "docstrings", help="signature + docstring → function body pairs from the Python standard library",
        description="Write {\"prompt\": signature + docstring, \"completion\": body} records, one per function "
        "with a docstring in this interpreter's standard library (or --source), deterministically.",
    )
    d.add_argument("--out", required=True, help="output .jsonl file (written atomically)")
    d.add_argument("--max-examples", type=int, default=None, help="stop after this many examples")
    d.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help=f"skip functions longer than this (prompt + completion; 0: no limit; default {DEFAULT_MAX_CHARS})")
    d.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes of source")
    d.add_argument("--source", default=None, help="a directory or file of Python source instead of the stdlib")
    d.set_defaults(func=cmd_dataset_docstrings)
