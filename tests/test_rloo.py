"""rlhf_lab.train.rloo: the group baselines by hand, and RLOO/GRPO learning on a tiny random policy."""

from __future__ import annotations

import pytest
import torch
from conftest import peaked_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.sources import Reward
from rlhf_lab.train.ppo import PPOConfig
from rlhf_lab.train.rloo import (
    RLOOConfig,
    RLOOTrainer,
    group_advantages,
    rloo_advantages,
)

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up", "I like tea",
           "say something nice"]
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


class NewlineReward(Reward):
    def __call__(self, batch):
        return ((batch.response_ids == 198) & batch.response_mask.bool()).sum(1).float() / 8


def test_rloo_advantages_of_half_precision_returns_do_not_overflow():
    returns = torch.tensor([[6e4, 6e4, 0.0]], dtype=torch.float16)  # their float16 sum, 1.2e5, is inf
    advantages = rloo_advantages(returns)
    assert advantages.dtype == torch.float16 and advantages.tolist() == [[3e4, 3e4, -6e4]]


def test_rloo_advantages_by_hand_and_against_a_loop():
    returns = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert torch.allclose(rloo_advantages(returns), torch.tensor([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]]))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    loop = torch.tensor([[x[p, i] - (x[p].sum() - x[p, i]) / 3 for i in range(4)] for p in range(5)])
    torch.testing.assert_close(rloo_advantages(x), loop)
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(3, 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-100, 100), min_size=4, max_size=4), min_size=1, max_size=6))
def test_baselines_are_zero_mean_per_group(rows):
    returns = torch.tensor(rows, dtype=torch.float64)
    assert rloo_advantages(returns).sum(1).abs().max() < 1e-9
    adv = group_advantages(returns)
    assert adv.sum(1).abs().max() < 1e-6 and (adv.std(1) <= 1 + 1e-6).all()


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
    std = torch.tensor([1.0, 3.0]).std()
    torch.testing.assert_close(adv, torch.tensor([[-1 / (std + 1e-4), 1 / (std + 1e-4)], [0.0, 0.0]]))


def test_config_checks():
    assert RLOOConfig(batch_size=4, rloo_k=3).rollouts_per_update == 12
    with pytest.raises(ValueError, match="rloo_k"):
        RLOOConfig(rloo_k=1)
    with pytest.raises(ValueError, match="baseline"):
        RLOOConfig(baseline="ppo")
    with pytest.raises(TypeError, match="value_head"):  # critic-free: no value-function fields at all
        RLOOConfig(value_head="separate")
    assert not {"vf_coef", "vf_clip", "gamma", "lam", "value_head"} & set(RLOOConfig().to_dict())
    with pytest.raises(ValueError, match="kl_penalty"):
        RLOOConfig(kl_penalty="both")


@pytest.mark.parametrize("baseline,kl_penalty", [("rloo", "reward"), ("grpo", "loss")])
def test_rloo_raises_a_scripted_reward(tiny, baseline, kl_penalty):
    tokenizer = tiny[1]
    config = RLOOConfig(learning_rate=1e-3, batch_size=4, rloo_k=4, sampling=SAMPLING, log_samples_every=0,
                        missing_eos_penalty=None, baseline=baseline, kl_penalty=kl_penalty, kl_coef=0.05)
    trainer = RLOOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), config, callbacks=[])
    trainer.train(PROMPTS, n_updates=8)
    rows = trainer.history.rows
    assert rows[0]["objective/scores"] < 0.12 and sum(r["objective/scores"] for r in rows[-3:]) / 3 > 0.25
    assert rows[-1]["episode"] == 8 * 16 and rows[-1]["objective/kl"] > 0
    assert trainer.rollout_["advantages"].shape == (16, 8)


def test_rloo_takes_only_its_config_and_resumes_with_it(tiny, tmp_path):
    tokenizer = tiny[1]
    with pytest.raises(TypeError, match="RLOOConfig"):
        RLOOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), PPOConfig(), callbacks=[])
    config = RLOOConfig(learning_rate=1e-3, batch_size=2, rloo_k=3, sampling=SAMPLING, log_samples_every=0)
    trainer = RLOOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), config, callbacks=[])
    trainer.train(PROMPTS, n_updates=1, checkpoint_dir=tmp_path / "run")
    again = RLOOTrainer.resume(tmp_path / "run", peaked_policy(tokenizer), tokenizer, NewlineReward(), callbacks=[])
    assert isinstance(again.config, RLOOConfig) and again.config.rloo_k == 3 and again.update_ == 1


@pytest.mark.parametrize("baseline", ["rloo", "grpo"])
def test_a_divergence_names_the_method_and_offers_no_bf16_advice_in_float32(tiny, baseline):
    from rlhf_lab.core.errors import TrainingDivergedError

    tokenizer = tiny[1]
    config = RLOOConfig(batch_size=2, rloo_k=2, sampling=SAMPLING, log_samples_every=0, baseline=baseline,
                        mixed_precision="no")
    calls = []

    def nan_after_one_update(texts):  # finite at update 1: the NaN at update 2 may be the training's doing
        calls.append(1)
        return [float("nan") if len(calls) > 1 else 0.0] * len(texts)

    trainer = RLOOTrainer(peaked_policy(tokenizer), tokenizer, nan_after_one_update, config, callbacks=[])
    trainer.step(PROMPTS[:2])
    with pytest.raises(TrainingDivergedError, match=rf"^{baseline.upper()} update 2: the reward scores") as err:
        trainer.step(PROMPTS[:2])
    assert "learning_rate" in str(err.value) and "bf16" not in str(err.value)  # float32: no advice to switch it off
