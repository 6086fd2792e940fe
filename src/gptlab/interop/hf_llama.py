"""The Llama family (``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``,
``Qwen3ForCausalLM``) ⇄ gptlab: ``config.json`` both ways, and the weight names.

All four are one network that our config expresses exactly: RMSNorm, rotary positions (default,
or Llama 3's scaling), a SiLU-gated MLP (SwiGLU), grouped-query attention, an untied or tied LM
head; Qwen2 adds q/k/v biases, Qwen3 per-head RMSNorm on queries and keys (``qk_norm``), Llama
optional biases (``attention_bias`` on q, k, v and o; ``mlp_bias``). Their rotary embedding
rotates (first half, second half) pairs as ours does, so q and k weights are copied as they are;
our fused ``c_attn`` is their q, k, v stacked, our ``c_fc`` their gate and up.

What the family has and gptlab does not — mixture-of-experts, sliding-window attention shorter
than the context, rope types other than ``default`` and ``llama3``, a head width other than
hidden/heads, another activation — is a ConfigError naming the key. Export writes
``LlamaForCausalLM``, or ``Qwen2ForCausalLM`` for q/k/v biases without other biases (when the
tokenizer is Qwen2's, see :func:`_export_type`), or ``Qwen3ForCausalLM`` for QK-norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gptlab.errors import ConfigError
from gptlab.interop.hf_weights import LM_HEAD, HFLayout, TensorLink, bias_link
from gptlab.model.config import GPTConfig

# model_type → the architecture transformers builds for it
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
MODEL_TYPES = tuple(ARCHITECTURES)
PREFIX = "model."
# inverse rotary frequencies that old checkpoints saved with the weights
IGNORED_BUFFERS = (".rotary_emb.inv_freq",)
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# keys of mixture-of-experts variants; any of them set means a network gptlab does not have
MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
            "n_shared_experts", "shared_expert_intermediate_size")
ROPE_TYPES = ("default", "llama3")


@dataclass(frozen=True)
class Biases:
    """Which of a family checkpoint's projections have biases."""

    qkv: bool = False
    o: bool = False
    mlp: bool = False


def _hf_biases(model_type: str, hf_config: Mapping[str, Any]) -> Biases:
    """The biases transformers gives the architecture of ``model_type`` under this config."""
    if model_type == "llama":
        attention = bool(hf_config.get("attention_bias", False))
        return Biases(attention, attention, bool(hf_config.get("mlp_bias", False)))
    if model_type == "qwen2":
        return Biases(qkv=True)
    if model_type == "qwen3":
        attention = bool(hf_config.get("attention_bias", False))
        return Biases(attention, attention)
    return Biases()  # mistral


# ---------------------------------------------------------------------------------------------
# config.json → GPTConfig


