"""rlhf_lab.ppo_math against naive references: Python loops, hand computations and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, kl_divergence

from rlhf_lab.train.ppo_math import (AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss,
                                     entropy_from_logits, explained_variance, gae, kl_k1, kl_k2, kl_k3,
                                     kl_shaped_rewards, lagrange_multiplier_step, logprobs_from_logits, masked_mean, masked_var,
                                     masked_whiten)

B, T, V = 4, 6, 11
LENGTHS = [1, 3, 6, 4]  # ragged: a single-token row, a full row, and two in between
GARBAGE = 1e4  # large but finite values planted in padded positions

fast = settings(max_examples=40, deadline=None)


def ragged_mask(lengths=LENGTHS, T=T) -> torch.Tensor:
    """(B, T) float mask, right padded: row i has lengths[i] valid tokens."""
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def with_garbage(x: torch.Tensor, mask: torch.Tensor, fill: float = GARBAGE) -> torch.Tensor:
    return torch.where(mask.bool(), x, torch.full_like(x, fill))


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@st.composite
def masked_batches(draw, min_valid=1):
    """(x, mask) with 1-4 rows of 1-8 tokens, right padded, at least `min_valid` valid tokens in all."""
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(max(1, min_valid), 8))
    lengths = draw(st.lists(st.integers(0, cols), min_size=rows, max_size=rows))
    if sum(lengths) < min_valid:
        lengths[0] = cols
    values = draw(st.lists(st.floats(-100, 100), min_size=rows * cols, max_size=rows * cols))
    x = torch.tensor(values, dtype=torch.float64).reshape(rows, cols)
    return x, ragged_mask(lengths, cols).double()


# ---- log-probabilities and entropy --------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_logprobs_match_categorical(temperature):
    logits = 3 * randn(B, T, V)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    expected = Categorical(logits=logits / temperature).log_prob(tokens)
    torch.testing.assert_close(logprobs_from_logits(logits, tokens, temperature), expected)


def test_logprobs_gradient_matches_log_softmax():
    logits = randn(B, T, V).requires_grad_()
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    (logprobs_from_logits(logits, tokens, 0.7) * randn(B, T, seed=2)).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (ref * randn(B, T, seed=2)).sum().backward()
    torch.testing.assert_close(ours, logits.grad)


def test_logprobs_of_bfloat16_logits_are_float32():
    logits = randn(B, T, V).bfloat16()
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    out = logprobs_from_logits(logits, tokens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, Categorical(logits=logits.float()).log_prob(tokens))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_entropy_matches_categorical(temperature):
    logits = 3 * randn(B, T, V)
    expected = Categorical(logits=logits / temperature).entropy()
    torch.testing.assert_close(entropy_from_logits(logits, temperature), expected)


def test_entropy_of_logits_with_filtered_tokens_matches_categorical():
    logits = randn(2, 3, V)
    logits[..., :4] = -math.inf  # top-k style: tokens that can never be drawn
    expected = Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), expected, atol=1e-5)


def test_masked_mean_and_var_of_half_precision_do_not_overflow():
    x, mask = torch.full((4096,), 30.0, dtype=torch.float16), torch.ones(4096)
    assert masked_mean(x, mask).dtype == torch.float16 and masked_mean(x, mask).item() == 30.0  # a float16 sum: inf
    assert masked_var(x, mask).item() == 0.0
    y = randn(64, 64).to(torch.bfloat16) * 100
    assert masked_mean(y, torch.ones(64, 64)).item() == pytest.approx(y.double().mean().item(), abs=0.5)


def test_entropy_of_uniform_is_log_v():
    torch.testing.assert_close(entropy_from_logits(torch.zeros(2, 3, V)), torch.full((2, 3), math.log(V)))


# ---- masked statistics --------------------------------------------------------------------------------------------
def test_masked_mean_matches_loop():
    x, mask = randn(B, T), ragged_mask()
    valid = [x[i, j].item() for i in range(B) for j in range(T) if mask[i, j]]
    assert masked_mean(x, mask).item() == pytest.approx(sum(valid) / len(valid), rel=1e-6)
    per_row = [sum(x[i, :n].tolist()) / n for i, n in enumerate(LENGTHS)]
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor(per_row))


def test_masked_mean_hand_example_and_empty_row():
    x = torch.tensor([[1.0, 2.0, 6.0], [5.0, 7.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, mask).item() == 1.5
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 0.0]))


def test_masked_mean_ignores_inf_and_nan_in_padding():
    x, mask = randn(B, T), ragged_mask()
    poisoned = torch.where(mask.bool(), x, torch.tensor(float("nan")))
    poisoned[0, -1] = float("inf")
    torch.testing.assert_close(masked_mean(poisoned, mask), masked_mean(x, mask))


@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_var_matches_torch_var_of_valid_entries(unbiased):
    x, mask = randn(B, T), ragged_mask()
    expected = x[mask.bool()].var(correction=1 if unbiased else 0)
    torch.testing.assert_close(masked_var(with_garbage(x, mask), mask, unbiased), expected)


def test_masked_var_of_single_entry_is_zero():
    assert masked_var(torch.tensor([[3.0, 9.0]]), torch.tensor([[1.0, 0.0]])).item() == 0.0


@fast
@given(masked_batches(min_valid=2))
def test_whitened_values_have_mean_zero_and_unit_variance(batch):
    x, mask = batch
    spread = masked_var(x, mask)
    white = masked_whiten(x, mask)
    assert masked_mean(white, mask).item() == pytest.approx(0.0, abs=1e-6)
    if spread > 1e-3:  # the 1e-8 in the denominator only matters for near-constant inputs
        assert masked_var(white, mask).item() == pytest.approx(1.0, rel=1e-4)
    assert (white[~mask.bool()] == 0).all()


@fast
@given(masked_batches(min_valid=2))
def test_whiten_without_shift_keeps_mean(batch):
    x, mask = batch
    white = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(white, mask).item() == pytest.approx(masked_mean(x, mask).item(), abs=1e-6)
    torch.testing.assert_close(white, (masked_whiten(x, mask) + masked_mean(x, mask)) * mask)


def test_whiten_ignores_padding_values():
    x, mask = randn(B, T), ragged_mask()
    torch.testing.assert_close(masked_whiten(with_garbage(x, mask), mask), masked_whiten(x, mask))


# ---- KL estimators ------------------------------------------------------------------------------------------------
def test_kl_estimators_hand_example():
    logp, ref_logp = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])  # r = 0.5
    assert kl_k1(logp, ref_logp).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, ref_logp).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_k3(logp, ref_logp).item() == pytest.approx(-0.5 + math.log(2))


def test_k1_and_k3_are_unbiased_exactly():
    """E_{x~p}[k(x)] = KL(p ‖ q): sum over the whole vocabulary, weighted by p, so no sampling noise."""
    p, q = Categorical(logits=2 * randn(5, V)), Categorical(logits=2 * randn(5, V, seed=1))
    logp, ref_logp = p.logits, q.logits  # (5, V) normalised log-probs of every token
    exact = kl_divergence(p, q)
    torch.testing.assert_close((p.probs * kl_k1(logp, ref_logp)).sum(-1), exact)
    torch.testing.assert_close((p.probs * kl_k3(logp, ref_logp)).sum(-1), exact)


@fast
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_k2_and_k3_are_never_negative(logp, ref_logp):
    logp, ref_logp = torch.tensor(logp, dtype=torch.float64), torch.tensor(ref_logp, dtype=torch.float64)
    assert kl_k3(logp, ref_logp) >= 0
    assert kl_k2(logp, ref_logp) >= 0


# ---- KL-shaped rewards --------------------------------------------------------------------------------------------
def test_score_lands_on_last_valid_token():
    T5, beta = 5, 0.1
    mask = ragged_mask([1, 3, 5], T5)
    score = torch.tensor([10.0, 20.0, 30.0])
    logp = torch.zeros(3, T5)
    ref_logp = torch.full((3, T5), -1.0)  # k1 = 1 on every token, so −β·k1 = −0.1
    rewards, non_score = kl_shaped_rewards(score, logp, ref_logp, mask, beta)
    expected = torch.tensor(
        [
            [9.9, 0.0, 0.0, 0.0, 0.0],
            [-0.1, -0.1, 19.9, 0.0, 0.0],
            [-0.1, -0.1, -0.1, -0.1, 29.9],
        ]
    )
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(non_score, -0.1 * mask)


def test_kl_shaped_rewards_match_loop_and_ignore_padding():
    mask, beta = ragged_mask(), 0.05
    score, logp, ref_logp = randn(B), randn(B, T, seed=1), randn(B, T, seed=2)
    expected = torch.zeros(B, T)
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            expected[i, t] = -beta * (logp[i, t] - ref_logp[i, t])
        expected[i, n - 1] += score[i]
    rewards, non_score = kl_shaped_rewards(
        score, with_garbage(logp, mask), with_garbage(ref_logp, mask, -GARBAGE), mask, beta
    )
    torch.testing.assert_close(rewards, expected)
    assert rewards.sum(1).tolist() == pytest.approx((score + non_score.sum(1)).tolist(), abs=1e-5)


def test_row_without_valid_tokens_gets_no_score():
    mask = ragged_mask([0, 2], 3)
    rewards, _ = kl_shaped_rewards(torch.tensor([5.0, 7.0]), torch.zeros(2, 3), torch.zeros(2, 3), mask, 0.1)
    torch.testing.assert_close(rewards, torch.tensor([[0.0, 0.0, 0.0], [0.0, 7.0, 0.0]]))


# ---- GAE ----------------------------------------------------------------------------------------------------------
def naive_gae(rewards, values, lengths, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over each row's valid tokens, V = 0 after the last one: explicit sums, no recursion."""
    advantages = torch.zeros_like(rewards)
    for i, n in enumerate(lengths):
        v = values[i, :n].tolist() + [0.0]
        deltas = [rewards[i, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            advantages[i, t] = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t))
    return advantages


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0), (0.9, 0.0)])
def test_gae_matches_naive_sums(gamma, lam):
    mask = ragged_mask()
    rewards, values = randn(B, T), randn(B, T, seed=1)
    advantages, returns = gae(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    expected = naive_gae(rewards, values, LENGTHS, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_gae_hand_example():
    # one row, 3 valid tokens then padding: γ = 1, λ = 0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 0.5, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # δ = [0 + 0.25 − 0.5, 0 + 0.5 − 0.25, 1 + 0 − 0.5] = [−0.25, 0.25, 0.5]
    # A_2 = 0.5, A_1 = 0.25 + 0.5·0.5 = 0.5, A_0 = −0.25 + 0.5·0.5 = 0
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.5, 0.75, 1.0, 0.0]]))


