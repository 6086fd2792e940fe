"""Finding a model by id: the local hub cache first, else a download with huggingface_hub —
tested offline: against a cache laid out as huggingface_hub lays it out, and with
``snapshot_download`` replaced by a stand-in that records what it was asked (no test reaches the
network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from gptlab.cli.main import main
from gptlab.errors import CheckpointError
from gptlab.interop.hf import import_hf
from gptlab.interop.hub import fetch_hf_model, hf_cache_dir
from gptlab.train.checkpoint import load_checkpoint

from .test_hf import fake_cache

pytest.importorskip("transformers")  # the model directories are saved by transformers
huggingface_hub = pytest.importorskip("huggingface_hub")

REPO = "tiny-org/tiny-llama"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache that huggingface_hub and gptlab both use, and a snapshot_download that
    fails the test if called (tests that allow a download replace it again)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError(f"snapshot_download called: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    return tmp_path / "hub"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_by_id_from_the_cache_with_the_network_off(family_dir, cache: Path, tmp_path: Path, capsys) -> None:
    source = family_dir("llama")
    snapshot = fake_cache(cache, REPO, source)
    assert fetch_hf_model(REPO) == snapshot
    code, stdout, _ = run_cli(capsys, "import-hf", REPO, "--out", str(tmp_path / "run"))
    assert code == 0 and "imported tiny-org/tiny-llama" in stdout
    checkpoint = load_checkpoint(tmp_path / "run")
    assert same_weights(checkpoint.model, import_hf(source).model)
    code, stdout, _ = run_cli(capsys, "sample", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "4",
                              "--temperature", "0")
    assert code == 0


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_a_missing_model_offline_is_one_line_naming_the_id(how: str, cache: Path, tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if how == "HF_HUB_OFFLINE=1" else "0")
    flags = ["--offline"] if how == "--offline" else []
    code, _, stderr = run_cli(capsys, "import-hf", "someone/missing-model", "--out", str(tmp_path / "x"), *flags)
    assert code == 1 and stderr.count("\n") == 1
    assert "someone/missing-model" in stderr and "downloading is off" in stderr
    assert not (tmp_path / "x").exists()


def stand_in(calls: list[dict], source: Path, *, skip: tuple[str, ...] = ()):
    """A snapshot_download that fills the cache from ``source`` (less ``skip``) and records its arguments."""

    def snapshot_download(repo_id: str, **kwargs) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        partial = Path(kwargs["cache_dir"]).parent / f"download-{len(calls)}"
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*skip))
        repo = Path(kwargs["cache_dir"]) / ("models--" + repo_id.replace("/", "--"))
        shutil.rmtree(repo, ignore_errors=True)
        return str(fake_cache(Path(kwargs["cache_dir"]), repo_id, partial, commit=f"{len(calls):040d}"))

    return snapshot_download


def test_a_missing_model_is_downloaded_into_the_cache(family_dir, cache: Path, tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", stand_in(calls, family_dir("qwen2")))
    code, stdout, _ = run_cli(capsys, "import-hf", REPO, "--revision", "v1.0", "--out", str(tmp_path / "run"))
    assert code == 0, stdout
    (call,) = calls
    assert call["repo_id"] == REPO and call["revision"] == "v1.0" and Path(call["cache_dir"]) == hf_cache_dir() == cache
    assert {"config.json", "tokenizer.json", "model*.safetensors", "model.safetensors.index.json"} <= set(
        call["allow_patterns"])
    assert not any(p.endswith(".bin") for p in call["allow_patterns"])  # one kind of weights only
    assert same_weights(load_checkpoint(tmp_path / "run").model, import_hf(family_dir("qwen2")).model)


def test_pytorch_bin_is_fetched_only_without_safetensors(family_dir, cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        stand_in(calls, family_dir("llama"), skip=("model.safetensors",)))
    fetch_hf_model(REPO)
    assert len(calls) == 2 and "pytorch_model*.bin" in calls[1]["allow_patterns"]


def test_download_errors_are_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def refused(repo_id: str, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot reach the Hub.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    with pytest.raises(CheckpointError, match=r"^someone/private: download failed \(LocalEntryNotFoundError: "
                                              r"Cannot reach the Hub.\)$"):
        fetch_hf_model("someone/private")


def test_a_directory_is_never_looked_up(family_dir, cache: Path) -> None:
    assert fetch_hf_model(family_dir("llama"), offline=True) == family_dir("llama")
    with pytest.raises(CheckpointError, match="not a Hugging Face model id"):
        fetch_hf_model("a/b/c")
