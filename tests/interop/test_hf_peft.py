"""peft adapters both ways, checked against the real ``peft`` package.

A gptlab LoRA run exported with ``export-hf --peft`` must make ``PeftModel`` on the exported base
compute gptlab's adapted logits, and peft's ``merge_and_unload`` must give ``gptlab lora merge``'s
weights; an adapter made by peft itself (``get_peft_model`` on a transformers model exported from
gptlab) must, once imported, make gptlab compute what peft computes. Both for GPT-2's shape
(``Conv1D``, ``fan_in_fan_out``) and the Llama family's (our fused q/k/v and gate/up split into
their modules, and back).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gptlab.cli.main import main
from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import ConfigError
from gptlab.finetune.config import LoRAConfig
from gptlab.finetune.loader import load_run
from gptlab.finetune.lora import (
    AdapterMismatchError,
    inject_lora,
    lora_modules,
    model_fingerprint,
    plain_linears,
    save_adapter,
)
from gptlab.interop.hf import export_hf
from gptlab.interop.hf_peft import apply_peft_adapter, read_peft_adapter, shortest_suffixes
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT
from gptlab.train.checkpoint import save_checkpoint

SHAPES = {
    "gpt2": {},
    "llama": dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, n_kv_head=2, mlp_hidden=48,
                  tie_embeddings=False),
}
TEXT = "def wrap(text, width=70, **kwargs):\n    return TextWrapper(width=width).wrap(text)"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def base_model(tokenizer: Tokenizer, shape: str, seed: int = 0) -> GPT:
    """A tiny GPT of ``shape`` with weights far from their initialisation (large, peaked logits)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=4, n_embd=32,
                       dropout=0.0, **SHAPES[shape])
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.2 if p.dim() == 1 else 0.1))
    return model.eval()