@fast
@given(masked_batches())
def test_gae_with_lambda_one_and_zero_values_is_reward_to_go(batch):
    rewards, mask = batch
    advantages, returns = gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    reward_to_go = (rewards * mask).flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(advantages, reward_to_go)
    torch.testing.assert_close(returns, reward_to_go)


# ---- losses -------------------------------------------------------------------------------------------------------
def test_clipped_policy_loss_matches_loop():
    mask, eps = ragged_mask(), 0.2
    logp_old = randn(B, T)
    logp_new = logp_old + 0.3 * randn(B, T, seed=1)
    advantages = randn(B, T, seed=3)
    losses, kls, clipped, ratios = [], [], [], []
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            r = math.exp(logp_new[i, t] - logp_old[i, t])
            a = advantages[i, t].item()
            unclipped, clipped_obj = r * a, min(max(r, 1 - eps), 1 + eps) * a
            losses.append(-min(unclipped, clipped_obj))
            clipped.append(clipped_obj < unclipped)
            kls.append(r - 1 - math.log(r))
            ratios.append(r)
    loss, stats = clipped_policy_loss(
        with_garbage(logp_new, mask), with_garbage(logp_old, mask, -GARBAGE), with_garbage(advantages, mask), mask, eps
    )
    n = len(losses)
    mean_ratio = sum(ratios) / n
    assert loss.item() == pytest.approx(sum(losses) / n, rel=1e-5)
    assert stats["approx_kl"].item() == pytest.approx(sum(kls) / n, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(sum(clipped) / n)
    outside = sum(abs(r - 1) > eps for r in ratios)
    assert 0 < sum(clipped) < outside  # some ratios leave the range in the direction the clip ignores
    assert stats["ratio_mean"].item() == pytest.approx(mean_ratio, rel=1e-5)
    std = math.sqrt(sum((r - mean_ratio) ** 2 for r in ratios) / (n - 1))
    assert stats["ratio_std"].item() == pytest.approx(std, rel=1e-5)


def test_padding_garbage_reaches_no_gradient_of_the_policy_loss_or_whitening():
    """The gradient with −1e4 / NaN planted in padding equals the gradient of the valid tokens alone (each row's
    valid prefix, computed without any padding)."""
    mask, eps = ragged_mask(), 0.2
    logp_old, advantages = randn(B, T), randn(B, T, seed=3)
    logp_new = (logp_old + 0.3 * randn(B, T, seed=1)).requires_grad_()
    loss, _ = clipped_policy_loss(logp_new, with_garbage(logp_old, mask, -GARBAGE), advantages, mask, eps)
    loss.backward()
    tokens = [(i, t) for i, n in enumerate(LENGTHS) for t in range(n)]
    flat_new = torch.stack([logp_new[i, t] for i, t in tokens]).detach().requires_grad_()
    flat_old, flat_adv = (torch.stack([x[i, t] for i, t in tokens]) for x in (logp_old, advantages))
    ratio = (flat_new - flat_old).exp()
    torch.max(-flat_adv * ratio, -flat_adv * ratio.clamp(1 - eps, 1 + eps)).mean().backward()
    expected = torch.zeros(B, T)
    for (i, t), g in zip(tokens, flat_new.grad):
        expected[i, t] = g
    assert torch.allclose(logp_new.grad, expected, atol=1e-7)
    x = randn(B, T, seed=4).requires_grad_()
    masked_whiten(with_garbage(x, mask, math.nan), mask).pow(2).mul(randn(B, T, seed=5)).sum().backward()
    valid = torch.stack([x[i, t] for i, t in tokens]).detach().requires_grad_()
    weights = torch.stack([randn(B, T, seed=5)[i, t] for i, t in tokens])
    ((valid - valid.mean()) / (valid.var() + 1e-8).sqrt()).pow(2).mul(weights).sum().backward()
    expected = torch.zeros(B, T)
    for (i, t), g in zip(tokens, valid.grad):
        expected[i, t] = g
    assert torch.allclose(x.grad, expected, atol=1e-5)


def test_clipped_policy_loss_on_policy_is_minus_mean_advantage():
    mask, logp, advantages = ragged_mask(), randn(B, T), randn(B, T, seed=1)
    loss, stats = clipped_policy_loss(logp, logp, advantages, mask)
    assert loss.item() == pytest.approx(-masked_mean(advantages, mask).item(), rel=1e-6)
    assert stats["approx_kl"].item() == 0.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["ratio_mean"].item() == 1.0
    assert stats["ratio_std"].item() == 0.0


@fast
@given(st.floats(-3, 3), st.floats(-10, 10).filter(lambda a: abs(a) > 1e-3), st.sampled_from([0.1, 0.2, 0.3]))
def test_clipping_never_rewards_moving_beyond_the_clip_range(logratio, advantage, eps):
    """The objective −loss never exceeds its best value inside [1−ε, 1+ε], and has no gradient past that edge."""
    logp_new = torch.tensor([[logratio]], dtype=torch.float64, requires_grad=True)
    logp_old = torch.zeros(1, 1, dtype=torch.float64)
    loss, _ = clipped_policy_loss(logp_new, logp_old, torch.tensor([[advantage]], dtype=torch.float64),
                                  torch.ones(1, 1), eps)
    loss.backward()
    best_inside = max((1 - eps) * advantage, (1 + eps) * advantage)
    assert -loss.item() <= best_inside + 1e-9
    ratio = math.exp(logratio)
    beyond = (advantage > 0 and ratio > 1 + eps) or (advantage < 0 and ratio < 1 - eps)
    if beyond:
        assert logp_new.grad.item() == 0.0
    else:
        assert logp_new.grad.item() == pytest.approx(-advantage * ratio)


def test_clipped_value_loss_matches_loop():
    mask, clip = ragged_mask(), 0.2
    values_old, returns = randn(B, T), randn(B, T, seed=1)
    values_new = values_old + 0.4 * randn(B, T, seed=2)
    losses, clipped = [], []
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            v, v_old, ret = values_new[i, t].item(), values_old[i, t].item(), returns[i, t].item()
            v_clip = v_old + min(max(v - v_old, -clip), clip)
            losses.append(max((v - ret) ** 2, (v_clip - ret) ** 2))
            clipped.append((v_clip - ret) ** 2 > (v - ret) ** 2)
    loss, stats = clipped_value_loss(
        with_garbage(values_new, mask), values_old, with_garbage(returns, mask), mask, clip
    )
    assert loss.item() == pytest.approx(0.5 * sum(losses) / len(losses), rel=1e-5)
    assert stats["vf_clipfrac"].item() == pytest.approx(sum(clipped) / len(clipped))
    assert 0 < stats["vf_clipfrac"].item() < 1


def test_clipped_value_loss_hand_example():
    # v_old = 0, v = 1, R = 2, c = 0.2: unclipped (1 − 2)² = 1, clipped (0.2 − 2)² = 3.24 → loss ½·3.24
    loss, stats = clipped_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]),
                                     torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(1.62)
    assert stats["vf_clipfrac"].item() == 1.0


