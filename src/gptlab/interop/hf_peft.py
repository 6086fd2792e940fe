"""LoRA adapters as ``peft`` writes and reads them, both ways.

A peft LoRA adapter is a directory with ``adapter_config.json`` (``r``, ``lora_alpha``,
``target_modules``, ``fan_in_fan_out``, ``base_model_name_or_path``, ...) and
``adapter_model.safetensors``, whose keys are ``base_model.model.<module path>.lora_A.weight``
(r, in) and ``.lora_B.weight`` (out, r) for each adapted module of the Hugging Face model. GPT-2's
``Conv1D`` modules keep their weight (in, out), hence ``fan_in_fan_out: true``, but the LoRA
factors have the same shapes as ours.

The module paths are those of the Hugging Face architecture our model exports as
(:mod:`~gptlab.interop.hf_weights`' layout): GPT-2's names are ours; in the Llama family our
fused ``c_attn`` is their ``q_proj``, ``k_proj``, ``v_proj`` and our ``c_fc`` their
``gate_proj``, ``up_proj``. A fused update ``(α/r) B A`` splits exactly: each part keeps ``A`` and
takes its rows of ``B``. The other way, separate ``q``/``k``/``v`` adapters (each with its own
``A``) fuse exactly into one of rank ``r_q + r_k + r_v``: ``A`` stacked, ``B`` block-diagonal
(unless they share ``A``, as ours do once exported: then the rank stays ``r``). Modules of lower
rank are padded with zero rows of ``A`` and columns of ``B``, and per-module scalings
(``alpha_pattern``, ``rank_pattern``, rsLoRA) are folded into ``B``, so that one :class:`LoRAConfig`
holds every module: the adapted model's outputs are the same.

What peft adapters can hold and gptlab's LoRA cannot (DoRA, LoRA biases, ``modules_to_save``,
trainable tokens, other peft types) is a ConfigError naming the key.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import CheckpointError, ConfigError
from gptlab.finetune.config import LoRAConfig
from gptlab.finetune.lora import AdapterMismatchError, inject_lora, load_lora_state_dict, lora_modules
from gptlab.interop.hf import hf_layout
from gptlab.interop.hf_files import read_json, write_model_dir
from gptlab.interop.hf_weights import HFLayout
from gptlab.model.gpt import GPT

__all__ = ["PEFT_CONFIG_FILE", "PEFT_WEIGHTS_FILE", "PeftAdapter", "apply_peft_adapter", "export_peft",
           "is_peft_adapter", "peft_config", "peft_weights", "read_peft_adapter"]

logger = logging.getLogger(__name__)

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_BIN_FILE = "adapter_model.bin"
KEY_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.(?P<factor>lora_A|lora_B)(?:\.[A-Za-z0-9_-]+)?\.weight$")
# peft settings gptlab's LoRA cannot hold, with the value that means "not used"
UNSUPPORTED: dict[str, Any] = {
    "use_dora": False, "lora_bias": False, "modules_to_save": None, "trainable_token_indices": None,
    "layer_replication": None, "target_parameters": None, "alora_invocation_tokens": None, "use_qalora": False,
}


# ---------------------------------------------------------------------------------------------
# module names on both sides


@dataclass(frozen=True)
class _Link:
    """One of our modules and the Hugging Face modules its weight is made of (rows of each)."""

    ours: str
    theirs: tuple[str, ...]
    rows: tuple[int, ...] | None
    transpose: bool


def _module_links(layout: HFLayout) -> list[_Link]:
    """The weight links of ``layout`` as module names (``.weight`` cut off)."""
    cut = lambda name: name.removesuffix(".weight")  # noqa: E731
    return [_Link(cut(link.ours), tuple(cut(t) for t in link.theirs), link.rows, link.transpose)
            for link in layout.links if link.ours.endswith(".weight") and link.absent is None]


def shortest_suffixes(chosen: Iterable[str], every: Iterable[str]) -> list[str]:
    """For each name in ``chosen`` the shortest dotted suffix that matches (as ``name == s`` or
    ``name.endswith("." + s)``, peft's and gptlab's rule) only names in ``chosen`` among
    ``every``; the distinct suffixes, in order. ``attn.c_proj`` rather than ``c_proj`` when the
    MLP's ``c_proj`` is not chosen, ``q_proj`` when every layer's is."""
    chosen = list(dict.fromkeys(chosen))
    chosen_set, every = set(chosen), list(every)
    suffixes: list[str] = []
    for name in chosen:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if all(n in chosen_set for n in every if n == suffix or n.endswith("." + suffix)):
                break
        if suffix not in suffixes:
            suffixes.append(suffix)
    return suffixes


# ---------------------------------------------------------------------------------------------
# export


def _adapted(model: nn.Module) -> tuple[dict[str, Any], float, float, float]:
    """The model's LoRA layers, and their common rank, alpha and dropout (ConfigError if none)."""
    modules = lora_modules(model)
    if not modules:
        raise ConfigError("the model has no LoRA adapters to export")
    first = next(iter(modules.values()))
    if any((m.rank, m.alpha) != (first.rank, first.alpha) for m in modules.values()):
        raise ConfigError("the model's LoRA layers differ in rank or alpha: peft's adapter_config holds one of each")
    dropout = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    return modules, first.rank, first.alpha, dropout


