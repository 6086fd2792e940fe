"""--log-to: TensorBoard event files (read back with TensorBoard's own reader), CSV, and the
errors for unknown or missing trackers."""

import csv
import importlib.util
import json

import pytest

from gptlab.cli.main import main
from gptlab.errors import ConfigError
from gptlab.train.config import TrainConfig
from gptlab.train.curves import read_metrics
from gptlab.train.tracking import Tracking, parse_trackers
from gptlab.train.trainer import build_trainer

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed")


def event_scalars(directory):
    """{tag: [(step, value), ...]} from the event files, through TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tracker_names_are_repeatable_and_comma_separated():
    assert parse_trackers(["tensorboard,csv", "csv", " CSV "]) == ["tensorboard", "csv"]
    assert parse_trackers("csv") == ["csv"] and parse_trackers(None) == []
    assert TrainConfig(log_to="tensorboard, csv").log_to == ["tensorboard", "csv"]
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'"):
        TrainConfig(log_to=["mlflow"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_package_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--log-to wandb needs the wandb package: pip install wandb"):
        Tracking(["wandb"], tmp_path)


@needs_tensorboard
def test_training_logs_to_tensorboard_and_csv_as_to_metrics_jsonl(corpus_file, tmp_path):
    run = tmp_path / "run"
    code = main(["train", "--data", str(corpus_file), "--out", str(run), "--preset", "tiny", "--tokenizer", "char",
                 "--block-size", "16", "--batch-size", "2", "--max-steps", "6", "--warmup-steps", "1",
                 "--eval-interval", "3", "--eval-iters", "1", "--log-interval", "2", "--checkpoint-interval", "6",
                 "--no-progress", "--sample-tokens", "0", "--optimizer", "adamw",
                 "--log-to", "tensorboard", "--log-to", "csv"])
    assert code == 0
    metrics = read_metrics(run / "metrics.jsonl")
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val_loss" in m]
    scalars = event_scalars(run / "tensorboard")
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/loss", "time/elapsed_s"} <= set(scalars)
    # float32 in the event files: the values agree to float32 precision
    assert [s for s, _ in scalars["train/loss"]] == [m["step"] for m in train] == [2, 4, 6]
    for (_, got), m in zip(scalars["train/loss"], train):
        assert got == pytest.approx(m["loss"], rel=1e-6)
    for (_, got), m in zip(scalars["train/lr"], train):
        assert got == pytest.approx(m["lr"], rel=1e-6)
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["val/loss"]] == [
        (m["step"], m["val_loss"]) for m in val]
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics]
    assert [float(r["train/loss"]) for r in rows if r["train/loss"]] == [m["loss"] for m in train]
    assert [float(r["val/loss"]) for r in rows if r["val/loss"]] == [m["val_loss"] for m in val]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["log_to"] == ["tensorboard", "csv"]


def test_a_resumed_run_keeps_its_earlier_csv_rows(corpus_file, tmp_path):
    run = tmp_path / "run"
    settings = dict(data=str(corpus_file), out=str(run), preset="tiny", tokenizer="char", block_size=16,
                    batch_size=2, max_steps=4, warmup_steps=1, eval_interval=100, eval_iters=1, log_interval=1,
                    checkpoint_interval=2, progress=False, sample_tokens=0, optimizer="adamw", log_to=["csv"])
    build_trainer(TrainConfig(**settings)).fit(steps=3)
    resumed = build_trainer(TrainConfig(**settings), resume=True)
    assert resumed.step == 3
    resumed.fit()
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [m["step"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 3, 4, 4]


def test_csv_rows_logged_after_the_checkpoint_of_a_dead_run_go(tmp_path):
    from gptlab.train.tracking import CSVTracker

    path = tmp_path / "metrics.csv"
    first = CSVTracker(path)
    for step in range(1, 6):
        first.log(step, {"train/loss": float(step)})
    first.log(5, {"val/loss": 0.5})  # a new column: the file is rewritten with it
    again = CSVTracker(path)  # resumed from the checkpoint at step 2
    again.log(3, {"train/loss": 30.0})
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [
        ("1", "1.0", ""), ("2", "2.0", ""), ("3", "30.0", "")]
