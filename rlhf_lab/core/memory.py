"""Peak memory of a block of code: resident set size above the level at entry, and CUDA's peak allocation."""

from __future__ import annotations

import ctypes
import gc
import threading

import torch

__all__ = ["PeakMemory"]


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
