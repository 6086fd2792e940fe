"""README.md's tour cannot rot: every command of its "A tour of the story" block runs, on a run of
GPT-2's shape and on one of the Llama family's (the presets ``tiny`` and ``llama-tiny``).

The block's lines run as written, in an empty folder, with flags appended to keep them short
(argparse lets the last flag win). ``runs/python-stdlib``, which the README's main job makes, is
made first by a tiny ``gptlab train`` of the shape. Each command has its entry in ``SHORT``: the
flags it gets, and whether it needs a run (then it runs once per shape) or not (once). A line
whose command has no entry fails the test, so a command added to the tour is run here too. What a
line's comment names besides it (adaline and xor, --fsdp, a full fine-tune, the other views of
inspect, import-hf, cost) runs after it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gptlab.cli.main import main
from gptlab.generate.compiled import has_cpp_compiler

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR = "## A tour of the story"

SHAPES = {"gpt2": "tiny", "llama": "llama-tiny"}  # shape -> the preset its run is trained with
ARCHITECTURE = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}  # what export-hf writes

TRAIN = ["--tokenizer", "char", "--block-size", "32", "--batch-size", "4", "--max-steps", "4", "--warmup-steps", "1",
         "--eval-interval", "4", "--eval-iters", "1", "--sample-tokens", "0", "--no-progress"]

# command -> (flags appended, needs runs/python-stdlib); torchrun's are those of the train it runs
SHORT: dict[str, tuple[list[str], bool]] = {
    "perceptron": (["--epochs", "2"], False),
    "count": ([], False),
    "train": (TRAIN, True),
    "torchrun": (TRAIN + ["--data", "notes.txt", "--out", "runs/ddp"], True),
    "sample": (["--max-new-tokens", "8"], True),
    "finetune": (["--max-steps", "2", "--batch-size", "2", "--no-progress"], True),
    "inspect": ([], True),
    "export-hf": ([], True),
    "export-gguf": ([], True),
    "serve": ([], True),
}

NOTES = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))  # the user's own text
EXAMPLES = [{"prompt": f"def d{i}(x):\n", "completion": "    return 2*x\n"} for i in range(8)]


def tour() -> list[list[str]]:
    """The tour block's commands, each split as the shell would (its trailing comment dropped)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(TOUR)
    opening = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].startswith("```"))
    return [shlex.split(line, comments=True) for line in lines[opening + 1 : closing] if line.strip()]


def command_of(argv: list[str]) -> str:
    return argv[0] if argv[0] == "torchrun" else argv[1]


def test_the_tour_has_only_commands_this_test_knows() -> None:
    commands = tour()
    assert len(commands) >= 10, "the README's tour block was not found or has lost its commands"
    unknown = [argv for argv in commands if argv[0] not in ("gptlab", "torchrun") or command_of(argv) not in SHORT]
    assert not unknown, f"add these README commands to SHORT in {Path(__file__).name}: {unknown}"


