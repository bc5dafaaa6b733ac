"""Label aggregation: Dawid–Skene against majority vote on a crowd whose reliabilities are known (careless and
adversarial members), and soft-labelled pairs from a store that a reward model trains on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf_lab.feedback.aggregation import aggregated_pairs, dawid_skene, majority_vote
from rlhf_lab.feedback.store import FeedbackStore


def crowd_labels(seed=0, n_items=300, accuracies=(0.8, 0.8, 0.75, 0.75, 0.55, 0.15, 0.15), share=0.7):
    """Items x annotators A/B labels from annotators of known accuracy (each judges a random share of the items),
    and the true labels."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["A", "B"], n_items)
    flip = {"A": "B", "B": "A"}
    columns = {}
    for j, acc in enumerate(accuracies):
        seen = rng.random(n_items) < share
        right = rng.random(n_items) < acc
        columns[f"a{j}"] = [(t if r else flip[t]) if s else None for t, r, s in zip(truth, right, seen)]
    return pd.DataFrame(columns), pd.Series(truth)


def accuracy(p_a: pd.Series, truth: pd.Series) -> float:
    """Share of items labelled right; a draw (P = ½) counts half."""
    right = ((p_a > 0.5) == (truth == "A")).astype(float)
    return float(np.where(p_a == 0.5, 0.5, right).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_beats_majority_vote_with_adversarial_members(seed):
    labels, truth = crowd_labels(seed)
    p_ds, reliability = dawid_skene(labels)
    p_mv = majority_vote(labels)
    assert accuracy(p_ds, truth) > accuracy(p_mv, truth) + 0.1
    assert accuracy(p_ds, truth) > 0.85
    assert (reliability[["a5", "a6"]] < 0.3).all() and (reliability[["a0", "a1"]] > 0.7).all()  # read backwards
    assert reliability["a4"] == pytest.approx(0.55, abs=0.1)  # the careless one: near a coin


def test_unanimous_and_empty_cases():
    labels = pd.DataFrame({"x": ["A", "B", None], "y": ["A", "B", None]})
    p, reliability = dawid_skene(labels)
    assert p[0] > 0.9 and p[1] < 0.1 and p[2] == pytest.approx(0.5, abs=0.2)
    assert majority_vote(labels).tolist() == [1.0, 0.0, 0.5]


def test_aggregated_pairs_from_a_store_carry_soft_targets(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=0) for t in ("one", "two", "3", "4")])
    first, second = store.add_item(ids[:2]), store.add_item(ids[2:])
    for who, choice in (("x", "B"), ("y", "B"), ("z", "A")):
        store.record_pairwise(first, who, choice)
    store.record_pairwise(second, "x", "tie")  # no A/B vote: no pair
    pairs = aggregated_pairs(store, method="majority")
    assert pairs[["chosen", "rejected", "target", "votes"]].to_dict("records") == [
        {"chosen": "two", "rejected": "one", "target": 1.0, "votes": 3}]
    soft = aggregated_pairs(store)
    assert soft["chosen"].tolist() == ["two"] and 0.5 < soft["target"][0] < 1.0
    with pytest.raises(ValueError, match="dawid_skene"):
        aggregated_pairs(store, method="vote")
