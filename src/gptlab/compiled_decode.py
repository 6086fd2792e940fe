"""A compiled one-token decode step: ``torch.compile`` of ``GPT.decode_step``, built once per weights.

Eager decoding pays PyTorch's per-op overhead about 60 times per token (small models spend more
time there than in their matmuls), and MKL multiplies one row by a weight on one core. Compiling
the step removes both. ``GPT.decode_step`` has fixed shapes (it attends over the whole cache
buffer with a mask), so one compilation serves every token of every generation of that model.

On CPU the step is compiled the way inductor runs inference fastest:

* ``freezing``: the weights become constants of the compiled graph, so inductor packs them once
  into the layout its GEMM kernels read fastest. The compiled step is a snapshot of the weights:
  ``compiled_decode_step`` checks every parameter's storage and in-place version counter on
  each call and compiles again when any changed (e.g. after more training).
* ``max_autotune`` with the ``CPP`` GEMM template: inductor times its own C++ GEMM kernels against
  ATen's for each weight shape and keeps the fastest (its one-row kernels use every core).
* ``cpp_wrapper``: the compiled graph is called from C++, not from generated Python.

Compiling takes tens of seconds the first time (the autotuning), less when inductor's on-disk
cache already holds the kernels, so it pays off for long generations and for servers, not for a
single short sample. It needs a C++ compiler on CPU. On CUDA the step is compiled with inductor's
defaults (not measured here: no GPU was available while this was written).
"""

from __future__ import annotations

import shutil
import types
import warnings
import weakref
from collections.abc import Callable

import torch

from gptlab.errors import GenerationError
from gptlab.model import GPT, KVCache

DecodeStep = Callable[[torch.Tensor, torch.Tensor, KVCache], torch.Tensor]

CPU_OPTIONS = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "cpp_wrapper": True,
    "autotune_num_choices_displayed": 0,  # the autotuner writes its timing tables to stderr otherwise
    "max_autotune_report_choices_stats": False,
}

_compiled: weakref.WeakKeyDictionary[GPT, tuple[tuple[tuple[int, int], ...], DecodeStep]] = (
    weakref.WeakKeyDictionary()
)


def has_cpp_compiler() -> bool:
    """Whether a C++ compiler is on PATH (inductor's CPU backend builds its kernels with one)."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def compiled_decode_step(model: GPT) -> DecodeStep:
    """``model.decode_step`` compiled for the model's current weights (reused while they stay the same).

    Raises GenerationError when the model is on the CPU and no C++ compiler is installed.
    """
    device = model.transformer.wte.weight.device
    if device.type == "cpu" and not has_cpp_compiler():
        raise GenerationError(
            "compiled decoding on CPU needs a C++ compiler (torch.compile builds its kernels with one): "
            "install g++ or clang++, or decode without compiling"
        )
    key = _weights_key(model)
    held = _compiled.get(model)
    if held is not None and held[0] == key:
        return held[1]
    compiled = torch.compile(_fresh_decode_step(model), fullgraph=True, dynamic=False)
    patch = torch._inductor.config.patch(CPU_OPTIONS if device.type == "cpu" else {})

    def step(idx: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        # inductor reads freezing outside torch.compile(options=...): patch its config around each
        # call instead, so that the first call's compilation (and any later one) sees it
        with patch, warnings.catch_warnings():
            # inductor's autotuner calls a deprecated storage API: not the user's business
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return compiled(idx, positions, cache)

    _compiled[model] = (key, step)
    return step


def _fresh_decode_step(model: GPT) -> DecodeStep:
    """``model.decode_step`` with a code object of its own.

    Dynamo keeps compiled code per code object, guarded by shapes and identities but not by tensor
    values; frozen weights are values baked into that code. Had every compilation used
    ``GPT.decode_step``'s own code object, a model whose weights changed in place would have
    reused the code compiled for its old weights. A copied code object starts with no compiled code,
    and what was compiled for it goes away with it.
    """
    method = GPT.decode_step
    fresh = types.FunctionType(
        method.__code__.replace(), method.__globals__, method.__name__, method.__defaults__, method.__closure__
    )
    return types.MethodType(fresh, model)


def _weights_key(model: GPT) -> tuple[tuple[int, int], ...]:
    """Where each parameter lives and how often it was changed in place: equal keys, equal weights."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())
