"""Loss curves: a PNG drawn from a run's metrics.jsonl (needs the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

from gptlab.train.metrics_log import read_metrics

__all__ = ["plot_loss_curve", "read_metrics"]


def plot_loss_curve(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Plot training and validation loss against step; returns the PNG's path.

    Raises ImportError when matplotlib is missing.
    """
    from gptlab.plotting import pyplot, save_figure

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out_png)
