"""The benchmark scripts in bench/ run end to end on tiny settings (their numbers are not checked here)."""

import importlib
import sys
from pathlib import Path

import pytest

from gptlab.generate.compiled import has_cpp_compiler

BENCH = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.slow  # 5-10 s each (decode: ~30 s, it compiles), mostly importing transformers and timed rounds


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


TINY_MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab-size", "64"]


def test_train_throughput_runs(bench, capsys):
    pytest.importorskip("transformers")
    results = bench("train_throughput").main(
        [*TINY_MODEL, "--block-size", "16", "--batch-size", "2", "--warmup", "1", "--rounds", "2", "--steps", "1"]
    )
    assert results["gptlab"]["tokens_per_s"] > 0 and results["hf"]["tokens_per_s"] > 0
    assert results["ratio"] > 0 and results["ceiling"] > 0
    out = capsys.readouterr().out
    assert "gptlab / hf training throughput" in out and "ceiling here" in out


def test_decode_runs_and_matches_hf(bench, capsys):
    pytest.importorskip("transformers")
    results = bench("decode").main(
        [*TINY_MODEL, "--block-size", "32", "--prompt-len", "4", "--new-tokens", "8", "--warmup", "0", "--rounds", "2"]
    )
    assert results["identical"], "gptlab and Hugging Face greedy decoding disagree"
    assert results["ratio"] > 0 and results["ceiling"] > 0
    if has_cpp_compiler():  # the compiled sides (gptlab's and HF's) ran and agreed too
        assert results["ratio_compiled"] > 0 and results["ratio_compiled_vs_hf_compiled"] > 0
    out = capsys.readouterr().out
    assert "same tokens  True" in out and "ceiling here" in out


def test_time_to_quality_runs(bench, tmp_path, corpus_file):
    results = bench("time_to_quality").main([
        str(corpus_file), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "8", "--schedule-steps", "20", "--warmup", "2", "--eval-interval", "5",
        "--eval-iters", "2", "--target", "4.5", "--confirm-margin", "0.5", "--max-time", "60",
        "--work-dir", str(tmp_path / "ttq"), "--json", str(tmp_path / "ttq.json"),
    ])
    assert results["steps"] >= 1
    assert results["curve"], "no evaluation was recorded"
    assert results["reached"] == (results["final_val_loss"] <= 4.5)
    assert (tmp_path / "ttq.json").exists()


def test_gpu_train_throughput_runs_on_cpu(bench, capsys):
    results = bench("gpu_train").main(
        ["throughput", "--device", "cpu", "--preset", "tiny", "--batch-size", "2", "--steps", "2", "--warmup", "1"]
    )
    assert results["tokens_per_s"] > 0
    assert results["mfu"] is None  # no known peak for a CPU: not guessed
    assert "MFU" not in capsys.readouterr().out.splitlines()[-1]


def test_gpu_train_quality_recipe_runs_on_cpu(bench, tmp_path, corpus_file):
    results = bench("gpu_train").main([
        "quality", str(corpus_file), "--device", "cpu", "--dtype", "float32", "--no-compile",
        "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--schedule-steps", "10", "--eval-interval", "5", "--eval-iters", "2", "--target", "9",
        "--work-dir", str(tmp_path / "q"),
    ])
    assert results["reached"] and results["config"]["dropout"] == 0.2
