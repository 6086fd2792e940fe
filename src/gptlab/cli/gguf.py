"""CLI for GGUF: ``gptlab export-gguf`` (a gptlab run → one ``.gguf`` file for llama.cpp and ollama)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gptlab.errors import CheckpointError

OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # gptlab.interop.gguf.OUTTYPES, without importing torch here


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from gptlab.finetune.finetuner import load_finetuned_with_tokenizer
    from gptlab.finetune.lora import lora_modules
    from gptlab.interop.gguf import export_gguf, gguf_architecture

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CheckpointError(f"{out}: already exists; pass --overwrite to replace it (nothing was written)")
    logging.getLogger("gguf").setLevel(logging.WARNING)  # the gguf package logs its progress at INFO
    # a run, checkpoint, LoRA run or adapter directory: adapters are applied to their base, then merged
    model, tokenizer = load_finetuned_with_tokenizer(args.run, base=args.base)
    merged = " with its LoRA adapter merged" if lora_modules(model) else ""
    export_gguf(model, tokenizer, out, outtype=args.outtype, name=args.name, overwrite=args.overwrite)
    size = out.stat().st_size / 2**20
    print(
        f"exported {args.run}{merged} → {out} (llama.cpp architecture {gguf_architecture(model.config)}, "
        f"{args.outtype}, {size:.1f} MiB)\nrun it with: llama-cli -m {out} -p 'Hello'"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export-gguf`` to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "export-gguf",
        help="export a gptlab run as a GGUF file for llama.cpp and ollama",
        description="Write a run's latest checkpoint (or a checkpoint folder, a LoRA run or an adapter "
        "directory, with the adapter merged into its base) as one GGUF file that llama.cpp, "
        "llama-cpp-python and ollama load. The model's config picks the llama.cpp architecture: "
        "learned positions → gpt2; rotary positions → llama, or qwen2 (q/k/v biases only) or qwen3 "
        "(QK-norm). Shapes llama.cpp cannot run (e.g. the ReLU² MLP, LayerNorm with rotary "
        "positions) are refused with the field named. The tokenizer goes in too (byte-level BPE as "
        "llama.cpp's gpt2 tokenizer, a char tokenizer as its SentencePiece one), with the ChatML "
        "chat template when the tokenizer has its markers. Needs the gguf package "
        "(pip install 'gptlab[gguf]'). The file is written under a temporary name and renamed.",
        epilog="example: gptlab export-gguf runs/python-stdlib stdlib.gguf --outtype q8_0 && "
        "llama-cli -m stdlib.gguf -p 'def ' -n 100 --temp 0",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run directory, checkpoint folder, LoRA run or adapter")
    p.add_argument("out", metavar="OUT.gguf", help="file to write")
    p.add_argument("--outtype", choices=OUTTYPES, default="f16",
                   help="storage type of the weight matrices: f32, f16, bf16 or q8_0 (8-bit blocks, about a "
                   "quarter of f32's size); norms and biases stay f32 (default: f16)")
    p.add_argument("--name", help="the model's name in the file's metadata (default: OUT's file name)")
    p.add_argument("--base", help="the base model of an adapter directory that does not record its own")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_export_gguf)
