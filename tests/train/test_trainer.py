import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.generate.compiled import has_cpp_compiler
from gptlab.train.curves import read_metrics as read_jsonl
from gptlab.errors import CheckpointError, ConfigError, DataError
from gptlab.train.trainer import TrainConfig, build_trainer, lr_at


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        data=str(data), out=str(out), preset="tiny", tokenizer="char", block_size=32, batch_size=4, max_steps=20,
        warmup_steps=3, eval_interval=10, eval_iters=2, log_interval=1, checkpoint_interval=10,
        progress=False, sample_tokens=0, optimizer="adamw", learning_rate=3e-3, min_lr=3e-4, dropout=0.1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_jsonl(run / "metrics.jsonl") if "loss" in m]


def with_sgd(trainer):
    """Swap the trainer's optimizer for plain SGD, whose update is linear in the gradient.

    Tests comparing two ways of computing the same gradient compare weights after a step: AdamW
    divides by sqrt(v), which turns float-rounding differences in tiny gradients into lr-sized
    weight differences (and which ones depends on the CPU's vector width). With SGD a gradient
    difference of e moves the weights by lr * e, so a tight tolerance holds on any x86 CPU.
    """
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=trainer.cfg.learning_rate)
    return trainer


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr=0.1, decay="cosine", cooldown_fraction=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    values = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_schedule_can_hold_the_peak_then_decay_linearly():
    cfg = TrainConfig(max_steps=110, warmup_steps=10, learning_rate=1.0, min_lr=0.0,
                      decay="linear", cooldown_fraction=0.4)  # 100 steps after warmup: hold 60, decay 40
    assert [lr_at(s, cfg) for s in (10, 40, 70)] == [1.0, 1.0, 1.0]
    assert lr_at(90, cfg) == pytest.approx(0.5)
    assert lr_at(110, cfg) == 0.0
    with pytest.raises(ConfigError, match="cooldown_fraction"):
        TrainConfig(cooldown_fraction=0)
    with pytest.raises(ConfigError, match="decay"):
        TrainConfig(decay="exponential")


def test_train_config_validation():
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError):
        TrainConfig(min_lr=1.0, learning_rate=0.1)
    with pytest.raises(ConfigError, match="unknown training config keys"):
        TrainConfig.from_dict({"lr": 1})
    with pytest.raises(ConfigError, match="optimizer must be adamw or muon"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="windows must be epochs or random"):
        TrainConfig(windows="sequential")


def test_training_lowers_loss_and_writes_a_run(corpus_file, tmp_path):
    cfg = tiny_config(corpus_file, tmp_path / "run", max_steps=60, dropout=0.0, eval_interval=30,
                      sample_tokens=20)
    trainer = build_trainer(cfg)
    initial = trainer.evaluate()
    result = trainer.fit()
    assert result.step == 60
    assert result.val_loss < initial - 0.5
    assert math.isclose(initial, math.log(trainer.model.config.vocab_size), rel_tol=0.1)
    run = tmp_path / "run"
    assert (run / "LATEST").read_text().strip() == "ckpt-000060"
    assert (run / "loss.png").stat().st_size > 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["max_steps"] == 60
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 61))
    assert all(m["tokens_per_s"] > 0 for m in metrics if "loss" in m)
    assert isinstance(result.sample, str) and len(result.sample) > 0


def test_existing_run_is_not_overwritten(corpus_file, tmp_path):
    build_trainer(tiny_config(corpus_file, tmp_path / "run", max_steps=2)).fit()
    with pytest.raises(CheckpointError, match="--resume"):
        build_trainer(tiny_config(corpus_file, tmp_path / "run", max_steps=2))


def test_corpus_shorter_than_one_window_is_an_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n" * 2)
    with pytest.raises(DataError, match="shorter than one window"):
        build_trainer(tiny_config(short, tmp_path / "run"))


class FixedBatches:
    """Feeds the trainer predetermined batches, so two set-ups see exactly the same windows."""

    def __init__(self, batches):
        self.batches = list(batches)

    def next_batch(self):
        return self.batches.pop(0)

    def state_dict(self):
        return {}


def test_gradient_accumulation_matches_a_big_batch(corpus_file, tmp_path):
    big = with_sgd(build_trainer(tiny_config(corpus_file, tmp_path / "a", batch_size=8, dropout=0.0)))
    small = with_sgd(build_trainer(tiny_config(corpus_file, tmp_path / "b", batch_size=4, grad_accum=2, dropout=0.0)))
    x, y = big.sampler.next_batch()
    big.sampler = FixedBatches([(x, y)])
    small.sampler = FixedBatches([(x[:4], y[:4]), (x[4:], y[4:])])
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.equal(a, b)
    big.fit(steps=1)
    small.fit(steps=1)
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("optimizer, preset, windows", [
    ("adamw", "tiny", "random"), ("muon", "tiny", "random"), ("muon", "llama-tiny", "random"),
    ("adamw", "tiny", "epochs"),
])
def test_resume_in_process_is_bit_identical(corpus_file, tmp_path, optimizer, preset, windows):
    settings = dict(optimizer=optimizer, preset=preset, windows=windows)
    full = build_trainer(tiny_config(corpus_file, tmp_path / "full", **settings))
    full.fit()
    part = build_trainer(tiny_config(corpus_file, tmp_path / "part", **settings))
    part.fit(steps=10)
    assert part.sampler.order == windows
    del part
    resumed = build_trainer(tiny_config(corpus_file, tmp_path / "part", **settings), resume=True)
    assert resumed.step == 10
    resumed.fit()
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_losses(corpus_file, tmp_path, kill_at_first_checkpoint):
    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "gptlab", "train", "--data", str(corpus_file), "--out", str(out),
                "--preset", "tiny", "--tokenizer", "char", "--block-size", "32", "--batch-size", "4", "--max-steps", "60",
                "--warmup-steps", "5", "--eval-interval", "25", "--eval-iters", "2", "--log-interval", "1",
                "--checkpoint-interval", "5", "--dropout", "0.1", "--no-progress", "--sample-tokens", "0",
                *extra]

    # the uninterrupted run goes on beside the killed one and its resumption (their own processes:
    # the same losses however they share the machine)
    log = tmp_path / "full.log"
    with open(log, "w") as out, subprocess.Popen(command(tmp_path / "full"), stdout=out, stderr=out) as full:
        killed_at = kill_at_first_checkpoint(command(tmp_path / "killed"), tmp_path / "killed", "training")
        assert 0 < killed_at < 60
        subprocess.run(command(tmp_path / "killed", "--resume"), check=True, capture_output=True)
        assert full.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert len(losses(tmp_path / "full")) == 60
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")