def randomize_lora_b(model: nn.Module, seed: int = 1) -> None:
    """A trained adapter's B is not zero (a fresh one is, and would test nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * 0.3)


def write_lora_run(path: Path, model: GPT, tokenizer: Tokenizer, lora: LoRAConfig) -> Path:
    """A LoRA run laid out as ``gptlab finetune --lora`` writes one: the checkpoint holds the base
    and names the adapter directory beside it."""
    fingerprint = model_fingerprint(model)
    inject_lora(model, lora)
    randomize_lora_b(model)
    save_adapter(model, path / "adapter-000003", lora, base_fingerprint=fingerprint, extra={"step": 3})
    with plain_linears(model):
        save_checkpoint(path, model, tokenizer, step=3,
                        state={"adapter": "adapter-000003", "base": {"path": "", "fingerprint": fingerprint}})
    return path


def logits(model: nn.Module, tokenizer: Tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer.encode(TEXT)]))[0][0]


def test_shortest_suffixes_match_only_what_is_chosen() -> None:
    every = [f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                  "mlp.c_proj")]
    chosen = [n for n in every if n.endswith(("c_attn", "attn.c_proj"))]
    assert shortest_suffixes(chosen, every) == ["c_attn", "attn.c_proj"]
    assert shortest_suffixes(every, every) == ["c_attn", "c_proj", "c_fc"]
    assert shortest_suffixes(["transformer.h.1.mlp.c_fc"], every) == ["1.mlp.c_fc"]


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
def test_exported_adapter_runs_in_peft_and_merges_as_gptlab_does(shape: str, tokenizer, tmp_path: Path,
                                                                capsys) -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = base_model(tokenizer, shape)
    base_logits = logits(model, tokenizer)
    run = write_lora_run(tmp_path / "run", model, tokenizer, LoRAConfig(rank=4, alpha=8.0))
    ours = logits(load_run(run).model.eval(), tokenizer)
    assert (ours - base_logits).abs().max() > 0.5  # the adapter matters

    out = tmp_path / "adapter"
    assert main(["export-hf", str(run), str(out), "--peft"]) == 0
    assert "peft adapter" in capsys.readouterr().out
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    assert config["fan_in_fan_out"] is (shape == "gpt2")
    assert config["base_model_name_or_path"] == str((tmp_path / "adapter-base").resolve())
    expected_targets = ["c_attn", "c_proj", "c_fc"] if shape == "gpt2" else \
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert config["target_modules"] == expected_targets
    keys = load_file(str(out / "adapter_model.safetensors"))
    first = "transformer.h.0.attn.c_attn" if shape == "gpt2" else "model.layers.0.self_attn.q_proj"
    assert f"base_model.model.{first}.lora_A.weight" in keys and f"base_model.model.{first}.lora_B.weight" in keys

    hf_base = transformers.AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    adapted = peft.PeftModel.from_pretrained(hf_base, str(out)).eval()
    with torch.no_grad():
        theirs = adapted(torch.tensor([tokenizer.encode(TEXT)])).logits[0]
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
    auto = peft.AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()  # finds the base by its recorded path
    with torch.no_grad():
        torch.testing.assert_close(auto(torch.tensor([tokenizer.encode(TEXT)])).logits[0], theirs, rtol=0, atol=0)
    assert transformers.AutoTokenizer.from_pretrained(str(out))(TEXT)["input_ids"] == tokenizer.encode(TEXT)

    # peft's merge equals gptlab's (lora merge, and export-hf of the LoRA run, which merges)
    merged_theirs = adapted.merge_and_unload().state_dict()
    assert main(["lora", "merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert main(["export-hf", str(tmp_path / "merged"), str(tmp_path / "merged-hf")]) == 0
    assert main(["export-hf", str(run), str(tmp_path / "run-hf")]) == 0
    assert "merged model" in capsys.readouterr().out
    merged_ours = load_file(str(tmp_path / "merged-hf" / "model.safetensors"))
    direct = load_file(str(tmp_path / "run-hf" / "model.safetensors"))
    assert merged_ours.keys() == direct.keys()
    for name, tensor in merged_ours.items():
        assert torch.equal(direct[name], tensor), name
        torch.testing.assert_close(merged_theirs[name], tensor, rtol=0, atol=1e-6)


def peft_made_adapter(shape: str, hf_dir: Path, out: Path) -> Path:
    """An adapter made by peft itself on the transformers model in ``hf_dir``: some modules, ranks
    and alphas that differ per module, random non-zero B."""
    import peft
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir))
    if shape == "gpt2":
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"], fan_in_fan_out=True,
                                 rank_pattern={"mlp.c_proj": 2}, alpha_pattern={"mlp.c_proj": 6})
    else:  # q and v without k; gate without up: the fused modules get block-diagonal, zero-padded factors
        config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj",
                                                                     "down_proj"],
                                 rank_pattern={"v_proj": 2}, alpha_pattern={"o_proj": 4})
    adapted = peft.get_peft_model(hf, config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    adapted.save_pretrained(str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
def test_adapter_made_by_peft_imports_into_gptlab(shape: str, tokenizer, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = base_model(tokenizer, shape, seed=4)
    hf_dir = export_hf(model, tokenizer, tmp_path / "hf")
    save_checkpoint(tmp_path / "base", model, tokenizer, step=0)
    adapter_dir = peft_made_adapter(shape, hf_dir, tmp_path / "peft")

    run = tmp_path / "imported"
    assert main(["import-hf", str(adapter_dir), "--base", str(tmp_path / "base"), "--out", str(run)]) == 0
    assert "peft adapter" in capsys.readouterr().out
    loaded = load_run(run)
    assert loaded.is_lora
    ours = logits(loaded.model.eval(), tokenizer)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir))
    adapted = peft.PeftModel.from_pretrained(hf, str(adapter_dir)).eval()
    with torch.no_grad():
        theirs = adapted(torch.tensor([tokenizer.encode(TEXT)])).logits[0]
    assert (theirs - logits(model, tokenizer)).abs().max() > 0.5
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)

    # the imported run is a LoRA run like any other: merge it, and peft's merge agrees
    assert main(["lora", "merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert main(["export-hf", str(tmp_path / "merged"), str(tmp_path / "merged-hf")]) == 0
    merged_theirs = adapted.merge_and_unload().state_dict()
    for name, tensor in load_file(str(tmp_path / "merged-hf" / "model.safetensors")).items():
        torch.testing.assert_close(merged_theirs[name], tensor, rtol=0, atol=1e-6)

    # without --base, the adapter's base_model_name_or_path (here the exported directory) is imported
    assert main(["import-hf", str(adapter_dir), "--out", str(tmp_path / "imported2")]) == 0
    torch.testing.assert_close(logits(load_run(tmp_path / "imported2").model.eval(), tokenizer), ours,
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_gptlab_to_peft_to_gptlab_keeps_the_adapter(shape: str, tokenizer, tmp_path: Path) -> None:
    """Exported then imported, an adapter is the same (our fused A is shared by its parts, so the
    rank stays r), without transformers or peft involved."""
    from gptlab.interop.hf_peft import export_peft

    model = base_model(tokenizer, shape)
    inject_lora(model, LoRAConfig(rank=3, alpha=5.0, targets=("attn.c_attn", "mlp.c_fc")))
    randomize_lora_b(model)
    export_peft(model, tokenizer, tmp_path / "peft", base_model_name_or_path=None)
    again = base_model(tokenizer, shape)
    config = apply_peft_adapter(again, tokenizer, tmp_path / "peft")
    assert config == LoRAConfig(rank=3, alpha=5.0, targets=("c_attn", "c_fc"))
    for name, module in lora_modules(model).items():
        other = lora_modules(again)[name]
        assert torch.equal(other.lora_A, module.lora_A) and torch.equal(other.lora_B, module.lora_B)


def test_what_peft_holds_and_gptlab_cannot_is_named(tokenizer, tmp_path: Path, capsys) -> None:
    from gptlab.interop.hf_peft import export_peft

    model = base_model(tokenizer, "gpt2")
    inject_lora(model, LoRAConfig(rank=2))
    out = export_peft(model, tokenizer, tmp_path / "peft", base_model_name_or_path=None)
    config = json.loads((out / "adapter_config.json").read_text())
    for key, value in (("use_dora", True), ("modules_to_save", ["lm_head"]), ("peft_type", "IA3")):
        (out / "adapter_config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ConfigError, match=key):
            read_peft_adapter(out)
    (out / "adapter_config.json").write_text(json.dumps(config))
    base = tmp_path / "base"
    save_checkpoint(base, base_model(tokenizer, "gpt2"), tokenizer, step=0)
    # no base given and none recorded
    assert main(["import-hf", str(out), "--out", str(tmp_path / "x")]) == 1
    assert "names no base model" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # an adapter of another shape of model
    llama_base = tmp_path / "llama"
    save_checkpoint(llama_base, base_model(tokenizer, "llama"), tokenizer, step=0)
    with pytest.raises(AdapterMismatchError):
        apply_peft_adapter(load_run(llama_base).model, tokenizer, out)
    # --peft needs a LoRA run
    assert main(["export-hf", str(base), str(tmp_path / "y"), "--peft"]) == 1
    assert "not a LoRA run" in capsys.readouterr().err
