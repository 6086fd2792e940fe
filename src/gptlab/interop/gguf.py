"""Export a gptlab model as one GGUF file, the format llama.cpp and ollama run.

The model's config picks the llama.cpp architecture, as ``export_hf`` picks a transformers one:

- ``gpt2`` — learned positions, LayerNorm, the GELU MLP: GPT-2's shape, with or without biases
  (GPT-2's graph needs every bias, so missing ones are written as zeros), any MLP width,
  grouped-query attention, a tied or untied head;
- ``qwen3`` — rotary positions, RMSNorm, SwiGLU and QK-norm (no o/MLP biases, no rope scaling);
- ``qwen2`` — the same without QK-norm, with q/k/v biases and no other biases (Qwen2's shape);
- ``llama`` — every other rotary/RMSNorm/SwiGLU model: optional biases on q, k, v, o and the
  MLP, and Llama 3's rope scaling as llama.cpp's ``rope_freqs`` factors.

Rotary layout. gptlab rotates each head's (first half, second half) pairs, as Hugging Face's
Llama does. llama.cpp's ``llama`` architecture rotates adjacent pairs (ggml's "normal" rope), so
the rows of q and k (weights and biases) are reordered within each head, pair i of the halves
becoming rows 2i and 2i + 1 — the permutation llama.cpp's ``convert_hf_to_gguf.py`` applies to
Hugging Face Llama checkpoints. ``qwen2`` and ``qwen3`` use the half-split ("neox") rope, so
their q and k are written as they are.

Tensors are stored as ``outtype`` (``f32``, ``f16``, ``bf16`` or ``q8_0``), except what llama.cpp
keeps in f32 whatever the type: 1-D tensors (norms, biases, rope factors) and GPT-2's position
table; a matrix whose rows q8_0 cannot split into blocks of 32 falls back to f16. A model with
LoRA adapters attached is written with the adapters merged. Shapes llama.cpp cannot run (the
ReLU² MLP, LayerNorm with rotary positions, ...) are a ConfigError naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import CheckpointError, ConfigError
from gptlab.fileio import atomic_write
from gptlab.finetune.lora import lora_modules
from gptlab.interop.gguf_tokenizer import GGUFVocab, gguf_vocab
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT, rotary_frequencies

__all__ = ["OUTTYPES", "export_gguf", "gguf_architecture", "gguf_tensors"]

logger = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
ARCHITECTURES = ("gpt2", "llama", "qwen2", "qwen3")
Q8_0_BLOCK = 32  # numbers per q8_0 block: a row's length must be a multiple of it


def _require(config: GPTConfig, arch: str, **needed: Any) -> None:
    """ConfigError naming the first field of ``config`` that differs from what ``arch`` needs."""
    for name, value in needed.items():
        if getattr(config, name) != value:
            raise ConfigError(f"{name} is {getattr(config, name)!r}: llama.cpp's {arch} architecture needs {value!r}")


def gguf_architecture(config: GPTConfig) -> str:
    """The llama.cpp architecture that computes ``config``'s model (see the module docs);
    ConfigError naming the field when none does."""
    if config.bigram_buckets:
        raise ConfigError(f"bigram_buckets is {config.bigram_buckets}: no llama.cpp architecture has a hashed "
                          "bigram embedding")
    if config.positions == "learned":
        _require(config, "gpt2", norm="layernorm", mlp="gelu", qk_norm=False)
        return "gpt2"
    _require(config, "llama", norm="rmsnorm", mlp="swiglu")
    scaled = config.rope_scaling_factor != 1.0
    if config.qk_norm:
        _require(config, "qwen3", bias=False, rope_scaling_factor=1.0)
        return "qwen3"
    if config.has_qkv_bias and not config.bias and not scaled:
        return "qwen2"
    return "llama"


# ---------------------------------------------------------------------------------------------
# tensors


def _adjacent_pairs(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from (first half, second half) rotary pairs to adjacent pairs:
    row i of a head's first half goes to 2i, row i of its second half to 2i + 1. ``rows`` is a
    q or k weight (H·D, C) or bias (H·D,)."""
    head_dim = rows.shape[0] // n_heads
    split = rows.reshape(n_heads, 2, head_dim // 2, *rows.shape[1:])  # (H, half, D/2, ...)
    return split.transpose(1, 2).reshape(rows.shape)


@torch.no_grad()
def _merged_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights, with any attached LoRA adapters folded in (the model is not changed)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    for name, module in lora_modules(model).items():
        if not module.merged:
            state[f"{name}.weight"] = module.weight + module.delta_weight().to(module.weight.dtype)
    return state


def _zeros_if_absent(state: dict[str, torch.Tensor], key: str, size: int) -> torch.Tensor:
    return state[key] if key in state else torch.zeros(size)


def _gpt2_block(state: dict[str, torch.Tensor], config: GPTConfig, i: int) -> Iterator[tuple[str, torch.Tensor]]:
    ours, theirs = f"transformer.h.{i}.", f"blk.{i}."
    C, qkv = config.n_embd, (config.n_head + 2 * config.kv_heads) * config.head_dim
    for our_name, their_name, size in (("ln_1", "attn_norm", C), ("attn.c_attn", "attn_qkv", qkv),
                                       ("attn.c_proj", "attn_output", C), ("ln_2", "ffn_norm", C),
                                       ("mlp.c_fc", "ffn_up", config.hidden), ("mlp.c_proj", "ffn_down", C)):
        yield theirs + their_name + ".weight", state[ours + our_name + ".weight"]
        yield theirs + their_name + ".bias", _zeros_if_absent(state, ours + our_name + ".bias", size)


def _family_block(state: dict[str, torch.Tensor], config: GPTConfig, i: int,
                  arch: str) -> Iterator[tuple[str, torch.Tensor]]:
    ours, theirs = f"transformer.h.{i}.", f"blk.{i}."
    H, K, D, F = config.n_head, config.kv_heads, config.head_dim, config.hidden
    yield theirs + "attn_norm.weight", state[ours + "ln_1.weight"]
    for kind in ("weight", "bias"):
        fused = state.get(f"{ours}attn.c_attn.{kind}")
        if fused is None:
            continue
        q, k, v = fused.split((H * D, K * D, K * D))
        if arch == "llama":  # ggml's normal rope rotates adjacent pairs
            q, k = _adjacent_pairs(q, H), _adjacent_pairs(k, K)
        yield from ((f"{theirs}attn_{name}.{kind}", t) for name, t in (("q", q), ("k", k), ("v", v)))
    if config.qk_norm:
        yield theirs + "attn_q_norm.weight", state[ours + "attn.q_norm.weight"]
        yield theirs + "attn_k_norm.weight", state[ours + "attn.k_norm.weight"]
    yield theirs + "ffn_norm.weight", state[ours + "ln_2.weight"]
    for kind in ("weight", "bias"):
        if f"{ours}attn.c_proj.{kind}" in state:
            yield f"{theirs}attn_output.{kind}", state[f"{ours}attn.c_proj.{kind}"]
        fused = state.get(f"{ours}mlp.c_fc.{kind}")
        if fused is not None:
            gate, up = fused.split((F, F))
            yield f"{theirs}ffn_gate.{kind}", gate
            yield f"{theirs}ffn_up.{kind}", up
        if f"{ours}mlp.c_proj.{kind}" in state:
            yield f"{theirs}ffn_down.{kind}", state[f"{ours}mlp.c_proj.{kind}"]


def _rope_factors(config: GPTConfig) -> torch.Tensor:
    """llama.cpp's ``rope_freqs``: by how much Llama 3's scaling divides each pair's frequency."""
    return rotary_frequencies(config.replace(rope_scaling_factor=1.0)) / rotary_frequencies(config)


def gguf_tensors(model: GPT, arch: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, float32 tensor)`` for every tensor of the GGUF file of ``model``, in llama.cpp's
    names and layout for ``arch`` (default: :func:`gguf_architecture`); LoRA adapters merged, the
    vocabulary padding rows dropped."""
    config = model.config
    arch = arch or gguf_architecture(config)
    for name, tensor in _tensors(_merged_state(model), config, arch):
        yield name, tensor.detach().to("cpu", torch.float32)  # one at a time: no second copy of the model


def _tensors(state: dict[str, torch.Tensor], config: GPTConfig, arch: str) -> Iterator[tuple[str, torch.Tensor]]:
    V = config.vocab_size
    yield "token_embd.weight", state["transformer.wte.weight"][:V]
    if arch == "gpt2":
        yield "position_embd.weight", state["transformer.wpe.weight"]
    elif config.rope_scaling_factor != 1.0:
        yield "rope_freqs.weight", _rope_factors(config)
    for i in range(config.n_layer):
        yield from _gpt2_block(state, config, i) if arch == "gpt2" else _family_block(state, config, i, arch)
    yield "output_norm.weight", state["transformer.ln_f.weight"]
    if config.norm == "layernorm":
        yield "output_norm.bias", _zeros_if_absent(state, "transformer.ln_f.bias", config.n_embd)
    if not config.tie_embeddings:
        yield "output.weight", state["lm_head.weight"][:V]


# ---------------------------------------------------------------------------------------------
# the file


@dataclass(frozen=True)
class _Encoded:
    data: np.ndarray
    qtype: Any  # gguf.GGMLQuantizationType


def _encode(gguf: Any, name: str, tensor: torch.Tensor, outtype: str) -> _Encoded:
    """``tensor`` in the storage type llama.cpp expects for ``name`` under ``outtype``."""
    Q = gguf.GGMLQuantizationType
    data = tensor.contiguous().numpy()
    if data.ndim == 1 or name == "position_embd.weight" or outtype == "f32":
        return _Encoded(data, Q.F32)
    qtype = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    if qtype == Q.Q8_0 and data.shape[-1] % Q8_0_BLOCK:
        logger.info("%s: rows of %d are not q8_0 blocks of %d; stored as f16", name, data.shape[-1], Q8_0_BLOCK)
        qtype = Q.F16
    return _Encoded(gguf.quants.quantize(data, qtype), qtype)


def _file_type(gguf: Any, outtype: str) -> int:
    T = gguf.LlamaFileType
    return int({"f32": T.ALL_F32, "f16": T.MOSTLY_F16, "bf16": T.MOSTLY_BF16, "q8_0": T.MOSTLY_Q8_0}[outtype])


def _add_hyperparameters(writer: Any, config: GPTConfig, arch: str) -> None:
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.hidden)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_vocab_size(config.vocab_size)
    if arch == "gpt2":
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_dim)


def _add_vocab(writer: Any, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_bos_token_id(vocab.eot_id)
    writer.add_eos_token_id(vocab.eot_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if vocab.model == "llama":
        writer.add_add_space_prefix(False)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ConfigError("GGUF export needs the gguf package: pip install 'gptlab[gguf]'") from None
    return gguf


def export_gguf(model: GPT, tokenizer: Tokenizer, path: str | Path, *, outtype: str = "f16",
                name: str | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` and ``tokenizer`` as the GGUF file ``path`` for llama.cpp, with matrices
    stored as ``outtype`` (see the module docs for the architecture and tensor types; ``name``
    is the file's ``general.name``). Returns ``path``.

    Atomic: ``path`` is either absent/old or complete. An existing file is refused unless
    ``overwrite``. Raises CheckpointError for that, ConfigError for an unknown ``outtype`` or a
    shape llama.cpp cannot run (naming the field), TokenizerError for a tokenizer llama.cpp would
    split differently or that is larger than the vocabulary.
    """
    if outtype not in OUTTYPES:
        raise ConfigError(f"outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give the .gguf file to write")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists (pass overwrite to replace it)")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path.parent}: no such directory")
    config = model.config
    arch = gguf_architecture(config)
    vocab = gguf_vocab(tokenizer, config.vocab_size)
    gguf = _import_gguf()

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_name(name or path.stem)
        writer.add_file_type(_file_type(gguf, outtype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hyperparameters(writer, config, arch)
        _add_vocab(writer, vocab)
        for tensor_name, tensor in gguf_tensors(model, arch):
            encoded = _encode(gguf, tensor_name, tensor, outtype)
            writer.add_tensor(tensor_name, encoded.data, raw_dtype=encoded.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(path, write)
    logger.debug("exported %s as GGUF (%s, %s)", path, arch, outtype)
    return path
