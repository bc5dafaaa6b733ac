"""rlhf_lab.loop.taste on the tiny model: the loop runs end to end, writes its report, and a person's judgments
(clicked in the lesson-2 rater by a script that follows a taste) are the only ones its reward model learns from."""

from __future__ import annotations

import json
from dataclasses import replace

import ipywidgets
import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_lab.cli import main, taste_config
from rlhf_lab.core.seeding import seed_for
from rlhf_lab.feedback.crowd import SimulatedCrowd
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import SimulatedLearner, short_replies
from rlhf_lab.loop.taste import SHRINK, TasteConfig, blend, label_pairs, run_taste, steer
from rlhf_lab.policy.generation import generate
from rlhf_lab.policy.models import tiny_policy
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.embedding import WORDS_PRIORS, EmbeddingRewardModel
from rlhf_lab.reward.pair_design import design_pairs
from rlhf_lab.ui import PairwiseRater


@pytest.fixture
def callback_errors(monkeypatch):
    """Exceptions inside widget callbacks propagate (ipywidgets would swallow them)."""

    class Shell:
        def showtraceback(self, *args, **kwargs):
            raise

    monkeypatch.setattr(ipywidgets.widgets.widget, "get_ipython", lambda: Shell())


def test_a_simulated_learner_runs_the_whole_loop_and_gets_a_report(tmp_path):
    config = taste_config(labels=8, seed=0, smoke=True)
    policy, tokenizer = tiny_policy(seed=0)
    result = run_taste(config, learner=SimulatedLearner("short", seed=0), policy=policy, tokenizer=tokenizer,
                       out=tmp_path, log=lambda *a: None)
    figures = result.to_json()
    assert figures["labels"] == 8 and 0 <= figures["rm_agreement"] <= 1 and figures["kl"] >= 0
    assert figures["gain_ci_low"] <= figures["gain"] <= figures["gain_ci_high"]
    assert figures["verdict"] in ("rose", "fell", "no detectable change") and figures["minutes"] > 0
    assert len(result.samples) == config.eval_prompts
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "result.json", "summary.md", "before_after.png",
                                                   "reward_model", "feedback.db"}
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["gain"] == figures["gain"]
    assert saved["origin"] == {"policy": "tiny", "annotator": SimulatedLearner("short", seed=0).name,
                               "store": f"sqlite:///{tmp_path / 'feedback.db'}", "seed": 0}  # what made the figures
    assert TasteConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config
    with FeedbackStore(tmp_path / "feedback.db") as store:  # the reward model says which judgments it was fitted on
        judged = store.judgments_df()
    data = json.loads((tmp_path / "reward_model_data.json").read_text())
    assert data["pairs"] == figures["labels"] == len(judged)
    assert data["judgment_ids"] == sorted(judged["judgment_id"].tolist())
    assert (data["annotators"], data["models"]) == ([SimulatedLearner("short", seed=0).name], ["tiny"])


def test_the_learner_is_shown_the_designed_pair_of_each_prompts_candidates():
    """4 candidates per prompt (at 0.7, 1.1, 0.7, 1.1): each item holds the pair `design_pairs` picks; with 2 (the
    default), the pair is the two replies as sampled."""
    config = taste_config(labels=6, seed=2, smoke=True)
    policy, tokenizer = tiny_policy(seed=0)
    prompts = load_prompts("curated", split="train", n=6, seed=0)
    candidates = [generate(policy, tokenizer, prompts, replace(config.sampling, temperature=(0.7, 1.1)[j % 2]),
                           seed=seed_for(config.seed, 11, j)).responses for j in range(4)]
    picks = design_pairs(prompts, [[c[i] for c in candidates] for i in range(6)], config.reward)
    assert set(picks) != {(0, 1)}  # the design chose, not the sampling order
    items = label_pairs(FeedbackStore(":memory:"), policy, tokenizer, prompts, replace(config, label_candidates=4))
    assert [sorted(r.text for r in it.responses) for it in items] == [
        sorted([candidates[a][i], candidates[b][i]]) for i, (a, b) in enumerate(picks)]
    assert config.label_candidates == 2
    items = label_pairs(FeedbackStore(":memory:"), policy, tokenizer, prompts, config)
    assert [sorted(r.text for r in it.responses) for it in items] == [
        sorted([candidates[0][i], candidates[1][i]]) for i in range(6)]
    with pytest.raises(ValueError, match="label_candidates must be at least 2"):
        replace(config, label_candidates=1)
    with pytest.raises(ValueError, match="eval_prompts must be at least 2"):  # refused before any training
        replace(config, eval_prompts=1)
    for temps in ((0.7,), 0.7, (0.7, -1.0), ("hot", "cold")):
        with pytest.raises(ValueError, match="label_temperatures must be two temperatures > 0"):
            replace(config, label_temperatures=temps)
    with pytest.raises(ValueError, match="kl_target must be positive"):
        replace(config, kl_target=0.0)