def _rope_fields(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """Our rotary fields from ``rope_parameters`` (transformers 5), or from ``rope_theta`` and
    ``rope_scaling`` at the top level (older configs). ConfigError for an unsupported rope."""
    params = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"rope_parameters is {params!r}: need an object")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"rope_type is {rope_type!r}: gptlab's rotary positions support {' and '.join(ROPE_TYPES)}")
    partial = params.get("partial_rotary_factor", hf_config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConfigError(f"partial_rotary_factor is {partial}: gptlab rotates the whole head")
    fields: dict[str, Any] = {"rope_theta": float(params.get("rope_theta", hf_config.get("rope_theta", 10000.0)))}
    if rope_type == "llama3":
        fields |= {
            "rope_scaling_factor": float(params["factor"]),
            "rope_low_freq_factor": float(params.get("low_freq_factor", 1.0)),
            "rope_high_freq_factor": float(params.get("high_freq_factor", 4.0)),
            "rope_original_context": int(params.get("original_max_position_embeddings", 8192)),
        }
    return fields


def _sliding_window(model_type: str, hf_config: Mapping[str, Any]) -> int | None:
    """The attention window transformers applies to at least one layer, or None if every layer
    attends over the whole context (Llama never windows; Qwen only with ``use_sliding_window``)."""
    window = hf_config.get("sliding_window")
    if window is None or model_type == "llama":
        return None
    if model_type in ("qwen2", "qwen3"):
        if not hf_config.get("use_sliding_window", False):
            return None
        n_layer, first = hf_config["num_hidden_layers"], hf_config.get("max_window_layers", 28)
        types = hf_config.get("layer_types") or ["sliding_attention" if i >= first else "full_attention"
                                                 for i in range(n_layer)]
        return window if "sliding_attention" in types else None
    return window


def _check_head_dim(model_type: str, hf_config: Mapping[str, Any]) -> None:
    """ConfigError if the heads are not hidden_size / num_attention_heads wide, as ours are."""
    hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
    head_dim = hf_config.get("head_dim") or (128 if model_type == "qwen3" else None)  # Qwen3Config's default
    if head_dim is None or not all(isinstance(v, int) and v > 0 for v in (hidden, heads)):
        return  # no head_dim, or numbers that GPTConfig will refuse itself
    if head_dim * heads != hidden:
        raise ConfigError(f"head_dim is {head_dim}, not hidden_size / num_attention_heads = {hidden / heads:g}: "
                          "gptlab's heads split the width evenly")


def _check_supported(model_type: str, hf_config: Mapping[str, Any]) -> None:
    """ConfigError naming the first key that asks for something gptlab's model does not compute."""
    missing = [key for key in REQUIRED if key not in hf_config]
    if missing:
        raise ConfigError(f"config.json of a {model_type} model has no {', '.join(missing)}")
    architectures = [a for a in hf_config.get("architectures") or [] if a != ARCHITECTURES[model_type]]
    if architectures:
        raise ConfigError(f"architecture {', '.join(map(str, architectures))} is not supported: "
                          f"need {ARCHITECTURES[model_type]}")
    for key in MOE_KEYS:
        if hf_config.get(key):
            raise ConfigError(f"{key} = {hf_config[key]!r}: mixture-of-experts models are not supported")
    activation = hf_config.get("hidden_act", "silu")
    if activation != "silu":
        raise ConfigError(f"hidden_act is {activation!r}: gptlab's SwiGLU MLP gates with silu only")
    _check_head_dim(model_type, hf_config)
    window = _sliding_window(model_type, hf_config)
    context = hf_config.get("max_position_embeddings", 2048)
    if window is not None and window < context:
        raise ConfigError(f"sliding_window is {window}, shorter than the context (max_position_embeddings = "
                          f"{context}): gptlab attends over the whole context")


def config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """Our config for the ``config.json`` of a Llama, Mistral, Qwen2 or Qwen3 causal LM. Raises
    ConfigError naming the key of anything gptlab's model does not compute (see the module docs)."""
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"model_type is {model_type!r}, not one of {', '.join(MODEL_TYPES)}")
    _check_supported(model_type, hf_config)
    biases = _hf_biases(model_type, hf_config)
    bias = biases.o or biases.mlp  # our one flag for o and the MLP; the side HF lacks is imported as zeros
    try:
        return GPTConfig(
            vocab_size=hf_config["vocab_size"],
            block_size=hf_config.get("max_position_embeddings", 2048),
            n_layer=hf_config["num_hidden_layers"],
            n_head=hf_config["num_attention_heads"],
            n_kv_head=hf_config.get("num_key_value_heads") or hf_config["num_attention_heads"],
            n_embd=hf_config["hidden_size"],
            mlp_hidden=hf_config["intermediate_size"],
            dropout=float(hf_config.get("attention_dropout", 0.0)),
            bias=bias,
            qkv_bias=None if biases.qkv == bias else biases.qkv,
            layer_norm_epsilon=float(hf_config.get("rms_norm_eps", 1e-6)),
            norm="rmsnorm",
            positions="rotary",
            mlp="swiglu",
            qk_norm=model_type == "qwen3",
            tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            **_rope_fields(hf_config),
        )
    except (TypeError, ValueError, KeyError) as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"invalid {model_type} config: {exc}") from None


# ---------------------------------------------------------------------------------------------
# GPTConfig → config.json


def _export_type(config: GPTConfig, qwen2_tokenizer: bool) -> str:
    """The model_type that expresses ``config``: qwen3 for QK-norm; qwen2 for q/k/v biases alone
    if the tokenizer is Qwen2's own pipeline (``qwen2_tokenizer``: transformers' AutoTokenizer
    rebuilds that pipeline for any qwen2 directory, whatever tokenizer.json says), else llama with
    a zero o_proj bias; llama for the rest. ConfigError naming the field the family cannot express."""
    for field, value, needed in (("norm", config.norm, "rmsnorm"), ("positions", config.positions, "rotary"),
                                 ("mlp", config.mlp, "swiglu")):
        if value != needed:
            raise ConfigError(f"{field} is {value!r}: the Llama family (and transformers) needs {field}={needed!r}")
    if config.bigram_buckets:
        raise ConfigError(f"bigram_buckets is {config.bigram_buckets}: the Llama family (and transformers) has no "
                          "hashed bigram embedding")
    if config.qk_norm:
        if config.bias:
            raise ConfigError("qk_norm with bias=True: Qwen3, the family's QK-norm model, has no MLP biases")
        return "qwen3"
    return "qwen2" if config.has_qkv_bias and not config.bias and qwen2_tokenizer else "llama"


def _rope_config(config: GPTConfig) -> dict[str, Any]:
    """The rope keys in both the transformers 5 form (``rope_parameters``) and the older one."""
    scaling = None
    if config.rope_scaling_factor != 1.0:
        scaling = {"rope_type": "llama3", "factor": config.rope_scaling_factor,
                   "low_freq_factor": config.rope_low_freq_factor, "high_freq_factor": config.rope_high_freq_factor,
                   "original_max_position_embeddings": config.rope_original_context}
    parameters = {"rope_type": "default", **(scaling or {}), "rope_theta": config.rope_theta}
    return {"rope_parameters": parameters, "rope_scaling": scaling, "rope_theta": config.rope_theta}


