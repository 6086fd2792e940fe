"""Stage 2, the model: its configuration and presets, the GPT itself, and what it costs.

- :mod:`~gptlab.model.config` — :class:`GPTConfig`, validated at construction, and the named
  presets (:data:`PRESETS`, :func:`preset`);
- :mod:`~gptlab.model.gpt` — the whole decoder-only transformer in one file, with its KV cache;
- :mod:`~gptlab.model.linear` — the linear layer the model uses (faster one-row products on CPU);
- :mod:`~gptlab.model.attention` — causal attention in blocks of queries, for training at short
  contexts on the CPU;
- :mod:`~gptlab.model.count` — parameters, neurons, FLOPs and memory of a configuration.

The model knows nothing of tokenizers, training or parallelism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptlab.lazy import lazy_exports
from gptlab.model.config import PRESETS, GPTConfig, preset
from gptlab.model.count import ModelCount, TrainingCost, count_config, parse_quantity

if TYPE_CHECKING:
    from gptlab.model.gpt import GPT, IGNORE_INDEX, KVCache
    from gptlab.model.linear import Linear, linear

# the modules that need torch load on first use (gptlab.lazy): counting a config needs none
__getattr__ = lazy_exports(__name__, {"gpt": ["GPT", "IGNORE_INDEX", "KVCache"], "linear": ["Linear", "linear"]})

__all__ = [
    "GPT",
    "IGNORE_INDEX",
    "PRESETS",
    "GPTConfig",
    "KVCache",
    "Linear",
    "ModelCount",
    "TrainingCost",
    "count_config",
    "linear",
    "parse_quantity",
    "preset",
]
