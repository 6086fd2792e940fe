"""Stage 5, fine-tuning: a trained model taught a task, in full or with LoRA adapters.

- :mod:`~gptlab.finetune.config` — :class:`FinetuneConfig` and :class:`LoRAConfig`;
- :mod:`~gptlab.finetune.data` — prompt/completion, chat and plain-text records, tokenized with a
  loss mask on the prompt;
- :mod:`~gptlab.finetune.finetuner` — :func:`build_finetuner`;
- :mod:`~gptlab.finetune.loader` — :func:`load_run`, the one loader: any run, a LoRA run as base +
  adapter, or an adapter directory;
- :mod:`~gptlab.finetune.lora` — low-rank adapters: inject, save, load, merge;
- :mod:`~gptlab.finetune.vocab` — new special tokens with new embedding rows;
- :mod:`~gptlab.finetune.docstrings` — a real task made offline: docstring → function body.
"""

from typing import TYPE_CHECKING

from gptlab.finetune.config import FinetuneConfig, LoRAConfig
from gptlab.finetune.docstrings import build_docstring_dataset
from gptlab.lazy import lazy_exports

if TYPE_CHECKING:
    from gptlab.finetune.finetuner import (
        Finetuner,
        FinetuneResult,
        build_finetuner,
        load_finetuned,
        load_finetuned_with_tokenizer,
        merge_adapter_into_run,
    )
    from gptlab.finetune.loader import ChatTemplate, LoadedRun, load_run
    from gptlab.finetune.lora import LoRALinear, inject_lora, load_adapter, merge_lora, save_adapter
    from gptlab.finetune.vocab import add_special_tokens, resize_token_embeddings

# the modules that need torch load on first use (gptlab.lazy)
__getattr__ = lazy_exports(__name__, {
    "finetuner": ["Finetuner", "FinetuneResult", "build_finetuner", "load_finetuned", "load_finetuned_with_tokenizer",
                  "merge_adapter_into_run"],
    "loader": ["ChatTemplate", "LoadedRun", "load_run"],
    "lora": ["LoRALinear", "inject_lora", "load_adapter", "merge_lora", "save_adapter"],
    "vocab": ["add_special_tokens", "resize_token_embeddings"],
})

__all__ = [
    "ChatTemplate",
    "FinetuneConfig",
    "FinetuneResult",
    "Finetuner",
    "LoRAConfig",
    "LoRALinear",
    "LoadedRun",
    "add_special_tokens",
    "build_docstring_dataset",
    "build_finetuner",
    "inject_lora",
    "load_adapter",
    "load_finetuned",
    "load_finetuned_with_tokenizer",
    "load_run",
    "merge_adapter_into_run",
    "merge_lora",
    "resize_token_embeddings",
    "save_adapter",
]