def test_a_persons_rater_judgments_alone_train_the_reward_model(tmp_path, callback_errors):
    """A script clicks the lesson-2 rater as the taste says; a crowd also judges the same items; only the person's
    judgments count, and the report's figures come from them."""
    config = taste_config(labels=6, seed=1, smoke=True)
    policy, tokenizer = tiny_policy(seed=0)
    store = FeedbackStore(tmp_path / "feedback.db")
    items = label_pairs(store, policy, tokenizer, load_prompts("curated", split="train", n=6, seed=0), config)
    rater = PairwiseRater(store, "me", guard_s=0)
    for item in items:
        a, b = (short_replies(item.prompt, r.text) for r in item.responses)
        rater.buttons["A" if a >= b else "B"].click()
    SimulatedCrowd(n=2, seed=0).annotate(store, items)  # others' judgments of the same pairs: not the learner's
    result = run_taste(config, store=store, annotator="me", policy=policy, tokenizer=tokenizer, log=lambda *a: None,
                       out=tmp_path / "report")
    everyone = store.preference_pairs()
    mine = everyone[everyone["annotator"] == "me"]
    assert result.labels == len(mine) == 6 < len(everyone)
    # the reward model behind the report is the one these 6 clicks give, and not the crowd's judgments
    saved = EmbeddingRewardModel.load(tmp_path / "report" / "reward_model")
    alone = EmbeddingRewardModel(replace(config.reward, seed=config.reward.seed_value + config.seed)).fit(mine)
    assert torch.allclose(saved.weights_, alone.weights_)
    assert all(short_replies(p, c) >= short_replies(p, r) for p, c, r in zip(mine["prompt"], mine["chosen"],
                                                                             mine["rejected"]))
    assert "6 judgments" in (tmp_path / "report" / "summary.md").read_text()
    assert result.taste is None and np.isnan(result.rm_agreement)
    # a person's run reports their own reward model's gain
    assert result.to_json()["gain"] == round(result.reward.gain, 4)
    with pytest.raises(ValueError, match="judge at least 4 pairs"):
        run_taste(config, store=store, annotator="nobody", policy=policy, tokenizer=tokenizer, log=lambda *a: None)


