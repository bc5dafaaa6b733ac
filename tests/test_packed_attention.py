"""Attention of rows packed after a shared prefix, row by row (`train.packed_attention`)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from conftest import peaked_policy

import rlhf_lab.train.packed_attention as packed_attention
from rlhf_lab.train.packed_attention import SEGMENT_ATTENTION, attend_by_segment, segment_attention, segment_layout
from rlhf_lab.train.policy_value import response_logits


def test_segment_layout_by_hand():
    index, valid, n_tokens = segment_layout(torch.tensor([2, 3, 1]))  # 6 packed tokens; slot 6 is padding
    assert n_tokens == 6
    assert index.tolist() == [[0, 1, 6], [2, 3, 4], [5, 6, 6]]
    assert valid.tolist() == [[True, True, False], [True, True, True], [True, False, False]]


@pytest.mark.parametrize("prefix_queries", [False, True])
def test_attention_by_segment_is_each_rows_softmax_over_the_prefix_and_its_own_past(prefix_queries):
    generator = torch.Generator().manual_seed(0)
    lengths, n_prefix, heads, kv_heads, dim = [3, 1, 4], 2, 4, 2, 8
    n_tokens = sum(lengths)
    query = torch.randn(1, heads, n_prefix * prefix_queries + n_tokens, dim, generator=generator)
    key, value = (torch.randn(1, kv_heads, n_prefix + n_tokens, dim, generator=generator) for _ in range(2))
    out = attend_by_segment(query, key, value, *segment_layout(torch.tensor(lengths)), scaling=0.3)  # (1, Q, H, D)

    def by_hand(q, seen):  # (H, D) query against keys `seen`: query heads 0-1 read key head 0, 2-3 head 1
        out = torch.empty(heads, dim)
        for h in range(heads):
            k, v = key[0, h // (heads // kv_heads), seen], value[0, h // (heads // kv_heads), seen]  # (S, D) each
            weights = [math.exp(0.3 * float(q[h] @ k[s])) for s in range(len(seen))]
            out[h] = sum(w * v[s] for s, w in enumerate(weights)) / sum(weights)
        return out

    expected = [by_hand(query[0, :, p], list(range(p + 1))) for p in range(n_prefix)] if prefix_queries else []
    start = 0
    for length in lengths:  # each row's token: the prefix and its row's keys up to itself
        for i in range(length):
            q = query[0, :, n_prefix * prefix_queries + start + i]
            expected.append(by_hand(q, list(range(n_prefix)) + [n_prefix + start + j for j in range(i + 1)]))
        start += length
    torch.testing.assert_close(out[0], torch.stack(expected), atol=1e-5, rtol=1e-5)


def prefix_batch(tokenizer):
    """Three left-padded prompts that start with the same 6 tokens, then right-padded replies of 3, 2, 3 tokens."""
    pad, prefix = tokenizer.pad_token_id, [5, 6, 7, 8, 9, 10]
    prompts = [prefix + [11], prefix + [12, 13, 14, 17], prefix + [15, 16]]
    replies = [[20, 21, 22], [23, 24, pad], [25, 26, 27]]
    ids = torch.tensor([[pad] * (10 - len(p)) + p + r for p, r in zip(prompts, replies)])
    return ids, (ids != pad).long(), 10


def test_packed_rows_attend_by_segment_with_the_full_masks_logits_and_gradients(tokenizer, monkeypatch):
    model = peaked_policy(tokenizer)
    model.config._attn_implementation = "sdpa"
    ids, mask, n_prompt = prefix_batch(tokenizer)
    calls = []
    real = packed_attention.attend_by_segment
    monkeypatch.setattr(packed_attention, "attend_by_segment",
                        lambda *a, **k: calls.append(a[3].shape) or real(*a, **k))  # a[3]: the layout's index

    def logits_and_grads(by_segment: bool):
        if not by_segment:  # the prefix's pass, then the packed row with its full (T, P + T) mask, as before
            monkeypatch.setattr("rlhf_lab.train.policy_value.segment_attention",
                                lambda trunk, lengths: contextlib.nullcontext({}))
        embedded = []
        hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: embedded.append(a[0].numel()))
        model.zero_grad(set_to_none=True)
        logits = response_logits(model, ids, mask, n_prompt, share_prefix=True, pack=True)
        (logits.log_softmax(-1)[..., 0] * mask[:, n_prompt:]).sum().backward()
        hook.remove()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, embedded

    logits, grads, embedded = logits_and_grads(True)
    assert calls == [torch.Size([3, 5])] * model.config.num_hidden_layers  # rows of 3, 5, 4 tokens, every layer
    assert embedded == [6 + 3 + 5 + 4]  # one pass: the prefix's 6 tokens, then the rows'
    assert model.config._attn_implementation == "sdpa"  # switched back after the forward
    full_logits, full_grads, embedded = logits_and_grads(False)
    assert len(calls) == model.config.num_hidden_layers and embedded == [6, 3 + 5 + 4]
    real_tokens = mask[:, n_prompt:].bool()
    torch.testing.assert_close(logits[real_tokens], full_logits[real_tokens], atol=1e-5, rtol=1e-4)
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_the_switch_is_undone_on_error_and_left_alone_for_other_attention(tokenizer):
    model = peaked_policy(tokenizer)
    model.config._attn_implementation = "sdpa"
    with pytest.raises(RuntimeError, match="inside"):
        with segment_attention(model.model, torch.tensor([2, 3])) as extra:
            assert model.config._attn_implementation == SEGMENT_ATTENTION and list(extra) == ["rlhf_lab_segments"]
            raise RuntimeError("inside")
    assert model.config._attn_implementation == "sdpa"
    model.config._attn_implementation = "eager"
    with segment_attention(model.model, torch.tensor([2, 3])) as extra:
        assert extra == {} and model.config._attn_implementation == "eager"
    model.config._attn_implementation = "sdpa"

    class NoKeywords(torch.nn.Module):  # a trunk that could not hand the rows' layout on to its layers
        config = model.config

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            return model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    with segment_attention(NoKeywords(), torch.tensor([2, 3])) as extra:
        assert extra == {} and model.config._attn_implementation == "sdpa"

