"""Sequences packed into one row as segments, each reading its parent and itself (`core.packed_attention`)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import peaked_policy, prefix_batch

import rlhf_lab.core.packed_attention as packed_attention
from rlhf_lab.core.packed_attention import (
    SEGMENT_ATTENTION,
    attend_by_products,
    attend_by_sdpa,
    attend_by_segment,
    segment_attention,
    can_attend_by_segment,
    segment_layout,
)
from rlhf_lab.train.policy_value import response_logits


TREE = ([2, 3, 1, 2, 2], [-1, 0, 0, -1, 3])  # a prompt and two replies, then a prompt and one reply


def whole_row_mask(lengths, parents) -> torch.Tensor:
    """(N, N): token t may see token u when u is in t's segment's parent, or earlier in t's own segment."""
    segment = [s for s, n in enumerate(lengths) for _ in range(n)]
    mask = torch.zeros(len(segment), len(segment), dtype=torch.bool)
    for t, s in enumerate(segment):
        for u, s_u in enumerate(segment):
            mask[t, u] = s_u == parents[s] or (s_u == s and u <= t)
    return mask


def test_segment_layout_by_hand():
    layout = segment_layout([2, 3, 1], [-1, 0, 0])  # 6 tokens; slot 6 is padding
    assert layout.queries.tolist() == [[0, 1, 6], [2, 3, 4], [5, 6, 6]]
    assert layout.valid.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert layout.keys.tolist() == [[6, 6, 0, 1, 6], [0, 1, 2, 3, 4], [0, 1, 5, 6, 6]]
    assert layout.mask[1, 0].tolist() == [[True, True, True, False, False], [True, True, True, True, False],
                                          [True, True, True, True, True]]
    assert whole_row_mask([2, 3, 1], [-1, 0, 0]).int().tolist() == [[1, 0, 0, 0, 0, 0],
                                                                    [1, 1, 0, 0, 0, 0],
                                                                    [1, 1, 1, 0, 0, 0],
                                                                    [1, 1, 1, 1, 0, 0],
                                                                    [1, 1, 1, 1, 1, 0],
                                                                    [1, 1, 0, 0, 0, 1]]


