"""Batches for dataset trainers (reward models, DPO): index batches shuffled and grouped by length to cut padding,
and the padded tensors of prompts run once with their replies after them."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["length_grouped_batches", "shared_prefix_rows"]


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


def shared_prefix_rows(prefixes: list[list[int]], replies: list[list[int]], pad_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists as tensors for a forward that runs each prefix once and its replies after it (their keys and
    values repeated): prefix_ids and prefix_mask (b, P), left padded, so each prefix ends at the last column; and
    reply_ids and reply_mask (n, R), right padded, in the order given (e.g. [chosen_1, rejected_1, chosen_2, ...])."""
    width = max(len(p) for p in prefixes)
    prefix_ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for i, prefix in enumerate(prefixes):
        if prefix:
            prefix_ids[i, width - len(prefix):] = torch.tensor(prefix)
            prefix_mask[i, width - len(prefix):] = 1
    width = max(len(r) for r in replies)
    reply_ids = torch.full((len(replies), width), pad_id, dtype=torch.long)
    reply_mask = torch.zeros((len(replies), width), dtype=torch.long)
    for i, reply in enumerate(replies):
        reply_ids[i, :len(reply)] = torch.tensor(reply)
        reply_mask[i, :len(reply)] = 1
    return prefix_ids, prefix_mask, reply_ids, reply_mask
