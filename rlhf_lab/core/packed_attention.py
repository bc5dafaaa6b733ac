"""Attention for sequences packed into one row as segments, each reading only its parent segment and itself.

A batch can run as one row of N tokens, padding left out, and a shared prompt read once: PPO's rollouts as the chat
template's prefix then every reply's row (`train.policy_value.response_hidden`), DPO's pairs as each prompt then its
two replies (`train.dpo_data.pair_logps`), the MiniLM reward model's sequences one after the other
(`reward.network.one_row`). A segment attends causally to itself (an encoder: to all of itself) and to all of its
parent's tokens (a prompt has no parent; a reply's parent is its prompt). As one (N, N) mask, attention would score
every token against every other and throw most of them away. `attend_by_segment` computes the same on the segments
themselves: each segment's queries, padded to the longest segment (L), against its parent's keys (padded to the
longest parent, Lp) and its own, (S, H, L, Lp + L) instead of (1, H, N, N).

    layout = segment_layout(lengths, parents)               # segments in the row's order; parent −1: none
    if can_attend_by_segment(trunk):                        # SDPA attention, and a forward that passes keywords on
        with segment_attention(trunk, layout) as by_segment:
            hidden = trunk(input_ids=row, position_ids=positions, **by_segment)   # no attention mask

It is a transformers attention function (`AttentionInterface`), switched on for the one forward pass and handed the
layout as a keyword argument, which the model passes on to every layer's attention. The results are the same as
the whole row's under its (N, N) mask, up to float rounding, gradients included.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["SegmentLayout", "segment_layout", "attend_by_segment", "segment_attention", "can_attend_by_segment",
           "SEGMENT_ATTENTION"]

SEGMENT_ATTENTION = "rlhf_lab_segments"
"""The name `attend_by_segment` is registered under in transformers' `AttentionInterface`."""

_LAYOUT_KWARG = "rlhf_lab_segments"


class SegmentLayout(NamedTuple):
    """Where each segment's tokens are in the packed row of N tokens (N itself is the index of a padding slot)."""

    queries: torch.Tensor
    """(S, L): segment s's i-th token's place in the row; N past the segment's end."""
    valid: torch.Tensor
    """(S, L): whether queries[s, i] is a real token."""
    keys: torch.Tensor
    """(S, Lp + L): the parent's tokens (padded to Lp), then the segment's own (= queries)."""
    mask: torch.Tensor
    """(S, 1, L, Lp + L): query i of segment s may see key j: j a real token of its parent, or j = Lp + i' with
    i' ≤ i (its own past)."""
    bidirectional: torch.Tensor
    """(S, 1, L, Lp + L): the same for an encoder's attention, which sees all of its own segment's real tokens."""
    picked: torch.Tensor
    """(N,): where each token of the row is among the S · L query slots (s · L + i), in the row's order."""


def segment_layout(lengths: list[int], parents: list[int]) -> SegmentLayout:
    """The layout of segments of `lengths` tokens lying one after the other in a row, segment s attending to segment
    parents[s] (an earlier one; −1: none) and causally to itself. Lengths must be positive."""
    starts = [sum(lengths[:s]) for s in range(len(lengths))]
    n_tokens, longest = sum(lengths), max(lengths)
    parent_lengths = [lengths[p] if p >= 0 else 0 for p in parents]
    longest_parent = max(parent_lengths)

    def places(start, length, width):  # (width,) the token places of a segment, N where padded
        return [start + i if i < length else n_tokens for i in range(width)]

    queries = torch.tensor([places(start, length, longest) for start, length in zip(starts, lengths)])
    parent_keys = torch.tensor([places(starts[p] if p >= 0 else 0, n, longest_parent)
                                for p, n in zip(parents, parent_lengths)], dtype=torch.long).view(len(lengths),
                                                                                                  longest_parent)
    steps = torch.arange(longest)
    valid = steps[None, :] < torch.tensor(lengths)[:, None]  # (S, L)
    sees_parent = torch.arange(longest_parent)[None, :] < torch.tensor(parent_lengths)[:, None]  # (S, Lp)
    causal = steps[None, :] <= steps[:, None]  # (L, L)
    parent_part = sees_parent[:, None, :].expand(-1, longest, -1)  # (S, L, Lp)
    mask = torch.cat([parent_part, causal.expand(len(lengths), -1, -1)], dim=2)
    bidirectional = torch.cat([parent_part, valid[:, None, :].expand(-1, longest, -1)], dim=2)
    return SegmentLayout(queries, valid, torch.cat([parent_keys, queries], dim=1), mask[:, None],
                         bidirectional[:, None], valid.flatten().nonzero()[:, 0])


