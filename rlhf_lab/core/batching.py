"""Index batches for dataset trainers (reward models, DPO): shuffled, and grouped by length to cut padding."""

from __future__ import annotations

import numpy as np

__all__ = ["length_grouped_batches"]


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator,
                           group_by_length: bool) -> list[list[int]]:
    """One epoch of index batches: shuffled; with group_by_length, sorted by length inside chunks of 16 batches
    (and the batches shuffled again), which removes most of the padding at little cost to randomness."""
    idx = rng.permutation(len(lengths)).tolist()
    if group_by_length:
        chunk = 16 * batch_size
        idx = [i for s in range(0, len(idx), chunk) for i in sorted(idx[s:s + chunk], key=lambda j: lengths[j])]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if group_by_length else batches
