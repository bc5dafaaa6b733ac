"""Which pairs to ask a learner about. With a few dozen judgments, the pairs shown matter as much as the model.

    picks = design_pairs(prompts, candidates, EmbeddingRewardConfig())   # [(a, b), ...]: one pair per prompt

The reward model of few labels (`reward.embedding`) is linear, r = w·x, with the prior w ~ N(0, (2λ)⁻¹·I) that
its L2 penalty λ·‖w‖² stands for (features in units of their prior weights). Before any label, σ'(0) = ¼, so one
judged pair with feature difference d = x_a − x_b adds ¼·d·dᵀ to the precision of w. A set S of pairs leaves

    A_S = 2λ·I + ¼·Σ_{d ∈ S} d·dᵀ

and Bayesian D-optimal design picks S to maximise log det A_S: pairs that, together, pin down the most directions
of w, rather than many pairs that differ the same way (e.g. only in length). Greedy: each step adds the pair, of a
prompt not yet used, with the largest gain log(1 + ¼·dᵀA⁻¹d) (matrix determinant lemma), then updates A⁻¹ by
Sherman–Morrison. The design uses no labels, so it works the same for a person at the rater and a simulated one.

Measured (`bench/taste_design.py`: 40 labels, seeds 0-9, SmolLM2, the taste loop's reward model): the design's
pair of 4 candidates against the one pair of 2 made no detectable difference to agreement with the six tastes
(mean paired difference per taste −0.02 to +0.04, signs mixed across seeds), so the taste loop keeps 2 by default
(`TasteConfig.label_candidates`); it is there to try with other reward models, tastes and label counts.
"""

from __future__ import annotations

import math
from itertools import accumulate, combinations

import torch

from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

__all__ = ["greedy_d_optimal", "design_pairs"]


def greedy_d_optimal(diffs: torch.Tensor, groups, precision: float, count: int | None = None) -> list[int]:
    """Rows of `diffs` (M, F), at most one per group, chosen greedily to maximise

        log det(precision·I + ¼·Σ_{chosen m} d_m·d_mᵀ).

    Each step takes the row of an unused group with the largest q_m = d_mᵀA⁻¹d_m (gain log(1 + q_m/4)), lowest
    row on ties, then with u = d/2, c = 1 + uᵀA⁻¹u:  A⁻¹ ← A⁻¹ − (A⁻¹u)(A⁻¹u)ᵀ/c  and  q_m ← q_m − (d_mᵀA⁻¹u)²/c.
    `count`: rows to choose (default: one per group). Returns the rows in the order chosen."""
    d = diffs.double()
    groups = torch.as_tensor(list(groups))
    if d.ndim != 2 or len(groups) != len(d):
        raise ValueError(f"diffs must be (M, F) with one group per row; got {tuple(d.shape)} and {len(groups)} groups.")
    if not precision > 0:
        raise ValueError(f"precision must be > 0, got {precision}.")
    distinct = len(set(groups.tolist()))
    count = distinct if count is None else min(count, distinct)
    inverse = torch.eye(d.shape[1], dtype=torch.float64) / precision
    q = (d * d).sum(1) / precision
    open_ = torch.ones(len(d), dtype=torch.bool)
    chosen = []
    for _ in range(count):
        m = int(torch.where(open_, q, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
        chosen.append(m)
        open_ &= groups != groups[m]
        au = inverse @ (d[m] / 2)
        c = 1 + float(d[m] / 2 @ au)
        q -= (d @ au) ** 2 / c
        inverse -= torch.outer(au, au) / c
    return chosen


def design_pairs(prompts: list[str], candidates: list[list[str]], reward: EmbeddingRewardConfig | None = None
                 ) -> list[tuple[int, int]]:
    """For each prompt, which two of its candidate replies to show: (a, b), indices into its candidates, a < b.
    The pairs are the greedy D-optimal design (module docstring) for the reward model `reward` configures, on the
    features of all the candidates."""
    reward = reward or EmbeddingRewardConfig()
    if len(prompts) != len(candidates) or min((len(c) for c in candidates), default=2) < 2:
        raise ValueError("design_pairs needs a list of at least two candidate replies for each prompt.")
    flat = [(i, reply) for i, replies in enumerate(candidates) for reply in replies]
    z = EmbeddingRewardModel(reward).standardised_features([prompts[i] for i, _ in flat], [r for _, r in flat])
    start = [0, *accumulate(len(replies) for replies in candidates)]  # each prompt's first row in z
    options = [(i, a, b) for i, replies in enumerate(candidates) for a, b in combinations(range(len(replies)), 2)]
    diffs = torch.stack([z[start[i] + a] - z[start[i] + b] for i, a, b in options])
    picked = {options[m][0]: options[m][1:] for m in greedy_d_optimal(diffs, [o[0] for o in options], 2 * reward.l2)}
    return [picked[i] for i in range(len(prompts))]
