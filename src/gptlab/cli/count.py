"""CLI for counting and cost: ``gptlab count`` (parameters, neurons, FLOPs, memory of a model) and
``gptlab cost`` (training compute, GPU time and dollars by the 6·N·D rule)."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from gptlab.model.config import PRESET_NOTES, PRESETS, GPTConfig, preset
from gptlab.model.count import BYTES_PER_VALUE, ModelCount, TrainingCost, count_config, parse_quantity
from gptlab.errors import CheckpointError, ConfigError
from gptlab.train.gpus import GPUS, get_gpu

NAMED_GPU_UTILIZATION = 0.4  # default fraction of a table GPU's peak that training sustains
# GPT-3 (Brown et al. 2020) on V100s at 28 TFLOPS sustained and $1.50/GPU-hour: Lambda Labs' 2020
# estimate (https://lambdalabs.com/blog/demystifying-gpt-3), the figures the seeds quote
GPT3_EXAMPLE = {"params": "175e9", "tokens": "300e9", "gpu": "28", "price_per_hour": 1.5}


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _readable(x: float) -> str:
    """A positive figure with sensible precision: 3,125,000 / 356.7 / 0.0123."""
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:,.1f}"
    return f"{x:.3g}"


def resolve_config(name_or_path: str) -> tuple[str, GPTConfig]:
    """A preset's config, or the config saved in a run directory or checkpoint folder."""
    if not name_or_path.strip():
        raise ConfigError(
            f"the model is an empty string: give a preset name ({', '.join(list(PRESETS)[:4])}, ...) "
            "or a run/checkpoint path"
        )
    if name_or_path in PRESETS:
        return f"preset {name_or_path}", preset(name_or_path)
    if Path(name_or_path).exists():
        try:
            from gptlab.train.checkpoint import load_config
        except ImportError as exc:  # checkpoint support missing from this installation
            raise CheckpointError(f"cannot read checkpoints here ({exc})") from None
        return f"checkpoint {name_or_path}", load_config(name_or_path)
    raise ConfigError(
        f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor an existing run or checkpoint path"
    )


