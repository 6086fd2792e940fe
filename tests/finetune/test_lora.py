import copy
import json

import pytest
import torch
from torch import nn

from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError, ConfigError
from gptlab.finetune.lora import (
    AdapterMismatchError,
    LoRAConfig,
    LoRALinear,
    apply_adapter,
    inject_lora,
    load_adapter,
    lora_modules,
    lora_state_dict,
    merge_lora,
    model_fingerprint,
    plain_linears,
    remove_lora,
    save_adapter,
    trainable_fraction,
    unmerge_lora,
)
from gptlab.model.gpt import GPT

CONFIG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
# today's family: rotary, RMSNorm, SwiGLU (gate and up fused in c_fc), grouped-query attention, untied head
LLAMA = CONFIG.replace(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, n_head=4, n_kv_head=2,
                       mlp_hidden=24, tie_embeddings=False)


def tiny_gpt(seed: int = 0, config: GPTConfig = CONFIG) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (3, 12), generator=g), torch.randint(0, 50, (3, 12), generator=g)


def randomize_adapters(model: nn.Module, seed: int = 2) -> None:
    """Give every lora_B a non-zero value, as training would (a fresh adapter is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * 0.1)


def test_fresh_lora_linear_equals_its_base_and_shares_its_weights():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    x = torch.randn(4, 8)
    expected = base(x)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    assert lora.weight is base.weight and lora.bias is base.bias
    assert torch.equal(lora(x), expected)  # B = 0: exactly the base output
    assert torch.count_nonzero(lora.lora_A) > 0 and torch.count_nonzero(lora.lora_B) == 0
    assert lora.scaling == 2.0


def test_lora_linear_forward_and_gradients_match_the_formula():
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(5, 7), rank=3, alpha=6.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 5, requires_grad=True)
    y = lora(x)
    W, b, A, B, s = lora.weight, lora.bias, lora.lora_A, lora.lora_B, 2.0
    torch.testing.assert_close(y, x @ W.T + b + s * (x @ A.T) @ B.T)
    g = torch.randn_like(y)
    y.backward(g)
    with torch.no_grad():
        torch.testing.assert_close(lora.lora_B.grad, s * g.T @ (x @ A.T))
        torch.testing.assert_close(lora.lora_A.grad, s * B.T @ g.T @ x)
        torch.testing.assert_close(x.grad, g @ (W + s * B @ A))
    assert W.grad is None and b.grad is None  # frozen


def test_inject_freezes_everything_but_the_adapters_and_only_they_get_gradients():
    model = tiny_gpt()
    names = inject_lora(model, LoRAConfig(rank=4, alpha=8))
    assert names == [f"transformer.h.{i}.{t}" for i in range(2)
                     for t in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    randomize_adapters(model)
    x, y = batch()
    _, loss = model(x, y)
    loss.backward()
    for name, param in model.named_parameters():
        is_adapter = name.endswith(("lora_A", "lora_B"))
        assert param.requires_grad == is_adapter, name
        if is_adapter:
            assert param.grad is not None and torch.count_nonzero(param.grad) > 0, name
        else:
            assert param.grad is None, name


def test_trainable_fraction_is_rank_times_in_plus_out_per_target():
    model = tiny_gpt()
    _, total_before = trainable_fraction(model)
    inject_lora(model, LoRAConfig(rank=4))
    trainable, total = trainable_fraction(model)
    C = CONFIG.n_embd
    per_block = 4 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert trainable == CONFIG.n_layer * per_block
    assert total == total_before + trainable


def test_training_the_adapters_leaves_the_base_weights_bit_identical():
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, LoRAConfig(rank=4, dropout=0.1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x, y = batch(step)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with plain_linears(model):
        after = model.state_dict()
        assert set(after) == set(before)
        for key, value in before.items():
            assert torch.equal(after[key], value), key
    assert all(torch.count_nonzero(m.lora_B) > 0 for m in lora_modules(model).values())


@pytest.mark.parametrize("config", [CONFIG, LLAMA], ids=["gpt2", "llama"])
def test_merged_logits_equal_adapter_logits_and_unmerge_restores_the_weights(config: GPTConfig):
    model = tiny_gpt(config=config)
    inject_lora(model, LoRAConfig(rank=4, dropout=0.2))
    randomize_adapters(model)
    model.eval()
    x, _ = batch()
    with torch.no_grad():
        adapted, _ = model(x)
        base_weight = model.transformer.h[0].attn.c_attn.weight.clone()
        for m in lora_modules(model).values():
            m.merge()
        merged_in_place, _ = model(x)
        unmerge_lora(model)
        torch.testing.assert_close(model.transformer.h[0].attn.c_attn.weight, base_weight, rtol=0, atol=1e-6)
        merge_lora(model)
        merged, _ = model(x)
    assert not lora_modules(model)
    assert all(isinstance(m, nn.Linear) for n, m in model.named_modules() if n.endswith(("c_attn", "c_proj", "c_fc")))
    assert set(model.state_dict()) == set(tiny_gpt(config=config).state_dict())
    torch.testing.assert_close(merged_in_place, adapted, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
    base_logits, _ = tiny_gpt(config=config).eval()(x)
    assert not torch.allclose(merged, base_logits, atol=1e-3)  # the adapter did change something


def test_fingerprint_ignores_adapters_and_notices_any_weight_change():
    model = tiny_gpt()
    fingerprint = model_fingerprint(model)
    assert model_fingerprint(tiny_gpt()) == fingerprint
    inject_lora(model, LoRAConfig())
    randomize_adapters(model)
    assert model_fingerprint(model) == fingerprint
    other = tiny_gpt()
    with torch.no_grad():
        other.transformer.ln_f.bias[0] += 1e-7
    assert model_fingerprint(other) != fingerprint
    assert model_fingerprint(GPT(CONFIG.replace(dropout=0.1))) != model_fingerprint(GPT(CONFIG))


def test_adapter_round_trip_onto_a_fresh_copy_of_the_base(tmp_path):
    base = tiny_gpt()
    fingerprint = model_fingerprint(base)
    model = copy.deepcopy(base)
    config = LoRAConfig(rank=2, alpha=3.0, targets=("attn.c_attn", "mlp.c_fc"))
    inject_lora(model, config)
    randomize_adapters(model)
    save_adapter(model, tmp_path / "adapter", config, base_fingerprint=fingerprint, extra={"note": "x"})
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta["lora"]["rank"] == 2 and meta["base_fingerprint"] == fingerprint and meta["note"] == "x"
    adapter = load_adapter(tmp_path / "adapter")
    assert adapter.config == config
    assert set(adapter.tensors) == set(lora_state_dict(model))  # adapter tensors only, no base weights
    fresh = tiny_gpt()
    apply_adapter(fresh, adapter)
    x, _ = batch()
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x)[0], model(x)[0], rtol=0, atol=0)


def test_adapter_for_another_base_is_refused_and_leaves_the_model_alone(tmp_path):
    model = tiny_gpt(seed=0)
    config = LoRAConfig(rank=2)
    inject_lora(model, config)
    save_adapter(model, tmp_path / "adapter", config, base_fingerprint=model_fingerprint(model))
    other = tiny_gpt(seed=1)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(AdapterMismatchError, match="another base"):
        apply_adapter(other, load_adapter(tmp_path / "adapter"))
    assert not lora_modules(other)
    assert all(p.requires_grad for p in other.parameters())
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())


def test_adapter_with_wrong_tensors_is_refused_and_undone(tmp_path):
    model = tiny_gpt()
    inject_lora(model, LoRAConfig(rank=2))
    save_adapter(model, tmp_path / "adapter", LoRAConfig(rank=2), base_fingerprint="")
    adapter = load_adapter(tmp_path / "adapter")
    adapter.config = LoRAConfig(rank=3)  # claims another rank than its tensors have
    fresh = tiny_gpt()
    with pytest.raises(AdapterMismatchError, match="shape"):
        apply_adapter(fresh, adapter, check_base=False)
    assert not lora_modules(fresh) and all(p.requires_grad for p in fresh.parameters())


def test_corrupted_or_missing_adapter_files_are_errors(tmp_path):
    model = tiny_gpt()
    inject_lora(model, LoRAConfig(rank=2))
    path = save_adapter(model, tmp_path / "adapter", LoRAConfig(rank=2), base_fingerprint="f")
    weights = path / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="checksum"):
        load_adapter(path)
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        load_adapter(tmp_path)


def test_save_adapter_replaces_an_existing_one_completely(tmp_path):
    model = tiny_gpt()
    inject_lora(model, LoRAConfig(rank=2))
    save_adapter(model, tmp_path / "a", LoRAConfig(rank=2), base_fingerprint="first")
    randomize_adapters(model)
    save_adapter(model, tmp_path / "a", LoRAConfig(rank=2), base_fingerprint="second")
    assert load_adapter(tmp_path / "a").base_fingerprint == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary or old copies left


def test_inject_errors():
    with pytest.raises(ConfigError, match="matches no module"):
        inject_lora(tiny_gpt(), LoRAConfig(targets=("attn.nope",)))
    with pytest.raises(ConfigError, match="not nn.Linear"):
        inject_lora(tiny_gpt(), LoRAConfig(targets=("ln_1",)))
    model = tiny_gpt()
    inject_lora(model, LoRAConfig())
    with pytest.raises(ConfigError, match="already"):
        inject_lora(model, LoRAConfig())
    remove_lora(model)
    assert not lora_modules(model)


@pytest.mark.parametrize("bad", [{"rank": 0}, {"alpha": 0}, {"dropout": 1.0}, {"targets": ()}, {"targets": ("",)}])
def test_lora_config_validation(bad):
    with pytest.raises(ConfigError):
        LoRAConfig(**bad)


def test_lora_config_round_trips_through_json():
    config = LoRAConfig(rank=3, alpha=5.0, dropout=0.0, targets=("attn.c_attn",))
    assert LoRAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown"):
        LoRAConfig.from_dict({"r": 3})


def test_bench_script_runs_on_a_tiny_model(monkeypatch, capsys):
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    sys.modules.pop("finetune_lora", None)
    results = importlib.import_module("finetune_lora").main(
        ["--preset", "tiny", "--vocab-size", "64", "--block-size", "16", "--batch-size", "2", "--rank", "2",
         "--warmup", "1", "--rounds", "2", "--steps", "1"]
    )
    C, L = 64, 2  # the tiny preset: 2 layers of width 64
    assert results["lora"]["trainable"] == L * 2 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert results["full"]["trainable"] == results["full"]["total"]
    assert 0 < results["trainable_fraction"] < 1 and results["step_time_ratio"] > 0
    assert "LoRA / full step time" in capsys.readouterr().out
