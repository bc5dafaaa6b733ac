"""DPO and its variants as pure losses on sequence log-probs (Rafailov et al. 2023; IPO, cDPO, robust DPO).

h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)): how much more the policy than the reference
prefers the chosen reply y_w over the rejected y_l. All take (B,) tensors and return per-pair losses (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lab.core.inputs import tensor_arguments

__all__ = ["LOSS_TYPES", "sigmoid_loss", "robust_loss", "ipo_loss", "dpo_loss"]

LOSS_TYPES = ("sigmoid", "ipo", "robust")


@tensor_arguments
def sigmoid_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al. 2023): L = −log σ(β·h). With label smoothing ε (conservative DPO, cDPO: each label is
    wrong with probability ε) L = −(1−ε)·log σ(β·h) − ε·log σ(−β·h), minimised at β·h = log((1−ε)/ε), not at ∞."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


@tensor_arguments
def robust_loss(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024), an unbiased loss under labels flipped with probability ε < ½:
    L = (−(1−ε)·log σ(β·h) + ε·log σ(−β·h)) / (1 − 2ε)."""
    return (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
        1 - 2 * label_smoothing)


@tensor_arguments
def ipo_loss(h_per_token: Tensor, beta: float) -> Tensor:
    """IPO (Azar et al. 2023): L = (h̄ − 1/(2β))², a squared loss that keeps the margin finite (β is the paper's τ).
    h̄ uses log-ratios averaged per reply token (TRL's normalisation, confirmed by the IPO authors)."""
    return (h_per_token - 1 / (2 * beta)) ** 2


@tensor_arguments
def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_lengths: Tensor | None = None, rejected_lengths: Tensor | None = None,
             tie: Tensor | None = None) -> Tensor:
    """Per-pair preference loss (B,) from sequence log-probs (B,) of the policy and the reference.

    loss_type: "sigmoid" (DPO; cDPO with label_smoothing > 0), "ipo" (needs the reply lengths in tokens) or "robust".
    tie (B,) bool: a tied pair has no preferred side. Its target is ½, L = −½·log σ(β·h) − ½·log σ(−β·h), minimised
    at h = 0 (sigmoid and robust); for IPO its target margin is 0, L = h̄².
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}: use one of {', '.join(LOSS_TYPES)}.")
    chosen_logratios, rejected_logratios = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios  # (B,)
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("The IPO loss averages log-ratios per token: pass chosen_lengths and rejected_lengths.")
        h = chosen_logratios / chosen_lengths.clamp_min(1) - rejected_logratios / rejected_lengths.clamp_min(1)
        losses, tied = ipo_loss(h, beta), h ** 2
    else:
        loss_fn = sigmoid_loss if loss_type == "sigmoid" else robust_loss
        losses = loss_fn(h, beta, label_smoothing)
        tied = sigmoid_loss(h, beta, 0.5)
    return losses if tie is None else torch.where(tie.bool(), tied, losses)