def format_count(source: str, c: ModelCount, note: str | None = None) -> str:
    """The human-readable report of ``gptlab count``; ``note`` (a preset's departure from its
    paper) is printed under the first line."""
    cfg = c.config
    C, L = cfg.n_embd, cfg.n_layer
    fwd, train = c.forward_flops_per_token, c.training_flops_per_token
    kv = "" if cfg.kv_heads == cfg.n_head else f" ({cfg.kv_heads} key/value)"
    biases = "with" if cfg.bias else ("q/k/v" if cfg.has_qkv_bias else "no")
    family = [name for name, default in (("rmsnorm", cfg.norm == "rmsnorm"), ("rotary", cfg.positions == "rotary"),
                                         (cfg.mlp, cfg.mlp != "gelu"), ("qk-norm", cfg.qk_norm),
                                         (f"bigram table of {cfg.bigram_buckets:,}", cfg.bigram_buckets > 0))
              if default]
    attn_units = f"4·{C}" if c.attention_neurons_per_block == 4 * C else f"{c.attention_neurons_per_block - C:,} + {C:,}"
    mlp_units = f"5·{C}" if c.mlp_neurons_per_block == 5 * C else f"{c.mlp_neurons_per_block - C:,} + {C:,}"
    norm = "RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm"
    lines = [
        (
            f"{source}: {L} layers, {cfg.n_head} heads{kv}, n_embd {C}, context {cfg.block_size}, "
            f"vocab {cfg.vocab_size}, {biases} biases" + "".join(f", {name}" for name in family)
        ),
        *([] if note is None else textwrap.wrap(f"note: {note}", 100, subsequent_indent="  ")),
        "",
        "Parameters (the LM head is tied to the token embeddings and counted once)" if cfg.tie_embeddings
        else "Parameters (the LM head is untied: its own vocab × n_embd weights)",
        f"  total                          {c.parameters:>20,}",
        f"  without position embeddings    {c.without_position_embeddings:>20,}",
        f"  non-embedding (N)              {c.non_embedding:>20,}",
        f"  trainable                      {c.trainable:>20,}",
        (
            f"  = token embeddings {c.token_embeddings:,}"
            + (f" + position embeddings {c.position_embeddings:,}" if cfg.positions == "learned" else "")
            + (f" + bigram embeddings {c.bigram_embeddings:,}" if c.bigram_embeddings else "")
            + (f" + LM head {c.lm_head:,}" if c.lm_head else "")
            + f" + {L} blocks × {c.per_block:,} + final {norm} {c.final_norm:,}"
        ),
        "",
        "Neurons (output units of every Linear layer in the blocks, as Welch Labs counts them)",
        (
            f"  per block: attention {attn_units} = {c.attention_neurons_per_block:,} + MLP {mlp_units} = "
            f"{c.mlp_neurons_per_block:,} = {c.neurons_per_block:,}"
        ),
        f"  total: {L} × {c.neurons_per_block:,} = {c.neurons:,}",
        (
            f"  MLP hidden units only (the neurons interpretability papers count): {L} × "
            f"{c.mlp_hidden_neurons_per_block:,} = {c.mlp_hidden_neurons:,}"
        ),
        "",
        "FLOPs per token (Kaplan et al. 2020; N non-embedding parameters, n_ctx = context)",
        f"  forward   {fwd:>22,}  ({fwd:.3e})   = 2·N + 2·n_layer·n_ctx·n_embd",
        f"  training  {train:>22,}  ({train:.3e})   = 3 × forward ≈ 6·N + 6·n_layer·n_ctx·n_embd",
        "",
        "Memory for weights and optimizer state; activations not included. AdamW keeps 2 moments per",
        "parameter; Muon (the training default) 1 per block matrix and AdamW's 2 for the rest",
        f"  {'':<16}" + "".join(f"{dtype:>14}" for dtype in BYTES_PER_VALUE),
    ]
    rows = {dtype: c.memory_bytes(dtype) for dtype in BYTES_PER_VALUE}
    for key, label in [
        ("weights", "weights"),
        ("gradients", "gradients"),
        ("adamw_state", "AdamW m + v"),
        ("training_total", "total, AdamW"),
        ("muon_state", "Muon state"),
        ("training_total_muon", "total, Muon"),
    ]:
        lines.append(f"  {label:<16}" + "".join(f"{_human_bytes(rows[d][key]):>14}" for d in BYTES_PER_VALUE))
    lines.append(f"  {'KV cache/token':<16}"
                 + "".join(f"{_human_bytes(c.kv_cache_bytes_per_token(d)):>14}" for d in BYTES_PER_VALUE))
    return "\n".join(lines)


def format_preset_table() -> str:
    """One line per preset: shape, parameters, neurons (every Linear output, and the MLP's hidden
    units only); a star marks a preset that departs from its paper, explained underneath."""
    lines = [
        f"{'preset':<17}{'layers':>7}{'heads':>6}{'n_embd':>7}{'context':>8}{'parameters':>18}{'neurons':>13}"
        f"{'MLP neurons':>13}"
    ]
    for name in PRESETS:
        c = count_config(preset(name))
        cfg = c.config
        label = name + ("*" if name in PRESET_NOTES else "")
        lines.append(
            f"{label:<17}{cfg.n_layer:>7}{cfg.n_head:>6}{cfg.n_embd:>7}{cfg.block_size:>8}"
            f"{c.parameters:>18,}{c.neurons:>13,}{c.mlp_hidden_neurons:>13,}"
        )
    lines.append("")
    lines.append("neurons: output units of every Linear layer in the blocks (Welch Labs); MLP neurons: the MLP's")
    lines.append("hidden units only (interpretability papers)")
    for name, note in PRESET_NOTES.items():
        lines += textwrap.wrap(f"* {name}: {note}", 100, subsequent_indent="  ")
    return "\n".join(lines)


def cmd_count(args: argparse.Namespace) -> int:
    if args.list or args.model is None:
        print(format_preset_table())
        return 0
    source, cfg = resolve_config(args.model)
    counted = count_config(cfg)
    note = PRESET_NOTES.get(args.model)
    if args.json:
        print(json.dumps({"source": source, **counted.to_dict(), **({"note": note} if note else {})}, indent=2))
    else:
        print(format_count(source, counted, note))
    return 0


