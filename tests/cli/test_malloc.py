"""``keep_freed_memory``: a training step's freed blocks are reused by the next step, not faulted in again."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys

import pytest

from gptlab.cli import malloc

STEPS = """
import resource, sys, torch
from gptlab.cli.malloc import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def step():  # what a training step does with memory: many blocks live at once, all freed at its end
    blocks = [torch.ones(2**21) for _ in range(20)]  # 20 x 8 MB
    del blocks
step(); step()  # the first steps map their pages in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""
BLOCK_PAGES = 2**21 * 4 // resource.getpagesize()  # the pages of one 8 MB block


def page_faults_per_step(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # glibc's own defaults
    out = subprocess.run([sys.executable, "-c", STEPS, mode], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return float(out.strip())


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_step_reuses_the_pages_the_last_one_freed():
    # glibc's adaptive defaults churn in most processes but not all (where its heap ends up depends
    # on allocations made before the steps): up to three processes, until one churns
    defaults = []
    while len(defaults) < 3 and (not defaults or defaults[-1] < BLOCK_PAGES):
        defaults.append(page_faults_per_step("default"))
    default = max(defaults)
    if default < BLOCK_PAGES:
        pytest.skip(f"glibc kept the freed blocks by default in {len(defaults)} processes: nothing to compare")
    kept = page_faults_per_step("kept")
    # 160 MB freed and allocated again each step: by default thousands of fresh pages, kept none
    assert kept * 10 < default, (kept, default)


def test_it_leaves_other_allocators_alone(monkeypatch):
    monkeypatch.setattr(malloc.platform, "libc_ver", lambda: ("", ""))
    assert malloc.keep_freed_memory() is False
