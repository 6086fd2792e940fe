"""Finding a Hugging Face model: a directory, a model id in the local hub cache, or a download.

:func:`resolve_hf_source` looks in the local cache only and never touches the network.
:func:`fetch_hf_model` does the same first, then, unless told to stay offline (``offline=True``,
``--offline``, or ``HF_HUB_OFFLINE=1``), downloads the snapshot with ``huggingface_hub`` into that
cache — the config, tokenizer and weight files only. ``huggingface_hub`` reads a token for private
or gated models from ``HF_TOKEN`` (or ``hf auth login``) itself. A snapshot already in the cache
is used as it is: ``hf download ID`` refreshes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gptlab.errors import CheckpointError
from gptlab.interop.hf_files import SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE, TORCH_INDEX

logger = logging.getLogger(__name__)

# what import needs from a repository: config, tokenizer, and one kind of weights
META_PATTERNS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt")
SAFETENSORS_PATTERNS = ("model*.safetensors", SAFETENSORS_INDEX)
TORCH_PATTERNS = ("pytorch_model*.bin", TORCH_INDEX)
TRUE = ("1", "on", "yes", "true")


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache, resolved as ``huggingface_hub`` does: ``$HF_HUB_CACHE``,
    else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
    else ``~/.cache/huggingface/hub`` (read at each call, so a changed environment counts)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = Path(os.path.expandvars(xdg)).expanduser() / "huggingface"
    return home / "hub"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads (read at each call)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE


def _repo_id(name: str) -> str:
    """``name`` if it looks like a model id (``NAME`` or ``ORG/NAME``); CheckpointError if not."""
    parts = name.split("/")
    if not name or len(parts) > 2 or any(not part or part in (".", "..") for part in parts):
        raise CheckpointError(f"{name}: no such directory, and not a Hugging Face model id (ORG/NAME)")
    return name


def _directory(name_or_dir: str | Path) -> Path | None:
    """``name_or_dir`` if it is a directory, None if it does not exist; CheckpointError for a file."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: not a directory (give the model directory, not a file in it)")
    return None


def _cached_snapshot(repo_id: str, revision: str) -> tuple[Path | None, Path]:
    """The snapshot of ``repo_id`` at ``revision`` (branch, tag or commit) in the local cache, or
    None; and the repository's cache folder (for messages)."""
    repo = hf_cache_dir() / ("models--" + "--".join(repo_id.split("/")))
    ref = repo / "refs" / revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / commit
    return (snapshot if snapshot.is_dir() else None), repo


def resolve_hf_source(name_or_dir: str | Path, *, revision: str = "main") -> Path:
    """The directory to import from: ``name_or_dir`` itself if it is a directory, else the
    snapshot of model id ``name_or_dir`` at ``revision`` (a branch, tag or commit hash) in the
    local Hugging Face cache (``models--ORG--NAME/snapshots/<commit>``, see :func:`hf_cache_dir`).

    Never downloads (see :func:`fetch_hf_model`). Raises CheckpointError when it is neither,
    saying where it looked.
    """
    directory = _directory(name_or_dir)
    if directory is not None:
        return directory
    repo_id = _repo_id(str(name_or_dir))
    snapshot, repo = _cached_snapshot(repo_id, revision)
    if snapshot is None:
        raise CheckpointError(
            f"{repo_id}: not a local directory, and not found in the local Hugging Face cache "
            f"({repo} has no snapshot for revision {revision!r}); this lookup never downloads: "
            f"use fetch_hf_model or `gptlab import-hf {repo_id}`, or pass a directory"
        )
    return snapshot


def fetch_hf_model(name_or_dir: str | Path, *, revision: str = "main", offline: bool = False) -> Path:
    """The directory to import from, as :func:`resolve_hf_source` finds it, else model id
    ``name_or_dir`` at ``revision`` downloaded from the Hugging Face Hub into the local cache
    (its config, tokenizer and weight files: safetensors, or ``pytorch_model*.bin`` when the
    repository has no safetensors).

    ``offline`` — or ``HF_HUB_OFFLINE=1`` in the environment — forbids the download. Raises
    CheckpointError (one line, naming the id) for a model that is not cached while offline, or a
    download that fails (no such repository or revision, a gated model without a token, no network).
    """
    directory = _directory(name_or_dir)
    if directory is not None:
        return directory
    repo_id = _repo_id(str(name_or_dir))
    snapshot, repo = _cached_snapshot(repo_id, revision)
    if snapshot is not None:
        return snapshot
    if offline or hub_offline():
        raise CheckpointError(
            f"{repo_id}: not found in the local Hugging Face cache ({repo} has no snapshot for revision "
            f"{revision!r}) and downloading is off (--offline or HF_HUB_OFFLINE=1)"
        )
    snapshot = _download(repo_id, revision, SAFETENSORS_PATTERNS)
    if not (snapshot / SAFETENSORS_FILE).is_file() and not (snapshot / SAFETENSORS_INDEX).is_file():
        logger.info("%s has no safetensors weights: fetching %s", repo_id, TORCH_FILE)
        snapshot = _download(repo_id, revision, TORCH_PATTERNS)
    return snapshot


def _download(repo_id: str, revision: str, weight_patterns: tuple[str, ...]) -> Path:
    """``snapshot_download`` of the files import needs; its errors as one-line CheckpointErrors."""
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(
            f"{repo_id}: not in the local Hugging Face cache, and downloading needs huggingface_hub "
            "(pip install 'gptlab[hf]')"
        ) from None
    logger.info("downloading %s (revision %s) from the Hugging Face Hub", repo_id, revision)
    try:
        path = huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=hf_cache_dir(),
            allow_patterns=[*META_PATTERNS, *weight_patterns],
        )
    except Exception as exc:  # huggingface_hub's errors (HTTP, not found, gated), OSError, no network
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{repo_id}: download failed ({type(exc).__name__}: {first_line})") from None
    return Path(path)
