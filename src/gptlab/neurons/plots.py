"""Pictures of the first chapter, as PNG files (needs matplotlib, imported here with the Agg backend).

- :func:`plot_retina`: a neuron's weights laid out on the 20×20 retina — red cells push toward
  one class, blue toward the other: you can see what the perceptron looks at.
- :func:`plot_decision_boundary`: the regions a classifier assigns to each class on 2-D data.
- :func:`plot_curve`: mistakes, loss or accuracy per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gptlab.errors import DataError
from gptlab.plotting import pyplot, save_figure


class Classifier(Protocol):
    def predict(self, X: Any) -> np.ndarray: ...


def plot_retina(
    weights: np.ndarray,
    image_shape: tuple[int, int],
    path: str | Path,
    *,
    class_names: Sequence[str] = ("0", "1"),
    title: str = "Perceptron weights on the retina",
) -> Path:
    """Heat map of ``weights`` (one per pixel) reshaped to ``image_shape``; zero is white, the
    colour scale is symmetric. Returns the PNG's path."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size != image_shape[0] * image_shape[1]:
        raise DataError(f"{weights.size} weights do not fill a {image_shape[1]}×{image_shape[0]} retina")
    plt = pyplot()
    limit = float(np.max(np.abs(weights))) or 1.0
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=120)
    im = ax.imshow(weights.reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(f"weight (+ votes '{class_names[1]}', − votes '{class_names[0]}')")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def plot_decision_boundary(
    model: Classifier,
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] = ("0", "1"),
    title: str = "Decision boundary",
    resolution: int = 300,
) -> Path:
    """The two-feature plane coloured by ``model.predict``, with the samples on top. Returns the
    PNG's path; data with other than 2 features is a DataError."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise DataError(f"a decision boundary is drawn for 2-D data, got shape {X.shape}")
    plt = pyplot()
    pad = 0.15 * max(float(np.ptp(X[:, 0])), float(np.ptp(X[:, 1])), 1.0)
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, resolution)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, resolution)
    gx, gy = np.meshgrid(xs, ys)
    classes = np.unique(y)
    if len(classes) != 2:
        raise DataError(f"a decision boundary is drawn between two classes, got {len(classes)}")
    predicted = model.predict(np.column_stack([gx.ravel(), gy.ravel()]))
    region = np.searchsorted(classes, predicted).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=120)
    ax.contourf(gx, gy, region, levels=[-0.5, 0.5, 1.5], colors=["#aec7e8", "#ffbb78"], alpha=0.8)
    for index, (label, color, marker) in enumerate(zip(classes, ["#1f77b4", "#d62728"], ["o", "s"])):
        mask = y == label
        name = class_names[index] if index < len(class_names) else str(label)
        ax.scatter(
            X[mask, 0], X[mask, 1], c=color, marker=marker, edgecolors="k", s=40, label=f"class {name}"
        )
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_curve(
    values: Sequence[float],
    path: str | Path,
    *,
    ylabel: str,
    title: str,
    log_scale: bool = False,
) -> Path:
    """``values`` against epoch (1, 2, ...). Returns the PNG's path."""
    if len(values) == 0:
        raise DataError("nothing to plot: the curve is empty")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, marker="o" if len(values) <= 50 else None, linewidth=1.2)
    if log_scale and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
