"""PNG pictures of what :mod:`gptlab.inspect.views` finds (the ``plot`` extra: matplotlib, imported lazily
with the Agg backend, so no display is needed).

- :func:`plot_attention`: a grid of heat maps, one per (layer, head): rows are queries, columns keys.
- :func:`plot_next_token`: a bar chart of the most probable next tokens.
- :func:`plot_lens`: the logit lens as a heat map of top-token probabilities, with the tokens written in.
- :func:`plot_embedding_pca`: token embeddings on their first two principal components, labelled.

Each returns the path of the PNG it wrote (parent folders are created).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptlab.inspect.views import AttentionMaps, EmbeddingPCA, LogitLens, NextToken
from gptlab.inspect.text import printable
from gptlab.plotting import pyplot, save_figure

MAX_FIGURE_INCHES = 40.0  # matplotlib refuses figures above 2**16 pixels a side
MIN_LABEL_INCHES = 0.11  # below this much room per token, tick labels would overlap


def _label(token: str, limit: int = 8) -> str:
    text = printable(token)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_attention(
    maps: AttentionMaps,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> Path:
    """Heat maps of attention, one row of panels per layer and one column per head (default: all).

    In each panel row ``i`` is the query token and column ``j`` the key token it reads from; the
    upper triangle is empty because a token cannot see the future. Tokens label the axes of the
    outer panels when there is room.
    """
    layers = list(range(maps.n_layer)) if layers is None else list(layers)
    heads = list(range(maps.n_head)) if heads is None else list(heads)
    T = len(maps.tokens)
    panel = float(np.clip(0.2 * T, 2.0, 8.0 if len(layers) * len(heads) == 1 else 5.0))
    panel = min(panel, MAX_FIGURE_INCHES / max(len(layers), len(heads)))
    show_labels = panel / T >= MIN_LABEL_INCHES
    labels = [_label(t) for t in maps.tokens]
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(panel * len(heads) + 1.2, panel * len(layers) + 0.6),
                             dpi=100, squeeze=False)
    image = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r, c]
            w = np.ma.masked_where(np.triu(np.ones((T, T), dtype=bool), k=1), maps.weights[layer, head])
            image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            ax.set_xticks(range(T) if show_labels and r == len(layers) - 1 else [])
            ax.set_yticks(range(T) if show_labels and c == 0 else [])
            if show_labels and r == len(layers) - 1:
                ax.set_xticklabels(labels, rotation=90, fontsize=7)
                ax.set_xlabel("key (attended to)", fontsize=8)
            if show_labels and c == 0:
                ax.set_yticklabels(labels, fontsize=7)
                ax.set_ylabel("query (attending)", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle("Attention: row = query token, column = key token it attends to")
    return save_figure(fig, path, tight_bbox=True)


def plot_next_token(pred: NextToken, path: str | Path) -> Path:
    """Horizontal bars of the top-k next-token probabilities, the most probable on top."""
    plt = pyplot()
    k = len(pred.top_ids)
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * k + 1.4), dpi=120)
    labels = [f"{printable(t)!s}  ({i})" for t, i in zip(pred.top_tokens, pred.top_ids)]
    ax.barh(range(k), pred.top_probs, color="tab:blue")
    ax.set_yticks(range(k), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1e-9, float(pred.top_probs.max())) * 1.15)
    for y, p in enumerate(pred.top_probs):
        ax.text(float(p), y, f" {p:.3f}", va="center", fontsize=8)
    context = "".join(pred.tokens)
    context = printable(context if len(context) <= 40 else "…" + context[-39:])
    ax.set_title(f"next token after “{context}”", fontsize=10)
    ax.set_xlabel("probability")
    return save_figure(fig, path, tight_bbox=True)


def plot_lens(lens: LogitLens, path: str | Path) -> Path:
    """The logit lens: rows = layers (embeddings at the bottom), columns = positions; the colour is
    the probability of the top prediction, written in each cell."""
    probs = lens.top_probs[:, :, 0]  # (L + 1, T)
    rows, T = probs.shape
    plt = pyplot()
    cell = min(0.9, MAX_FIGURE_INCHES / max(T, rows))
    fig, ax = plt.subplots(figsize=(cell * T + 2.5, cell * 0.7 * rows + 1.5), dpi=110)
    image = ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for r in range(rows):
        for i in range(T):
            colour = "white" if probs[r, i] > 0.6 else "black"
            ax.text(i, r, _label(lens.top_tokens[r][i][0], 6), ha="center", va="center", fontsize=7, color=colour)
    ax.set_yticks(range(rows), lens.layers)
    ax.set_xticks(range(T), [f"{i}:{_label(t, 6)}" for i, t in enumerate(lens.tokens)], rotation=90, fontsize=7)
    ax.set_xlabel("position (token read) → the cell shows the predicted next token")
    fig.colorbar(image, ax=ax, label="probability of the top token")
    ax.set_title("Logit lens: the top prediction after each layer")
    return save_figure(fig, path, tight_bbox=True)


def plot_embedding_pca(pca: EmbeddingPCA, path: str | Path, *, max_labels: int = 300) -> Path:
    """Scatter of the tokens on the first two principal components, each point labelled."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    x, y = pca.coords[:, 0], pca.coords[:, 1]
    ax.scatter(x, y, s=10, alpha=0.6)
    for i, token in enumerate(pca.tokens[:max_labels]):
        ax.annotate(_label(token, 10), (x[i], y[i]), fontsize=7, xytext=(2, 2), textcoords="offset points")
    r = pca.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({r[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({r[1]:.1%} of variance)")
    ax.set_title(f"Token embeddings, first two principal components ({pca.method})")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, tight_bbox=True)
