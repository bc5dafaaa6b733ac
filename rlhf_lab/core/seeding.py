"""One seeding helper for the whole lab: same seed, same curves (on CPU).

    set_seed(0)                      # Python, NumPy and torch global generators
    with seeded(3): ...              # a block under seed 3, the caller's torch RNG state left as it was
    seed_for(run_seed, update, rank) # a stateless, well-mixed seed for one piece of one run
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["set_seed", "seeded", "seed_for"]


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run a block under `seed` without disturbing the caller's torch RNG state (a no-op when seed is None)."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def seed_for(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. run seed, update, process): stateless, so resumes match."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
