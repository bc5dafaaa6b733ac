"""rlhf_lab.train.constraint in PPO and RLOO on a tiny random policy: λ follows its update rule (rising while the cost
is above the limit, staying at 0 below), a fixed penalty steers the policy away from the cost, the flagged rate is
logged, a fitted CostModel plugs in, λ is checkpointed, and without a cost model nothing changes."""

from __future__ import annotations

import pytest
import torch
from conftest import peaked_policy
from test_ppo import PROMPTS, SAMPLING, NewlineReward, same, without_times

from rlhf_lab.reward.sources import Reward
from rlhf_lab.train.config import OnPolicyConfig
from rlhf_lab.train.constraint import CostConstraint
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer
from rlhf_lab.train.rloo import RLOOConfig, RLOOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")
COST_KEYS = {"objective/cost", "objective/lambda", "objective/cost_penalty"}


class ConstantCost(Reward):
    """Every reply costs `c`."""

    def __init__(self, c: float):
        self.c = c

    def score(self, prompts, responses):
        return torch.full((len(responses),), self.c)


def has_newline(prompts, responses):
    """A flag rule: the reply holds a newline."""
    return ["\n" in r for r in responses]


def make_trainer(tokenizer, cost=None, flag_rule=None, **overrides):
    """test_ppo's trainer (newline reward, tiny peaked policy, 8-token replies) with a cost and a flag rule."""
    settings = dict(learning_rate=1e-3, batch_size=8, sampling=SAMPLING, log_samples_every=0, missing_eos_penalty=None)
    return PPOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), PPOConfig(**{**settings, **overrides}),
                      callbacks=[], cost=cost, flag_rule=flag_rule)


def rows(trainer, n: int = 3):
    return trainer.train(PROMPTS, n).history.rows


def test_lambda_rises_by_eta_times_the_excess_cost_while_above_the_limit(tokenizer):
    trainer = make_trainer(tokenizer, cost=ConstantCost(0.5), cost_limit=0.1, lambda_init=0.0, lambda_lr=2.0)
    history = rows(trainer)
    assert [r["objective/lambda"] for r in history] == pytest.approx([0.8, 1.6, 2.4])  # 2·(0.5 − 0.1) per update
    assert [r["objective/cost"] for r in history] == pytest.approx([0.5] * 3)
    assert [r["objective/cost_penalty"] for r in history] == pytest.approx([-0.4, -0.8, -1.2])
    assert trainer.constraint.value == pytest.approx(2.4)


def test_lambda_stays_at_zero_below_the_limit_and_shrinks_to_it(tokenizer):
    below = rows(make_trainer(tokenizer, cost=ConstantCost(0.01), cost_limit=0.1, lambda_init=0.0, lambda_lr=2.0))
    assert [r["objective/lambda"] for r in below] == [0.0, 0.0, 0.0]
    shrinking = rows(make_trainer(tokenizer, cost=ConstantCost(0.01), cost_limit=0.1, lambda_init=0.3,
                                  lambda_lr=2.0))
    assert [r["objective/lambda"] for r in shrinking] == pytest.approx([0.12, 0.0, 0.0])  # max(0, 0.3 − 0.18k)
    fixed = rows(make_trainer(tokenizer, cost=ConstantCost(0.9), lambda_init=0.7, lambda_lr=0.0))
    assert [r["objective/lambda"] for r in fixed] == pytest.approx([0.7, 0.7, 0.7])  # η = 0: a plain penalty


def test_the_penalised_score_is_what_ppo_optimises(tokenizer):
    """The reward is the newline fraction; with the same fraction as a cost and a fixed λ = 3 the score is −2× it,
    and the newline fraction falls (unconstrained it rises above 0.6: test_ppo)."""
    newline_cost = NewlineReward()
    trainer = make_trainer(tokenizer, cost=newline_cost, lambda_init=3.0, lambda_lr=0.0, kl_coef=0.01)
    history = rows(trainer, 20)
    r = trainer.rollout_
    assert torch.equal(r["scores"], NewlineReward()(r["batch"]))  # logged scores are the reward's own
    first, last = [h["objective/cost"] for h in history[:3]], [h["objective/cost"] for h in history[-5:]]
    assert sum(first) / 3 > 0.05 and sum(last) / 5 < 0.5 * sum(first) / 3


