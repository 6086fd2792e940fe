"""GGUF export checked from the file back: ``gguf``'s own reader reads every tensor and key, a
forward pass written here from llama.cpp's graphs over the file's tensors (adjacent-pair rope for
``llama``, half-split for ``qwen2``/``qwen3``, GPT-2's learned positions) gives the model's
logits, stored types hold their rounding bounds, and the tokenizer rebuilt from the file's tokens
and merges gives gptlab's ids. llama.cpp itself runs the files in ``test_gguf_llama_cpp.py``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlab.cli.main import main
from gptlab.data.chat import render_chat
from gptlab.data.tokenizer import train_bpe_tokenizer, train_char_tokenizer
from gptlab.errors import CheckpointError, ConfigError, TokenizerError
from gptlab.finetune.config import LoRAConfig
from gptlab.finetune.lora import inject_lora, lora_modules, merge_lora
from gptlab.interop.gguf import OUTTYPES, export_gguf, gguf_architecture
from gptlab.model.config import preset
from gptlab.model.gpt import GPT
from gptlab.train.checkpoint import save_checkpoint

from .conftest import CORPUS, TEXTS

gguf = pytest.importorskip("gguf")

# each shape gptlab's model can take that llama.cpp runs, and the architecture it is written as
SHAPES = {
    "gpt2": ("tiny", {}, "gpt2"),
    "gpt2-no-bias-gqa-untied": ("tiny", dict(bias=False, n_kv_head=1, tie_embeddings=False, mlp_hidden=96), "gpt2"),
    "llama": ("llama-tiny", {}, "llama"),
    "llama-biases-tied": ("llama-tiny", dict(bias=True, tie_embeddings=True), "llama"),
    "llama3-rope": ("llama-tiny", dict(rope_scaling_factor=8.0, rope_original_context=16, rope_theta=500.0), "llama"),
    "qwen2": ("llama-tiny", dict(qkv_bias=True, vocab_pad_multiple=64), "qwen2"),
    "qwen3": ("llama-tiny", dict(qk_norm=True), "qwen3"),
}


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer([CORPUS], 320)


def tiny_model(shape: str, vocab_size: int, seed: int = 0) -> GPT:
    """A random model of ``shape`` with nonzero biases and norm weights (so that a misplaced one shows)."""
    name, overrides, _ = SHAPES[shape]
    torch.manual_seed(seed)
    model = GPT(preset(name, vocab_size=vocab_size, **overrides)).eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith("bias") or "norm" in key or "ln_" in key:
                param.add_(torch.randn_like(param) * 0.1)
            if key.endswith(("wte.weight", "lm_head.weight")):
                param.mul_(20)  # logits far from uniform
    return model


def read(path: Path):
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def dequantized(tensor) -> torch.Tensor:
    return torch.from_numpy(np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type)))


# -- a forward pass of llama.cpp's graphs over the file's tensors --------------------------------


def _norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, eps: float, rms: bool) -> torch.Tensor:
    if rms:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    return F.layer_norm(x, x.shape[-1:], w, b, eps)


def _rope(x: torch.Tensor, base: float, factors: torch.Tensor | None, adjacent: bool) -> torch.Tensor:
    """x (T, heads, D): ggml's rope, "normal" (adjacent pairs) or "neox" (first half, second half)."""
    T, _, D = x.shape
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    if factors is not None:
        theta = theta / factors.double()
    angle = torch.arange(T, dtype=torch.float64)[:, None, None] * theta  # (T, 1, D/2)
    cos, sin = angle.cos().float(), angle.sin().float()
    a, b = (x[..., 0::2], x[..., 1::2]) if adjacent else x.chunk(2, dim=-1)
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return torch.stack((ra, rb), dim=-1).flatten(-2) if adjacent else torch.cat((ra, rb), dim=-1)


