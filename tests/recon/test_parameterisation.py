"""The log-sigmoid κ parameterisation (κ in µm/µs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.recon.parameterisation import LogSigmoidKappa


def t64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def test_defaults_and_start_value():
    par = LogSigmoidKappa()
    assert (par.a, par.b, par.temperature) == (-5.0, -1.0, 1.0)
    assert par.start_kappa == pytest.approx(1e-3, rel=1e-15)
    v0 = par.start_logits(5)
    assert v0.dtype == torch.float64 and v0.shape == (5,)
    assert torch.equal(v0, torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(par.kappa(v0), t64([1e-3] * 5), rtol=1e-14)
    assert torch.allclose(par.log10_kappa(v0), t64([-3.0] * 5), atol=1e-15)
    # a custom start value
    custom = LogSigmoidKappa(start_kappa=0.05)
    assert float(custom.kappa(custom.start_logits(1))[0]) == pytest.approx(0.05, rel=1e-12)
    # other bounds: the default start is the log-midpoint, v = 0
    other = LogSigmoidKappa(kappa_min=1e-4, kappa_max=1.0)
    assert other.start_kappa == pytest.approx(1e-2) and float(other.start_logits(1)[0]) == 0


def test_formula():
    par = LogSigmoidKappa(temperature=2.0)
    v = t64([-3.0, 0.5, 4.0])
    expect = 10 ** (-5 + 4 / (1 + np.exp(-v.numpy() / 2.0)))
    np.testing.assert_allclose(par.kappa(v).numpy(), expect, rtol=1e-13)
    assert par(v).dtype == torch.float64


@settings(max_examples=60, deadline=None)
@given(
    log_k=st.floats(-4.99, -1.01),
    temperature=st.floats(0.1, 5.0),
    v_over_tau=st.floats(-15.0, 15.0),
)
def test_round_trip(log_k, temperature, v_over_tau):
    par = LogSigmoidKappa(temperature=temperature)
    k = t64([10.0**log_k])
    assert torch.allclose(par.kappa(par.logits_for_kappa(k)), k, rtol=1e-9)
    # and logits -> κ -> logits, away from the saturated tails
    v = t64([temperature * v_over_tau])
    assert torch.allclose(par.logits_for_kappa(par.kappa(v)), v, rtol=1e-6, atol=1e-6)


def test_bounds_and_clipping():
    par = LogSigmoidKappa()
    extreme = par.kappa(t64([-1e4, -50.0, 0.0, 50.0, 1e4]))
    assert torch.all(extreme >= 1e-5 * (1 - 1e-12)) and torch.all(extreme <= 0.1 * (1 + 1e-12))
    assert torch.all(torch.diff(extreme) >= 0)  # monotone
    # out-of-range κ (and κ = 0) give finite logits that map back to the bounds
    v = par.logits_for_kappa(np.array([0.0, 1e-9, 1e-5, 0.1, 3.0, np.inf]))
    assert torch.all(torch.isfinite(v))
    k = par.kappa(v)
    np.testing.assert_allclose(k.numpy(), [1e-5] * 3 + [0.1] * 3, rtol=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        par.logits_for_kappa(t64([float("nan")]))


def test_gradient_is_analytic_and_passes_gradcheck():
    par = LogSigmoidKappa(temperature=0.7)
    v = t64([-2.0, 0.0, 1.5]).requires_grad_(True)
    par.kappa(v).sum().backward()
    s = torch.sigmoid(v.detach() / 0.7)
    expect = par.kappa(v.detach()) * math.log(10) * 4.0 * s * (1 - s) / 0.7
    assert torch.allclose(v.grad, expect, rtol=1e-12)
    assert torch.autograd.gradcheck(par.log10_kappa, (t64([-1.0, 0.3, 2.0]).requires_grad_(),))


@pytest.mark.parametrize("values", [1e-4, np.array([1e-4, 1.0, 1.0, 0.5])])
def test_fixed_faces_hold_their_value_and_get_no_gradient(values):
    mask = torch.tensor([True, False, False, True])
    par = LogSigmoidKappa(fixed_mask=mask, fixed_values=values)
    v = t64([3.0, -1.0, 2.0, -4.0]).requires_grad_(True)
    k = par.kappa(v)
    fixed_expect = 1e-4 if np.ndim(values) == 0 else 0.5
    assert float(k[0].detach()) == pytest.approx(1e-4, rel=1e-12)
    assert float(k[3].detach()) == pytest.approx(fixed_expect, rel=1e-12)
    (k * t64([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert v.grad[0] == 0 and v.grad[3] == 0
    assert torch.all(v.grad[1:3] != 0) and torch.all(torch.isfinite(v.grad))
    # free faces behave as without the mask
    free = LogSigmoidKappa().kappa(v.detach())
    assert torch.equal(k.detach()[1:3], free[1:3])


def test_fixed_faces_infinite_logits_give_zero_not_nan_gradient():
    par = LogSigmoidKappa(fixed_mask=np.array([True, False]), fixed_values=1e-5)
    v = t64([float("inf"), 0.0]).requires_grad_(True)
    par.log10_kappa(v).sum().backward()
    assert v.grad[0] == 0 and torch.isfinite(v.grad).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kappa_min": 1.0, "kappa_max": 0.1},
        {"kappa_min": 0.0},
        {"kappa_max": float("inf")},
        {"temperature": 0.0},
        {"start_kappa": 0.5},
        {"start_kappa": 1e-5},
        {"fixed_mask": np.array([True, False])},
        {"fixed_values": 1e-3},
        {"fixed_mask": np.array([1, 0]), "fixed_values": 1e-3},
        {"fixed_mask": np.array([True, False]), "fixed_values": 0.0},
        {"fixed_mask": np.array([True, False]), "fixed_values": np.ones(3)},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        LogSigmoidKappa(**kwargs)


def test_fixed_mask_length_must_match():
    par = LogSigmoidKappa(fixed_mask=np.array([True, False]), fixed_values=1e-3)
    with pytest.raises(ValueError, match="expected 2"):
        par.kappa(torch.zeros(3, dtype=torch.float64))
