"""Text tables of what :mod:`gptlab.inspect.views` finds: for a terminal (plain) or a page (markdown).

Tokens are shown with :func:`printable`, so that a space, a newline or a tab can be seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gptlab.inspect.views import (
    AttentionMaps,
    EmbeddingPCA,
    LogitLens,
    Neighbour,
    NextToken,
    Surprisal,
)

_VISIBLE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(token: str) -> str:
    """``token`` with whitespace and control characters made visible: ␣ for a space, ``\\n`` ..."""
    out = []
    for ch in token:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, right: Sequence[bool]) -> str:
    """Columns padded to their widest cell (plain) or a GitHub markdown table."""
    cells = [list(header)] + [list(r) for r in rows]
    if markdown:
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("`", "\\`")

        lines = ["| " + " | ".join(esc(c) for c in header) + " |",
                 "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _bar(p: float, width: int = 20) -> str:
    return "█" * round(p * width)


def format_tokens(tokens: Sequence[str]) -> str:
    """``0:d 1:e 2:f ...``: the tokens with their positions."""
    return " ".join(f"{i}:{printable(t)}" for i, t in enumerate(tokens))


def format_attended(maps: AttentionMaps, query: int, layers: Sequence[int], heads: Sequence[int],
                    k: int = 3) -> str:
    """For token ``query``, the ``k`` tokens each (layer, head) attends to most."""
    rows = []
    for layer in layers:
        for head in heads:
            top = maps.top_attended(query, layer, head, k)
            rows.append([str(layer), str(head)] + [
                f"{j}:{printable(maps.tokens[j])} {w:.2f}" for j, w in top
            ] + [""] * (k - len(top)))
    header = ["layer", "head"] + [f"#{i + 1} (pos:token weight)" for i in range(k)]
    return _table(header, rows, False, [True, True] + [False] * k)


def head_statistics(maps: AttentionMaps) -> dict[str, np.ndarray]:
    """Per (layer, head), averaged over query positions: attention to the token itself, to the
    previous token, to the first token, mean distance back, and entropy in bits. Each (L, H)."""
    w = maps.weights.astype(np.float64)  # (L, H, T, T)
    T = w.shape[-1]
    positions = np.arange(T)
    distance = positions[:, None] - positions[None, :]  # (T, T): query − key
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(w > 0, w * np.log2(w), 0.0)
    prev = np.diagonal(w, offset=-1, axis1=2, axis2=3).mean(axis=-1) if T > 1 else np.zeros(w.shape[:2])
    return {
        "self": np.diagonal(w, axis1=2, axis2=3).mean(axis=-1),
        "previous": prev,
        "first": w[..., 0].mean(axis=-1),
        "distance": (w * np.clip(distance, 0, None)).sum(axis=-1).mean(axis=-1),
        # 0.0 − x, not −x: a head that puts all its weight on one token has entropy +0.0, not −0.0
        "entropy_bits": np.clip(0.0 - plogp.sum(axis=-1).mean(axis=-1), 0.0, None),
    }


def format_head_summary(maps: AttentionMaps, layers: Sequence[int], heads: Sequence[int]) -> str:
    """One line per head: how much it looks at itself, the previous token, the first token."""
    stats = head_statistics(maps)
    rows = []
    for layer in layers:
        for head in heads:
            s = {name: float(v[layer, head]) for name, v in stats.items()}
            kind = max(("self", "previous", "first"), key=lambda name: s[name])
            label = f"mostly {kind}" if s[kind] >= 0.5 else "spread"
            rows.append([str(layer), str(head), f"{s['self']:.2f}", f"{s['previous']:.2f}",
                         f"{s['first']:.2f}", f"{s['distance']:.1f}", f"{s['entropy_bits']:.2f}", label])
    header = ["layer", "head", "self", "previous", "first", "mean distance", "entropy (bits)", ""]
    return _table(header, rows, False, [True] * 7 + [False])


def format_next_token(pred: NextToken, markdown: bool = False) -> str:
    """The top-k next tokens: rank, token, id, probability and a bar."""
    rows = [[str(r + 1), printable(t), str(i), f"{p:.4f}", _bar(float(p))]
            for r, (t, i, p) in enumerate(zip(pred.top_tokens, pred.top_ids, pred.top_probs))]
    return _table(["rank", "token", "id", "probability", ""], rows, markdown, [True, False, True, True, False])


def format_surprisal(s: Surprisal, markdown: bool = False) -> str:
    """One row per scored token (positions 1..T-1) and a closing line with the perplexity."""
    rows = [[str(i + 1), printable(s.tokens[i + 1]), f"{p:.4f}", f"{b:.2f}", f"{n:.2f}"]
            for i, (p, b, n) in enumerate(zip(s.probs, s.bits, s.nats))]
    table = _table(["pos", "token", "p(token)", "bits", "nats"], rows, markdown, [True, False, True, True, True])
    return (f"{table}\nmean surprisal {s.mean_bits:.3f} bits = {s.mean_nats:.3f} nats per token; "
            f"perplexity {s.perplexity:.2f} over {len(s.nats)} predicted tokens")


def format_lens(lens: LogitLens, markdown: bool = False, max_width: int = 100) -> str:
    """Rows = layers (embed first), columns = positions; each cell the top token and its
    probability. Column header ``3:x→`` means "reading position 3 (token x), predicting the next".
    A plain table wider than ``max_width`` is split into several blocks of positions."""
    T = len(lens.tokens)
    header = ["layer"] + [f"{i}:{printable(t)}→" for i, t in enumerate(lens.tokens)]
    cells = [[name] + [f"{printable(lens.top_tokens[r][i][0])} {lens.top_probs[r, i, 0]:.2f}" for i in range(T)]
             for r, name in enumerate(lens.layers)]
    if markdown:
        return _table(header, cells, True, [False] * (T + 1))
    col = [max(len(header[c]), *(len(row[c]) for row in cells)) for c in range(T + 1)]
    blocks, start = [], 1
    while start <= T:
        end, width = start, col[0]
        while end <= T and (end == start or width + 2 + col[end] <= max_width):
            width += 2 + col[end]
            end += 1
        cols = [0, *range(start, end)]
        blocks.append(_table([header[c] for c in cols], [[row[c] for c in cols] for row in cells],
                             False, [False] * len(cols)))
        start = end
    return "\n\n".join(blocks)


def format_neighbours(query: str, neighbours: Sequence[Neighbour]) -> str:
    """Nearest tokens by cosine similarity of their embeddings."""
    rows = [[str(r + 1), printable(n.token), str(n.token_id), f"{n.similarity:+.3f}"]
            for r, n in enumerate(neighbours)]
    title = f"nearest tokens to {printable(query)!s} (cosine similarity of embedding rows)"
    return title + "\n" + _table(["rank", "token", "id", "cosine"], rows, False, [True, False, True, True])


def format_pca(pca: EmbeddingPCA) -> str:
    """One line: how many tokens, which method, and the variance the two axes explain."""
    r = pca.explained_variance_ratio
    return (f"PCA of {len(pca.token_ids)} token embeddings ({pca.method}): PC1 explains {r[0]:.1%}, "
            f"PC2 {r[1]:.1%} of the variance")
