"""Hugging Face GPT-2 interop: import a ``GPT2LMHeadModel`` directory, export ours as one.

Import reads a directory as ``save_pretrained`` writes it, offline: ``config.json`` (GPT-2 only),
weights from ``model.safetensors`` (or its sharded ``model.safetensors.index.json``) or, for old
checkpoints, ``pytorch_model.bin`` (or sharded) through ``torch.load(weights_only=True)``, which
refuses anything but tensors; and the tokenizer from ``tokenizer.json``, else GPT-2's
``vocab.json`` + ``merges.txt``. A model id (``gpt2``, ``openai-community/gpt2``) is looked up in
the local Hugging Face cache only: nothing is ever downloaded.

Export writes a directory that ``GPT2LMHeadModel.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load unchanged: ``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

The two layouts differ in one way only: GPT-2 keeps its projection weights in ``Conv1D`` modules,
stored ``(in, out)``, where our ``nn.Linear`` stores ``(out, in)``; those four matrices per block
are transposed on the way in and out. Parameter names are otherwise identical, and the LM head is
tied to the token embeddings on both sides (stored once, as ``transformers`` does).

A char tokenizer has an exact Hugging Face equivalent, so it is exported too: a ``BPE`` model
with no merges (so every character is one token) and ``byte_fallback`` (so an unknown character
is spelled as ``<0xNN>`` byte tokens, Llama-style) holds the same ids; import recognises that
layout and gives the char tokenizer back.
"""

from __future__ import annotations

