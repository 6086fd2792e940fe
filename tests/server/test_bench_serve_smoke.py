"""bench/serve.py runs end to end on a tiny setting (its numbers are not checked here)."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow  # starts a server process: ~10 s


def test_serve_bench_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("serve", None)
    bench = importlib.import_module("serve")
    results = bench.main([
        "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--clients", "3",
        "--requests", "1", "--tokens", "8", "--prompt-len", "4", "--rounds", "1", "--threads", "1",
        "--json", str(tmp_path / "serve.json"),
    ])
    assert results["single"]["tokens_per_s"] > 0 and results["concurrent"]["tokens_per_s"] > 0
    assert results["ratio"] > 0 and results["single"]["ttft_p50_ms"] > 0
    assert "3 clients / 1" in capsys.readouterr().out
    assert (tmp_path / "serve.json").exists()
