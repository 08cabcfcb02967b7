"""Membrane permeability with the geometry given: recovery, the Jacobian against the exact
adjoint gradient, the Cramér–Rao bound against the spread of fits, exchange times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spinverse
from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.errors import ConfigError, MeshError
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import bcc_grid
from spinverse.recon.noise import add_noise
from spinverse.recon.permeability import (
    MembraneModel,
    crlb,
    fit_permeability,
    membrane_groups,
    rician_fisher_factor,
)
from spinverse.recon.search import RegionSpace
from spinverse.recon.targets import Target

PROTOCOL = Protocol(2e-3, 2.0, np.array([0.0, 1000.0, 3000.0]), fibonacci_directions(8),
                    (PGSE(3_000.0, 5_000.0), PGSE(5_000.0, 40_000.0)))


@pytest.fixture(scope="module")
def setup():
    """48 tets (box ±4 µm); two compartments of 3 tets each in opposite corners."""
    grid = bcc_grid(2, lower=-4.0, upper=4.0)
    space = RegionSpace(grid)
    c = grid.tet_centroids
    regions = []
    for corner in ([-3.0, -3.0, -3.0], [3.0, 3.0, 3.0]):
        i = int(np.argmin(np.linalg.norm(c - corner, axis=1)))
        r = np.zeros(grid.n_tets, dtype=bool)
        r[[i, *space.neighbours[i][:2]]] = True
        regions.append(r)
    return grid, space, regions


def _target(grid, kappa, boundary="robin", signal=None):
    s = simulate_signal(grid, kappa, PROTOCOL, outer_boundary=boundary).signal
    return Target(s if signal is None else signal, PROTOCOL, boundary)


@pytest.mark.parametrize("kappa_true", [3e-6, 1e-4, 1e-3])
def test_noise_free_recovery_of_a_shared_kappa(setup, kappa_true):
    grid, space, regions = setup
    mem = space.faces(regions[0] | regions[1])
    k = np.full(grid.n_faces, 0.1)
    k[mem] = kappa_true
    fit = fit_permeability(grid, _target(grid, k), mem)
    assert fit.kappa.shape == (1,)
    assert abs(fit.kappa[0] / kappa_true - 1) < 1e-6
    assert fit.data_loss < 1e-18
    # τ = V / (κ A) per enclosed region, in ms.
    for r, region in enumerate(regions):
        v = grid.volumes[region].sum()
        a = grid.face_areas[space.faces(region)].sum()
        assert np.isclose(fit.exchange_time_ms[r], v / (kappa_true * a) / 1000, rtol=1e-6)


def test_one_kappa_per_region(setup):
    grid, space, regions = setup
    k = np.full(grid.n_faces, 0.1)
    k[space.faces(regions[0])] = 2e-5
    k[space.faces(regions[1])] = 3e-4
    mem = space.faces(regions[0] | regions[1])
    groups, region_group, volume, area = membrane_groups(grid, mem, per_region=True)
    assert sorted(np.unique(groups)) == [0, 1] and len(volume) == 2
    fit = fit_permeability(grid, _target(grid, k), mem, per_region=True)
    truth = np.array([2e-5 if np.any(space.faces(regions[0]) == mem[groups == g][0]) else 3e-4
                      for g in range(2)])
    assert np.allclose(fit.kappa, truth, rtol=1e-5)


def test_jacobian_matches_the_exact_adjoint_gradient(setup):
    """2 Jᵀr from the central-difference Jacobian = ∂/∂θ Σ r² from spinverse.simulate."""
    grid, space, regions = setup
    mem = space.faces(regions[0])
    k = np.full(grid.n_faces, 0.1)
    k[mem] = 5e-5
    target = _target(grid, k)
    groups = np.zeros(len(mem), dtype=np.int64)
    model = MembraneModel(grid, target, mem, groups)
    theta = np.array([-4.0])
    res = model.signal(theta) - model.normalised_target
    fd = 2 * model.jacobian(theta).T @ res
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    kt = torch.full((grid.n_faces,), 0.1, dtype=torch.float64)
    kt = kt.index_put((torch.as_tensor(mem),), 10.0 ** th[0].expand(len(mem)))
    s = spinverse.simulate(grid, kt, PROTOCOL, outer_boundary="robin")
    s0 = torch.as_tensor(target.s0)[:, None, :]
    loss = ((s.abs() / s0).reshape(-1) - torch.as_tensor(model.normalised_target)).pow(2).sum()
    loss.backward()
    assert np.allclose(fd, th.grad.numpy(), rtol=1e-6)


def test_rician_fisher_factor_limits():
    f = rician_fisher_factor(np.array([0.0, 1.0, 3.0, 10.0, 100.0]))
    assert f[0] < 1e-3
    assert np.all(np.diff(f) > 0)
    assert 0.99 < f[3] <= 1.0 + 1e-6 and f[4] == 1.0
    with pytest.raises(ConfigError, match="noise model"):
        crlb(np.ones((3, 1)), np.ones(3), np.ones(3), 50.0, "poisson")


@pytest.mark.slow
def test_crlb_matches_the_spread_of_fits_over_noise_draws(setup):
    """Rician SNR 20, 60 draws: the empirical std of log10 κ within 30 % of the CRLB and the
    bias within one std."""
    grid, space, regions = setup
    mem = space.faces(regions[0] | regions[1])
    k = np.full(grid.n_faces, 0.1)
    k[mem] = 1e-4
    clean = _target(grid, k)
    fits = []
    for seed in range(60):
        noisy = Target(add_noise(clean.signal, snr=20, kind="rician", seed=seed), PROTOCOL,
                       "robin")
        fits.append(fit_permeability(grid, noisy, mem).log10_kappa[0])
    bound = fit_permeability(grid, clean, mem, snr=20).log10_kappa_std[0]
    spread = np.std(fits, ddof=1)
    assert abs(spread / bound - 1) < 0.3
    assert abs(np.mean(fits) + 4.0) < spread


def test_bad_membranes_and_targets(setup):
    grid, space, regions = setup
    k = np.full(grid.n_faces, 0.1)
    target = _target(grid, k)
    with pytest.raises(MeshError, match="no faces"):
        fit_permeability(grid, target, np.array([], dtype=np.int64))
    with pytest.raises(MeshError, match="must lie in"):
        fit_permeability(grid, target, np.array([grid.n_faces]))
    no_b0 = Target(target.signal[:, 1:], PROTOCOL.replace(bvalues=PROTOCOL.bvalues[1:]),
                   "robin")
    with pytest.raises(ConfigError, match="b = 0"):
        fit_permeability(grid, no_b0, space.faces(regions[0]))
