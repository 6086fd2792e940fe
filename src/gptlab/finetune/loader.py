"""One way to load any run as the model it stands for: every command and the Python API use it.

A path may be a pre-trained or fully fine-tuned run (or one of its checkpoint folders), a LoRA run,
or a standalone adapter directory. :func:`load_run` gives back the model *as it is used*: for a
LoRA run, the base that its checkpoint holds with the adapter attached (or folded in, with
``merge=True``); for an adapter directory, its base (the path it records, or ``base=``) with the
adapter attached. ``gptlab.train.checkpoint.load_checkpoint`` stays what it is, the reader of one
checkpoint's stored weights (for a LoRA run: the frozen base only).

The run's chat template, when it has one of its own (a model imported from Hugging Face keeps
its ``chat_template``), comes back too; ``None`` means gptlab's ChatML (``gptlab.data.chat``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import CheckpointError
from gptlab.finetune.lora import Adapter, apply_adapter, is_adapter, load_adapter, merge_lora
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT
from gptlab.train.checkpoint import Checkpoint, find_checkpoint, load_checkpoint

__all__ = ["CHAT_TEMPLATE_KEY", "ChatTemplate", "LoadedRun", "find_adapter", "load_run"]

logger = logging.getLogger(__name__)

# where a run's own chat template is kept: a key of its checkpoint's training state
CHAT_TEMPLATE_KEY = "chat_template"


@dataclass(frozen=True)
class ChatTemplate:
    """A model's own chat template, kept from its import: the Jinja ``template`` (as
    ``transformers`` renders it), the ``special_tokens`` it refers to by name (``bos_token``,
    ``eos_token``, ...) and the special tokens that end the assistant's turn (``stop``)."""

    template: str
    special_tokens: dict[str, str] = field(default_factory=dict)
    stop: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "special_tokens": dict(self.special_tokens), "stop": list(self.stop)}

    @classmethod
    def from_state(cls, value: Any) -> ChatTemplate | None:
        """The template a checkpoint's state holds (a dict as :meth:`to_dict` writes, or a bare
        string), or None when there is none or it is malformed (logged)."""
        if isinstance(value, str) and value:
            return cls(value)
        if isinstance(value, dict) and isinstance(value.get("template"), str) and value["template"]:
            tokens = value.get("special_tokens") or {}
            stop = value.get("stop") or []
            if isinstance(tokens, dict) and isinstance(stop, list):
                return cls(value["template"], {str(k): str(v) for k, v in tokens.items()}, tuple(map(str, stop)))
        if value is not None:
            logger.warning("ignoring a malformed chat template in the checkpoint state")
        return None


@dataclass
class LoadedRun:
    """A run loaded as it is used (see :func:`load_run`).

    ``checkpoint`` is the checkpoint that holds the (base) weights, with its training ``state``;
    ``adapter`` the LoRA adapter applied on top of it, if any (attached, or folded in when
    ``merged``); ``chat_template`` the run's own chat template, or None for gptlab's ChatML.
    """

    path: Path
    model: GPT
    tokenizer: Tokenizer
    checkpoint: Checkpoint
    adapter: Adapter | None = None
    merged: bool = False
    chat_template: ChatTemplate | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> GPTConfig:
        return self.model.config

    @property
    def is_lora(self) -> bool:
        """Whether the model is a base plus a LoRA adapter (attached or merged)."""
        return self.adapter is not None

    def describe(self) -> str:
        """One line saying what was loaded, e.g. for a command's output."""
        if self.adapter is None:
            return f"{self.checkpoint.path}"
        how = "merged into" if self.merged else "on"
        return f"LoRA adapter {self.adapter.path} (r={self.adapter.config.rank}) {how} base {self.checkpoint.path}"


def _adapter_name(folder: Path) -> str | None:
    """The adapter directory a checkpoint names (a LoRA run's), or None."""
    try:
        name = json.loads((folder / "state.json").read_text(encoding="utf-8"))["state"].get("adapter")
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    return str(name) if name else None


def find_adapter(path: str | Path) -> Path:
    """An adapter directory from itself, or from a LoRA run / checkpoint (the adapter its latest
    checkpoint names). Raises CheckpointError when there is none."""
    path = Path(path)
    if is_adapter(path):
        return path
    folder = find_checkpoint(path)
    name = _adapter_name(folder)
    if not name:
        raise CheckpointError(f"{path}: not a LoRA adapter or LoRA run (a full fine-tune has no adapter)")
    adapter = folder.parent / name
    if not is_adapter(adapter):
        raise CheckpointError(f"{folder} names adapter {name}, which is missing")
    return adapter


def load_run(
    path: str | Path,
    *,
    base: str | Path | None = None,
    device: str | torch.device = "cpu",
    merge: bool = False,
) -> LoadedRun:
    """Load a run, checkpoint folder, LoRA run or adapter directory as the model it stands for.

    A LoRA run or an adapter comes back as its base with the adapter attached (fingerprint
    checked: an adapter trained on another base raises ``AdapterMismatchError``), or folded into
    the weights with ``merge`` (an ordinary GPT, as ``gptlab lora merge`` saves it). ``base``
    replaces the base path an adapter directory records. Raises CheckpointError for a path that
    is none of these, or a checkpoint that names an adapter that is missing.
    """
    path = Path(path)
    adapter: Adapter | None = None
    if is_adapter(path):
        adapter = load_adapter(path)
        base_path = base or adapter.meta.get("base_path")
        if not base_path:
            raise CheckpointError(f"{path}: the adapter does not record its base model: pass the base")
        if Path(base_path).resolve() == path.resolve():
            raise CheckpointError(f"{path}: an adapter cannot be its own base")
        # the base is any run as it is used: a LoRA run as base (the model an adapter was trained
        # on when a LoRA run was fine-tuned further) comes merged
        ckpt = load_run(base_path, device=device, merge=True).checkpoint  # its model merged in place
    else:
        if base is not None:
            raise CheckpointError(f"{path}: a base model is only given with an adapter directory")
        ckpt = load_checkpoint(path, device=device)
        name = ckpt.state.get("adapter")
        if name:
            adapter_dir = ckpt.path.parent / str(name)
            if not is_adapter(adapter_dir):
                raise CheckpointError(f"{ckpt.path} names adapter {name}, which is missing")
            adapter = load_adapter(adapter_dir)
    model = ckpt.model
    if adapter is not None:
        apply_adapter(model, adapter)
        if merge:
            merge_lora(model)
    loaded = LoadedRun(path=path, model=model, tokenizer=ckpt.tokenizer, checkpoint=ckpt, adapter=adapter,
                       merged=merge and adapter is not None,
                       chat_template=ChatTemplate.from_state(ckpt.state.get(CHAT_TEMPLATE_KEY)), state=ckpt.state)
    logger.debug("loaded %s", loaded.describe())
    return loaded
