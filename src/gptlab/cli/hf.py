"""CLI for Hugging Face interop: ``gptlab import-hf`` (a GPT-2 directory or cached model id → a
gptlab run) and ``gptlab export-hf`` (a gptlab run → a directory ``transformers`` loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.errors import CheckpointError


def cmd_import_hf(args: argparse.Namespace) -> int:
    from gptlab.train.checkpoint import save_checkpoint
    from gptlab.interop.hf import import_hf, resolve_hf_source

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new --out (nothing was written)")
    source = resolve_hf_source(args.source, revision=args.revision)
    model, tokenizer = import_hf(source)
    state = {"imported_from": {"format": "huggingface-gpt2", "source": args.source, "path": str(source)}}
    folder = save_checkpoint(out, model, tokenizer, step=0, state=state)
    cfg = model.config
    print(
        f"imported {args.source}: {model.num_parameters():,} parameters ({cfg.n_layer} layers, "
        f"{cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, vocab {cfg.vocab_size}) "
        f"→ {folder}\ntry: gptlab sample {out} --prompt 'Hello'"
    )
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from gptlab.train.checkpoint import find_checkpoint, load_checkpoint
    from gptlab.interop.hf import export_hf

    folder = find_checkpoint(args.run).resolve()
    out = Path(args.out).resolve()
    if out == folder or out in folder.parents:
        raise CheckpointError(f"{args.out}: would replace the checkpoint being exported; choose another OUT")
    ckpt = load_checkpoint(folder)
    export_hf(ckpt.model, ckpt.tokenizer, args.out, overwrite=args.overwrite)
    print(
        f"exported {folder} → {args.out}\n"
        f"load it with: transformers.AutoModelForCausalLM.from_pretrained({str(args.out)!r}) "
        f"and AutoTokenizer.from_pretrained({str(args.out)!r})"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import-hf`` and ``export-hf`` to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "import-hf",
        help="import a Hugging Face GPT-2 model as a gptlab run",
        description="Import a Hugging Face GPT-2 (GPT2LMHeadModel) as a gptlab run that `gptlab "
        "sample` and the Python API load. SOURCE is a directory as save_pretrained writes it "
        "(config.json; model.safetensors, sharded safetensors or pytorch_model.bin; tokenizer.json "
        "or vocab.json + merges.txt), or a model id such as gpt2 or openai-community/gpt2 that is "
        "already in the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or "
        "~/.cache/huggingface/hub). Nothing is downloaded. Other architectures are refused.",
        epilog="example: gptlab import-hf openai-community/gpt2 --out runs/gpt2 && "
        "gptlab sample runs/gpt2 --prompt 'Hello, I am'",
    )
    p.add_argument("source", metavar="DIR_OR_ID", help="model directory, or a model id in the local HF cache")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run directory to write (must not exist or be empty)")
    p.add_argument("--revision", default="main",
                   help="branch, tag or commit of a cached model id (default: main)")
    p.set_defaults(func=cmd_import_hf)

    p = subparsers.add_parser(
        "export-hf",
        help="export a gptlab run as a Hugging Face GPT-2 directory",
        description="Write a run's latest checkpoint (or a given checkpoint folder) as a Hugging "
        "Face GPT-2 directory: config.json, model.safetensors, tokenizer.json, "
        "tokenizer_config.json, special_tokens_map.json. transformers' "
        "GPT2LMHeadModel/AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained "
        "load it unchanged, with the same logits and token ids. The directory is written under a "
        "temporary name and renamed, so it is never left half-written.",
        epilog="example: gptlab export-hf runs/python-stdlib exported/stdlib-gpt",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run directory or checkpoint folder")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it already holds a model directory (one with config.json)")
    p.set_defaults(func=cmd_export_hf)
