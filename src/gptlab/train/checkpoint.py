"""Checkpoints: safetensors weights and optimizer state, JSON config and training state.

A run directory holds numbered checkpoint folders (the newest ``keep``, 3 by default) and a
``LATEST`` file naming the newest complete one::

    runs/NAME/ckpt-000500/  model.safetensors  optimizer.safetensors  rng.safetensors  config.json
                            tokenizer.json  state.json
    runs/NAME/LATEST        "ckpt-000500"

A checkpoint folder is written under a temporary name, every file fsynced, then renamed; only then
is ``LATEST`` replaced (atomically). A crash at any moment leaves ``LATEST`` naming a complete
checkpoint. ``state.json`` records the SHA-256 of every file and a checksum of itself, checked on
load, so a truncated, corrupted or edited checkpoint is an error rather than silently wrong
weights, and loading a run falls back to the newest intact checkpoint with a warning naming the
damaged file. Files get the umask's modes (0644 / 0755 under 022). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError, ConfigError, TokenizerError
from gptlab.fileio import (
    aside_path,
    atomic_write_text,
    follow_umask,
    fsync_dir,
    is_disk_full,
    remove_leftovers,
    sha256_file,
    temp_dir,
)
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: state.json carries a checksum of itself; 1 (without) still loads
LATEST = "LATEST"
STATE_FILE = "state.json"
CKPT_NAME = re.compile(r"ckpt-\d+")
DEFAULT_KEEP = 3
TRAINING_ONLY_FILES = ("optimizer.safetensors", "rng.safetensors")  # not needed to use the model


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
    keep: int = DEFAULT_KEEP,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step`` into ``run_dir`` and point ``LATEST`` at it.

    ``state`` is any JSON-able training state (train config, data position, metrics). The torch
    RNG state is saved too. Older checkpoints beyond the newest ``keep`` are removed afterwards.
    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()``
    (a sharded model's gathered full state). Returns the checkpoint folder.

    A failed write (a full disk, any OSError) raises CheckpointError saying so; the run's earlier
    checkpoints and ``LATEST`` are left as they were.
    """
    run_dir = Path(run_dir)
    name = f"ckpt-{step:06d}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_folder(run_dir, name, model, tokenizer, step, state, optimizer, model_state, optimizer_state)
        atomic_write_text(run_dir / LATEST, name + "\n")
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(save_failure(run_dir, name, exc)) from None
    _prune(run_dir, keep)
    return run_dir / name


def save_failure(run_dir: Path, name: str, exc: BaseException) -> str:
    """The one-line message of a failed save of ``name`` in ``run_dir``: why, and which checkpoint is still good."""
    reason = "the disk is full" if is_disk_full(exc) else (getattr(exc, "strerror", None) or str(exc))
    try:
        kept = f"the last good checkpoint, {find_checkpoint(run_dir).name}, is kept"
    except CheckpointError:
        kept = "no earlier checkpoint was written"
    return f"{run_dir}: could not save {name} ({reason}); {kept}"


