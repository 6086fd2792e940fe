"""``--dtype`` as an autocast context (``gptlab.train.precision``), and the CPU's bf16 units."""

from __future__ import annotations

import contextlib
import logging
import platform
from pathlib import Path

import pytest
import torch

from gptlab.train import precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("units", [True, False, None])  # None: not x86, PyTorch cannot tell
@pytest.mark.parametrize("dtype, device, bf16", [
    ("auto", CUDA, True), ("float32", CUDA, False), ("float32", CPU, False), ("bfloat16", CPU, True),
    ("auto", torch.device("mps"), False),
])
def test_explicit_dtypes_and_auto_off_the_cpu_do_not_depend_on_the_cpu(dtype, device, bf16, units, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: units)
    assert precision.uses_bf16(dtype, device) is bf16
    assert precision.describe(dtype, device) == ("bf16 autocast" if bf16 else "fp32")


@pytest.mark.parametrize("units, bf16", [(True, True), (False, False), (None, False)])
def test_auto_on_the_cpu_is_bf16_where_it_has_bf16_units(units, bf16, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: units)
    assert precision.uses_bf16("auto", CPU) is bf16
    assert isinstance(precision.autocast_for("auto", CPU), contextlib.nullcontext) is not bf16


def test_the_context_is_autocast_or_nothing():
    assert isinstance(precision.autocast_for("float32", CPU), contextlib.nullcontext)
    with precision.autocast_for("bfloat16", CPU):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not Path("/proc/cpuinfo").exists(),
                    reason="reads the CPU's flags from Linux's /proc/cpuinfo on x86")
def test_bf16_units_are_the_cpus_own_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert precision.cpu_has_bf16_units() == bool(flags & {"avx512_bf16", "amx_tile"})


def test_bf16_on_a_cpu_without_bf16_units_says_it_is_slow(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)  # this machine's CPU may have them
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        precision.autocast_for("bfloat16", CPU)
    assert "no bf16 units" in caplog.text
    caplog.clear()
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: True)
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        precision.autocast_for("bfloat16", CPU)
        precision.autocast_for("float32", CPU)
    assert caplog.text == ""
