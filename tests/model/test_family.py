"""One model, a family of shapes: GPT-2's math is unchanged bit for bit, and every choice of today's
Llama / Qwen2 / Mistral family (RMSNorm, rotary positions with Llama 3 scaling, SwiGLU, ReLU²,
grouped-query attention, q/k/v biases, QK-norm, untied head) matches transformers' own models and
keeps the KV cache, ragged decoding, the fixed-shape decode step, checkpoints and counts exact."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gptlab.errors import ConfigError
from gptlab.model import GPT, GPTConfig, count_config, preset
from gptlab.model.gpt import apply_rotary, rotary_frequencies
from gptlab.model.linear import linear

VOCAB = 97

# Tiny configs of each shape (names say what they stand for).
FAMILY = {
    "llama": dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=False,
                  n_kv_head=2, mlp_hidden=96),
    "llama3-scaled": dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, n_kv_head=2,
                          mlp_hidden=96, rope_scaling_factor=4.0, rope_original_context=16, rope_theta=500.0),
    "qwen2": dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, qkv_bias=True, n_kv_head=1,
                  mlp_hidden=80, layer_norm_epsilon=1e-6),
    "speedrun": dict(norm="rmsnorm", positions="rotary", mlp="relu2", bias=False, qk_norm=True,
                     tie_embeddings=False),
    "gpt2-gqa": dict(n_kv_head=2),
    "bigram": dict(norm="rmsnorm", positions="rotary", bias=False, qk_norm=True, bigram_buckets=61),
}


def tiny(**changes) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=64, **changes)


def seeded(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0: perturb them so that mistakes show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def ids(batch: int = 2, length: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- GPT-2's math, unchanged -------------------------------------------------------------------

def reference_gpt2_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """GPT-2's forward pass written out from the state dict, op for op as gptlab computed it before
    the family arrived (learned positions, LayerNorm, fused q/k/v, tanh-GELU, tied head)."""
    cfg, w = model.config, model.state_dict()
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (C,), w[f"{name}.weight"], w.get(f"{name}.bias"), cfg.layer_norm_epsilon)

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        return linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))

    x = F.embedding(idx, w["transformer.wte.weight"]) + F.embedding(torch.arange(T), w["transformer.wpe.weight"])
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}"
        q, k, v = lin(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + lin(y, f"{p}.attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc"), approximate="tanh"), f"{p}.mlp.c_proj")
    return linear(ln(x, "transformer.ln_f"), w["transformer.wte.weight"])


@pytest.mark.parametrize("name, changes", [
    ("gpt2", dict(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=VOCAB)),
    ("gpt2", dict(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=VOCAB, bias=False)),
    ("gpt3-small", dict(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=VOCAB)),
])
def test_gpt2_and_gpt3_presets_compute_what_they_always_did(name: str, changes: dict) -> None:
    model = seeded(preset(name, **changes))
    assert "transformer.wpe.weight" in model.state_dict() and model.lm_head.weight is model.transformer.wte.weight
    idx = ids(length=changes["block_size"])
    with torch.no_grad():
        assert torch.equal(model(idx)[0], reference_gpt2_logits(model, idx))


def test_gpt2_parameters_keep_their_order_and_names() -> None:
    """Initialisation draws in parameter order, so the same seed still gives the same GPT-2."""
    names = [n for n, _ in GPT(tiny()).named_parameters()]
    assert names[:4] == ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                         "transformer.h.0.ln_1.bias"]
    assert names[4:8] == ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                          "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias"]
    assert "lm_head.weight" not in names  # tied: the same tensor as wte


# --- the family against transformers --------------------------------------------------------------

def to_hf_llama(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Llama's names: c_attn split into q, k, v; c_fc into gate and up."""
    cfg, w = model.config, model.state_dict()
    H, K, D = cfg.n_head, cfg.kv_heads, cfg.head_dim
    out = {"model.embed_tokens.weight": w["transformer.wte.weight"], "model.norm.weight": w["transformer.ln_f.weight"],
           "lm_head.weight": w["lm_head.weight"]}
    for i in range(cfg.n_layer):
        p, hf = f"transformer.h.{i}", f"model.layers.{i}"
        for kind in ("weight", "bias"):
            if f"{p}.attn.c_attn.{kind}" in w:
                q, k, v = w[f"{p}.attn.c_attn.{kind}"].split((H * D, K * D, K * D))
                out |= {f"{hf}.self_attn.q_proj.{kind}": q, f"{hf}.self_attn.k_proj.{kind}": k,
                        f"{hf}.self_attn.v_proj.{kind}": v}
        gate, up = w[f"{p}.mlp.c_fc.weight"].chunk(2)
        out |= {f"{hf}.self_attn.o_proj.weight": w[f"{p}.attn.c_proj.weight"],
                f"{hf}.mlp.gate_proj.weight": gate, f"{hf}.mlp.up_proj.weight": up,
                f"{hf}.mlp.down_proj.weight": w[f"{p}.mlp.c_proj.weight"],
                f"{hf}.input_layernorm.weight": w[f"{p}.ln_1.weight"],
                f"{hf}.post_attention_layernorm.weight": w[f"{p}.ln_2.weight"]}
        if cfg.qk_norm:
            out |= {f"{hf}.self_attn.q_norm.weight": w[f"{p}.attn.q_norm.weight"],
                    f"{hf}.self_attn.k_norm.weight": w[f"{p}.attn.k_norm.weight"]}
    return out


