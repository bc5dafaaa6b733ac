"""Reward-model losses for feedback other than pairs: a listwise loss for rankings and a regression loss for
ratings (the pairwise Bradley–Terry loss is `reward.network.bradley_terry_loss`). Pure functions on tensors.

Rankings (Plackett–Luce): a person ranks k replies best first, y_1 ≻ y_2 ≻ … ≻ y_k, by choosing the best of those
left, each time with probability softmax of the rewards:

    P(y_1 ≻ … ≻ y_k) = Π_{i=1}^{k−1} exp(r_i) / Σ_{j=i}^{k} exp(r_j)

With k = 2 this is σ(r_1 − r_2): Bradley–Terry. Splitting a ranking into its k(k−1)/2 pairs instead counts the top
reply's information k−1 times and treats the pairs as independent, which they are not.

Ratings (regression): a Likert score s on a scale [lo, hi] is mapped to t = (s − lo)/(hi − lo) − ½ ∈ [−½, ½] and
the reward is fitted to it by least squares: an absolute signal, where pairs give only differences.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core.inputs import tensor_arguments

__all__ = ["plackett_luce_loss", "rating_targets", "rating_regression_loss"]


@tensor_arguments
def plackett_luce_loss(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean Plackett–Luce negative log-likelihood of a batch of rankings.

    scores (B, K): the rewards of each ranking's replies in ranked order, best first; mask (B, K) bool: which
    positions hold a reply (rankings of different lengths: real replies first, then padding). Per ranking

        ℓ = −Σ_{i<k} [ r_i − log Σ_{j≥i} exp(r_j) ]       (the last term, i = k, is 0 and left out)

    computed as a reversed log-cumsum-exp, stable for large rewards. A ranking with fewer than 2 replies adds 0.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, K), got shape {tuple(scores.shape)}")
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    masked = scores.masked_fill(~mask, torch.finfo(scores.dtype).min / 4)  # finite: no NaN in the backward pass
    tail = torch.logcumsumexp(masked.flip(1), dim=1).flip(1)  # log Σ_{j≥i} exp(r_j), (B, K)
    terms = torch.where(mask, scores - tail, torch.zeros_like(scores))
    last = mask.long().cumsum(1) == mask.long().sum(1, keepdim=True)  # the last real position of each ranking
    terms = torch.where(last, torch.zeros_like(terms), terms)
    return -(terms.sum(1)).mean()


@tensor_arguments
def rating_targets(scores: Tensor, scale: tuple[int, int]) -> Tensor:
    """Likert scores on [lo, hi] as regression targets in [−½, ½]: t = (s − lo)/(hi − lo) − ½."""
    lo, hi = scale
    if not hi > lo:
        raise ValueError(f"a rating scale (lo, hi) needs hi > lo, got {scale}")
    return (scores.float() - lo) / (hi - lo) - 0.5


@tensor_arguments
def rating_regression_loss(rewards: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error ½·mean((r − t)²) between rewards and `rating_targets` (B,)."""
    return 0.5 * ((rewards - targets) ** 2).mean()
