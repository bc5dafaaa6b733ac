"""Losses for every kind of feedback, each against an independent computation: Plackett–Luce (rankings) by its
definition and against Bradley–Terry at k = 2, the ratings' regression, and KTO (thumbs) by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlhf_lab.reward.losses import plackett_luce_loss, rating_regression_loss, rating_targets
from rlhf_lab.reward.network import bradley_terry_loss
from rlhf_lab.train.kto_losses import kto_loss, kto_reference_point, kto_weights


def _pl_by_definition(rewards: list[float]) -> float:
    """−log P(ranking) as a product of choices: at each step the best of those left, by softmax."""
    nll = 0.0
    for i in range(len(rewards) - 1):
        nll -= rewards[i] - math.log(sum(math.exp(r) for r in rewards[i:]))
    return nll


def test_plackett_luce_with_two_replies_is_bradley_terry():
    torch.manual_seed(0)
    r = torch.randn(64, 2) * 3
    assert plackett_luce_loss(r).item() == pytest.approx(bradley_terry_loss(r[:, 0], r[:, 1]).item(), abs=1e-6)


def test_plackett_luce_matches_its_definition_with_ragged_rankings():
    rankings = [[2.0, 1.0, 0.5, -1.0], [0.3, -1.0], [40.0, 39.0, -30.0], [1.0]]
    scores = torch.zeros(4, 4)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    for b, rs in enumerate(rankings):
        scores[b, :len(rs)], mask[b, :len(rs)] = torch.tensor(rs), True
    scores[1, 2:] = 99.0  # padding values must not matter
    scores.requires_grad_(True)
    loss = plackett_luce_loss(scores, mask)
    assert loss.item() == pytest.approx(sum(_pl_by_definition(rs) for rs in rankings) / 4, rel=1e-5)
    loss.backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[~mask] == 0).all()


def test_plackett_luce_prefers_the_ranked_order_and_sums_over_all_orders_to_one():
    r = [1.5, 0.2, -0.7]
    probs = [math.exp(-plackett_luce_loss(torch.tensor([[r[i] for i in perm]])).item())
             for perm in itertools.permutations(range(3))]
    assert sum(probs) == pytest.approx(1.0, abs=1e-6) and max(probs) == probs[0]


def test_ratings_regress_onto_the_scale():
    t = rating_targets(torch.tensor([1, 4, 7]), (1, 7))
    assert t.tolist() == [-0.5, 0.0, 0.5]
    assert rating_regression_loss(torch.tensor([0.0, 0.0, 0.5]), t).item() == pytest.approx(0.5 * 0.25 / 3)
    with pytest.raises(ValueError, match="hi > lo"):
        rating_targets(torch.tensor([1]), (3, 3))


def test_kto_loss_by_hand():
    logps, ref = torch.tensor([-10.0, -12.0, -8.0]), torch.tensor([-11.0, -11.0, -9.0])
    up = torch.tensor([True, False, True])
    z0 = kto_reference_point(torch.tensor([-20.0, -21.0]), torch.tensor([-20.5, -21.5]))
    assert z0.item() == pytest.approx(0.5) and not z0.requires_grad
    assert kto_reference_point(torch.tensor([-20.0]), torch.tensor([-19.0])).item() == 0.0  # clamped at 0
    beta, lam_d, lam_u = 0.1, 1.33, 1.0
    got = kto_loss(logps, ref, up, z0, beta, lam_d, lam_u)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    want = [lam_d - lam_d * sig(beta * (1.0 - 0.5)),   # desirable, r = +1
            lam_u - lam_u * sig(beta * (0.5 - -1.0)),  # undesirable, r = −1
            lam_d - lam_d * sig(beta * (1.0 - 0.5))]   # desirable, r = +1
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert kto_weights(10, 30) == (3.0, 1.0) and kto_weights(10, 30, ratio=4 / 3)[0] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="both kinds"):
        kto_weights(0, 5)
