"""Llama-family interop (Llama, Mistral, Qwen2, Qwen3) checked against ``transformers`` itself:
tiny random models that transformers saves import with the same logits and greedy generations;
our family shapes export to directories that ``AutoModelForCausalLM`` loads with the same logits;
config features gptlab does not compute are ConfigErrors naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gptlab.errors import ConfigError
from gptlab.generate.sampler import SamplingParams, generate_tokens
from gptlab.interop.hf import export_hf, import_hf
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT

from .conftest import ARCHITECTURE, KINDS, TEXTS, perturbed

transformers = pytest.importorskip("transformers")

def reference(directory: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), attn_implementation="eager")
    return model.eval()


def record(name: str, diff: float) -> None:
    print(f"max |logit diff| {name}: {diff:.2e}")  # for the record, with -s


# -- import ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_import_matches_transformers(kind: str, family_dir) -> None:
    directory = family_dir(kind)
    hf = reference(directory)
    assert type(hf).__name__ == ARCHITECTURE[kind]
    model, tokenizer = import_hf(directory)
    c = model.config
    assert (c.norm, c.positions, c.mlp, c.n_kv_head, c.block_size) == ("rmsnorm", "rotary", "swiglu", 2, 64)
    assert c.tie_embeddings == hf.config.tie_word_embeddings and c.qk_norm == (kind == "qwen3")

    ids = tokenizer.encode(" ".join(TEXTS))[:64]
    x = torch.tensor([ids, list(reversed(ids))])
    with torch.no_grad():
        expected, actual = hf(x).logits, model(x)[0]
    assert expected.abs().max() > 1.0  # far from uniform: the comparison means something
    record(f"import {kind}", float((actual - expected).abs().max()))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)

    prompt = ids[:8]
    ours = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=24, temperature=0)))
    theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=24, eos_token_id=None, pad_token_id=0)[0, len(prompt):]
    assert ours == theirs.tolist()
    assert len(set(ours)) > 1  # not one token repeated


def test_attention_bias_without_mlp_bias_imports_zero_mlp_biases(family_dir) -> None:
    model, _ = import_hf(family_dir("llama-biases"))
    assert model.config.bias and model.config.qkv_bias is None
    block = model.transformer.h[0]
    assert block.attn.c_attn.bias.count_nonzero() > 0 and block.attn.c_proj.bias.count_nonzero() > 0
    assert block.mlp.c_fc.bias.count_nonzero() == 0 and block.mlp.c_proj.bias.count_nonzero() == 0


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_round_trip_is_bit_identical(kind: str, family_dir, tmp_path: Path) -> None:
    """Import then export gives back transformers' own tensors, names and config values."""
    directory = family_dir(kind)
    model, tokenizer = import_hf(directory)
    out = export_hf(model, tokenizer, tmp_path / "again")
    original, written = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert original.keys() == written.keys()
    for name in original:
        assert torch.equal(original[name], written[name]), name
    before, after = (json.loads((d / "config.json").read_text()) for d in (directory, out))
    for key in ("model_type", "architectures", "hidden_size", "intermediate_size", "num_key_value_heads",
                "rms_norm_eps", "tie_word_embeddings", "vocab_size", "max_position_embeddings"):
        assert after[key] == before[key], key
    assert json.loads((out / "tokenizer.json").read_text())["model"] == json.loads(
        (directory / "tokenizer.json").read_text())["model"]