def test_default_run_dir_never_reuses_a_run(tmp_path, monkeypatch):
    from gptlab.train.trainer import default_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="somewhere/corpus.txt")
    assert default_run_dir(cfg) == Path("runs/corpus")
    assert default_run_dir(TrainConfig()) == Path("runs/python-stdlib")
    for name in ("corpus", "corpus-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "LATEST").write_text("ckpt-000001\n")
    assert default_run_dir(cfg) == Path("runs/corpus-3")
    assert default_run_dir(cfg, resume=True) == Path("runs/corpus-2")


@pytest.mark.slow
@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_training_matches_eager_and_saves_a_plain_checkpoint(corpus_file, tmp_path):
    """torch.compile is the default on CUDA; on CPU it runs the same code path through inductor."""
    from gptlab.train.checkpoint import load_checkpoint

    settings = {"max_steps": 4, "eval_interval": 4, "checkpoint_interval": 4, "dropout": 0.0}
    # SGD: compiled kernels round differently; AdamW would magnify that into lr-sized weight steps
    eager = with_sgd(build_trainer(tiny_config(corpus_file, tmp_path / "eager", compile=False, **settings)))
    compiled = with_sgd(build_trainer(tiny_config(corpus_file, tmp_path / "compiled", compile=True, **settings)))
    assert compiled.forward_model is not compiled.wrapped  # really compiled
    eager.fit()
    compiled.fit()
    assert len(losses(tmp_path / "compiled")) == 4
    torch.testing.assert_close(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), rtol=1e-4, atol=1e-4)
    saved = load_checkpoint(tmp_path / "compiled").model.state_dict()
    assert saved.keys() == eager.model.state_dict().keys()  # no "_orig_mod." prefixes
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(saved[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("preset, block_size", [("tiny", 32), ("llama-tiny", 256)])  # 256: blocked attention's range
def test_bf16_autocast_training_keeps_fp32_weights_and_tracks_fp32_losses(corpus_file, tmp_path, preset, block_size):
    """bf16 autocast is the CUDA default; on CPU the same code path runs and can be checked. The
    Llama shape at context 256 is the one where fp32 training takes the blocked attention."""
    from gptlab.train.checkpoint import load_checkpoint

    settings = {"max_steps": 6, "eval_interval": 6, "checkpoint_interval": 6, "dropout": 0.0,
                "preset": preset, "block_size": block_size}
    fp32 = build_trainer(tiny_config(corpus_file, tmp_path / "fp32", dtype="float32", **settings))
    bf16 = build_trainer(tiny_config(corpus_file, tmp_path / "bf16", dtype="bfloat16", **settings))
    fp32.fit()
    bf16.fit()
    assert len(losses(tmp_path / "bf16")) == 6
    torch.testing.assert_close(losses(tmp_path / "bf16"), losses(tmp_path / "fp32"), rtol=2e-2, atol=0.0)
    assert losses(tmp_path / "bf16") != losses(tmp_path / "fp32")  # autocast really ran in bf16
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    saved = load_checkpoint(tmp_path / "bf16").model
    assert all(p.dtype == torch.float32 for p in saved.parameters())


def test_model_fields_over_the_preset(corpus_file, tmp_path):
    cfg = tiny_config(corpus_file, tmp_path / "run", preset="llama-tiny", max_steps=2,
                      model={"mlp": "relu2", "qk_norm": True, "n_kv_head": 1})
    trainer = build_trainer(cfg)
    model_cfg = trainer.model.config
    assert (model_cfg.mlp, model_cfg.qk_norm, model_cfg.kv_heads, model_cfg.norm) == ("relu2", True, 1, "rmsnorm")
    trainer.fit()
    assert TrainConfig.from_dict(cfg.to_dict()).model == cfg.model  # saved with the run, resumable
    with pytest.raises(ConfigError, match="unknown model config keys: mlpx"):
        tiny_config(corpus_file, tmp_path / "bad", model={"mlpx": 1})
    with pytest.raises(ConfigError, match="unknown model config keys: vocab_size"):
        tiny_config(corpus_file, tmp_path / "bad", model={"vocab_size": 10})
    with pytest.raises(ConfigError, match="mlp must be one of"):
        tiny_config(corpus_file, tmp_path / "bad", model={"mlp": "geglu"})
