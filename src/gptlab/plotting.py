"""matplotlib, imported lazily with the file-only Agg backend, and one way to save a figure.

Every picture gptlab draws (the first chapter's, the loss curve's, the inspect views') goes
through here; matplotlib is the ``plot`` extra, so nothing imports it before a picture is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (raises ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, tight_bbox: bool = False) -> Path:
    """Write ``fig`` to ``path`` (parent folders made) and close it. ``tight_bbox`` crops the saved
    image to what is drawn; otherwise the figure's layout is tightened before saving."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight_bbox:
        fig.savefig(path, bbox_inches="tight")
    else:
        fig.tight_layout()
        fig.savefig(path)
    pyplot().close(fig)
    return path
