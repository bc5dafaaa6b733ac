"""How well a prior explains a learner's judgments: the Laplace approximation of a logistic model's evidence.

    log_evidence(z, target, w, l2)     # z (N, F) pair differences, w the fitted weights (MAP), λ = l2

With few labels, how strongly to trust a block of features (the word counts, the embedding) is a choice the labels
themselves can make: the prior that makes the judgments most probable, with the weights integrated out (type-II
maximum likelihood, MacKay 1992). Cross-validation on 40 pairs is too noisy for it (`bench/taste_features.py`).
The same evidence can weigh each feature on its own (automatic relevance determination): `relevance_step` is one
round of MacKay's fixed point.

    scale = relevance_step(z, target, w, l2)   # multiply each column's prior weight by this, fit again, repeat
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["log_evidence", "relevance_step"]


def log_evidence(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, l2: float,
                 weight: torch.Tensor | None = None) -> float:
    """log p(judgments | prior) ≈ Laplace's approximation around the MAP weights w of

        p(y_i | w) = σ(z_i·w)^{t_i} (1 − σ(z_i·w))^{1−t_i},    w ~ N(0, (2λ)⁻¹·I):

        log Z ≈ Σ_i c_i log p(y_i | w) − λ‖w‖² − ½ log det(I_F + Zᵀ S Z / (2λ)),   S = diag(c_i σ_i (1 − σ_i))

    computed in the N × N form det(I_N + S^½ Z Zᵀ S^½ / (2λ)) (Sylvester's identity; N pairs ≪ F features).
    z (N, F): the pairs' feature differences (each column already scaled by its prior weight), target (N,) t_i in
    [0, 1] (ties ½), weight (N,) c_i (default 1: the same weighting as `linear_fits.fit_logistic`'s loss times Σ c_i).
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


def relevance_step(z: torch.Tensor, target: torch.Tensor, w: torch.Tensor, l2: float,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """One round of MacKay's evidence fixed point for a prior weight per column (automatic relevance determination):
    the factor (F,) to multiply each column's prior weight by. With z's columns scaled by their prior weights s_j
    (w ~ N(0, (2λ)⁻¹·I) in those units, as in `log_evidence`), w the MAP weights and the Laplace posterior
    covariance Σ = (Zᵀ S Z + 2λ·I)⁻¹, S = diag(c_i σ_i (1 − σ_i)):

        γ_j = 1 − 2λ·Σ_jj     (how well the judgments determine w_j: 0 not at all, 1 fully)
        s_j² ← 2λ·(s_j w_j)² / γ_j,   so the factor is  |w_j|·√(2λ / γ_j)

    (the prior variance of the unscaled weight s_j w_j set to its squared size over γ_j; MacKay 1992). A column the
    judgments lean on grows, one they leave near 0 shrinks. γ comes from the N × N form (Woodbury's identity):
    γ_j = [Bᵀ (2λ·I_N + B Bᵀ)⁻¹ B]_jj with B = S^½ Z."""
    z, target, w = z.double(), target.double(), w.double()
    c = torch.ones(len(z), dtype=torch.float64) if weight is None else weight.double()
    p = torch.sigmoid(z @ w)
    b = (c * p * (1 - p)).sqrt()[:, None] * z  # (N, F)
    inner = 2 * l2 * torch.eye(len(z), dtype=torch.float64) + b @ b.T
    gamma = (b * torch.linalg.solve(inner, b)).sum(0).clamp(min=1e-12)  # diag(Bᵀ M⁻¹ B)
    return (w.abs() * (2 * l2 / gamma).sqrt()).float()
