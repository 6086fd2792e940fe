"""Keep freed memory in the process during training, so that each step does not fault its pages in again.

A CPU training step allocates its activations and gradients, some of them megabytes each, and
frees them all by the end of the step. glibc's malloc serves blocks above its mmap threshold
with fresh ``mmap`` calls and returns them with ``munmap``, and it gives the top of its heap back
to the system past a trim threshold. Both thresholds adapt as the process runs, and on a training
loop they keep handing the same memory back and forth: every step then touches freshly mapped
pages, each a page fault for the kernel to zero and map (thousands per step here).

``keep_freed_memory`` fixes the thresholds: blocks up to 32 MB come from the heap, and the heap
is trimmed only past 1 GB free, so a step reuses the pages the previous one freed. The price is
that freed memory stays with the process (the peak is reached anyway; a training process keeps
it). ``bench/malloc.py`` on the main job's step (2-core AMD EPYC): page faults from 3,400-7,600
a step to 0-170 eager (about 10,000 to 0-140 compiled), and the step 1.05x as fast eager, 1.075x
compiled (medians over 6 pairs). ``gptlab train`` and ``gptlab finetune`` call it; the
library does not (malloc's settings belong to whoever owns the process), and ``gptlab serve``,
which stays up and whose load comes and goes, keeps glibc's defaults.

It does nothing but on Linux with glibc: other systems' allocators behave otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to this size come from the heap
TRIM_THRESHOLD = 2**30  # give memory back to the system only when this much lies free at the heap's top


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for a training process; True if they were set
    (Linux with glibc), False elsewhere."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
