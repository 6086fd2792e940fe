import json

import pytest

from gptlab.cli.main import main
from gptlab.model.config import PRESETS, GPTConfig, preset
from gptlab.model.count import TrainingCost, count_config, parse_quantity
from gptlab.errors import ConfigError
from gptlab.train.gpus import GPUS, get_gpu

TINY_CONFIGS = [
    GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=8),
    GPTConfig(vocab_size=50, block_size=7, n_layer=3, n_head=3, n_embd=12, bias=False),
    GPTConfig(vocab_size=11, block_size=5, n_layer=1, n_head=1, n_embd=4),
]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_gpt2_exact():
    c = count_config(preset("gpt2"))
    assert c.parameters == 124_439_808  # with tied embeddings
    assert c.without_position_embeddings == 124_439_808 - 1024 * 768
    assert c.trainable == c.parameters
    assert c.neurons == 82_944
    assert c.non_embedding == 85_056_000
    assert c.forward_flops_per_token == 2 * 85_056_000 + 2 * 12 * 1024 * 768
    assert c.training_flops_per_token == 3 * c.forward_flops_per_token


def test_gpt3_175b():
    c = count_config(preset("gpt3-175b"))
    assert c.neurons == 96 * (49_152 + 61_440) == 10_616_832
    assert c.parameters == pytest.approx(175e9, rel=0.005)
    assert c.training_flops_per_token == pytest.approx(6 * c.non_embedding, rel=0.02)
    assert c.memory_bytes("fp32")["weights"] == 4 * c.parameters
    assert c.memory_bytes("bf16")["training_total"] == 8 * c.parameters


@pytest.mark.parametrize("cfg", TINY_CONFIGS, ids=["bias", "no-bias", "one-layer"])
def test_matches_the_instantiated_model(cfg):
    from gptlab.model.gpt import GPT

    model = GPT(cfg)
    c = count_config(cfg)
    assert c.parameters == sum(p.numel() for p in model.parameters())
    assert c.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert c.position_embeddings == model.transformer.wpe.weight.numel()
    linear_outputs = sum(
        m.out_features
        for name, m in model.named_modules()
        if isinstance(m, __import__("torch").nn.Linear) and ".h." in f".{name}"
    )
    assert c.neurons == linear_outputs


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("cfg", [TINY_CONFIGS[0], GPTConfig(
    vocab_size=40, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, norm="rmsnorm", positions="rotary",
    mlp="swiglu", mlp_hidden=24, bias=False, qk_norm=True, tie_embeddings=False)], ids=["gpt2", "qwen3"])
def test_optimizer_memory_is_the_real_optimizer_state(cfg, optimizer):
    """The state bytes `gptlab count` prints equal what the Trainer's optimizer holds after one step."""
    import torch

    from gptlab.model.gpt import GPT
    from gptlab.train.trainer import TrainConfig, make_optimizer

    model = GPT(cfg)
    opt = make_optimizer(model, TrainConfig(optimizer=optimizer), torch.device("cpu"))
    x = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    model(x, x)[1].backward()
    opt.step()
    held = sum(v.numel() * v.element_size() for state in opt.state.values()
               for v in state.values() if torch.is_tensor(v) and v.dim() > 0)  # moments, not step counters
    key = "adamw_state" if optimizer == "adamw" else "muon_state"
    assert count_config(cfg).memory_bytes("fp32")[key] == held


def test_matches_hugging_face_gpt2():
    cfg = TINY_CONFIGS[0]
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.block_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
        )
    )
    assert count_config(cfg).parameters == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_counts_instantly(name):
    c = count_config(preset(name))
    learned = c.config.positions == "learned"
    assert c.parameters - c.without_position_embeddings == (c.config.block_size * c.config.n_embd if learned else 0)
    assert c.without_position_embeddings > c.non_embedding > 0


def test_training_cost_gpt3_example():
    cost = TrainingCost(
        params=175e9, tokens=300e9, peak_flops_per_second=28e12, utilization=1.0, price_per_hour=1.5
    )
    assert cost.flops == pytest.approx(3.15e23)
    assert cost.gpu_hours == pytest.approx(3_125_000)
    assert cost.gpu_years == pytest.approx(356.7, abs=0.05)
    assert cost.gpu_years == pytest.approx(355, rel=0.01)  # the figure the seeds quote
    assert cost.dollars == pytest.approx(4_687_500)
    assert cost.dollars == pytest.approx(4.6e6, rel=0.02)  # the seeds' "$4.6M"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": 0},
        {"tokens": -1},
        {"utilization": 0},
        {"utilization": 1.2},
        {"price_per_hour": 0},
        {"peak_flops_per_second": float("nan")},
    ],
)
def test_training_cost_rejects_bad_figures(kwargs):
    figures = {
        "params": 1e9,
        "tokens": 1e9,
        "peak_flops_per_second": 1e12,
        "utilization": 0.5,
        "price_per_hour": None,
    }
    with pytest.raises(ConfigError):
        TrainingCost(**{**figures, **kwargs})


