"""Hugging Face GPT-2 interop: import and export checked against ``transformers`` itself.

Tests marked slow import ``transformers`` (several seconds); the rest build Hugging Face
directories with gptlab's own exporter, whose output the slow tests check against transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptlab.train.checkpoint import load_checkpoint
from gptlab.cli.main import main
from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError, ConfigError
from gptlab.generate.sampler import SamplingParams, generate_tokens
from gptlab.interop.hf import export_hf, import_hf, resolve_hf_source
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import (
    EOT,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_gpt2_vocab,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

MIXED = (
    "Ça va? naïve café, Größe — déjà vu\n日本語のテキストと中文 🚀🎉👩‍💻 emoji\n\n"
    f"  indented\tline{EOT}next document <|im_start|>user\nhi<|im_end|> <|sep|> end"
)
HF_FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe(corpus_text: str) -> BPETokenizer:
    return train_bpe_tokenizer([corpus_text], vocab_size=320)


@pytest.fixture(scope="module")
def char(corpus_text: str) -> CharTokenizer:
    return train_char_tokenizer([corpus_text])  # MIXED's accents, CJK and emoji take the byte fallback


def make_model(tokenizer: Tokenizer, seed: int = 0) -> GPT:
    """A tiny GPT with weights far from their initialisation, so logits are large and peaked."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def assert_same_weights(a: GPT, b: GPT) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert b.lm_head.weight is b.transformer.wte.weight  # still tied


@pytest.fixture(scope="module")
def exported(bpe: BPETokenizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT, Path]:
    """A gptlab model and its export (the directory is read-only by convention: copy to change)."""
    model = make_model(bpe)
    return model, export_hf(model, bpe, tmp_path_factory.mktemp("exported") / "hf")