def test_the_flag_rule_is_logged_and_a_fitted_cost_model_plugs_in(tokenizer):
    from test_cost import flagged_store

    from rlhf_lab.reward.cost import CostModel, CostModelConfig

    cost = CostModel(CostModelConfig(features=("surface",))).fit(flagged_store(30, 0))
    trainer = make_trainer(tokenizer, cost=cost, flag_rule=has_newline, lambda_init=0.5, lambda_lr=0.0)
    (m,) = rows(trainer, 1)
    batch = trainer.rollout_["batch"]
    assert m["objective/cost"] == pytest.approx(cost.score(batch.prompts, batch.responses).mean().item(), abs=1e-6)
    assert m["objective/flagged_rate"] == pytest.approx(sum("\n" in t for t in batch.responses) / 8)
    assert m["objective/cost_penalty"] == pytest.approx(-0.5 * m["objective/cost"], abs=1e-6)


def test_without_a_cost_model_ppo_is_unchanged(tokenizer):
    """Bit for bit: a trainer with only a flag rule, and one whose cost has weight λ = 0 for ever, log the same
    metrics as a plain trainer (plus their own keys), update by update."""
    plain = without_times(rows(make_trainer(tokenizer, seed=3)))
    watched = without_times(rows(make_trainer(tokenizer, seed=3, flag_rule=has_newline)))
    weightless = without_times(rows(make_trainer(tokenizer, seed=3, cost=ConstantCost(0.5), lambda_init=0.0,
                                                 lambda_lr=0.0)))
    assert all(same(a, {k: v for k, v in b.items() if k != "objective/flagged_rate"}) for a, b in zip(plain, watched))
    assert all(same(a, {k: v for k, v in b.items() if k not in COST_KEYS}) for a, b in zip(plain, weightless))
    assert not COST_KEYS & set(plain[0]) and "objective/flagged_rate" not in plain[0]


def test_lambda_is_checkpointed(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, cost=ConstantCost(0.5), cost_limit=0.1, lambda_init=0.0, lambda_lr=1.0)
    trainer.train(PROMPTS, 2, checkpoint_dir=tmp_path / "run")
    again = PPOTrainer.resume(tmp_path / "run", peaked_policy(tokenizer), tokenizer, NewlineReward(),
                              cost=ConstantCost(0.5), callbacks=[])
    assert again.constraint.value == pytest.approx(0.8) and again.update_ == 2
    again.train(PROMPTS, 3)
    assert again.history.rows[-1]["objective/lambda"] == pytest.approx(1.2)


def test_rloo_takes_the_constraint_too(tokenizer):
    config = RLOOConfig(learning_rate=1e-3, batch_size=4, rloo_k=2, sampling=SAMPLING, log_samples_every=0,
                        missing_eos_penalty=None, cost_limit=0.2, lambda_init=0.0, lambda_lr=1.0)
    trainer = RLOOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), config, callbacks=[],
                          cost=ConstantCost(1.0))
    assert [r["objective/lambda"] for r in trainer.train(PROMPTS[:4], 2).history.rows] == pytest.approx([0.8, 1.6])


def test_bad_settings_say_how_to_fix():
    with pytest.raises(ValueError, match="lambda_lr must be >= 0"):
        OnPolicyConfig(lambda_lr=-1.0)
    with pytest.raises(TypeError, match="flag_rule must be a function"):
        CostConstraint(flag_rule="harmful")


def test_a_rule_with_the_wrong_number_of_answers_is_refused(tokenizer):
    trainer = make_trainer(tokenizer, flag_rule=lambda prompts, responses: [True])
    with pytest.raises(ValueError, match="one bool per reply"):
        trainer.train(PROMPTS, 1)

