"""CLI for Hugging Face interop: ``gptlab import-hf`` (a GPT-2 or Llama-family directory or model
id, downloaded if need be → a gptlab run) and ``gptlab export-hf`` (a gptlab run → a directory
``transformers`` loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.errors import CheckpointError


def cmd_import_hf(args: argparse.Namespace) -> int:
    from gptlab.interop.hf import import_hf
    from gptlab.interop.hf_files import read_config
    from gptlab.interop.hub import fetch_hf_model
    from gptlab.train.checkpoint import save_checkpoint

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new --out (nothing was written)")
    source = fetch_hf_model(args.source, revision=args.revision, offline=args.offline)
    model, tokenizer = import_hf(source)
    model_type = read_config(source).get("model_type")
    state = {"imported_from": {"format": f"huggingface-{model_type}", "source": args.source,
                               "revision": args.revision, "path": str(source)}}
    folder = save_checkpoint(out, model, tokenizer, step=0, state=state)
    cfg = model.config
    print(
        f"imported {args.source}: {model.num_parameters():,} parameters ({cfg.n_layer} layers, "
        f"{cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, vocab {cfg.vocab_size}) "
        f"→ {folder}\ntry: gptlab sample {out} --prompt 'Hello'"
    )
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from gptlab.train.checkpoint import load_checkpoint
    from gptlab.interop.hf import export_hf

    ckpt = load_checkpoint(args.run)  # the newest intact checkpoint of a run
    folder = ckpt.path.resolve()
    out = Path(args.out).resolve()
    if out == folder or out in folder.parents:
        raise CheckpointError(f"{args.out}: would replace the checkpoint being exported; choose another OUT")
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
        help="import a Hugging Face GPT-2 or Llama-family model as a gptlab run",
        description="Import a Hugging Face GPT-2 (GPT2LMHeadModel) or Llama-family model "
        "(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) as a gptlab run "
        "that `gptlab sample` and the Python API load. SOURCE is a directory as save_pretrained "
        "writes it (config.json; model.safetensors, sharded safetensors or pytorch_model.bin; "
        "tokenizer.json or vocab.json + merges.txt), or a model id such as openai-community/gpt2: "
        "taken from the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or "
        "~/.cache/huggingface/hub) if it is there, else downloaded into it (config, tokenizer and "
        "weight files only; a token for gated models is read from $HF_TOKEN). Other architectures, "
        "and configs gptlab cannot compute (mixture of experts, sliding windows shorter than the "
        "context, rope types other than default and llama3), are refused with the key named.",
        epilog="example: gptlab import-hf HuggingFaceTB/SmolLM2-135M --out runs/smollm2 && "
        "gptlab sample runs/smollm2 --prompt 'Hello, I am'",
    )
    p.add_argument("source", metavar="DIR_OR_ID", help="model directory, or a Hugging Face model id (ORG/NAME)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run directory to write (must not exist or be empty)")
    p.add_argument("--revision", default="main",
                   help="branch, tag or commit of a model id (default: main)")
    p.add_argument("--offline", action="store_true",
                   help="never download: use the local cache only (as HF_HUB_OFFLINE=1 does)")
    p.set_defaults(func=cmd_import_hf)

    p = subparsers.add_parser(
        "export-hf",
        help="export a gptlab run as a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 directory",
        description="Write a run's latest checkpoint (or a given checkpoint folder) as a Hugging "
        "Face GPT-2, Llama, Qwen2 or Qwen3 directory: config.json, model.safetensors, "
        "tokenizer.json, tokenizer_config.json, special_tokens_map.json. The model's config picks "
        "the architecture: learned positions → GPT2LMHeadModel; rotary positions → "
        "LlamaForCausalLM, or Qwen2ForCausalLM (q/k/v biases only) or Qwen3ForCausalLM (QK-norm). "
        "Shapes transformers cannot express (e.g. the ReLU² MLP, LayerNorm with rotary positions) "
        "are refused with the field named. AutoModelForCausalLM.from_pretrained and "
        "AutoTokenizer.from_pretrained load it unchanged, with the same logits and token ids. The "
        "directory is written under a temporary name and renamed, so it is never left half-written.",
        epilog="example: gptlab export-hf runs/python-stdlib exported/stdlib-gpt",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run directory or checkpoint folder")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it already holds a model directory (one with config.json)")
    p.set_defaults(func=cmd_export_hf)
