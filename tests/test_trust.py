"""How far to trust a reward model fitted on few judgments (teach.trust): held-out accuracy by prompt with its
interval, and whether the crowd's judgments pull the model towards your taste or the crowd's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.teach import lessons
from rlhf_lab.teach.trust import prompt_interval, you_or_crowd


class LengthTaste:
    """A model that learns one thing: whether the (weighted) pairs it is fitted on prefer longer or shorter replies.
    Its reward is ± the reply's length."""

    def fit(self, pairs):
        w = pairs["weight"].to_numpy() if "weight" in pairs else np.ones(len(pairs))
        longer = np.sign(pairs["chosen"].str.len().to_numpy() - pairs["rejected"].str.len().to_numpy())
        self.direction = 1.0 if (w * longer).sum() > 0 else -1.0
        return self

    def score_raw(self, prompts, replies):
        return torch.tensor([self.direction * len(r) for r in replies])


def fit(pairs):
    return LengthTaste().fit(pairs)


def pairs_by(annotator: str, prefers: str, prompts, n_each: int = 1) -> pd.DataFrame:
    rows = []
    for p in prompts:
        for i in range(n_each):
            short, long_ = "ok" + "!" * i, "that is a long reply" + "!" * i
            chosen, rejected = (short, long_) if prefers == "short" else (long_, short)
            rows.append(dict(prompt=p, chosen=chosen, rejected=rejected, tie=False, annotator=annotator))
    return pd.DataFrame(rows)


def test_prompt_interval_resamples_prompts_with_their_pairs():
    assert prompt_interval([1, 1, 1, 1], ["a", "a", "b", "c"]) == (1.0, 1.0, 1.0)
    share, low, high = prompt_interval([1, 1, 1, 0, 0, 0], list("aabbcc"), seed=0)
    assert share == 0.5 and low == 0.0 and high == 1.0  # three prompts; some resamples are all b or all a
    many = prompt_interval([1, 0] * 200, [f"p{i}" for i in range(400)], seed=0)
    assert many[0] == 0.5 and 0.44 < many[1] < 0.5 < many[2] < 0.56
    assert np.isnan(prompt_interval([], [])[0])
    share, low, high = prompt_interval([1, 1, 0, 1], ["a", None, None, "b"], seed=0)  # no prompt: one group
    assert share == 0.75 and low <= share <= high


def test_held_out_scores_your_judgments_with_models_that_never_saw_their_prompts():
    yours = pairs_by("me", "short", [f"q{i}" for i in range(8)])
    yours.loc[0, ["chosen", "rejected"]] = yours.loc[0, ["rejected", "chosen"]].to_numpy()  # one judgment against
    trust = lessons.held_out(yours, fit, folds=4, seed=0, gold=GoldUtility())
    assert trust.accuracy == pytest.approx(7 / 8) and trust.ci_low <= 7 / 8 <= trust.ci_high
    assert trust.mistakes()["prompt"].tolist() == ["q0"] and trust.mistakes()["p_chosen"].iloc[0] < 0.5
    assert trust.report.calibration["count"].sum() == 16  # each non-tie pair counted both ways, 5 bins
    text = str(trust)
    assert "7 of 8 judgments" in text and "accuracy 88%" in text and "gold utility" in text
    assert "coin flip" not in text.replace("(a coin flip: 0.693)", "")  # its interval lies above 50 %
    assert "not distinguishable from a coin flip" in str(replace(trust, ci_low=0.3, ci_high=0.9))
    # three prompts each way, one held out at a time: the other five always lean the other way
    backwards = lessons.held_out(pd.concat([pairs_by("me", "short", list("abc")), pairs_by("me", "long", list("xyz"))]),
                                 fit, folds=6)
    assert backwards.accuracy == 0 and backwards.ci_high < 0.5
    assert "below 50 %" in str(backwards) and "not distinguishable" not in str(backwards)


def test_the_crowd_pulls_the_model_to_its_taste_as_its_weight_grows():
    prompts = [f"q{i}" for i in range(10)]
    yours = pairs_by("me (simulated)", "short", prompts)  # one judgment per prompt
    crowd = pd.concat([pairs_by(f"sim-{k}", "long", prompts) for k in range(3)], ignore_index=True)  # three
    table = you_or_crowd(yours, crowd, fit, weights=(0.0, 0.25, 1.0), folds=5, seed=0)
    assert table.index.tolist() == ["yours only", "yours + crowd × 0.25", "yours + crowd × 1", "crowd only"]
    assert table["crowd weight"].tolist() == [0.0, 0.25, 1.0, np.inf]
    # 3 crowd pairs × 0.25 < 1 of yours: still your taste; × 1 the crowd outvotes you
    assert table["agrees with you"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert table["agrees with the crowd"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert (table["agrees with you low"] <= table["agrees with you"]).all()
    with pytest.raises(ValueError, match="judged on both sides") as info:
        you_or_crowd(yours, pd.concat([crowd, yours]), fit)
    assert "\n" not in str(info.value)