def test_the_cli_ends_with_one_json_line_and_takes_your_own_taste(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.py").write_text("def likes_the(prompt, reply):\n    return reply.lower().count('the')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["taste", "--taste", "mine:likes_the", "--labels", "6", "--smoke", "--words", "blend", "--out",
                 "out"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert EmbeddingRewardModel.load(tmp_path / "out" / "reward_model").config.words_blend
    judged = FeedbackStore(tmp_path / "out" / "feedback.db").counts()["total"]
    assert main(["taste", "--taste", "mine:likes_the", "--labels", "6", "--smoke", "--out", "out"]) == 2
    assert capsys.readouterr().err.strip() == ("rlhf-lab taste: error: out already holds a taste run: give another "
                                               "--out, or --overwrite to replace it.")
    assert main(["taste", "--taste", "mine:likes_the", "--labels", "6", "--smoke", "--out", "out", "--overwrite"]) == 0
    assert FeedbackStore(tmp_path / "out" / "feedback.db").counts()["total"] == judged  # replaced, not added to
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "config.json").write_text(json.dumps({"policy": "tiny", "iterations": 2}))
    assert main(["taste", "--smoke", "--out", "demo", "--overwrite"]) == 2  # never into another kind of run
    assert "demo holds another kind of run" in capsys.readouterr().err
    assert json.loads((tmp_path / "demo" / "config.json").read_text()) == {"policy": "tiny", "iterations": 2}
    assert main(["taste", "--smoke", "--annotator", "s1"]) == 2
    assert "give --store too" in capsys.readouterr().err
    assert taste_config(words="off").reward.features == ("reply", "prompt_x_reply", "surface")
    assert taste_config(words="evidence").reward.words_weights == WORDS_PRIORS
    assert main(["taste", "--taste", "mine:likes_the", "--labels", "6", "--smoke", "--words", "evidence", "--out",
                 "evidence"]) == 0
    fitted = EmbeddingRewardModel.load(tmp_path / "evidence" / "reward_model")
    assert fitted.config.words_weights == WORDS_PRIORS and fitted.config.words_weight in WORDS_PRIORS
    said = f"prior weight: {fitted.config.words_weight:g} (of 0.3, 1, 3, 10, 30" in capsys.readouterr().out
    assert said == bool(fitted.vocabulary_)  # the tiny model's few replies may share no word: then nothing to choose
    assert taste_config(words="on").reward.words_weights == ()
    assert taste_config(words="relevance").reward.words_relevance == 3.0
    assert main(["taste", "--taste", "mine:likes_the", "--labels", "6", "--smoke", "--words", "relevance", "--out",
                 "relevance"]) == 0
    fitted = EmbeddingRewardModel.load(tmp_path / "relevance" / "reward_model")
    said = capsys.readouterr().out
    assert fitted.config.words_relevance == 3.0 and max(fitted.words_prior().values(), default=3.0) <= 3.0
    top = next(iter(fitted.words_prior()), None)
    assert (f"each word's prior weight, by their evidence): {top!r}" in said) == bool(fitted.vocabulary_)
    assert last["taste"] == "mine:likes_the" and {"rm_agreement", "gain", "gain_ci_low", "gain_ci_high", "win_rate",
                                                  "kl", "minutes"} <= set(last)
    assert main(["taste", "--taste", "salty", "--smoke"]) == 2
    assert "Unknown taste 'salty'" in capsys.readouterr().err
    assert main(["taste", "--taste", "short", "--smoke", "--prior", "relevance", "--words", "evidence"]) == 2
    assert "use it with --prior shared" in capsys.readouterr().err
    assert main(["taste", "--smoke", "--candidates", "1"]) == 2
    assert "label_candidates must be at least 2" in capsys.readouterr().err
    assert taste_config(candidates=4).label_candidates == 4 and taste_config().label_candidates == 2


def test_the_loops_reward_model_gives_each_feature_its_own_prior_unless_told_or_saved_otherwise():
    """The taste loop's default reward model chooses every feature's prior by the judgments (relevance 3); --prior
    shared and the words' own choices (--words evidence, relevance) turn it off; a config.json saved before it was
    the default (its reward without the field) loads with one prior per block, so an old run resumes as it ran."""
    assert TasteConfig().reward.relevance == 3.0 and TasteConfig.smoke().reward.relevance == 3.0
    assert taste_config().reward.relevance == 3.0 and taste_config(prior="relevance").reward.relevance == 3.0
    assert taste_config(prior="shared").reward.relevance == 0.0
    assert taste_config(words="evidence").reward.relevance == 0.0
    assert taste_config(words="relevance").reward.relevance == 0.0
    assert taste_config(prior="shared", words="evidence").reward.words_weights == WORDS_PRIORS
    saved = TasteConfig().to_dict()
    del saved["reward"]["relevance"]
    assert TasteConfig.from_dict(saved).reward.relevance == 0.0
    assert TasteConfig.from_dict(json.loads(json.dumps(TasteConfig().to_dict()))).reward.relevance == 3.0


def test_a_round_that_passes_the_kl_target_is_undone():
    """With a target no update can meet, the first round is undone: the policy ends where it started; without a
    target every round is kept and the policy moves."""
    policy, tokenizer = tiny_policy(seed=0)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    learner = SimulatedLearner("short", seed=0)
    quiet = lambda *a: None  # noqa: E731
    strict = replace(TasteConfig.smoke(labels=6), kl_target=1e-9)
    strict.dpo = replace(strict.dpo, learning_rate=1e-3)
    result = run_taste(strict, learner=learner, policy=policy, tokenizer=tokenizer, log=quiet)
    assert result.rounds == 0 and result.kl == pytest.approx(0, abs=1e-6)
    assert all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    loose = replace(strict, kl_target=None)
    result = run_taste(loose, learner=learner, policy=policy, tokenizer=tokenizer, log=quiet)
    assert result.rounds == 2 and result.kl > 1e-4 and result.policy_pairs > 0
    assert not all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())


