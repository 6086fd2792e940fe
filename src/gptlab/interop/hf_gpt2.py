"""GPT-2 (``GPT2LMHeadModel``) ⇄ gptlab: its ``config.json`` both ways, and its weight names.

The two layouts differ in one way only: GPT-2 keeps its projection weights in ``Conv1D`` modules,
stored ``(in, out)``, where our ``nn.Linear`` stores ``(out, in)``; those four matrices per block
are transposed on the way in and out. Parameter names are otherwise identical, and the LM head is
tied to the token embeddings on both sides (stored once, as ``transformers`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from gptlab.errors import ConfigError
from gptlab.interop.hf_weights import HFLayout, TensorLink
from gptlab.model.config import GPTConfig

logger = logging.getLogger(__name__)

MODEL_TYPE = "gpt2"
NAME = "GPT-2"
# GPT2Model is the same network without the (tied, so weightless) LM head: its keys lack "transformer."
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
# gelu_new and gelu_pytorch_tanh are both the tanh approximation of GELU, which our MLP computes
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
PREFIX = "transformer."
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old transformers versions saved with the weights
IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")


def config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """Our config for a Hugging Face GPT-2 ``config.json``. Raises ConfigError naming what is
    not a plain GPT-2: another model type or architecture, another activation, cross-attention,
    an MLP width other than 4 × n_embd, unscaled or layer-scaled attention."""
    model_type = hf_config.get("model_type")
    if model_type != MODEL_TYPE:
        raise ConfigError(f"model_type is {model_type!r}, not {MODEL_TYPE!r}")
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
    """The ``config.json`` of a ``GPT2LMHeadModel`` with our ``config``'s shape, the end-of-text
    token (``eot_id``) as its bos/eos token, weights stored as ``dtype``. Raises ConfigError for a
    model that GPT-2 cannot express (no biases, or a choice of today's family), naming the fields."""
    if not config.bias:
        raise ConfigError("a model without biases (bias=False) has no GPT-2 equivalent")
    differs = [name for name, same in (
        ("norm", config.norm == "layernorm"), ("positions", config.positions == "learned"),
        ("mlp", config.mlp == "gelu"), ("mlp_hidden", config.hidden == 4 * config.n_embd),
        ("n_kv_head", config.kv_heads == config.n_head), ("qkv_bias", config.has_qkv_bias),
        ("qk_norm", not config.qk_norm), ("tie_embeddings", config.tie_embeddings),
        ("bigram_buckets", not config.bigram_buckets),
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


def links(config: GPTConfig) -> tuple[TensorLink, ...]:
    """Every GPT-2 tensor under its own (and our) name; the Conv1D matrices transposed."""
    names = [f"{PREFIX}{part}" for part in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]
    for i in range(config.n_layer):
        block = f"{PREFIX}h.{i}."
        names += [block + f"{module}.{kind}" for module in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2",
                                                          "mlp.c_fc", "mlp.c_proj") for kind in ("weight", "bias")]
    return tuple(TensorLink(name, (name,), transpose=name.endswith(CONV1D_WEIGHTS)) for name in names)


def layout_from_hf(hf_config: Mapping[str, Any]) -> HFLayout:
    """How a GPT-2 checkpoint with this ``config.json`` maps onto our model (ConfigError if it is
    not a plain GPT-2, see :func:`config_from_hf`)."""
    config = config_from_hf(hf_config)
    return HFLayout(NAME, config, dict(hf_config), links(config), PREFIX, IGNORED_BUFFERS,
                    hf_tied=bool(hf_config.get("tie_word_embeddings", True)))


def layout_for(config: GPTConfig, eot_id: int, dtype: torch.dtype) -> HFLayout:
    """How our model of ``config`` is written as a ``GPT2LMHeadModel`` (ConfigError if GPT-2
    cannot express it, see :func:`hf_config_from`)."""
    return HFLayout(NAME, config, hf_config_from(config, eot_id, dtype), links(config), PREFIX)
