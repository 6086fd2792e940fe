"""Data-parallel training on CPU: 2 processes with the gloo backend, launched by torchrun.

DDP with a global batch of B follows the same loss curve as one process with batch B; FSDP2
follows DDP, with AdamW and with Muon; a run saved by 2 processes resumes in 1 and continues the
single-process curve.
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

# Each 2-process run below is a job of one torchrun launch: starting torchrun and its workers
# (three Python processes importing torch) and forming the gloo group is most of a small run's time,
# so the runs share it. The jobs run one after the other in the same group; a job that fails ends
# the launch, and its test (and those of the jobs after it) shows the workers' error.
DRIVER = """
import gc, json, sys
from gptlab.train import distributed
from gptlab.train.trainer import build_trainer
from gptlab.train.config import TrainConfig
context = None
for job in json.loads(sys.argv[1]):
    trainer = build_trainer(TrainConfig.from_dict(job["cfg"]), resume=job["resume"])
    trainer.fit(steps=job["steps"] or None)
    context = trainer.dist
    del trainer
    gc.collect()  # the run's lock goes with its trainer
    if context.is_main:
        print("done", job["name"], flush=True)
distributed.shutdown(context)
"""


def settings(data: Path, out: Path, **extra) -> dict:
    return {
        "data": str(data), "tokenizer": "char", "preset": "tiny", "n_embd": 32, "block_size": 32,
        "batch_size": 8, "grad_accum": 2, "max_steps": 8, "warmup_steps": 2, "log_interval": 1,
        "eval_interval": 100, "eval_iters": 2, "checkpoint_interval": 100, "progress": False,
        "sample_tokens": 0, "device": "cpu", "dropout": 0.0, "out": str(out), "optimizer": "adamw", **extra,
    }


def torchrun(workdir: Path, jobs: list[dict], nproc: int = 2) -> tuple[set[str], str]:
    """Run ``jobs`` (name, cfg, steps, resume) in order on ``nproc`` processes; the names of those
    that finished, and the launch's stderr."""
    driver = workdir / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--standalone", str(driver), json.dumps(jobs)]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # its own group: a hang is killed whole
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    done = {line.split()[1] for line in stdout.splitlines() if line.startswith("done ")}
    return done, f"torchrun exited with {proc.returncode}:\n{stderr[-3000:]}"


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


@pytest.fixture(scope="module")
def launched(single):
    """The 2-process runs of the tests below, in one torchrun launch: a function that gives a
    job's run directory, or fails with the launch's error when that job did not finish."""
    base, _ = single
    data = base / "corpus.txt"
    grow = settings(data, base / "grow")
    build_trainer(TrainConfig.from_dict(grow)).fit(steps=3)  # saved by one process, resumed on two
    jobs = [
        {"name": "ddp", "cfg": settings(data, base / "ddp"), "steps": 0, "resume": False},
        {"name": "ddp-muon", "cfg": settings(data, base / "ddp-muon", optimizer="muon"), "steps": 0, "resume": False},
        {"name": "grow", "cfg": grow, "steps": 0, "resume": True},
        # stopped half way: a checkpoint gathered from both ranks
        {"name": "fsdp", "cfg": settings(data, base / "fsdp", fsdp=True), "steps": 4, "resume": False},
        {"name": "fsdp-llama", "cfg": settings(data, base / "fsdp-llama", fsdp=True, **LLAMA), "steps": 0,
         "resume": False},
        # Muon over sharded matrices, stopped half way: the momentum is gathered into the checkpoint
        {"name": "fsdp-muon", "cfg": settings(data, base / "fsdp-muon", fsdp=True, optimizer="muon", **LLAMA),
         "steps": 4, "resume": False},
    ]
    done, error = torchrun(base, jobs)

    def run_dir(name: str) -> Path:
        assert name in done, f"the 2-process job {name!r} did not finish; {error}"
        return base / name

    return run_dir


LLAMA = {"preset": "llama-tiny", "n_embd": 32}


def test_ddp_matches_one_process_with_the_same_global_batch(single, launched):
    _, expected = single
    got = losses(launched("ddp"))
    assert len(got) == len(expected) == 8
    assert got == pytest.approx(expected, rel=1e-4)


def test_ddp_with_muon_matches_one_process(single, launched, tmp_path):
    base, _ = single
    one = tmp_path / "one"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", one, optimizer="muon"))).fit()
    assert losses(launched("ddp-muon")) == pytest.approx(losses(one), rel=1e-4)


def test_fsdp_matches_ddp_and_resumes_on_one_process(single, launched):
    base, expected = single
    run = launched("fsdp")
    ckpt = run / "ckpt-000004"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "optimizer.safetensors").exists()
    assert losses(run) == pytest.approx(expected[:4], rel=1e-4)
    one = TrainConfig.from_dict(settings(base / "corpus.txt", run, fsdp=False))
    build_trainer(one, resume=True).fit()  # the other half in a single process
    assert losses(run) == pytest.approx(expected, rel=1e-4)


def test_fsdp_trains_the_llama_shape_as_one_process_does(single, launched, tmp_path):
    base, _ = single
    one = tmp_path / "one"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", one, **LLAMA))).fit()
    assert losses(launched("fsdp-llama")) == pytest.approx(losses(one), rel=1e-4)


def test_fsdp_with_muon_matches_one_process_and_resumes_on_one(single, launched, tmp_path):
    base, _ = single
    one = tmp_path / "one"
    build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", one, optimizer="muon", **LLAMA))).fit()
    expected = losses(one)
    run = launched("fsdp-muon")
    assert losses(run) == pytest.approx(expected[:4], rel=1e-4)
    again = TrainConfig.from_dict(settings(base / "corpus.txt", run, optimizer="muon", **LLAMA))
    build_trainer(again, resume=True).fit()  # the other half in one process, from the gathered momentum
    assert losses(run) == pytest.approx(expected, rel=1e-4)


def test_fsdp_without_torchrun_is_a_config_error(single, tmp_path):
    from gptlab.errors import ConfigError

    base, _ = single
    with pytest.raises(ConfigError, match="torchrun"):
        build_trainer(TrainConfig.from_dict(settings(base / "corpus.txt", tmp_path / "x", fsdp=True)))


def test_a_run_saved_by_one_process_resumes_on_two(single, launched):
    _, expected = single
    assert losses(launched("grow")) == pytest.approx(expected, rel=1e-4)
