"""Evaluation shared by runs, comparisons and lessons: KL of a policy to its reference, win rates, diversity."""

from __future__ import annotations

import numpy as np
import torch

from rlhf_lab.core.hf import causal_lm
from rlhf_lab.train.policy_value import response_logits

__all__ = ["sequence_kl", "win_rate", "distinct_n"]


def win_rate(gold: np.ndarray, opponent: np.ndarray) -> float:
    """Share of prompts where this reply's gold beats the opponent's (ties count ½)."""
    return float(np.mean((gold > opponent) + 0.5 * (gold == opponent)))


@torch.no_grad()
def sequence_kl(policy, reference, batch, temperature: float) -> torch.Tensor:
    """KL(π ‖ π_ref) per reply of a GenerationBatch, nats: Σ_t KL(π(·|y_<t) ‖ π_ref(·|y_<t)) over the sampled
    reply's tokens, with full next-token distributions at `temperature` (the expectation of k1 = log π − log π_ref
    over each next token: unbiased for the reply's KL, never negative, far less noisy than k1). (B,)"""
    device = next(reference.parameters()).device
    ids, attn = batch.query_response_ids.to(device), batch.query_response_mask.to(device)
    mask, n_prompt = batch.response_mask.to(device).float(), batch.prompt_ids.shape[1]
    kls = []
    for row in range(len(ids)):  # one row at a time: (R, V) temporaries only
        logp, ref_logp = (torch.log_softmax(response_logits(causal_lm(m), ids[row:row + 1], attn[row:row + 1],
                                                            n_prompt)[0].float() / temperature, dim=-1)
                          for m in (policy, reference))  # (R, V) each
        kls.append(((logp.exp() * (logp - ref_logp)).sum(-1) * mask[row]).sum())
    return torch.stack(kls).cpu()


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over `texts` (word level): 1 = no n-gram repeats, → 0 = mode collapse."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
