"""rlhf_lab.loop.tuning: each method tuned among equally many candidates on tuning prompts, reported on others."""

from __future__ import annotations

import pytest
import torch
from conftest import length_reward, longer_is_chosen, peaked_policy

from rlhf_lab.loop.compare import DPO, PPO, BestOfN, Budget, compare_methods
from rlhf_lab.loop.tuning import compare_tuned, vary
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.train.dpo import DPOConfig
from rlhf_lab.train.ppo import PPOConfig

TRAIN = ["hi there", "what is a cat?", "tell me a joke", "how are you?"]
TUNE = ["good morning", "what's up", "I like tea", "say something nice"]
EVAL = ["where do you live?", "name a colour", "what is rain?", "do you sing?", "why is grass green?"]
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)


@pytest.fixture(scope="module")
def setup(tiny):
    torch.set_num_threads(1)
    model = peaked_policy(tiny[1])
    return model, tiny[1], longer_is_chosen(model, tiny[1], TRAIN * 2, SAMPLING)


def test_vary_copies_a_method_once_per_value_of_one_config_field():
    base = PPO(PPOConfig(learning_rate=1e-5, batch_size=4, sampling=SAMPLING))
    candidates = vary(base, learning_rate=[3e-5, 1e-3])
    assert [c.name for c in candidates] == ["ppo learning_rate=3e-05", "ppo learning_rate=0.001"]
    assert [c.config.learning_rate for c in candidates] == [3e-5, 1e-3]
    assert all(c.config.batch_size == 4 and isinstance(c, PPO) for c in candidates)
    assert base.config.learning_rate == 1e-5 and base.name == "ppo"  # the original is untouched
    assert [c.name for c in vary(DPO(DPOConfig()), loss_type=["sigmoid", "ipo"])] == [
        "dpo loss_type=sigmoid", "dpo loss_type=ipo"]
    with pytest.raises(ValueError, match="has no field 'lr'"):
        vary(base, lr=[1e-4])
    with pytest.raises(ValueError, match="one config field"):
        vary(base, learning_rate=[1e-4], beta=[0.1])
    with pytest.raises(ValueError, match="give a list of values"):
        vary(base, learning_rate=[])
    with pytest.raises(TypeError, match="list its candidates yourself"):
        vary(BestOfN(), n=[(1, 2)])


def test_each_method_keeps_its_best_candidate_on_the_tuning_prompts_and_reports_it_on_the_eval_prompts(setup):
    model, tokenizer, pairs = setup
    ppo = PPO(PPOConfig(batch_size=4, sampling=SAMPLING, missing_eos_penalty=None))
    dpo = DPO(DPOConfig(batch_size=4, sampling=SAMPLING), pairs_per_round=4)
    # DPO's candidates come as an iterator, which compare_tuned must read only once
    candidates = {"ppo": vary(ppo, learning_rate=[1e-6, 3e-3]), "dpo": iter(vary(dpo, learning_rate=[1e-6, 3e-3])),
                  "best_of_n": [BestOfN(n=(1, 2), name="best_of_2"), BestOfN(n=(1, 2, 4), name="best_of_4")]}
    common = dict(reward=length_reward, gold=length_reward, pairs=pairs, budget=Budget(samples=8, judgments=8),
                  sampling=SAMPLING, eval_every=100)
    result = compare_tuned(candidates, model, tokenizer, TRAIN, EVAL, tune_prompts=TUNE, **common)

    tuning = result.tuning
    assert len(tuning) == 6 and tuning.groupby("family")["chosen"].sum().to_dict() == {
        "ppo": 1, "dpo": 1, "best_of_n": 1}
    for family, rows in tuning.groupby("family"):  # the chosen one has the highest gold on the tuning prompts
        best = rows.loc[rows["gold_reward"].idxmax(), "method"]
        assert rows.loc[rows["chosen"], "method"].item() == best, family
    assert tuning.groupby("family")["gold_reward"].nunique().min() == 2  # the candidates really differ

    table = result.table
    assert table["method"].tolist() == ["ppo", "dpo", "best_of_n"]
    assert table["setting"].tolist() == [tuning.loc[tuning["chosen"] & (tuning["family"] == f), "method"].item()
                                         for f in ("ppo", "dpo", "best_of_n")]
    assert (table["candidates"] == 2).all()
    assert table["tune_gold_reward"].tolist() == pytest.approx(
        [tuning.set_index("method").loc[s, "gold_reward"] for s in table["setting"]])
    # the reported figures are those of the chosen candidate on the eval prompts, as compare_methods alone gives them
    chosen_ppo = next(c for c in candidates["ppo"] if c.name == table.loc[0, "setting"])
    alone = compare_methods([chosen_ppo], model, tokenizer, TRAIN, EVAL, **common).table.iloc[0]
    for column in ("gold_reward", "kl", "gold_gain", "gold_gain_ci_low", "gold_gain_ci_high", "win_rate_vs_initial"):
        assert table.loc[0, column] == pytest.approx(alone[column], abs=1e-6), column
    assert set(result.frontier["method"]) == set(table["setting"])


def test_unfair_or_leaky_setups_are_refused_with_a_fix(setup):
    model, tokenizer, pairs = setup
    ppo = PPO(PPOConfig(batch_size=4, sampling=SAMPLING))
    common = dict(reward=length_reward, budget=Budget(samples=8))
    with pytest.raises(ValueError, match="same number of candidates"):
        compare_tuned({"ppo": vary(ppo, learning_rate=[1e-4, 1e-3]), "bon": [BestOfN()]}, model, tokenizer, TRAIN,
                      EVAL, tune_prompts=TUNE, **common)
    with pytest.raises(ValueError, match="share 1 prompt"):
        compare_tuned({"ppo": [ppo]}, model, tokenizer, TRAIN, EVAL, tune_prompts=TUNE + EVAL[:1], **common)
    with pytest.raises(ValueError, match="select must be one of"):
        compare_tuned({"ppo": [ppo]}, model, tokenizer, TRAIN, EVAL, tune_prompts=TUNE, select="kl", **common)
    with pytest.raises(ValueError, match="names must differ"):
        compare_tuned({"a": [ppo], "b": [PPO()]}, model, tokenizer, TRAIN, EVAL, tune_prompts=TUNE, **common)
    with pytest.raises(ValueError, match="at least one method"):
        compare_tuned({}, model, tokenizer, TRAIN, EVAL, tune_prompts=TUNE, **common)
