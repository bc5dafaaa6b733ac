"""The Laplace evidence of a logistic model (`reward.evidence`), against independent computations."""

import numpy as np
import torch
from scipy import integrate, optimize

from rlhf_lab.reward.evidence import log_evidence, relevance_step


def _map(z, t, l2):
    """The MAP weights, argmin Σ BCE(σ(z·w), t) + λ‖w‖², by scipy's BFGS in float64 (independent of the package's
    L-BFGS fit)."""
    zz, tt = z.double().numpy(), t.double().numpy()

    def loss(w):
        logits = zz @ w
        p = 1 / (1 + np.exp(-logits))
        value = np.sum(np.logaddexp(0, logits) - tt * logits) + l2 * w @ w
        return value, zz.T @ (p - tt) + 2 * l2 * w

    result = optimize.minimize(loss, np.zeros(zz.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10})
    return torch.tensor(result.x)


def test_matches_the_feature_space_determinant():
    """Sylvester's N × N form equals the F × F log det of the Hessian, by numpy, with soft targets and weights."""
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(12, 30, generator=g), torch.rand(12, generator=g)
    c = torch.rand(12, generator=g) + 0.5
    w, l2 = torch.randn(30, generator=g) * 0.3, 2.0
    zz, ww, tt, cc = (a.numpy().astype(np.float64) for a in (z, w, t, c))
    p = 1 / (1 + np.exp(-zz @ ww))
    fit = np.sum(cc * (tt * np.log(p) + (1 - tt) * np.log(1 - p))) - l2 * ww @ ww
    hessian = zz.T @ np.diag(cc * p * (1 - p)) @ zz + 2 * l2 * np.eye(30)
    expected = fit + 15 * np.log(2 * l2) - 0.5 * np.linalg.slogdet(hessian)[1]
    assert abs(log_evidence(z, t, w, l2, c) - expected) < 1e-6


def test_close_to_the_integral_in_one_dimension():
    """With one weight and 200 pairs the posterior is nearly Gaussian: Laplace's log Z is within 0.05 of
    ∫ Π p(y_i|w) N(w; 0, 1/(2λ)) dw by quadrature."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-1.5 * x))).astype(float)
    l2 = 0.5
    z, t = torch.tensor(x)[:, None], torch.tensor(y)
    w = _map(z, t, l2)

    def integrand(v):
        p = 1 / (1 + np.exp(-x * v))
        return np.exp(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) + 100.0) * np.sqrt(l2 / np.pi) * np.exp(
            -l2 * v * v)

    value, _ = integrate.quad(integrand, -10, 10, points=[float(w)], limit=200)
    assert abs(log_evidence(z, t, w, l2) - (np.log(value) - 100.0)) < 0.05


def test_prefers_the_prior_that_fits_the_data():
    """Judgments driven by one column: scaling that column up (a weaker prior on it) raises the evidence, and
    scaling up a column of noise instead lowers it."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(40, 20, generator=g)
    t = (torch.rand(40, generator=g) < torch.sigmoid(3 * z[:, 0])).double()
    l2 = 1.0

    def evidence(column, scale):
        zs = z.clone()
        zs[:, column] *= scale
        return log_evidence(zs, t, _map(zs, t, l2), l2)

    assert evidence(0, 3.0) > evidence(0, 1.0) > evidence(0, 0.3)
    assert evidence(5, 3.0) < evidence(5, 1.0)


def test_relevance_step_is_mackays_update_from_the_feature_space_hessian():
    """The factor |w_j|·√(2λ/γ_j) with γ_j = 1 − 2λ·Σ_jj, Σ the inverse of the F × F Hessian by numpy, with soft
    targets and pair weights (the package computes γ in the N × N form)."""
    g = torch.Generator().manual_seed(3)
    z, t = torch.randn(10, 25, generator=g), torch.rand(10, generator=g)
    c = torch.rand(10, generator=g) + 0.5
    w, l2 = torch.randn(25, generator=g) * 0.5, 1.5
    zz, ww, cc = (a.numpy().astype(np.float64) for a in (z, w, c))
    p = 1 / (1 + np.exp(-zz @ ww))
    covariance = np.linalg.inv(zz.T @ np.diag(cc * p * (1 - p)) @ zz + 2 * l2 * np.eye(25))
    gamma = 1 - 2 * l2 * np.diag(covariance)
    expected = np.abs(ww) * np.sqrt(2 * l2 / gamma)
    np.testing.assert_allclose(relevance_step(z, t, w, l2, c).numpy(), expected, rtol=1e-5)


def test_relevance_step_raises_the_evidence_at_a_map_fit():
    """One step from the shared prior, on judgments driven by column 0: the factor is largest on column 0, and
    scaling every column by its factor (then fitting again) raises the Laplace evidence."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(40, 20, generator=g)
    t = (torch.rand(40, generator=g) < torch.sigmoid(3 * z[:, 0])).double()
    w = _map(z, t, 1.0)
    factor = relevance_step(z, t, w, 1.0)
    assert int(factor.argmax()) == 0 and float(factor[0]) > 1.5
    scaled = z.double() * factor.double()
    assert log_evidence(scaled, t, _map(scaled, t, 1.0), 1.0) > log_evidence(z, t, w, 1.0)
