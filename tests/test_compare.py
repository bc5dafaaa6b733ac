"""rlhf_lab.loop.compare: four methods on one tiny policy, one budget, one row each with every column filled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import length_reward, longer_is_chosen, peaked_policy
from matplotlib.figure import Figure

from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.seeding import seed_for
from rlhf_lab.loop.compare import DPO, PPO, RLOO, TABLE_COLUMNS, BestOfN, Budget, compare_methods
from rlhf_lab.loop.evaluation import sequence_kl, verdict
from rlhf_lab.loop.plots import plot_costs, plot_frontier
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.train.dpo import DPOConfig
from rlhf_lab.train.ppo import PPOConfig
from rlhf_lab.train.rloo import RLOOConfig

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up", "I like tea",
           "say something nice"]
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)


@pytest.fixture(scope="module")
def setup(tiny):
    torch.set_num_threads(1)
    model = peaked_policy(tiny[1])
    return model, tiny[1], longer_is_chosen(model, tiny[1], PROMPTS * 2, SAMPLING)


def test_compare_returns_one_full_row_per_method_within_the_budget(setup):
    model, tokenizer, pairs = setup
    common = dict(learning_rate=1e-3, batch_size=4, sampling=SAMPLING, missing_eos_penalty=None)
    dpo = DPOConfig(learning_rate=1e-3, batch_size=4, sampling=SAMPLING)
    methods = [BestOfN(n=(1, 2, 4)), PPO(PPOConfig(**common)), RLOO(RLOOConfig(rloo_k=2, **common)),
               DPO(dpo, pairs_per_round=8), DPO(dpo, mode="iterative", pairs_per_round=4)]
    before = [p.clone() for p in model.parameters()]
    result = compare_methods(methods, model, tokenizer, PROMPTS, PROMPTS, reward=length_reward, gold=length_reward,
                             pairs=pairs, budget=Budget(samples=24, judgments=16), sampling=SAMPLING, eval_every=2)
    table = result.table
    assert list(table.columns) == TABLE_COLUMNS
    assert table["method"].tolist() == ["best_of_4", "ppo", "rloo", "dpo", "dpo_iterative"]
    assert table.notna().all().all()
    assert (table["samples_generated"] <= 32).all()  # best-of-4 on 8 eval prompts; training methods ≤ 24
    assert table.set_index("method")["samples_generated"].to_dict() == {
        "best_of_4": 32, "ppo": 24, "rloo": 24, "dpo": 0, "dpo_iterative": 24}
    assert table.set_index("method").loc["dpo", "judgments_used"] == 16
    assert table.set_index("method")["stopped"].to_dict() == {
        "best_of_4": "done", "ppo": "budget", "rloo": "budget", "dpo": "done", "dpo_iterative": "budget"}  # dpo: its epochs
    assert (table["wall_time_s"] > 0).all() and (table["peak_memory_mb"] >= 0).all()
    assert table.set_index("method").loc["best_of_4", "gold_reward"] > result.frontier.iloc[0]["gold_reward"]
    trained = table[table["method"] != "best_of_4"]
    assert (trained["kl"] > 0).all() and (trained["rounds"] >= 2).all()
    frontier = result.frontier
    bon = frontier[frontier["method"] == "best_of_4"]
    assert bon["kl_analytic"].tolist() == pytest.approx([0.0, 0.19314718, 0.63629436])
    assert (frontier.groupby("method")["round"].min().drop("best_of_4") == 0).all()  # every curve starts at KL 0
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))  # the caller's policy is untouched
    assert isinstance(plot_frontier(frontier), Figure) and isinstance(plot_costs(table), Figure)


class DivergingPPO(PPO):
    """PPO whose second update diverges, as a too-high learning rate would make it."""

    def round(self):
        if self.trainer.update_ == 1:
            raise TrainingDivergedError("PPO update 2: the gradient norm became non-finite.")
        super().round()


def test_a_diverging_method_keeps_its_rows_and_the_others_still_run(setup):
    model, tokenizer, pairs = setup
    config = PPOConfig(learning_rate=1e-3, batch_size=4, sampling=SAMPLING, missing_eos_penalty=None)
    methods = [DivergingPPO(config, name="ppo_diverges"), PPO(config)]
    with pytest.warns(UserWarning, match=r"ppo_diverges stopped, PPO update 2: the gradient norm became non-finite"):
        result = compare_methods(methods, model, tokenizer, PROMPTS, PROMPTS, reward=length_reward,
                                 gold=length_reward, budget=Budget(samples=16), sampling=SAMPLING, eval_every=1)
    table = result.table.set_index("method")
    assert table["stopped"].to_dict() == {"ppo_diverges": "diverged in round 2", "ppo": "budget"}
    assert table["rounds"].to_dict() == {"ppo_diverges": 1, "ppo": 4}
    diverged = result.frontier[result.frontier["method"] == "ppo_diverges"]
    assert diverged["round"].tolist() == [0, 1]  # no evaluation after the failed round
    assert table.loc["ppo_diverges", "gold_reward"] == diverged.iloc[-1]["gold_reward"]
    assert table.notna().all().all()


def test_eval_samples_average_several_replies_per_prompt(setup):
    model, tokenizer, pairs = setup
    config = PPOConfig(learning_rate=1e-3, batch_size=4, sampling=SAMPLING, missing_eos_penalty=None)
    result = compare_methods([BestOfN(n=(1, 2), pool=4), PPO(config)], model, tokenizer, PROMPTS, PROMPTS,
                             reward=length_reward, gold=length_reward, budget=Budget(samples=8), sampling=SAMPLING,
                             eval_every=1, eval_samples=3)
    # the start row: the mean gold of 3 replies per eval prompt, sampled with the evaluation's seed
    replies = generate(model, tokenizer, PROMPTS, SAMPLING, seed=seed_for(0, 7), n_per_prompt=3)
    start = result.frontier[(result.frontier["method"] == "ppo") & (result.frontier["round"] == 0)].iloc[0]
    assert start["gold_reward"] == pytest.approx(float(np.mean(length_reward(replies.responses))))
    assert start["win_rate_vs_initial"] == 0.5
    table = result.table.set_index("method")
    # best-of-2 with 3 picks per prompt needs 3 disjoint blocks of 2: the pool grows from 4 to 6 candidates
    assert table.loc["best_of_2", "samples_generated"] == 3 * 2 * len(PROMPTS)
    assert table.notna().all().all() and 0 <= table.loc["ppo", "win_rate_vs_initial"] <= 1
    # the gain over the initial policy is paired by eval prompt, with its interval and a verdict in words
    assert (start["gold_gain"], start["verdict"]) == (0.0, "no detectable change")
    for name, row in table.iterrows():
        assert row["gold_gain_ci_low"] <= row["gold_gain"] <= row["gold_gain_ci_high"], name
        assert row["gold_gain"] == pytest.approx(row["gold_reward"] - start["gold_reward"]), name
        assert row["verdict"] == verdict(row["gold_gain_ci_low"], row["gold_gain_ci_high"]), name
    with pytest.raises(ValueError, match="eval_samples must be at least 1"):
        compare_methods([PPO(config)], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward,
                        budget=Budget(samples=8), eval_samples=0)


def test_sequence_kl_is_zero_against_itself(setup):
    model, tokenizer, _ = setup
    batch = generate(model, tokenizer, PROMPTS[:3], SAMPLING, seed=0)
    assert torch.allclose(sequence_kl(model, model, batch, 1.0), torch.zeros(3), atol=1e-5)


def test_bad_input_says_how_to_fix(setup):
    model, tokenizer, _ = setup
    with pytest.raises(ValueError, match="Give a budget"):
        Budget()
    for bad in ({"judgments": -1}, {"seconds": -5}, {"samples": 0}, {"samples": "8"}):
        with pytest.raises(ValueError, match=rf"Budget's {next(iter(bad))} must be a number > 0"):
            Budget(**bad)
    with pytest.raises(ValueError, match=r"n must be whole numbers >= 1"):
        BestOfN(n=(0, 2))
    assert BestOfN(n=4).n == [4]
    with pytest.raises(ValueError, match="2 or more eval prompts .gains are paired by prompt.; got 8 and 1"):
        compare_methods([BestOfN()], model, tokenizer, PROMPTS, PROMPTS[:1], reward=length_reward,
                        budget=Budget(samples=8))
    with pytest.raises(TypeError, match=r"budget must be a Budget, e.g. Budget\(samples=64\), got int"):
        compare_methods([BestOfN()], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward, budget=8)
    with pytest.raises(ValueError, match=r"Unknown Budget fields \['sample'\]"):
        compare_methods([BestOfN()], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward, budget={"sample": 8})
    with pytest.raises(ValueError, match="at least one method"):
        compare_methods([], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward, budget=Budget(samples=8))
    with pytest.raises(TypeError, match="BestOfN, PPO, RLOO or DPO"):
        compare_methods(["ppo"], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward, budget=Budget(samples=8))
    with pytest.raises(ValueError, match="names must differ"):
        compare_methods([PPO(), PPO()], model, tokenizer, PROMPTS, PROMPTS, reward=length_reward,
                        budget=Budget(samples=8))
    with pytest.raises(ValueError, match="pairs=store.preference_pairs"):
        compare_methods([DPO(DPOConfig(sampling=SAMPLING))], model, tokenizer, PROMPTS, PROMPTS,
                        reward=length_reward, gold=length_reward, budget=Budget(samples=8), sampling=SAMPLING)


def test_a_wrong_config_or_missing_pairs_is_refused_before_any_method_runs(setup, monkeypatch):
    """README's one-liner `[BestOfN(), PPO(cfg), RLOO(cfg), DPO(cfg)]` with one PPOConfig ran BestOfN and PPO and
    only then stopped at RLOO; offline DPO without pairs ran every method before it first."""
    model, tokenizer, _ = setup
    for method, config, wanted in ((RLOO, PPOConfig(), "RLOOConfig"), (DPO, PPOConfig(), "DPOConfig"),
                                   (PPO, RLOOConfig(), "PPOConfig")):
        with pytest.raises(TypeError, match=rf"{method.__name__}\(...\) takes a {wanted}, got {type(config).__name__}"):
            method(config)
    started = []
    monkeypatch.setattr(BestOfN, "start", lambda self, *a: started.append(self.name))
    with pytest.raises(ValueError, match="pairs=store.preference_pairs"):
        compare_methods([BestOfN(n=(1, 2)), DPO(DPOConfig(sampling=SAMPLING))], model, tokenizer, PROMPTS, PROMPTS,
                        reward=length_reward, gold=length_reward, budget=Budget(samples=8), sampling=SAMPLING)
    assert started == []
