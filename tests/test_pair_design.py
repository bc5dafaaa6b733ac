"""rlhf_lab.reward.pair_design: the greedy D-optimal choice of pairs, checked against log-determinants computed
directly, and the pairs the taste loop shows a learner."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.reward.embedding import EmbeddingRewardConfig
from rlhf_lab.reward.pair_design import design_pairs, greedy_d_optimal


def brute_force_greedy(diffs: torch.Tensor, groups: list[int], precision: float) -> list[int]:
    """The same greedy rule with log det(precision·I + ¼ Σ d dᵀ) computed from scratch at every step."""
    d = diffs.double()
    chosen: list[int] = []
    for _ in range(len(set(groups))):
        used = {groups[m] for m in chosen}

        def logdet(rows):
            a = precision * torch.eye(d.shape[1], dtype=torch.float64)
            for m in rows:
                a += torch.outer(d[m], d[m]) / 4
            return float(torch.logdet(a))

        gains = {m: logdet(chosen + [m]) for m in range(len(d)) if groups[m] not in used}
        chosen.append(max(gains, key=lambda m: (round(gains[m], 9), -m)))
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_greedy_design_matches_log_determinants_computed_directly(seed):
    g = torch.Generator().manual_seed(seed)
    diffs = torch.randn(18, 5, generator=g) * torch.tensor([3.0, 1.0, 1.0, 0.5, 0.2])
    groups = [m // 3 for m in range(18)]  # 6 prompts, 3 candidate pairs each
    chosen = greedy_d_optimal(diffs, groups, precision=2.0)
    assert chosen == brute_force_greedy(diffs, groups, 2.0)
    assert sorted(groups[m] for m in chosen) == list(range(6))  # one pair per prompt
    assert greedy_d_optimal(diffs, groups, precision=2.0, count=2) == chosen[:2]


def test_the_design_spreads_over_directions_instead_of_repeating_the_largest_one():
    """Every prompt offers a pair differing along e0 (a little larger) and one along its own direction: after one
    pair along e0, the others are worth more."""
    e = torch.eye(5)
    diffs = torch.stack([v for k in range(4) for v in (1.1 * e[0], e[k + 1])])
    groups = [m // 2 for m in range(8)]
    chosen = greedy_d_optimal(diffs, groups, precision=1.0)
    assert chosen == [0, 3, 5, 7]  # e0 once (prompt 0), then e2, e3, e4 (prompts 1-3): not e0 four times
    with pytest.raises(ValueError, match="one group per row"):
        greedy_d_optimal(diffs, groups[:-1], precision=1.0)


def test_design_pairs_never_shows_two_copies_of_one_reply():
    prompts = ["How are you?", "What do you do for fun?", "Any plans tonight?"]
    candidates = [["I'm fine, thanks.", "I'm fine, thanks.", "Great!!! And you? How is your day going?"],
                  ["I read a lot.", "Hiking, mostly, and you?", "Hiking, mostly, and you?"],
                  ["Nothing much.", "Nothing much.", "Dinner with friends!", "Nothing much."]]
    picks = design_pairs(prompts, candidates, EmbeddingRewardConfig())
    assert len(picks) == 3 and all(a < b for a, b in picks)
    assert all(candidates[i][a] != candidates[i][b] for i, (a, b) in enumerate(picks))
    with pytest.raises(ValueError, match="at least two candidate replies"):
        design_pairs(prompts[:1], [["only one"]])
