"""Fault injection: a second writer, signals, kill -9, damaged files, a full disk.

Each test names the problem of issue 16 it covers. The damage is real (bytes flipped, files cut or
removed, processes killed); the one injected fault is the full disk, an ``OSError(ENOSPC)`` raised
by the checkpoint writer in place of a real one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab.cli.main import main
from gptlab.errors import CheckpointError, ConfigError
from gptlab.train import checkpoint as checkpoint_module
from gptlab.train import precision
from gptlab.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from gptlab.train.config import TrainConfig
from gptlab.train.curves import read_metrics
from gptlab.train.lock import LOCK_FILE, lock_run
from gptlab.train.trainer import build_trainer

SRC = str(Path(__file__).resolve().parents[2] / "src")


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        data=str(data), out=str(out), preset="tiny", tokenizer="char", block_size=32, batch_size=4, max_steps=6,
        warmup_steps=2, eval_interval=6, eval_iters=2, log_interval=1, checkpoint_interval=2,
        progress=False, sample_tokens=0, optimizer="adamw", learning_rate=3e-3, min_lr=3e-4, dropout=0.1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.fixture
def run(corpus_file, tmp_path) -> Path:
    """A finished 6-step run with checkpoints at steps 2, 4 and 6."""
    build_trainer(tiny_config(corpus_file, tmp_path / "run")).fit()
    return tmp_path / "run"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


# gptlab.train.lock on its own (its package would import torch: seconds per process on a busy machine)
LOCK_MODULE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
lock_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_module)
"""
LOCK_PY = str(Path(SRC) / "gptlab" / "train" / "lock.py")


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the run's lock and keeps it (as a running trainer would)."""
    code = LOCK_MODULE + "lock = lock_module.lock_run(sys.argv[2]); print('locked', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code, LOCK_PY, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env(), text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def try_lock(run_dir: Path) -> subprocess.CompletedProcess:
    code = LOCK_MODULE + "lock_module.lock_run(sys.argv[2])"
    return subprocess.run([sys.executable, "-c", code, LOCK_PY, str(run_dir)], env=env(), capture_output=True,
                          text=True)


# ---------------------------------------------------------------------------------------------
# 1. one writer per run


