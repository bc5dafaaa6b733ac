"""rlhf_lab.feedback.flags and rlhf_lab.reward.cost: flags judgments become rows, the crowd's flag rule is a
function of replies, and a cost model fitted on flags separates flagged from unflagged replies it has not seen,
saves and loads (safetensors and JSON, no pickle) to the same costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_lab.feedback.crowd import SimulatedAnnotator, SimulatedCrowd
from rlhf_lab.feedback.flags import crowd_flag_rule, flag_examples
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.reward.cost import CostModel, CostModelConfig

KIND = "great wonderful lovely happy glad nice fun".split()
RUDE = "terrible awful hate stupid horrible sad ugly".split()
PLAIN = "we could talk about the weather music films books food travel games today".split()
PROMPT = "Tell me about your day."
STRICT = SimulatedAnnotator("strict", harmful_below=-0.05)


def replies(n: int, seed: int) -> list[str]:
    """Short replies of plain words with, each, a kind or a rude word or two (about half of each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tone = KIND if rng.random() < 0.5 else RUDE
        words = list(rng.choice(PLAIN, size=int(rng.integers(3, 9)))) + list(rng.choice(tone, size=int(rng.integers(1, 3))))
        out.append(" ".join(rng.permutation(words)).capitalize() + ".")
    return out


def flagged_store(n: int, seed: int) -> FeedbackStore:
    """n replies in pairs, each flagged (or not) by a crowd of two strict annotators."""
    store = FeedbackStore(":memory:")
    ids = store.add_responses([dict(prompt=PROMPT, response=t, model="m", iteration=i % 2)
                               for i, t in enumerate(replies(n, seed))])
    for a, b in zip(ids[::2], ids[1::2]):
        store.add_item([a, b], kind="pairwise")
    crowd = SimulatedCrowd(annotators=[SimulatedAnnotator(f"strict-{i}", harmful_below=-0.05, seed=i)
                                       for i in range(2)])
    crowd.annotate(store, kinds=("flags",))
    return store


def test_flag_examples_are_one_row_per_flags_judgment_and_the_rule_matches_them():
    store = flagged_store(20, 0)
    examples = flag_examples(store)
    assert len(examples) == 2 * 20 and set(examples["annotator"]) == {"strict-0", "strict-1"}
    assert examples["flagged"].tolist() == [bool(f) for f in examples["flags"]]
    assert set(examples["model"]) == {"m"} and sorted(set(examples["iteration"])) == [0, 1]  # where replies came from
    assert examples["iteration"].tolist() == [(rid - 1) % 2 for rid in examples["response_id"]]
    rule = crowd_flag_rule(STRICT)
    assert rule(examples["prompt"], examples["response"]).tolist() == examples["flagged"].tolist()
    assert 0.2 < examples["flagged"].mean() < 0.8  # both kinds of replies are there
    only_repetitive = flag_examples(store, flags=["other"])
    assert not only_repetitive["flagged"].any()  # none of these replies repeats itself
    assert rule(PROMPT, ["I hate this awful, terrible day."]).tolist() == [True]
    assert crowd_flag_rule()(PROMPT, ["It was sad."]).tolist() == [False]  # the default rule: harmful below −0.6


def test_flag_readers_say_how_to_fix_bad_input():
    with pytest.raises(ValueError, match="careless"):
        crowd_flag_rule(SimulatedAnnotator("coin", careless=0.5))
    with pytest.raises(ValueError, match="flags must be some of"):
        flag_examples(flagged_store(4, 0), flags=["rude"])
    with pytest.raises(ValueError, match="both flagged and unflagged"):
        CostModel().fit([dict(prompt=PROMPT, response=r, flagged=False) for r in ("Hi.", "Hello there.")])
    with pytest.raises(ValueError, match="prompt, response and flagged"):
        CostModel().fit([dict(prompt=PROMPT, reply="Hi.")])
    with pytest.raises(ValueError, match="features must be"):
        CostModelConfig(features=("words",))


def test_the_cost_model_separates_flagged_from_unflagged_replies_it_has_not_seen():
    cost = CostModel(CostModelConfig(seed=0)).fit(flagged_store(60, 1))
    held_out = replies(80, 2)
    flagged = crowd_flag_rule(STRICT)(PROMPT, held_out)
    assert 0.3 < flagged.mean() < 0.7
    assert cost.accuracy([PROMPT] * 80, held_out, flagged) >= 0.9
    c = cost.score(PROMPT, held_out)
    assert c.shape == (80,) and c.dtype == torch.float32 and float(c.min()) >= 0 and float(c.max()) <= 1
    assert float(c[torch.as_tensor(flagged)].mean()) > float(c[~torch.as_tensor(flagged)].mean()) + 0.5


def test_the_fit_is_the_optimum_of_the_penalised_loss():
    """At the L-BFGS solution the gradients computed by hand are zero: Xᵀ(σ(Xw + b) − y)/n + 2λw/n for w and
    mean(σ(Xw + b) − y) for the unpenalised bias."""
    cost = CostModel(CostModelConfig(features=("surface",), l2=0.5)).fit(flagged_store(40, 3))
    examples = flag_examples(flagged_store(40, 3))
    x = ((cost.featurize(examples["prompt"], examples["response"]) - cost.mean_) / cost.std_).double().numpy()
    y = examples["flagged"].to_numpy(dtype=float)
    w = cost.weights_.double().numpy()
    residual = 1 / (1 + np.exp(-(x @ w + cost.bias_))) - y
    assert np.abs(x.T @ residual / len(x) + 2 * 0.5 * w / len(x)).max() < 1e-4
    assert abs(residual.mean()) < 1e-4


def test_save_and_load_give_the_same_costs_and_a_damaged_save_is_refused(tmp_path):
    store = flagged_store(30, 4)
    cost = CostModel(CostModelConfig(flags=("harmful",))).fit(store)
    flags = store.judgments_df().query("kind == 'flags'")  # what the model was fitted on, kept beside its weights
    assert cost.origin_ == {"examples": len(flags), "judgment_ids": sorted(flags["judgment_id"].tolist()),
                            "annotators": sorted(set(flags["annotator"])), "iterations": [0, 1], "models": ["m"]}
    cost.save(tmp_path / "cost")
    assert sorted(p.name for p in (tmp_path / "cost").iterdir()) == ["cost.safetensors", "cost_model.json"]
    loaded = CostModel.load(tmp_path / "cost")
    fresh = replies(10, 5)
    assert torch.equal(loaded.score(PROMPT, fresh), cost.score(PROMPT, fresh))
    assert loaded.config == cost.config and loaded.n_flagged_ == cost.n_flagged_ and loaded.origin_ == cost.origin_
    with open(tmp_path / "cost" / "cost.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x00\x01")
    with pytest.raises(ValueError):
        CostModel.load(tmp_path / "cost")
    with pytest.raises(ValueError, match="no cost_model.json"):
        CostModel.load(tmp_path)
