"""The KL check's ladder (`loop.kl_check`): a toy policy whose 'KL' is a known function of its one weight, so every
step down the ladder, every probe and every full measurement can be checked by hand."""

import numpy as np
import pytest
import torch

from rlhf_lab.loop.kl_check import SHRINK, probe_bound, snapshot, within_kl_target


def test_an_empty_or_nan_probe_is_refused_not_passed():
    for kls in ([], [0.1, float("nan")]):
        with pytest.raises(ValueError, match="probe_bound needs the KL of at least one reply and no NaN"):
            probe_bound(kls)
    assert probe_bound([0.5]) == (0.5, 0.0)


def toy(rounds_start=(0.0, 1.0, 2.0), end=3.0):
    """A one-weight policy at `end`, with snapshots (the weight before each round) at `rounds_start`."""
    policy = torch.nn.Linear(1, 1, bias=False)
    snapshots = []
    for w in rounds_start:
        policy.weight.data.fill_(w)
        snapshots.append(snapshot(policy))
    policy.weight.data.fill_(end)
    return policy, snapshots


def weight(policy) -> float:
    return policy.weight.item()


def counted(fn):
    calls = []

    def wrapped(policy):
        calls.append(weight(policy))
        return fn(weight(policy))
    return wrapped, calls


def test_probes_screen_the_ladder_and_only_the_candidate_that_passes_is_measured_in_full():
    """KL(w) = w², target 2.5, rounds from 0→1, 1→2, 2→3: the ladder tries round 3 at ½ (w 2.5) and ¼ (2.25),
    undoes it (2.0), then round 2 at ½ (1.5, KL 2.25): four probes, and two full samplings (the first, the kept)."""
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (f"replies at {w}", w * w))
    probe, probed = counted(lambda w: w * w)
    lines = []
    batch, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=2.5, say=lines.append)
    assert probed == [2.5, 2.25, 2.0, 1.5] and measured == [3.0, 1.5]
    assert weight(policy) == pytest.approx(1.5) and kl == pytest.approx(2.25) and batch == "replies at 1.5"
    assert scale == 0.5 and scale in SHRINK and len(snapshots) == 2  # round 3 popped; round 2 kept at half its step
    assert "round 3 undone: probe KL 4.0 ± 0.0" in "\n".join(lines) and "KL 9.0 > target 2.5" in lines[0]


def test_a_probe_that_passes_a_candidate_the_full_sample_rejects_sends_the_ladder_on_down():
    """The probe underestimates by 1 (noise): it passes round 2 at ½ (1.5) whose full KL 2.25 is above the target
    2.0, so the ladder goes on to round 2 at ¼ (1.25, KL 1.5625), which the full sample keeps."""
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (None, w * w))
    probe, probed = counted(lambda w: w * w - 1)
    _, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=2.0, say=lambda *a: None)
    assert probed == [2.5, 2.25, 2.0, 1.5, 1.25] and measured == [3.0, 1.5, 1.25]
    assert weight(policy) == pytest.approx(1.25) and kl == pytest.approx(1.5625) and scale == 0.25


def test_without_a_probe_every_candidate_is_measured_in_full_and_within_the_target_nothing_moves():
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (None, w * w))
    _, kl, scale = within_kl_target(policy, snapshots, measure, None, target=2.5, say=lambda *a: None)
    assert measured == [3.0, 2.5, 2.25, 2.0, 1.5] and kl == pytest.approx(2.25) and scale == 0.5
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (None, w * w))
    for target in (9.0, None):  # within the target, or no target: the policy as trained, measured once
        _, kl, scale = within_kl_target(policy, snapshots, measure, None, target=target, say=lambda *a: None)
        assert kl == 9.0 and scale == 1.0 and weight(policy) == 3.0 and len(snapshots) == 3
    assert measured == [3.0, 3.0]


def test_a_target_nothing_meets_ends_at_the_initial_policy_without_probing_it():
    """Every round undone: the initial weights (KL 0 here) are measured, never probed, and kept."""
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (None, w * w + 0.5))  # even the initial policy is 'above' the target
    probe, probed = counted(lambda w: w * w + 0.5)
    _, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=0.1, say=lambda *a: None)
    assert weight(policy) == 0.0 and snapshots == [] and scale == 1.0 and kl == 0.5
    assert 0.0 not in probed and measured == [3.0, 0.0]
    assert probed == [2.5, 2.25, 2.0, 1.5, 1.25, 1.0, 0.5, 0.25]


def test_a_probe_passes_a_candidate_only_within_the_target_by_a_standard_error():
    """probe_bound: mean and s/√n of the KL per reply (checked against numpy); a probe of per-reply KLs whose mean
    is within the target but mean + standard error is not sends the ladder one step further down."""
    kls = np.array([8.0, 12.0, 9.0, 11.5, 7.0, 10.5])
    mean, error = probe_bound(torch.tensor(kls))
    assert mean == pytest.approx(kls.mean()) and error == pytest.approx(kls.std(ddof=1) / np.sqrt(len(kls)))
    assert probe_bound(3.5) == (3.5, 0.0)
    policy, snapshots = toy()
    measure, measured = counted(lambda w: (None, w * w))
    spread = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # standard error 0.5
    probe, probed = counted(lambda w: w * w + spread)
    _, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=2.5, say=lambda *a: None)
    assert probed == [2.5, 2.25, 2.0, 1.5, 1.25]  # 1.5 (mean 2.25, + 0.5 > 2.5) is screened out; 1.25 passes
    assert measured == [3.0, 1.25] and kl == pytest.approx(1.5625) and scale == 0.25


def test_a_partial_last_round_that_overshoots_is_undone_whole_and_the_round_before_measured_in_full():
    """The loop took ½ of round 3 (w 2.5 of 2→3): KL(w) = w². Target 5 or 6: round 3 is undone (w 2, KL 4) and
    measured in full, never probed, nor tried at ¼ (2.25); target 3: then the ladder goes on as usual (round 2 at ½,
    w 1.5, KL 2.25, after a probe); target 7 keeps the part the loop took."""
    for target, w, kept_rounds, kept_scale in ((5.0, 2.0, 2, 1.0), (6.0, 2.0, 2, 1.0), (3.0, 1.5, 2, 0.5),
                                               (7.0, 2.5, 3, 0.5)):
        policy, snapshots = toy(end=3.0)
        policy.weight.data.fill_(2.5)
        measure, measured = counted(lambda w: (None, w * w))
        probe, probed = counted(lambda w: w * w)
        _, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=target, say=lambda *a: None,
                                        partial=0.5)
        assert weight(policy) == pytest.approx(w) and kl == pytest.approx(w * w) and scale == kept_scale
        assert len(snapshots) == kept_rounds and 2.25 not in probed + measured and 2.0 not in probed
        assert measured == ([2.5] if target == 7.0 else [2.5, 2.0] if target > 4 else [2.5, 2.0, 1.5])
