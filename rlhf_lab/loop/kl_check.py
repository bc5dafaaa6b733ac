"""The KL check that counts: the steered policy's KL to the initial one, on the held-out replies, within the target.

    after, kl, scale = within_kl_target(policy, snapshots, measure, probe, target=10.0)

After the policy step the held-out replies are sampled and their KL to the initial policy measured (nats per reply,
`measure`). Above the target, the last round is shrunk (its step to ½, then ¼ of the way: `blend`) or else undone,
and the round before it likewise, down this ladder until the KL is within the target.

Each step down the ladder is first screened by a `probe`: one reply per held-out prompt, a quarter of the
evaluation's replies at its defaults. Only a candidate within the target on the probe by a standard error is
sampled in full, and the full sample decides: the probe's mean of 32 replies is too noisy to report (without the
standard error, a probe of 9.8 let through a candidate whose full KL was 10.4, and the ladder went on). Before the
probe, every candidate was sampled in full (about 45 s each on 2 CPU cores): PPO on the short taste tried up to
five, and the whole run took 7 minutes where it takes 4.5 when the first full sample passes. The probe is a trade
(`bench/README.md`): it saved 30–75 s where the ladder went two or more steps down (short seeds 1, 2, 4 under PPO),
and cost time and part of the step where the first step down passes in full but not the probe's margin (questions
seeds 1 and 3: ¼ or a round less kept, 29–68 s more).
"""

from __future__ import annotations

import torch

__all__ = ["SHRINK", "blend", "snapshot", "within_kl_target", "probe_bound"]

SHRINK = (0.5, 0.25)
"""The fractions of an overshooting round that the ladder tries, largest first, before undoing the round whole."""


def snapshot(model) -> dict:
    """A copy of the model's weights on the CPU: the weights before a round, for `blend` and for undoing it."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def blend(before: dict, after: dict, alpha: float) -> dict:
    """Weights a fraction `alpha` of the way from one state dict to another: θ = θ_before + α·(θ_after − θ_before)
    for floating-point tensors (others, e.g. integer buffers, from `after`). α = 1 gives `after`, α = 0 `before`."""
    return {k: before[k] + alpha * (v - before[k]) if v.is_floating_point() else v for k, v in after.items()}


def probe_bound(kls) -> tuple[float, float]:
    """(mean, standard error) of a probe's KL per reply: s/√n, with s the sample standard deviation of the n values
    (a single number: its value and 0). A candidate passes the probe when mean + standard error ≤ target."""
    kls = torch.as_tensor(kls, dtype=torch.float64).flatten()
    if len(kls) == 0 or kls.isnan().any():  # an empty probe would pass any target
        raise ValueError(f"probe_bound needs the KL of at least one reply and no NaN; got {kls.tolist()}")
    if len(kls) < 2:
        return float(kls.sum()), 0.0
    return float(kls.mean()), float(kls.std() / len(kls) ** 0.5)


def within_kl_target(policy, snapshots: list[dict], measure, probe=None, target: float | None = None, say=print,
                     partial: float | None = None):
    """Sample the held-out replies and walk the ladder down until their KL is within `target`.

    policy: the steered model (its weights are changed in place to the candidate kept). snapshots: its weights
    before each kept round, oldest first (`snapshot`); rounds undone are popped. measure(policy) -> (batch, kl): the
    held-out replies and their mean KL, the figure that counts. probe(policy) -> KL per reply (a cheaper sample of
    the same KL; a candidate passes when its mean plus standard error is within the target: `probe_bound`), or
    None to measure every candidate in full. partial: the fraction α of its last round's step the policy took,
    when the loop took only the part of that round it predicted to fit the target (`taste.steer`). Above the
    target, that round is undone whole and the policy before it measured in full, without a probe: the loop had
    measured it within the target, and a smaller part of a step whose KL rose faster than predicted seldom fits (a
    partial round of SmolLM2 that overshot went from KL 5–9 to 10–18 nats), while a probe's margin would throw away
    the round before it too (short, seed 4: 9.2 ± 0.9 on the probe, 9.5 in full). Returns (batch, kl, scale): the
    held-out replies of the policy kept, their KL, and the fraction of the last kept round's step that was kept (1,
    a partial round's α, or one of SHRINK).
    With no snapshots left the policy is the initial one (KL 0): it is measured and kept whatever the target."""
    batch, kl = measure(policy)
    scale = partial or 1.0
    if target is not None and kl > target and partial is not None:
        say(f"      KL {kl:.1f} > target {target:g} on the held-out replies: round {len(snapshots)} ({scale:.2f} of "
            "its step) undone")
        policy.load_state_dict(snapshots.pop())
        scale = 1.0
        batch, kl = measure(policy)
    while target is not None and kl > target and snapshots:
        say(f"      KL {kl:.1f} > target {target:g} on the held-out replies")
        while True:  # down the ladder until a candidate's probe is within the target, or no round is left
            if scale == 1.0:  # this round's full step, for blending
                full = snapshot(policy)
            smaller = [a for a in SHRINK if a < scale]
            if smaller:
                scale = smaller[0]
                policy.load_state_dict(blend(snapshots[-1], full, scale))
                step = f"round {len(snapshots)} shrunk to {scale:g} of its step"
            else:
                policy.load_state_dict(snapshots.pop())
                scale = 1.0
                step = f"round {len(snapshots) + 1} undone"
            if probe is None or not snapshots:
                say(f"      {step}")
                break
            estimate, error = probe_bound(probe(policy))
            say(f"      {step}: probe KL {estimate:.1f} ± {error:.1f}")
            if estimate + error <= target:
                break
        batch, kl = measure(policy)
    return batch, kl, scale