import json
import logging
import os
import pickle  # only for its error type: torch.load(weights_only=True) unpickles nothing but tensors
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError, ConfigError, TokenizerError
from gptlab.fileio import fsync_dir
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import (
    EOT,
    GPT2_MERGES_FILE,
    GPT2_VOCAB_FILE,
    N_BYTES,
    TOKENIZER_FILE,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_gpt2_vocab,
    tokenizer_from_dict,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_FILE, TORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE = "tokenizer_config.json", "special_tokens_map.json"

MODEL_TYPE = "gpt2"
# GPT2Model is the same network without the (tied, so weightless) LM head: its keys lack "transformer."
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
# gelu_new and gelu_pytorch_tanh are both the tanh approximation of GELU, which our MLP computes
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
PREFIX = "transformer."
LM_HEAD = "lm_head.weight"
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old transformers versions saved with the weights
IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")


class HFModel(NamedTuple):
    """An imported model and its tokenizer; unpacks as ``model, tokenizer = import_hf(...)``."""

    model: GPT
    tokenizer: Tokenizer


# ---------------------------------------------------------------------------------------------
# finding a model: a directory, or a model id in the local cache


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache, resolved as ``huggingface_hub`` does: ``$HF_HUB_CACHE``,
    else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
    else ``~/.cache/huggingface/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = Path(os.path.expandvars(xdg)).expanduser() / "huggingface"
    return home / "hub"


def resolve_hf_source(name_or_dir: str | Path, *, revision: str = "main") -> Path:
    """The directory to import from: ``name_or_dir`` itself if it is a directory, else the
    snapshot of model id ``name_or_dir`` at ``revision`` (a branch, tag or commit hash) in the
    local Hugging Face cache (``models--ORG--NAME/snapshots/<commit>``, see :func:`hf_cache_dir`).

    Never downloads. Raises CheckpointError when it is neither, saying where it looked.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: not a directory (give the model directory, not a file in it)")
    name = str(name_or_dir)
    parts = name.split("/")
    if not name or len(parts) > 2 or any(not part or part in (".", "..") for part in parts):
        raise CheckpointError(f"{name}: no such directory, and not a Hugging Face model id (ORG/NAME)")
    cache = hf_cache_dir()
    repo = cache / ("models--" + "--".join(parts))
    ref = repo / "refs" / revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        raise CheckpointError(
            f"{name}: not a local directory, and not found in the local Hugging Face cache "
            f"({repo} has no snapshot for revision {revision!r}); gptlab never downloads: "
            f"fetch it first (e.g. `hf download {name}`) or pass a directory"
        )
    return snapshot


# ---------------------------------------------------------------------------------------------
# config.json ⇄ GPTConfig


def config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """Our config for a Hugging Face GPT-2 ``config.json``. Raises ConfigError naming what is
    not a plain GPT-2: another model type or architecture, another activation, cross-attention,
    an MLP width other than 4 × n_embd, unscaled or layer-scaled attention."""
    model_type = hf_config.get("model_type")
    if model_type != MODEL_TYPE:
        raise ConfigError(f"model_type is {model_type!r}: only Hugging Face GPT-2 ({MODEL_TYPE!r}) can be imported")
    architectures = hf_config.get("architectures") or []
    unsupported = [a for a in architectures if a not in ARCHITECTURES]
    if unsupported:
        raise ConfigError(
            f"architecture {', '.join(map(str, unsupported))} is not supported: need {' or '.join(ARCHITECTURES)}"
        )
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation_function is {activation!r}: gptlab's MLP computes gelu_new only")
    n_embd = hf_config.get("n_embd", 768)
    n_inner = hf_config.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        raise ConfigError(f"n_inner is {n_inner}: gptlab's MLP is 4 × n_embd = {4 * n_embd} wide")
    for key, supported in (
        ("add_cross_attention", False),
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
    ):
        if hf_config.get(key, supported) != supported:
            raise ConfigError(f"{key} = {hf_config[key]!r} is not supported (GPT-2 uses {supported})")
    dropouts = {key: hf_config.get(key, 0.1) for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    dropout = dropouts["resid_pdrop"]
    if len(set(dropouts.values())) > 1:
        logger.warning("gptlab has one dropout rate; using resid_pdrop = %s (config has %s)", dropout, dropouts)
    try:
        return GPTConfig(
            vocab_size=hf_config.get("vocab_size", 50257),
            block_size=hf_config.get("n_positions", hf_config.get("n_ctx", 1024)),
            n_layer=hf_config.get("n_layer", 12),
            n_head=hf_config.get("n_head", 12),
            n_embd=n_embd,
            dropout=float(dropout),
            bias=True,
            layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"invalid GPT-2 config: {exc}") from None


def hf_config_from(config: GPTConfig, eot_id: int, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The ``config.json`` of a ``GPT2LMHeadModel`` with our ``config``'s shape, ``<|endoftext|>``
    (``eot_id``) as its bos/eos token, weights stored as ``dtype``. Raises ConfigError for a
    model that GPT-2 cannot express (no biases, or a choice of today's family)."""
    if not config.bias:
        raise ConfigError("a model without biases (bias=False) has no GPT-2 equivalent")
    differs = [name for name, same in (
        ("norm", config.norm == "layernorm"), ("positions", config.positions == "learned"),
        ("mlp", config.mlp == "gelu"), ("mlp_hidden", config.hidden == 4 * config.n_embd),
        ("n_kv_head", config.kv_heads == config.n_head), ("qkv_bias", config.has_qkv_bias),
        ("qk_norm", not config.qk_norm), ("tie_embeddings", config.tie_embeddings),
    ) if not same]
    if differs:
        raise ConfigError(f"GPT-2 cannot express this model's {', '.join(differs)}: only GPT-2 shapes export "
                          "as GPT2LMHeadModel")
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": config.dropout,
        "bos_token_id": eot_id,
        "dtype": str(dtype).removeprefix("torch."),
        "embd_pdrop": config.dropout,
        "eos_token_id": eot_id,
        "initializer_range": 0.02,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "model_type": MODEL_TYPE,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_inner": None,
        "n_layer": config.n_layer,
        "n_positions": config.block_size,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": config.dropout,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }


# ---------------------------------------------------------------------------------------------
# weights


def _is_conv1d(name: str) -> bool:
    return name.endswith(CONV1D_WEIGHTS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from None


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from None
    try:  # weights_only: the restricted unpickler, which loads tensors and refuses code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot load as plain tensors ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(state)


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, safetensors first."""
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (TORCH_FILE, TORCH_INDEX)):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = _read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{directory / index}: no weight_map")
            return [directory / name for name in dict.fromkeys(weight_map.values())]
    present = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(
        f"{directory}: no weights: need {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {TORCH_FILE} or "
        f"{TORCH_INDEX} (found: {', '.join(present) or 'nothing'})"
    )


def _hf_tensors(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    for path in _weight_files(directory):
        yield from _load_weight_file(path).items()


def _to_our_weights(
    source: Path,
    tensors: Iterator[tuple[str, torch.Tensor]],
    expected: Mapping[str, torch.Size],
    tied: bool,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Hugging Face tensors → our state dict: names normalised to ``transformer.*``, Conv1D
    weights transposed, buffers dropped, shapes checked, the LM head checked against the tie."""
    weights: dict[str, torch.Tensor] = {}
    lm_head = None
    unexpected = []
    for name, tensor in tensors:
        if name.endswith(IGNORED_BUFFERS):
            continue
        if name == LM_HEAD:
            lm_head = tensor
            continue
        ours = name if name.startswith(PREFIX) else PREFIX + name
        if ours not in expected:
            unexpected.append(name)
            continue
        if _is_conv1d(ours):
            tensor = tensor.t()
        if tensor.shape != expected[ours]:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)} (as nn.Linear), the config says {tuple(expected[ours])}"
            )
        weights[ours] = tensor.to(dtype).contiguous()
    missing = sorted(set(expected) - set(weights))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match a GPT-2 of this config (missing: {missing[:4]}, unexpected: {sorted(unexpected)[:4]})"
        )
    wte = weights[PREFIX + "wte.weight"]
    if lm_head is not None and not torch.equal(lm_head.to(dtype), wte):
        if not tied:
            raise CheckpointError(
                f"{source}: the LM head is not tied to the token embeddings (tie_word_embeddings = false): "
                "gptlab's GPT always ties them"
            )
        logger.warning("%s differs from the token embeddings; ignored, as transformers ties them", LM_HEAD)
    elif lm_head is None and not tied:
        raise CheckpointError(f"{source}: tie_word_embeddings = false but the weights have no {LM_HEAD}")
    return weights