def test_explained_variance():
    mask, returns = ragged_mask(), randn(B, T)
    values = returns + 0.5 * randn(B, T, seed=1)
    r, v = returns[mask.bool()], values[mask.bool()]
    expected = 1 - (r - v).var() / r.var()
    ours = explained_variance(with_garbage(values, mask), returns, mask)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    assert explained_variance(returns, returns, mask).item() == 1.0
    constant = torch.full_like(returns, masked_mean(returns, mask).item())
    assert explained_variance(constant, returns, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(explained_variance(returns, torch.ones(B, T), mask).item())


# ---- KL controllers -----------------------------------------------------------------------------------------------
def test_adaptive_kl_controller_hand_numbers():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_steps=256)  # error = clip(1, ±0.2) = 0.2 → β·(1 + 0.2·256/10000)
    assert ctl.value == pytest.approx(0.1 * 1.00512)
    ctl.update(current_kl=6.0, n_steps=256)  # on target: unchanged
    assert ctl.value == pytest.approx(0.1 * 1.00512)
    ctl.update(current_kl=5.7, n_steps=1000)  # error = −0.05, inside the clip → β·(1 − 0.05·0.1)
    assert ctl.value == pytest.approx(0.1 * 1.00512 * 0.995)
    ctl.update(current_kl=torch.tensor(0.0), n_steps=10_000)  # error clipped to −0.2 → β·0.8
    assert ctl.value == pytest.approx(0.1 * 1.00512 * 0.995 * 0.8)


