"""Honest evaluation, one set of functions for runs, comparisons, lessons and benches: gains and win rates paired by
prompt with bootstrap intervals, a verdict in plain words, KL of a policy to its reference, diversity.

    result = paired_gain(before, after)        # (P, m) utilities of m replies to each of P held-out prompts
    result.gain, result.ci_low, result.ci_high # mean over prompts of (after − before), 95 % bootstrap interval
    result.verdict                             # "rose", "fell" or "no detectable change" (the interval holds 0)

Prompt difficulty moves a reward more than training does, so a policy is compared with another on the same
prompts: each prompt's mean over its replies, after minus before, then a percentile bootstrap over prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from rlhf_lab.core.hf import causal_lm
from rlhf_lab.policy.decoder import next_token_kl
from rlhf_lab.policy.generation import generate
from rlhf_lab.policy.twin import decoding_dtype
from rlhf_lab.train.policy_value import response_logits

__all__ = ["PairedResult", "paired_gain", "verdict", "win_rate", "sequence_kl", "replies_with_kl", "distinct_n",
           "t_interval"]


def win_rate(gold: np.ndarray, opponent: np.ndarray) -> float:
    """Share of prompts where this reply's gold beats the opponent's (ties count ½); a NaN is refused (it would count
    as a loss)."""
    gold, opponent = np.asarray(gold, dtype=float), np.asarray(opponent, dtype=float)
    _refuse_nan("win_rate", gold, opponent)
    return float(np.mean((gold > opponent) + 0.5 * (gold == opponent)))


def _refuse_nan(what: str, *arrays: np.ndarray) -> None:
    """A ValueError when any of `arrays` holds NaN: a missing utility neither wins nor loses, and no mean holds it."""
    missing = sum(int(np.isnan(a).sum()) for a in arrays)
    if missing:
        raise ValueError(f"{what}: {missing} of {sum(a.size for a in arrays)} utilities are NaN; every reply needs a "
                         "number (check the gold or taste function that scored them)")


def verdict(ci_low: float, ci_high: float, what: str = "") -> str:
    """Plain words for an interval of a change: "rose" when it lies above 0, "fell" below, otherwise
    "no detectable change" (never a gain inside the noise)."""
    words = "rose" if ci_low > 0 else "fell" if ci_high < 0 else "no detectable change"
    return f"{what} {words}".strip()


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of a few per-seed figures and its Student-t interval: (mean, low, high), with n values v_i,

        mean ± t_{n−1, (1+confidence)/2} · s / √n,     s = the sample standard deviation (ddof 1)

    The benches' "over seeds" figures. One value, or values all equal, give NaN bounds: there is no spread to
    measure, and a zero-width interval would claim a certainty a few seeds cannot give."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"t_interval needs a flat list of at least one figure, got shape {v.shape}")
    if len(v) < 2 or np.ptp(v) == 0:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


@dataclass
class PairedResult:
    """A paired comparison over prompts (see `paired_gain`). Scalars are floats."""

    n_prompts: int
    samples_per_prompt: int
    before: float
    """Mean utility before (over prompts of each prompt's mean)."""
    after: float
    gain: float
    """Mean over prompts of (after − before)."""
    ci_low: float
    ci_high: float
    win_rate: float
    """Share of prompts whose mean rose (ties ½)."""
    win_ci_low: float
    win_ci_high: float
    confidence: float

    @property
    def verdict(self) -> str:
        return verdict(self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return (f"{self.before:.3f} → {self.after:.3f}: gain {self.gain:+.3f} ({pct} % interval {self.ci_low:+.3f} to "
                f"{self.ci_high:+.3f}, {self.n_prompts} prompts × {self.samples_per_prompt} replies): "
                f"{self.verdict}; win rate {self.win_rate:.2f} ({self.win_ci_low:.2f}–{self.win_ci_high:.2f})")


def paired_gain(before, after, *, confidence: float = 0.95, n_boot: int = 4000, seed: int = 0) -> PairedResult:
    """Gain and win rate of `after` over `before`, paired by prompt, with percentile bootstrap intervals.

    before, after: (P,) or (P, m) utilities, row i = prompt i (m replies each; their mean is the prompt's value).

        d_i = mean_j after_ij − mean_j before_ij,   gain = (1/P)·Σ_i d_i,   win = (1/P)·Σ_i [d_i > 0] + ½·[d_i = 0]

    The interval resamples prompts with replacement `n_boot` times (seeded) and takes the (1 ± confidence)/2
    percentiles of the resampled means.
    """
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.ndim == 1:
        before, after = before[:, None], after[:, None] if after.ndim == 1 else after
    if after.ndim == 1:
        after = after[:, None]
    if len(before) != len(after) or len(before) < 2:
        raise ValueError(f"paired_gain needs the same prompts (at least 2) before and after; got {len(before)} and "
                         f"{len(after)} rows.")
    if not (0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    _refuse_nan("paired_gain", before, after)
    d = after.mean(1) - before.mean(1)  # (P,)
    wins = (d > 0) + 0.5 * (d == 0)  # (P,)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))  # (n_boot, P)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    gain_lo, gain_hi = np.percentile(d[idx].mean(1), [lo, hi])
    win_lo, win_hi = np.percentile(wins[idx].mean(1), [lo, hi])
    return PairedResult(len(d), after.shape[1], float(before.mean()), float(after.mean()), float(d.mean()),
                        float(gain_lo), float(gain_hi), float(wins.mean()), float(win_lo), float(win_hi), confidence)


@torch.no_grad()
def sequence_kl(policy, reference, batch, temperature: float, rows_per_pass: int = 8, rows=None) -> torch.Tensor:
    """KL(π ‖ π_ref) per reply of a GenerationBatch, nats: Σ_t KL(π(·|y_<t) ‖ π_ref(·|y_<t)) over the sampled
    reply's tokens, with full next-token distributions at `temperature` (the expectation of k1 = log π − log π_ref
    over each next token: unbiased for the reply's KL, never negative, far less noisy than k1). (B,)

    rows: only these rows of the batch (default all). Rows go `rows_per_pass` at a time: (b, R, V) temporaries,
    about 50 MB per row of 32 tokens at V = 49k."""
    device = next(reference.parameters()).device
    ids, attn = batch.query_response_ids.to(device), batch.query_response_mask.to(device)
    mask, n_prompt = batch.response_mask.to(device).float(), batch.prompt_ids.shape[1]
    kls = []
    chosen = torch.arange(len(ids)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    for part in chosen.split(rows_per_pass):
        logits, ref_logits = (response_logits(causal_lm(m), ids[part], attn[part], n_prompt)
                              for m in (policy, reference))  # (b, R, V) each
        kls.append((next_token_kl(logits, ref_logits, temperature) * mask[part]).sum(1))
    return torch.cat(kls).cpu()


def replies_with_kl(policy, reference, tokenizer, prompts: list[str], sampling, *, in_sampler_precision: bool = False,
                    **generate_kwargs):
    """(batch, kl (B,)): replies sampled from `policy` (`generate` with `generate_kwargs`: seed, n_per_prompt, ...)
    and each one's KL to `reference` in nats, the full-distribution KL of `sequence_kl` at the sampling temperature
    (1 when greedy).

    Where the lean decoder reads both models and samples in the policy's own dtype, the KL is measured as the replies
    are sampled: one reference pass beside the sampler, no policy pass (`generate(reference=...)`); the same numbers
    as `sequence_kl` afterwards, up to float rounding. A bf16 sampling twin (a CPU with native bf16) rounds the
    fine-tuned weights and the reference's alike to bf16, which reads a smaller KL than their own weights do (6.71
    against 7.9 nats per reply after lesson 4's PPO, 2026-12-05): there the KL is `sequence_kl`'s afterwards, unless
    `in_sampler_precision` (the precision PPO's own forward passes compute in under bf16 autocast) is asked for."""
    own = next(policy.parameters()).dtype
    lockstep = in_sampler_precision or decoding_dtype(policy, sampling.decode_precision) == own
    batch = generate(policy, tokenizer, prompts, sampling, reference=reference if lockstep else None,
                     **generate_kwargs)
    if batch.kl is not None:
        return batch, batch.kl.cpu()
    return batch, sequence_kl(policy, reference, batch, sampling.temperature or 1.0)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over `texts` (word level): 1 = no n-gram repeats, → 0 = mode collapse."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
