"""Best-of-n sampling: draw n replies, keep the one the reward model likes best. No training at all, and the
baseline every RLHF method must beat at the same KL.

    result = best_of_n(policy, tokenizer, prompts, reward_model, n=8, pool=32, seed=0)
    result.responses           # the chosen reply per prompt
    result.kl_analytic         # log n − (n−1)/n, the KL of best-of-n to the policy (an upper bound)
    result.kl_measured         # the same KL measured on a pool of `pool` replies per prompt

The KL of best-of-n to the policy it samples from is log n − (n−1)/n when rewards do not tie (Stiennon et al. 2020;
Beirami et al. 2024 show it is an upper bound in general). It is measured exactly on an empirical pool: treat the N
replies drawn for a prompt as the base distribution (mass 1/N each), compute best-of-n's distribution over them,
and take the KL between the two (`empirical_best_of_n_kl`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_lab.core.inputs import prompt_list
from rlhf_lab.policy.generation import GenerationBatch, SamplingConfig, generate
from rlhf_lab.reward.sources import as_reward

__all__ = ["best_of_n_kl", "empirical_best_of_n_kl", "BestOfNResult", "DEFAULT_BATCH", "best_of_n"]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ π) = log n − (n−1)/n nats, for rewards without ties (0 for n = 1)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    return math.log(n) - (n - 1) / n


def empirical_best_of_n_kl(rewards: Tensor, n: int) -> float:
    """Exact KL(best-of-n ‖ π̂) where π̂ puts mass 1/N on each of the N pooled replies with these rewards (N,).

    Sorted ascending, reply k (1-based) is best-of-n's pick with probability q_k = (k/N)ⁿ − ((k−1)/N)ⁿ; replies with
    equal rewards share their group's probability equally (ties picked at random). KL = Σ_k q_k·log(q_k·N), which
    tends to log n − (n−1)/n as N grows when rewards do not tie, and never exceeds it.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    rewards = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)
    N = len(rewards)
    if N == 0 or rewards.isnan().any():
        raise ValueError(f"empirical_best_of_n_kl needs at least one reward and no NaN; got {N} with "
                         f"{int(rewards.isnan().sum())} NaN.")
    values, counts = torch.unique(rewards, sorted=True, return_counts=True)  # tie groups, ascending
    upper = counts.cumsum(0).double() / N  # (G,) share of replies at or below each group
    lower = upper - counts.double() / N
    q = (upper ** n - lower ** n) / counts  # (G,) probability of each reply in the group
    return float((counts * q * torch.log(q * N)).where(q > 0, 0.0).sum())


@dataclass
class BestOfNResult:
    """Candidates and the pick for each prompt. Rows of `candidates` are grouped by prompt: prompt i owns rows
    i·pool … i·pool + pool − 1, of which the first n are the ones best-of-n chose among."""

    prompts: list[str]
    candidates: GenerationBatch
    scores: Tensor  # (P, pool) reward of every candidate
    best: Tensor  # (P,) index (within the first n) of the chosen candidate
    n: int

    def with_n(self, n: int) -> "BestOfNResult":
        """The same candidates, picking the best of the first n (n ≤ pool): every n from one pool."""
        if not 1 <= n <= self.pool:
            raise ValueError(f"n must be in [1, {self.pool}] (the pool), got {n}.")
        return BestOfNResult(self.prompts, self.candidates, self.scores, self.scores[:, :n].argmax(dim=1), n)

    @property
    def pool(self) -> int:
        return self.scores.shape[1]

    @property
    def rows(self) -> Tensor:
        """(P,) row of each chosen reply in `candidates`."""
        return torch.arange(len(self.prompts)) * self.pool + self.best

    @property
    def responses(self) -> list[str]:
        return [self.candidates.responses[i] for i in self.rows.tolist()]

    @property
    def best_scores(self) -> Tensor:  # (P,)
        return self.scores[torch.arange(len(self.prompts)), self.best]

    @property
    def tokens_generated(self) -> int:
        """Reply tokens best-of-n itself needed: the first n candidates of each prompt (not the rest of the pool)."""
        mask = self.candidates.response_mask.view(len(self.prompts), self.pool, -1)[:, :self.n]
        return int(mask.sum())

    @property
    def kl_analytic(self) -> float:
        return best_of_n_kl(self.n)

    @property
    def kl_measured(self) -> float:
        """Mean over prompts of `empirical_best_of_n_kl` on each prompt's pool (biased low when pool ≈ n)."""
        return sum(empirical_best_of_n_kl(s, self.n) for s in self.scores) / len(self.prompts)


DEFAULT_BATCH = 256


def best_of_n(policy, tokenizer, prompts: list[str], reward, n: int, *, pool: int | None = None,
              sampling: SamplingConfig | None = None, seed: int | None = None, batch_size: int | None = None,
              missing_eos_penalty: float | None = None) -> BestOfNResult:
    """For each prompt, sample `pool` (default n) replies, score them with `reward` (anything `rewards.as_reward`
    takes), and keep the best of the first n. A larger pool only sharpens `kl_measured`.

    missing_eos_penalty: subtracted from the score of a reply without EOS before picking (as PPO does).
    batch_size: replies generated at once (default 256: P·pool replies in one batch can exhaust a GPU's memory).
    """
    prompts = prompt_list(prompts)
    pool = pool or n
    if n < 1 or pool < n:
        raise ValueError(f"best_of_n needs n >= 1 and pool >= n, got n={n}, pool={pool}.")
    if not prompts:
        raise ValueError("best_of_n needs at least one prompt.")
    candidates = generate(policy, tokenizer, prompts, sampling, seed=seed, n_per_prompt=pool,
                          batch_size=batch_size or DEFAULT_BATCH)
    scores = as_reward(reward, tokenizer)(candidates).float()  # (P·pool,) on the CPU, as every reward returns
    if missing_eos_penalty is not None:
        scores = torch.where(candidates.eos.to(scores.device), scores, scores - missing_eos_penalty)
    scores = scores.view(len(prompts), pool)
    if scores.isnan().any():  # argmax would pick a NaN as the best
        raise ValueError(f"the reward gave NaN for {int(scores.isnan().sum())} of {scores.numel()} candidates: "
                         "best-of-n cannot rank them (check the reward function)")
    return BestOfNResult(prompts, candidates, scores, scores[:, :n].argmax(dim=1), n)