def reference_logits(path: Path, ids: list[int], adjacent_pairs: bool | None = None) -> torch.Tensor:
    """Logits (T, V) of the GGUF model at ``path`` for ``ids``, computed from its tensors the way
    llama.cpp's graph for its architecture does (``adjacent_pairs`` overrides its rope layout)."""
    fields, tensors = read(path)
    arch = fields["general.architecture"]
    W = {name: dequantized(t) for name, t in tensors.items()}
    get = lambda key: fields[f"{arch}.{key}"]  # noqa: E731
    H, K, n_layer = get("attention.head_count"), get("attention.head_count_kv"), get("block_count")
    rms = arch != "gpt2"
    eps = get("attention.layer_norm_rms_epsilon") if rms else get("attention.layer_norm_epsilon")
    x = W["token_embd.weight"][ids]  # (T, C)
    T, C = x.shape
    D = C // H
    if arch == "gpt2":
        x = x + W["position_embd.weight"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(n_layer):
        p = lambda name: W.get(f"blk.{i}.{name}")  # noqa: E731
        h = _norm(x, p("attn_norm.weight"), p("attn_norm.bias"), eps, rms)
        if arch == "gpt2":
            q, k, v = (h @ p("attn_qkv.weight").T + p("attn_qkv.bias")).split((H * D, K * D, K * D), dim=-1)
        else:
            q, k, v = (h @ p(f"attn_{n}.weight").T + (p(f"attn_{n}.bias") if p(f"attn_{n}.bias") is not None else 0)
                       for n in "qkv")
        q, k, v = q.view(T, H, D), k.view(T, K, D), v.view(T, K, D)
        if p("attn_q_norm.weight") is not None:
            q = _norm(q, p("attn_q_norm.weight"), None, eps, True)
            k = _norm(k, p("attn_k_norm.weight"), None, eps, True)
        if arch != "gpt2":
            adjacent = arch == "llama" if adjacent_pairs is None else adjacent_pairs
            q = _rope(q, get("rope.freq_base"), W.get("rope_freqs.weight"), adjacent)
            k = _rope(k, get("rope.freq_base"), W.get("rope_freqs.weight"), adjacent)
        k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        attn = torch.einsum("hts,shd->thd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v).reshape(T, C)
        out = attn @ p("attn_output.weight").T
        x = x + (out + p("attn_output.bias") if p("attn_output.bias") is not None else out)
        h = _norm(x, p("ffn_norm.weight"), p("ffn_norm.bias"), eps, rms)
        lin = lambda name, z: z @ p(f"{name}.weight").T + (p(f"{name}.bias") if p(f"{name}.bias") is not None  # noqa: E731
                                                          else 0)
        if arch == "gpt2":
            h = F.gelu(lin("ffn_up", h), approximate="tanh")
        else:
            h = F.silu(lin("ffn_gate", h)) * lin("ffn_up", h)
        x = x + lin("ffn_down", h)
    x = _norm(x, W["output_norm.weight"], W.get("output_norm.bias"), eps, rms)
    return x @ W.get("output.weight", W["token_embd.weight"]).T


# -- architectures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_architecture_follows_the_config(shape: str) -> None:
    name, overrides, arch = SHAPES[shape]
    assert gguf_architecture(preset(name, **overrides)) == arch


@pytest.mark.parametrize("name, overrides, field", [
    ("tiny", dict(mlp="relu2"), "mlp"),
    ("tiny", dict(norm="rmsnorm"), "norm"),
    ("tiny", dict(qk_norm=True), "qk_norm"),
    ("llama-tiny", dict(norm="layernorm"), "norm"),
    ("llama-tiny", dict(mlp="gelu"), "mlp"),
    ("llama-tiny", dict(qk_norm=True, bias=True), "bias"),
    ("llama-tiny", dict(qk_norm=True, rope_scaling_factor=8.0), "rope_scaling_factor"),
    ("tiny", dict(bigram_buckets=64), "bigram_buckets"),
    ("llama-tiny", dict(bigram_buckets=64), "bigram_buckets"),
])
def test_shapes_llama_cpp_cannot_run_name_the_field(name: str, overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field} is"):
        gguf_architecture(preset(name, **overrides))


# -- tensors and metadata ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_file_computes_the_models_logits(shape: str, bpe, tmp_path: Path) -> None:
    model = tiny_model(shape, bpe.vocab_size + 5)  # 5 ids beyond the tokenizer: unused placeholders
    path = export_gguf(model, bpe, tmp_path / "m.gguf", outtype="f32")
    fields, tensors = read(path)
    cfg, arch = model.config, SHAPES[shape][2]
    assert fields["general.architecture"] == arch and fields["general.name"] == "m"
    assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
    expected = {"context_length": 64, "embedding_length": 64, "feed_forward_length": cfg.hidden, "block_count": 2,
                "attention.head_count": cfg.n_head, "attention.head_count_kv": cfg.kv_heads,
                "vocab_size": cfg.vocab_size}
    if arch == "gpt2":
        expected["attention.layer_norm_epsilon"] = pytest.approx(cfg.layer_norm_epsilon)
    else:
        expected |= {"attention.layer_norm_rms_epsilon": pytest.approx(cfg.layer_norm_epsilon),
                     "rope.freq_base": pytest.approx(cfg.rope_theta), "rope.dimension_count": cfg.head_dim}
    assert {key: fields[f"{arch}.{key}"] for key in expected} == expected
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())
    assert tensors["token_embd.weight"].shape.tolist() == [64, cfg.vocab_size]  # padding rows dropped
    assert ("output.weight" in tensors) == (not cfg.tie_embeddings)
    assert ("rope_freqs.weight" in tensors) == (shape == "llama3-rope")

    ids = bpe.encode(" ".join(TEXTS))[:48]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0]
    theirs = reference_logits(path, ids)
    assert ours.abs().max() > 1.0  # far from uniform: the comparison means something
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)