def test_a_second_run_into_the_same_folder_learns_from_its_own_labels_only_and_judges_as_the_first(tmp_path):
    """`rlhf-lab taste --out DIR` twice: the store in DIR keeps both runs' judgments, and each run's reward model
    sees its own `labels` pairs (the second run used to train on both runs' 2 × labels). The same seed gives the
    same judgments and figures: the learner's coins are keyed by the pair's number in the run, not by its id in the
    store (the second run's items are 9-16, and its coin flips, rationality 0, used to differ from the first's)."""
    config = TasteConfig.smoke(labels=8)
    results, choices = [], []
    for expected_in_store in (8, 16):
        policy, tokenizer = tiny_policy(seed=0)
        results.append(run_taste(config, learner=SimulatedLearner("short", rationality=0.0, seed=0), policy=policy,
                                 tokenizer=tokenizer, out=tmp_path, log=lambda *a: None))
        assert results[-1].labels == 8
        judgments = FeedbackStore(tmp_path / "feedback.db").judgments_df().sort_values("judgment_id")
        assert len(judgments) == expected_in_store
        choices.append([json.dumps(a, sort_keys=True) for a in judgments["answer"].tolist()[-8:]])
    assert choices[0] == choices[1] and len(set(choices[0])) == 2  # real coin flips (both answers), the same ones
    first, second = ({k: v for k, v in r.to_json().items() if k not in ("minutes", "seconds")} for r in results)
    assert first == second


def test_the_kl_on_the_held_out_replies_undoes_the_last_round():
    """One round (no check between rounds) with a target it cannot meet: the check on the held-out replies undoes
    it, the policy is back where it started and the KL reported is 0; a target it meets keeps the round."""
    policy, tokenizer = tiny_policy(seed=0)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    quiet = lambda *a: None  # noqa: E731
    config = replace(TasteConfig.smoke(labels=6), rounds=1, kl_target=1e-9)
    config.dpo = replace(config.dpo, learning_rate=1e-3)
    result = run_taste(config, learner=SimulatedLearner("short", seed=0), policy=policy, tokenizer=tokenizer,
                       log=quiet)
    assert result.rounds == 0 and result.kl == pytest.approx(0, abs=1e-6) and result.policy_pairs > 0
    assert all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    kept = run_taste(replace(config, kl_target=1e6), learner=SimulatedLearner("short", seed=0), policy=policy,
                     tokenizer=tokenizer, log=quiet)
    assert kept.rounds == 1 and 1e-4 < kept.kl <= 1e6


def test_blend_moves_float_weights_a_fraction_of_the_way_and_keeps_integer_buffers():
    before = {"w": torch.tensor([1.0, -2.0]), "steps": torch.tensor([3])}
    after = {"w": torch.tensor([3.0, 2.0]), "steps": torch.tensor([7])}
    half = blend(before, after, 0.5)
    assert torch.equal(half["w"], torch.tensor([2.0, 0.0])) and torch.equal(half["steps"], torch.tensor([7]))
    assert torch.equal(blend(before, after, 0.0)["w"], before["w"]) and torch.equal(blend(before, after, 1)["w"],
                                                                                    after["w"])