def hf_config_from(config: GPTConfig, eot_id: int, dtype: torch.dtype = torch.float32, *,
                   qwen2_tokenizer: bool = True) -> dict[str, Any]:
    """The ``config.json`` of the family model that expresses ``config`` (see :func:`_export_type`),
    with the end-of-text token (``eot_id``) as bos and eos and weights stored as ``dtype``."""
    model_type = _export_type(config, qwen2_tokenizer)
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.layer_norm_epsilon,
        "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
        **_rope_config(config),
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "dtype": str(dtype).removeprefix("torch."),
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if model_type == "llama":
        hf |= {"attention_bias": config.has_qkv_bias or config.bias, "mlp_bias": config.bias}
    else:
        hf |= {"use_sliding_window": False, "sliding_window": None}
    if model_type == "qwen3":
        hf["attention_bias"] = config.has_qkv_bias
    return hf


# ---------------------------------------------------------------------------------------------
# weights


def links(config: GPTConfig, biases: Biases) -> tuple[TensorLink, ...]:
    """Our tensors and the family checkpoint's (``biases``: which projections have biases there)."""
    H, K, D, F = config.n_head, config.kv_heads, config.head_dim, config.hidden
    result = [TensorLink("transformer.wte.weight", ("model.embed_tokens.weight",)),
              TensorLink("transformer.ln_f.weight", ("model.norm.weight",))]
    if not config.tie_embeddings:
        result.append(TensorLink(LM_HEAD, (LM_HEAD,)))
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        attn, mlp = theirs + "self_attn.", theirs + "mlp."
        qkv, gate_up = (attn + "q_proj", attn + "k_proj", attn + "v_proj"), (mlp + "gate_proj", mlp + "up_proj")
        qkv_rows, gate_up_rows = (H * D, K * D, K * D), (F, F)
        result += [
            TensorLink(ours + "ln_1.weight", (theirs + "input_layernorm.weight",)),
            TensorLink(ours + "attn.c_attn.weight", tuple(n + ".weight" for n in qkv), qkv_rows),
            TensorLink(ours + "attn.c_proj.weight", (attn + "o_proj.weight",)),
            TensorLink(ours + "ln_2.weight", (theirs + "post_attention_layernorm.weight",)),
            TensorLink(ours + "mlp.c_fc.weight", tuple(n + ".weight" for n in gate_up), gate_up_rows),
            TensorLink(ours + "mlp.c_proj.weight", (mlp + "down_proj.weight",)),
        ]
        result += bias_link(ours + "attn.c_attn.bias", tuple(n + ".bias" for n in qkv), qkv_rows,
                            ours_has=config.has_qkv_bias, theirs_has=biases.qkv)
        result += bias_link(ours + "attn.c_proj.bias", (attn + "o_proj.bias",), (config.n_embd,),
                            ours_has=config.bias, theirs_has=biases.o)
        result += bias_link(ours + "mlp.c_fc.bias", tuple(n + ".bias" for n in gate_up), gate_up_rows,
                            ours_has=config.bias, theirs_has=biases.mlp)
        result += bias_link(ours + "mlp.c_proj.bias", (mlp + "down_proj.bias",), (config.n_embd,),
                            ours_has=config.bias, theirs_has=biases.mlp)
        if config.qk_norm:
            result += [TensorLink(ours + "attn.q_norm.weight", (attn + "q_norm.weight",)),
                       TensorLink(ours + "attn.k_norm.weight", (attn + "k_norm.weight",))]
    return tuple(result)


def _layout(config: GPTConfig, hf_config: dict[str, Any]) -> HFLayout:
    """Our ``config`` and the checkpoint's ``hf_config`` linked tensor by tensor, biases as the
    checkpoint's model type has them."""
    model_type = str(hf_config["model_type"])
    return HFLayout(ARCHITECTURES[model_type], config, hf_config, links(config, _hf_biases(model_type, hf_config)),
                    PREFIX, IGNORED_BUFFERS, hf_tied=config.tie_embeddings)


def layout_from_hf(hf_config: Mapping[str, Any]) -> HFLayout:
    """How a family checkpoint with this ``config.json`` maps onto our model (ConfigError for what
    gptlab does not compute, see :func:`config_from_hf`)."""
    return _layout(config_from_hf(hf_config), dict(hf_config))


def layout_for(config: GPTConfig, eot_id: int, dtype: torch.dtype, *, qwen2_tokenizer: bool = True) -> HFLayout:
    """How our model of ``config`` is written as a family model (ConfigError for a shape the family
    cannot express, see :func:`hf_config_from`)."""
    return _layout(config, hf_config_from(config, eot_id, dtype, qwen2_tokenizer=qwen2_tokenizer))
