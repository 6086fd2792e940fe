"""Checkpoints: safetensors weights and optimizer state, JSON config and training state.

A run directory holds numbered checkpoint folders and a ``LATEST`` file naming the newest complete
one::

    runs/NAME/ckpt-000500/  model.safetensors  optimizer.safetensors  config.json  tokenizer.json  state.json
    runs/NAME/LATEST        "ckpt-000500"

A checkpoint folder is written under a temporary name, every file fsynced, then renamed; only then
is ``LATEST`` replaced (atomically). A crash at any moment leaves ``LATEST`` naming a complete
checkpoint. ``state.json`` records the SHA-256 of every file, checked on load, so a truncated or
corrupted checkpoint is an error rather than silently wrong weights. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError, ConfigError, TokenizerError
from gptlab.fileio import atomic_write_text, fsync_dir, sha256_file
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer

FORMAT_VERSION = 1
LATEST = "LATEST"


@dataclass
class Checkpoint:
    """What a checkpoint holds, loaded and validated."""

    path: Path
    config: GPTConfig
    model: GPT
    tokenizer: Tokenizer
    state: dict[str, Any] = field(default_factory=dict)  # step, train config, data position, ...
    optimizer_state: dict[str, Any] | None = None  # torch optimizer state_dict, if saved
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)


def _optimizer_tensors(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state_dict into flat tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in optimizer_state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": dict(sorted(state.items())), "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path,
    model: GPT,
    tokenizer: Tokenizer,
    *,
    step: int,
    state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    keep: int = 1,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step`` into ``run_dir`` and point ``LATEST`` at it.

    ``state`` is any JSON-able training state (train config, data position, metrics). The torch
    RNG state is saved too. Older checkpoints beyond the newest ``keep`` are removed afterwards.
    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()``
    (a sharded model's gathered full state). Returns the checkpoint folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:06d}"
    final = run_dir / name
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.tmp-"))
    try:
        weights = {
            k: v.detach().cpu().contiguous()
            for k, v in (model.state_dict() if model_state is None else model_state).items()
            if k not in model.tied_keys()
        }
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / "rng.safetensors"))
        optimizer_meta = None
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        if optimizer_state is not None:
            tensors, optimizer_meta = _optimizer_tensors(optimizer_state)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        tokenizer.save(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        for file_name in files:
            with open(tmp / file_name, "rb") as f:
                os.fsync(f.fileno())
        record = {
            "format": FORMAT_VERSION,
            "step": step,
            "optimizer": optimizer_meta,
            "state": state or {},
            "sha256": {file_name: sha256_file(tmp / file_name) for file_name in files},
        }
        with open(tmp / "state.json", "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        aside = None
        if final.exists():  # re-saving a step: move the old copy aside, never write into it
            aside = run_dir / f".{name}.old-{os.getpid()}"
            os.rename(final, aside)
        os.rename(tmp, final)
        fsync_dir(run_dir)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(run_dir / LATEST, name + "\n")
    _prune(run_dir, keep)
    return final


def _prune(run_dir: Path, keep: int) -> None:
    checkpoints = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())
    for old in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*run_dir.glob(".ckpt-*.tmp-*"), *run_dir.glob(".ckpt-*.old-*")]:  # left by a crash
        shutil.rmtree(stale, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory (via ``LATEST``) or a checkpoint folder to the checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint")
    if (path / "state.json").exists():
        return path
    latest = path / LATEST
    if latest.exists():
        target = path / latest.read_text().strip()
        if not (target / "state.json").exists():
            raise CheckpointError(f"{path}: LATEST names {target.name}, which is missing or incomplete")
        return target
    raise CheckpointError(f"{path}: not a gptlab run or checkpoint (no LATEST or state.json)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted JSON ({exc})") from None


def load_config(path: str | Path) -> GPTConfig:
    """The model config of a run or checkpoint, without loading any weights."""
    folder = find_checkpoint(path)
    try:
        return GPTConfig.from_dict(_read_json(folder / "config.json"))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: invalid model config ({exc})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from None


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", with_optimizer: bool = False
) -> Checkpoint:
    """Load and validate a checkpoint (a run directory or a checkpoint folder).

    Checks file hashes, that the weights match the config exactly (names and shapes), and that the
    tokenizer fits the model's vocabulary. Raises CheckpointError naming the problem.
    """
    folder = find_checkpoint(path)
    record = _read_json(folder / "state.json")
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: unsupported checkpoint format {record.get('format')!r}")
    for file_name, expected in record.get("sha256", {}).items():
        file_path = folder / file_name
        if not file_path.exists():
            raise CheckpointError(f"{file_path}: missing")
        if sha256_file(file_path) != expected:
            raise CheckpointError(f"{file_path}: checksum mismatch (truncated or corrupted)")
    config = load_config(folder)
    try:
        tokenizer = Tokenizer.load(folder)
    except TokenizerError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{config.vocab_size} embeddings"
        )
    weights = _load_tensors(folder / "model.safetensors")
    with torch.device("meta"):
        model = GPT(config)
    expected_shapes = {k: v.shape for k, v in model.state_dict().items() if k not in model.tied_keys()}
    missing = sorted(set(expected_shapes) - set(weights))
    unexpected = sorted(set(weights) - set(expected_shapes))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: weights do not match the config (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
        )
    for key, shape in expected_shapes.items():
        if weights[key].shape != shape:
            raise CheckpointError(
                f"{folder}: {key} has shape {tuple(weights[key].shape)}, config says {tuple(shape)}"
            )
    model = model.to_empty(device=device)
    model.load_state_dict(weights, strict=False)
    model.tie_weights()  # to_empty made the head a parameter of its own
    model.reset_buffers()  # and left the rotary angles uninitialised
    optimizer_state = None
    if with_optimizer and record.get("optimizer") is not None:
        optimizer_state = _optimizer_state(_load_tensors(folder / "optimizer.safetensors"), record["optimizer"])
    rng_path = folder / "rng.safetensors"
    rng_state = _load_tensors(rng_path) if rng_path.exists() else {}
    return Checkpoint(
        path=folder,
        config=config,
        model=model,
        tokenizer=tokenizer,
        state=record.get("state", {}),
        optimizer_state=optimizer_state,
        rng_state=rng_state,
    )