def test_half_split_rope_in_a_llama_file_would_be_wrong(bpe, tmp_path: Path) -> None:
    """The q/k permutation matters: read as half-split pairs, a llama file gives other logits."""
    model = tiny_model("llama", bpe.vocab_size)
    with torch.no_grad():  # attention that matters to the logits
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(10)
            block.attn.c_proj.weight.mul_(30)
    path = export_gguf(model, bpe, tmp_path / "m.gguf", outtype="f32")
    ids = bpe.encode(CORPUS)[:32]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0]
    torch.testing.assert_close(reference_logits(path, ids), ours, rtol=0, atol=1e-4)
    assert (reference_logits(path, ids, adjacent_pairs=False) - ours).abs().max() > 0.1


# bound on |x - stored| relative to the largest |x| of the row (f16, bf16) or of the q8_0 block:
# half a unit in the last place, and q8_0's scale d = amax / 127 rounds to f16 itself
ROUNDING = {"f16": 2.0**-11, "bf16": 2.0**-8, "q8_0": 0.5 / 127 + 2.0**-11}


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_stored_types_round_within_their_bounds(outtype: str, bpe, tmp_path: Path) -> None:
    model = tiny_model("llama", bpe.vocab_size)
    exact, _ = read(export_gguf(model, bpe, tmp_path / "f32.gguf", outtype="f32"))
    fields, tensors = read(export_gguf(model, bpe, tmp_path / f"{outtype}.gguf", outtype=outtype))
    _, f32_tensors = read(tmp_path / "f32.gguf")
    assert fields["general.file_type"] == {"f16": 1, "bf16": 32, "q8_0": 7}[outtype]
    qtype = gguf.GGMLQuantizationType[outtype.upper()]
    for name, tensor in tensors.items():
        x = dequantized(f32_tensors[name]).double()
        if x.ndim == 1:  # norms and biases stay exact
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, name
            assert torch.equal(dequantized(tensor).double(), x), name
            continue
        assert tensor.tensor_type == qtype, name
        error = (dequantized(tensor).double() - x).abs()
        if outtype == "q8_0":
            blocks = x.abs().reshape(x.shape[0], -1, 32).amax(-1, keepdim=True)
            bound = (blocks * ROUNDING[outtype]).expand(-1, -1, 32).reshape(x.shape)
        else:  # relative to the element itself; f16's subnormals below 2**-14 are 2**-24 apart
            bound = (x.abs() * ROUNDING[outtype]).clamp(min=2.0**-25 if outtype == "f16" else 0.0)
        assert bool((error <= bound + 1e-12).all()), f"{name}: {float((error - bound).max()):.2e} over the bound"
        assert error.max() > 0 or x.abs().max() == 0, name  # really stored as outtype


def test_q8_0_keeps_rows_that_are_not_whole_blocks_in_f16(bpe, tmp_path: Path) -> None:
    model = GPT(preset("llama-tiny", vocab_size=bpe.vocab_size, mlp_hidden=80)).eval()  # 80 = 2.5 blocks
    _, tensors = read(export_gguf(model, bpe, tmp_path / "m.gguf", outtype="q8_0"))
    assert tensors["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


@pytest.mark.parametrize("outtype", OUTTYPES)
def test_every_outtype_gives_logits_close_to_f32(outtype: str, bpe, tmp_path: Path) -> None:
    model = tiny_model("qwen2", bpe.vocab_size)
    path = export_gguf(model, bpe, tmp_path / "m.gguf", outtype=outtype)
    ids = bpe.encode(CORPUS)[:32]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0]
    diff = float((reference_logits(path, ids) - ours).abs().max())
    # each matmul's weights carry a relative error up to ROUNDING (f16 5e-4, bf16 4e-3, q8_0 4.4e-3 of a
    # block's largest value); through the few matmuls to a logit that stays below 20 times it
    relative = {"f32": 1e-4 / 20, **ROUNDING}[outtype] * 20
    assert diff <= relative * max(1.0, float(ours.abs().max()))


