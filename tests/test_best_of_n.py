"""rlhf_lab.best_of_n: the analytic KL, its exact measurement on a pool, and picking on a tiny random policy."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.policy.models import tiny_policy
from rlhf_lab.reward.sources import Reward
from rlhf_lab.train.best_of_n import best_of_n, best_of_n_kl, empirical_best_of_n_kl

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?"]


class NewlineReward(Reward):
    def __call__(self, batch):
        return ((batch.response_ids == 198) & batch.response_mask.bool()).sum(1).float() / 8


def test_analytic_kl():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError, match="at least 1"):
        best_of_n_kl(0)


def test_a_nan_reward_is_refused_not_picked_as_the_best(tiny):
    class Broken(Reward):
        def __call__(self, batch):
            scores = torch.arange(len(batch.responses), dtype=torch.float32)
            scores[1] = float("nan")
            return scores
    model, tokenizer = tiny_policy(tiny[1], seed=0)
    sampling = SamplingConfig(max_new_tokens=2, temperature=1.0)
    with pytest.raises(ValueError, match="the reward gave NaN for 1 of 8 candidates"):
        best_of_n(model, tokenizer, PROMPTS[:2], Broken(), n=4, pool=4, sampling=sampling, seed=0)
    with pytest.raises(ValueError, match="no NaN"):
        empirical_best_of_n_kl(torch.tensor([1.0, float("nan"), 2.0]), 2)


def test_empirical_kl_by_hand_and_with_ties():
    # two distinct replies, n = 2: the better one is picked with probability 1 − ¼ = ¾
    assert empirical_best_of_n_kl(torch.tensor([0.0, 1.0]), 2) == pytest.approx(0.25 * math.log(0.5) +
                                                                                 0.75 * math.log(1.5))
    assert empirical_best_of_n_kl(torch.ones(10), 8) == pytest.approx(0.0, abs=1e-12)  # all tied: nothing to pick
    assert empirical_best_of_n_kl(torch.tensor([3.0, 1.0, 2.0]), 1) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_empirical_kl_approaches_the_analytic_value_on_a_large_pool(n):
    rewards = torch.randn(20000, generator=torch.Generator().manual_seed(n))
    assert empirical_best_of_n_kl(rewards, n) == pytest.approx(best_of_n_kl(n), abs=5e-3)


@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.integers(0, 5), min_size=1, max_size=40), n=st.integers(1, 32))
def test_empirical_kl_never_exceeds_the_bound(rewards, n):
    kl = empirical_best_of_n_kl(torch.tensor(rewards, dtype=torch.float32), n)
    assert -1e-12 <= kl <= best_of_n_kl(n) + 1e-9


def test_best_of_n_beats_single_samples_and_its_kl_is_near_the_bound(tiny):
    torch.set_num_threads(1)
    model, tokenizer = tiny_policy(tiny[1], seed=0)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0)
    pool = best_of_n(model, tokenizer, PROMPTS, NewlineReward(), n=8, pool=64, sampling=sampling, seed=0)
    assert pool.scores.shape == (4, 64) and len(pool.candidates) == 256
    one, eight = pool.with_n(1), pool
    assert eight.best_scores.mean() > one.best_scores.mean() + 0.1  # the pick raises the scripted reward
    assert torch.equal(eight.best_scores, pool.scores[:, :8].max(dim=1).values)
    assert eight.responses == [pool.candidates.responses[i] for i in (torch.arange(4) * 64 + eight.best).tolist()]
    assert eight.tokens_generated == int(pool.candidates.response_mask.view(4, 64, -1)[:, :8].sum())
    # the newline counts tie often, so the measured KL sits below the bound, but well above 0
    assert 0.3 * eight.kl_analytic < eight.kl_measured <= eight.kl_analytic
    with pytest.raises(ValueError, match="pool >= n"):
        best_of_n(model, tokenizer, PROMPTS, NewlineReward(), n=8, pool=4)


def test_best_of_n_generates_a_large_pool_in_bounded_batches(tiny, monkeypatch):
    """P·pool replies in one batch ran a GPU out of memory: by default they are generated 256 at a time."""
    model, tokenizer = tiny_policy(tiny[1], seed=0)
    sizes, real_generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda input_ids, **k: sizes.append(len(input_ids)) or
                        real_generate(input_ids=input_ids, **k))
    sampling = SamplingConfig(max_new_tokens=2, temperature=1.0, decoder="hf")  # the batches model.generate sees
    pool = best_of_n(model, tokenizer, PROMPTS * 20, NewlineReward(), n=4, pool=8, sampling=sampling, seed=0)
    assert sizes == [256, 256, 128] and len(pool.candidates) == 640
    sizes.clear()
    best_of_n(model, tokenizer, PROMPTS, NewlineReward(), n=4, sampling=sampling, seed=0, batch_size=5)
    assert sizes == [5, 5, 5, 1]