def test_fixed_kl_controller_never_changes():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=10_000)
    assert ctl.value == 0.05


def test_lagrange_multiplier_step_by_hand():
    """λ ← max(0, λ + η·(Ĉ − d)): above the limit it grows, below it shrinks, never under 0; η = 0 keeps it."""
    assert lagrange_multiplier_step(1.0, 0.30, 0.10, 0.5) == pytest.approx(1.0 + 0.5 * 0.20)  # 1.1
    assert lagrange_multiplier_step(1.0, 0.02, 0.10, 5.0) == pytest.approx(1.0 - 5.0 * 0.08)  # 0.6
    assert lagrange_multiplier_step(0.1, 0.00, 0.10, 5.0) == 0.0  # 0.1 − 0.5 projected onto λ ≥ 0
    assert lagrange_multiplier_step(0.0, 0.05, 0.10, 5.0) == 0.0  # the constraint holds: λ stays 0
    assert lagrange_multiplier_step(0.7, 0.90, 0.10, 0.0) == 0.7  # a fixed penalty
    lam, path = 0.0, []
    for cost in (0.5, 0.5, 0.0, 0.0, 0.0):  # a loop of the rule, written out: 0.4, 0.8, 0.7, 0.6, 0.5
        lam = max(0.0, lam + 1.0 * (cost - 0.1))
        path.append(lam)
    got, lam = [], 0.0
    for cost in (0.5, 0.5, 0.0, 0.0, 0.0):
        lam = lagrange_multiplier_step(lam, cost, 0.1, 1.0)
        got.append(lam)
    assert got == pytest.approx(path) and got == pytest.approx([0.4, 0.8, 0.7, 0.6, 0.5])


