"""A learner's run (loop.learner): whose judgments count each iteration (the learner's, or a stand-in's said aloud),
and how the crowd is mixed in by name, on a hand-made store."""

from __future__ import annotations

import pytest

from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.loop.learner import (crowd_pairs, learner_or_stand_in, learner_pairs, round_judge, stand_in_taste,
                                   training_pairs)
from rlhf_lab.loop.run_config import ExperimentConfig, FeedbackConfig


def rounds(store, n_items: int = 4) -> dict[int, list]:
    """n_items pairwise items in each of iterations 1 and 2 (a short and a long reply)."""
    made = {}
    for k in (1, 2):
        ids = []
        for i in range(n_items):
            rs = store.add_responses([dict(prompt=f"q{k}{i}", response=text, model="m", iteration=k)
                                      for text in ("Fine.", "Well, it is a long story, let me tell you all of it.")])
            ids.append(store.add_item(rs))
        made[k] = [store.get_item(i) for i in ids]
    return made


def test_each_iteration_counts_the_learner_or_the_stand_in_and_the_crowd_by_name(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    made = rounds(store)
    feedback = FeedbackConfig(pairs_per_iteration=4, learner="me", stand_in="short", learner_minimum=3,
                              crowd_weight=0.5, annotators=1)
    for item in made[1][:3]:
        store.record_pairwise(item.id, "me", "B")  # the learner judged 3 of 4 in iteration 1: enough
    store.record_pairwise(made[2][0].id, "me", "B")  # ... and 1 of 4 in iteration 2: too few
    said = []
    assert learner_or_stand_in(store, made[1], feedback, log=said.append) == 0
    assert said[-1] == "using your 3 judgment(s) as 'me' of this iteration's 4 pairs"
    assert stand_in_taste(store, feedback) is None  # no stand-in has judged yet
    assert learner_or_stand_in(store, made[2], feedback, log=said.append) == 4
    assert said[-1].startswith("⚠ You judged 1 of 4 pairs as 'me'; an iteration needs at least 3: a SIMULATED "
                               "learner ('me (simulated)', taste 'short') judged")
    assert "\n" not in said[-1]
    assert [round_judge(store, feedback, k) for k in (1, 2)] == ["me", "me (simulated)"]
    for item in made[1] + made[2]:
        store.record_pairwise(item.id, "sim-0", "B")  # the crowd prefers the long reply
    store.register_annotator("sim-0", "simulated")  # the crowd and the stand-in share a kind; names tell them apart

    yours = learner_pairs(store, feedback)
    assert sorted(zip(yours["iteration"], yours["annotator"])) == [(1, "me")] * 3 + [(2, "me (simulated)")] * 4
    assert (yours.loc[yours["annotator"] == "me (simulated)", "chosen"] == "Fine.").all()  # its taste: short
    assert crowd_pairs(store, feedback)["annotator"].tolist() == ["sim-0"] * 8
    mixed = training_pairs(store, feedback)
    assert sorted(mixed.groupby("annotator")["weight"].agg(["first", "size"]).itertuples(name=None)) == [
        ("me", 1.0, 3), ("me (simulated)", 1.0, 4), ("sim-0", 0.5, 8)]  # me's lone judgment of iteration 2 is out
    alone = training_pairs(store, FeedbackConfig(pairs_per_iteration=4, learner="me", stand_in="short",
                                                 learner_minimum=3))
    assert sorted(set(alone["annotator"])) == ["me", "me (simulated)"] and len(alone) == 7
    taste = stand_in_taste(store, feedback)
    assert taste.name == "me (simulated)" and taste.utility(["q"], ["a b c d e"]).tolist() == [-1.0]
    assert len(training_pairs(store, FeedbackConfig())) == 3 + 1 + 4 + 8  # no learner: every judgment alike


@pytest.mark.parametrize("settings, message", [
    (dict(learner="me", crowd_weight=-1), "crowd_weight must be a finite number >= 0"),
    (dict(learner="me", crowd_weight=1.0, annotators=0), "crowd_weight > 0 needs a crowd"),
    (dict(learner="me", learner_minimum=0), "learner_minimum must be between 1 and pairs_per_iteration"),
    (dict(learner="me", stand_in="grumpy"), "Unknown taste 'grumpy'"),
    (dict(learner=""), "learner must be an annotator's name"),
])
def test_bad_learner_settings_say_how_to_fix_them(settings, message):
    with pytest.raises(ValueError, match=message) as info:
        FeedbackConfig(**settings)
    assert "\n" not in str(info.value)


def test_reward_kind_is_checked():
    with pytest.raises(ValueError, match="reward_kind must be one of"):
        ExperimentConfig(reward_kind="svm")
    with pytest.raises(ValueError, match="warm_start_reward needs reward_kind='network'"):
        ExperimentConfig(reward_kind="embedding", warm_start_reward=True)
    config = ExperimentConfig(reward_kind="embedding", feedback=FeedbackConfig(learner="me", crowd_weight=0.25))
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="has no learner"):
        learner_pairs(FeedbackStore(":memory:"), FeedbackConfig())