def attend_by_segment(query, key, value, layout: SegmentLayout, scaling: float | None = None, dropout: float = 0.0,
                      causal: bool = True):
    """Attention of the packed row by segment: (1, H, N, D) queries, (1, Hk, N, D) keys and values -> (1, N, H, D).

    Token t of segment s (its i-th) attends to the tokens of s's parent segment p and to s's own tokens 0..i:
        out_t = softmax(scaling · q_t [K_p; K_s,0..i]ᵀ) [V_p; V_s,0..i]
    (`causal=False`, an encoder: to all of s's own tokens), with H/Hk query heads sharing each key head
    (grouped-query attention)."""
    n_heads, groups = query.shape[1], query.shape[1] // key.shape[1]

    def gather(x, places):  # (1, h, N, D), (S, W) -> (S, h, W, D); the padding slot N reads a zero row
        x = x[0].transpose(0, 1)  # (N, h, D)
        x = torch.cat([x, x.new_zeros(1, *x.shape[1:])]).index_select(0, places.flatten())  # its backward: index_add
        x = x.view(*places.shape, *x.shape[1:]).transpose(1, 2)
        return x.repeat_interleave(groups, dim=1) if x.shape[1] != n_heads else x

    out = F.scaled_dot_product_attention(gather(query, layout.queries), gather(key, layout.keys),
                                         gather(value, layout.keys),
                                         attn_mask=layout.mask if causal else layout.bidirectional, dropout_p=dropout,
                                         scale=scaling)  # (S, H, L, D)
    out = out.transpose(1, 2).flatten(0, 1).index_select(0, layout.picked)  # (N, H, D), the row's order
    return out.unsqueeze(0)  # (1, N, H, D)


def _attention_function(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention signature, `attention_mask` unused (the layout says who sees whom)."""
    layout = kwargs.pop(_LAYOUT_KWARG, None)
    if layout is None:
        raise RuntimeError(f"{type(module).__name__} ran segment attention without the segments' layout: pass "
                           "segment_attention's keyword arguments to the trunk's forward.")
    causal = getattr(module, "is_causal", True)  # False in an encoder's attention (BERT's)
    return attend_by_segment(query, key, value, layout, scaling=scaling, dropout=dropout, causal=causal), None


@functools.cache
def _register() -> bool:
    try:
        from transformers import AttentionInterface
    except ImportError:  # an older transformers: the caller runs the row its own way
        return False
    AttentionInterface.register(SEGMENT_ATTENTION, _attention_function)
    return True


@functools.cache
def _passes_keywords(trunk_class) -> bool:
    """Whether the trunk's forward takes **kwargs (which transformers' models hand on to every attention layer)."""
    try:
        parameters = inspect.signature(trunk_class.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def can_attend_by_segment(trunk) -> bool:
    """Whether `segment_attention` can switch this trunk (its attention is SDPA and its forward passes keywords on)."""
    config = getattr(trunk, "config", None)
    return getattr(config, "_attn_implementation", None) == "sdpa" and _passes_keywords(type(trunk)) and _register()


@contextlib.contextmanager
def segment_attention(trunk, layout: SegmentLayout):
    """Within the block, `trunk`'s attention runs by segment (`attend_by_segment`); yields the keyword arguments to
    pass to the trunk's forward. Check `can_attend_by_segment(trunk)` first."""
    if not can_attend_by_segment(trunk):
        raise ValueError(f"{type(trunk).__name__} cannot attend by segment (SDPA attention and a forward that takes "
                         "**kwargs are needed): check can_attend_by_segment first.")
    config = trunk.config
    config._attn_implementation = SEGMENT_ATTENTION
    try:
        device = trunk.get_input_embeddings().weight.device
        yield {_LAYOUT_KWARG: SegmentLayout(*(t.to(device) for t in layout))}
    finally:
        config._attn_implementation = "sdpa"
