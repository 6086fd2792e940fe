"""Data-parallel training on CPU: 2 processes with the gloo backend, launched by torchrun.

DDP with a global batch of B follows the same loss curve as one process with batch B; FSDP2
follows DDP; a run saved by 2 processes resumes in 1 and continues the single-process curve.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptlab.train.trainer import build_trainer
from gptlab.train.config import TrainConfig

pytestmark = pytest.mark.slow

DRIVER = """
import json, sys
from gptlab.train import distributed
from gptlab.train.trainer import build_trainer
from gptlab.train.config import TrainConfig
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
trainer = build_trainer(cfg, resume=sys.argv[3] == "1")
trainer.fit(steps=int(sys.argv[2]) or None)
distributed.shutdown(trainer.dist)
"""


def settings(data: Path, out: Path, **extra) -> dict:
    return {
        "data": str(data), "tokenizer": "char", "preset": "tiny", "n_embd": 32, "block_size": 32,
        "batch_size": 8, "grad_accum": 2, "max_steps": 8, "warmup_steps": 2, "log_interval": 1,
        "eval_interval": 100, "eval_iters": 2, "checkpoint_interval": 100, "progress": False,
        "sample_tokens": 0, "device": "cpu", "dropout": 0.0, "out": str(out), "optimizer": "adamw", **extra,
    }


def torchrun(tmp_path: Path, cfg: dict, steps: int = 0, resume: bool = False, nproc: int = 2) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--standalone", str(driver), json.dumps(cfg), str(steps), "1" if resume else "0"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # its own group: a hang is killed whole
        try:
            _, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, stderr[-3000:]


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus_text):
    base = tmp_path_factory.mktemp("dist")
    (base / "corpus.txt").write_text(corpus_text)
    run = base / "single"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", run))).fit()
    return base, losses(run)


def test_ddp_matches_one_process_with_the_same_global_batch(single, tmp_path):
    base, expected = single
    torchrun(tmp_path, settings(base / "corpus.txt", tmp_path / "ddp"))
    got = losses(tmp_path / "ddp")
    assert len(got) == len(expected) == 8
    assert got == pytest.approx(expected, rel=1e-4)


def test_ddp_with_muon_matches_one_process(single, tmp_path):
    base, _ = single
    one = tmp_path / "one"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", one, optimizer="muon"))).fit()
    torchrun(tmp_path, settings(base / "corpus.txt", tmp_path / "ddp", optimizer="muon"))
    assert losses(tmp_path / "ddp") == pytest.approx(losses(one), rel=1e-4)


def test_fsdp_matches_ddp_and_resumes_on_one_process(single, tmp_path):
    base, expected = single
    cfg = settings(base / "corpus.txt", tmp_path / "fsdp", fsdp=True)
    torchrun(tmp_path, cfg, steps=4)  # stop half way: a checkpoint gathered from both ranks
    ckpt = tmp_path / "fsdp" / "ckpt-000004"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "optimizer.safetensors").exists()
    assert losses(tmp_path / "fsdp") == pytest.approx(expected[:4], rel=1e-4)
    one = TrainConfig.from_dict({**cfg, "fsdp": False})
    build_trainer(one, resume=True).fit()  # the other half in a single process
    assert losses(tmp_path / "fsdp") == pytest.approx(expected, rel=1e-4)


def test_fsdp_trains_the_llama_shape_as_one_process_does(single, tmp_path):
    base, _ = single
    shape = {"preset": "llama-tiny", "n_embd": 32}
    one = tmp_path / "one"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", one, **shape))).fit()
    torchrun(tmp_path, settings(base / "corpus.txt", tmp_path / "fsdp", fsdp=True, **shape))
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(one), rel=1e-4)


def test_fsdp_without_torchrun_is_a_config_error(single, tmp_path):
    from gptlab.errors import ConfigError

    base, _ = single
    with pytest.raises(ConfigError, match="torchrun"):
        build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", tmp_path / "x", fsdp=True)))


def test_a_run_saved_by_one_process_resumes_on_two(single, tmp_path):
    base, expected = single
    cfg = settings(base / "corpus.txt", tmp_path / "grow")
    build_trainer(TrainConfig.from_dict(cfg)).fit(steps=3)
    torchrun(tmp_path, cfg, resume=True)
    assert losses(tmp_path / "grow") == pytest.approx(expected, rel=1e-4)
