"""Looking inside a trained GPT: what it attends to, what it predicts, and how it gets there.

- :mod:`~gptlab.inspect.views` — one forward pass with read-only hooks (:func:`capture`), and the
  views built on it: attention maps, next-token probabilities, surprisal, the logit lens,
  nearest tokens and a PCA of the embeddings;
- :mod:`~gptlab.inspect.text` — the same views as text tables for a terminal;
- :mod:`~gptlab.inspect.plots` — as pictures (matplotlib, the ``plot`` extra);
- :mod:`~gptlab.inspect.html` — attention as one self-contained, interactive HTML page.
"""

from gptlab.inspect.views import (
    AttentionMaps,
    EmbeddingPCA,
    LogitLens,
    NextToken,
    Surprisal,
    attention,
    capture,
    embedding_pca,
    logit_lens,
    nearest_tokens,
    next_token,
    surprisal,
)

__all__ = [
    "AttentionMaps",
    "EmbeddingPCA",
    "LogitLens",
    "NextToken",
    "Surprisal",
    "attention",
    "capture",
    "embedding_pca",
    "logit_lens",
    "nearest_tokens",
    "next_token",
    "surprisal",
]
