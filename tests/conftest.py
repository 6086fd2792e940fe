import inspect
import textwrap
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """About 20 kB of real Python source: textwrap.py from the running interpreter."""
    return inspect.getsource(textwrap)


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path
