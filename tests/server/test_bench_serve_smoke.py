"""bench/serve.py runs end to end on a tiny setting (its numbers are not checked here)."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow  # starts four server processes: ~30 s


def test_serve_bench_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("serve", None)
    bench = importlib.import_module("serve")
    results = bench.main([
        "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--clients", "3",
        "--requests", "1", "--tokens", "8", "--prompt-len", "4", "--rounds", "1", "--threads", "1",
        "--shared-tokens", "4", "--shared-rounds", "1", "--json", str(tmp_path / "serve.json"),
    ])
    assert results["single"]["tokens_per_s"] > 0 and results["concurrent"]["tokens_per_s"] > 0
    assert results["ratio"] > 0 and results["single"]["ttft_p50_ms"] > 0
    assert "3 clients / 1" in capsys.readouterr().out
    assert (tmp_path / "serve.json").exists()
    shared = results["shared_cpu"]
    assert set(shared) == set(bench.SHARED_SETUPS)
    assert all(r["quiet_tokens_per_s"] > 0 and r["busy_tokens_per_s"] > 0 for r in shared.values())