def test_every_maths_function_on_tensors_names_the_argument_that_is_not_one():
    """A list or NumPy array where a tensor belongs is refused in one line naming the function and the argument,
    not an AttributeError from inside torch; the check covers every public function with a Tensor parameter."""
    import inspect

    import numpy as np

    from rlhf_lab.reward import losses
    from rlhf_lab.train import dpo_losses, kto_losses, ppo_math

    with pytest.raises(TypeError, match=r"^masked_mean: x must be a torch tensor, got list; make one with torch"):
        ppo_math.masked_mean([1.0, 2.0], torch.ones(2))
    with pytest.raises(TypeError, match=r"^kl_k3: ref_logp must be a torch tensor, got ndarray"):
        ppo_math.kl_k3(torch.zeros(1), np.zeros(1))
    with pytest.raises(TypeError, match=r"^gae: mask must be a torch tensor, got list"):
        ppo_math.gae(torch.zeros(1, 2), torch.zeros(1, 2), mask=[[1, 1]], gamma=1.0, lam=0.95)
    with pytest.raises(TypeError, match=r"^plackett_luce_loss: mask must be a torch tensor, got list"):
        losses.plackett_luce_loss(torch.zeros(1, 2), [[1, 1]])
    assert float(losses.plackett_luce_loss(torch.zeros(1, 2), None)) == pytest.approx(math.log(2))  # None allowed
    assert kto_losses.kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([True, False]), 0.0,
                               beta=0.1).tolist() == pytest.approx([0.5, 0.5])  # Tensor | float takes a float
    for module in (ppo_math, dpo_losses, kto_losses, losses):
        for name in module.__all__:
            function = getattr(module, name)
            if inspect.isfunction(function) and "Tensor" in str(inspect.signature(function)):
                assert hasattr(function, "__wrapped__"), f"{module.__name__}.{name} does not check its tensors"