def run_gptlab(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``gptlab ARGS`` in this process; its standard output, after checking it exited with 0."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"gptlab {shlex.join(argv)} exited with {code}:\n{err[-2000:]}"
    assert "Traceback" not in err, err
    return out


# what the comments of those lines name besides them: "then adaline, xor", "gptlab cost: dollars"
ALSO_WITHOUT_RUN = {
    "perceptron": [["adaline", "--epochs", "2"], ["xor", "--epochs", "200"]],
    "count": [["cost"]],
}


def test_the_tour_commands_that_need_no_run(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")  # the perceptron draws its weights
    pytest.importorskip("sklearn")  # and learns scikit-learn's digits
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in tour():
        flags, needs_run = SHORT.get(command_of(argv), ([], True))
        if not needs_run:
            for args in [argv[1:] + flags, *ALSO_WITHOUT_RUN.get(command_of(argv), [])]:
                out = run_gptlab(args, capsys)
                assert out.strip(), f"gptlab {shlex.join(args)} printed nothing"
                ran.append(args[0])
    assert ran == ["perceptron", "adaline", "xor", "count", "cost"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_tour_command_runs_on_the_shape(shape: str, tmp_path, monkeypatch, capsys) -> None:
    for module in ("transformers", "peft", "gguf", "fastapi", "uvicorn", "openai", "matplotlib"):  # dev extras
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text(NOTES, encoding="utf-8")
    Path("examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES), encoding="utf-8")
    preset = ["--preset", SHAPES[shape]]
    run_gptlab(["train", "--data", "notes.txt", "--out", "runs/python-stdlib", *TRAIN, *preset], capsys)

    done = set()
    for argv in tour():
        command = command_of(argv)
        flags, needs_run = SHORT[command]
        if not needs_run:
            continue
        if command == "train":
            flags = flags + preset
        if command == "torchrun":
            check_torchrun(argv, flags + preset)
            check_torchrun(argv, flags + preset + ["--fsdp", "--out", "runs/fsdp"])  # "DDP, or --fsdp"
        elif command == "serve":
            check_serve(argv)
        elif command == "sample" and "--compile" in argv and not has_cpp_compiler():
            continue  # tests/generate/test_sampler.py checks the clear error there is then
        else:
            out = run_gptlab(argv[1:] + flags, capsys)
            check_output(argv, out, shape, lambda args: run_gptlab(args, capsys))
        done.add(command)
    expected = {command for command, (_, needs_run) in SHORT.items() if needs_run}
    if not has_cpp_compiler():
        expected.discard("sample")
    assert done == expected


def check_output(argv: list[str], out: str, shape: str, gptlab: Callable[[list[str]], str]) -> None:
    """What each command of the tour says it leaves behind."""
    command = command_of(argv)
    if command == "train":
        assert Path(argv[argv.index("--out") + 1], "LATEST").is_file()
    elif command == "sample":
        prompt = argv[argv.index("--prompt") + 1]
        assert out.startswith(prompt)
    elif command == "finetune":
        assert Path(argv[argv.index("--out") + 1], "LATEST").is_file()
        full = [a for a in argv[1:] if a != "--lora"]  # "full or LoRA"
        full[full.index("--out") + 1] = "runs/full"
        gptlab(full + SHORT["finetune"][0])
        assert Path("runs/full/LATEST").is_file()
    elif command == "inspect":
        assert Path("runs/inspect/attention.html").is_file()
        run = argv[3]
        # the line's comment names the other views: they run on the same run
        for view in (["next", run, "def "], ["lens", run, "import os"], ["embeddings", run, "--token", "e"]):
            assert gptlab(["inspect", *view]).strip()
    elif command == "export-hf":
        folder = Path(argv[3])
        if "--peft" in argv:
            assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        else:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            assert config["architectures"] == [ARCHITECTURE[shape]]
            # "import-hf: the way in": back into a run that writes what the first one writes
            gptlab(["import-hf", str(folder), "--out", "runs/back"])
            greedy = ["--prompt", "def ", "--temperature", "0", "--max-new-tokens", "12"]
            assert gptlab(["sample", "runs/back", *greedy]) == gptlab(["sample", argv[2], *greedy])
    elif command == "export-gguf":
        with open(argv[3], "rb") as f:
            assert f.read(4) == b"GGUF"


def check_torchrun(argv: list[str], flags: list[str]) -> None:
    """torchrun with 2 processes on the CPU (gloo), where the README says 4."""
    args = argv[1:]
    args[args.index("--nproc_per_node") + 1] = "2"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args, *flags],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout + proc.stderr
    out = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--out"][-1]  # argparse takes the last
    assert Path(out, "LATEST").is_file()


def check_serve(argv: list[str]) -> None:
    """The server of the README's line, on a free port: one completion through the openai client."""
    import openai

    from tests.server.conftest import start_server

    run = Path(argv[2])
    server = start_server(run, Path.cwd(), *argv[3:])
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        model = client.models.list().data[0].id
        completion = client.completions.create(model=model, prompt="def ", max_tokens=4, temperature=0)
        assert completion.choices[0].text and completion.usage.completion_tokens <= 4
    finally:
        server.stop()
