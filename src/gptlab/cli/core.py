"""CLI for the core pipeline: `gptlab prepare`, `gptlab train`, `gptlab sample`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from gptlab.cli.args import add_dataclass_flags, int_at_least

# one help line per TrainConfig field; every field becomes a --flag and a config-file key
TRAIN_HELP: dict[str, str] = {
    "data": "corpus: text file, directory, .jsonl with a 'text' field, or a prepared dir "
    "(default: the functions and methods of this interpreter's Python standard library, one document each)",
    "tokenizer": "char, bpe (trained on the corpus), or a path to a tokenizer "
    "(dir or tokenizer.json, or a dir with GPT-2 vocab.json + merges.txt)",
    "vocab_size": "vocabulary size of a BPE tokenizer trained on the corpus",
    "max_bytes": "read at most this many bytes of corpus",
    "val_fraction": "fraction of the corpus held out for validation (by file, or the tail of one file; "
    "the default corpus's functions by their file)",
    "preset": "model shape: tiny, small, mini, gpt2, gpt2-medium, ... (see `gptlab count --list`)",
    "n_layer": "override the preset's number of transformer blocks",
    "n_head": "override the preset's attention heads per block",
    "n_embd": "override the preset's embedding width",
    "model": "more model config fields over the preset, as a JSON object, e.g. "
    "'{\"mlp\": \"relu2\", \"qk_norm\": true, \"n_kv_head\": 2}' (see docs/training.md)",
    "block_size": "override the preset's context length in tokens",
    "dropout": "dropout probability",
    "batch_size": "sequences per micro-batch",
    "windows": "random (each window at a random offset, as nanoGPT) or epochs (the corpus cut into "
    "windows, each trained on once per epoch, in a shuffled order)",
    "grad_accum": "micro-batches accumulated per optimizer step",
    "max_steps": "optimizer steps to train for (the schedule ends here)",
    "max_time": "stop after this many seconds (a checkpoint is saved)",
    "optimizer": "adamw, or muon (Muon for the blocks' weight matrices, AdamW for the rest; not with --fsdp)",
    "learning_rate": "peak learning rate",
    "min_lr": "learning rate at the end of the decay",
    "warmup_steps": "linear warmup steps",
    "decay": "shape of the decay from the peak to --min-lr: cosine or linear",
    "cooldown_fraction": "share of the steps after warmup spent decaying; below 1 the peak is held first "
                         "(warmup-stable-decay)",
    "weight_decay": "AdamW weight decay on matrices (not on biases and LayerNorms)",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "out": "run directory (default: runs/<corpus name>)",
    "eval_interval": "evaluate validation loss every N steps",
    "eval_iters": "batches per validation estimate",
    "log_interval": "write training loss to metrics.jsonl every N steps",
    "checkpoint_interval": "save a checkpoint every N steps",
    "keep_checkpoints": "keep the newest N checkpoints: loading falls back to an older one when the newest is damaged",
    "seed": "random seed (model init, data windows, dropout, the final sample)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps",
    "dtype": "auto (bf16 autocast on CUDA and on CPUs with bf16 units), float32 or bfloat16",
    "compile": "torch.compile the model (--no-compile to turn off; default: on for CUDA, off elsewhere)",
    "fsdp": "with torchrun: shard the model with FSDP2 instead of replicating it with DDP",
    "vocab_pad_multiple": "round the embedding rows up to a multiple of this (default: 64 on CUDA, 1 elsewhere)",
    "progress": "show a progress bar",
    "sample_tokens": "tokens to sample after training (0: none)",
    "sample_prompt": "prompt of the sample printed after training "
    "(default: 'def ' on the default corpus, else a newline)",
    "log_to": "also log metrics to tensorboard (RUN/tensorboard), csv (RUN/metrics.csv) or wandb; "
    "repeatable or comma-separated",
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    from gptlab.train.config import TrainConfig

    add_dataclass_flags(parser, TrainConfig, TRAIN_HELP)


def train_config_from_args(args: argparse.Namespace) -> tuple[Any, bool]:
    """Merge defaults ← saved run config (on --resume) ← --config file ← flags."""
    from gptlab.config_file import load_config_file
    from gptlab.train.checkpoint import saved_settings
    from gptlab.train.trainer import CONFIG_FILE, default_run_dir
    from gptlab.train.config import TrainConfig

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    from_file = load_config_file(args.config) if args.config else {}
    settings: dict[str, Any] = {**from_file, **flags}
    if args.resume:
        out = settings.get("out")
        run_dir = Path(out) if out else default_run_dir(TrainConfig.from_dict(settings), resume=True)
        settings = {**saved_settings(run_dir, CONFIG_FILE, "train_config"), **settings}
    return TrainConfig.from_dict(settings), args.resume


def cmd_train(args: argparse.Namespace) -> int:
    from gptlab.cli.malloc import keep_freed_memory
    from gptlab.train import distributed
    from gptlab.train.trainer import build_trainer

    keep_freed_memory()  # a step reuses the pages the last one freed

    cfg, resume = train_config_from_args(args)
    trainer = build_trainer(cfg, resume=resume)
    try:
        main = trainer.dist.is_main  # under torchrun only rank 0 talks
        model = trainer.model
        if main:
            world = f" x {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
            print(
                f"model: {model.num_parameters():,} parameters ({model.config.n_layer} layers, "
                f"{model.config.n_head} heads, width {model.config.n_embd}, context {model.config.block_size}); "
                f"tokenizer: {trainer.tokenizer.kind}, {trainer.tokenizer.vocab_size} tokens; "
                f"train tokens: {len(trainer.data.train):,}; device: {trainer.device}{world}, {trainer.precision}",
                file=sys.stderr,
            )
        result = trainer.fit()
        if main:
            val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
            print(f"step {result.step}: val loss {val}, {result.elapsed:.1f}s; run saved in {result.run_dir}",
                  file=sys.stderr)
        if main and result.sample is not None:
            print("---- sample ----", file=sys.stderr)
            print(result.sample)
    finally:
        distributed.shutdown(trainer.dist)
    return stopped_exit_code(result.stopped_by, "train", result.run_dir)


def stopped_exit_code(signum: int | None, command: str, run_dir: Path) -> int:
    """0, or for a run a signal stopped (after saving): say how to go on, and return 128 + the signal."""
    if signum is None:
        return 0
    import signal

    print(f"stopped by {signal.Signals(signum).name}; the checkpoint is saved: continue with "
          f"gptlab {command} --out {run_dir} --resume", file=sys.stderr)
    return 128 + signum


def cmd_prepare(args: argparse.Namespace) -> int:
    from gptlab.data.shards import prepare
    from gptlab.data.tokenizer import Tokenizer

    tokenizer = None
    kind = args.tokenizer
    if kind not in ("char", "bpe"):
        tokenizer, kind = Tokenizer.load(kind), "char"
    logging.getLogger("gptlab.data.shards").setLevel(logging.WARNING)  # the summary below says it once
    manifest = prepare(args.data, args.out, tokenizer=tokenizer, tokenizer_kind=kind,
                       vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                       max_bytes=args.max_bytes, progress=True)
    print(f"{args.out}: {manifest['train_tokens']:,} train + {manifest['val_tokens']:,} val tokens "
          f"({manifest['dtype']}, vocab {manifest['vocab_size']})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from gptlab.finetune.finetuner import load_finetuned_with_tokenizer
    from gptlab.generate.sampler import SamplingParams, generate_text
    from gptlab.train.trainer import resolve_device

    # a run, checkpoint, LoRA run or adapter directory (adapters are applied to their base)
    model, tokenizer = load_finetuned_with_tokenizer(args.run, device=resolve_device(args.device))
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            token_healing=args.token_healing)
    prompt = args.prompt if args.prompt is not None else "\n"
    stop = list(args.stop or ())
    if args.few_shot:
        from gptlab.errors import GenerationError
        from gptlab.generate.fewshot import FewShotFormat, few_shot_prompt_from_jsonl

        if args.prompt is None:
            raise GenerationError("--few-shot needs --prompt, the input to answer")
        prompt = few_shot_prompt_from_jsonl(
            args.few_shot, tokenizer, args.instruction, query=args.prompt,
            # room for the answer, but never less than half the context for the examples (past the
            # context the sampler slides its window anyway)
            max_tokens=model.config.block_size - min(args.max_new_tokens, model.config.block_size // 2),
        )
        stop += FewShotFormat.for_tokenizer(tokenizer).stop
    if args.compile and args.max_new_tokens > 1:
        print("compiling the decode step (tens of seconds the first time)...", file=sys.stderr, flush=True)
    out = sys.stdout
    out.write(prompt)
    for piece in generate_text(model, tokenizer, prompt, params, stop=stop, compile=args.compile):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add prepare, train and sample to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "train", help="train a GPT (default: a small model on the Python standard library)",
        description="Train a GPT by next-token prediction on random windows of a corpus. With no "
        "arguments: a small model on the functions of this interpreter's standard library, a few minutes "
        "on a laptop CPU, then a sample. Every flag is also a key of the --config file; flags win.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file of training settings")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, exactly")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "prepare", help="tokenize a corpus into token shards",
        description="Tokenize a corpus into train.bin/val.bin token shards (np.memmap) with a "
        "manifest and the tokenizer; `gptlab train --data DIR` then trains on them.",
    )
    p.add_argument("--data", help=TRAIN_HELP["data"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", default="bpe", help=TRAIN_HELP["tokenizer"] + " (default: bpe, as train)")
    from gptlab.train.config import TrainConfig

    vocab_size = TrainConfig().vocab_size  # as train's, so that a prepared corpus trains like the default
    p.add_argument("--vocab-size", type=int, default=vocab_size,
                   help=TRAIN_HELP["vocab_size"] + f" (default: {vocab_size})")
    p.add_argument("--max-bytes", type=int, default=None, help=TRAIN_HELP["max_bytes"])
    p.add_argument("--val-fraction", type=float, default=0.1, help=TRAIN_HELP["val_fraction"])
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser(
        "sample", help="generate text from a trained model",
        description="Sample a continuation of --prompt from a run or checkpoint, streaming tokens "
        "to stdout as they are produced (KV-cached decoding).",
    )
    p.add_argument("run", help="run directory, checkpoint folder, LoRA run or adapter directory")
    p.add_argument("--prompt", help="text to continue (default: a newline; with --few-shot: the query)")
    p.add_argument("--max-new-tokens", type=int_at_least(0), default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--stop", action="append", help="stop before this text (repeatable)")
    p.add_argument("--few-shot", metavar="FILE.jsonl",
                   help='few-shot examples, one {"input": ..., "output": ...} per line (and optionally one '
                   '{"instruction": ...}): --prompt becomes the query, laid out as in GPT-3 ("input =>"), '
                   "and generation stops at the example separator")
    p.add_argument("--instruction", help="task description before the few-shot examples (overrides the file's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true",
                   help="decode with torch.compile: tens of seconds to compile first (a C++ compiler on "
                   "CPU), then several times faster per token; worth it for long generations")
    p.add_argument("--token-healing", action=argparse.BooleanOptionalAction, default=True,
                   help="back up the prompt's last token when a longer token could start there (a prompt "
                   "ending in a space, say) and let the first new tokens spell it again (default: on)")
    p.set_defaults(func=cmd_sample)

