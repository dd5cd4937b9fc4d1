"""The C heap's settings for PyTorch's CPU tensors: keep freed activation memory in the process.

PyTorch allocates every CPU tensor with the C library's ``malloc``. glibc serves large requests
(above its *mmap threshold*, 128 KiB to start with, raised dynamically up to 32 MiB) with fresh
``mmap`` pages and returns them to the kernel when they are freed; memory freed at the top of its
heap is trimmed back to the kernel too. A training step allocates and frees the same activation
buffers (megabytes each) every step, so each step can fault in fresh, zero-filled pages again: on
the project's 2-core CPU two epochs of 8,192 images took `cnn` 0.13–2.6 million minor page faults, the
count depending on the process's allocation history, and cnn_small, cnn and ResNet-20 trained 1.16×,
1.22× and 1.15× faster with the memory kept (``python benchmarks/allocator.py``;
``benchmarks/results/allocator.json`` and ``allocator-cifar.json``).

:func:`tune_cpu_allocator` raises both thresholds so that freed buffers stay in the heap and are
reused. The numbers do not change: PyTorch aligns every CPU tensor to 64 bytes itself, and the
benchmark checks that the trained weights are the same bit for bit. The cost is that the heap keeps
its high-water mark until the process ends.

It changes the whole process, so the library never calls it on import: the ``conferprint`` command
calls it when it starts (``CONFERPRINT_TUNE_MALLOC=0`` turns that off), as do the pool and Ray
executors' worker processes, and a program of your own may call it.
"""
from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # requests up to 1 GiB come from the heap (a batch's activations are megabytes)
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int: the heap is trimmed only above 2 GiB of free top
ENV = "CONFERPRINT_TUNE_MALLOC"
_TUNED = False  # set once tune_cpu_allocator has applied its settings in this process


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # musl and other C libraries have no such symbol
        return libc
    except (OSError, AttributeError):
        return None


def tune_cpu_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD, *,
                       respect_env: bool = True) -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring). Returns whether the settings were applied:
    False on another C library or operating system (nothing to do there), or when ``respect_env`` and the
    environment variable ``CONFERPRINT_TUNE_MALLOC`` is ``0``. Calling it again is harmless."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 31:
            raise ValueError(f"{name} must be an int in [1, 2**31 - 1] (mallopt takes a C int), got {value!r}")
    if respect_env:
        flag = os.environ.get(ENV, "1").strip()
        if flag not in ("0", "1", ""):
            raise ValueError(f"{ENV} must be 0 or 1, got {flag!r}")
        if flag == "0":
            return False
    libc = _glibc()
    if libc is None:
        return False
    # the mmap threshold first, and the trim threshold only if it took: setting either turns glibc's dynamic
    # thresholds off, and the trim threshold alone, with the mmap threshold back at 128 KiB, is the slowest
    # setting of all (every buffer a fresh mapping)
    global _TUNED
    if libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1:
        return False
    ok = libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    _TUNED = _TUNED or ok
    return ok


def tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has applied its settings in this process (benchmarks record it)."""
    return _TUNED
