"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") as pure losses on
sequence log-probs: the policy learns from unpaired thumbs up (desirable) and thumbs down (undesirable) replies.

With the implied reward r(x, y) = log π(y|x) − log π_ref(y|x) and a reference point z₀ (an estimate of
KL(π ‖ π_ref), clamped at 0 and not differentiated through):

    v(x, y) = λ_D · σ(β·(r(x, y) − z₀))     if y is desirable
    v(x, y) = λ_U · σ(β·(z₀ − r(x, y)))     if y is undesirable
    L = E[λ_y − v(x, y)]

z₀ is estimated as the paper does, from mismatched pairs: the batch's prompts with replies written for other
prompts, y' ≠ y, z₀ = max(0, mean(log π(y'|x) − log π_ref(y'|x))). λ_D, λ_U weigh the two kinds; the paper
recommends λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3] (`kto_weights`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core.inputs import tensor_arguments

__all__ = ["kto_reference_point", "kto_loss", "kto_weights"]


@tensor_arguments
def kto_reference_point(mismatched_logps: Tensor, ref_mismatched_logps: Tensor) -> Tensor:
    """z₀ = max(0, mean(log π(y'|x) − log π_ref(y'|x))) over mismatched (prompt, reply) pairs, detached (a scalar)."""
    return (mismatched_logps - ref_mismatched_logps).mean().clamp(min=0).detach()


@tensor_arguments
def kto_loss(logps: Tensor, ref_logps: Tensor, desirable: Tensor, reference_point: Tensor | float,
             beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Tensor:
    """Per-reply KTO losses (B,): λ_y − v(x, y) (see the module docstring). logps/ref_logps: sequence log-probs of
    the replies under the policy and the reference (B,); desirable (B,) bool: thumbs up."""
    desirable = desirable.to(device=logps.device, dtype=torch.bool)
    z0 = torch.as_tensor(reference_point, dtype=logps.dtype, device=logps.device)
    r = logps - ref_logps
    value = torch.where(desirable, desirable_weight * torch.sigmoid(beta * (r - z0)),
                        undesirable_weight * torch.sigmoid(beta * (z0 - r)))
    weight = torch.where(desirable, torch.full_like(r, desirable_weight), torch.full_like(r, undesirable_weight))
    return weight - value


def kto_weights(n_desirable: int, n_undesirable: int, ratio: float = 1.0) -> tuple[float, float]:
    """(λ_D, λ_U) with λ_D·n_D / (λ_U·n_U) = `ratio` (the paper's range is 1 to 4/3) and λ_U = 1: a data set with
    few thumbs up weighs each of them more."""
    if n_desirable < 1 or n_undesirable < 1:
        raise ValueError(f"KTO needs both kinds of feedback: got {n_desirable} thumbs up, {n_undesirable} down")
    return ratio * n_undesirable / n_desirable, 1.0
