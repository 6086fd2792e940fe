"""Pictures of the first chapter, as PNG files (needs matplotlib, imported here with the Agg backend).

- :func:`plot_retina`: a neuron's weights laid out on the 20×20 retina — red cells push toward
  one class, blue toward the other: you can see what the perceptron looks at.
- :func:`plot_linear_boundary`: one neuron on 2-D data: its line, its weight vector, the
  half-planes, the misclassified samples, and optionally the lines of earlier epochs.
- :func:`plot_decision_boundary`: the regions any classifier assigns to each class on 2-D data
  (a neuron's line and weight vector, a network's hidden units' lines).
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


CLASS_STYLE = (("#1f77b4", "o"), ("#d62728", "s"))  # (colour, marker) of classes_[0], classes_[1]
REGION_COLOURS = ("#aec7e8", "#ffbb78")


def _plane(X: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid over the data's box with a margin: the (gx, gy) of ``np.meshgrid``."""
    pad = 0.15 * max(float(np.ptp(X[:, 0])), float(np.ptp(X[:, 1])), 1.0)
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, resolution)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, resolution)
    return np.meshgrid(xs, ys)


def _check_plane_data(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise DataError(f"a decision boundary is drawn for 2-D data, got shape {X.shape}")
    classes = np.unique(y)
    if len(classes) != 2:
        raise DataError(f"a decision boundary is drawn between two classes, got {len(classes)}")
    return X, y, classes


def _line_points(coef: np.ndarray, intercept: float, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """Two points of the line ``coef·x + intercept = 0`` spanning ``box`` (x0, x1, y0, y1), or
    None when ``coef`` is zero (then there is no line: everything is on one side)."""
    w1, w2 = float(coef[0]), float(coef[1])
    x0, x1, y0, y1 = box
    if w1 == 0 and w2 == 0:
        return None
    if abs(w2) >= abs(w1):
        xs = np.array([x0, x1])
        return np.column_stack([xs, -(w1 * xs + intercept) / w2])
    ys = np.array([y0, y1])
    return np.column_stack([-(w2 * ys + intercept) / w1, ys])


def _draw_samples(ax: Any, X: np.ndarray, y: np.ndarray, classes: np.ndarray, names: Sequence[str],
                  predicted: np.ndarray | None = None) -> None:
    """The samples, one colour and marker per class; with ``predicted``, the wrong ones ringed."""
    for index, (label, (colour, marker)) in enumerate(zip(classes, CLASS_STYLE)):
        mask = y == label
        name = names[index] if index < len(names) else str(label)
        ax.scatter(X[mask, 0], X[mask, 1], c=colour, marker=marker, edgecolors="k", s=60, zorder=3,
                   label=f"class {name}")
    if predicted is not None and np.any(predicted != y):
        wrong = predicted != y
        ax.scatter(X[wrong, 0], X[wrong, 1], s=420, facecolors="none", edgecolors="crimson", linewidths=2.2,
                   zorder=4, label=f"misclassified ({int(wrong.sum())})")


def _draw_linear_unit(ax: Any, coef: np.ndarray, intercept: float, X: np.ndarray,
                      box: tuple[float, float, float, float], label: str) -> None:
    """The line ``w·x + b = 0`` and the weight vector ``w``, drawn from the point of the line
    nearest the data's centre and pointing to the side the unit calls class 1."""
    points = _line_points(coef, intercept, box)
    if points is None:
        return
    ax.plot(points[:, 0], points[:, 1], color="k", linewidth=2.2, zorder=2, label=label)
    w = np.asarray(coef, dtype=np.float64)
    centre = X.mean(axis=0)
    foot = centre - (w @ centre + intercept) / (w @ w) * w  # nearest point of the line
    length = 0.22 * max(box[1] - box[0], box[3] - box[2])
    tip = foot + length * w / np.linalg.norm(w)
    ax.annotate("", xy=tip, xytext=foot, zorder=5,
                arrowprops=dict(arrowstyle="-|>", color="k", linewidth=2, mutation_scale=18))
    ax.annotate(f"w = ({w[0]:.3g}, {w[1]:.3g})", xy=tip, xytext=(4, 4), textcoords="offset points",
                fontsize=9, zorder=5, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))


def _finish(ax: Any, box: tuple[float, float, float, float], title: str) -> None:
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def plot_linear_boundary(
    coef: Any,
    intercept: float,
    X: Any,
    y: Any,
    path: str | Path,
    *,
    earlier: Sequence[tuple[Any, float]] = (),
    earlier_label: str = "after each epoch",
    class_names: Sequence[str] = ("0", "1"),
    title: str = "Decision boundary",
    line_label: str = "w·x + b = 0",
    resolution: int = 300,
) -> Path:
    """One neuron on 2-D data: the half-planes it assigns (``w·x + b > 0`` is the second class,
    as ``predict`` has it; a point on the line goes to the first), the line itself, the weight
    vector ``w`` pointing into the second class's side, and the samples, the misclassified ones
    ringed. ``earlier`` adds other ``(coef, intercept)`` pairs as thin grey lines (the weights
    after each epoch); zero weights have no line, and the picture says how many there were.
    Returns the PNG's path."""
    X, y, classes = _check_plane_data(X, y)
    coef = np.asarray(coef, dtype=np.float64)
    plt = pyplot()
    gx, gy = _plane(X, resolution)
    box = (float(gx.min()), float(gx.max()), float(gy.min()), float(gy.max()))
    region = (np.column_stack([gx.ravel(), gy.ravel()]) @ coef + intercept > 0).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    ax.contourf(gx, gy, region.astype(int), levels=[-0.5, 0.5, 1.5], colors=list(REGION_COLOURS), alpha=0.7)
    drawn: set[tuple[float, ...]] = set()
    no_line = 0
    for c, b in earlier:
        c = np.asarray(c, dtype=np.float64)
        points = _line_points(c, float(b), box)
        if points is None:
            no_line += 1
            continue
        scale = float(np.linalg.norm(np.append(c, b)))
        key = tuple(np.round(np.append(c, b) / scale, 9))  # the same line drawn once
        if key in drawn:
            continue
        ax.plot(points[:, 0], points[:, 1], color="0.3", linewidth=1.1, alpha=0.7, linestyle="--",
                zorder=1, label=earlier_label if not drawn else None)
        drawn.add(key)
    if no_line:
        ax.plot([], [], " ", label=f"({no_line} of {len(earlier)} ended with w = 0: no line)")
    _draw_linear_unit(ax, coef, float(intercept), X, box, line_label)
    z = X @ coef + intercept
    predicted = classes[(z > 0).astype(int)]
    _draw_samples(ax, X, y, classes, class_names, predicted)
    if np.any(np.isclose(z, 0.0, atol=1e-12)):
        name = class_names[0] if class_names else str(classes[0])
        ax.plot([], [], " ", label=f"a point on the line counts as class {name}")
    _finish(ax, box, title)
    return save_figure(fig, path, tight_bbox=True)


def plot_decision_boundary(
    model: Classifier,
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] = ("0", "1"),
    title: str = "Decision boundary",
    resolution: int = 300,
    hidden_label: str = "hidden units' lines",
) -> Path:
    """The two-feature plane coloured by ``model.predict``, with the samples on top (the
    misclassified ones ringed). A single neuron (``coef_`` of two weights) is drawn by
    :func:`plot_linear_boundary`, with its line and weight vector; a network with a first layer
    on the two inputs (``coefs_``) gets each hidden unit's line ``w_j·x + b_j = 0`` dashed.
    Returns the PNG's path; data with other than 2 features is a DataError."""
    X, y, classes = _check_plane_data(X, y)
    coef = getattr(model, "coef_", None)
    if coef is not None and np.ndim(coef) == 1 and len(coef) == 2:
        return plot_linear_boundary(coef, float(model.intercept_), X, y, path,  # type: ignore[attr-defined]
                                    class_names=class_names, title=title, resolution=resolution)
    plt = pyplot()
    gx, gy = _plane(X, resolution)
    box = (float(gx.min()), float(gx.max()), float(gy.min()), float(gy.max()))
    predicted = model.predict(np.column_stack([gx.ravel(), gy.ravel()]))
    region = np.searchsorted(classes, predicted).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    ax.contourf(gx, gy, region, levels=[-0.5, 0.5, 1.5], colors=list(REGION_COLOURS), alpha=0.7)
    first = getattr(model, "coefs_", None)
    if first is not None and len(first) > 1 and first[0].shape[0] == 2:  # a hidden layer on the inputs
        W, b = first[0], model.intercepts_[0]  # type: ignore[attr-defined]
        for j in range(W.shape[1]):
            points = _line_points(W[:, j], float(b[j]), box)
            if points is not None:
                ax.plot(points[:, 0], points[:, 1], color="0.3", linewidth=1.0, linestyle="--", zorder=1,
                        label=hidden_label if j == 0 else None)
    _draw_samples(ax, X, y, classes, class_names, model.predict(X))
    _finish(ax, box, title)
    return save_figure(fig, path, tight_bbox=True)


def plot_curve(
    values: Sequence[float],
    path: str | Path,
    *,
    ylabel: str,
    title: str,
    log_scale: bool = False,
    integer_values: bool = False,
) -> Path:
    """``values`` against epoch (1, 2, ...), on integer epoch ticks. On a linear scale the y axis
    starts at zero, so that a curve reaching 0 (no more mistakes) is seen to touch the baseline;
    ``integer_values`` (counts such as mistakes) also puts integer ticks on it. Returns the PNG's path."""
    if len(values) == 0:
        raise DataError("nothing to plot: the curve is empty")
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, marker="o" if len(values) <= 50 else None, linewidth=1.2, clip_on=False, zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_scale and min(values) > 0:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0, top=max(float(max(values)) * 1.08, 1e-12))
        ax.axhline(0, color="k", linewidth=0.8)
        if integer_values:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(values) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
