"""The benchmark scripts in bench/ run end to end on tiny settings (their numbers are not checked here)."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gptlab.generate.compiled import has_cpp_compiler
from gptlab.train import precision

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


@pytest.mark.parametrize("shape, dtype", [
    ("gpt2", "float32"), ("llama", "float32"), ("llama", "bfloat16"), ("llama", "auto"),
])
def test_train_throughput_runs(bench, capsys, shape, dtype):
    pytest.importorskip("transformers")
    results = bench("train_throughput").main(
        [*TINY_MODEL, "--block-size", "16", "--batch-size", "2", "--warmup", "1", "--rounds", "2", "--steps", "1",
         "--shape", shape, "--dtype", dtype]
    )
    assert results["gptlab"]["tokens_per_s"] > 0 and results["hf"]["tokens_per_s"] > 0
    assert results["ratio"] > 0 and results["ceiling"] > 0
    out = capsys.readouterr().out
    assert "gptlab / hf training throughput" in out and "ceiling here" in out
    said = precision.describe(dtype, torch.device("cpu")) + (" (--dtype auto)" if dtype == "auto" else "")
    assert f"{said}, CPU" in out and said.startswith("bf16 autocast" if dtype == "bfloat16" else "")


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


def test_decode_of_the_llama_shape_matches_hf(bench, capsys):
    pytest.importorskip("transformers")
    results = bench("decode").main(
        [*TINY_MODEL, "--block-size", "32", "--prompt-len", "4", "--new-tokens", "8", "--warmup", "0", "--rounds", "2",
         "--shape", "llama", "--no-compile"]
    )
    assert results["identical"], "gptlab and Hugging Face's Llama greedy decoding disagree"
    assert "Llama arch" in capsys.readouterr().out


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


def test_time_to_quality_checks_once_when_the_schedule_ends(bench, tmp_path, corpus_file):
    """The default protocol (the speedrun's): train the whole schedule, then one full validation."""
    results = bench("time_to_quality").main([
        str(corpus_file), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "8", "--schedule-steps", "6", "--warmup", "2", "--target", "0.1",
        "--work-dir", str(tmp_path / "ttq"),
    ])
    assert results["steps"] == 6 and not results["reached"]  # 0.1 is out of reach: the schedule ran out
    [point] = results["curve"]  # evaluated once, at the end, in full whatever the quick estimate said
    assert point["step"] == 6 and point["val_full"] == results["final_val_loss"]
    assert results["train_s"] + results["eval_s"] == pytest.approx(results["wall_s"])
    assert 0 < results["eval_s"] < results["wall_s"]


@pytest.mark.parametrize("shape", ["tiny", "llama-tiny"])  # GPT-2's shape and the Llama family's
def test_gpu_train_throughput_runs_on_cpu(bench, capsys, shape):
    results = bench("gpu_train").main(
        ["throughput", "--device", "cpu", "--preset", shape, "--batch-size", "2", "--steps", "2", "--warmup", "1"]
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


def test_code_quality_runs_on_a_tiny_run(bench, tmp_path, corpus_file, capsys):
    from gptlab.train.trainer import TrainConfig, build_trainer

    run = tmp_path / "run"
    build_trainer(TrainConfig(
        data=str(corpus_file), out=str(run), preset="tiny", tokenizer="char", block_size=16, n_embd=32,
        batch_size=4, max_steps=3, warmup_steps=1, eval_iters=1, progress=False, sample_tokens=0,
    )).fit()
    code_quality = bench("code_quality")
    argv = [str(run), "--samples", "3", "--max-new-tokens", "24", "--max-eval-bytes", "800", "--device", "cpu"]
    results = code_quality.main([*argv, "--json", str(tmp_path / "cq.json")])
    heldout, parse = results["heldout"], results["parse"]
    assert results["run"]["steps"] == 3 and results["run"]["training_s"] > 0
    assert heldout["source"].endswith("val.bin") and 0 < heldout["bytes"] <= 800
    # every text token is scored once (the char tokenizer: one token per character here)
    assert heldout["tokens"] == heldout["bytes"] and heldout["bits_per_byte"] > 0
    assert parse["samples"] == 3 and len(parse["functions"]) == 3
    assert parse["max_new_tokens"] == 24  # past the context of 16: the sampler slides its window
    assert (tmp_path / "cq.json").exists()
    out = capsys.readouterr().out
    assert "held-out bits per byte" in out and "parse rate (T=0.8): " in out and "parse rate (greedy)" in out
    assert f"of training wall time (cpu, {precision.describe('auto', torch.device('cpu'))})" in out

    # without the run's data dir, the val documents are re-split from the corpus: the same text
    shutil.rmtree(run / "data")
    again = code_quality.main(argv + ["--samples", "0"])["heldout"]
    assert again["sha256"] == heldout["sha256"]
    assert again["bits_per_byte"] == pytest.approx(heldout["bits_per_byte"])
    # --held-out scores another prepared data dir's val split (here: a copy of the run's own)
    other = tmp_path / "other-data"
    from gptlab.data.shards import prepare
    prepare(corpus_file, other, tokenizer_kind="char", progress=False)
    elsewhere = code_quality.main(argv + ["--samples", "0", "--held-out", str(other)])["heldout"]
    assert elsewhere["source"] == f"{other}/val.bin" and elsewhere["sha256"] == heldout["sha256"]
    with pytest.raises(SystemExit, match="not a prepared data directory"):
        code_quality.main(argv + ["--samples", "0", "--held-out", str(tmp_path)])

    with pytest.raises(SystemExit, match="no such run"):  # one line, not a traceback
        code_quality.main([str(tmp_path / "missing")])
    assert parse["token_healing"] is False  # the documented protocol: healing only when asked
    healed = code_quality.main([*argv, "--samples", "1", "--token-healing"])["parse"]
    assert healed["token_healing"] is True and healed["samples"] == 1


def test_code_quality_cuts_functions_where_the_next_statement_starts(bench):
    code_quality = bench("code_quality")

    def cut(text: str) -> str | None:
        end = code_quality.function_end(text)
        return None if end is None else text[:end]

    assert cut("def f(x):\n    return x\n\ndef g():\n") == "def f(x):\n    return x\n\n"
    assert cut("def f(\n    a,\n):\n    return a\nx = 1\n") == "def f(\n    a,\n):\n    return a\n"
    assert cut('def f():\n    """doc\nat column 0\n"""\n# note\n    return 1\ny\n').endswith("return 1\n")
    assert cut("    def f(self): pass\n    def g(self): pass\n") == "    def f(self): pass\n"
    assert cut("def f():\n    return 1\n") is None  # not ended yet: out of tokens here means truncated
    # a body deeper than the def line (a method's, sampled without its class) ends where it dedents
    method = "def f(self):\n        x = 1\n        return x\n"
    assert cut(method + "    def g(self):\n        pass\n") == method
    assert cut(method + "  # a comment\n        y = 2\n    z\n") == method + "  # a comment\n        y = 2\n"
    assert cut("def f():\n    if a:\n        b\n    c\n  d\n") == "def f():\n    if a:\n        b\n    c\n"
    assert code_quality.parse_error(method) is None
    # parsing is the protocol's measure; compiling is also reported, as the parser accepts some errors
    assert code_quality.parse_error("def f(x, x):\n    pass\n") is None
    assert code_quality.compile_error("def f(x, x):\n    pass\n").startswith("SyntaxError: duplicate argument")
    assert code_quality.compile_error(method) is None
    assert code_quality.parse_error("    def f(self):\n        return 1\n") is None
    assert code_quality.parse_error("default = 1\n") == "not a def: Assign"
    assert code_quality.parse_error("def f(:\n").startswith("SyntaxError")


def test_malloc_runs(bench, capsys):
    results = bench("malloc").main(["--pairs", "1", "--steps", "1", "--no-compile"])
    (default, kept), = results["eager"]["pairs"]
    assert default["step_s"] > 0 and kept["step_s"] > 0 and results["eager"]["ratio"] > 0
    assert "kept / default speed" in capsys.readouterr().out
