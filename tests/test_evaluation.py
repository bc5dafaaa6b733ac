"""rlhf_lab.loop.evaluation: paired gains and win rates against a hand computation, intervals that can fail."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_lab.loop.evaluation import distinct_n, paired_gain, verdict


def test_paired_gain_matches_a_hand_computation():
    before = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])  # prompt means 2, 0, 2
    after = np.array([[2.0, 4.0], [1.0, -1.0], [5.0, 3.0]])  # prompt means 3, 0, 4
    result = paired_gain(before, after, n_boot=2000, seed=0)
    assert result.gain == pytest.approx((1 + 0 + 2) / 3) and result.win_rate == pytest.approx((1 + 0.5 + 1) / 3)
    assert (result.before, result.after, result.n_prompts, result.samples_per_prompt) == (4 / 3, 7 / 3, 3, 2)
    assert result.ci_low <= result.gain <= result.ci_high and 0 <= result.ci_low  # every resample's mean is ≥ 0
    assert result.ci_high <= 2.0 and result.win_ci_high <= 1.0


def test_the_interval_covers_the_true_gain_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        before = rng.normal(size=(40, 4)) + rng.normal(size=(40, 1))  # prompt difficulty shared before and after
        after = before + 0.2 + rng.normal(scale=0.5, size=(40, 4))
        result = paired_gain(before, after, n_boot=500, seed=trial)
        covered += result.ci_low <= 0.2 <= result.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_noise_is_reported_as_no_detectable_change():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(32, 4))
    same = paired_gain(before, before + rng.normal(scale=0.01, size=(32, 4)) * 0, seed=0)
    assert same.gain == 0 and same.verdict == "no detectable change"
    noisy = paired_gain(before, rng.normal(size=(32, 4)), seed=0)
    assert noisy.ci_low < 0 < noisy.ci_high and noisy.verdict == "no detectable change"
    assert paired_gain(before, before + 1, seed=0).verdict == "rose"
    assert paired_gain(before, before - 1, seed=0).verdict == "fell"
    assert verdict(0.1, 0.3, "the taste") == "the taste rose" and "no detectable change" in str(noisy)


def test_bad_input_says_how_to_fix():
    with pytest.raises(ValueError, match="same prompts"):
        paired_gain(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="confidence"):
        paired_gain(np.zeros(3), np.zeros(3), confidence=95)


def test_distinct_n_counts_repeated_ngrams():
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3) and distinct_n([""], 1) == 0.0


def test_t_interval_matches_a_hand_computation():
    from rlhf_lab.loop.evaluation import t_interval

    mean, lo, hi = t_interval([1.0, 2.0, 4.0])
    s = np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * s / np.sqrt(3)  # t_{2, 0.975} from a table
    assert mean == pytest.approx(7 / 3) and lo == pytest.approx(7 / 3 - half) and hi == pytest.approx(7 / 3 + half)
    one = t_interval([0.5])
    assert one[0] == 0.5 and np.isnan(one[1]) and np.isnan(one[2])
    with pytest.raises(ValueError, match="flat list"):
        t_interval([])
