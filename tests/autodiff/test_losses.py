"""Loss building blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinverse.autodiff.losses import b0_magnitude, normalised_magnitude, signal_loss


def _signals(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(3, 4, 5, dtype=torch.complex128, generator=g) + 3.0
    t = torch.randn(3, 4, 5, dtype=torch.complex128, generator=g) + 3.0
    return s, t


def test_normalised_magnitude_uses_given_s0() -> None:
    s, t = _signals()
    s0 = b0_magnitude(t)
    assert s0.shape == (3, 5)
    e = normalised_magnitude(s, s0)
    np.testing.assert_allclose(e.numpy(), (s.abs() / t[:, :1, :].abs()).numpy(), rtol=1e-15)


def test_signal_loss_weighted_mean_and_reductions() -> None:
    s, t = _signals()
    s0 = b0_magnitude(t)
    r2 = ((s.abs() - t.abs()) / s0[:, None, :]) ** 2
    assert float(signal_loss(s, t, s0)) == pytest.approx(100.0 * float(r2.mean()), rel=1e-14)
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)[:, None, None]  # per sequence
    ref = 100.0 * float((w * r2).sum() / (w.expand_as(r2)).sum())
    assert float(signal_loss(s, t, s0, weights=w)) == pytest.approx(ref, rel=1e-14)
    wb = torch.arange(1.0, 5.0, dtype=torch.float64)[None, :, None]  # per b-value
    assert float(signal_loss(s, t, s0, weights=wb, scale=1.0, reduction="sum")) == pytest.approx(
        float((wb * r2).sum()), rel=1e-14)
    assert signal_loss(s, t, s0, reduction="none").shape == s.shape
    with pytest.raises(ValueError):
        signal_loss(s, t, s0, reduction="max")


def test_signal_loss_gradient() -> None:
    s, t = _signals(1)
    s = s.clone().requires_grad_(True)
    s0 = b0_magnitude(t)
    assert torch.autograd.gradcheck(lambda x: signal_loss(x, t, s0), (s,))