def _build_model(config: GPTConfig, weights: dict[str, torch.Tensor]) -> GPT:
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(weights, strict=False, assign=True)  # every key checked by _to_our_weights
    model.tie_weights()  # assign=True replaced wte: tie again
    return model.eval()


# ---------------------------------------------------------------------------------------------
# tokenizers


def _byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def _char_tokenizer_from_hf(data: Mapping[str, Any]) -> CharTokenizer | None:
    """The char tokenizer that :func:`_hf_json_of_char` wrote, or None for any other JSON."""
    model = data.get("model") or {}
    if not (
        model.get("type") == "BPE"
        and model.get("byte_fallback")
        and not model.get("merges")
        and data.get("normalizer") is None
        and data.get("pre_tokenizer") is None
        and isinstance(model.get("vocab"), dict)
    ):
        return None
    vocab: dict[str, int] = model["vocab"]
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    byte_ids = [vocab.get(_byte_token(b)) for b in range(N_BYTES)]
    if None in byte_ids or byte_ids != list(range(byte_ids[0], byte_ids[0] + N_BYTES)):
        return None
    byte_id_set = set(byte_ids)
    chars = sorted(
        ((i, token) for token, i in vocab.items() if token not in specials and i not in byte_id_set),
        key=lambda item: item[0],
    )
    if any(len(token) != 1 for _, token in chars) or [i for i, _ in chars] != list(range(len(chars))):
        return None
    try:
        return CharTokenizer([c for _, c in chars], specials, byte_offset=byte_ids[0])
    except TokenizerError:
        return None