def test_parse_quantity():
    assert parse_quantity("175e9") == parse_quantity("175B") == parse_quantity("175_000_000_000") == 175e9
    assert parse_quantity("1.5T") == 1.5e12 and parse_quantity("7m") == 7e6
    for bad in ("", "abc", "-5", "0", "inf", "nan", "5X"):
        with pytest.raises(ConfigError):
            parse_quantity(bad)


def test_gpu_table():
    assert set(GPUS) == {"v100", "a100", "h100", "h200"}
    assert get_gpu("H100").peak_tflops == 989 and get_gpu("a100").peak_tflops == 312
    assert get_gpu("v100").precision == "fp16"
    with pytest.raises(ConfigError, match="unknown GPU"):
        get_gpu("tpu")


def test_count_cli(capsys):
    code, out, err = run(capsys, "count", "gpt2")
    assert code == 0, err
    for text in (
        "124,439,808",
        "123,653,376",
        "82,944",
        "188,986,368",
        "566,959,104",
        "2·N + 2·n_layer·n_ctx·n_embd",
    ):
        assert text in out
    code, out, _ = run(capsys, "count", "gpt3-175b")
    assert "10,616,832" in out and "49,152" in out and "61,440" in out
    code, out, _ = run(capsys, "count", "gpt2", "--json")
    data = json.loads(out)
    assert data["parameters"] == 124_439_808 and data["neurons"] == 82_944
    code, out, _ = run(capsys, "count", "--list")
    assert code == 0 and all(name in out for name in PRESETS)


def test_count_a_checkpoint(tmp_path, capsys, corpus_text):
    from gptlab.train.checkpoint import save_checkpoint
    from gptlab.model.gpt import GPT
    from gptlab.data.tokenizer import train_char_tokenizer

    tokenizer = train_char_tokenizer([corpus_text])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "run", model, tokenizer, step=3)
    code, out, err = run(capsys, "count", str(tmp_path / "run"))
    assert code == 0, err
    assert out.startswith(f"checkpoint {tmp_path / 'run'}: 2 layers")
    code, out, err = run(capsys, "count", str(tmp_path / "run"), "--json")
    assert json.loads(out)["parameters"] == sum(p.numel() for p in model.parameters())


def test_cost_cli_gpt3(capsys):
    code, out, err = run(
        capsys, "cost", "--params", "175e9", "--tokens", "300e9", "--gpu", "28", "--price-per-hour", "1.5"
    )
    assert code == 0, err
    assert "3.150e+23 FLOPs" in out and "356.7 GPU-years" in out and "$4,687,500" in out
    assert "utilization       100%" in out and "6·N" in out
    example = run(capsys, "cost")[1]  # no figures: the same GPT-3 example, its figures labelled so
    assert example.split("Estimate")[1] == out.split("Estimate")[1]


def test_cost_cli_named_gpu_and_preset(capsys):
    code, out, err = run(capsys, "cost", "--params", "gpt2", "--tokens", "10B", "--gpu", "h100")
    assert code == 0, err
    assert "124,439,808" in out and "989 TFLOPS" in out and "40%" in out and "not given" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["count", "gpt5"], "neither a preset"),
        (["count", "."], "not a gptlab run or checkpoint"),
        (["cost", "--params", "1e9"], "both --params and --tokens"),
        (["cost", "--params", "-1", "--tokens", "1e9"], "--params must be a positive"),
        (["cost", "--params", "1e9", "--tokens", "0"], "--tokens must be a positive"),
        (["cost", "--params", "1e9", "--tokens", "lots"], "--tokens is not a number"),
        (["cost", "--params", "1e9", "--tokens", "1e9", "--gpu", "tpu"], "unknown GPU"),
        (["cost", "--params", "1e9", "--tokens", "1e9", "--gpu", "0"], "--gpu must be a positive"),
        (["cost", "--params", "1e9", "--tokens", "1e9", "--utilization", "0"], "--utilization"),
        (["cost", "--params", "1e9", "--tokens", "1e9", "--price-per-hour", "-2"], "--price-per-hour"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and fragment in lines[0], err


def test_mfu_peak_is_known_only_for_the_gpus_in_the_table():
    from gptlab.train.gpus import peak_flops_for_name, peak_flops_of

    assert peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for_name("NVIDIA A100 80GB PCIe") == 312e12
    assert peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_name("NVIDIA H200") == 989e12
    for unknown in ("NVIDIA H100 PCIe", "NVIDIA GeForce RTX 4090", "Tesla T4"):
        assert peak_flops_for_name(unknown) is None  # said to be unknown, never guessed
    import torch

    assert peak_flops_of(torch.device("cpu")) is None