def test_rope_config_of_older_transformers_is_read(family_dir, tmp_path: Path) -> None:
    """``rope_theta`` and ``rope_scaling`` at the top level (transformers 4) mean what
    ``rope_parameters`` means."""
    directory = family_dir("llama3")
    model = import_hf(directory).model
    old = copy_dir(directory, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    parameters = config.pop("rope_parameters")
    config["rope_theta"] = parameters.pop("rope_theta")
    config["rope_scaling"] = parameters
    (old / "config.json").write_text(json.dumps(config))
    assert import_hf(old).model.config == model.config
    assert model.config.rope_scaling_factor == 4.0 and model.config.rope_original_context == 16


# -- export ---------------------------------------------------------------------------------------

# our shapes → the architecture they export as
EXPORTS = {
    "llama": (dict(n_kv_head=2, mlp_hidden=96, tie_embeddings=False), "LlamaForCausalLM"),
    "llama3-tied": (dict(n_kv_head=1, mlp_hidden=80, rope_theta=500.0, rope_scaling_factor=4.0,
                         rope_original_context=16), "LlamaForCausalLM"),
    "biases": (dict(bias=True, qkv_bias=False, tie_embeddings=False), "LlamaForCausalLM"),
    "qwen2": (dict(qkv_bias=True, n_kv_head=2, mlp_hidden=96, layer_norm_epsilon=1e-6), "Qwen2ForCausalLM"),
    # transformers gives a qwen2 directory Qwen2's tokenizer pipeline, whatever tokenizer.json says:
    # with another tokenizer, q/k/v biases alone are written as Llama with a zero o_proj bias
    "qkv-bias-other-tokenizer": (dict(qkv_bias=True), "LlamaForCausalLM"),
    "qwen3": (dict(qk_norm=True, n_kv_head=2, tie_embeddings=False), "Qwen3ForCausalLM"),
    "qwen3-qkv-bias": (dict(qk_norm=True, qkv_bias=True), "Qwen3ForCausalLM"),
}
FAMILY = dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False)


def family_model(vocab_size: int, changes: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64,
                       **{**FAMILY, **changes})
    model = GPT(config)
    with torch.no_grad():  # weights far from their initialisation: large, peaked logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return perturbed(model, seed).eval()


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(EXPORTS))
def test_export_loads_unchanged_in_transformers(shape: str, styled_tokenizer_dir, tmp_path: Path) -> None:
    from gptlab.interop.hf_tokenizer import load_hf_tokenizer

    changes, architecture = EXPORTS[shape]
    style = "llama3" if "llama3" in shape else "qwen2" if shape == "qwen2" else "sentencepiece"
    tokenizer = load_hf_tokenizer(styled_tokenizer_dir(style))
    model = family_model(tokenizer.vocab_size, changes)
    out = export_hf(model, tokenizer, tmp_path / "out")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True,
                                                                 attn_implementation="eager")
    assert type(hf).__name__ == architecture
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    tied = hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert tied == model.config.tie_embeddings
    ids = tokenizer.encode(" ".join(TEXTS))[:64]
    x = torch.tensor([ids])
    with torch.no_grad():
        expected, actual = hf.eval()(x).logits, model(x)[0]
    assert expected.abs().max() > 1.0
    record(f"export {shape} as {architecture}", float((actual - expected).abs().max()))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tokenizer.eos_token_id == tokenizer.eot_id
    for text in TEXTS:
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text), text