def test_a_round_that_overshoots_the_kl_target_a_little_is_shrunk_not_undone():
    """One DPO round with no target gives KL k on the held-out replies; with the target 0.6·k the check shrinks the
    round's step (to ½, else ¼: KL falls roughly with the square of the step) instead of throwing it away: the
    policy's weights are exactly the initial ones plus that fraction of the round's change, and the KL reported
    is within the target."""
    quiet = lambda *a: None  # noqa: E731
    config = replace(TasteConfig.smoke(labels=6), rounds=1, kl_target=None)
    config.dpo = replace(config.dpo, learning_rate=1e-3)
    policy, tokenizer = tiny_policy(seed=0)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    full = run_taste(config, learner=SimulatedLearner("short", seed=0), policy=policy, tokenizer=tokenizer, log=quiet)
    moved = {k: v.clone() for k, v in policy.state_dict().items()}
    assert full.rounds == 1 and full.last_round_scale == 1.0 and full.kl > 1e-3
    policy, tokenizer = tiny_policy(seed=0)
    shrunk = run_taste(replace(config, kl_target=0.6 * full.kl), learner=SimulatedLearner("short", seed=0),
                       policy=policy, tokenizer=tokenizer, log=quiet)
    assert shrunk.rounds == 1 and shrunk.last_round_scale in SHRINK and shrunk.kl <= 0.6 * full.kl
    assert shrunk.to_json()["last_round_scale"] == shrunk.last_round_scale
    expected = blend(start, moved, shrunk.last_round_scale)
    assert all(torch.allclose(v, expected[k], atol=1e-6) for k, v in policy.state_dict().items())


class _Steps:
    """A stand-in DPO trainer for `steer`: its policy is one weight w, each round's fit adds 1 to it."""

    def __init__(self):
        self.policy = torch.nn.Linear(1, 1, bias=False)
        self.policy.weight.data.fill_(0.0)
        self.last_batch_, self.round_ = None, 0

    def collect_pairs(self, prompts, rm, round_, n):
        return ["a pair"]

    def fit(self, pairs):
        self.policy.weight.data += 1.0


def test_a_last_round_that_would_pass_the_kl_target_takes_only_the_part_of_its_step_that_fits(monkeypatch):
    """KL = 4·w (4 nats per round): after 2 rounds KL 8, the mean rise 4; with target 10 the third round takes
    α = (10 − 8) / 4 = ½ of its step (w 2.5) and hands α to the KL check; with target 8.5,
    α = 1/8 is under the smallest step the check tries (¼) and the loop stops at w 2, as before."""
    monkeypatch.setattr("rlhf_lab.loop.taste.sequence_kl", lambda policy, *a: 4 * policy.weight.detach().view(1))
    lines = []
    for target, weight, kept, part in ((10.0, 2.5, 3, 0.5), (8.5, 2.0, 2, None), (None, 3.0, 3, None)):
        trainer = _Steps()
        config = replace(TasteConfig.smoke(labels=6), rounds=3, kl_target=target)
        snapshots, partial = steer(trainer, None, ["p"], None, config, say=lines.append)
        assert trainer.policy.weight.item() == pytest.approx(weight) and len(snapshots) == kept
        assert [s["weight"].item() for s in snapshots] == [0.0, 1.0, 2.0][:kept]
        assert partial == (None if part is None else pytest.approx(part))
    assert "round 3 takes 0.50 of its step" in lines[0] and "stopping" in lines[1] and len(lines) == 2


