"""The maths of RLHF PPO as small pure functions on torch tensors.

Shapes: B rows (responses), T response tokens, V vocabulary. A `mask` is a (B, T) float or bool tensor with 1 on
valid response tokens and 0 on padding; each row's valid tokens are contiguous (responses are right padded).
Every mean is taken over valid tokens only, and what sits in padded positions never changes a result.

Names follow the papers, CleanRL and TRL: `logratio`, `ratio`, `approx_kl`, `clipfrac`, `non_score_reward`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core.inputs import tensor_arguments

__all__ = ["logprobs_from_logits", "entropy_from_logits", "masked_mean", "masked_var", "masked_whiten", "kl_k1",
           "kl_k2", "kl_k3", "kl_shaped_rewards", "gae", "clipped_policy_loss", "clipped_value_loss",
           "explained_variance", "AdaptiveKLController", "FixedKLController", "lagrange_multiplier_step"]


# ---- log-probabilities and entropy --------------------------------------------------------------------------------
@tensor_arguments
def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log π(token) = z[token] − logsumexp(z), with z = logits / temperature.

    logits (B, T, V), tokens (B, T) int64 -> (B, T) float32. Divide by the sampling temperature so the log-probs
    are those of the distribution the tokens were drawn from. The logsumexp runs one row at a time and no (B, T, V)
    log-softmax is built: under no_grad only (T, V) temporaries exist beside the logits; with grad, autograd keeps
    one (B, T, V) float copy of logits / temperature for the backward pass.
    """
    selected = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).float() / temperature  # (B, T)
    logsumexp = torch.stack([torch.logsumexp(row.float() / temperature, dim=-1) for row in logits])  # (B, T)
    return selected - logsumexp


@tensor_arguments
def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """H(π) = logsumexp(z) − Σ_v softmax(z)_v · z_v, with z = logits / temperature.

    logits (B, T, V) -> (B, T) float32, computed one row at a time. A filtered-out token (z_v = −inf, π_v = 0) adds
    nothing (0·log 0 = 0).
    """
    entropies = []
    for row in logits:
        z = row.float() / temperature  # (T, V)
        p = torch.softmax(z, dim=-1)
        entropies.append(torch.logsumexp(z, dim=-1) - torch.where(p > 0, p * z, 0.0).sum(dim=-1))  # 0·(−inf) = 0
    return torch.stack(entropies)


# ---- masked statistics --------------------------------------------------------------------------------------------
@tensor_arguments
def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ mask·x / Σ mask over all elements (dim=None, a scalar) or along `dim`.

    x and mask have the same shape, e.g. (B, T); dim=1 gives (B,). Padded entries are ignored even if they hold
    inf or NaN. A slice with no valid entry has mean 0. Half-precision x is summed in float32 (a float16 sum of 4096
    values of 30 would overflow) and the mean returned in x's dtype.
    """
    mask = mask.bool()
    wide = torch.float32 if x.is_floating_point() and x.element_size() < 4 else None
    kept = torch.where(mask, x, 0.0)
    total = kept.sum(dtype=wide) if dim is None else kept.sum(dim, dtype=wide)
    count = mask.sum() if dim is None else mask.sum(dim)
    mean = total / count.clamp_min(1)
    return mean.to(x.dtype) if x.is_floating_point() else mean


@tensor_arguments
def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Var = Σ mask·(x − mean)² / (n − 1) over the n valid entries (or / n when unbiased=False); a scalar.

    With a single valid entry the unbiased variance is undefined; 0 is returned instead.
    """
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    n = mask.bool().sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


@tensor_arguments
def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x − mean) / sqrt(var + 1e-8) with mean and unbiased var over valid entries; (B, T) -> (B, T).

    shift_mean=False adds the mean back (scale only, as for rewards). Padded positions are set to 0, and whatever
    they held (inf, NaN) reaches neither the result nor its gradient.
    """
    x = torch.where(mask.bool(), x, 0.0)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, 0.0)


# ---- per-token KL estimators (Schulman, "Approximating KL divergence") ---------------------------------------------
# Tokens are sampled from π and log r = ref_logp − logp. Under π the expectation of k1 and k3 is KL(π ‖ π_ref);
# k2's is close to it. All take (B, T) log-probs and return (B, T).
@tensor_arguments
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = −log r = logp − ref_logp. Unbiased, high variance, can be negative per token."""
    return logp - ref_logp


