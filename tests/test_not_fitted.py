"""A reward or cost model used before it is fitted or loaded is refused in one line (it scored with an untrained
head, or failed on a missing attribute); a loaded one scores; scoring no replies gives an empty tensor, and prompts
and replies of different lengths are refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlhf_lab.core.errors import NotFittedError
from rlhf_lab.reward.cost import CostModel, CostModelConfig
from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel
from rlhf_lab.reward.ensemble import RewardEnsemble
from rlhf_lab.reward.model import RewardConfig, RewardModel

pytestmark = pytest.mark.usefixtures("one_thread")

FIT_FIRST = r"this reward model is not fitted yet: call fit\(pairs\) first, or load one with {}\.load\(path\)"
PAIRS = pd.DataFrame([dict(prompt=f"Question {i}: how was your day?", chosen=f"Lovely, thank you! ({i})",
                           rejected=f"Awful. Go away {i}.") for i in range(6)])
SURFACE = EmbeddingRewardConfig(features=("surface",), ensemble_size=1)


def test_models_never_fitted_refuse_to_score_in_one_line(tmp_path):
    rm = RewardModel(RewardConfig(backbone="tiny"))
    for call in (lambda: rm.score(["p"], ["x"]), lambda: rm.score_raw("p", "x"), lambda: rm.check_tokenizer(None),
                 lambda: rm.save(tmp_path / "rm"), lambda: rm.evaluate(PAIRS)):
        with pytest.raises(NotFittedError, match=FIT_FIRST.format("RewardModel")):
            call()
    assert not hasattr(rm, "net_")  # nothing was built on the way
    emb = EmbeddingRewardModel(SURFACE)
    for call in (lambda: emb.score(["p"], ["x"]), lambda: emb.spread(["p"], ["x"]), lambda: emb.evaluate()):
        with pytest.raises(NotFittedError, match=FIT_FIRST.format("EmbeddingRewardModel")):
            call()
    with pytest.raises(ValueError, match=FIT_FIRST.format("RewardEnsemble")):  # NotFittedError is a ValueError
        RewardEnsemble().score(["p"], ["x"])
    with pytest.raises(NotFittedError, match=r"this cost model is not fitted yet: call fit\(flags\) first, or load "
                                             r"one with CostModel\.load\(path\)"):
        CostModel().score(["p"], ["x"])


def test_a_fitted_and_a_loaded_reward_model_score_and_say_how_to_evaluate_without_held_out_pairs(tmp_path):
    rm = RewardModel(RewardConfig(backbone="tiny", max_length=32, batch_size=4, val_fraction=0, seed=0))
    rm.fit(PAIRS, progress=False)
    loaded = RewardModel.load(rm.save(tmp_path / "rm"))
    assert torch.allclose(loaded.score(PAIRS["prompt"], PAIRS["chosen"]), rm.score(PAIRS["prompt"], PAIRS["chosen"]))
    for model in (rm, loaded):
        with pytest.raises(ValueError, match=r"holds out no pairs to evaluate on .*: pass the pairs to evaluate on: "
                                             r"evaluate\(pairs\)"):
            model.evaluate()
        assert model.evaluate(PAIRS).n_pairs == len(PAIRS)
    empty = rm.score([], [])
    assert empty.shape == (0,) and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="got 2 prompts for 1 responses; pass one each"):
        rm.score(["p", "q"], ["x"])


def test_embedding_and_cost_models_score_no_replies_as_empty_and_refuse_mismatched_lengths(tmp_path):
    emb = EmbeddingRewardModel(SURFACE).fit(PAIRS)
    loaded = EmbeddingRewardModel.load(emb.save(tmp_path / "emb"))
    assert torch.equal(loaded.score("Hi?", ["Hello.", "Go away."]), emb.score(["Hi?"] * 2, ["Hello.", "Go away."]))
    assert emb.score([], []).shape == (0,) and emb.member_scores([], []).shape == (1, 0)
    with pytest.raises(ValueError, match="got 2 prompts for 1 responses; pass one each"):
        emb.score(["p", "q"], ["x"])
    flags = pd.DataFrame({"prompt": ["a"] * 4, "response": ["Fine.", "I hate you!", "Sure.", "Idiot!"],
                          "flagged": [False, True, False, True]})
    cost = CostModel(CostModelConfig(features=("surface",))).fit(flags)
    assert cost.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="got 2 prompts for 1 responses; pass one each"):
        cost.score(["p", "q"], ["x"])