def test_the_loop_can_steer_with_ppo_and_its_rounds_are_undone_alike():
    """method="ppo" (lesson 4's method): `ppo_updates` updates of `ppo.batch_size` replies in `rounds` rounds; the
    KL check on the held-out replies undoes PPO rounds as it undoes DPO rounds."""
    policy, tokenizer = tiny_policy(seed=0)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    config = TasteConfig.smoke(labels=6, method="ppo")
    result = run_taste(replace(config, kl_target=None), learner=SimulatedLearner("short", seed=0), policy=policy,
                       tokenizer=tokenizer, log=lambda *a: None)
    assert result.rollouts == config.ppo_updates * config.ppo.batch_size == 16 and result.policy_pairs == 0
    assert result.rounds == 2 and result.kl > 1e-4 and result.to_json()["rollouts"] == 16
    assert not all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    policy, tokenizer = tiny_policy(seed=0)
    undone = run_taste(replace(config, kl_target=1e-9), learner=SimulatedLearner("short", seed=0), policy=policy,
                       tokenizer=tokenizer, log=lambda *a: None)
    assert undone.rounds == 0 and undone.kl == pytest.approx(0, abs=1e-6)
    assert all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    with pytest.raises(ValueError, match="method must be 'dpo' or 'ppo'"):
        TasteConfig(method="rloo")


def test_a_ppo_run_the_kl_guard_stops_keeps_the_policy_so_far_and_is_measured():
    """When PPO's KL guard fires (the KL of an update's rollouts past `kl_limit`), the loop does not lose the run:
    it says so, keeps the policy as it stands (the guard fires before that update's step) and evaluates it."""
    policy, tokenizer = tiny_policy(seed=0)
    config = TasteConfig.smoke(labels=6, method="ppo")
    config = replace(config, kl_target=None, ppo=replace(config.ppo, kl_limit=1e-9))
    lines = []
    result = run_taste(config, learner=SimulatedLearner("short", seed=0), policy=policy, tokenizer=tokenizer,
                       log=lines.append)
    stopped = [line for line in lines if "PPO stopped early" in line]
    assert len(stopped) == 1 and "exploded" in stopped[0] and "The policy so far is kept" in stopped[0]
    assert 0 < result.rollouts < config.ppo_updates * config.ppo.batch_size and result.rollouts % 4 == 0
    assert result.rounds == 1 and result.kl > 0 and result.taste is not None


def test_ppo_pessimism_pays_the_score_less_the_members_spread(monkeypatch, capsys):
    """ppo_pessimism k: PPO's reward is mean_m r_m − k·std_m r_m over the reward model's bootstrap members
    (normalised units), checked against numpy; the loop hands PPO that reward by default (k = 1); the CLI refuses
    --pessimism with DPO, and a negative k is refused."""
    from rlhf_lab.reward.embedding import EmbeddingRewardConfig
    from rlhf_lab.reward.ensemble import pessimistic_reward

    import rlhf_lab.loop.taste as taste_module

    good = ["Sure, happy to help!", "Of course, here it is.", "Glad you asked, thanks!", "Yes, gladly.", "Sure!"]
    bad = ["no", "go away", "whatever I guess", "I do not care about that at all.", "nope"]
    model = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=4,
                                                       words_min_replies=1, seed=0)).fit(
        pd.DataFrame({"prompt": ["Can you help?"] * 5, "chosen": good, "rejected": bad}))
    prompts, replies = ["Can you help?"] * 4, ["Gladly!", "no way", "Sure, here it is.", "It is what it is."]
    raw = model.member_scores_raw(prompts, replies).double().numpy()  # (4 members, 4 replies)
    spread = raw.std(0) / model.norm_std_
    assert spread.max() > 1e-3  # the members differ: a k that were ignored would show
    expected = (raw.mean(0) - model.norm_mean_) / model.norm_std_ - 1.5 * spread
    assert np.allclose(pessimistic_reward(model, 1.5)(prompts, replies).numpy(), expected, atol=1e-5)
    assert np.allclose(pessimistic_reward(model, 0.0)(prompts, replies).numpy(), model.score(prompts, replies).numpy())

    handed = []
    monkeypatch.setattr(taste_module, "pessimistic_reward",
                        lambda rm, k: handed.append((type(rm).__name__, k)) or pessimistic_reward(rm, k))
    policy, tokenizer = tiny_policy(seed=0)
    config = replace(TasteConfig.smoke(labels=6, method="ppo"), kl_target=None)  # pessimism at its default
    result = run_taste(config, learner=SimulatedLearner("short", seed=0), policy=policy, tokenizer=tokenizer,
                       log=lambda *a: None)
    assert handed == [("EmbeddingRewardModel", 1.0)] and result.rollouts == 16
    assert TasteConfig(method="ppo").ppo_pessimism == 1.0  # PPO's default: the pessimistic reward
    with pytest.raises(ValueError, match="ppo_pessimism must be >= 0"):
        TasteConfig(method="ppo", ppo_pessimism=-1.0)
    assert main(["taste", "--smoke", "--pessimism", "1"]) == 2  # DPO reads no pessimism: refused, not ignored
    assert "--pessimism weighs PPO's reward: it needs --method ppo, got --method dpo." in capsys.readouterr().err
    assert main(["taste", "--smoke", "--method", "ppo", "--pessimism", "-1"]) == 2
    assert "ppo_pessimism must be >= 0" in capsys.readouterr().err
    assert main(["taste", "--smoke", "--method", "ppo", "--pessimism", "nan"]) == 2  # not a meaningless run
    assert "ppo_pessimism must be >= 0 (0: PPO maximises the score itself), got nan." in capsys.readouterr().err