def _resolve_params(text: str, given: str) -> tuple[float, str]:
    """N for ``--params``: a number, or the parameters of a preset or of a run/checkpoint folder
    (as ``gptlab count`` reads them). ``given`` says where a plain number came from."""
    if text.strip() and (text in PRESETS or Path(text).exists()):
        source, cfg = resolve_config(text)
        n = count_config(cfg).parameters
        return float(n), f"{source}: {n:,} parameters"
    return parse_quantity(text, "--params"), given


def _resolve_gpu(text: str, utilization: float | None, given: str) -> tuple[float, float, str, str]:
    """Peak FLOP/s, utilization, and notes on each, for ``--gpu`` (a table name or TFLOPS);
    ``given`` says where ``text`` came from (the user, a default, the GPT-3 example)."""
    try:
        tflops = float(text)
    except ValueError:
        gpu = get_gpu(text)
        util, util_note = (
            (NAMED_GPU_UTILIZATION, "default for a GPU from the table; --utilization to change")
            if utilization is None
            else (utilization, "given")
        )
        return (
            gpu.peak_flops,
            util,
            (
                f"{gpu.full_name}: peak {gpu.peak_tflops:g} TFLOPS dense {gpu.precision} "
                f"(NVIDIA datasheet, see gptlab/train/gpus.py; {given})"
            ),
            util_note,
        )
    tflops = parse_quantity(text, "--gpu")
    util, util_note = (
        (1.0, "default: a TFLOPS figure is taken as already sustained")
        if utilization is None
        else (utilization, "given")
    )
    return tflops * 1e12, util, f"{tflops:g} TFLOPS per GPU ({given})", util_note


def format_cost(
    cost: TrainingCost, params_note: str, gpu_note: str, example: bool, notes: dict[str, str] | None = None
) -> str:
    """The report of ``gptlab cost``, every assumption spelled out, each with where it came from
    (``notes`` for tokens, utilization and price: given, a default, or the GPT-3 example)."""
    notes = notes or {}

    def note(key: str) -> str:
        return f"  ({notes[key]})" if key in notes else ""

    lines = []
    if example:
        lines += [
            "No --params/--tokens given: GPT-3's example (Brown et al. 2020: 175B parameters, 300B tokens;",
            "V100s sustaining 28 TFLOPS at $1.50 per GPU-hour, as Lambda Labs estimated in 2020).",
            "",
        ]
    sustained = cost.sustained_flops_per_second / 1e12
    price = "not given (--price-per-hour)"
    if cost.price_per_hour is not None:
        price = f"${cost.price_per_hour:,.2f} per GPU-hour{note('price')}"
    hours, days, years = (_readable(x) for x in (cost.gpu_hours, cost.gpu_hours / 24, cost.gpu_years))
    lines += [
        "Assumptions",
        f"  parameters N      {cost.params:.4g}  ({params_note})",
        f"  tokens D          {cost.tokens:.4g}{note('tokens')}",
        "  FLOPs per token   6·N for training: 2·N forward + 4·N backward (attention, embeddings ignored)",
        f"  GPU               {gpu_note}",
        f"  utilization       {cost.utilization:.0%} of that → {sustained:,.1f} TFLOPS sustained per GPU"
        f"{note('utilization')}",
        f"  price             {price}",
        "",
        "Estimate",
        f"  training compute  6·N·D = {cost.flops:.3e} FLOPs",
        f"  GPU time          {hours} GPU-hours = {days} GPU-days = {years} GPU-years (365-day years)",
    ]
    if cost.dollars is not None:
        dollars = f"${cost.dollars:,.2f}" if cost.dollars < 1000 else f"${cost.dollars:,.0f}"
        millions = f"  (≈ ${cost.dollars / 1e6:,.2f}M)" if cost.dollars >= 1e6 else ""
        lines.append(f"  cost              {dollars}{millions}")
    return "\n".join(lines)


