"""A compiled one-token decode step: ``torch.compile`` of ``GPT.decode_step``, built once per weights.

Eager decoding pays PyTorch's per-op overhead about 60 times per token (small models spend more
time there than in their matmuls), and MKL multiplies one row by a weight on one core. Compiling
the step removes both. ``GPT.decode_step`` has fixed shapes (it attends over the whole cache
buffer with a mask), so one compilation serves every token of every generation of that model.

On CPU the step is compiled the way inductor runs inference fastest:

* ``freezing``: the weights become constants of the compiled graph, so inductor packs them once
  into the layout its GEMM kernels read fastest. The compiled step is a snapshot of the weights:
  ``compiled_decode_step`` checks every parameter's storage and in-place version counter and
  compiles again when any changed (more training, ``load_state_dict``, ``.to()``). Writes the
  counters do not see are not detected: through ``.data``, or in place on weights made under
  ``torch.inference_mode()``; call ``forget(model)`` after those.
* ``max_autotune`` with the ``CPP`` GEMM template: inductor times its own C++ GEMM kernels against
  ATen's for each weight shape and keeps the fastest (its one-row kernels use every core).
* ``cpp_wrapper``: the compiled graph is called from C++, not from generated Python.

Compiling takes tens of seconds the first time (autotuning, and building C++), less when
inductor's on-disk cache already holds the kernels, so it pays off for long generations, not for
a single short sample. It needs a C++ compiler on CPU. On CUDA the step is compiled with inductor's
defaults (not measured here: no GPU was available while this was written).
"""

from __future__ import annotations

import functools
import os
import shutil
import types
import warnings
import weakref
from collections.abc import Callable

import torch

from gptlab.errors import GenerationError
from gptlab.model.gpt import GPT, KVCache

DecodeStep = Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]

CPU_OPTIONS = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "cpp_wrapper": True,
    "autotune_num_choices_displayed": 0,  # the autotuner writes its timing tables to stderr otherwise
    "max_autotune_report_choices_stats": False,
}

UnboundStep = Callable[[GPT, torch.Tensor, torch.Tensor, KVCache], torch.Tensor]
WeightsKey = tuple[tuple[int, int], ...]

# model -> (its weights' key, the step compiled for them); the step does not hold the model, so
# the entry goes when the model does
_compiled: weakref.WeakKeyDictionary[GPT, tuple[WeightsKey, UnboundStep]] = weakref.WeakKeyDictionary()


def has_cpp_compiler() -> bool:
    """Whether the C++ compiler inductor's CPU backend would use is installed (``$CXX``, else its default)."""
    candidates = (os.environ.get("CXX"), *torch._inductor.config.cpp.cxx)
    return any(c and shutil.which(c) for c in candidates)


def compiled_decode_step(model: GPT) -> DecodeStep:
    """``model.decode_step`` compiled for the model's current weights (reused while they stay the same).

    Compilation happens at the first call of the returned step. Raises GenerationError when the
    model is on the CPU and no C++ compiler is installed.
    """
    device = model.transformer.wte.weight.device
    if device.type == "cpu" and not has_cpp_compiler():
        raise GenerationError(
            "compiled decoding on CPU needs a C++ compiler (torch.compile builds its kernels with one): "
            "install g++ (or set CXX), or decode without compiling"
        )
    key = _weights_key(model)
    held = _compiled.get(model)
    if held is None or held[0] != key:
        held = (key, _compile(device))
        _compiled[model] = held
    return functools.partial(held[1], model)


def forget(model: GPT) -> None:
    """Drop the step compiled for ``model``: the next compiled generation compiles again."""
    _compiled.pop(model, None)


def _compile(device: torch.device) -> UnboundStep:
    """A compiled copy of ``GPT.decode_step`` (the model is its first argument), with a code object of its own.

    Dynamo keeps compiled code per code object, guarded by shapes and identities but not by tensor
    values, and frozen weights are values baked into that code. Had every compilation used
    ``GPT.decode_step``'s own code object, a model whose weights changed in place would have run
    the code compiled for its old weights. A copied code object starts with no compiled code, and
    what was compiled for it goes away with it.
    """
    method = GPT.decode_step
    fresh = types.FunctionType(
        method.__code__.replace(), method.__globals__, method.__name__, method.__defaults__, method.__closure__
    )
    compiled = torch.compile(fresh, fullgraph=True, dynamic=False)
    # inductor does not apply freezing from torch.compile(options=...): patch its config around each
    # call instead, so that the first call's compilation (and any later one) sees it
    options = CPU_OPTIONS if device.type == "cpu" else {}
    # (older torch lacks some of these settings: keep the ones it knows)
    patch = torch._inductor.config.patch({k: v for k, v in options.items() if hasattr(torch._inductor.config, k)})
    calls = 0

    def step(model: GPT, idx: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        nonlocal calls
        calls += 1
        with patch:
            if calls > 1:
                return compiled(model, idx, positions, cache)
            with warnings.catch_warnings():
                # this call compiles, and inductor's autotuner calls a deprecated storage API
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
                return compiled(model, idx, positions, cache)

    return step


def _weights_key(model: GPT) -> WeightsKey:
    """Where each parameter lives and how often it was changed in place: equal keys, equal weights.

    Tensors made under ``torch.inference_mode()`` keep no version counter (-1 here).
    """
    return tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in model.parameters())
