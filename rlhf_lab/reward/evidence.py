"""How well a prior explains a learner's judgments: the Laplace approximation of a logistic model's evidence.

    log_evidence(z, target, w, l2)     # z (N, F) pair differences, w the fitted weights (MAP), λ = l2

With few labels, how strongly to trust a block of features (the word counts, the embedding) is a choice the labels
themselves can make: the prior that makes the judgments most probable, with the weights integrated out (type-II
maximum likelihood, MacKay 1992). Cross-validation on 40 pairs is too noisy for it (`bench/taste_features.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["log_evidence"]


def log_evidence(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, l2: float,
                 weight: torch.Tensor | None = None) -> float:
    """log p(judgments | prior) ≈ Laplace's approximation around the MAP weights w of

        p(y_i | w) = σ(z_i·w)^{t_i} (1 − σ(z_i·w))^{1−t_i},    w ~ N(0, (2λ)⁻¹·I):

        log Z ≈ Σ_i c_i log p(y_i | w) − λ‖w‖² − ½ log det(I_F + Zᵀ S Z / (2λ)),   S = diag(c_i σ_i (1 − σ_i))

    computed in the N × N form det(I_N + S^½ Z Zᵀ S^½ / (2λ)) (Sylvester's identity; N pairs ≪ F features).
    z (N, F): the pairs' feature differences (each column already scaled by its prior weight), target (N,) t_i in
    [0, 1] (ties ½), weight (N,) c_i (default 1: the same weighting as `embedding._fit_logistic`'s loss times Σ c_i).
    Priors differ only in how z's columns are scaled, so their log Z compare directly: the larger, the better the
    prior explains the judgments."""
    z, target, w = z.double(), target.double(), w.double()
    c = torch.ones(len(z), dtype=torch.float64) if weight is None else weight.double()
    logits = z @ w
    fit = -(c * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum() - l2 * (w @ w)
    p = torch.sigmoid(logits)
    root = (c * p * (1 - p)).sqrt()
    inner = torch.eye(len(z), dtype=torch.float64) + (root[:, None] * z) @ (root[:, None] * z).T / (2 * l2)
    return float(fit - 0.5 * torch.linalg.slogdet(inner).logabsdet)
