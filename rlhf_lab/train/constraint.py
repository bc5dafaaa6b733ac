"""A cost constraint for on-policy trainers: the score becomes r − λ·c, with λ a Lagrange multiplier (Safe RLHF).

    trainer = PPOTrainer(policy, tokenizer, "gold", PPOConfig(cost_limit=0.05, lambda_init=1.0, lambda_lr=1.0),
                         cost=CostModel().fit(store), flag_rule=crowd_flag_rule())
    trainer.history.to_frame()[["objective/cost", "objective/lambda", "objective/flagged_rate"]]

Safe RLHF (Dai et al. 2023) maximises the reward under a limit on the expected cost, max_π E[r] s.t. E[c] ≤ d, through
its Lagrangian min_{λ≥0} max_π E[r − λ·c] + λ·d. Each update, before the policy moves:

    Ĉ = mean cost of the batch's replies (over every process)
    λ ← max(0, λ + η·(Ĉ − d))                        (`ppo_math.lagrange_multiplier_step`; η = 0: a fixed penalty)
    score ← r − λ·c                                   (each reply's; then PPO's KL shaping, GAE and whitening)

Safe RLHF divides the combined advantage by 1 + λ. PPO whitens its advantages and GRPO divides each group by its
spread, which removes any such scale; RLOO's leave-one-out advantages are not rescaled, so there a larger λ also
takes larger steps (keep lambda_lr small, or use the grpo baseline).
With a `flag_rule` (a function of prompts and replies, e.g. the simulated crowd's `feedback.flags.crowd_flag_rule`)
the share of the batch's replies it flags is logged as `objective/flagged_rate`, with or without a cost model.
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_lab.reward.sources import as_reward
from rlhf_lab.train.ppo_math import lagrange_multiplier_step

__all__ = ["CostConstraint"]


class CostConstraint:
    """The cost side of an on-policy update (see the module docstring).

    cost: anything `as_reward` takes that scores replies with a cost (a `reward.cost.CostModel`: P(flagged)), or
        None: the scores pass unchanged and λ stays 0.
    flag_rule: `rule(prompts, responses) -> (N,) bool`, or None; only measured and logged, never optimised.
    cost_limit, lambda_init, lambda_lr: d, λ's start and η (`OnPolicyConfig`'s fields of those names).
    reduce: averages a scalar tensor over processes (the trainer's accelerator); default: this process alone.
    """

    def __init__(self, cost=None, flag_rule=None, *, cost_limit: float = 0.05, lambda_init: float = 1.0,
                 lambda_lr: float = 1.0, reduce=None):
        if flag_rule is not None and not callable(flag_rule):
            raise TypeError(f"flag_rule must be a function (prompts, responses) -> bools, got {type(flag_rule).__name__}.")
        self.cost = None if cost is None else as_reward(cost)
        self.flag_rule = flag_rule
        self.cost_limit, self.lambda_lr = cost_limit, lambda_lr
        self.value = lambda_init if cost is not None else 0.0  # λ
        self.reduce = reduce or (lambda x: x)
        self.metrics_: dict = {}

    @classmethod
    def from_config(cls, cost, flag_rule, config, reduce=None) -> "CostConstraint":
        """A constraint with the config's cost_limit, lambda_init and lambda_lr."""
        return cls(cost, flag_rule, cost_limit=config.cost_limit, lambda_init=config.lambda_init,
                   lambda_lr=config.lambda_lr, reduce=reduce)

    def penalise(self, batch, scores: torch.Tensor) -> torch.Tensor:
        """Update λ from this batch's mean cost, then return scores − λ·c (B,): `scores` itself without a cost
        model. Keeps this update's metrics in `metrics_` (objective/cost, objective/lambda, objective/cost_penalty,
        objective/flagged_rate)."""
        metrics = {}
        if self.flag_rule is not None:
            flagged = np.asarray(self.flag_rule(list(batch.prompts), list(batch.responses)), dtype=np.float32)
            if flagged.shape != (len(batch.responses),):
                raise ValueError(f"flag_rule returned {flagged.shape} values for {len(batch.responses)} replies; it "
                                 "must return one bool per reply.")
            metrics["objective/flagged_rate"] = float(flagged.mean())
        self.metrics_ = metrics
        if self.cost is None:
            return scores
        costs = self.cost(batch).to(scores.device)  # (B,)
        if not torch.isfinite(costs).all():
            raise ValueError(f"the cost model {self.cost!r} returned non-finite costs: check it on these replies.")
        mean_cost = float(self.reduce(costs.mean().detach()))
        self.value = lagrange_multiplier_step(self.value, mean_cost, self.cost_limit, self.lambda_lr)
        metrics.update({"objective/cost": costs.mean(), "objective/lambda": self.value,
                        "objective/cost_penalty": -self.value * costs.mean()})
        return scores - self.value * costs