def hf_model(kind: str, cfg: GPTConfig):
    transformers = pytest.importorskip("transformers")
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling_factor != 1.0:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor,
                "low_freq_factor": cfg.rope_low_freq_factor, "high_freq_factor": cfg.rope_high_freq_factor,
                "original_max_position_embeddings": cfg.rope_original_context}
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.hidden,
                  num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads,
                  max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.layer_norm_epsilon,
                  tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope, hidden_act="silu")
    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM", {}),
               "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
               "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
               "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": cfg.head_dim})}
    config_cls, model_cls, extra = classes[kind]
    config = getattr(transformers, config_cls)(**common, **extra)
    config._attn_implementation = "eager"
    return getattr(transformers, model_cls)(config).eval()


@pytest.mark.parametrize("kind, shape", [
    ("llama", "llama"), ("llama", "llama3-scaled"), ("mistral", "llama"), ("qwen2", "qwen2"), ("qwen3", "qk-norm"),
])
def test_logits_match_transformers(kind: str, shape: str) -> None:
    changes = FAMILY.get(shape) or dict(FAMILY["llama"], qk_norm=True)
    cfg = tiny(**changes)
    model = seeded(cfg)
    hf = hf_model(kind, cfg)
    missing, unexpected = hf.load_state_dict(to_hf_llama(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    idx = ids(length=cfg.block_size)
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_llama3_frequencies_match_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = preset("llama-3.2-1b")
    hf = LlamaConfig(hidden_size=cfg.n_embd, num_attention_heads=cfg.n_head, rope_parameters={
        "rope_type": "llama3", "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor,
        "low_freq_factor": cfg.rope_low_freq_factor, "high_freq_factor": cfg.rope_high_freq_factor,
        "original_max_position_embeddings": cfg.rope_original_context})
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, torch.device("cpu"))
    torch.testing.assert_close(rotary_frequencies(cfg), theirs, rtol=1e-6, atol=0)


def test_rotary_scores_depend_only_on_the_distance() -> None:
    cfg = tiny(positions="rotary")
    model = GPT(cfg)
    q, k = torch.randn(2, cfg.head_dim, generator=torch.Generator().manual_seed(0))

    def score(m: int, n: int) -> float:
        r = model.rotary(torch.tensor([m, n]))
        rotated = apply_rotary(torch.stack([q, k]), r.cos[:, 0], r.sin[:, 0])
        return float(rotated[0] @ rotated[1])

    assert score(3, 1) == pytest.approx(score(20, 18), rel=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


def test_under_bf16_autocast_queries_keys_and_values_stay_bf16() -> None:
    """Under the Trainer's CPU bf16 autocast, rotary angles and QK-norm weights follow the bf16
    activations, as in Hugging Face's models: fp32 ones would promote q and k to fp32 beside a
    bf16 v (and the blocked attention needs one dtype), or push QK-norm off PyTorch's fused
    kernel. In fp32 the norm is ``nn.RMSNorm`` exactly."""
    model = seeded(tiny(**FAMILY["speedrun"]))  # rotary and QK-norm
    attn = model.transformer.h[0].attn
    seen = {}
    attn.register_forward_hook(
        lambda module, args, out: seen.update(heads=module.heads(module.c_attn(args[0]), args[1]))
    )
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mismatch dtype between input and weight ... Cannot dispatch to fused"
        model(torch.randint(0, VOCAB, (2, 8)))
    assert [t.dtype for t in seen["heads"]] == [torch.bfloat16] * 3
    reference = torch.nn.RMSNorm(16, eps=attn.q_norm.eps)
    reference.load_state_dict(attn.q_norm.state_dict())
    q = torch.randn(2, 8, 4, 16)
    assert torch.equal(attn.q_norm(q), reference(q))


# --- every shape keeps the invariants ---------------------------------------------------------------

@pytest.mark.parametrize("shape", FAMILY)
def test_cached_decoding_matches_the_full_forward(shape: str) -> None:
    model = seeded(tiny(**FAMILY[shape]))
    idx = ids(batch=2, length=24)
    with torch.no_grad():
        full = model(idx)[0]
        cache = model.new_cache(batch_size=2)
        steps = [model(idx[:, :10], cache=cache)[0]]
        steps += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(10, 24)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape", FAMILY)
def test_ragged_rows_and_the_decode_step_match_each_row_alone(shape: str) -> None:
    model = seeded(tiny(**FAMILY[shape]))
    prompts = [ids(1, n, seed=n)[0] for n in (5, 9, 3)]
    nxt = ids(3, 1, seed=7)
    with torch.no_grad():
        alone = [model(torch.cat([p, nxt[i]])[None])[0][0, -1] for i, p in enumerate(prompts)]
        cache = model.new_cache(batch_size=3)
        for i, p in enumerate(prompts):
            model(p[None], cache=cache.rows(i, i + 1))
        lengths = cache.lengths.clone()
        ragged = model(nxt, cache=cache)[0][:, -1]
        cache.lengths.copy_(lengths)
        fixed = model.decode_step(nxt, lengths.clone(), cache)
    for i in range(3):
        torch.testing.assert_close(ragged[i], alone[i], atol=2e-5, rtol=0)
        torch.testing.assert_close(fixed[i], alone[i], atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape", FAMILY)
def test_counts_match_the_instantiated_model(shape: str) -> None:
    cfg = tiny(**FAMILY[shape])
    model = GPT(cfg)
    counted = count_config(cfg)
    assert counted.parameters == model.num_parameters()
    assert counted.per_block == sum(p.numel() for p in model.transformer.h[0].parameters())
    cache = model.new_cache(batch_size=1)
    per_token = sum(t.numel() for t in cache.keys + cache.values) * 4 // cfg.block_size
    assert counted.kv_cache_bytes_per_token("fp32") == per_token


@pytest.mark.parametrize("name", ["smollm2-135m", "llama-3.2-1b", "qwen2.5-0.5b", "tinyllama-1.1b"])
def test_public_shapes_have_their_published_sizes(name: str) -> None:
    published = {"smollm2-135m": 134_515_008, "llama-3.2-1b": 1_235_814_400, "qwen2.5-0.5b": 494_032_768,
                 "tinyllama-1.1b": 1_100_048_384}
    assert count_config(preset(name)).parameters == published[name]


@pytest.mark.parametrize("shape", ["llama", "speedrun", "bigram"])
def test_checkpoints_round_trip_every_shape(shape: str, tmp_path: Path, tokenizer) -> None:
    from gptlab.train import load_checkpoint, save_checkpoint

    model = seeded(tiny(**FAMILY[shape], ).replace(vocab_size=tokenizer.vocab_size))
    save_checkpoint(tmp_path, model, tokenizer, step=1)
    loaded = load_checkpoint(tmp_path).model.eval()
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == model.config.tie_embeddings
    idx = ids(length=16) % tokenizer.vocab_size
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


@pytest.mark.parametrize("changes, message", [
    (dict(n_kv_head=3), "multiple of n_kv_head"),
    (dict(norm="batchnorm"), "norm must be one of"),
    (dict(positions="alibi"), "positions must be one of"),
    (dict(mlp="geglu"), "mlp must be one of"),
    (dict(mlp_hidden=0), "mlp_hidden"),
    (dict(rope_scaling_factor=0.5), "rope_scaling_factor"),
    (dict(bigram_buckets=1), "bigram_buckets"),
    (dict(bigram_buckets=-4), "bigram_buckets"),
    (dict(bigram_buckets=True), "bigram_buckets"),
])
def test_bad_family_choices_are_config_errors(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_the_bigram_embedding_pairs_each_token_with_the_one_before() -> None:
    """With every block's output projections zeroed, the model is its embeddings: the logits at t
    then depend on tokens t-1 and t alone: not on t-2, and never on a later token."""
    model = seeded(tiny(**FAMILY["bigram"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.zero_()
    idx = ids(batch=1, length=12)
    t = 6

    def logits_at_t(changed_position: int) -> torch.Tensor:
        edited = idx.clone()
        edited[0, changed_position] = (edited[0, changed_position] + 1) % VOCAB
        with torch.no_grad():
            return model(edited)[0][0, t]

    with torch.no_grad():
        base = model(idx)[0][0, t]
    assert not torch.equal(logits_at_t(t - 1), base)  # the previous token is seen
    assert torch.equal(logits_at_t(t - 2), base)  # the one before it is not
    assert torch.equal(logits_at_t(t + 1), base)  # nor the next one
    rows = model._bigram_rows(idx, torch.arange(12), None)
    assert rows[0, 0] == 60 and bool((rows[0, 1:] < 60).all())  # the first token takes the last row
    assert model.num_parameters() == count_config(model.config).parameters


def test_head_dim_must_be_even_for_rotary() -> None:
    with pytest.raises(ConfigError, match="even head dimension"):
        GPTConfig(n_embd=12, n_head=4, positions="rotary")
    assert math.isclose(float(rotary_frequencies(tiny(positions="rotary"))[0]), 1.0)
