"""PNG pictures of what :mod:`gptlab.inspect.views` finds (the ``plot`` extra: matplotlib, imported lazily
with the Agg backend, so no display is needed).

- :func:`plot_attention`: a grid of heat maps, one per (layer, head): rows are queries, columns keys.
- :func:`plot_next_token`: a bar chart of the most probable next tokens.
- :func:`plot_lens`: the logit lens as a heat map of top-token probabilities, with the tokens written
  in, laid out as the text table (layers down from the embeddings, positions across).
- :func:`plot_embedding_pca`: token embeddings on their first two principal components, labelled
  without overlaps, special tokens apart.

Each returns the path of the PNG it wrote (parent folders are created).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from gptlab.inspect.views import AttentionMaps, EmbeddingPCA, LogitLens, NextToken
from gptlab.inspect.text import printable
from gptlab.plotting import pyplot, save_figure

MAX_FIGURE_INCHES = 40.0  # matplotlib refuses figures above 2**16 pixels a side
LABEL_POINTS = 9  # tick labels as large as body text on a slide or a docs page
LABEL_INCHES = 0.19  # room per token that a 9-point label needs without touching its neighbours
LENS_COLUMNS = 12  # positions per row of logit-lens panels (the text table splits too)


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
    upper triangle is empty because a token cannot see the future. The tokens label the left
    column's rows and the bottom row's columns at a readable size (each token gets at least
    ``LABEL_INCHES`` of the panel) when the figure can hold them; beyond that only positions are marked.
    """
    layers = list(range(maps.n_layer)) if layers is None else list(layers)
    heads = list(range(maps.n_head)) if heads is None else list(heads)
    T = len(maps.tokens)
    single = len(layers) * len(heads) == 1
    panel = max(2.2, LABEL_INCHES * T)
    panel = min(panel, 9.0 if single else 6.0, MAX_FIGURE_INCHES / max(len(layers), len(heads)))
    show_labels = panel / T >= LABEL_INCHES * 0.99
    labels = [f"{_label(t)} {i}" for i, t in enumerate(maps.tokens)]
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(panel * len(heads) + 1.6, panel * len(layers) + 1.0),
                             dpi=110, squeeze=False, layout="constrained")
    image = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r, c]
            w = np.ma.masked_where(np.triu(np.ones((T, T), dtype=bool), k=1), maps.weights[layer, head])
            image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer} head {head}", fontsize=11)
            bottom, left = r == len(layers) - 1, c == 0
            if show_labels:
                ax.set_xticks(range(T), labels if bottom else [""] * T, rotation=90, fontsize=LABEL_POINTS,
                              fontfamily="monospace")
                ax.set_yticks(range(T), labels if left else [""] * T, fontsize=LABEL_POINTS, fontfamily="monospace")
            else:  # too many tokens to name: every k-th position, by number
                every = math.ceil(LABEL_INCHES * T / panel)
                ticks = list(range(0, T, every))
                ax.set_xticks(ticks, [str(t) if bottom else "" for t in ticks], rotation=90, fontsize=LABEL_POINTS)
                ax.set_yticks(ticks, [str(t) if left else "" for t in ticks], fontsize=LABEL_POINTS)
            ax.tick_params(length=2)
            if bottom:
                ax.set_xlabel("key (attended to)", fontsize=10)
            if left:
                ax.set_ylabel("query (attending)", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle("Attention: row = query token, column = key token it attends to", fontsize=13)
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


def plot_lens(lens: LogitLens, path: str | Path, *, columns: int = LENS_COLUMNS) -> Path:
    """The logit lens, oriented as the text table of :func:`gptlab.inspect.text.format_lens`:
    rows = layers with the embeddings on top, columns = positions (``3:x→`` reads position 3,
    token x, and predicts the next). Each cell shows the top token and its probability, which
    also sets the colour. Long texts are split into panels of at most ``columns`` positions, one
    under the other and of near-equal width, so that a sentence of 30 tokens stays readable."""
    probs = lens.top_probs[:, :, 0]  # (L + 1, T)
    rows, T = probs.shape
    per_block = math.ceil(T / math.ceil(T / columns))  # as even as can be: 26 tokens → 9, 9, 8
    blocks = [list(range(start, min(start + per_block, T))) for start in range(0, T, per_block)]
    width = min(len(blocks[0]), T)
    cell_w, cell_h = 1.05, 0.55
    panel_h = cell_h * rows + 1.3
    plt = pyplot()
    fig, axes = plt.subplots(len(blocks), 1, figsize=(cell_w * width + 2.8, panel_h * len(blocks) + 0.6),
                             dpi=110, squeeze=False, layout="constrained")
    image = None
    for ax, block in zip(axes[:, 0], blocks):
        sub = probs[:, block]
        image = ax.imshow(sub, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", origin="upper",
                          extent=(-0.5, len(block) - 0.5, rows - 0.5, -0.5))
        for r in range(rows):
            for k, i in enumerate(block):
                colour = "white" if probs[r, i] > 0.6 else "black"
                ax.text(k, r, f"{_label(lens.top_tokens[r][i][0], 9)}\n{probs[r, i]:.2f}", ha="center",
                        va="center", fontsize=8.5, color=colour, fontfamily="monospace", linespacing=1.1)
        ax.set_yticks(range(rows), lens.layers, fontsize=LABEL_POINTS)
        ax.set_xticks(range(len(block)), [f"{i}:{_label(lens.tokens[i], 9)}→" for i in block], rotation=45,
                      ha="right", rotation_mode="anchor", fontsize=LABEL_POINTS, fontfamily="monospace")
        ax.set_xlim(-0.5, width - 0.5)
        ax.tick_params(length=0)
    axes[-1, 0].set_xlabel("position:token read → each cell: the predicted next token and its probability",
                           fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.9 if len(blocks) == 1 else 0.5,
                 label="probability of the top token")
    fig.suptitle("Logit lens: the top next-token prediction after each layer", fontsize=12)
    return save_figure(fig, path, tight_bbox=True)


def _spread_labels(anchors: np.ndarray, sizes: np.ndarray, gap: float = 1.0) -> np.ndarray:
    """Label positions (display points) near ``anchors`` that do not overlap one another.

    Greedy: labels are placed one by one, each first just above-right of its point, then, while
    its box (``sizes``: width, height) touches one already placed, one line further up or down
    (alternating) — enough for the clusters of a PCA scatter."""
    placed: list[tuple[float, float, float, float]] = []
    out = np.empty_like(anchors)
    for n, ((x, y), (w, h)) in enumerate(zip(anchors, sizes)):
        x0 = x + 3.0
        for step in range(60):
            shift = (step + 1) // 2 * (h + gap) * (1 if step % 2 else -1)
            y0 = y + 2.0 + shift
            box = (x0, y0, x0 + w, y0 + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        out[n] = (x0, y0)
    return out


def plot_embedding_pca(
    pca: EmbeddingPCA, path: str | Path, *, max_labels: int = 300, special_ids: Collection[int] = ()
) -> Path:
    """Scatter of the tokens on the first two principal components, each point labelled (bytes
    that are not whole characters read ``<0xAB>``). Labels that would overlap are moved apart,
    with a thin line back to their point; ``special_ids`` (the tokenizer's special tokens, which
    never occur in training text) are drawn in their own colour."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 8), dpi=120)
    x, y = pca.coords[:, 0], pca.coords[:, 1]
    special = np.array([i in set(special_ids) for i in pca.token_ids], dtype=bool)
    ax.scatter(x[~special], y[~special], s=12, alpha=0.6, color="tab:blue", label="tokens")
    if special.any():
        ax.scatter(x[special], y[special], s=30, marker="D", color="tab:red", label="special tokens")
        ax.legend(loc="best", fontsize=9)
    r = pca.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({r[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({r[1]:.1%} of variance)")
    ax.set_title(f"Token embeddings, first two principal components ({pca.method})")
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    fig.canvas.draw()  # fixes the data → display transform the labels are placed with
    n = min(max_labels, len(pca.tokens))
    texts = [_label(t, 14) for t in pca.tokens[:n]]
    to_display = ax.transData.transform
    anchors = to_display(np.column_stack([x[:n], y[:n]])) * 72.0 / fig.dpi  # display points
    fontsize = 8.0
    sizes = np.array([[0.62 * fontsize * len(t) + 1.0, fontsize * 1.15] for t in texts])
    order = np.lexsort((anchors[:, 0], -anchors[:, 1]))  # top to bottom, then left to right
    positions = np.empty_like(anchors)
    positions[order] = _spread_labels(anchors[order], sizes[order])
    for i, text in enumerate(texts):
        dx, dy = positions[i] - anchors[i]
        moved = abs(dy - 2.0) > 1e-6
        ax.annotate(text, (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    va="bottom", ha="left", fontfamily="monospace", color="tab:red" if special[i] else "black",
                    arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.5, shrinkA=0, shrinkB=2) if moved else None)
    return save_figure(fig, path, tight_bbox=True)
