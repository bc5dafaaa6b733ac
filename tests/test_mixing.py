"""Mixing people's and AI judges' feedback with weights (issue #18): `preferences.weight_by_source` maps each pair
to the weight of its annotator's kind, and the reward models' fits minimise Σ w ℓ / Σ w: all weights 1 is the
unweighted fit, weight 2 is a duplicated pair, and the weights decide whose taste the model learns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import peaked_policy

from rlhf_lab.feedback.preferences import pair_weights, weight_by_annotator, weight_by_source, weighted_pairs
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel
from rlhf_lab.reward.model import RewardConfig, RewardModel
from rlhf_lab.reward.network import bradley_terry_loss
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "we could talk about the weather music films books food travel games work friends and family today".split()
CHEAP = dict(features=("surface", "words"), ensemble_size=1, seed=0)


def replies(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 16)))).capitalize() + "." for _ in range(n)]


def short_first(n: int, seed: int) -> pd.DataFrame:
    """Pairs whose chosen reply is the shorter one (a few reversed, so the fit is not separable)."""
    rows = []
    for i, (x, y) in enumerate(zip(replies(n, seed), replies(n, seed + 100))):
        short, long_ = (x, y) if len(x) <= len(y) else (y, x)
        chosen, rejected = (long_, short) if i % 5 == 0 else (short, long_)
        rows.append(dict(prompt="Tell me something.", chosen=chosen, rejected=rejected, tie=i % 7 == 3,
                         annotator="alice"))
    return pd.DataFrame(rows)


# ---- weight_by_source --------------------------------------------------------------------------------------------

def test_weights_follow_the_annotators_kind_unregistered_is_a_person_and_zero_drops():
    pairs = pd.DataFrame(dict(prompt="p", chosen=list("abcd"), rejected=list("wxyz"),
                              annotator=["alice", "judge", "crowd-1", "judge"]))
    kinds = {"judge": "ai", "crowd-1": "simulated"}
    out = weight_by_source(pairs, kinds, {"person": 1.0, "ai": 0.25, "simulated": 0.5})
    assert out["weight"].tolist() == [1.0, 0.25, 0.5, 0.25] and out["chosen"].tolist() == list("abcd")
    dropped = weight_by_source(pairs, kinds, {"person": 2.0, "ai": 0, "simulated": 1})
    assert dropped["chosen"].tolist() == ["a", "c"] and dropped["weight"].tolist() == [2.0, 1.0]
    assert dropped.index.tolist() == [0, 1] and "weight" not in pairs  # a new frame; the input is left alone
    again = weight_by_source(out, kinds, {"person": 3.0, "ai": 2.0, "simulated": 2.0})  # weights compose
    assert again["weight"].tolist() == [3.0, 0.5, 1.0, 0.5]


@pytest.mark.parametrize("weights, message", [
    ({"human": 1.0, "ai": 0.3}, "one of 'person', 'simulated', 'ai'"),
    ({"person": -1.0, "ai": 1.0}, "finite numbers >= 0"),
    ({"person": math.nan, "ai": 1.0}, "finite numbers >= 0"),
    ({"person": "a lot", "ai": 1.0}, "finite numbers >= 0"),
    ({"person": 1.0}, "kind 'ai' \\(e.g. 'judge'\\) have no weight: add 'ai' to weights"),
    ({"person": 0.0, "ai": 0.0}, "every pair has weight 0"),
])
def test_bad_weights_say_how_to_fix_them(weights, message):
    pairs = pd.DataFrame(dict(prompt="p", chosen=["a", "b"], rejected=["x", "y"], annotator=["alice", "judge"]))
    with pytest.raises(ValueError, match=message) as info:
        weight_by_source(pairs, {"judge": "ai"}, weights)
    assert "\n" not in str(info.value)


def test_pairs_without_annotators_and_bad_weight_columns_are_refused():
    with pytest.raises(ValueError, match="need an 'annotator' column"):
        weight_by_source(pd.DataFrame(dict(prompt=["p"], chosen=["a"], rejected=["b"])), {}, {"person": 1})
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="weight column must hold finite numbers >= 0"):
            pair_weights(pd.DataFrame(dict(prompt=["p", "q"], chosen="a", rejected="b", weight=[1.0, bad])))
    kept, w = pair_weights(pd.DataFrame(dict(prompt=["p", "q", "r"], chosen="a", rejected="b", weight=[0, 2, 1])))
    assert kept["prompt"].tolist() == ["q", "r"] and w.tolist() == [2.0, 1.0]


def test_weighted_pairs_reads_kinds_from_the_store():
    store = FeedbackStore(":memory:")
    items = []
    for i in range(3):
        ids = store.add_responses([dict(prompt=f"q{i}", response=r, model="m", iteration=0) for r in ("ok", "no")])
        items.append(store.add_item(ids))
    store.register_annotator("judge", "ai", "a test judge")
    for item in items:
        store.record_pairwise(item, "judge", "A")
    store.record_pairwise(items[0], "alice", "B")  # never registered: a person
    out = weighted_pairs(store, {"person": 1.0, "ai": 0.3})
    assert sorted(zip(out["annotator"], out["weight"])) == [("alice", 1.0)] + [("judge", 0.3)] * 3



def test_weights_by_name_tell_a_simulated_learner_from_a_simulated_crowd():
    """A stand-in for the learner and the crowd are both of kind "simulated": names tell them apart."""
    pairs = pd.DataFrame(dict(prompt="p", chosen=list("abcd"), rejected=list("wxyz"),
                              annotator=["me (simulated)", "sim-0", "sim-1", "me (simulated)"]))
    out = weight_by_annotator(pairs, {"me (simulated)": 1.0}, others=0.25)
    assert out["weight"].tolist() == [1.0, 0.25, 0.25, 1.0] and "weight" not in pairs
    crowd_left_out = weight_by_annotator(pairs, {"me (simulated)": 1.0}, others=0)
    assert crowd_left_out["chosen"].tolist() == ["a", "d"] and crowd_left_out.index.tolist() == [0, 1]
    only_crowd = weight_by_annotator(out, {"me (simulated)": 0.0}, others=2.0)  # weights compose
    assert only_crowd["chosen"].tolist() == ["b", "c"] and only_crowd["weight"].tolist() == [0.5, 0.5]
    for bad, message in (({"me (simulated)": -1}, "finite numbers >= 0"), ({"me (simulated)": 0}, "every pair has "
                                                                           "weight 0")):
        with pytest.raises(ValueError, match=message) as info:
            weight_by_annotator(pairs, bad, others=0)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="'others'"):
        weight_by_annotator(pairs, {"me": 1}, others=math.nan)
    with pytest.raises(ValueError, match="need an 'annotator' column"):
        weight_by_annotator(pd.DataFrame(dict(prompt=["p"], chosen=["a"], rejected=["b"])), {"me": 1}, others=1)

# ---- the embedding reward model ------------------------------------------------------------------------------------

def test_all_weights_one_is_the_unweighted_fit():
    pairs = short_first(30, 0)
    config = EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=3, seed=0)
    plain = EmbeddingRewardModel(config).fit(pairs)
    ones = EmbeddingRewardModel(config).fit(pairs.assign(weight=1.0))
    assert torch.allclose(ones.weights_, plain.weights_, atol=1e-6)
    assert torch.allclose(ones.std_, plain.std_) and torch.allclose(ones.mean_, plain.mean_, atol=1e-6)
    uneven = EmbeddingRewardModel(config).fit(pairs.assign(weight=np.linspace(0.2, 3.0, len(pairs))))
    assert not torch.allclose(uneven.weights_, plain.weights_, atol=1e-2)  # the weights are read


def test_a_pair_of_weight_two_is_that_pair_twice():
    """Loss (Σ w ℓ + λ‖w‖²)/Σ w and frequency-weighted standardisation: weight 2 = a duplicate, exactly."""
    pairs = short_first(24, 1)
    w = np.ones(len(pairs))
    w[[0, 3, 5]] = 2.0  # pair 0 goes against the taste: doubling it matters
    weighted = EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(pairs.assign(weight=w))
    twice = pd.concat([pairs, pairs.iloc[[0, 3, 5]]], ignore_index=True)
    duplicated = EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(twice)
    once = EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(pairs)
    assert torch.allclose(weighted.std_, duplicated.std_, rtol=1e-5)
    # the same optimum to float32's reach: word_count and the word counts are nearly collinear here, so weights
    # agree to ~2e-4 and scores to ~1e-3 of their spread, where doubling three pairs moves them by ~0.6 of it
    assert torch.allclose(weighted.weights_, duplicated.weights_, atol=1e-3)
    probe = ["Tell me something."] * 50, replies(50, 7)
    scores = [m.score_raw(*probe) for m in (weighted, duplicated, once)]
    spread = scores[0].std()
    assert (scores[0] - scores[1]).abs().max() < 2e-3 * spread
    assert (scores[0] - scores[2]).abs().max() > 0.2 * spread  # and doubling did change the fit


def test_weight_zero_leaves_a_pair_out_and_ratings_refuse_weights():
    pairs = short_first(20, 2)
    w = np.where(np.arange(len(pairs)) < 6, 0.0, 1.0)
    zero = EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(pairs.assign(weight=w))
    without = EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(pairs.iloc[6:])
    assert torch.allclose(zero.weights_, without.weights_, atol=1e-5) and len(zero.val_pairs_) == 14
    with pytest.raises(ValueError, match="had weight 0"):
        EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit(pairs.assign(weight=0.0))
    ratings = pd.DataFrame(dict(prompt="p", response=["a", "b"], score=[1, 5], lo=1, hi=7, weight=1.0))
    with pytest.raises(ValueError, match="drop the 'weight' column"):
        EmbeddingRewardModel(EmbeddingRewardConfig(**CHEAP)).fit_ratings(ratings)


def mixed_store() -> FeedbackStore:
    """A person (alice) prefers the shorter reply on 16 pairs; an AI judge prefers the longer one on 48 others."""
    store = FeedbackStore(":memory:")
    store.register_annotator("judge", "ai", "likes long replies")
    for i, (x, y) in enumerate(zip(replies(64, 10), replies(64, 11))):
        if len(x) == len(y):
            continue
        ids = store.add_responses([dict(prompt="Tell me something.", response=r, model="m", iteration=0)
                                   for r in (x, y)])
        item = store.add_item(ids)
        shorter = "A" if len(x) < len(y) else "B"
        if i < 16:
            store.record_pairwise(item, "alice", shorter)
        else:
            store.record_pairwise(item, "judge", "B" if shorter == "A" else "A")
    return store


def test_the_weights_decide_whose_taste_the_model_learns():
    store = mixed_store()
    fresh_a, fresh_b = replies(80, 20), replies(80, 21)

    def prefers_short(weights) -> float:
        rm = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface",), ensemble_size=1, seed=0))
        rm.fit(weighted_pairs(store, weights))
        return rm.agreement(["Tell me something."] * 80, fresh_a, fresh_b, lambda p, r: -len(r))

    person, ai = prefers_short({"person": 1.0, "ai": 0.0}), prefers_short({"person": 0.0, "ai": 1.0})
    assert person >= 0.85 and ai <= 0.15  # (0.90 and 0.05 when written)
    assert prefers_short({"person": 1.0, "ai": 0.05}) >= 0.8  # 48 × 0.05 = 2.4 pairs' worth against 16
    assert prefers_short({"person": 1.0, "ai": 1.0}) <= 0.2  # three AI pairs for each of alice's


# ---- the neural Bradley–Terry reward model, and DPO -----------------------------------------------------------------

def test_the_bradley_terry_loss_weighs_each_pair():
    r_c, r_r = torch.tensor([1.0, -0.5, 0.2]), torch.tensor([0.0, 0.5, 0.2])
    tie = torch.tensor([False, False, True])
    each = torch.stack([bradley_terry_loss(r_c[i:i + 1], r_r[i:i + 1], tie[i:i + 1]) for i in range(3)])
    w = torch.tensor([2.0, 0.5, 0.5])
    assert torch.allclose(bradley_terry_loss(r_c, r_r, tie, weight=w), (w * each).mean())
    assert torch.allclose(bradley_terry_loss(r_c, r_r, tie, weight=torch.ones(3)), bradley_terry_loss(r_c, r_r, tie))


def toy_pairs() -> pd.DataFrame:
    return pd.DataFrame([dict(prompt=f"Question {i}: how was your day?", chosen=f"Lovely, thank you! ({j})",
                              rejected=f"Awful. Go away {j}.", tie=False, annotator="alice")
                         for i in range(6) for j in range(2)])


def test_the_neural_reward_model_reads_the_weight_column():
    pairs = toy_pairs()

    def fit(data):
        rm = RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, val_fraction=0, seed=0))
        return rm.fit(data, progress=False)

    def scores(rm):
        return rm.score_raw(pairs["prompt"], pairs["chosen"])

    plain = fit(pairs)
    assert torch.allclose(scores(fit(pairs.assign(weight=3.0))), scores(plain), atol=1e-5)  # w / mean(w) = 1
    w = np.where(np.arange(len(pairs)) % 3 == 0, 0.0, 1.0)
    assert torch.equal(scores(fit(pairs.assign(weight=w))), scores(fit(pairs[w > 0])))  # weight 0: left out
    uneven = fit(pairs.assign(weight=np.linspace(0.1, 4.0, len(pairs))))
    assert not torch.allclose(scores(uneven), scores(plain), atol=1e-4)


def test_dpo_refuses_weights_it_would_ignore(tokenizer):
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(), callbacks=[])
    with pytest.raises(ValueError, match="DPO does not weigh pairs"):
        trainer.fit(toy_pairs().assign(weight=1.0))