def test_attention_by_segment_is_each_tokens_softmax_over_its_parent_and_its_own_past():
    generator = torch.Generator().manual_seed(0)
    lengths, parents = TREE
    heads, kv_heads, dim, n_tokens = 4, 2, 8, sum(TREE[0])
    query = torch.randn(1, heads, n_tokens, dim, generator=generator)
    key, value = (torch.randn(1, kv_heads, n_tokens, dim, generator=generator) for _ in range(2))
    out = attend_by_segment(query, key, value, segment_layout(lengths, parents), scaling=0.3)  # (1, N, H, D)

    starts = [sum(lengths[:s]) for s in range(len(lengths))]
    expected = []
    for s, (start, length) in enumerate(zip(starts, lengths)):
        parent = list(range(starts[parents[s]], starts[parents[s]] + lengths[parents[s]])) if parents[s] >= 0 else []
        for i in range(length):
            seen = parent + [start + j for j in range(i + 1)]
            row = torch.empty(heads, dim)
            for h in range(heads):  # query heads 0-1 read key head 0, 2-3 key head 1
                k, v = key[0, h // 2, seen], value[0, h // 2, seen]
                weights = [math.exp(0.3 * float(query[0, h, start + i] @ k[j])) for j in range(len(seen))]
                row[h] = sum(w * v[j] for j, w in enumerate(weights)) / sum(weights)
            expected.append(row)
    torch.testing.assert_close(out[0], torch.stack(expected), atol=1e-5, rtol=1e-5)
    # the same attention through the whole row's mask
    full = F.scaled_dot_product_attention(query, key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1),
                                          attn_mask=whole_row_mask(lengths, parents), scale=0.3)
    torch.testing.assert_close(out[0], full[0].transpose(0, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_the_cpus_products_and_sdpa_agree_in_values_and_gradients(causal):
    """The CPU's path reads padding slots from a real token under the mask: nothing of them may reach the output or
    any gradient."""
    generator = torch.Generator().manual_seed(1)
    lengths, parents = TREE
    layout, n_tokens = segment_layout(lengths, parents), sum(lengths)
    results = []
    for attend in (attend_by_products, attend_by_sdpa):
        inputs = [torch.randn(1, heads, n_tokens, 8, generator=torch.Generator().manual_seed(heads)).requires_grad_()
                  for heads in (6, 2, 2)]  # queries, keys, values: 3 query heads per key head
        out = attend(*inputs, layout, scaling=0.4, causal=causal)
        out.backward(torch.randn(out.shape, generator=generator.manual_seed(2)))
        results.append([out.detach(), *(x.grad for x in inputs)])
    for products, sdpa in zip(*results):
        torch.testing.assert_close(products, sdpa, atol=1e-5, rtol=1e-5)
    assert results[0][0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in results[0][1:])
    if not causal:  # an encoder's token sees its whole segment: the first token's output depends on the last one's
        layout_one = segment_layout([3], [-1])
        q, k, v = (torch.randn(1, 2, 3, 4, generator=generator) for _ in range(3))
        before = attend_by_products(q, k, v, layout_one, causal=False)[0, 0]
        k[0, :, 2] += 1.0
        assert not torch.allclose(before, attend_by_products(q, k, v, layout_one, causal=False)[0, 0])


def test_packed_rows_attend_by_segment_with_the_full_masks_logits_and_gradients(tokenizer, monkeypatch):
    model = peaked_policy(tokenizer)
    model.config._attn_implementation = "sdpa"
    ids, mask, n_prompt = prefix_batch(tokenizer)
    calls = []
    real = packed_attention.attend_by_segment
    monkeypatch.setattr(packed_attention, "attend_by_segment",
                        lambda *a, **k: calls.append(a[3].queries.shape) or real(*a, **k))

    def logits_and_grads(by_segment: bool):
        if not by_segment:  # the prefix's pass, then the packed row with its full (T, P + T) mask, as before
            monkeypatch.setattr("rlhf_lab.train.policy_value.can_attend_by_segment", lambda trunk: False)
        embedded = []
        hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: embedded.append(a[0].numel()))
        model.zero_grad(set_to_none=True)
        logits = response_logits(model, ids, mask, n_prompt, share_prefix=True, pack=True)
        (logits.log_softmax(-1)[..., 0] * mask[:, n_prompt:]).sum().backward()
        hook.remove()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, embedded

    logits, grads, embedded = logits_and_grads(True)
    assert calls == [torch.Size([4, 6])] * model.config.num_hidden_layers  # the prefix's 6 and rows of 3, 5, 4
    assert embedded == [6 + 3 + 5 + 4]  # one pass: the prefix's 6 tokens, then the rows'
    assert model.config._attn_implementation == "sdpa"  # switched back after the forward
    full_logits, full_grads, embedded = logits_and_grads(False)
    assert len(calls) == model.config.num_hidden_layers and embedded == [6, 3 + 5 + 4]
    real_tokens = mask[:, n_prompt:].bool()
    torch.testing.assert_close(logits[real_tokens], full_logits[real_tokens], atol=1e-5, rtol=1e-4)
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_the_switch_is_undone_on_error_and_refused_for_other_attention(tokenizer):
    model = peaked_policy(tokenizer)
    model.config._attn_implementation = "sdpa"
    assert can_attend_by_segment(model.model)
    with pytest.raises(RuntimeError, match="inside"):
        with segment_attention(model.model, segment_layout([2, 3], [-1, 0])) as extra:
            assert model.config._attn_implementation == SEGMENT_ATTENTION and list(extra) == ["rlhf_lab_segments"]
            raise RuntimeError("inside")
    assert model.config._attn_implementation == "sdpa"
    with segment_attention(model.model, segment_layout([2, 3], [-1, 0])):  # a forward without the layout
        with pytest.raises(RuntimeError, match="without the segments' layout"):
            model.model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]))
    model.config._attn_implementation = "eager"
    assert not can_attend_by_segment(model.model)
    with pytest.raises(ValueError, match="cannot attend by segment"):
        with segment_attention(model.model, segment_layout([2, 3], [-1, 0])):
            pass
    assert model.config._attn_implementation == "eager"
    model.config._attn_implementation = "sdpa"

    class NoKeywords(torch.nn.Module):  # a trunk that could not hand the layout on to its layers
        config = model.config

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            return model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    assert not can_attend_by_segment(NoKeywords())
