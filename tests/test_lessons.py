"""The lessons' helpers (rlhf_lab/lessons.py), on the tiny model and small stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from rlhf_lab.cli import demo_config
from rlhf_lab.feedback.crowd import SimulatedAnnotator, SimulatedCrowd
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.model import RewardConfig
from rlhf_lab.loop import plots
from rlhf_lab.teach import lessons
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

SAMPLING = SamplingConfig(max_new_tokens=6, temperature=1.0)
PROMPTS = ["How are you today?", "What is your favourite colour?", "Tell me a joke."]


class LengthReward:
    """A stand-in reward model: longer replies score higher (what `score` and `val_pairs_` look like)."""

    def __init__(self, val_pairs=None):
        self.val_pairs_ = val_pairs

    def score(self, prompts, responses):
        return torch.tensor([float(len(r)) for r in responses])


@pytest.fixture
def store(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    yield store
    store.close()


def test_sampling_sweep_measures_diversity_and_quality(tiny):
    model, tok = tiny
    greedy = SamplingConfig(max_new_tokens=6, temperature=0.0)
    table = lessons.sampling_sweep(model, tok, PROMPTS[:2], [greedy, SAMPLING], n_per_prompt=2, seed=0)
    assert list(table["temperature"]) == [0.0, 1.0]
    assert table.loc[0, "all_different"] == 0.0, "greedy decoding repeats itself"
    assert {"distinct_1", "distinct_2", "gold", "length", "eos_rate", "example"} <= set(table.columns)
    assert isinstance(plots.plot_sampling_sweep(table), Figure)


def test_rate_or_simulate_uses_the_learner_or_says_it_fell_back(tiny, store, capsys):
    model, tok = tiny
    items = lessons.sample_pairs(store, model, tok, PROMPTS, SAMPLING, seed=0)
    assert [len(it.responses) for it in items] == [2, 2, 2] and items[0].prompt == PROMPTS[0]

    store.record_pairwise(items[0].id, "ann", "A")
    assert lessons.rate_or_simulate(store, "ann", items) == "ann"
    assert "Using your 1 judgment" in capsys.readouterr().out

    assert lessons.rate_or_simulate(store, "bob", items) == "bob (simulated)"
    assert "Nobody rated as 'bob'" in capsys.readouterr().out
    assert store.counts()["by_annotator"]["bob (simulated)"] == 3
    assert store.pending_items("bob"), "the learner can still rate after the stand-in did"

    # Two of three judged and a reply flagged (a restarted kernel): the flag does not count, and a lesson that needs
    # three says how many are missing and goes on with the stand-in instead of failing further down.
    store.record_pairwise(items[1].id, "ann", "B")
    store.record_flags(items[2].responses[0].id, "ann", ["harmful"])
    assert lessons.rate_or_simulate(store, "ann", items, minimum=3) == "ann (simulated)"
    assert "You judged 2 of 3 item(s) as 'ann'; the steps below need at least 3" in capsys.readouterr().out
    store.record_pairwise(items[2].id, "ann", "tie")
    assert lessons.rate_or_simulate(store, "ann", items, minimum=3) == "ann"
    assert "Using your 3 judgment(s)" in capsys.readouterr().out

    table = lessons.judgment_table(store, "bob (simulated)")
    assert len(table) == 3 and {"prompt", "reply A", "reply B", "choice"} <= set(table.columns)


def test_flag_summary_counts_flags_per_reply(store):
    ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=0) for t in ("fine", "awful")])
    store.record_flags(ids[0], "a", [])
    store.record_flags(ids[1], "a", ["harmful"])
    store.record_flags(ids[1], "b", ["harmful", "biased"])
    table = lessons.flag_summary(store)
    assert table["response_id"].tolist() == [ids[1]]
    assert table.loc[0, "harmful"] == 2 and table.loc[0, "biased"] == 1 and table.loc[0, "looked"] == 2
    assert lessons.flag_summary(FeedbackStore(":memory:")).empty


def test_reward_mistakes_and_features():
    pairs = pd.DataFrame({"prompt": ["p", "q", "r"], "chosen": ["short", "a much longer reply", "tie one"],
                          "rejected": ["a longer one", "tiny", "tie two"], "tie": [False, False, True]})
    mistakes = lessons.reward_mistakes(LengthReward(pairs))
    assert mistakes["chosen"].tolist() == ["short"] and mistakes.loc[0, "p_chosen"] < 0.5
    table = lessons.reward_vs_features(LengthReward(), ["Is it nice?"] * 3, ["no", "yes it is", "yes it is very nice"])
    assert table.loc["length_words", "reward model"] == pytest.approx(1.0)
    assert set(table.columns) == {"reward model", "gold", "gold weight"}


def test_token_table_and_overoptimisation_curve(tiny):
    model, tok = tiny
    trainer = PPOTrainer(model, tok, reward=LengthReward(), callbacks=[],
                         config=PPOConfig(batch_size=2, ppo_epochs=1, learning_rate=1e-4, sampling=SAMPLING))
    trainer.step(PROMPTS[:2])
    rollout = trainer.rollout_
    table = lessons.token_table(tok, rollout, row=0)
    assert len(table) == int(rollout["mask"][0].sum())
    assert torch.allclose(torch.tensor(table["kl_k1"].to_numpy()), torch.tensor((table["logp"] - table["ref_logp"])
                                                                                .to_numpy()))
    assert table["reward"].iloc[-1] == pytest.approx(float(rollout["rewards"][0][rollout["mask"][0].bool()][-1]))

    curve = lessons.overoptimisation_curve(trainer, LengthReward(), PROMPTS, PROMPTS[:2], n_updates=3, every=1)
    assert curve["update"].tolist() == [1, 2, 3]
    assert {"kl", "proxy", "gold", "beta"} <= set(curve.columns)
    assert isinstance(plots.plot_proxy_vs_gold(curve.assign(setting="x")), Figure)


def test_before_after_needs_the_same_prompts(tiny):
    model, tok = tiny
    before = lessons.score_replies(model, tok, PROMPTS, SAMPLING, seed=0, reward_model=LengthReward())
    merged = lessons.before_after(before, before)
    assert list(merged.columns[:3]) == ["prompt", "reply before", "gold before"] and "reward after" in merged
    with pytest.raises(ValueError, match="same prompts"):
        lessons.before_after(before, before.iloc[::-1])


def test_paired_change_pairs_by_prompt_over_several_replies(tiny):
    model, tok = tiny
    before = lessons.score_replies(model, tok, PROMPTS, SAMPLING, seed=0, reward_model=LengthReward(), n_per_prompt=3)
    assert len(before) == 3 * len(PROMPTS) and before["prompt"].tolist()[:3] == [PROMPTS[0]] * 3
    after = before.assign(gold=before["gold"] + np.tile([0.0, 0.3, 0.6], len(PROMPTS)))  # each prompt's mean +0.3
    result = lessons.paired_change(before, after, "gold")
    assert (result.n_prompts, result.samples_per_prompt) == (len(PROMPTS), 3)
    assert result.gain == pytest.approx(0.3) and result.verdict == "rose" and result.win_rate == 1.0
    assert lessons.paired_change(before, before, "gold").verdict == "no detectable change"


def test_crowd_run_takes_feedback_from_the_given_crowd(tmp_path):
    config = demo_config(smoke=True, iterations=1)
    config.ppo_updates, config.feedback.pairs_per_iteration = 1, 4
    crowd = SimulatedCrowd(annotators=[SimulatedAnnotator("biased", bias={"politeness": 3.0}, seed=0)])
    run = lessons.CrowdRun.create(tmp_path / "run", config, crowd=crowd, callbacks=[])
    run.run()
    assert set(run.store.counts()["by_annotator"]) == {"biased"}
    features = lessons.eval_features(run)
    assert features["iteration"].tolist() == [0, 1] and "politeness" in features

    same = lessons.open_run(tmp_path / "run", config, callbacks=[])
    assert same.iteration == 1
    config.seed = 5
    with pytest.raises(ValueError, match="another config"):
        lessons.open_run(tmp_path / "run", config, callbacks=[])


def test_personal_reward_models_one_per_annotator(store):
    ids = store.add_responses([dict(prompt=f"prompt {i}", response=t, model="m", iteration=0)
                               for i in range(4) for t in ("Thanks, glad to help!", "no")])
    items = [store.add_item(ids[i:i + 2]) for i in range(0, len(ids), 2)]
    SimulatedCrowd(n=2, seed=0).annotate(store, items)
    models = lessons.personal_reward_models(store, RewardConfig(backbone="tiny", batch_size=4, val_fraction=0.0))
    assert sorted(models) == ["sim-0", "sim-1"]
    prefs = lessons.personal_preferences(models, ["prompt 0"] * 2, ["Thanks, glad to help!", "no"])
    assert list(prefs.index) == ["sim-0", "sim-1"] and "politeness" in prefs.columns


def test_crowd_table_and_config_summary():
    table = lessons.crowd_table(SimulatedCrowd(n=3, n_careless=1, seed=0))
    assert list(table.index) == ["sim-0", "sim-1", "sim-2"] and table.loc["sim-2", "careless"] == 0.8
    summary = lessons.config_summary(demo_config(smoke=True))
    assert summary["ppo.kl_coef"] == demo_config(smoke=True).ppo.kl_coef


def test_lesson_4_uses_your_reward_model_or_says_a_stand_in_judged(tmp_path, capsys):
    """Without lesson 2's model a simulated learner judges `labels` pairs (said aloud) and its reward model orders
    replies by its taste; with the model saved where lesson 2 saves it, that one is loaded and no stand-in is made."""
    from rlhf_lab.policy.models import tiny_policy

    policy, tokenizer = tiny_policy(seed=0)
    rm, stand_in = lessons.your_reward_model(tmp_path, policy, tokenizer, taste="short", labels=12, seed=0,
                                             smoke=True)
    assert stand_in is not None and stand_in.name == "short (simulated)"
    assert "SIMULATED learner whose taste is 'short' judges 12 pairs" in capsys.readouterr().out
    assert len(FeedbackStore(tmp_path / "lesson4_feedback.db").judgments_df()) == 12
    rm.save(tmp_path / "taste" / "reward_model")
    loaded, none = lessons.your_reward_model(tmp_path, policy, tokenizer, taste="short", smoke=True)
    assert none is None and "your reward model from lesson 2" in capsys.readouterr().out
    replies = ["Yes.", "Well, that is a long story with many twists, and I will tell all of it to you now."]
    assert torch.equal(loaded.score(["Hi?"] * 2, replies), rm.score(["Hi?"] * 2, replies))
    table = lessons.score_replies(policy, tokenizer, ["Hi?"], SamplingConfig(max_new_tokens=4), reward_model=rm,
                                  taste=stand_in, n_per_prompt=2)
    assert list(table["taste"]) == pytest.approx([stand_in.taste("Hi?", r) for r in table["reply"]])