@tensor_arguments
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = ½·(log r)². Biased, low variance, always ≥ 0."""
    return 0.5 * (ref_logp - logp) ** 2


@tensor_arguments
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = (r − 1) − log r with r = exp(ref_logp − logp). Unbiased, low variance, always ≥ 0."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


# ---- rewards and advantages ---------------------------------------------------------------------------------------
@tensor_arguments
def kl_shaped_rewards(
    score: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """rewards_t = −β·k1_t on every valid token, plus the score on the last valid token of each row.

    score (B,), logp and ref_logp (B, T), mask (B, T) -> (rewards (B, T), non_score_reward (B, T)), where
    non_score_reward = −β·k1 on valid tokens. Both are 0 on padding. A row with no valid token gets no score.
    The RLHF reward of a row (TRL's `objective/rlhf_reward`) is rewards.sum(1) = score + non_score_reward.sum(1).
    """
    valid = mask.bool()
    non_score_reward = torch.where(valid, -beta * kl_k1(logp, ref_logp), 0.0)  # (B, T)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(valid, positions, -1).max(dim=1).values  # (B,) index of the last valid token, −1 if none
    score_at_last = torch.zeros_like(non_score_reward)
    has_valid = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_valid]
    score_at_last[rows, last[has_valid]] = score[has_valid].to(score_at_last.dtype)
    return non_score_reward + score_at_last, non_score_reward


@tensor_arguments
def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), computed backwards over tokens.

        δ_t = r_t + γ·V_{t+1} − V_t,    A_t = δ_t + γλ·A_{t+1},    returns_t = A_t + V_t

    rewards, values, mask (B, T) -> (advantages (B, T), returns (B, T)). The value after the last valid token
    counts as 0 (the episode ends there); advantages and returns are 0 on padding.
    """
    valid = mask.bool()
    values = torch.where(valid, values, 0.0)
    T = rewards.shape[1]
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    advantages_reversed = []
    for t in reversed(range(T)):
        next_values = values[:, t + 1] if t < T - 1 else torch.zeros_like(lastgaelam)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        lastgaelam = torch.where(valid[:, t], delta + gamma * lam * lastgaelam, 0.0)
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)  # (B, T)
    return advantages, advantages + values


# ---- losses -------------------------------------------------------------------------------------------------------
@tensor_arguments
def clipped_policy_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip loss (Schulman et al. 2017): masked_mean(max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε))).

    logp_new, logp_old, advantages, mask (B, T) -> (scalar loss, stats). ratio = exp(logp_new − logp_old).
    Stats (detached scalars, all over valid tokens):
      approx_kl   k3 estimate of KL(π_old ‖ π_new) = mean((ratio − 1) − logratio), as CleanRL
                  (TRL's `policy/approxkl_avg` is the k2 estimate ½·mean(logratio²))
      clipfrac    fraction of tokens where the clipped term is the larger loss (its gradient is 0), as TRL
      ratio_mean, ratio_std
    """
    logratio = torch.where(mask.bool(), logp_new - logp_old, 0.0)  # padding's garbage never reaches exp or a gradient
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_mean(kl_k3(logp_old, logp_new), mask),
            "clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_std": masked_var(ratio, mask).sqrt(),
        }
    return pg_loss, stats


@tensor_arguments
def clipped_value_loss(
    values_new: Tensor, values_old: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    """½·masked_mean(max((V − R)², (V_clip − R)²)) with V_clip = V_old + clip(V − V_old, −c, c).

    values_new, values_old, returns, mask (B, T) -> (scalar loss, stats). Stats (detached scalars):
      vf_clipfrac  fraction of valid tokens where the clipped error is the larger one, as TRL
    """
    values_clipped = values_old + torch.clamp(values_new - values_old, -clip_range, clip_range)
    vf_losses1 = (values_new - returns) ** 2
    vf_losses2 = (values_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((vf_losses2 > vf_losses1).float(), mask)}
    return vf_loss, stats


@tensor_arguments
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var[R − V] / Var[R] over valid tokens; (B, T) -> scalar. 1 is perfect, 0 no better than a constant.

    NaN when the returns have zero variance, as in CleanRL (on the inputs' device, without a host sync).
    """
    var_returns = masked_var(returns, mask)
    explained = 1.0 - masked_var(returns - values, mask) / var_returns
    return torch.where(var_returns == 0, torch.full_like(explained, float("nan")), explained)


# ---- KL coefficient controllers (Ziegler et al. 2019) -------------------------------------------------------------
class AdaptiveKLController:
    """β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n_steps/horizon): β rises while KL is above target, falls below."""

    error_clip = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    @classmethod
    def largest_step(cls, n_steps: int, horizon: float) -> float:
        """The largest relative change of β in one update of `n_steps` replies: clip·n_steps/horizon."""
        return cls.error_clip * n_steps / horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -self.error_clip), self.error_clip)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """A constant β with the same interface as AdaptiveKLController."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Keep β unchanged."""


# ---- the Lagrange multiplier of a cost constraint (Safe RLHF, Dai et al. 2023) ----------------------------------------
def lagrange_multiplier_step(lam: float, mean_cost: float, cost_limit: float, lr: float) -> float:
    """λ ← max(0, λ + η·(Ĉ − d)): one projected gradient-ascent step on the multiplier of the constraint E[c] ≤ d.

    The policy maximises the Lagrangian E[r] − λ·(E[c] − d) over π while λ ≥ 0 minimises it: λ grows while the
    measured mean cost Ĉ is above the limit d, shrinks while below, and stays at 0 once the constraint holds
    with room to spare. η = 0 keeps λ fixed (a plain penalty of weight λ). Floats in, a float out.
    """
    return max(0.0, float(lam) + float(lr) * (float(mean_cost) - float(cost_limit)))