def test_a_second_writer_is_refused_naming_the_holder_and_kill_9_leaves_no_stale_lock(corpus_file, tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(CheckpointError, match=f"another gptlab process \\(PID {holder.pid}\\)"):
            build_trainer(tiny_config(corpus_file, out))
        assert (out / LOCK_FILE).exists() and not (out / "metrics.jsonl").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()
    trainer = build_trainer(tiny_config(corpus_file, out, max_steps=2))  # the kernel dropped the lock
    trainer.fit()
    del trainer
    holder = hold_lock(out)  # the same holds for --resume
    try:
        with pytest.raises(CheckpointError, match=f"PID {holder.pid}"):
            build_trainer(tiny_config(corpus_file, out, max_steps=4), resume=True)
    finally:
        holder.kill()
        holder.wait()
    assert build_trainer(tiny_config(corpus_file, out, max_steps=4), resume=True).step == 2


def test_the_lock_is_shared_inside_one_process_and_released_with_its_trainer(corpus_file, tmp_path):
    first = lock_run(tmp_path / "run")
    assert lock_run(tmp_path / "run") is first
    first.release()
    second = lock_run(tmp_path / "run")
    assert second is not first and second.held
    refused = try_lock(tmp_path / "run")
    assert refused.returncode != 0 and f"PID {os.getpid()}" in refused.stderr
    del second  # garbage collected: the kernel drops the lock
    assert try_lock(tmp_path / "run").returncode == 0


def test_prune_removes_only_leftovers_whose_writer_is_gone(run, tmp_path):
    ckpt = load_checkpoint(run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = {
            "dead": run / f".ckpt-000008.tmp-{gone.pid}-abc",
            "live": run / f".ckpt-000008.tmp-{alive.pid}-def",
            "mine": run / f".ckpt-000008.old-{os.getpid()}",
        }
        for path in leftovers.values():
            path.mkdir()
            (path / "model.safetensors").write_bytes(b"partial")
        save_checkpoint(run, ckpt.model, ckpt.tokenizer, step=8)
        assert leftovers["live"].exists()  # another live writer's folder is never touched
        assert not leftovers["dead"].exists() and not leftovers["mine"].exists()
    finally:
        alive.kill()
        alive.wait()


# ---------------------------------------------------------------------------------------------
# 2. a checkpoint history, and the newest intact one for every reader


def test_the_run_keeps_three_checkpoints_and_readers_fall_back_past_a_damaged_one(run, caplog, capsys):
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000002", "ckpt-000004", "ckpt-000006"]
    damaged = run / "ckpt-000006" / "model.safetensors"
    flip_byte(damaged)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(run).path.name == "ckpt-000004"
    assert str(damaged) in warnings_of(caplog) and "ckpt-000004 instead" in warnings_of(caplog)
    caplog.clear()
    assert main(["sample", str(run), "--max-new-tokens", "3", "--seed", "0"]) == 0
    assert str(damaged) in warnings_of(caplog)
    caplog.clear()
    assert main(["export-hf", str(run), str(run.parent / "exported")]) == 0
    assert str(damaged) in warnings_of(caplog)


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_repeats_the_lost_steps(run, corpus_file, caplog):
    before = losses(run)
    flip_byte(run / "ckpt-000006" / "optimizer.safetensors")
    with caplog.at_level(logging.WARNING):
        resumed = build_trainer(tiny_config(corpus_file, run), resume=True)
    assert resumed.step == 4 and "optimizer.safetensors" in warnings_of(caplog)
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]  # the log went back with the weights
    resumed.fit()
    assert losses(run) == before  # steps 5 and 6 again, bit for bit
    assert load_checkpoint(run, with_optimizer=True).path.name == "ckpt-000006"  # replaced by an intact one


def test_when_every_checkpoint_is_damaged_the_error_names_the_newest(run):
    for step in (2, 4, 6):
        flip_byte(run / f"ckpt-{step:06d}" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"ckpt-000006/model.safetensors: checksum mismatch.*no older"):
        load_checkpoint(run)


# ---------------------------------------------------------------------------------------------
# 3. damaged side files: recovered or one line, never a traceback


@pytest.mark.parametrize("content", [b"\xff\xfe\x00ckpt", b"", b"  \n", b"ckpt-000099\n", b"../../etc\n"],
                         ids=["not-utf8", "empty", "blank", "missing-folder", "a-path"])
def test_a_damaged_latest_falls_back_to_the_newest_folder(run, caplog, content):
    (run / "LATEST").write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(run).path.name == "ckpt-000006"
    assert "LATEST" in warnings_of(caplog)
    assert main(["sample", str(run), "--max-new-tokens", "2", "--seed", "0"]) == 0


def test_a_damaged_latest_with_nothing_to_fall_back_to_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "LATEST").write_bytes(b"")
    with pytest.raises(CheckpointError, match="LATEST is empty, and the run has no checkpoint folder"):
        load_checkpoint(run)
    (run / "LATEST").write_bytes(b"\xff\xfe")
    assert main(["sample", str(run)]) == 1
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", [lambda t: t[: len(t) // 2], lambda t: b"\xff" + t, lambda t: b"[1, 2]"],
                         ids=["truncated", "not-utf8", "not-an-object"])
