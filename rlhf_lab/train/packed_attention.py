"""Attention for rows packed after a shared prefix, each row reading only the prefix and itself.

`policy_value.response_hidden` runs a batch's rows as one packed row of T tokens after their shared prompt prefix
(P tokens). With a (T, P + T) mask, attention scores every packed token against every other and throws most of
them away: with 8 rows, 7/8 of the T × T block is masked. `attend_by_segment` computes the same result on the rows
themselves: each row's queries, padded to the longest row (L), against the prefix's keys and the row's own,
(B, H, L, P + L) instead of (1, H, T, P + T), about B times less work. The prefix can run in the same pass, its own
queries first (no separate pass of P tokens, no cache).

    with segment_attention(trunk, row_lengths) as by_row:   # {} when the trunk does not use SDPA attention
        hidden = trunk(..., **by_row)                        # the same numbers up to float rounding, gradients too

It is a transformers attention function (`AttentionInterface`), switched on for the one forward pass and handed the
rows' layout as a keyword argument, which the model passes on to every layer's attention.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch
import torch.nn.functional as F

__all__ = ["segment_attention", "segment_layout", "attend_by_segment", "SEGMENT_ATTENTION"]

SEGMENT_ATTENTION = "rlhf_lab_segments"
"""The name `attend_by_segment` is registered under in transformers' `AttentionInterface`."""

_LAYOUT_KWARG = "rlhf_lab_segments"


def segment_layout(row_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(index (B, L), valid (B, L), T) of rows of `row_lengths` (B,) tokens packed one after the other, T in all:
    index[b, i] is row b's token i's place in the packed row, or T (a padding slot) where i ≥ row_lengths[b]."""
    longest, n_tokens = int(row_lengths.max()), int(row_lengths.sum())
    steps = torch.arange(longest, device=row_lengths.device)  # (L,)
    valid = steps[None, :] < row_lengths[:, None]  # (B, L)
    starts = row_lengths.cumsum(0) - row_lengths  # (B,)
    index = torch.where(valid, starts[:, None] + steps[None, :], n_tokens)  # (B, L)
    return index, valid, n_tokens


def attend_by_segment(query, key, value, index, valid, n_tokens: int, scaling: float | None = None,
                      dropout: float = 0.0):
    """Causal attention of packed rows after a shared prefix, row by row: (1, H, Q, D) queries, (1, Hk, P + T, D)
    keys and values (the prefix's P first, then the T packed tokens of `segment_layout`'s rows) -> (1, Q, H, D).

    Packed token t of row b (its i-th) attends to the P prefix keys and to its own row's keys 0..i:
        out_t = softmax(s · q_t [K_prefix; K_b,0..i]ᵀ) [V_prefix; V_b,0..i]
    with H/Hk query heads sharing each key head (grouped-query attention). The queries are the T packed tokens'
    (Q = T: the prefix's keys and values came from a cache) or the prefix's P and then theirs (Q = P + T: one pass),
    the prefix's own attending causally to the prefix."""
    n_heads, groups, n_prefix = query.shape[1], query.shape[1] // key.shape[1], key.shape[2] - n_tokens
    heads = (lambda x: x.repeat_interleave(groups, dim=1)) if groups > 1 else (lambda x: x)

    def by_row(x):  # (1, h, T, D) -> (B, h, L, D); padding slots read a zero row
        x = x[0].transpose(0, 1)  # (T, h, D)
        return torch.cat([x, x.new_zeros(1, *x.shape[1:])])[index].transpose(1, 2)

    def with_prefix(x):  # (1, Hk, P + T, D) -> (B, H, P + L, D)
        rows = by_row(x[:, :, n_prefix:])
        prefix = x[:, :, :n_prefix].expand(len(index), -1, -1, -1)
        return heads(torch.cat([prefix, rows], dim=2))

    longest = index.shape[1]
    causal = torch.ones(longest, longest, dtype=torch.bool, device=query.device).tril()
    mask = torch.cat([causal.new_ones(longest, n_prefix), causal], dim=1)  # (L, P + L), the same for every row
    rows = F.scaled_dot_product_attention(by_row(query[:, :, -n_tokens:]), with_prefix(key), with_prefix(value),
                                          attn_mask=mask, dropout_p=dropout, scale=scaling)  # (B, H, L, D)
    out = rows.transpose(1, 2)[valid].reshape(1, n_tokens, n_heads, -1)  # (1, T, H, D), packed order
    if query.shape[2] == n_tokens:
        return out
    prefix = F.scaled_dot_product_attention(query[:, :, :n_prefix], heads(key[:, :, :n_prefix]),
                                            heads(value[:, :, :n_prefix]), is_causal=True, dropout_p=dropout,
                                            scale=scaling)  # (1, H, P, D)
    return torch.cat([prefix.transpose(1, 2), out], dim=1)  # (1, P + T, H, D)


def _attention_function(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention signature: by segment when the forward was handed a layout, else plain SDPA."""
    layout = kwargs.pop(_LAYOUT_KWARG, None)
    if layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return attend_by_segment(query, key, value, *layout, scaling=scaling, dropout=dropout), None


@functools.cache
def _register() -> bool:
    try:
        from transformers import AttentionInterface
    except ImportError:  # an older transformers: the packed row runs with its full mask
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


@contextlib.contextmanager
def segment_attention(trunk, row_lengths: torch.Tensor):
    """Within the block, `trunk`'s attention (if SDPA) runs row by row (`attend_by_segment`); yields the keyword
    arguments to pass to the trunk's forward ({} when the trunk's attention is not SDPA: nothing is switched)."""
    config = getattr(trunk, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not _passes_keywords(type(trunk)) or not _register():
        yield {}
        return
    config._attn_implementation = SEGMENT_ATTENTION
    try:
        yield {_LAYOUT_KWARG: segment_layout(row_lengths)}
    finally:
        config._attn_implementation = "sdpa"
