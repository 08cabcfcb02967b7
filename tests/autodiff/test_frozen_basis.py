"""The frozen (Ritz) eigenbasis: ``simulate(..., basis=Φ)`` is the FE model restricted to
span(Φ), and its gradient is exact for that restricted model (κ in µm/µs, S in µm³)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinverse.autodiff import SimulationCache, simulate
from spinverse.errors import SolverError


def _loss(grid, kappa, protocol, basis=None, cache=None):
    k = torch.tensor(kappa, requires_grad=True)
    s = simulate(grid, k, protocol, cache=cache, basis=basis, outer_boundary="robin")
    loss = (s.abs() ** 2).sum()
    loss.backward()
    return float(loss.detach()), k.grad.numpy().copy()


def test_frozen_basis_at_its_own_state_is_the_exact_model(small_grid, small_protocol,
                                                          small_kappa):
    cache = SimulationCache()
    exact, _ = _loss(small_grid, small_kappa, small_protocol, cache=cache)
    basis = cache.vectors.copy()
    frozen, _ = _loss(small_grid, small_kappa, small_protocol, basis=basis)
    # same subspace, same Ritz values: the signals agree to round-off
    assert frozen == pytest.approx(exact, rel=1e-10)


def test_frozen_basis_gradient_matches_finite_differences(small_grid, small_protocol,
                                                          small_kappa):
    cache = SimulationCache()
    _loss(small_grid, small_kappa, small_protocol, cache=cache)
    basis = cache.vectors.copy()
    rng = np.random.default_rng(3)
    moved = small_kappa * np.exp(0.3 * rng.standard_normal(small_kappa.size))
    _, grad = _loss(small_grid, moved, small_protocol, basis=basis)
    # central differences of the *restricted* model (the basis stays frozen)
    direction = rng.standard_normal(moved.size) * moved
    h = 1e-6
    lp, _ = _loss(small_grid, moved + h * direction, small_protocol, basis=basis)
    lm, _ = _loss(small_grid, moved - h * direction, small_protocol, basis=basis)
    fd = (lp - lm) / (2 * h)
    assert grad @ direction == pytest.approx(fd, rel=1e-6)


def test_frozen_basis_moves_away_from_the_exact_model(small_grid, small_protocol,
                                                      small_kappa):
    """Away from the state where it was computed the restricted model differs (it is an
    approximation refreshed every few iterations), while a fresh solve is exact."""
    cache = SimulationCache()
    _loss(small_grid, small_kappa, small_protocol, cache=cache)
    basis = cache.vectors.copy()
    rng = np.random.default_rng(5)
    moved = small_kappa * np.exp(rng.standard_normal(small_kappa.size))
    frozen, _ = _loss(small_grid, moved, small_protocol, basis=basis)
    exact, _ = _loss(small_grid, moved, small_protocol)
    assert abs(frozen - exact) > 1e-8 * abs(exact)


def test_frozen_basis_shape_is_checked(small_grid, small_protocol, small_kappa):
    with pytest.raises(SolverError, match="frozen basis"):
        _loss(small_grid, small_kappa, small_protocol, basis=np.ones((3, 2)))