def test_a_damaged_train_config_is_recovered_from_the_checkpoint(run, caplog, damage):
    path = run / "train_config.json"
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--out", str(run), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    assert f"{path} (" in warnings_of(caplog) and "using the settings recorded in ckpt-000006" in warnings_of(caplog)
    assert [s for s, _ in losses(run)] == list(range(1, 9))
    assert json.loads(path.read_text())["max_steps"] == 8  # rewritten whole


def test_a_partial_last_metrics_line_is_dropped_on_resume(corpus_file, tmp_path):
    out = tmp_path / "run"
    build_trainer(tiny_config(corpus_file, out)).fit(steps=4)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 3.1')  # what a crash or a full disk leaves
    assert len(read_metrics(out / "metrics.jsonl")) == 5  # readers skip it too (4 losses and no val yet)
    build_trainer(tiny_config(corpus_file, out), resume=True).fit()
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(corpus_file, tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "run"
    build_trainer(tiny_config(corpus_file, out)).fit(steps=2)
    real_save_file = checkpoint_module.save_file

    def full_disk(tensors, path, *args, **kwargs):
        real_save_file(tensors, path, *args, **kwargs)  # a part is written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"gptlab train: error: {out}: could not save ckpt-000004 (the disk is full); "
                       "the last good checkpoint, ckpt-000002, is kept")
    assert not any("Traceback" in line for line in err)
    monkeypatch.undo()
    assert load_checkpoint(out, with_optimizer=True).path.name == "ckpt-000002"
    assert not list(out.glob(".ckpt-*"))  # the half-written folder is gone
    build_trainer(tiny_config(corpus_file, out), resume=True).fit()  # and the run goes on once there is room
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------
# 4. state.json is under the checksums


def test_an_edited_state_json_is_caught(run, caplog):
    path = run / "ckpt-000006" / "state.json"
    record = json.loads(path.read_text())
    record["step"] = record["state"]["step"] = 3
    path.write_text(json.dumps(record, indent=2))
    with pytest.raises(CheckpointError, match="state.json: checksum mismatch"):
        load_checkpoint(run / "ckpt-000006")
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(run).path.name == "ckpt-000004"
    assert "state.json: checksum mismatch" in warnings_of(caplog)


# ---------------------------------------------------------------------------------------------
# 5. a fresh start never appends to a dead run's log


def test_a_fresh_start_does_not_append_to_the_log_of_a_run_that_died_before_its_first_checkpoint(corpus_file,
                                                                                                 tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    build_trainer(tiny_config(corpus_file, out, max_steps=4)).fit()
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4]
    assert all(loss != 9.0 for _, loss in losses(out))


# ---------------------------------------------------------------------------------------------
# 6. signals: finish the step, save, stop; resuming repeats an uninterrupted run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_signal_saves_the_step_and_resuming_is_bit_identical(corpus_file, tmp_path, signum):
    settings = dict(max_steps=12, checkpoint_interval=100, eval_interval=100)
    full = build_trainer(tiny_config(corpus_file, tmp_path / "full", **settings))
    full.fit()
    out = tmp_path / "stopped"
    trainer = build_trainer(tiny_config(corpus_file, out, **settings))
    log_record = trainer._log

    def log_then_signal(record):
        log_record(record)
        if record.get("step") == 7 and "loss" in record:
            # arrives in the middle of the run, between two steps' work; raise_signal sends it to this
            # thread and runs the handler before returning (a signal sent to the process may land on
            # one of torch's threads and reach Python later)
            signal.raise_signal(signum)

    trainer._log = log_then_signal
    handler_before = signal.getsignal(signum)
    result = trainer.fit()
    assert (result.stopped_by, result.step) == (signum, 7)
    assert signal.getsignal(signum) == handler_before  # the usual handler is back once the run is over
    assert find_checkpoint(out).name == "ckpt-000007"
    del trainer
    resumed = build_trainer(tiny_config(corpus_file, out, **settings), resume=True)
    resumed.fit()
    assert losses(out) == losses(tmp_path / "full")
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_a_second_signal_stops_at_once(corpus_file, tmp_path):
    trainer = build_trainer(tiny_config(corpus_file, tmp_path / "run", max_steps=12))
    log_record = trainer._log

    def log_then_interrupt_twice(record):
        log_record(record)
        if record.get("step") == 3 and "loss" in record:
            # to this thread, each handled before the next is sent: two signals sent to the process
            # can land on another thread and merge into one before Python sees them
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the second acts as Ctrl-C always does

    trainer._log = log_then_interrupt_twice
    # Python's own Ctrl-C handler, whatever an earlier test in this process left installed
    # (in the whole suite, something leaves another one, and the second SIGINT then went to it)
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outside)
    assert find_checkpoint(tmp_path / "run").name == "ckpt-000002"  # the last periodic save is intact


# ---------------------------------------------------------------------------------------------
# 7. inference does not need the optimizer state


