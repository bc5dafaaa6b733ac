"""Penalised fits of a reward that is linear in fixed features, r = w·x: what `reward.embedding` fits with.

    w = fit_logistic(diff, target, l2)                 # Bradley–Terry on pair differences, L2 prior
    w = fit_listwise(feats, mask, l2)                  # Plackett–Luce on rankings
    scale = relevance_weights(diff, target, l2, columns=is_word, cap=3.0)   # a prior weight per column, by evidence
    W = blend_members(with_words, without, z)          # two models' normalised scores as one linear model

Each fit is full-batch L-BFGS on standardised features; the penalty is scaled by 1/n so that λ is a prior worth
about λ pairs at any number of labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_lab.reward.evidence import relevance_step
from rlhf_lab.reward.losses import plackett_luce_loss

__all__ = ["fit_logistic", "fit_listwise", "relevance_weights", "blend_members"]


def blend_members(with_words: torch.Tensor, without: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The average of two linear models' scores, each divided by its spread, as one linear model:

        W = W₁ / s₁ + [W₂, 0] / s₂,    s_j = std over the rows of z of (mean_k W_j,k)·z

    with_words (k, F), without (k, F′) the members of a model on the first F′ features (zeros for the rest), z (N, F)
    standardised features of the replies fitted on. Member k of the result blends member k of each; the ensemble
    mean of W·z is the sum of the two models' scores in units of their spreads (plus a constant). With one row of z
    there is no spread to measure: the members are added as they are (s = 1)."""
    pad = torch.zeros(without.shape[0], with_words.shape[1])
    pad[:, :without.shape[1]] = without
    spread = [(w.mean(0) @ z.T).std().clamp(min=1e-12) if len(z) > 1 else torch.tensor(1.0)  # one row: no spread
              for w in (with_words, pad)]
    return with_words / spread[0] + pad / spread[1]


def fit_listwise(feats: torch.Tensor, mask: torch.Tensor, l2: float) -> torch.Tensor:
    """argmin_w Plackett–Luce loss of r = feats·w + l2·‖w‖²/n, by L-BFGS: (N, K, F), (N, K) -> (F,)."""
    w = torch.zeros(feats.shape[2], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = plackett_luce_loss(feats @ w, mask) + l2 * (w @ w) / len(feats)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def fit_logistic(diff: torch.Tensor, target: torch.Tensor, l2: float, weight: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """argmin_w mean BCE(σ(diff·w), target) + l2·‖w‖²/n, by L-BFGS: (N, F), (N,) -> (F,). The penalty is scaled by
    1/n so that λ means the same at 10 labels and at 80 (a prior worth about λ pairs). With `weight` (N,) ≥ 0:

        (Σ_i weight_i · BCE_i + l2·‖w‖²) / Σ_i weight_i

    the same as above when every weight is 1, and a row of weight 2 is exactly two copies of it (the prior stays
    worth λ pairs of weight 1)."""
    w = torch.zeros(diff.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
    n = len(diff)

    def closure():
        optimizer.zero_grad()
        if weight is None:
            loss = F.binary_cross_entropy_with_logits(diff @ w, target) + l2 * (w @ w) / n
        else:  # mean(w/w̄ · BCE) = Σ w BCE / Σ w: with weights 1, today's loss to the last bit
            loss = (F.binary_cross_entropy_with_logits(diff @ w, target, weight=weight / weight.mean())
                    + l2 * (w @ w) / weight.sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def relevance_weights(diff: torch.Tensor, target: torch.Tensor, l2: float, columns: torch.Tensor, cap: float,
                      weight: torch.Tensor | None = None, rounds: int = 10, floor: float = 1e-3) -> torch.Tensor:
    """Automatic relevance determination for some columns: a prior weight s_j for each of `columns` (F,) bool,
    chosen by the judgments' evidence, between `floor` and `cap`; 1 for the other columns. Starting from s = 1,
    each round fits the MAP weights on the columns scaled by s (`fit_logistic`) and multiplies s by MacKay's
    fixed-point factor (`evidence.relevance_step`):

        s_j ← clamp(s_j·|w_j|·√(2λ / γ_j), floor, cap)    for j in columns

    diff (N, F) pair differences already scaled by the blocks' prior weights, target (N,), weight (N,) as in
    `fit_logistic`. A word the judgments lean on rises to `cap`, words they ignore shrink toward `floor`: one word
    can carry a taste that a shared prior on 100 words would drown (`bench/taste_features.py`). Returns s (F,)."""
    scale = torch.ones(diff.shape[1])
    for _ in range(rounds):
        z = diff * scale
        factor = relevance_step(z, target, fit_logistic(z, target, l2, weight), l2, weight)
        scale = torch.where(columns, (scale * factor).clamp(floor, cap), scale)
    return scale