def _write_folder(
    run_dir: Path, name: str, model: GPT, tokenizer: Tokenizer, step: int, state: dict[str, Any] | None,
    optimizer: torch.optim.Optimizer | None, model_state: dict[str, torch.Tensor] | None,
    optimizer_state: dict[str, Any] | None,
) -> None:
    """Build checkpoint ``name`` in a temporary folder and rename it into place (fsynced)."""
    final = run_dir / name
    tmp = temp_dir(run_dir, name)
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
            follow_umask(tmp / file_name)
            with open(tmp / file_name, "rb") as f:
                os.fsync(f.fileno())
        record: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "step": step,
            "optimizer": optimizer_meta,
            "state": state or {},
            "sha256": {file_name: sha256_file(tmp / file_name) for file_name in files},
        }
        record["checksum"] = state_checksum(record)
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp / STATE_FILE)
        fsync_dir(tmp)
        aside = None
        if final.exists():  # re-saving a step: move the old copy aside, never write into it
            aside = aside_path(final)
            os.rename(final, aside)
        os.rename(tmp, final)
        fsync_dir(run_dir)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def state_checksum(record: dict[str, Any]) -> str:
    """SHA-256 of a ``state.json`` record without its own ``checksum`` (canonical JSON)."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _step_of(folder: Path) -> int:
    return int(folder.name.split("-", 1)[1])


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The run's complete-looking checkpoint folders (``ckpt-NNNNNN`` with a state.json), oldest first."""
    folders = [p for p in Path(run_dir).glob("ckpt-*") if CKPT_NAME.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(folders, key=_step_of)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run: a ``LATEST`` file or any checkpoint folder."""
    return (Path(run_dir) / LATEST).exists() or bool(checkpoint_folders(run_dir))


def _prune(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (never the one LATEST names); remove crash leftovers."""
    latest = _read_latest(run_dir)[0]
    checkpoints = [p for p in checkpoint_folders(run_dir) if p.name != latest]
    for old in checkpoints[: max(0, len(checkpoints) - max(keep - 1, 0))]:
        shutil.rmtree(old, ignore_errors=True)
    remove_leftovers(run_dir, "ckpt-*")


def _read_latest(run_dir: Path) -> tuple[str | None, str | None]:
    """(the name in ``LATEST``, None) or (None, why it is unusable); (None, None) when there is none."""
    latest = run_dir / LATEST
    try:
        name = latest.read_bytes().decode("utf-8").strip()
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, f"{latest} is damaged (not UTF-8 text)"
    except OSError as exc:
        return None, f"{latest}: cannot read ({exc.strerror})"
    if not name:
        return None, f"{latest} is empty"
    if not CKPT_NAME.fullmatch(name):
        return None, f"{latest} is damaged (names {name[:40]!r}, not a checkpoint folder)"
    if not (run_dir / name / STATE_FILE).is_file():
        return None, f"{latest} names {name}, which is missing or incomplete"
    return name, None


def checkpoint_candidates(path: str | Path) -> tuple[list[Path], list[str]]:
    """The checkpoint folders ``path`` may stand for, best first, and what was wrong on the way.

    A checkpoint folder stands for itself. A run directory stands for the folder ``LATEST``
    names, then every other checkpoint folder, newest first (the fallbacks). Raises
    CheckpointError when there is nothing at all.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint")
    if (path / STATE_FILE).exists():
        return [path], []
    name, problem = _read_latest(path)
    folders = checkpoint_folders(path)[::-1]
    if name is not None:
        folders = [path / name, *(f for f in folders if f.name != name)]
    if not folders:
        if problem is not None:
            raise CheckpointError(f"{problem}, and the run has no checkpoint folder to fall back to")
        raise CheckpointError(f"{path}: not a gptlab run or checkpoint (no LATEST or state.json)")
    return folders, [problem] if problem else []


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory (via ``LATEST``, else its newest checkpoint folder) or a checkpoint
    folder to the checkpoint folder. Nothing is verified here: :func:`load_checkpoint` does that."""
    return checkpoint_candidates(path)[0][0]


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


def read_record(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's ``state.json``, checked against its own checksum (no weights read)."""
    path = Path(folder) / STATE_FILE
    record = _read_json(path)
    if not isinstance(record, dict) or record.get("format") not in (1, FORMAT_VERSION):
        found = record.get("format") if isinstance(record, dict) else None
        raise CheckpointError(f"{path}: unsupported checkpoint format {found!r}")
    if record["format"] >= 2 and record.get("checksum") != state_checksum(record):
        raise CheckpointError(f"{path}: checksum mismatch (edited, truncated or corrupted)")
    return record


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", with_optimizer: bool = False
) -> Checkpoint:
    """Load and validate a checkpoint (a run directory or a checkpoint folder).

    Checks file hashes, that the weights match the config exactly (names and shapes), and that the
    tokenizer fits the model's vocabulary. For a run directory, a damaged newest checkpoint (or a
    damaged ``LATEST``) falls back to the newest intact one, with a warning naming what was
    damaged. Without ``with_optimizer`` the optimizer and RNG files are neither read nor needed.
    Raises CheckpointError naming the problem when no checkpoint is intact.
    """
    folders, problems = checkpoint_candidates(path)
    errors: list[CheckpointError] = []
    for folder in folders:
        try:
            ckpt = _load_folder(folder, device, with_optimizer)
        except CheckpointError as exc:
            errors.append(exc)
            continue
        for problem in [*problems, *(str(e) for e in errors)]:
            log.warning("%s; using the checkpoint %s instead", problem, ckpt.path.name)
        return ckpt
    if len(errors) > 1:
        raise CheckpointError(f"{errors[0]} (and no older checkpoint is intact: {errors[-1]})")
    raise errors[0]


def _load_folder(folder: Path, device: str | torch.device, with_optimizer: bool) -> Checkpoint:
    record = read_record(folder)
    for file_name, expected in record.get("sha256", {}).items():
        if file_name in TRAINING_ONLY_FILES and not with_optimizer:
            continue
        file_path = folder / file_name
        if not file_path.exists():
            raise CheckpointError(f"{file_path}: missing")
        if sha256_file(file_path) != expected:
            raise CheckpointError(f"{file_path}: checksum mismatch (truncated or corrupted)")
    try:
        config = GPTConfig.from_dict(_read_json(folder / "config.json"))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: invalid model config ({exc})") from None
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
    rng_state: dict[str, torch.Tensor] = {}
    if with_optimizer:
        if record.get("optimizer") is not None:
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


def saved_settings(run_dir: str | Path, file_name: str, state_key: str) -> dict[str, Any]:
    """The settings a run saved in ``run_dir/file_name`` ({} when there is no such file).

    A damaged file (not JSON, not UTF-8, not an object) is recovered from the newest intact
    checkpoint, whose state keeps the same settings under ``state_key``, with a warning; when no
    checkpoint has them either, CheckpointError names the file.
    """
    path = Path(run_dir) / file_name
    try:
        settings = json.loads(path.read_bytes().decode("utf-8"))
        if isinstance(settings, dict):
            return settings
        problem = "not a JSON object"
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"damaged: {exc}"
    except OSError as exc:
        problem = f"cannot read: {exc.strerror}"
    try:
        folders = checkpoint_candidates(run_dir)[0]
    except CheckpointError:
        folders = []
    for folder in folders:
        try:
            settings = read_record(folder).get("state", {}).get(state_key)
        except CheckpointError:
            continue
        if isinstance(settings, dict):
            log.warning("%s (%s): using the settings recorded in %s", path, problem, folder.name)
            return settings
    raise CheckpointError(f"{path}: {problem}, and no checkpoint records the run's settings")
