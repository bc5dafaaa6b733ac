"""PPO with a KL leash: optimise a policy against a reward while a per-token KL penalty keeps it near a reference.

    trainer = PPOTrainer(policy, tokenizer, reward="gold", config=PPOConfig(learning_rate=1e-5, kl_coef=0.05))
    trainer.train(prompts, n_updates=30)       # prompts: a list of strings (or a function update -> prompts)
    trainer.history.to_frame()                  # metrics of every update, TRL's names where they exist
    trainer.save("runs/ppo");  trainer = PPOTrainer.resume("runs/ppo", policy, tokenizer, reward="gold")

`PPOTrainer.step` is the algorithm box (numbered steps below, mirrored by the PPO lesson); everything around it
(rollouts, scoring, the forward passes, the KL guard, the epochs × minibatches loop, logging, checkpoints) is the
on-policy base's (`train.on_policy`), and the tensor maths is `ppo_math`'s. The value function is a zero-initialised
linear head on the policy's trunk ("shared", the light default) or on a separate trunk ("separate"). With LoRA the
reference is the policy with its adapters switched off (one copy of the weights); with full fine-tuning it is a
frozen copy made before training (or the `ref_policy` passed in).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from rlhf_lab.train.config import OnPolicyConfig
from rlhf_lab.train.on_policy import OnPolicyTrainer
from rlhf_lab.train.policy_value import critic_from_reward
from rlhf_lab.train.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_shaped_rewards,
    masked_whiten,
)

__all__ = ["PPOConfig", "PPOTrainer"]


@dataclass
class PPOConfig(OnPolicyConfig):
    """Everything a PPO run needs besides the models and prompts: `OnPolicyConfig`'s fields (optimisation, epochs,
    the clip, the KL leash, rollouts) plus the value function's. Saved inside every checkpoint."""

    vf_clip: float = 0.2
    """Clip range of the value loss around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss beside the policy loss."""
    gamma: float = 1.0
    """Discount per token."""
    lam: float = 0.95
    """λ of generalised advantage estimation (TRL's 0.95). With λ < 1 a token's advantage leans on the value head's
    estimates; while a zero-initialised head has learned little, they are about 0 and the score's credit fades as
    λ^(tokens to the end). 1 gives every token its whole return less the value, and moves the policy further per
    update: lesson 4 and the taste loop use 1 with learning rate 1.5e-5 instead of 2e-5 (gold under PPO rose in 4 of
    5 seeds, median +0.21, against 3 of 5, +0.15; bench/README.md)."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to unit variance (over valid tokens) before GAE."""
    value_head: str = "shared"
    """"shared": a linear head on the policy's trunk; "separate": a head on its own trunk (a copy of the policy's,
    or the trainer's `critic` argument)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.vf_clip > 0 or not self.vf_coef >= 0:
            raise ValueError(f"vf_clip must be positive and vf_coef >= 0, got {self.vf_clip} and {self.vf_coef}.")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must lie in [0, 1] (a discount and GAE's λ), got {self.gamma} and "
                             f"{self.lam}.")
        if self.value_head not in ("shared", "separate"):
            raise ValueError(f"value_head must be 'shared' or 'separate', got {self.value_head!r}.")


class PPOTrainer(OnPolicyTrainer):
    """RLHF PPO on a causal LM policy: `OnPolicyTrainer`'s arguments (policy, tokenizer, reward, config, ref_policy,
    callbacks, metrics_path) plus

    critic: for `value_head="separate"`, a trunk (a model returning `last_hidden_state`), or "reward" to start from
        the reward model's trunk and head (`policy_value.critic_from_reward`); default a copy of the policy's trunk.
    """

    config_class = PPOConfig
    method = "PPO"

    def build_critic(self, policy, critic):
        if self.config.value_head == "shared":
            if critic is not None:
                raise ValueError("A critic was given but value_head='shared': set value_head='separate' to use it.")
            return None, None
        if critic is None:
            return copy.deepcopy(policy.base_model), None  # the trunk, copied before any adapters are added
        if isinstance(critic, str) and critic == "reward":
            return critic_from_reward(self.reward)
        return critic, None

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, prompts: list[str]) -> dict:
        """One PPO update on replies sampled for `prompts`; returns its metrics (also handed to the callbacks)."""
        cfg = self.config

        # 1. Rollout: sample one reply per prompt; `generate` cuts each after its first EOS (kept as last token).
        batch = self.sample(prompts)

        # 2. Score the replies (as text, or as tokens for a reward model sharing the tokenizer); penalise no-EOS.
        #    With a cost model: λ ← max(0, λ + η·(mean cost − limit)), then score − λ·cost (`constraint`).
        scores = self.score(batch)  # (B,)
        shaped_scores = self.constraint.penalise(batch, scores)  # (B,); `scores` itself without a cost model

        # 3. Log-probs of the sampled tokens under the policy and the reference, and values, on query+response.
        r = self.forward_rollout(batch)  # r.logp, r.ref_logp, r.values, r.mask: (B, R) each

        # 4. Per-token reward: −β·(log π − log π_ref) on every token, plus the score on the last real token.
        beta = self.kl_ctl.value
        rewards, non_score_reward = kl_shaped_rewards(shaped_scores, r.logp, r.ref_logp, r.mask, beta)  # (B, R) each
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, r.mask, shift_mean=False)
        kl = self.watch_kl(r)  # KL per reply (k1, k3); the run stops if it exploded

        # 5. Advantages by GAE (γ, λ), whitened over valid tokens; returns are the value targets.
        advantages, returns = gae(rewards, r.values, r.mask, cfg.gamma, cfg.lam)  # (B, R) each
        advantages = masked_whiten(advantages, r.mask)
        self.rollout_ = dict(batch=batch, scores=scores, logp=r.logp, ref_logp=r.ref_logp, values=r.values,
                             rewards=rewards, non_score_reward=non_score_reward, advantages=advantages,
                             returns=returns, mask=r.mask)

        # 6. K epochs × shuffled minibatches × micro-batches: clipped policy and value losses, clipped gradients.
        def loss(rows, new_logp, new_values):
            pg_loss, pg_stats = clipped_policy_loss(new_logp, r.logp[rows], advantages[rows], r.mask[rows],
                                                    cfg.clip_eps)
            vf_loss, vf_stats = clipped_value_loss(new_values, r.values[rows], returns[rows], r.mask[rows],
                                                   cfg.vf_clip)
            return pg_loss + cfg.vf_coef * vf_loss, {**self.policy_stats(pg_loss, pg_stats), "loss/value_avg": vf_loss,
                                                     "val/clipfrac_avg": vf_stats["vf_clipfrac"]}

        stats = self.optimise(r, loss)

        # 7. Adapt β to the measured KL; log.
        stats["val/explained_variance"] = explained_variance(r.values, returns, r.mask)
        return self.finish(r, scores, kl, beta, stats)
