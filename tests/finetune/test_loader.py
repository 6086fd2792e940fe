"""One loader for every command and the Python API: a LoRA run is its base plus its adapter
everywhere (``load_run``, ``sample``, ``inspect``, ``export-hf``), never the bare base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gptlab.cli.main import main
from gptlab.errors import CheckpointError
from gptlab.finetune.config import LoRAConfig
from gptlab.finetune.finetuner import build_finetuner
from gptlab.finetune.loader import find_adapter, load_run
from gptlab.finetune.lora import lora_modules
from gptlab.train.checkpoint import load_checkpoint
from tests.finetune.test_finetuner import ft_config, make_base, reverse_task, write_jsonl

X = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A base run and a LoRA run fine-tuned on it (a few steps at a high rate, so that the adapter
    changes the logits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loader")
    base = make_base(root / "base", dropout=0.0)
    data = write_jsonl(root / "data.jsonl", reverse_task(24))
    build_finetuner(ft_config(base, data, root / "lora", max_steps=4, eval_interval=4, learning_rate=3e-2,
                              lora=LoRAConfig(rank=2, alpha=4.0))).fit()
    torch.set_num_threads(threads)
    return base, root / "lora"


def test_a_lora_run_loads_as_base_plus_adapter(runs) -> None:
    base, lora = runs
    loaded = load_run(lora)
    assert loaded.is_lora and lora_modules(loaded.model) and not loaded.merged
    assert loaded.adapter is not None and loaded.adapter.path == find_adapter(lora)
    adapted = logits(loaded.model)
    stored = logits(load_checkpoint(lora).model)  # the checkpoint's weights alone: the frozen base
    torch.testing.assert_close(stored, logits(load_checkpoint(base).model), rtol=0, atol=0)
    assert (adapted - stored).abs().max() > 1e-2
    merged = load_run(lora, merge=True)
    assert merged.merged and not lora_modules(merged.model)
    torch.testing.assert_close(logits(merged.model), adapted, rtol=1e-5, atol=1e-5)
    # the adapter directory on its own loads onto the base it records, or the one given
    torch.testing.assert_close(logits(load_run(find_adapter(lora)).model), adapted, rtol=0, atol=0)
    torch.testing.assert_close(logits(load_run(find_adapter(lora), base=base).model), adapted, rtol=0, atol=0)
    plain = load_run(base)
    assert not plain.is_lora and "LoRA" not in plain.describe() and "LoRA adapter" in loaded.describe()


def test_bad_paths_are_one_line_errors(runs, tmp_path: Path) -> None:
    base, lora = runs
    with pytest.raises(CheckpointError, match="only given with an adapter"):
        load_run(lora, base=base)
    broken = tmp_path / "broken"
    shutil.copytree(lora, broken)
    shutil.rmtree(find_adapter(broken))
    with pytest.raises(CheckpointError, match="which is missing"):
        load_run(broken)


def test_every_command_uses_the_adapter(runs, tmp_path: Path, capsys) -> None:
    """inspect, export-hf and sample on a LoRA run show the adapted model, as on its merged run."""
    from gptlab.interop.hf import import_hf

    base, lora = runs
    merged = tmp_path / "merged"
    assert main(["lora", "merge", str(lora), "--out", str(merged)]) == 0
    capsys.readouterr()
    outputs = {}
    for name, run in (("lora", lora), ("merged", merged), ("base", base)):
        assert main(["inspect", "next", str(run), "abc=", "--device", "cpu", "--out", str(tmp_path / name)]) == 0
        outputs[name] = capsys.readouterr().out
    assert outputs["lora"] == outputs["merged"] != outputs["base"]

    assert main(["export-hf", str(lora), str(tmp_path / "hf")]) == 0
    assert "merged model (base + LoRA adapter" in capsys.readouterr().out
    exported, _ = import_hf(tmp_path / "hf")
    torch.testing.assert_close(logits(exported), logits(load_run(lora).model), rtol=1e-5, atol=1e-5)

    for name, run in (("lora", lora), ("merged", merged)):
        assert main(["sample", str(run), "--prompt", "abc=", "--max-new-tokens", "8", "--temperature", "0",
                     "--device", "cpu"]) == 0
        outputs[name] = capsys.readouterr().out
    assert outputs["lora"] == outputs["merged"]


def test_the_checkpoint_says_which_adapter_it_names(runs) -> None:
    _, lora = runs
    state = json.loads((load_checkpoint(lora).path / "state.json").read_text())["state"]
    assert (lora / state["adapter"]) == find_adapter(lora)


def test_an_adapter_trained_on_a_lora_run_loads_on_its_own(runs, tmp_path: Path) -> None:
    """A LoRA run fine-tuned further with LoRA: its adapter's base is the first run merged, and the
    adapter directory alone (or merged by ``gptlab lora merge``) gives the same model as the run."""
    base, lora = runs
    data = write_jsonl(tmp_path / "data.jsonl", reverse_task(24, seed=1))
    second = build_finetuner(ft_config(lora, data, tmp_path / "second", max_steps=2, eval_interval=2,
                                       learning_rate=3e-2, lora=LoRAConfig(rank=2))).fit()
    whole = logits(load_run(tmp_path / "second").model)
    torch.testing.assert_close(logits(load_run(second.adapter).model), whole, rtol=1e-6, atol=1e-6)
    assert main(["lora", "merge", str(second.adapter), "--out", str(tmp_path / "merged")]) == 0
    torch.testing.assert_close(logits(load_run(tmp_path / "merged").model), whole, rtol=1e-5, atol=1e-5)
    # an adapter directory is a base too: fine-tuning starts from base + adapter, merged
    tuner = build_finetuner(ft_config(find_adapter(lora), data, tmp_path / "third", max_steps=1))
    assert not lora_modules(tuner.model)
    torch.testing.assert_close(logits(tuner.model), logits(load_run(lora).model), rtol=1e-5, atol=1e-5)