def copy_dir(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name not in skip:
            shutil.copy(path, dst / path.name)
    return dst


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def write_gpt2_vocab(tokenizer: BPETokenizer, directory: Path) -> Path:
    """GPT-2 style vocab.json + merges.txt: the BPE's vocabulary with <|endoftext|> moved last."""
    vocab = {token: i - 1 for token, i in tokenizer.backend.get_vocab().items() if token != EOT}
    vocab[EOT] = len(vocab)
    merges = tokenizer.to_dict()["model"]["merges"]
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(transformers, corpus_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny GPT2LMHeadModel and a GPT-2 tokenizer, both saved by transformers itself."""
    files = write_gpt2_vocab(
        train_bpe_tokenizer([corpus_text], vocab_size=300, special_tokens=[EOT]), tmp_path_factory.mktemp("vocab")
    )
    hf_tokenizer = transformers.GPT2Tokenizer.from_pretrained(str(files))
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        vocab_size=len(hf_tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        layer_norm_epsilon=1e-5, initializer_range=0.2,  # large weights: peaked logits, no near-ties
        bos_token_id=hf_tokenizer.eos_token_id, eos_token_id=hf_tokenizer.eos_token_id,
    )
    directory = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    transformers.GPT2LMHeadModel(config).save_pretrained(str(directory))
    hf_tokenizer.save_pretrained(str(directory))
    return directory


# -- against transformers ---------------------------------------------------------------------


@pytest.mark.slow
def test_import_matches_transformers(transformers, hf_dir: Path) -> None:
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir)).eval()
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    model, tokenizer = import_hf(hf_dir)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (2, 2, 32, 128, hf.config.vocab_size)
    assert not model.training

    ids = tokenizer.encode(MIXED)
    assert ids == reference_tokenizer.encode(MIXED)
    assert tokenizer.decode(ids) == MIXED
    assert tokenizer.eot_id == reference_tokenizer.eos_token_id

    x = torch.tensor([ids[:100], ids[-100:]])
    with torch.no_grad():
        expected = hf(x).logits
    actual, _ = model(x)
    assert expected.abs().max() > 1.0  # far from uniform: the comparison means something
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)

    prompt = tokenizer.encode("def wrap(text, width")
    ours = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=40, temperature=0)))
    hf.generation_config.eos_token_id = None  # ours does not stop at <|endoftext|> either
    theirs = hf.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False, max_new_tokens=40, pad_token_id=tokenizer.eot_id,
    )[0, len(prompt):].tolist()
    assert ours == theirs
    assert len(set(ours)) > 3  # not one token repeated


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_export_loads_unchanged_in_transformers(transformers, kind: str, request, tmp_path: Path) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(kind)
    model = make_model(tokenizer)
    out = export_hf(model, tokenizer, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == HF_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left

    hf, info = transformers.GPT2LMHeadModel.from_pretrained(str(out), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied, as we are
    assert hf.config.eos_token_id == hf.config.bos_token_id == tokenizer.eot_id
    auto = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    x = torch.tensor([tokenizer.encode(MIXED)[:120]])
    actual, _ = model(x)
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(x).logits, actual, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(auto.eval()(x).logits, actual, rtol=1e-4, atol=1e-4)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    expected_class = "GPT2Tokenizer" if kind == "bpe" else "TokenizersBackend"
    assert type(hf_tokenizer).__name__ == expected_class
    assert len(hf_tokenizer) == tokenizer.vocab_size
    assert hf_tokenizer.eos_token_id == tokenizer.eot_id
    for text in (MIXED, "x", "\n\n\n", EOT * 2, "plain ascii text with  double  spaces "):
        ids = tokenizer.encode(text)
        assert hf_tokenizer.encode(text) == ids, text
        assert hf_tokenizer.decode(ids) == text


@pytest.mark.slow
def test_round_trip_of_a_transformers_model_is_bit_identical(hf_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = import_hf(hf_dir)
    out = export_hf(model, tokenizer, tmp_path / "again")
    original, written = load_file(str(hf_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert original.keys() == written.keys()
    for name in original:
        assert torch.equal(original[name], written[name]), name
    model2, tokenizer2 = import_hf(out)
    assert_same_weights(model, model2)
    assert tokenizer2.to_dict() == tokenizer.to_dict()
    assert tokenizer2.encode(MIXED) == tokenizer.encode(MIXED)


# -- round trips and file formats (no transformers needed) -------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_export_import_round_trip(kind: str, request, tmp_path: Path) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(kind)
    model = make_model(tokenizer, seed=3)
    first = export_hf(model, tokenizer, tmp_path / "first")
    imported, tokenizer2 = import_hf(first)
    assert_same_weights(model, imported)
    assert type(tokenizer2) is type(tokenizer)  # the char tokenizer comes back as one
    assert tokenizer2.to_dict() == tokenizer.to_dict()
    assert tokenizer2.encode(MIXED) == tokenizer.encode(MIXED)
    second = export_hf(imported, tokenizer2, tmp_path / "second")
    for name in HF_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_exported_layout_is_gpt2s(exported: tuple[GPT, Path], bpe: BPETokenizer) -> None:
    model, out = exported
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_positions"], config["n_embd"], config["vocab_size"]) == (128, 32, bpe.vocab_size)
    assert config["bos_token_id"] == config["eos_token_id"] == bpe.eot_id
    assert config["activation_function"] == "gelu_new" and config["tie_word_embeddings"] is True
    weights = load_file(str(out / "model.safetensors"))
    assert "lm_head.weight" not in weights  # tied: stored once, as save_pretrained does
    ours = model.transformer.h[0]
    assert torch.equal(weights["transformer.h.0.attn.c_attn.weight"], ours.attn.c_attn.weight.t())  # Conv1D (in, out)
    assert weights["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)
    assert torch.equal(weights["transformer.wte.weight"], model.transformer.wte.weight)
    special = json.loads((out / "special_tokens_map.json").read_text())
    assert special == {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}


def test_pytorch_model_bin_with_unprefixed_keys_and_buffers(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    """The layout of old checkpoints (GPT-2 on the Hub): pickled state dict, no 'transformer.'
    prefix, causal-mask buffers, and an explicit lm_head.weight equal to wte."""
    model, out = exported
    directory = copy_dir(out, tmp_path / "bin", skip=("model.safetensors",))
    state = {k.removeprefix("transformer."): v for k, v in load_file(str(out / "model.safetensors")).items()}
    for i in range(model.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state["lm_head.weight"] = state["wte.weight"].clone()
    torch.save(state, directory / "pytorch_model.bin")
    imported, _ = import_hf(directory)
    assert_same_weights(model, imported)


def test_half_precision_weights_are_widened(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    _, out = exported
    directory = copy_dir(out, tmp_path / "fp16")
    half = {k: v.half() for k, v in load_file(str(out / "model.safetensors")).items()}
    save_file(half, str(directory / "model.safetensors"), metadata={"format": "pt"})
    model, _ = import_hf(directory)
    wte = model.transformer.wte.weight
    assert wte.dtype == torch.float32 and torch.equal(wte, half["transformer.wte.weight"].float())
    assert import_hf(directory, dtype=torch.bfloat16).model.transformer.wte.weight.dtype == torch.bfloat16


def test_pickle_with_code_is_refused(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    directory = copy_dir(exported[1], tmp_path / "evil", skip=("model.safetensors",))
    torch.save({"wte.weight": Payload()}, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: cannot load as plain tensors"):
        import_hf(directory)
    assert not marker.exists()


def test_sharded_safetensors(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    model, out = exported
    directory = copy_dir(out, tmp_path / "sharded", skip=("model.safetensors",))
    weights = load_file(str(out / "model.safetensors"))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file_name, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(directory / file_name), metadata={"format": "pt"})
    weight_map = {k: file_name for file_name, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    imported, _ = import_hf(directory)
    assert_same_weights(model, imported)


def test_vocab_and_merges_without_tokenizer_json(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    _, out = exported
    vocab_tokenizer = train_bpe_tokenizer([MIXED * 3], vocab_size=280, special_tokens=[EOT])
    directory = copy_dir(out, tmp_path / "vocab", skip=("tokenizer.json",))
    write_gpt2_vocab(vocab_tokenizer, directory)
    _, tokenizer = import_hf(directory)
    reference = load_gpt2_vocab(directory / "vocab.json", directory / "merges.txt")
    assert tokenizer.encode(MIXED) == reference.encode(MIXED)
    assert tokenizer.eot_id == tokenizer.vocab_size - 1


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "model_type is 'bert'"),
        ({"architectures": ["GPT2ForSequenceClassification"]}, "architecture GPT2ForSequenceClassification"),
        ({"activation_function": "relu"}, "activation_function is 'relu'"),
        ({"n_inner": 100}, "n_inner is 100"),
        ({"scale_attn_weights": False}, "scale_attn_weights"),
        ({"add_cross_attention": True}, "add_cross_attention"),
        ({"n_head": 5}, "divisible by n_head"),
    ],
)
def test_unsupported_configs_are_named(exported, tmp_path: Path, changes: dict, message: str) -> None:
    directory = copy_dir(exported[1], tmp_path / "m")
    edit_config(directory, **changes)
    with pytest.raises(ConfigError, match=message):
        import_hf(directory)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json: missing"),
        (lambda d: (d / "config.json").write_text("{oops"), "config.json: cannot read JSON"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights: need model.safetensors"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 100), "cannot read safetensors"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer: need tokenizer.json"),
        (lambda d: edit_config(d, vocab_size=999), "wte.weight has shape"),
        (lambda d: edit_config(d, n_layer=3), r"missing: \['transformer.h.2"),
        (lambda d: edit_config(d, n_layer=1), r"unexpected: \['transformer.h.1"),
        (lambda d: edit_config(d, vocab_size=10), "tokenizer has 320 tokens but the model only 10"),
    ],
)
def test_broken_directories_are_named(exported, tmp_path: Path, edit, message: str) -> None:
    directory = copy_dir(exported[1], tmp_path / "m")
    edit(directory)
    with pytest.raises(CheckpointError, match=message):
        import_hf(directory)


def test_untied_lm_head_is_refused(exported, tmp_path: Path) -> None:
    directory = copy_dir(exported[1], tmp_path / "m")
    weights = load_file(str(directory / "model.safetensors"))
    weights["lm_head.weight"] = torch.randn_like(weights["transformer.wte.weight"])
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    edit_config(directory, tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match="LM head is not tied"):
        import_hf(directory)


# -- the local cache ---------------------------------------------------------------------------


def fake_cache(cache: Path, repo_id: str, source: Path, commit: str = "0123abcd" * 5) -> Path:
    """The hub cache layout: blobs named by hash, snapshot files as relative symlinks to them."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(source.iterdir())):
        shutil.copy(path, repo / "blobs" / f"blob{i}")
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    return snapshot


def test_model_id_resolves_in_the_local_cache_only(exported, tmp_path: Path, monkeypatch) -> None:
    model, out = exported
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    snapshot = fake_cache(tmp_path / "home" / "hub", "tiny-org/tiny-gpt2", out)
    assert resolve_hf_source("tiny-org/tiny-gpt2") == snapshot
    assert resolve_hf_source("tiny-org/tiny-gpt2", revision="0123abcd" * 5) == snapshot
    assert resolve_hf_source(out) == out  # a directory is itself
    imported, _ = import_hf(resolve_hf_source("tiny-org/tiny-gpt2"))
    assert_same_weights(model, imported)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub2"))  # wins over HF_HOME
    canonical = fake_cache(tmp_path / "hub2", "gpt2", out)
    assert resolve_hf_source("gpt2") == canonical
    with pytest.raises(CheckpointError, match="not found in the local Hugging Face cache.*never downloads"):
        resolve_hf_source("tiny-org/tiny-gpt2")
    with pytest.raises(CheckpointError, match="no snapshot for revision 'v2'"):
        resolve_hf_source("gpt2", revision="v2")
    with pytest.raises(CheckpointError, match="not a Hugging Face model id"):
        resolve_hf_source("a/b/c")
    with pytest.raises(CheckpointError, match="not a directory"):
        resolve_hf_source(out / "config.json")


# -- export safety -------------------------------------------------------------------------------


def test_export_never_overwrites_by_accident(exported, bpe: BPETokenizer, tmp_path: Path) -> None:
    model, _ = exported
    other = make_model(bpe, seed=7)
    out = export_hf(model, bpe, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CheckpointError, match="already exists and is not empty"):
        export_hf(other, bpe, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    export_hf(other, bpe, out, overwrite=True)
    assert_same_weights(other, import_hf(out).model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or set-aside copies

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a Hugging Face model directory"):
        export_hf(model, bpe, notes, overwrite=True)
    assert (notes / "todo.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    export_hf(model, bpe, tmp_path / "empty")  # an empty directory is fine
    with pytest.raises(CheckpointError, match="not a directory"):
        export_hf(model, bpe, notes / "todo.txt")


def test_export_refuses_bias_free_models(bpe: BPETokenizer, tmp_path: Path) -> None:
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8, bias=False))
    with pytest.raises(ConfigError, match="without biases"):
        export_hf(model, bpe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- CLI --------------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_import_sample_export(exported, tmp_path: Path, capsys, monkeypatch) -> None:
    model, out = exported
    run = tmp_path / "runs" / "imported"
    code, stdout, _ = run_cli(capsys, "import-hf", str(out), "--out", str(run))
    assert code == 0 and "imported" in stdout and "gptlab sample" in stdout
    assert_same_weights(model, load_checkpoint(run).model)

    code, stdout, _ = run_cli(
        capsys, "sample", str(run), "--prompt", "def ", "--max-new-tokens", "8", "--temperature", "0"
    )
    assert code == 0 and stdout.startswith("def ")

    code, _, stderr = run_cli(capsys, "import-hf", str(out), "--out", str(run))
    assert code == 1 and stderr.count("\n") == 1 and "already exists" in stderr

    exported_again = tmp_path / "hf-again"
    code, stdout, _ = run_cli(capsys, "export-hf", str(run), str(exported_again))
    assert code == 0 and "from_pretrained" in stdout
    for name in HF_FILES:
        assert (exported_again / name).read_bytes() == (out / name).read_bytes(), name

    before = (exported_again / "model.safetensors").read_bytes()
    code, _, stderr = run_cli(capsys, "export-hf", str(run), str(exported_again))
    assert code == 1 and stderr.startswith("gptlab export-hf: error:") and stderr.count("\n") == 1
    assert "--overwrite" in stderr
    assert (exported_again / "model.safetensors").read_bytes() == before
    code, _, _ = run_cli(capsys, "export-hf", str(run), str(exported_again), "--overwrite")
    assert code == 0

    code, _, stderr = run_cli(capsys, "export-hf", str(run), str(run), "--overwrite")
    assert code == 1 and "would replace the checkpoint" in stderr
    assert load_checkpoint(run).model is not None

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, _, stderr = run_cli(capsys, "import-hf", "openai-community/gpt2", "--out", str(tmp_path / "x"), "--offline")
    assert code == 1 and stderr.count("\n") == 1
    assert "not found in the local Hugging Face cache" in stderr and not (tmp_path / "x").exists()

    bert = copy_dir(out, tmp_path / "bert")
    edit_config(bert, model_type="bert")
    code, _, stderr = run_cli(capsys, "import-hf", str(bert), "--out", str(tmp_path / "y"))
    assert code == 1 and "model_type is 'bert'" in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["import-hf", "export-hf"])
def test_cli_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "Hugging Face GPT-2" in " ".join(capsys.readouterr().out.split())  # help text, rewrapped


@pytest.mark.slow
def test_export_of_a_vocabulary_padded_model_drops_the_padding(tmp_path):
    """GPU runs pad the embedding rows to a multiple of 64; the exported model has exactly the vocabulary."""
    transformers = pytest.importorskip("transformers")
    from gptlab.model.config import GPTConfig
    from gptlab.interop.hf import export_hf
    from gptlab.model.gpt import GPT
    from gptlab.data.tokenizer import train_char_tokenizer

    tokenizer = train_char_tokenizer(["hello world, padded vocabulary"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16,
                          vocab_pad_multiple=64)).eval()
    assert model.transformer.wte.weight.size(0) > tokenizer.vocab_size
    export_hf(model, tokenizer, tmp_path / "hf")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.tensor([tokenizer.encode("hello")])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, model(x)[0], atol=1e-4, rtol=1e-4)
