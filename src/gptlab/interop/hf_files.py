"""The files of a Hugging Face model directory: reading its JSON and weight files, and writing a
whole directory atomically. Knows nothing of any architecture.

Weights come from ``model.safetensors`` (or its sharded ``model.safetensors.index.json``) or, for
old checkpoints, ``pytorch_model.bin`` (or sharded) through ``torch.load(weights_only=True)``,
which refuses anything but tensors.
"""

from __future__ import annotations

import json
import os
import pickle  # only for its error type: torch.load(weights_only=True) unpickles nothing but tensors
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from gptlab.errors import CheckpointError
from gptlab.fileio import follow_umask, fsync_dir, temp_dir

CONFIG_FILE = "config.json"
SAFETENSORS_FILE, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_FILE, TORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; CheckpointError if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from None


def read_config(directory: Path) -> dict[str, Any]:
    """``directory/config.json`` as a dict; CheckpointError if missing, unreadable or not an object."""
    config = read_json(directory / CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / CONFIG_FILE}: not a JSON object")
    return config


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from None
    try:  # weights_only: the restricted unpickler, which loads tensors and refuses code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot load as plain tensors ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(state)


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, safetensors first; CheckpointError if none."""
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (TORCH_FILE, TORCH_INDEX)):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{directory / index}: no weight_map")
            return [directory / name for name in dict.fromkeys(weight_map.values())]
    present = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(
        f"{directory}: no weights: need {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {TORCH_FILE} or "
        f"{TORCH_INDEX} (found: {', '.join(present) or 'nothing'})"
    )


def read_weights(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (name, tensor) of a model directory's weights, one file (shard) at a time."""
    for path in weight_files(directory):
        yield from _load_weight_file(path).items()


# ---------------------------------------------------------------------------------------------
# writing


def check_out_dir(out: Path, overwrite: bool, marker: str = CONFIG_FILE) -> None:
    """Refuse to write a model directory at ``out`` when it exists and is not empty, unless
    ``overwrite`` — and even then only if it is a directory of the same kind (has ``marker``:
    ``config.json`` for a model, ``adapter_config.json`` for an adapter) holding no gptlab run.
    Raises CheckpointError."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise CheckpointError(f"{out}: already exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    # Overwriting deletes the old directory: only ever a model directory, never a run or anything else
    if not (out / marker).is_file() or (out / "LATEST").exists() or (out / "state.json").exists():
        raise CheckpointError(
            f"{out}: refusing to replace a directory that is not a Hugging Face model directory "
            f"(no {marker}, or it holds a gptlab run)"
        )


def write_model_dir(
    out: Path, weights: dict[str, torch.Tensor], files: Mapping[str, Any], *, overwrite: bool = False,
    weights_file: str = SAFETENSORS_FILE, marker: str = CONFIG_FILE,
) -> Path:
    """Write ``weights`` as ``weights_file`` and each of ``files`` (name → JSON content) into
    directory ``out``, atomically: into a temporary sibling, fsynced, then renamed into place, so
    ``out`` is either absent/old or complete. See :func:`check_out_dir` for what may be replaced
    (``marker``: the file that says a directory is of this kind)."""
    from safetensors.torch import save_file

    check_out_dir(out, overwrite, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out.parent, out.name)
    aside = None
    try:
        save_file(weights, str(tmp / weights_file), metadata={"format": "pt"})
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            follow_umask(path)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        check_out_dir(out, overwrite, marker)  # again: someone may have written there meanwhile
        if out.is_dir():
            if any(out.iterdir()):
                aside = out.parent / f".{out.name}.old-{os.getpid()}"
                os.rename(out, aside)
            else:
                out.rmdir()
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and not out.exists():
            os.rename(aside, out)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return out