def cmd_cost(args: argparse.Namespace) -> int:
    example = args.params is None and args.tokens is None
    given, example_note = "given", "GPT-3's example"
    if example:
        params_text, tokens_text = GPT3_EXAMPLE["params"], GPT3_EXAMPLE["tokens"]
        params_given = tokens_given = example_note
        gpu_text, gpu_given = (args.gpu, given) if args.gpu else (GPT3_EXAMPLE["gpu"], example_note)
        price, price_given = (
            (args.price_per_hour, given)
            if args.price_per_hour is not None
            else (GPT3_EXAMPLE["price_per_hour"], example_note)
        )
    elif args.params is None or args.tokens is None:
        raise ConfigError("give both --params and --tokens (or neither, for GPT-3's example)")
    else:
        params_text, tokens_text = args.params, args.tokens
        params_given = tokens_given = price_given = given
        gpu_text, gpu_given = (args.gpu, given) if args.gpu else ("H100", "default; --gpu to change")
        price = args.price_per_hour
    if args.utilization is not None and not 0 < args.utilization <= 1:
        raise ConfigError(f"--utilization must be in (0, 1], got {args.utilization}")
    if price is not None and not 0 < price < float("inf"):
        raise ConfigError(f"--price-per-hour must be a positive number of dollars, got {price}")
    params, params_note = _resolve_params(params_text, params_given)
    tokens = parse_quantity(tokens_text, "--tokens")
    peak, utilization, gpu_note, utilization_note = _resolve_gpu(gpu_text, args.utilization, gpu_given)
    cost = TrainingCost(
        params=params,
        tokens=tokens,
        peak_flops_per_second=peak,
        utilization=utilization,
        price_per_hour=price,
    )
    notes = {"tokens": tokens_given, "utilization": utilization_note, "price": price_given}
    print(format_cost(cost, params_note, gpu_note, example, notes))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``count`` and ``cost`` to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "count",
        help="count a model's parameters, neurons, FLOPs per token and memory",
        description="Count a GPT from its config, without building it: exact parameters (total, "
        "without position embeddings, non-embedding N, trainable), neurons (every Linear layer's "
        "output units in the blocks: 4·n_embd in attention + 5·n_embd in the MLP per layer), "
        "FLOPs per token (forward 2·N + 2·n_layer·n_ctx·n_embd, Kaplan et al. 2020; training 3× "
        "that ≈ 6·N), and memory for weights, gradients and AdamW state at fp32/bf16. With no "
        "argument: a table of every preset.",
    )
    p.add_argument("model", nargs="?", help="a preset name (gpt2, gpt3-175b, ...) or a run/checkpoint path")
    p.add_argument("--list", action="store_true", help="list the presets with their counts")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_count)

    gpus = ", ".join(f"{g.name} ({g.peak_tflops:g})" for g in GPUS.values())
    p = subparsers.add_parser(
        "cost",
        help="estimate training compute, GPU time and dollars (6·N·D)",
        description="Training compute by the 6·N·D rule (N parameters, D tokens), the GPU time it "
        "takes at a GPU's peak × utilization, and its price. Every assumption is printed. With no "
        "--params/--tokens: GPT-3's example (175e9 parameters, 300e9 tokens, 28 TFLOPS, $1.50/h "
        "→ ≈3.15e23 FLOPs, ≈356 GPU-years, ≈$4.7M).",
        epilog=f"GPUs (peak dense bf16/fp16 TFLOPS, NVIDIA datasheets): {gpus}. "
        "Figures accept 175e9, 175_000_000_000 or 175B / 1.5T.",
    )
    p.add_argument(
        "--params",
        metavar="N",
        help="parameters: a number (175e9, 175B), a preset name, or a run/checkpoint folder (as `gptlab count`)",
    )
    p.add_argument("--tokens", metavar="D", help="training tokens (300e9, 300B)")
    p.add_argument(
        "--gpu",
        metavar="NAME|TFLOPS",
        help="a GPU from the table (default H100) or a throughput in TFLOPS per GPU",
    )
    p.add_argument(
        "--utilization",
        type=float,
        default=None,
        metavar="FRACTION",
        help=f"fraction of the peak sustained, in (0, 1] (default {NAMED_GPU_UTILIZATION} for "
        "a GPU from the table, 1.0 for a TFLOPS number, which is taken as already sustained)",
    )
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        metavar="DOLLARS",
        help="price of one GPU-hour in dollars (omit for no dollar figure)",
    )
    p.set_defaults(func=cmd_cost)
