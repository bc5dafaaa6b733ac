"""Critic-free policy gradient: RLOO (Ahmadian et al. 2024) or a GRPO-style group baseline (Shao et al. 2024).

    trainer = RLOOTrainer(policy, tokenizer, reward="gold", config=RLOOConfig(rloo_k=4, kl_coef=0.05))
    trainer.train(prompts, n_updates=30)         # the same loop, checkpoints, callbacks and metrics as PPOTrainer

Instead of a learned value function, each reply's baseline comes from the other replies to the same prompt: sample
k replies per prompt, and the advantage of reply i is its return minus the mean return of the other k − 1 (RLOO), or
the group-normalised return (GRPO). The advantage is the same for every token of the reply. The KL leash is PPO's
(k1 per token subtracted from the reward, β fixed or adaptive, the same guard), or GRPO's k3 term in the loss.
The trainer shares everything but its algorithm box (`step`) with PPO through the on-policy base
(`train.on_policy`): rollouts, scoring, log-probs, reference, logging, the training loop and checkpoints; the tensor
maths is `ppo_math`'s. Its config has no value-function fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rlhf_lab.train.config import OnPolicyConfig
from rlhf_lab.train.on_policy import OnPolicyTrainer
from rlhf_lab.train.ppo_math import clipped_policy_loss, kl_k3, masked_mean

__all__ = ["RLOOConfig", "RLOOTrainer", "rloo_advantages", "group_advantages", "BASELINES"]


# ---- baselines (pure) ---------------------------------------------------------------------------------------------
def rloo_advantages(returns: Tensor) -> Tensor:
    """Leave-one-out advantages: A_i = R_i − (1/(k−1))·Σ_{j≠i} R_j = k/(k−1)·(R_i − mean_j R_j).

    returns (P, k): the return of each of k replies to each of P prompts -> (P, k). Each row sums to 0. Computed in
    float32 at least (a float16 row sum overflows at 65504), returned in returns' dtype.
    """
    k = returns.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 replies per prompt (rloo_k >= 2).")
    wide = returns.float() if returns.element_size() < 4 else returns
    return (wide - (wide.sum(dim=1, keepdim=True) - wide) / (k - 1)).to(returns.dtype)


def group_advantages(returns: Tensor, eps: float = 1e-4) -> Tensor:
    """GRPO's group-normalised advantages: A_i = (R_i − mean_j R_j) / (std_j R_j + ε), std unbiased.

    returns (P, k) -> (P, k). A group whose returns are all equal gets advantages 0.
    """
    if returns.shape[1] < 2:
        raise ValueError("A group baseline needs at least 2 replies per prompt (rloo_k >= 2).")
    centered = returns - returns.mean(dim=1, keepdim=True)
    return centered / (returns.std(dim=1, keepdim=True) + eps)


BASELINES = {"rloo": rloo_advantages, "grpo": group_advantages}


@dataclass
class RLOOConfig(OnPolicyConfig):
    """`OnPolicyConfig`'s fields plus the group settings. `batch_size`, `mini_batch_size` and `micro_batch_size`
    count prompts (each brings `rloo_k` replies)."""

    rloo_k: int = 4
    """Replies sampled per prompt; each one's baseline comes from the others."""
    baseline: str = "rloo"
    """"rloo": the mean return of the other k−1 replies; "grpo": group mean and standard deviation."""
    kl_penalty: str = "reward"
    """"reward": β·Σ(log π − log π_ref) is subtracted from each reply's score (PPO's k1 leash, fixed or adaptive β);
    "loss": β·k3 per token is added to the loss instead (GRPO)."""

    def __post_init__(self):
        super().__post_init__()
        if self.rloo_k < 2:
            raise ValueError(f"rloo_k must be at least 2 (the baseline needs other replies), got {self.rloo_k}.")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}.")
        if self.kl_penalty not in ("reward", "loss"):
            raise ValueError(f"kl_penalty must be 'reward' or 'loss', got {self.kl_penalty!r}.")

    @property
    def rollouts_per_update(self) -> int:
        return self.batch_size * self.rloo_k


class RLOOTrainer(OnPolicyTrainer):
    """RLOO / GRPO on a causal LM policy: `OnPolicyTrainer`'s arguments, an RLOOConfig, and this `step`."""

    config_class = RLOOConfig

    @property
    def method(self) -> str:
        return self.config.baseline.upper()  # "RLOO" or "GRPO", in error messages

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, prompts: list[str]) -> dict:
        """One update on `rloo_k` replies sampled for each of `prompts`; returns its metrics."""
        cfg, k = self.config, self.config.rloo_k

        # 1. Rollout: k replies per prompt, copies adjacent (rows i·k … i·k + k − 1 answer prompt i).
        batch = self.sample(prompts, n_per_prompt=k)

        # 2. Score the replies; penalise a missing EOS; with a cost model, score − λ·cost (`constraint`).
        scores = self.score(batch)  # (B·k,)
        shaped_scores = self.constraint.penalise(batch, scores)  # (B·k,); `scores` itself without a cost model

        # 3. Log-probs of the sampled tokens under the policy and the reference (no values: critic-free).
        r = self.forward_rollout(batch)  # r.logp, r.ref_logp, r.mask: (B·k, R) each

        # 4. The return of each reply: its score minus β·KL (kl_penalty="reward"), or the bare score ("loss").
        beta = self.kl_ctl.value
        kl = self.watch_kl(r)  # KL per reply (k1, k3); the run stops if it exploded
        returns = shaped_scores - beta * kl[0] if cfg.kl_penalty == "reward" else shaped_scores  # (B·k,)

        # 5. Advantages from the group baseline, the same for every token of a reply.
        advantages = BASELINES[cfg.baseline](returns.view(-1, k)).reshape(-1, 1) * r.mask  # (B·k, R)
        self.rollout_ = dict(batch=batch, scores=scores, logp=r.logp, ref_logp=r.ref_logp, returns=returns,
                             advantages=advantages, mask=r.mask)

        # 6. Epochs × shuffled minibatches × micro-batches of the clipped policy loss (+ β·k3 with "loss").
        def loss(rows, new_logp, new_values):
            pg_loss, pg_stats = clipped_policy_loss(new_logp, r.logp[rows], advantages[rows], r.mask[rows],
                                                    cfg.clip_eps)
            kl_term = beta * masked_mean(kl_k3(new_logp, r.ref_logp[rows]), r.mask[rows])
            return pg_loss + (kl_term if cfg.kl_penalty == "loss" else 0.0), self.policy_stats(pg_loss, pg_stats)

        stats = self.optimise(r, loss)

        # 7. Adapt β to the measured KL; log.
        return self.finish(r, scores, kl, beta, stats)
