"""Process memory: the peak of a block of code (resident set size above the level at entry, and CUDA's peak
allocation), and glibc's malloc told to reuse freed large blocks on a CPU (`reuse_freed_memory`)."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import platform
import threading

import torch

__all__ = ["PeakMemory", "reuse_freed_memory", "MALLOC_ENV", "KEEP_FREED_BYTES"]

MALLOC_ENV = "RLHF_LAB_MALLOC"
"""Set to 0 to leave glibc's malloc at its defaults (see `reuse_freed_memory`)."""

KEEP_FREED_BYTES = 1 << 30
"""Freed memory at the top of the heap that malloc keeps for reuse before it gives memory back (M_TRIM_THRESHOLD)."""

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (glibc's malloc.h)


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from its heap and keep up to `KEEP_FREED_BYTES` of freed memory for
    reuse (mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB), once per process. True when it did.

    By default glibc maps every block over 32 MB afresh and unmaps it when freed, so each new one costs a page fault
    per page on first touch. A training step on a CPU allocates many such blocks and touches each once: SmolLM2's
    embedding gradient (49152 × 576 float32, 113 MB), the bf16 copy of its output layer that autocast makes at every
    forward, logits of 8 × 32 × 49152. On a 2-core AMD EPYC VM a PPO update at the standard setting took 7.9 s
    instead of 11.3 s with this (optimisation 5.5 s instead of 8.6 s; `bench/ppo.py --variants
    full_auto,full_auto_mmap`, medians of 2 interleaved repeats, bench/results/speed_cpu/ppo_amd_2026-12-05.txt),
    the same scores, peak memory 4.39 GB against 4.35. Results are unchanged (only where the bytes live). Memory
    freed after a peak stays in the process for reuse (about 0.9 GB more resident after 16 PPO updates);
    `malloc_trim(0)` (as `PeakMemory` calls) gives it back. Not glibc (macOS, Windows, musl), or RLHF_LAB_MALLOC=0:
    nothing is changed (False)."""
    if os.environ.get(MALLOC_ENV, "1") == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False


class PeakMemory:
    """Peak resident memory (MB) above the level at entry, polled every 20 ms (and CUDA's peak allocation)."""

    def __enter__(self):
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back, so the next method's growth shows
        except (OSError, AttributeError):
            pass
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
        self.mb = max(self.peak - self.start, gpu)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:  # not Linux: ru_maxrss (a lifetime peak) is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