def peft_weights(model: GPT, layout: HFLayout) -> tuple[dict[str, torch.Tensor], list[str], bool]:
    """The adapter tensors of ``model``'s LoRA layers under peft's names for the Hugging Face
    model that ``layout`` writes; also the adapted Hugging Face module paths and whether they are
    ``Conv1D`` (``fan_in_fan_out``). ConfigError for an adapted module the layout has no place
    for (e.g. GPT-2's tied ``lm_head``)."""
    modules, _, _, _ = _adapted(model)
    links = {link.ours: link for link in _module_links(layout)}
    tensors: dict[str, torch.Tensor] = {}
    theirs: list[str] = []
    transposed: set[bool] = set()
    for name, module in modules.items():
        link = links.get(name)
        if link is None:
            raise ConfigError(f"LoRA on {name}: {layout.name} has no separate module for it, so peft cannot hold it")
        A = module.lora_A.detach().cpu()  # (r, in)
        B = module.lora_B.detach().cpu()  # (out, r)
        pieces = B.split(list(link.rows)) if link.rows else (B,)
        for their, piece in zip(link.theirs, pieces):
            tensors[f"{KEY_PREFIX}{their}.lora_A.weight"] = A.clone(memory_format=torch.contiguous_format)
            tensors[f"{KEY_PREFIX}{their}.lora_B.weight"] = piece.clone(memory_format=torch.contiguous_format)
            theirs.append(their)
        transposed.add(link.transpose)
    if len(transposed) > 1:
        raise ConfigError("the adapted modules mix Conv1D and Linear layers: peft's fan_in_fan_out is one setting")
    return tensors, theirs, transposed == {True}


