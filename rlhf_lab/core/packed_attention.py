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
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["SegmentLayout", "segment_layout", "attend_by_segment", "attend_by_products", "attend_by_sdpa",
           "segment_attention", "can_attend_by_segment", "SEGMENT_ATTENTION"]

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
    (grouped-query attention). On a CPU it runs as two batched products around a softmax (`attend_by_products`),
    elsewhere as one `scaled_dot_product_attention` (`attend_by_sdpa`): the same up to float rounding."""
    attend = attend_by_products if query.device.type == "cpu" else attend_by_sdpa
    return attend(query, key, value, layout, scaling, dropout, causal)


def attend_by_sdpa(query, key, value, layout: SegmentLayout, scaling: float | None = None, dropout: float = 0.0,
                   causal: bool = True):
    """`attend_by_segment` as one `scaled_dot_product_attention` over the segments, (S, H, L, Lp + L), the keys and
    values repeated for each query head that shares them; padding slots read a zero row."""
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


def attend_by_products(query, key, value, layout: SegmentLayout, scaling: float | None = None, dropout: float = 0.0,
                       causal: bool = True):
    """`attend_by_segment` written out, for a CPU: the same (1, N, H, D), equal up to float rounding.

    The g = H/Hk query heads that share a key head stack their L query rows, so each (segment, key head) is one
    (g·L, D) × (D, Lp + L) product: no copy of the keys per query head. The mask enters as an additive bias (0 or
    −∞) in the same pass as the scaling, and the softmax runs in float32. A padding slot reads the row's last token
    instead of a zero row: its key is masked out and its query's output is dropped, so it adds exactly 0 to every
    gradient (no query row is fully masked: each sees its segment's first token). On 2 CPU cores, for PPO's rows,
    this took about 5 against 7.5 ms per layer's forward and backward of SDPA's CPU kernel, which tiles sequences
    far longer than these."""
    n_segments, width = layout.queries.shape
    n_tokens, n_heads, n_kv, dim = query.shape[2], query.shape[1], key.shape[1], query.shape[3]
    groups, keys = n_heads // n_kv, layout.keys.shape[1]
    scaling = dim ** -0.5 if scaling is None else scaling
    q = query[0].transpose(0, 1).index_select(0, layout.queries.clamp(max=n_tokens - 1).flatten())  # (S·L, H, D)
    q = q.view(n_segments, width, n_kv, groups, dim).permute(0, 2, 3, 1, 4)  # (S, Hk, g, L, D)
    kv = torch.cat([key, value], dim=1)[0].transpose(0, 1)  # (N, 2Hk, D), its backward a split
    kv = kv.index_select(0, layout.keys.clamp(max=n_tokens - 1).flatten())  # (S·(Lp + L), 2Hk, D)
    k, v = kv.view(n_segments, keys, 2, n_kv, dim).permute(2, 0, 3, 1, 4)  # (S, Hk, Lp + L, D) each
    allowed = layout.mask if causal else layout.bidirectional  # (S, 1, L, Lp + L)
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=query.device).masked_fill_(~allowed, -math.inf)
    scores = torch.matmul(q.reshape(n_segments, n_kv, groups * width, dim), k.transpose(2, 3))  # (S, Hk, gL, Lp+L)
    scores = torch.add(bias[:, :, None], scores.view(n_segments, n_kv, groups, width, keys), alpha=scaling)
    weights = F.dropout(torch.softmax(scores, dim=-1), dropout) if dropout else torch.softmax(scores, dim=-1)
    out = torch.matmul(weights.view(n_segments, n_kv, groups * width, keys).to(v.dtype), v)  # (S, Hk, gL, D)
    out = out.view(n_segments, n_heads, width, dim).transpose(1, 2).flatten(0, 1)  # (S·L, H, D)
    return out.index_select(0, layout.picked).unsqueeze(0)  # (1, N, H, D), the row's order


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