def test_inference_loads_without_optimizer_state(run, caplog):
    (run / "ckpt-000006" / "optimizer.safetensors").unlink()
    (run / "ckpt-000006" / "rng.safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(run).path.name == "ckpt-000006"
        assert main(["sample", str(run), "--max-new-tokens", "2", "--seed", "0"]) == 0
    assert warnings_of(caplog) == ""
    with caplog.at_level(logging.WARNING):  # resuming does need it: it falls back
        assert load_checkpoint(run, with_optimizer=True).path.name == "ckpt-000004"
    assert "optimizer.safetensors: missing" in warnings_of(caplog)


# ---------------------------------------------------------------------------------------------
# 8. file modes follow the umask


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_follow_the_umask(corpus_file, tmp_path, umask, file_mode, dir_mode):
    from gptlab.interop.hf_files import write_model_dir

    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        build_trainer(tiny_config(corpus_file, out, max_steps=2)).fit()
        write_model_dir(tmp_path / "exported", {"w": torch.zeros(2)}, {"config.json": {}})
    finally:
        os.umask(old)
    for path in [*out.rglob("*"), *(tmp_path / "exported").rglob("*"), tmp_path / "exported"]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (dir_mode if path.is_dir() else file_mode), (path, oct(mode))


# ---------------------------------------------------------------------------------------------
# 9. accidental limits are checked before any work; the corpus cap is reported


def test_a_shape_that_cannot_fit_is_refused_before_any_work(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="needs about .* GiB to train .* lower --block-size"):
        build_trainer(tiny_config(corpus_file, out, preset="llama-small", block_size=10_000_000, batch_size=32))
    assert not out.exists()  # nothing prepared, no run directory left behind
    assert main(["train", "--data", str(corpus_file), "--out", str(out), "--block-size", "10000000",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "Traceback" not in err


def test_the_corpus_cap_is_reported_when_it_cuts(corpus_file, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        build_trainer(tiny_config(corpus_file, tmp_path / "cut", max_bytes=8000))
    size = corpus_file.stat().st_size
    assert f"the corpus holds {size:,} bytes: --max-bytes 8000 reads the first" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        build_trainer(tiny_config(corpus_file, tmp_path / "whole", max_bytes=size))
    assert "reads the first" not in caplog.text


# ---------------------------------------------------------------------------------------------
# 10. the conditions of bit-exact resumption are recorded, and a change is a warning


def test_determinism_conditions_are_recorded_and_a_change_warned(run, corpus_file, caplog):
    recorded = load_checkpoint(run).state["determinism"]
    assert recorded == {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
                        "world_size": 1, "precision": precision.describe("auto", torch.device("cpu"))}
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with caplog.at_level(logging.WARNING):
            build_trainer(tiny_config(corpus_file, run, max_steps=8), resume=True)
    finally:
        torch.set_num_threads(threads)
    assert f"threads {threads} → {threads + 1}" in warnings_of(caplog)
    assert "not bit-identically" in warnings_of(caplog)


def test_a_run_resumed_in_another_precision_is_warned(run, corpus_file, caplog):
    # --dtype auto is bf16 on a CPU with bf16 units and fp32 on one without: a run moved between
    # the two changes precision, as an explicit --dtype does here
    saved = load_checkpoint(run).state["determinism"]["precision"]
    other = "float32" if saved == "bf16 autocast" else "bfloat16"
    with caplog.at_level(logging.WARNING):
        build_trainer(tiny_config(corpus_file, run, max_steps=8, dtype=other), resume=True)
    assert f"precision {saved} → {precision.describe(other, torch.device('cpu'))}" in warnings_of(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_trainer(tiny_config(corpus_file, run, max_steps=8), resume=True)  # the same precision: no word
    assert "not bit-identically" not in warnings_of(caplog)


# ---------------------------------------------------------------------------------------------
# the real thing, in processes: two writers, SIGTERM, kill -9 anywhere (a save included)


def train_command(data: Path, out: Path, *extra: str, steps: int = 40, interval: int = 100) -> list[str]:
    return [sys.executable, "-m", "gptlab", "train", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--tokenizer", "char", "--block-size", "32", "--batch-size", "4", "--max-steps", str(steps),
            "--warmup-steps", "5", "--eval-interval", "1000", "--eval-iters", "2", "--log-interval", "1",
            "--checkpoint-interval", str(interval), "--dropout", "0.1", "--no-progress", "--sample-tokens", "0",
            "--optimizer", "adamw", *extra]


def wait_for_step(out: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if any(m.get("step", 0) >= step for m in read_metrics(out / "metrics.jsonl")):
                return
        except Exception:  # not there yet
            pass
        time.sleep(0.01)
    raise AssertionError(f"step {step} never came (exit code {process.poll()})")


@pytest.mark.slow
def test_cli_second_writer_and_sigterm_then_resume_is_bit_identical(corpus_file, tmp_path):
    full, out = tmp_path / "full", tmp_path / "stopped"
    steps = 40  # the victim is held (SIGSTOP) from about step 3 while the other writers try: 40 is plenty
    reference = subprocess.Popen(train_command(corpus_file, full, steps=steps), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env())
    victim = subprocess.Popen(train_command(corpus_file, out, steps=steps), stderr=subprocess.PIPE, env=env(),
                              text=True)
    wait_for_step(out, 3, victim)
    victim.send_signal(signal.SIGSTOP)  # keep it mid-run (holding the lock) while the others start
    try:
        # a second run into the same directory, and a resume of it, both while the first one runs
        seconds = [subprocess.Popen(train_command(corpus_file, out, *extra, steps=steps), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env(), text=True) for extra in ((), ("--resume",))]
        for second in seconds:
            err = second.communicate(timeout=120)[1]
            assert second.returncode == 1, err
            assert f"(PID {victim.pid})" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        victim.send_signal(signal.SIGTERM)
        victim.send_signal(signal.SIGCONT)
    err = victim.communicate(timeout=120)[1]
    assert victim.returncode == 128 + signal.SIGTERM, err
    stopped_at = int(find_checkpoint(out).name.split("-")[1])
    assert 3 <= stopped_at < steps and "--resume" in err and "Traceback" not in err
    assert [s for s, _ in losses(out)] == list(range(1, stopped_at + 1))  # the step it was in was finished
    subprocess.run(train_command(corpus_file, out, "--resume", steps=steps), check=True, capture_output=True,
                   env=env())
    assert reference.wait(timeout=120) == 0
    assert losses(out) == losses(full)


KILL_INSIDE_SAVE = """
import os, signal, sys
import gptlab.train.checkpoint as c
point, at_step = sys.argv[1], int(sys.argv[2])
real_save_file, real_write = c.save_file, c.atomic_write_text
def save_file(tensors, path, *a, **k):
    real_save_file(tensors, path, *a, **k)
    if point == "mid-folder" and f"ckpt-{at_step:06d}" in path and path.endswith("model.safetensors"):
        os.kill(os.getpid(), signal.SIGKILL)
def atomic_write_text(path, text):
    if point == "before-latest" and text.strip() == f"ckpt-{at_step:06d}":
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(path, text)
c.save_file, c.atomic_write_text = save_file, atomic_write_text
from gptlab.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_kill_9_anywhere_including_inside_a_save_then_resume_is_bit_identical(corpus_file, tmp_path):
    full, out = tmp_path / "full", tmp_path / "killed"
    steps = 30
    reference = subprocess.Popen(train_command(corpus_file, full, steps=steps, interval=1),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    # killed at precise points of a save: with the new folder half written; renamed but not yet in LATEST
    for point, at_step in (("mid-folder", 4), ("before-latest", 9)):
        command = [sys.executable, "-c", KILL_INSIDE_SAVE, point, str(at_step),
                   *train_command(corpus_file, out, *(("--resume",) if point != "mid-folder" else ()),
                                  steps=steps, interval=1)[3:]]
        killed = subprocess.run(command, capture_output=True, env=env())
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "ckpt-000009" / "state.json").exists()  # renamed into place complete,
    assert find_checkpoint(out).name == "ckpt-000008"  # but LATEST still names the one before
    assert not (out / "ckpt-000004").exists()  # the half-written one never got its name
    # and at random moments (most of a step's time is its save here: one every step)
    rng = random.Random(16)
    for _ in range(2):
        victim = subprocess.Popen(train_command(corpus_file, out, "--resume", steps=steps, interval=1),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        reached = max(s for s, _ in losses(out))
        wait_for_step(out, reached + 1, victim)
        time.sleep(rng.uniform(0.0, 0.3))
        victim.kill()
        victim.wait()
        load_checkpoint(out, with_optimizer=True)  # always an intact checkpoint to go on from
    subprocess.run(train_command(corpus_file, out, "--resume", steps=steps, interval=1), check=True,
                   capture_output=True, env=env())
    assert reference.wait(timeout=120) == 0
    assert losses(out) == losses(full)
    assert not list(out.glob(".ckpt-*"))  # every leftover of the killed writers is gone