def test_export_of_a_padded_vocabulary_drops_the_padding(styled_tokenizer_dir, tmp_path: Path) -> None:
    from gptlab.interop.hf_tokenizer import load_hf_tokenizer

    tokenizer = load_hf_tokenizer(styled_tokenizer_dir("sentencepiece"))
    model = family_model(tokenizer.vocab_size, dict(vocab_pad_multiple=64, tie_embeddings=False))
    out = export_hf(model, tokenizer, tmp_path / "out")
    weights = load_file(str(out / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape[0] == weights["lm_head.weight"].shape[0] == tokenizer.vocab_size
    again = import_hf(out).model
    x = torch.tensor([tokenizer.encode(TEXTS[0])])
    with torch.no_grad():
        assert torch.equal(again(x)[0], model(x)[0])


@pytest.mark.parametrize(("changes", "message"), [
    (dict(mlp="relu2"), "mlp is 'relu2'"),
    (dict(norm="layernorm"), "norm is 'layernorm'"),
    (dict(qk_norm=True, bias=True), "qk_norm with bias=True"),
    (dict(positions="learned", bias=True), "GPT-2 cannot express this model's norm, mlp"),
    (dict(bigram_buckets=16), "bigram_buckets is 16"),
    (dict(positions="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True, bigram_buckets=16),
     "GPT-2 cannot express this model's bigram_buckets"),
])
def test_shapes_transformers_cannot_express_are_refused(changes: dict, message: str, tmp_path: Path) -> None:
    from gptlab.data.tokenizer import train_char_tokenizer

    tokenizer = train_char_tokenizer(["abc"])
    model = family_model(tokenizer.vocab_size, changes)
    with pytest.raises(ConfigError, match=message):
        export_hf(model, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- what gptlab does not compute ------------------------------------------------------------------


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("kind", "changes", "message"), [
    ("llama", {"num_local_experts": 8}, "num_local_experts = 8: mixture-of-experts"),
    ("qwen2", {"num_experts": 4}, "num_experts = 4"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope_type is 'yarn'"),
    ("llama", {"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_type is 'dynamic'"),
    ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_type is 'linear'"),
    ("llama", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ("mistral", {"sliding_window": 16}, "sliding_window is 16, shorter than the context"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0, "layer_types": None},
     "sliding_window is 16"),
    ("llama", {"head_dim": 32}, "head_dim is 32"),
    ("qwen3", {"head_dim": None}, "head_dim is 128"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
    ("llama", {"architectures": ["LlamaForSequenceClassification"]}, "LlamaForSequenceClassification"),
    ("llama", {"model_type": "mixtral"}, "model_type is 'mixtral'"),
])
def test_unsupported_configs_are_named(kind: str, changes: dict, message: str, family_dir, tmp_path: Path) -> None:
    directory = copy_dir(family_dir(kind), tmp_path / "m")
    edit_config(directory, **changes)
    with pytest.raises(ConfigError, match=message) as error:
        import_hf(directory)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("kind", "changes"), [
    ("mistral", {"sliding_window": 64}),  # a window as long as the context is no window
    ("mistral", {"sliding_window": 4096}),
    ("qwen2", {"use_sliding_window": False, "sliding_window": 16}),  # Qwen2's shipped configs
])
def test_windows_that_change_nothing_are_accepted(kind: str, changes: dict, family_dir, tmp_path: Path) -> None:
    directory = copy_dir(family_dir(kind), tmp_path / "m")
    edit_config(directory, **changes)
    assert import_hf(directory).model.config == import_hf(family_dir(kind)).model.config


def test_a_nonzero_bias_without_a_place_is_refused(family_dir, tmp_path: Path) -> None:
    """A Mistral checkpoint carrying an o_proj bias it does not use is not silently dropped."""
    from safetensors.torch import save_file

    from gptlab.errors import CheckpointError

    directory = copy_dir(family_dir("mistral"), tmp_path / "m")
    weights = load_file(str(directory / "model.safetensors"))
    weights["model.layers.0.self_attn.o_proj.bias"] = torch.ones(64)
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected: \['model.layers.0.self_attn.o_proj.bias'\]"):
        import_hf(directory)


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_import_then_export_gives_transformers_its_model_back(family_dir, tmp_path: Path, capsys) -> None:
    from gptlab.cli.main import main

    directory = family_dir("qwen3")
    assert main(["import-hf", str(directory), "--out", str(tmp_path / "run")]) == 0
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    x = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        torch.testing.assert_close(reference(tmp_path / "out")(x).logits, reference(directory)(x).logits,
                                   rtol=0, atol=1e-5)
    edit_config(copy_dir(directory, tmp_path / "windowed"), use_sliding_window=True, sliding_window=8,
                max_window_layers=0, layer_types=None)
    capsys.readouterr()  # transformers' progress bars
    assert main(["import-hf", str(tmp_path / "windowed"), "--out", str(tmp_path / "run2")]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "sliding_window is 8" in stderr


@pytest.mark.parametrize(("command", "names"), [
    ("import-hf", ("GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                   "Qwen3ForCausalLM", "--offline", "HF_TOKEN")),
    ("export-hf", ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")),
])
def test_cli_help_names_the_architectures(command: str, names: tuple[str, ...], capsys) -> None:
    from gptlab.cli.main import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in names:
        assert name in text, name


def test_old_pickled_checkpoint_with_rotary_buffers(family_dir, tmp_path: Path) -> None:
    """Llama checkpoints of 2023 on the Hub: pytorch_model.bin, with each layer's rotary_emb.inv_freq."""
    directory = copy_dir(family_dir("llama"), tmp_path / "bin")
    weights = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    for i in range(2):
        weights[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(weights, directory / "pytorch_model.bin")
    imported = import_hf(directory).model.state_dict()
    expected = import_hf(family_dir("llama")).model.state_dict()
    assert imported.keys() == expected.keys() and all(torch.equal(imported[k], expected[k]) for k in expected)
