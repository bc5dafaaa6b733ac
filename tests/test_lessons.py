"""The lessons' helpers (rlhf_lab/lessons.py), on the tiny model and small stores."""

from __future__ import annotations

from dataclasses import replace

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
    # the demo fits the embedding reward model: its rows are shown, the network's (which it never reads) are not
    assert summary["embedding.l2"] == demo_config(smoke=True).embedding.l2
    assert not [key for key in summary.index if key.startswith("reward.")]
    network = lessons.config_summary(replace(demo_config(smoke=True), reward_kind="network"))
    assert "reward.epochs" in network.index and not [key for key in network.index if key.startswith("embedding.")]


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


# ---- lessons 7 and 9: every kind of feedback (teach.every_kind, re-exported by lessons) ----------------------------
def test_sample_items_and_thumbs_or_simulate(tiny, store, capsys):
    model, tok = tiny
    items = lessons.sample_items(store, model, tok, PROMPTS, SAMPLING, size=3, kind="ranking", seed=0)
    assert [(it.kind, len(it.responses), it.prompt) for it in items] == [("ranking", 3, p) for p in PROMPTS]

    assert lessons.thumbs_or_simulate(store, "ann", items) == "ann (simulated)"
    assert "Nobody gave thumbs as 'ann'" in capsys.readouterr().out
    df = store.judgments_df()
    assert df["kind"].tolist() == ["thumbs"] * 9 and set(df["annotator"]) == {"ann (simulated)"}
    assert store.pending_items("ann (simulated)") == store.pending_items("ann"), "the stand-in judged no item"

    store.record_thumbs(items[1].responses[2].id, "ann", False)
    assert lessons.thumbs_or_simulate(store, "ann", items) == "ann"
    assert "Using your 1 thumb(s) as 'ann' (8 reply(ies) left unjudged)" in capsys.readouterr().out
    assert lessons.thumbs_or_simulate(store, "ann", items, minimum=2) == "ann (simulated)"
    assert "You gave 1 of 9 thumb(s)" in capsys.readouterr().out and len(store.judgments_df()) == 10
    replies = [r.id for r in items[0].responses]
    assert lessons.thumbs_or_simulate(store, "bob", replies[:2]) == "bob (simulated)"  # reply ids work too
    assert store.counts()["by_annotator"]["bob (simulated)"] == 2


def test_compare_reward_models_on_the_same_held_out_pairs():
    """Three replies per prompt, gold = length: a length model orders every pair right, a reversed one none, a
    constant one ties every pair (½); pairs with equal gold are left out, and differences come with a verdict."""
    texts = ["a", "abc", "abcdef"]
    replies = pd.DataFrame({"prompt": [f"p{i}" for i in range(6) for _ in texts], "reply": texts * 6,
                            "gold": [float(len(t)) for t in texts] * 6})
    replies.loc[0, "gold"] = 3.0  # prompt p0: two replies of equal gold make no pair

    class Reversed(LengthReward):
        def score(self, prompts, responses):
            return -super().score(prompts, responses)

    class Constant(LengthReward):
        def score(self, prompts, responses):
            return torch.zeros(len(responses))

    models = {"length": LengthReward(), "reversed": Reversed(), "constant": Constant()}
    table, diffs = lessons.compare_reward_models(models, replies, [("length", "reversed"), ("reversed", "length"),
                                                                   ("constant", "constant")], seed=0)
    assert table["agreement"].tolist() == [1.0, 0.0, 0.5] and table["pairs"].iloc[0] == 3 * 6 - 1
    assert (table["ci_low"] <= table["agreement"]).all() and (table["agreement"] <= table["ci_high"]).all()
    assert table.loc["length", "ci_low"] == 1.0 and table.loc["reversed", "ci_high"] == 0.0
    assert diffs["difference"].tolist() == [1.0, -1.0, 0.0]
    assert diffs["verdict"].tolist() == ["length better", "length better", "no detectable difference"]
    with pytest.raises(ValueError, match="different 'gold'"):
        lessons.compare_reward_models(models, replies.assign(gold=1.0))


class FlatCost:
    """A stand-in cost model: P(flagged) grows with the reply's length."""

    def score(self, prompts, responses):
        return torch.tensor([min(len(r) / 40.0, 1.0) for r in responses])

    def accuracy(self, prompts, responses, flagged):
        return float(np.mean((self.score(prompts, responses).numpy() > 0.5) == np.asarray(flagged, dtype=bool)))


