"""rlhf_lab.reward.linear_fits.relevance_weights: automatic relevance determination over some columns."""

import torch

from rlhf_lab.reward.evidence import relevance_step
from rlhf_lab.reward.linear_fits import blend_members, fit_logistic, relevance_weights


def test_blend_members_divides_by_each_models_spread_and_adds_one_row_as_it_is():
    g = torch.Generator().manual_seed(0)
    with_words, without = torch.randn(3, 5, generator=g), torch.randn(3, 2, generator=g)
    z = torch.randn(40, 5, generator=g)
    blended = blend_members(with_words, without, z)
    s1 = (z @ with_words.mean(0)).std()
    s2 = (z[:, :2] @ without.mean(0)).std()
    expected = with_words / s1
    expected[:, :2] += without / s2
    assert torch.allclose(blended, expected, atol=1e-6)
    one = blend_members(with_words, without, z[:1])  # one reply: no spread to measure
    expected = with_words.clone()
    expected[:, :2] += without
    assert torch.allclose(one, expected) and one.isfinite().all()


def judgments(seed: int):
    """60 pairs over 30 columns, the last 20 "words"; the judgments follow column 0 (not a word) and word 12."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(60, 30, generator=g)
    t = (torch.rand(60, generator=g) < torch.sigmoid(1.5 * z[:, 0] + 3 * z[:, 12])).float()
    return z, t, torch.arange(30) >= 10


def test_the_word_the_judgments_follow_rises_to_the_cap_and_the_rest_shrink():
    for seed in (0, 1, 2):
        z, t, words = judgments(seed)
        scale = relevance_weights(z, t, 1.0, words, cap=3.0)
        assert torch.equal(scale[:10], torch.ones(10))  # columns outside `columns` keep their prior
        assert float(scale[12]) == 3.0
        others = scale[words & (torch.arange(30) != 12)]
        assert float(others.median()) < 0.5 and float(others.min()) >= 1e-3


def test_relevance_weights_repeats_fit_then_mackays_step():
    """Two rounds by hand (fit on the scaled columns, multiply by the step's factor, clamp) give the same scales."""
    z, t, words = judgments(3)
    scale = torch.ones(30)
    for _ in range(2):
        zs = z * scale
        step = relevance_step(zs, t, fit_logistic(zs, t, 1.0), 1.0)
        scale = torch.where(words, (scale * step).clamp(1e-3, 2.0), scale)
    assert torch.allclose(relevance_weights(z, t, 1.0, words, cap=2.0, rounds=2), scale)
