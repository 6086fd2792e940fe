"""Helpers shared by the benchmark scripts: the model shapes, their Hugging Face twins, and timing.

Every benchmark measures gptlab and its reference in the same process, in interleaved rounds,
and reports ratios, so that the noise of a shared or throttled machine cancels out.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT

# Hugging Face's GPT-2 keeps these weights in Conv1D layers, stored (in, out): the transpose of nn.Linear.
HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


SHAPES = ("gpt2", "llama")


def bench_config(shape: str, *, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> GPTConfig:
    """The model a benchmark measures: GPT-2's shape, or today's Llama family at the same size
    (RMSNorm, rotary, SwiGLU of width 8/3·C rounded up to 64, half as many key/value heads, no
    biases, untied head)."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0)
    if shape == "gpt2":
        return config
    return config.replace(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=False,
                          n_kv_head=max(1, n_head // 2), mlp_hidden=64 * -(-8 * n_embd // (3 * 64)))


def shape_line(config: GPTConfig) -> str:
    """``GPT-2 arch`` or ``Llama arch (GQA 4/2, SwiGLU 704)``: what the tables print."""
    if config.positions == "learned":
        return "GPT-2 arch"
    return f"Llama arch (GQA {config.n_head}/{config.kv_heads}, SwiGLU {config.hidden}, untied head)"


def hf_twin(model: GPT, attn_implementation: str = "sdpa") -> Any:
    """A ``transformers`` model of the same shape holding a copy of ``model``'s weights:
    ``GPT2LMHeadModel`` for GPT-2's shape, ``LlamaForCausalLM`` for the family (mapped by
    ``gptlab.interop``, the code ``gptlab export-hf`` uses)."""
    import transformers

    cfg = model.config
    if cfg.positions == "rotary":
        from gptlab.interop.hf_llama import layout_for
        from gptlab.interop.hf_weights import to_hf_weights

        layout = layout_for(cfg, 0, torch.float32, qwen2_tokenizer=False)
        hf_config = transformers.AutoConfig.for_model(**layout.hf_config)
        hf = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
        missing, unexpected = hf.load_state_dict(to_hf_weights(model, layout), strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"twin weights do not map: missing {missing}, unexpected {unexpected}")
        return hf.train(model.training)
    hf_config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, layer_norm_epsilon=cfg.layer_norm_epsilon,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    hf = transformers.GPT2LMHeadModel._from_config(hf_config, attn_implementation=attn_implementation)
    ours = model.state_dict()
    with torch.no_grad():
        for name, param in hf.state_dict().items():
            if name in ours:
                value = ours[name].t() if name.endswith(HF_TRANSPOSED) else ours[name]
                param.copy_(value)
    if hf.config._attn_implementation != attn_implementation:
        raise RuntimeError(f"transformers picked {hf.config._attn_implementation!r}, not {attn_implementation!r}")
    return hf.train(model.training)


def interleaved_rounds(
    runs: Mapping[str, Callable[[], Any]], rounds: int, repeats: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in ``rounds`` rounds of ``repeats`` calls each.

    Within a round every function runs once (``repeats`` calls, timed together); the order rotates
    from round to round, so slow drifts of the machine (turbo, a neighbour) hit every side alike.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            fn = runs[name]
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]`` (rounds pair up measurements taken close in time)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def machine_line() -> str:
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    )


def print_table(title: str, rows: Mapping[str, Any]) -> None:
    print(title)
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")
