"""Fault injection for fine-tuning runs: a second writer, a signal, a damaged config, a full disk.

The checkpoint machinery is pre-training's (``tests/train/test_faults.py`` covers it in depth);
these check that a fine-tuning run, LoRA included, holds the same guarantees.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.cli.main import main
from gptlab.data.tokenizer import train_char_tokenizer
from gptlab.errors import CheckpointError
from gptlab.finetune import lora as lora_module
from gptlab.finetune.config import FinetuneConfig, LoRAConfig
from gptlab.finetune.finetuner import build_finetuner
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT
from gptlab.train.checkpoint import find_checkpoint, save_checkpoint
from gptlab.train.curves import read_metrics

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    tokenizer = train_char_tokenizer("abcdefgh=\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                          dropout=0.1))
    return save_checkpoint(tmp_path_factory.mktemp("base") / "run", model, tokenizer, step=0).parent


@pytest.fixture
def data(tmp_path) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 7))) for _ in range(40)]
    path = tmp_path / "reverse.jsonl"
    path.write_text("".join(json.dumps({"prompt": w + "=", "completion": w[::-1]}) + "\n" for w in words))
    return path


def ft_config(base: Path, data: Path, out: Path, **overrides) -> FinetuneConfig:
    settings = {"base": str(base), "data": str(data), "out": str(out), "batch_size": 4, "max_steps": 10,
                "warmup_steps": 2, "eval_interval": 100, "log_interval": 1, "checkpoint_interval": 4,
                "progress": False, "learning_rate": 3e-3, "val_fraction": 0.2, "lora": LoRAConfig(rank=2, dropout=0.1)}
    settings.update(overrides)
    return FinetuneConfig(**settings)


def losses(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


def test_a_second_writer_of_a_finetuning_run_is_refused(base, data, tmp_path):
    out = tmp_path / "run"
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('run_lock', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "lock = m.lock_run(sys.argv[2]); print('locked', flush=True); input()\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(SRC / "gptlab" / "train" / "lock.py"), str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=f"PID {holder.pid}"):
            build_finetuner(ft_config(base, data, out))
    finally:
        holder.kill()
        holder.wait()
    assert build_finetuner(ft_config(base, data, out)).fit().step == 10


def test_sigterm_saves_a_lora_run_and_resuming_is_bit_identical(base, data, tmp_path):
    full = build_finetuner(ft_config(base, data, tmp_path / "full"))
    full.fit()
    out = tmp_path / "stopped"
    tuner = build_finetuner(ft_config(base, data, out))
    log_record = tuner._log

    def log_then_signal(record):
        log_record(record)
        if record.get("step") == 5 and "loss" in record:
            signal.raise_signal(signal.SIGTERM)  # to this thread, handled before it returns

    tuner._log = log_then_signal
    result = tuner.fit()
    assert (result.stopped_by, result.step) == (signal.SIGTERM, 5)
    assert find_checkpoint(out).name == "ckpt-000005" and (out / "adapter-000005").is_dir()
    del tuner
    resumed = build_finetuner(ft_config(base, data, out), resume=True)
    resumed.fit()
    assert losses(out) == losses(tmp_path / "full")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_damaged_finetune_config_is_recovered_from_the_checkpoint(base, data, tmp_path, caplog):
    out = tmp_path / "run"
    build_finetuner(ft_config(base, data, out, max_steps=4)).fit()
    path = out / "finetune_config.json"
    path.write_bytes(path.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        assert main(["finetune", "--data", str(data), "--out", str(out), "--resume", "--max-steps", "6"]) == 0
    assert "using the settings recorded in ckpt-000004" in caplog.text
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_while_saving_an_adapter_is_one_line(base, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    tuner = build_finetuner(ft_config(base, data, out))
    tuner.fit(steps=4)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lora_module, "save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"could not save adapter-000008 \(the disk is full\); "
                                              r"the last good checkpoint, ckpt-000004, is kept"):
        tuner.fit()
    assert not list(out.glob(".adapter-*"))
