"""LoRA (Hu et al. 2021): train a low-rank update ``ΔW = (alpha / r) · B A`` next to frozen weights.

:class:`LoRALinear` takes over an ``nn.Linear``'s own weight and bias Parameters (frozen) and adds
``lora_A`` (r, in), initialised like ``nn.Linear`` (Kaiming-uniform), and ``lora_B`` (out, r),
zeros, so a fresh adapter leaves the model's outputs exactly unchanged. Because the base weights
keep their names (``...attn.c_attn.weight``), a model with adapters still loads a plain GPT state
dict, and the base can be fingerprinted while adapters are attached.

An adapter is saved on its own: a directory with ``adapter.safetensors`` (only the ``lora_A`` /
``lora_B`` tensors) and ``adapter.json`` (rank, alpha, dropout, targets, the SHA-256 of the
tensors, and the fingerprint of the base model it was trained on). Loading it onto any other base
raises :class:`AdapterMismatchError`. ``merge_lora`` folds the update into the base weights and
puts plain ``nn.Linear`` layers back, giving an ordinary GPT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gptlab.errors import CheckpointError, ConfigError
from gptlab.fileio import aside_path, follow_umask, fsync_dir, sha256_file, temp_dir
from gptlab.finetune.config import DEFAULT_LORA_TARGETS, LoRAConfig
from gptlab.model.linear import linear

__all__ = [
    "ADAPTER_META",
    "ADAPTER_WEIGHTS",
    "DEFAULT_LORA_TARGETS",
    "Adapter",
    "AdapterMismatchError",
    "LoRAConfig",
    "LoRALinear",
    "apply_adapter",
    "inject_lora",
    "load_adapter",
    "load_lora_state_dict",
    "lora_modules",
    "lora_state_dict",
    "merge_lora",
    "model_fingerprint",
    "plain_linears",
    "remove_lora",
    "save_adapter",
    "trainable_fraction",
    "unmerge_lora",
]

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_META = "adapter.json"
ADAPTER_FORMAT = 1
LORA_KEYS = ("lora_A", "lora_B")


class AdapterMismatchError(CheckpointError):
    """A LoRA adapter that does not fit the model it is applied to (another base, other shapes)."""


class LoRALinear(nn.Module):
    """``y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ`` with W, b frozen (those of ``base``).

    While :attr:`merged` the update is inside ``weight`` and the LoRA path is skipped.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.weight = base.weight  # the same Parameter objects: nothing is copied
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and the LoRA reference code)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        object.__setattr__(self, "_base", base)  # not a submodule: restored by remove/merge

    @property
    def base(self) -> nn.Linear:
        """The wrapped ``nn.Linear`` (sharing ``weight`` and ``bias`` with this module)."""
        return self._base  # type: ignore[no-any-return]

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) · B A``, shaped like ``weight`` (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = linear(x, self.weight, self.bias)  # (..., out)
        if self.merged:
            return y
        h = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        # y + scaling · h Bᵀ in one addmm: no separate (..., out) update tensor to allocate and scale
        out = torch.addmm(y.reshape(-1, self.out_features), h.reshape(-1, self.rank), self.lora_B.t(), alpha=self.scaling)
        return out.view(y.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``weight`` (no-op when merged already)."""
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of ``weight`` again (exact up to float rounding)."""
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}"


def _module_matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each target ``nn.Linear`` in a :class:`LoRALinear`.

    Afterwards only ``lora_A`` / ``lora_B`` require gradients. Returns the wrapped module names.
    Raises ConfigError when a target matches no module or a module that is not ``nn.Linear``, and
    when the model has adapters already.
    """
    if lora_modules(model):
        raise ConfigError("the model has LoRA adapters already: merge or remove them first")
    linears = dict(model.named_modules())
    chosen: list[str] = []
    for target in config.targets:
        matches = [name for name in linears if _module_matches(name, target)]
        if not matches:
            raise ConfigError(f"LoRA target {target!r} matches no module of the model")
        for name in matches:
            if not isinstance(linears[name], nn.Linear):
                raise ConfigError(f"LoRA target {name!r} is a {type(linears[name]).__name__}, not nn.Linear")
            if name not in chosen:
                chosen.append(name)
    for param in model.parameters():
        param.requires_grad_(False)
    for name in sorted(chosen, key=list(linears).index):
        base = linears[name]
        assert isinstance(base, nn.Linear)
        _set_submodule(model, name, LoRALinear(base, config.rank, config.alpha, config.dropout))
    return [name for name in linears if name in chosen]


def remove_lora(model: nn.Module) -> None:
    """Put the plain ``nn.Linear`` layers back (unmerged weights), dropping the adapters."""
    for name, module in lora_modules(model).items():
        module.unmerge()
        _set_submodule(model, name, module.base)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put plain ``nn.Linear`` layers back.

    The result is an ordinary model (same state-dict keys as before injection) whose outputs equal
    the adapted model's in eval mode, up to float rounding. Returns ``model``.
    """
    for name, module in lora_modules(model).items():
        module.merge()
        _set_submodule(model, name, module.base)
    return model


def unmerge_lora(model: nn.Module) -> None:
    """Take merged updates back out of the weights of every (still attached) LoRA layer."""
    for module in lora_modules(model).values():
        module.unmerge()


@contextlib.contextmanager
def plain_linears(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block ``model`` has its plain ``nn.Linear`` layers back (sharing the base
    weights, adapters unmerged): its state dict is exactly the base model's. The adapters return
    afterwards. Used to checkpoint the base of a LoRA run."""
    modules = lora_modules(model)
    merged = {name for name, m in modules.items() if m.merged}
    for name, module in modules.items():
        module.unmerge()
        _set_submodule(model, name, module.base)
    try:
        yield model
    finally:
        for name, module in modules.items():
            _set_submodule(model, name, module)
            if name in merged:
                module.merge()


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only: ``{module name}.lora_A`` and ``.lora_B`` for each LoRA layer."""
    return {
        f"{name}.{key}": getattr(module, key) for name, module in lora_modules(model).items() for key in LORA_KEYS
    }


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into the model's LoRA layers. The key sets must match exactly and the
    shapes agree, else AdapterMismatchError."""
    own = lora_state_dict(model)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise AdapterMismatchError(
            f"adapter tensors do not match the model's LoRA layers (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]})"
        )
    for key, param in own.items():
        if tensors[key].shape != param.shape:
            raise AdapterMismatchError(
                f"adapter tensor {key} has shape {tuple(tensors[key].shape)}, the model needs {tuple(param.shape)}"
            )
        param.copy_(tensors[key])


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------
# fingerprints and adapter files


@torch.no_grad()
def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's config and base weights (names, dtypes, shapes and bytes, in sorted
    order; adapters and the tied ``lm_head.weight`` left out). Equal weights give equal
    fingerprints whatever the file they came from; adapters attached or not does not matter."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    state = model.state_dict()
    tied = model.tied_keys() if hasattr(model, "tied_keys") else ("lm_head.weight",)
    for key in sorted(state):
        if key.rsplit(".", 1)[-1] in LORA_KEYS or key in tied:
            continue
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Adapter:
    """An adapter read from disk: its config, tensors and metadata (see :func:`save_adapter`)."""

    path: Path
    config: LoRAConfig
    tensors: dict[str, torch.Tensor]
    base_fingerprint: str
    meta: dict[str, Any]


def save_adapter(
    model: nn.Module,
    directory: str | Path,
    config: LoRAConfig,
    *,
    base_fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the model's adapters to ``directory`` (``adapter.safetensors`` + ``adapter.json``).

    The directory is built under a temporary name and renamed into place, so it is either complete
    or absent; an existing ``directory`` is replaced only once the new one is complete.
    ``extra`` (JSON-able, e.g. where the base came from) is stored in ``adapter.json``.
    """
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    if not tensors:
        raise ConfigError("the model has no LoRA adapters to save")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(directory.parent, directory.name)
    try:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        meta = {
            "format": ADAPTER_FORMAT,
            "lora": config.to_dict(),
            "modules": sorted({k.rsplit(".", 1)[0] for k in tensors}),
            "base_fingerprint": base_fingerprint,
            "sha256": sha256_file(tmp / ADAPTER_WEIGHTS),
            **(extra or {}),
        }
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for name in (ADAPTER_WEIGHTS, ADAPTER_META):
            follow_umask(tmp / name)
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        aside = None
        if directory.exists():
            aside = aside_path(directory)
            os.rename(directory, aside)
        os.rename(tmp, directory)
        fsync_dir(directory.parent)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_META).is_file()


def load_adapter(directory: str | Path) -> Adapter:
    """Read and validate an adapter directory. Raises CheckpointError when it is missing, corrupted
    (checksum) or malformed."""
    directory = Path(directory)
    meta_path = directory / ADAPTER_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a LoRA adapter (no {ADAPTER_META})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: corrupted JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{meta_path}: unsupported adapter format {meta.get('format')!r}")
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    if sha256_file(weights) != meta.get("sha256"):
        raise CheckpointError(f"{weights}: checksum mismatch (truncated or corrupted)")
    try:
        config = LoRAConfig.from_dict(meta["lora"])
        tensors = load_file(str(weights))
    except (KeyError, ConfigError, SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: malformed adapter ({exc})") from None
    return Adapter(directory, config, tensors, str(meta.get("base_fingerprint", "")), meta)


def apply_adapter(model: nn.Module, adapter: Adapter, *, check_base: bool = True) -> list[str]:
    """Attach ``adapter`` to ``model`` (injecting its LoRA layers and loading its tensors).

    With ``check_base`` the model's :func:`model_fingerprint` must equal the adapter's base
    fingerprint: an adapter trained on another base raises AdapterMismatchError and leaves the
    model untouched. Returns the adapted module names.
    """
    if check_base:
        fingerprint = model_fingerprint(model)
        if fingerprint != adapter.base_fingerprint:
            raise AdapterMismatchError(
                f"{adapter.path}: adapter was trained on another base model (base fingerprint "
                f"{adapter.base_fingerprint[:12]}…, this model {fingerprint[:12]}…)"
            )
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    names = inject_lora(model, adapter.config)
    try:
        load_lora_state_dict(model, adapter.tensors)
    except AdapterMismatchError:
        remove_lora(model)
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad[name])
        raise
    return names
