"""Hugging Face ``transformers`` interop: import a model directory as our GPT, export ours as one.

Import reads a directory as ``save_pretrained`` writes it, offline — ``config.json``, the weights
(:mod:`~gptlab.interop.hf_files`) and the tokenizer (:mod:`~gptlab.interop.hf_tokenizer`) — of
one of these architectures:

- ``GPT2LMHeadModel`` (:mod:`~gptlab.interop.hf_gpt2`);
- ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``
  (:mod:`~gptlab.interop.hf_llama`).

``config.json``'s ``model_type`` picks the architecture; a config asking for something our model
does not compute is a ConfigError naming the key. Finding a model by id, in the local cache or by
downloading it, is :mod:`~gptlab.interop.hub`'s job.

Export picks the architecture from our config: GPT-2's shape (learned positions) is written as
``GPT2LMHeadModel``; rotary models as ``LlamaForCausalLM``, or ``Qwen2ForCausalLM`` (q/k/v biases
only) or ``Qwen3ForCausalLM`` (QK-norm). ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load the directory unchanged, with the same logits and ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import CheckpointError, ConfigError, TokenizerError
from gptlab.finetune.loader import ChatTemplate
from gptlab.interop import hf_gpt2, hf_llama
from gptlab.interop.hf_chat import CHATML_TEMPLATE, GENERATION_CONFIG_FILE, generation_config
from gptlab.interop.hf_files import CONFIG_FILE, read_config, read_weights, write_model_dir
from gptlab.interop.hf_tokenizer import hf_tokenizer_files, is_qwen2_pipeline, load_hf_tokenizer
from gptlab.interop.hf_weights import HFLayout, build_model, expected_shapes, to_hf_weights, to_our_weights
from gptlab.interop.hub import fetch_hf_model, hf_cache_dir, resolve_hf_source
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT

__all__ = ["HFModel", "export_hf", "fetch_hf_model", "hf_cache_dir", "hf_layout", "import_hf",
           "resolve_hf_source"]

logger = logging.getLogger(__name__)

# what import accepts, for messages and help texts
IMPORTABLE = ("GPT2LMHeadModel", *hf_llama.ARCHITECTURES.values())


class HFModel(NamedTuple):
    """An imported model and its tokenizer; unpacks as ``model, tokenizer = import_hf(...)``."""

    model: GPT
    tokenizer: Tokenizer


def layout_from_hf(hf_config: Mapping[str, Any]) -> HFLayout:
    """How a checkpoint with this ``config.json`` maps onto our model, chosen by its
    ``model_type``. ConfigError for another model type or an unsupported config."""
    model_type = hf_config.get("model_type")
    if model_type == hf_gpt2.MODEL_TYPE:
        return hf_gpt2.layout_from_hf(hf_config)
    if model_type in hf_llama.MODEL_TYPES:
        return hf_llama.layout_from_hf(hf_config)
    types = ", ".join(repr(t) for t in (hf_gpt2.MODEL_TYPE, *hf_llama.MODEL_TYPES))
    raise ConfigError(f"model_type is {model_type!r}: gptlab imports {types} ({', '.join(IMPORTABLE)})")


def hf_layout(config: GPTConfig, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32) -> HFLayout:
    """How our model of ``config`` is written with ``tokenizer``: as GPT-2 for learned positions,
    else as the Llama family (Qwen2 only with Qwen2's tokenizer pipeline, which transformers
    imposes on Qwen2 directories). ConfigError naming the field a shape cannot be expressed by
    (e.g. ``mlp`` for ReLU²)."""
    if config.positions == "learned":
        return hf_gpt2.layout_for(config, tokenizer.eot_id, dtype)
    return hf_llama.layout_for(config, tokenizer.eot_id, dtype, qwen2_tokenizer=is_qwen2_pipeline(tokenizer))


def import_hf(directory: str | Path, *, dtype: torch.dtype = torch.float32) -> HFModel:
    """Load a Hugging Face model directory (see the module docs) as our GPT, in eval mode, with
    weights in ``dtype``, and its tokenizer. Its logits equal those of the ``transformers`` model.

    Raises ConfigError for a config gptlab cannot compute (it names the key), and CheckpointError
    for missing or unreadable files, weights that do not fit the config, or a tokenizer larger
    than the model's vocabulary.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory")
    layout = layout_from_hf(read_config(directory))
    config = layout.config
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{config.vocab_size} embeddings"
        )
    weights = to_our_weights(directory, read_weights(directory), layout, expected_shapes(config), dtype)
    model = build_model(config, weights)
    logger.debug("imported %s (%s): %s parameters", directory, layout.name, f"{model.num_parameters():,}")
    return HFModel(model, tokenizer)


def export_hf(
    model: GPT, tokenizer: Tokenizer, out_dir: str | Path, *, overwrite: bool = False,
    chat_template: ChatTemplate | str | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face model directory ``out_dir`` —
    ``config.json``, ``generation_config.json``, ``model.safetensors``, ``tokenizer.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json`` — of the architecture the config picks
    (see the module docs), which ``AutoModelForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` load with identical logits and ids. The tokenizer's
    ``chat_template`` is ``chat_template`` (a model's own, kept from its import, with the special
    tokens it names and the tokens that end its turns) or gptlab's ChatML
    (:data:`~gptlab.interop.hf_chat.CHATML_TEMPLATE`). Returns ``out_dir``.

    Atomic: ``out_dir`` is either absent/old or complete. An existing non-empty ``out_dir`` is
    refused unless ``overwrite``, and even then only if it is a model directory (has
    ``config.json``, holds no gptlab run). Raises CheckpointError for those, ConfigError for a
    model no supported architecture expresses (naming the field), TokenizerError for a tokenizer
    larger than the vocabulary.
    """
    out = Path(out_dir)
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size} embeddings"
        )
    layout = hf_layout(config, tokenizer, model.transformer.wte.weight.dtype)
    own = ChatTemplate(chat_template) if isinstance(chat_template, str) else chat_template
    if own is None:
        template, stop, special_tokens = CHATML_TEMPLATE, None, None
    else:  # a model's own template, with the tokens it names and ends its turns with (if known)
        template, stop, special_tokens = own.template, own.stop or None, own.special_tokens
    files = {CONFIG_FILE: layout.hf_config,
             GENERATION_CONFIG_FILE: generation_config(tokenizer, layout.hf_config["bos_token_id"], stop),
             **hf_tokenizer_files(tokenizer, config.block_size, template, special_tokens)}
    write_model_dir(out, to_hf_weights(model, layout), files, overwrite=overwrite)
    logger.debug("exported %s as %s", out, layout.name)
    return out