def _hf_json_of_char(tokenizer: CharTokenizer) -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` with exactly ``tokenizer``'s ids (see the module docs)."""
    data = tokenizer.to_dict()
    offset, specials = data["byte_offset"], data["special_tokens"]
    vocab = {c: i for i, c in enumerate(data["chars"])}
    vocab.update(specials)
    vocab.update({_byte_token(b): offset + b for b in range(N_BYTES)})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(token, i) for token, i in sorted(specials.items(), key=lambda s: s[1])],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
            "merges": [],
        },
    }


def _added_token(content: str, token_id: int) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _is_gpt2_pipeline(data: Mapping[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` is GPT-2's byte-level BPE pipeline, which ``GPT2Tokenizer``
    rebuilds from the vocabulary and merges alone (transformers 5 does exactly that)."""
    model, pre, decoder = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("decoder") or {}
    return (
        model.get("type") == "BPE"
        and not model.get("byte_fallback")
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and model.get("dropout") is None
        and data.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space")
        and pre.get("use_regex", True)
        and decoder.get("type") == "ByteLevel"
    )


def _load_hf_tokenizer(directory: Path) -> Tokenizer:
    """``tokenizer.json`` (a char tokenizer if it has our char layout), else ``vocab.json`` +
    ``merges.txt``. Padding and truncation settings are dropped: gptlab encodes plain ids."""
    try:
        if (directory / TOKENIZER_FILE).is_file():
            data = _read_json(directory / TOKENIZER_FILE)
            if not isinstance(data, dict):
                raise TokenizerError("not a JSON object")
            char = _char_tokenizer_from_hf(data)
            if char is not None:
                return char
            return tokenizer_from_dict({**data, "truncation": None, "padding": None})
        if (directory / GPT2_VOCAB_FILE).is_file() and (directory / GPT2_MERGES_FILE).is_file():
            return load_gpt2_vocab(directory / GPT2_VOCAB_FILE, directory / GPT2_MERGES_FILE)
    except TokenizerError as exc:
        raise CheckpointError(f"{directory}: tokenizer: {exc}") from None
    raise CheckpointError(
        f"{directory}: no tokenizer: need {TOKENIZER_FILE}, or {GPT2_VOCAB_FILE} + {GPT2_MERGES_FILE}"
    )


def hf_tokenizer_files(tokenizer: Tokenizer, model_max_length: int) -> dict[str, dict[str, Any]]:
    """File name → JSON content of the tokenizer files ``AutoTokenizer.from_pretrained`` loads
    with ids identical to ``tokenizer``'s: ``tokenizer.json``, ``tokenizer_config.json`` (class
    ``GPT2Tokenizer`` for GPT-2's byte-level BPE pipeline, else the generic
    ``PreTrainedTokenizerFast``, which loads ``tokenizer.json`` verbatim) and
    ``special_tokens_map.json`` (``<|endoftext|>`` as bos, eos and unk, as in GPT-2)."""
    if isinstance(tokenizer, CharTokenizer):
        data = _hf_json_of_char(tokenizer)
    elif isinstance(tokenizer, BPETokenizer):
        data = {**tokenizer.to_dict(), "truncation": None, "padding": None}
    else:
        raise TokenizerError(f"cannot export a {type(tokenizer).__name__} to Hugging Face")
    gpt2 = _is_gpt2_pipeline(data)
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer" if gpt2 else "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # decode must give the text back verbatim
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in data.get("added_tokens", [])
        },
    }
    if gpt2:
        tokenizer_config["add_prefix_space"] = False
    return {TOKENIZER_FILE: data, TOKENIZER_CONFIG_FILE: tokenizer_config, SPECIAL_TOKENS_FILE: special}


# ---------------------------------------------------------------------------------------------
# import / export


def import_hf(directory: str | Path, *, dtype: torch.dtype = torch.float32) -> HFModel:
    """Load a Hugging Face GPT-2 directory (see the module docs) as our GPT, in eval mode, with
    weights in ``dtype``, and its tokenizer. Its logits equal ``GPT2LMHeadModel``'s.

    Raises ConfigError for a config that is not a plain GPT-2 (it names what it found), and
    CheckpointError for missing or unreadable files, weights that do not fit the config, an
    untied LM head, or a tokenizer larger than the model's vocabulary.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory")
    hf_config = _read_json(directory / CONFIG_FILE)
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{directory / CONFIG_FILE}: not a JSON object")
    config = config_from_hf(hf_config)
    tokenizer = _load_hf_tokenizer(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{config.vocab_size} embeddings"
        )
    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(config).state_dict().items() if k != LM_HEAD}
    tied = bool(hf_config.get("tie_word_embeddings", True))
    weights = _to_our_weights(directory, _hf_tensors(directory), expected, tied, dtype)
    model = _build_model(config, weights)
    logger.debug("imported %s: %s parameters", directory, f"{model.num_parameters():,}")
    return HFModel(model, tokenizer)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face ``GPT2LMHeadModel`` names and layout (Conv1D weights
    transposed, contiguous, on the CPU), the tied LM head left out as ``save_pretrained`` does."""
    weights = {}
    for name, tensor in model.state_dict().items():
        if name == LM_HEAD:
            continue
        tensor = tensor.detach().cpu()
        if name == PREFIX + "wte.weight":  # rows beyond the vocabulary are GPU padding, not tokens
            tensor = tensor[: model.config.vocab_size]
        weights[name] = (tensor.t() if _is_conv1d(name) else tensor).contiguous()
    return weights


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise CheckpointError(f"{out}: already exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    # Overwriting deletes the old directory: only ever a model directory, never a run or anything else
    if not (out / CONFIG_FILE).is_file() or (out / "LATEST").exists() or (out / "state.json").exists():
        raise CheckpointError(
            f"{out}: refusing to replace a directory that is not a Hugging Face model directory "
            f"(no {CONFIG_FILE}, or it holds a gptlab run)"
        )


def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face GPT-2 directory ``out_dir`` (see the
    module docs) that ``GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer.from_pretrained``
    load with identical logits and ids. Returns ``out_dir``.

    Atomic: everything is written into a temporary sibling directory, fsynced, then renamed into
    place, so ``out_dir`` is either absent/old or complete. An existing non-empty ``out_dir`` is
    refused unless ``overwrite``, and even then only if it is a model directory (has
    ``config.json``, holds no gptlab run). Raises CheckpointError for those, ConfigError for a
    model GPT-2 cannot express, TokenizerError for a tokenizer larger than the vocabulary.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size} embeddings"
        )
    weights = hf_state_dict(model)
    dtype = model.transformer.wte.weight.dtype
    files = {CONFIG_FILE: hf_config_from(config, tokenizer.eot_id, dtype)}
    files.update(hf_tokenizer_files(tokenizer, config.block_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    aside = None
    try:
        save_file(weights, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        _check_out_dir(out, overwrite)  # again: someone may have written there meanwhile
        if out.is_dir():
            if any(out.iterdir()):
                aside = out.parent / f".{out.name}.old-{os.getpid()}"
                os.rename(out, aside)
            else:
                out.rmdir()
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and not out.exists():
            os.rename(aside, out)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    logger.debug("exported %s", out)
    return out
