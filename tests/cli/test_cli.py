import json
import subprocess
import sys

import pytest

from gptlab.cli.main import main
from gptlab.generate.compiled import has_cpp_compiler

TINY = ["--preset", "tiny", "--tokenizer", "char", "--block-size", "32", "--batch-size", "4", "--max-steps", "6",
        "--warmup-steps", "2", "--eval-interval", "3", "--eval-iters", "1", "--no-progress"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def trained_run(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data", str(corpus_file), "--out", str(out), *TINY,
                                "--sample-tokens", "10", "--sample-prompt", "def ")
    assert code == 0, err
    assert stdout.startswith("def ")
    return out


def test_train_then_sample_streams_text(trained_run, capsys):
    code, out, err = run_cli(capsys, "sample", str(trained_run), "--prompt", "class ",
                             "--max-new-tokens", "12", "--seed", "1", "--temperature", "0.9")
    assert code == 0, err
    assert out.startswith("class ")
    again = run_cli(capsys, "sample", str(trained_run), "--prompt", "class ", "--max-new-tokens", "12",
                    "--seed", "1", "--temperature", "0.9")[1]
    assert again == out


@pytest.mark.slow
@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")
def test_sample_compile_prints_what_eager_sampling_prints(trained_run, capsys):
    flags = ("--prompt", "def ", "--max-new-tokens", "20", "--seed", "3", "--temperature", "0.8")
    code, compiled, err = run_cli(capsys, "sample", str(trained_run), *flags, "--compile")
    assert code == 0, err
    assert "compiling the decode step" in err  # says why the first token takes a while
    assert compiled == run_cli(capsys, "sample", str(trained_run), *flags)[1]


def test_config_file_and_flags(tmp_path, corpus_file, capsys):
    cfg = tmp_path / "train.toml"
    cfg.write_text('preset = "tiny"\ntokenizer = "char"\nblock-size = 32\nbatch_size = 4\nmax_steps = 50\nwarmup_steps = 1\n'
                   'eval_interval = 2\neval_iters = 1\nprogress = false\nsample_tokens = 0\n')
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--config", str(cfg), "--data", str(corpus_file),
                           "--out", str(out), "--max-steps", "3")
    assert code == 0, err
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["max_steps"] == 3 and saved["batch_size"] == 4 and saved["block_size"] == 32
    yaml_cfg = tmp_path / "train.yaml"
    yaml_cfg.write_text("preset: tiny\nlearning_rate: -1\n")
    code, _, err = run_cli(capsys, "train", "--config", str(yaml_cfg), "--out", str(tmp_path / "r2"))
    assert_one_line_error(code, err, "learning_rate")


def test_resume_continues_a_run(tmp_path, corpus_file, capsys, trained_run):
    code, _, err = run_cli(capsys, "train", "--out", str(trained_run), "--resume", "--max-steps", "9",
                           "--sample-tokens", "0")
    assert code == 0, err
    assert (trained_run / "LATEST").read_text().strip() == "ckpt-000009"


@pytest.mark.parametrize(
    "setup, args, fragments",
    [
        (None, ["train", "--data", "{tmp}/missing.txt"], ["missing.txt"]),
        ("empty", ["train", "--data", "{tmp}/empty.txt"], ["empty"]),
        ("binary", ["train", "--data", "{tmp}/binary.bin"], ["binary.bin"]),
        ("short", ["train", "--data", "{tmp}/short.txt", *TINY], ["shorter than one window"]),
        (None, ["train", "--preset", "gpt9"], ["unknown preset"]),
        (None, ["train", "--batch-size", "0"], ["batch_size"]),
        (None, ["train", "--optimizer", "sgd"], ["optimizer must be adamw or muon"]),
        (None, ["train", "--config", "{tmp}/nope.toml"], ["nope.toml"]),
        ("badtoml", ["train", "--config", "{tmp}/bad.toml"], ["bad.toml"]),
        (None, ["sample", "{tmp}/no-run"], ["no-run"]),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, setup, args, fragments):
    if setup == "empty":
        (tmp_path / "empty.txt").write_text("")
    elif setup == "binary":
        (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 10)
    elif setup == "short":
        (tmp_path / "short.txt").write_text("x = 1\n")
    elif setup == "badtoml":
        (tmp_path / "bad.toml").write_text("max_steps = = 3\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "out")) if args[0] == "train" else run_cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out" / "LATEST").exists()


def test_corrupted_checkpoint_and_generation_past_the_context(trained_run, capsys):
    # prompt and new tokens together far past the 32-token context: the window slides, as in nanoGPT
    code, out, err = run_cli(capsys, "sample", str(trained_run), "--prompt", "x" * 40, "--max-new-tokens", "50",
                             "--temperature", "0")
    assert code == 0 and out.startswith("x" * 40) and len(out) > 40, err
    latest = trained_run / (trained_run / "LATEST").read_text().strip()
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli(capsys, "sample", str(trained_run))
    assert_one_line_error(code, err, "model.safetensors")


def test_console_script_help_and_error_exit_code(tmp_path, capsys):
    # --help exits 0 through argparse (checked in this process: one interpreter start fewer); the
    # error's exit code and its one line go through a real `python -m gptlab`
    with pytest.raises(SystemExit) as help_exit:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert help_exit.value.code == 0 and "--max-time" in out and "--resume" in out
    result = subprocess.run([sys.executable, "-m", "gptlab", "sample", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