def test_lora_adapters_are_merged_and_the_model_left_as_it_was(bpe, tmp_path: Path) -> None:
    model = tiny_model("llama", bpe.vocab_size)
    inject_lora(model, LoRAConfig(rank=4, alpha=8.0))
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_B.normal_(0, 0.5)
    ids = bpe.encode(CORPUS)[:32]
    with torch.no_grad():
        adapted = model(torch.tensor([ids]))[0][0]
    path = export_gguf(model, bpe, tmp_path / "m.gguf", outtype="f32")
    assert lora_modules(model) and not any(m.merged for m in lora_modules(model).values())
    with torch.no_grad():
        assert torch.equal(model(torch.tensor([ids]))[0][0], adapted)
        base = merge_lora(model)  # for comparison: the file holds the merged model
        merged = base(torch.tensor([ids]))[0][0]
    torch.testing.assert_close(reference_logits(path, ids), merged, rtol=0, atol=1e-4)
    assert (adapted - merged).abs().max() < 1e-4


# -- tokenizer -----------------------------------------------------------------------------------


def rebuilt_bpe(fields: dict):
    """A ``tokenizers`` byte-level BPE made from the file's tokens, types and merges alone."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    used = {t: i for i, (t, kind) in enumerate(zip(tokens, types)) if kind != gguf.TokenType.UNUSED}
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"]]
    backend = Tokenizer(models.BPE(vocab=used, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    added = [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types)
             if kind == gguf.TokenType.CONTROL]
    backend.add_special_tokens(added)
    return backend, {t.content: tokens.index(t.content) for t in added}


def test_bpe_tokenizer_metadata(bpe, tmp_path: Path) -> None:
    model = tiny_model("gpt2", bpe.vocab_size + 3)
    fields, _ = read(export_gguf(model, bpe, tmp_path / "m.gguf"))
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(tokens) == len(types) == bpe.vocab_size + 3
    assert tokens[-3:] == [f"[PAD{i}]" for i in range(bpe.vocab_size, bpe.vocab_size + 3)]
    assert types[-3:] == [gguf.TokenType.UNUSED] * 3
    for text, i in bpe.special_tokens.items():
        assert (tokens[i], types[i]) == (text, gguf.TokenType.CONTROL)
    assert fields["tokenizer.ggml.bos_token_id"] == fields["tokenizer.ggml.eos_token_id"] == bpe.eot_id
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False
    backend, specials = rebuilt_bpe(fields)
    assert specials == bpe.special_tokens  # the ids map back to the same added tokens
    for text in TEXTS:
        assert backend.encode(text).ids == bpe.encode(text), text


def test_chat_template_renders_as_gptlab_does(bpe, tmp_path: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    fields, _ = read(export_gguf(tiny_model("llama", bpe.vocab_size), bpe, tmp_path / "m.gguf"))
    template = jinja2.Environment().from_string(fields["tokenizer.chat_template"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi\nthere"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    for generation in (True, False):
        assert template.render(messages=messages, add_generation_prompt=generation) == render_chat(messages, generation)


def test_no_chat_template_without_chatml_markers(tmp_path: Path) -> None:
    tokenizer = train_bpe_tokenizer([CORPUS], 300, special_tokens=["<|endoftext|>"])
    fields, _ = read(export_gguf(tiny_model("llama", 300), tokenizer, tmp_path / "m.gguf"))
    assert "tokenizer.chat_template" not in fields


@pytest.mark.slow  # transformers' tokenizer classes
def test_qwen2_tokenizer_gets_qwen2_pre_tokenizer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from gptlab.interop.hf_tokenizer import load_hf_tokenizer

    from .conftest import qwen2_style

    tokenizer = load_hf_tokenizer(qwen2_style(tmp_path / "tok"))
    model = tiny_model("qwen2", tokenizer.vocab_size)
    fields, _ = read(export_gguf(model, tokenizer, tmp_path / "m.gguf"))
    assert fields["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    think = tokens.index("<think>")  # an added token that is not special
    assert types[think] == gguf.TokenType.USER_DEFINED


def test_a_pipeline_llama_cpp_cannot_split_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from gptlab.interop.hf_tokenizer import load_hf_tokenizer

    from .conftest import sentencepiece_style

    tokenizer = load_hf_tokenizer(sentencepiece_style(tmp_path / "tok"))
    with pytest.raises(TokenizerError, match="llama.cpp knows no pre-tokenizer"):
        export_gguf(tiny_model("llama", tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_char_tokenizer_as_sentencepiece(tmp_path: Path) -> None:
    tokenizer = train_char_tokenizer([CORPUS])
    fields, _ = read(export_gguf(tiny_model("llama", tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf"))
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is False
    for i, c in enumerate(tokenizer.chars):
        assert (tokens[i], types[i]) == ("\u2581" if c == " " else c, gguf.TokenType.NORMAL)
    byte_ids = tokenizer.encode("\U0001f680")  # not in the corpus: four byte-fallback ids
    assert [tokens[i] for i in byte_ids] == ["<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"]
    assert {types[i] for i in byte_ids} == {gguf.TokenType.BYTE}
    for text, i in tokenizer.special_tokens.items():
        assert (tokens[i], types[i]) == (text, gguf.TokenType.CONTROL)


def test_tokenizer_larger_than_the_vocabulary_is_refused(bpe, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="embeddings"):
        export_gguf(tiny_model("llama", bpe.vocab_size - 1), bpe, tmp_path / "m.gguf")


# -- the file and the command --------------------------------------------------------------------


def test_existing_file_unknown_outtype_and_directories(bpe, tmp_path: Path) -> None:
    model = tiny_model("gpt2", bpe.vocab_size)
    path = export_gguf(model, bpe, tmp_path / "m.gguf")
    with pytest.raises(CheckpointError, match="already exists"):
        export_gguf(model, bpe, path)
    export_gguf(model, bpe, path, outtype="q8_0", overwrite=True)
    assert read(path)[0]["general.file_type"] == 7
    with pytest.raises(ConfigError, match="outtype"):
        export_gguf(model, bpe, tmp_path / "x.gguf", outtype="q4_0")
    with pytest.raises(CheckpointError, match="directory"):
        export_gguf(model, bpe, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # no temporary files left


def test_cli_exports_a_run(bpe, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model("llama", bpe.vocab_size)
    run = tmp_path / "run"
    save_checkpoint(run, model, bpe, step=1)
    out = tmp_path / "out.gguf"
    assert main(["export-gguf", str(run), str(out), "--outtype", "q8_0", "--name", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "llama.cpp architecture llama, q8_0" in printed
    fields, _ = read(out)
    assert fields["general.name"] == "tiny" and fields["general.file_type"] == 7
    assert main(["export-gguf", str(run), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err

    relu2 = GPT(preset("tiny", vocab_size=bpe.vocab_size, mlp="relu2"))
    save_checkpoint(tmp_path / "relu2", relu2, bpe, step=1)
    assert main(["export-gguf", str(tmp_path / "relu2"), str(tmp_path / "r.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gptlab export-gguf: error: mlp is 'relu2'") and "Traceback" not in err
    assert not (tmp_path / "r.gguf").exists()


def test_cli_outtypes_are_the_librarys() -> None:
    from gptlab.cli.gguf import OUTTYPES as CLI_OUTTYPES

    assert CLI_OUTTYPES == OUTTYPES


@pytest.mark.slow  # a short LoRA fine-tune
def test_cli_exports_a_lora_run_merged(bpe, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gptlab.finetune.finetuner import load_finetuned

    base = tmp_path / "base"
    save_checkpoint(base, tiny_model("llama", bpe.vocab_size), bpe, step=1)
    data = tmp_path / "data.jsonl"
    words = CORPUS.split()
    data.write_text("".join(json.dumps({"prompt": w + " =", "completion": " " + w[::-1]}) + "\n" for w in words[:40]))
    run = tmp_path / "lora"
    assert main(["finetune", str(base), "--data", str(data), "--out", str(run), "--max-steps", "4", "--lora",
                 "--lora-rank", "2", "--learning-rate", "0.05", "--batch-size", "4", "--val-fraction", "0", "--no-progress"]) == 0
    out = tmp_path / "lora.gguf"
    assert main(["export-gguf", str(run), str(out), "--outtype", "f32"]) == 0
    assert "with its LoRA adapter merged" in capsys.readouterr().out
    ids = bpe.encode(CORPUS)[:32]
    with torch.no_grad():
        adapted = load_finetuned(run).eval()(torch.tensor([ids]))[0][0]
        plain = GPT.eval(tiny_model("llama", bpe.vocab_size))(torch.tensor([ids]))[0][0]
    exported = reference_logits(out, ids)
    torch.testing.assert_close(exported, adapted, rtol=0, atol=1e-4)
    assert (exported - plain).abs().max() > 1e-2  # the adapter changed the model, and the file has it