def peft_config(model: GPT, layout: HFLayout, adapted: list[str], fan_in_fan_out: bool, *,
                base_model_name_or_path: str | None) -> dict[str, Any]:
    """``adapter_config.json`` for ``model``'s adapters on the ``adapted`` modules of the Hugging
    Face model of ``layout`` (as :func:`peft_weights` gives them)."""
    _, rank, alpha, dropout = _adapted(model)
    every = [t for link in _module_links(layout) for t in link.theirs]
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": dropout,
        "target_modules": shortest_suffixes(adapted, every),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def export_peft(
    model: GPT,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    *,
    base_model_name_or_path: str | None,
    overwrite: bool = False,
    extra_files: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s LoRA adapters (attached, not merged) as a peft adapter directory
    ``out_dir``: ``adapter_config.json`` (``base_model_name_or_path`` names the Hugging Face base,
    as exported by :func:`gptlab.interop.hf.export_hf` or a hub id) and
    ``adapter_model.safetensors``, plus ``extra_files`` (name → JSON, e.g. the tokenizer's).
    ``PeftModel.from_pretrained(base, out_dir)`` then computes what our adapted model does.
    Atomic as :func:`~gptlab.interop.hf_files.write_model_dir`. Returns ``out_dir``."""
    layout = hf_layout(model.config, tokenizer, model.transformer.wte.weight.dtype)
    tensors, adapted, fan_in_fan_out = peft_weights(model, layout)
    config = peft_config(model, layout, adapted, fan_in_fan_out, base_model_name_or_path=base_model_name_or_path)
    out = Path(out_dir)
    write_model_dir(out, tensors, {PEFT_CONFIG_FILE: config, **(extra_files or {})}, overwrite=overwrite,
                    weights_file=PEFT_WEIGHTS_FILE, marker=PEFT_CONFIG_FILE)
    logger.debug("exported a peft adapter to %s (%d tensors)", out, len(tensors))
    return out


# ---------------------------------------------------------------------------------------------
# import


@dataclass
class PeftAdapter:
    """A peft LoRA adapter read from disk: its config and, per Hugging Face module path, the
    factors ``A`` (r, in) and ``B`` (out, r) with the module's scaling."""

    path: Path
    config: dict[str, Any]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def base_model_name_or_path(self) -> str | None:
        value = self.config.get("base_model_name_or_path")
        return str(value) if value else None


def is_peft_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a peft adapter (``adapter_config.json``)."""
    return (Path(path) / PEFT_CONFIG_FILE).is_file()


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """The value of the first pattern that matches the end of ``module``, as peft matches them."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _check_config(path: Path, config: Mapping[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{path}: peft_type is {config.get('peft_type')!r}: gptlab imports LoRA adapters only")
    for key, unused in UNSUPPORTED.items():
        value = config.get(key, unused)
        if value not in (unused, [], {}, False, None):
            raise ConfigError(f"{path}: {key} = {value!r} is not supported by gptlab's LoRA")
    if config.get("bias", "none") != "none":
        raise ConfigError(f"{path}: bias = {config['bias']!r} is not supported (gptlab's LoRA trains no biases)")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or isinstance(config.get(key), bool) or config[key] <= 0:
            raise ConfigError(f"{path}: {key} must be a positive number, got {config.get(key)!r}")


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / PEFT_WEIGHTS_FILE).is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(directory / PEFT_WEIGHTS_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{directory / PEFT_WEIGHTS_FILE}: cannot read safetensors ({exc})") from None
    if (directory / PEFT_BIN_FILE).is_file():
        import pickle

        try:  # weights_only: tensors and nothing else
            state = torch.load(directory / PEFT_BIN_FILE, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            raise CheckpointError(f"{directory / PEFT_BIN_FILE}: cannot load as plain tensors ({exc})") from None
        if isinstance(state, Mapping) and all(torch.is_tensor(v) for v in state.values()):
            return dict(state)
        raise CheckpointError(f"{directory / PEFT_BIN_FILE}: not a state dict of tensors")
    raise CheckpointError(f"{directory}: no {PEFT_WEIGHTS_FILE} (or {PEFT_BIN_FILE})")


def read_peft_adapter(directory: str | Path) -> PeftAdapter:
    """Read a peft LoRA adapter directory. ConfigError for settings gptlab's LoRA cannot hold,
    CheckpointError for missing or malformed files (a tensor that is not a LoRA factor, a
    module with one factor only, factors whose ranks disagree)."""
    directory = Path(directory)
    config = read_json(directory / PEFT_CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / PEFT_CONFIG_FILE}: not a JSON object")
    _check_config(directory, config)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _read_tensors(directory).items():
        match = _KEY.match(key)
        if match is None:
            raise ConfigError(f"{directory}: tensor {key} is not a LoRA factor (lora_A / lora_B): not supported")
        module = match["module"].removeprefix(KEY_PREFIX)
        halves.setdefault(module, {})[match["factor"]] = tensor
    if not halves:
        raise CheckpointError(f"{directory}: the adapter has no LoRA tensors")
    alpha, r = float(config["lora_alpha"]), int(config["r"])
    factors = {}
    for module, pair in halves.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise CheckpointError(f"{directory}: {module} has {', '.join(pair)} only")
        A, B = pair["lora_A"].float(), pair["lora_B"].float()
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise CheckpointError(f"{directory}: {module}'s lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} "
                                  "are not (r, in) and (out, r)")
        rank = A.shape[0]
        module_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
        if rank != int(_pattern_value(config.get("rank_pattern") or {}, module, r)):
            logger.warning("%s: %s has rank %d, its config says otherwise; the tensors win", directory, module, rank)
        scaling = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        factors[module] = (A, B, scaling)
    return PeftAdapter(directory, config, factors)


def _fuse(link: _Link, parts: dict[int, tuple[torch.Tensor, torch.Tensor, float]], out_rows: int,
          scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One (A, B) for our module from the adapters of its Hugging Face parts, with each part's
    scaling relative to ``scaling`` folded into B."""
    rows = list(link.rows) if link.rows else [out_rows]
    offsets = [sum(rows[:i]) for i in range(len(rows))]
    scaled = {i: (A, B * (s / scaling)) for i, (A, B, s) in parts.items()}
    first_A = next(iter(scaled.values()))[0]
    if len(scaled) == len(rows) and all(torch.equal(A, first_A) for A, _ in scaled.values()):
        return first_A, torch.cat([scaled[i][1] for i in range(len(rows))])  # a shared A: rank stays r
    A = torch.cat([scaled[i][0] for i in sorted(scaled)])  # (Σr, in)
    B = torch.zeros(out_rows, A.shape[0])  # block-diagonal (out, Σr)
    col = 0
    for i in sorted(scaled):
        part_B = scaled[i][1]
        B[offsets[i]:offsets[i] + rows[i], col:col + part_B.shape[1]] = part_B
        col += part_B.shape[1]
    return A, B


def peft_to_lora(adapter: PeftAdapter, model: GPT, layout: HFLayout) -> tuple[LoRAConfig, dict[str, torch.Tensor]]:
    """The gptlab LoRA config and ``lora_state_dict`` tensors that make ``model`` compute what the
    peft ``adapter`` makes the Hugging Face model of ``layout`` compute. AdapterMismatchError for a
    module the model does not have or shapes that do not fit it."""
    where = {their: (link, i) for link in _module_links(layout) for i, their in enumerate(link.theirs)}
    grouped: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor, float]]] = {}
    links: dict[str, _Link] = {}
    for module, factor in adapter.factors.items():
        if module not in where and layout.prefix + module in where:
            module = layout.prefix + module  # a base saved without its LM head (GPT2Model)
        if module not in where:
            raise AdapterMismatchError(f"{adapter.path}: module {module} is not a linear layer of a {layout.name} "
                                       f"of this config")
        link, i = where[module]
        links[link.ours] = link
        grouped.setdefault(link.ours, {})[i] = factor
    params = dict(model.named_modules())
    scalings = sorted({s for parts in grouped.values() for _, _, s in parts.values()})
    scaling = scalings[0] if len(scalings) == 1 else 1.0
    fused: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for ours, parts in grouped.items():
        weight = params[ours].weight  # type: ignore[union-attr]
        for i, (A, B, _) in parts.items():
            rows = links[ours].rows[i] if links[ours].rows else weight.shape[0]
            if A.shape[1] != weight.shape[1] or B.shape[0] != rows:
                raise AdapterMismatchError(
                    f"{adapter.path}: {links[ours].theirs[i]}'s factors ({tuple(B.shape)} @ {tuple(A.shape)}) do not "
                    f"fit the model's layer ({rows} × {weight.shape[1]})")
        fused[ours] = _fuse(links[ours], parts, weight.shape[0], scaling)
    rank = max(A.shape[0] for A, _ in fused.values())
    tensors: dict[str, torch.Tensor] = {}
    for ours, (A, B) in fused.items():
        pad = rank - A.shape[0]  # zero rows of A and columns of B add nothing
        tensors[f"{ours}.lora_A"] = torch.cat([A, A.new_zeros(pad, A.shape[1])]) if pad else A
        tensors[f"{ours}.lora_B"] = torch.cat([B, B.new_zeros(B.shape[0], pad)], dim=1) if pad else B
    order = [name for name in params if name in fused]
    config = LoRAConfig(rank=rank, alpha=scaling * rank, dropout=float(adapter.config.get("lora_dropout") or 0.0),
                        targets=tuple(shortest_suffixes(order, params)))
    return config, tensors


def apply_peft_adapter(model: GPT, tokenizer: Tokenizer, adapter: PeftAdapter | str | Path) -> LoRAConfig:
    """Attach a peft LoRA adapter to ``model`` (our GPT, the adapter's base as gptlab holds it)
    as gptlab LoRA layers: the model then computes what ``PeftModel`` computes on the Hugging
    Face base. Returns the LoRA config (fine-tuning and merging go on as for gptlab's own)."""
    if not isinstance(adapter, PeftAdapter):
        adapter = read_peft_adapter(adapter)
    layout = hf_layout(model.config, tokenizer, model.transformer.wte.weight.dtype)
    config, tensors = peft_to_lora(adapter, model, layout)
    dtype = model.transformer.wte.weight.dtype
    inject_lora(model, config)
    load_lora_state_dict(model, {k: v.to(dtype) for k, v in tensors.items()})
    return config


def import_peft_run(
    adapter_dir: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    revision: str = "main",
    offline: bool = False,
) -> Path:
    """Import a peft LoRA adapter as a gptlab LoRA run in ``out``, laid out as ``gptlab finetune
    --lora`` lays one out: a checkpoint holding the base and an ``adapter-000000/`` it names, so
    that ``sample``, ``serve``, ``inspect``, ``export-hf``, ``lora merge`` and ``finetune`` (as a
    base) use it as base + adapter.

    The base is ``base`` (a gptlab run or checkpoint), else the adapter's
    ``base_model_name_or_path`` imported from Hugging Face (a local directory, the local cache,
    or downloaded unless ``offline``). Returns the checkpoint folder. CheckpointError when ``out``
    holds anything, or the adapter names no base and none is given; AdapterMismatchError when the
    adapter does not fit the base.
    """
    from gptlab.finetune.finetuner import ADAPTER_PREFIX
    from gptlab.finetune.loader import CHAT_TEMPLATE_KEY, load_run
    from gptlab.finetune.lora import model_fingerprint, plain_linears, save_adapter
    from gptlab.interop.hf import import_hf
    from gptlab.interop.hf_chat import read_chat_settings
    from gptlab.interop.hub import fetch_hf_model
    from gptlab.train.checkpoint import save_checkpoint

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new --out (nothing was written)")
    adapter = read_peft_adapter(adapter_dir)
    if base is not None:
        loaded = load_run(base, merge=True)
        model, tokenizer, template = loaded.model, loaded.tokenizer, loaded.chat_template
        base_path = str(loaded.checkpoint.path.resolve())
    else:
        name = adapter.base_model_name_or_path
        if not name:
            raise CheckpointError(f"{adapter.path}: adapter_config.json names no base model: pass --base RUN")
        source = fetch_hf_model(name, revision=revision, offline=offline)
        model, tokenizer = import_hf(source)
        template, base_path = read_chat_settings(source, tokenizer), name
    fingerprint = model_fingerprint(model)
    config = apply_peft_adapter(model, tokenizer, adapter)
    adapter_name = f"{ADAPTER_PREFIX}{0:06d}"
    origin = {"format": "peft", "source": str(adapter.path), "base_model_name_or_path": adapter.base_model_name_or_path}
    save_adapter(model, out / adapter_name, config, base_fingerprint=fingerprint,
                 extra={"base_path": base_path, "step": 0, "imported_from": origin})
    state = {"adapter": adapter_name, "base": {"path": base_path, "fingerprint": fingerprint},
             "imported_from": origin}
    if template is not None:
        state[CHAT_TEMPLATE_KEY] = template.to_dict()
    with plain_linears(model):
        return save_checkpoint(out, model, tokenizer, step=0, state=state)
