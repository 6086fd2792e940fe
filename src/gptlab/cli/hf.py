"""CLI for Hugging Face interop: ``gptlab import-hf`` (a GPT-2 or Llama-family directory or model
id, downloaded if need be → a gptlab run) and ``gptlab export-hf`` (a gptlab run → a directory
``transformers`` loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.errors import CheckpointError, ConfigError


def cmd_import_hf(args: argparse.Namespace) -> int:
    from gptlab.interop.hf_peft import is_peft_adapter

    if is_peft_adapter(args.source):
        return _import_peft(args)
    if args.base is not None:
        raise ConfigError(f"--base is for a peft adapter, and {args.source} is not one (no adapter_config.json)")
    from gptlab.finetune.loader import CHAT_TEMPLATE_KEY
    from gptlab.interop.hf import import_hf
    from gptlab.interop.hf_chat import read_chat_settings
    from gptlab.interop.hf_files import read_config
    from gptlab.interop.hub import fetch_hf_model
    from gptlab.train.checkpoint import save_checkpoint

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new --out (nothing was written)")
    source = fetch_hf_model(args.source, revision=args.revision, offline=args.offline)
    model, tokenizer = import_hf(source)
    template = read_chat_settings(source, tokenizer)
    model_type = read_config(source).get("model_type")
    state = {"imported_from": {"format": f"huggingface-{model_type}", "source": args.source,
                               "revision": args.revision, "path": str(source)}}
    if template is not None:
        state[CHAT_TEMPLATE_KEY] = template.to_dict()
    folder = save_checkpoint(out, model, tokenizer, step=0, state=state)
    cfg = model.config
    print(
        f"imported {args.source}: {model.num_parameters():,} parameters ({cfg.n_layer} layers, "
        f"{cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, vocab {cfg.vocab_size})"
        f"{', with its chat template' if template is not None else ''} → {folder}\n"
        f"try: gptlab sample {out} --prompt 'Hello'"
    )
    return 0


def _import_peft(args: argparse.Namespace) -> int:
    from gptlab.finetune.loader import load_run
    from gptlab.interop.hf_peft import import_peft_run

    folder = import_peft_run(args.source, args.out, base=args.base, revision=args.revision, offline=args.offline)
    loaded = load_run(folder)
    assert loaded.adapter is not None
    lora = loaded.adapter.config
    print(
        f"imported the peft adapter {args.source} (LoRA r={lora.rank}, alpha={lora.alpha:g}, "
        f"{len(loaded.adapter.tensors) // 2} layers) onto {args.base or loaded.state['base']['path']} → {folder}\n"
        f"try: gptlab sample {args.out} --prompt 'Hello'   (or gptlab lora merge {args.out} --out MERGED)"
    )
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from gptlab.finetune.loader import load_run
    from gptlab.finetune.lora import is_adapter
    from gptlab.interop.hf import export_hf
    from gptlab.train.checkpoint import find_checkpoint

    source = Path(args.run).resolve() if is_adapter(args.run) else find_checkpoint(args.run).resolve()
    out = Path(args.out).resolve()
    if out == source or out in source.parents:
        raise CheckpointError(f"{args.out}: would replace the checkpoint being exported; choose another OUT")
    if not args.peft and (args.base_out or args.base_model):
        raise ConfigError("--base-out and --base-model go with --peft")
    loaded = load_run(args.run, merge=not args.peft)
    load_hint = (f"load it with: transformers.AutoModelForCausalLM.from_pretrained({str(args.out)!r}) "
                 f"and AutoTokenizer.from_pretrained({str(args.out)!r})")
    if not args.peft:
        export_hf(loaded.model, loaded.tokenizer, args.out, overwrite=args.overwrite,
                  chat_template=loaded.chat_template)
        what = f"the merged model (base + LoRA adapter {loaded.adapter.path.name})" if loaded.is_lora else "the model"
        print(f"exported {what} of {source} → {args.out}\n{load_hint}")
        return 0
    if not loaded.is_lora:
        raise ConfigError(f"{args.run} is not a LoRA run: --peft exports a LoRA adapter (drop --peft to export the model)")
    return _export_peft(args, loaded, source)


def _export_peft(args: argparse.Namespace, loaded: object, source: Path) -> int:
    from gptlab.finetune.lora import plain_linears
    from gptlab.interop.hf import export_hf
    from gptlab.interop.hf_chat import CHATML_TEMPLATE
    from gptlab.interop.hf_files import check_out_dir
    from gptlab.interop.hf_peft import PEFT_CONFIG_FILE, export_peft
    from gptlab.interop.hf_tokenizer import hf_tokenizer_files

    model, tokenizer = loaded.model, loaded.tokenizer  # type: ignore[attr-defined]
    own = loaded.chat_template  # type: ignore[attr-defined]
    check_out_dir(Path(args.out), args.overwrite, PEFT_CONFIG_FILE)  # before the base is written
    if args.base_model:
        base_name = args.base_model
    else:
        base_out = Path(args.base_out or f"{str(args.out).rstrip('/')}-base")
        with plain_linears(model):
            export_hf(model, tokenizer, base_out, overwrite=args.overwrite, chat_template=own)
        base_name = str(base_out.resolve())
    export_peft(model, tokenizer, args.out, base_model_name_or_path=base_name, overwrite=args.overwrite,
                extra_files=hf_tokenizer_files(tokenizer, model.config.block_size,
                                               own.template if own is not None else CHATML_TEMPLATE,
                                               own.special_tokens if own is not None else None))
    base_line = f"its base model → {base_name}" if not args.base_model else f"its base: {base_name} (not written)"
    hub_id = _imported_base_id(loaded.state)  # type: ignore[attr-defined]
    if hub_id and not args.base_model:
        base_line += f" (its base was imported from {hub_id}: --base-model {hub_id} records that instead)"
    print(
        f"exported the LoRA adapter of {source} as a peft adapter → {args.out}; {base_line}\n"
        f"load it with: peft.AutoPeftModelForCausalLM.from_pretrained({str(args.out)!r}), or "
        f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base_name!r}), {str(args.out)!r})"
    )
    return 0


def _imported_base_id(state: dict) -> str | None:
    """The Hugging Face id a LoRA run's base checkpoint was imported from, if it was."""
    import json

    base_path = (state.get("base") or {}).get("path")
    if not base_path:
        return None
    try:
        record = json.loads((Path(base_path) / "state.json").read_text(encoding="utf-8"))
        origin = record["state"]["imported_from"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    source = origin.get("source") if isinstance(origin, dict) else None
    return source if isinstance(source, str) and not Path(source).exists() else None


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
        "context, rope types other than default and llama3), are refused with the key named. "
        "The model's chat template (tokenizer_config.json or chat_template.jinja) is kept and "
        "exported again. A peft LoRA adapter directory (adapter_config.json) becomes a gptlab LoRA "
        "run on --base, or on its base_model_name_or_path imported as above.",
        epilog="examples: gptlab import-hf HuggingFaceTB/SmolLM2-135M --out runs/smollm2 && "
        "gptlab sample runs/smollm2 --prompt 'Hello, I am';  "
        "gptlab import-hf my-peft-adapter --base runs/smollm2 --out runs/smollm2-lora",
    )
    p.add_argument("source", metavar="DIR_OR_ID", help="model directory, or a Hugging Face model id (ORG/NAME)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run directory to write (must not exist or be empty)")
    p.add_argument("--revision", default="main",
                   help="branch, tag or commit of a model id (default: main)")
    p.add_argument("--offline", action="store_true",
                   help="never download: use the local cache only (as HF_HUB_OFFLINE=1 does)")
    p.add_argument("--base", metavar="RUN",
                   help="for a peft adapter: the gptlab run or checkpoint it adapts (default: import its "
                   "base_model_name_or_path from Hugging Face)")
    p.set_defaults(func=cmd_import_hf)

    p = subparsers.add_parser(
        "export-hf",
        help="export a gptlab run as a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 directory",
        description="Write a run's latest checkpoint (or a given checkpoint folder) as a Hugging "
        "Face GPT-2, Llama, Qwen2 or Qwen3 directory: config.json, generation_config.json, "
        "model.safetensors, tokenizer.json, tokenizer_config.json (with a chat_template: gptlab's "
        "ChatML, or the model's own if it was imported with one), special_tokens_map.json. A LoRA "
        "run (or adapter directory) is exported merged, base + adapter, unless --peft asks for "
        "the adapter as peft writes it. The model's config picks "
        "the architecture: learned positions → GPT2LMHeadModel; rotary positions → "
        "LlamaForCausalLM, or Qwen2ForCausalLM (q/k/v biases only) or Qwen3ForCausalLM (QK-norm). "
        "Shapes transformers cannot express (e.g. the ReLU² MLP, LayerNorm with rotary positions) "
        "are refused with the field named. AutoModelForCausalLM.from_pretrained and "
        "AutoTokenizer.from_pretrained load it unchanged, with the same logits and token ids. The "
        "directory is written under a temporary name and renamed, so it is never left half-written.",
        epilog="examples: gptlab export-hf runs/python-stdlib exported/stdlib-gpt;  "
        "gptlab export-hf runs/python-stdlib-lora exported/lora --peft  (the base goes to exported/lora-base)",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                   help="run directory, checkpoint folder, LoRA run or adapter directory")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it already holds a model directory (one with config.json, or "
                   "adapter_config.json with --peft)")
    p.add_argument("--peft", action="store_true",
                   help="for a LoRA run: write its adapter as a peft adapter (adapter_config.json + "
                   "adapter_model.safetensors) instead of the merged model, and its base model beside it")
    p.add_argument("--base-out", metavar="DIR",
                   help="with --peft: where the base model goes (default: OUT-base); the adapter's "
                   "base_model_name_or_path names it")
    p.add_argument("--base-model", metavar="NAME_OR_PATH",
                   help="with --peft: record this base (e.g. the Hub id the run was imported from) and "
                   "write no base model")
    p.set_defaults(func=cmd_export_hf)