def test_the_loops_ppo_runs_lesson_4s_parameters():
    """`rlhf-lab taste --method ppo` measures lesson 4's "what you should see", so its PPO settings are the lesson's
    parameters cell, value for value (a missing-EOS penalty of 1.0 once crept into the loop alone: it paid 1.0 less
    for every reply cut at 32 tokens, and PPO climbed that instead of the taste)."""
    import ast
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "04_ppo.ipynb"
    cell = next(c for c in nbformat.read(path, as_version=4).cells
                if "parameters" in c.get("metadata", {}).get("tags", []))
    lesson = {node.targets[0].id if isinstance(node, ast.Assign) else node.target.id: ast.literal_eval(node.value)
              for node in ast.parse(cell.source).body if isinstance(node, (ast.Assign, ast.AnnAssign))}
    config = TasteConfig(method="ppo")
    ppo = config.ppo
    loop = {"model": config.policy, "n_updates": config.ppo_updates, "batch_size": ppo.batch_size,
            "ppo_epochs": ppo.ppo_epochs, "learning_rate": ppo.learning_rate, "kl_coef": ppo.kl_coef,
            "gae_lambda": ppo.lam,
            "pessimism": config.ppo_pessimism, "eos_penalty": ppo.missing_eos_penalty or 0.0,
            "max_new_tokens": ppo.sampling.max_new_tokens, "temperature": ppo.sampling.temperature,
            "n_eval": config.eval_prompts, "eval_replies": config.eval_samples, "labels": config.labels,
            "seed": config.seed}
    assert {k: lesson[k] for k in loop} == loop
    assert ppo.mini_batch_size == ppo.batch_size and ppo.lora is None  # the lesson's PPOConfig leaves them
    assert (ppo.sampling.max_new_tokens, ppo.sampling.temperature) == (config.sampling.max_new_tokens,
                                                                      config.sampling.temperature)


def test_run_taste_says_what_to_pass_when_given_the_wrong_thing():
    config = taste_config(labels=8, seed=0, smoke=True)
    with pytest.raises(TypeError, match=r"learner must be a SimulatedLearner, e.g. SimulatedLearner\('short'\), "
                                        "got str"):
        run_taste(config, learner="short", log=None)
    with pytest.raises(ValueError, match="pass policy and tokenizer together"):
        run_taste(config, learner=SimulatedLearner("short", seed=0), policy=tiny_policy(seed=0)[0], log=None)
    with pytest.raises(ValueError, match=r"Unknown TasteConfig fields \['lables'\]"):  # a dict: read as the config
        run_taste({"lables": 8}, learner=SimulatedLearner("short", seed=0), log=None)
    with pytest.raises(ValueError, match="Expected TasteConfig's settings"):
        run_taste("smoke", learner=SimulatedLearner("short", seed=0), log=None)