def test_constraint_runs_compare_from_the_same_start_paired_by_prompt():
    """With a learning rate too small to move a float32 weight neither run moves: the same held-out replies before
    and after, so every paired change is exactly 0 ("no detectable change"), while λ still rises in the constrained
    run (mean cost above a zero limit) and stays out of the other."""
    rule = lambda prompts, responses: [len(r) > 20 for r in responses]  # noqa: E731
    config = PPOConfig(batch_size=2, ppo_epochs=1, learning_rate=1e-30, sampling=SAMPLING, cost_limit=0.0,
                       lambda_init=1.0, lambda_lr=1.0)
    runs = lessons.constraint_runs("tiny", LengthReward(), FlatCost(), rule, PROMPTS, PROMPTS[:2], config,
                                   n_updates=2, n_per_prompt=3, seed=0, callbacks=[])
    summary = runs.summary
    assert list(summary.index) == ["before", "PPO", "PPO + cost constraint"]
    per_run = runs.replies.groupby("run", sort=False)
    assert per_run["reply"].apply(tuple).nunique() == 1, "both runs start from the initial policy"
    assert per_run["flagged"].mean().tolist() == summary["flagged_rate"].tolist()
    assert summary.loc["before", "reward"] == pytest.approx(runs.replies.query("run == 'before'")["reply"].str.len()
                                                            .mean())
    assert (summary["flagged_ci_low"] <= summary["flagged_rate"]).all()
    assert (summary["flagged_rate"] <= summary["flagged_ci_high"]).all()
    assert summary.loc["before", "kl"] == 0.0 and summary["kl"].abs().max() < 1e-4
    assert np.isnan(summary.loc["PPO", "lambda"]) and summary.loc["PPO + cost constraint", "lambda"] > 1.0
    assert "objective/lambda" in runs.history["PPO + cost constraint"]
    assert "objective/lambda" not in runs.history["PPO"] and "objective/flagged_rate" in runs.history["PPO"]
    changes = runs.changes
    assert [(r, m) for r, m in zip(changes["run"], changes["measure"])] == [
        ("PPO", "flagged rate"), ("PPO", "reward"), ("PPO + cost constraint", "flagged rate"),
        ("PPO + cost constraint", "reward")]
    assert (changes["gain"] == 0).all() and set(changes["verdict"]) == {"no detectable change"}
    before = runs.replies.query("run == 'before'")
    assert runs.cost_accuracy == FlatCost().accuracy(before["prompt"], before["reply"], before["flagged"])
    assert "PPO + cost constraint: flagged rate" in str(runs)


def test_judge_table_against_the_learner_and_gold(tiny):
    """Four pairs with a clearly better reply, shown first in two and second in two; the learner always says A:
    half right, κ 0 with a judge that always picks the better reply (the constitution), which is right on all six."""
    from rlhf_lab.feedback.judges import ConstitutionJudge, LLMJudge

    good, bad = "I love music, thanks for asking! It always makes me happy.", "I hate this stupid question, idiot."
    store = FeedbackStore(":memory:")
    order = [(good, bad), (good, bad), (bad, good), (bad, good), (good, bad), (bad, good)]
    items = []
    for i, (a, b) in enumerate(order):
        ids = store.add_responses([dict(prompt=f"Do you like music {i}?", response=t, model="m", iteration=0)
                                   for t in (a, b)])
        items.append(store.add_item(ids))
    for item in items[:4]:
        store.record_pairwise(item, "me", "A")
    with pytest.raises(ValueError, match="'constitution' has judged no pairwise item"):
        lessons.judge_table(store, "me", [ConstitutionJudge()])
    rules, llm = ConstitutionJudge(), LLMJudge(*tiny, name="tiny-judge")
    rules.annotate(store)
    llm.annotate(store, items[:2])
    table = lessons.judge_table(store, "me", [rules, llm])
    assert list(table.index) == ["me", "constitution", "tiny-judge"]
    assert table["judged"].tolist() == [4, 6, 2] and table["with_you"].tolist() == [4, 4, 2]
    assert table.loc["constitution", "agrees_with_you"] == 0.5 and table.loc["constitution", "kappa_with_you"] == 0.0
    assert table.loc["me", "gold_agreement"] == 0.5 and table.loc["constitution", "gold_agreement"] == 1.0
    assert np.isnan(table.loc["me", "kappa_with_you"]) and np.isnan(table.loc["constitution", "position_bias"])
    assert table.loc["tiny-judge", "position_bias"] == pytest.approx(llm.position_bias_)
    assert table.loc["tiny-judge", "seconds_per_judgment"] > 0
    with pytest.raises(ValueError, match="'you' has judged no pairwise item"):
        lessons.judge_table(store, "you", [rules])
