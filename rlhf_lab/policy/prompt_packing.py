"""Prompts read as packed rows, the tokens every prompt starts with read once: a KV-cached decoder's first pass.

Chat prompts share a long start (the chat template's system turn: 24 of SmolLM2's ~42 prompt tokens), and a padded
batch reads it, and every row's left padding, once per row. Here the prompts' real tokens are laid out as

    packed row g = [shared prefix, own part of prompt a, own part of prompt b, ..., padding]

with each own part seeing the prefix and, causally, itself (`PackedPrompts.allowed`), at the positions its tokens
have in the prompt alone, so a causal model computes for each token what it computes on that prompt alone. The
decoder then gathers each prompt's keys and values into its own cache row (`PackedPrompts.source`), laid out as

    cache row b = [shared prefix, padding, own part of prompt b]   then the new tokens,

so that the steps after it read the same numbers as after a padded pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_lab.core.hf import shared_prefix_length

__all__ = ["PACKED_WIDTH", "PackedPrompts", "pack_prompts"]

PACKED_WIDTH = 256
"""Tokens per packed row (more when one prompt needs more): attention over a packed row grows with its width, the
prefix is read once per row."""


@dataclass
class PackedPrompts:
    """The packed first pass of U prompts and where its keys and values go (see the module's docstring).

    ids, positions (G, W): the packed rows' tokens and each token's position in its prompt alone (0 on padding).
    allowed (G, 1, W, W): query i may read key j (j ≤ i, in the prefix or i's own part; padding reads itself).
    last_row, last_column (U,): where each prompt's last token sits in the packed rows (its next-token logits).
    source (U, S): for each column of a prompt's cache row, the packed column (in row last_row[b]) it copies.
    real (U, S): the cache columns holding the prompt's tokens (the prefix and its own part, right-aligned).
    next_position (U,): each prompt's length, the position of its first new token."""

    ids: torch.Tensor
    positions: torch.Tensor
    allowed: torch.Tensor
    last_row: torch.Tensor
    last_column: torch.Tensor
    source: torch.Tensor
    real: torch.Tensor
    next_position: torch.Tensor

    def gather(self, packed: torch.Tensor, extra: int = 0) -> torch.Tensor:
        """Keys or values of the packed rows (G, heads, W, d) -> each prompt's cache row (U, heads, S + extra, d),
        the `extra` columns (for new tokens) zero."""
        rows = packed[self.last_row[:, None], :, self.source].permute(0, 2, 1, 3)  # (U, heads, S, d)
        return torch.cat([rows, rows.new_zeros(*rows.shape[:2], extra, rows.shape[-1])], dim=2)


def pack_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int = PACKED_WIDTH) -> PackedPrompts:
    """Lay out U prompts (U, P) as packed rows of at most `width` tokens (or one prompt's length, if longer), prompts
    in order, each row starting with the prefix they all share (`shared_prefix_length`: left-padded prompts share
    theirs, other padding shares none)."""
    device = input_ids.device
    tokens = [row[mask.bool()] for row, mask in zip(input_ids, attention_mask)]
    if min(len(t) for t in tokens) == 0:
        raise ValueError("a prompt without tokens: every row needs at least one real token")
    shared = shared_prefix_length(input_ids, attention_mask, input_ids.shape[1])
    own = [len(t) - shared for t in tokens]
    groups, used = [[]], shared  # prompts per packed row, in order; tokens of the row being filled
    for b, n in enumerate(own):
        if groups[-1] and used + n > width:
            groups.append([])
            used = shared
        groups[-1].append(b)
        used += n
    W = max(shared + sum(own[b] for b in group) for group in groups)
    ids = torch.zeros((len(groups), W), dtype=torch.long, device=device)
    positions = torch.zeros_like(ids)
    part = torch.full_like(ids, -2)  # −1 the prefix, b prompt b's own part, −2 padding
    last_row, last_column, start = (torch.zeros(len(tokens), dtype=torch.long, device=device) for _ in range(3))
    for g, group in enumerate(groups):
        ids[g, :shared], positions[g, :shared], part[g, :shared] = tokens[group[0]][:shared], torch.arange(shared), -1
        at = shared
        for b in group:
            n = own[b]
            ids[g, at:at + n], positions[g, at:at + n], part[g, at:at + n] = tokens[b][shared:], \
                torch.arange(shared, shared + n), b
            last_row[b], last_column[b], start[b] = g, at + n - 1, at
            at += n
    query, key = part[:, :, None], part[:, None, :]
    causal = torch.ones(W, W, dtype=torch.bool, device=device).tril()
    allowed = causal & (key != -2) & (query != -2) & ((key == -1) | (key == query))
    allowed |= torch.eye(W, dtype=torch.bool, device=device)  # padding reads itself: no row is all masked
    lengths = torch.tensor(own, device=device)
    S = shared + int(lengths.max())
    column = torch.arange(S, device=device)[None, :]  # (1, S)
    pad = S - lengths[:, None]  # (U, 1): the first column of each prompt's own part
    real = (column < shared) | (column >= pad)
    source = torch.where(column < shared, column, start[:, None] + column - pad).clamp(min=0) * real
    return PackedPrompts(ids, positions, allowed[:, None], last_row, last_column, source, real, lengths + shared)
