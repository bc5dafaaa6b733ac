"""Critic-free policy gradient: RLOO (Ahmadian et al. 2024) or a GRPO-style group baseline (Shao et al. 2024).

    trainer = RLOOTrainer(policy, tokenizer, reward="gold", config=RLOOConfig(rloo_k=4, kl_coef=0.05))
    trainer.train(prompts, n_updates=30)         # the same loop, checkpoints, callbacks and metrics as PPOTrainer

Instead of a learned value function, each reply's baseline comes from the other replies to the same prompt: sample
k replies per prompt, and the advantage of reply i is its return minus the mean return of the other k − 1 (RLOO), or
the group-normalised return (GRPO). The advantage is the same for every token of the reply. The KL leash is PPO's
(k1 per token subtracted from the reward, β fixed or adaptive, the same guard), or GRPO's k3 term in the loss.
The trainer is a `PPOTrainer` with another algorithm box (`step`): rollouts, scoring, log-probs, reference, logging,
the training loop and checkpoints are PPO's, and the tensor maths is `ppo_math`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .generation import generate
from .ppo import PPOConfig, PPOTrainer
from .ppo_math import clipped_policy_loss, kl_k1, kl_k3, kl_shaped_rewards, logprobs_from_logits, masked_mean
from .ppo_models import _seed_for


# ---- baselines (pure) ---------------------------------------------------------------------------------------------
def rloo_advantages(returns: Tensor) -> Tensor:
    """Leave-one-out advantages: A_i = R_i − (1/(k−1))·Σ_{j≠i} R_j = k/(k−1)·(R_i − mean_j R_j).

    returns (P, k): the return of each of k replies to each of P prompts -> (P, k). Each row sums to 0.
    """
    k = returns.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 replies per prompt (rloo_k >= 2).")
    return returns - (returns.sum(dim=1, keepdim=True) - returns) / (k - 1)


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
class RLOOConfig(PPOConfig):
    """PPOConfig's fields plus the group settings. `batch_size`, `mini_batch_size` and `micro_batch_size` count
    prompts (each brings `rloo_k` replies). The value-function fields (vf_*, gamma, lam, value_head) are unused."""

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
        if self.value_head != "shared":
            raise ValueError("RLOO is critic-free: leave value_head='shared' (the head is never trained).")

    @property
    def rollouts_per_update(self) -> int:
        return self.batch_size * self.rloo_k


class RLOOTrainer(PPOTrainer):
    """RLOO / GRPO on a causal LM policy: PPOTrainer's arguments, an RLOOConfig, and this `step`."""

    config_class = RLOOConfig

    @property
    def method(self) -> str:
        return self.config.baseline.upper()  # "RLOO" or "GRPO", in error messages

    def __init__(self, policy, tokenizer, reward, config: RLOOConfig | None = None, **kwargs):
        if config is not None and not isinstance(config, RLOOConfig):
            raise TypeError("RLOOTrainer takes an RLOOConfig (PPOConfig's fields plus rloo_k, baseline, kl_penalty).")
        super().__init__(policy, tokenizer, reward, config, **kwargs)

    def step(self, prompts: list[str]) -> dict:
        """One update on `rloo_k` replies sampled for each of `prompts`; returns its metrics."""
        cfg, acc = self.config, self.accelerator
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step() got {len(prompts)} prompts; the config's batch_size is {cfg.batch_size}.")
        update, device, temperature, k = self.update_ + 1, acc.device, cfg.sampling.temperature, cfg.rloo_k
        model = acc.unwrap_model(self.model)
        times = {"start": time.perf_counter()}

        # 1. Rollout: k replies per prompt, copies adjacent (rows i·k … i·k + k − 1 answer prompt i).
        batch = generate(model.policy, self.tokenizer, list(prompts), cfg.sampling, n_per_prompt=k, iteration=update,
                         seed=_seed_for(cfg.seed, update, acc.process_index))
        times["generation"] = time.perf_counter()

        # 2. Score the replies; penalise a missing EOS.
        scores = self.score(batch).to(device)  # (B·k,)
        self._check_finite(update, "reward scores", scores)
        times["scoring"] = time.perf_counter()

        # 3. Log-probs of the sampled tokens under the policy and the reference.
        query_response = batch.query_response_ids.to(device)  # (B·k, P+R)
        attention_mask = batch.query_response_mask.to(device)
        responses = batch.response_ids.to(device)  # (B·k, R)
        mask = batch.response_mask.to(device).float()
        n_prompt = batch.prompt_ids.shape[1]
        # With the whole batch in one micro-batch this is also epoch 1's forward (same weights): its graph is kept.
        (logp, ref_logp, _, entropy), first_pass = self._rollout_forward(
            update, query_response, attention_mask, responses, n_prompt,
            keep_graph=cfg.micro_batch_size == cfg.batch_size)  # (B·k, R) each
        times["forward"] = time.perf_counter()

        # 4. The return of each reply: its score minus β·KL (kl_penalty="reward"), or the bare score ("loss").
        beta = self.kl_ctl.value
        rewards, non_score_reward = kl_shaped_rewards(scores, logp, ref_logp, mask,
                                                      beta if cfg.kl_penalty == "reward" else 0.0)
        returns = rewards.sum(1)  # (B·k,)
        kl = (kl_k1(logp, ref_logp) * mask).sum(1)  # (B·k,)
        kl_k3_sum = (kl_k3(logp, ref_logp) * mask).sum(1)
        watched_kl = (kl if cfg.kl_estimator == "k1" else kl_k3_sum).mean().item()
        self._check_kl(update, watched_kl)

        # 5. Advantages from the group baseline, the same for every token of a reply.
        advantages = BASELINES[cfg.baseline](returns.view(-1, k)).reshape(-1, 1) * mask  # (B·k, R)
        self.rollout_ = dict(batch=batch, scores=scores, logp=logp, ref_logp=ref_logp, returns=returns,
                             advantages=advantages, mask=mask)

        # 6. Epochs × shuffled minibatches × micro-batches of the clipped policy loss (+ β·k3 with "loss").
        self.model.train()
        stats = []
        shuffle = torch.Generator().manual_seed(_seed_for(cfg.seed, update, acc.process_index, 1))
        for _ in range(cfg.ppo_epochs):
            for minibatch in torch.randperm(len(batch), generator=shuffle).split(cfg.mini_batch_size * k):
                for micro in minibatch.split(cfg.micro_batch_size * k):
                    micro = micro.to(device)
                    if first_pass is not None:  # epoch 1: step 3's forward, rows in this minibatch's order
                        new_logits, first_pass = first_pass[0][micro], None
                    else:
                        new_logits, _ = self.model(query_response[micro], attention_mask[micro], n_prompt)
                    new_logp = logprobs_from_logits(new_logits, responses[micro], temperature)  # (b, R)
                    loss, pg_stats = clipped_policy_loss(new_logp, logp[micro], advantages[micro], mask[micro],
                                                         cfg.clip_eps)
                    pg_loss = loss.detach()
                    if cfg.kl_penalty == "loss":
                        loss = loss + beta * masked_mean(kl_k3(new_logp, ref_logp[micro]), mask[micro])
                    self._check_finite(update, "loss", loss)
                    acc.backward(loss / cfg.grad_accumulation_steps)
                    stats.append(torch.stack([pg_loss, *pg_stats.values()]))
                self._optimizer_step(update)  # clip the gradient norm, check it, step, zero the gradients
        self.model.eval()
        times["optimisation"] = time.perf_counter()

        # 7. Adapt β to the measured KL; log.
        self.kl_ctl.update(watched_kl, len(batch))
        self.update_ = update
        pg_loss, approx_kl, clipfrac, ratio_mean, ratio_std = torch.stack(stats).mean(0)
        rollout = {
            "objective/scores": scores.mean(), "objective/kl": kl.mean(), "objective/kl_k3": kl_k3_sum.mean(),
            "objective/non_score_reward": non_score_reward.sum(1).mean(),
            "objective/rlhf_reward": (scores - beta * kl).mean(),
            "objective/entropy": (-logp * mask).sum(1).mean(), "policy/entropy_avg": masked_mean(entropy, mask),
            "policy/approxkl_avg": approx_kl, "policy/clipfrac_avg": clipfrac, "policy/ratio_mean": ratio_mean,
            "policy/ratio_std": ratio_std, "loss/policy_avg": pg_loss,
            "val/eos_rate": batch.eos.float().mean(), "val/response_length": mask.sum(1).mean(),
        }
        return self._log(update, rollout, beta, times, int(mask.sum().item()), batch, scores)
