"""Reverse mode of the full-space propagator against central finite differences.

The spectral bound ρ is held fixed in the differences (as the plan is in the reverse
mode), so both sides differentiate the same polynomial (units: κ µm/µs, S µm³)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, DoublePGSE
from spinverse.autodiff import fullspace as afs
from spinverse.autodiff import simulate
from spinverse.autodiff.fullspace import fullspace_backward
from spinverse.fem.assembly import FEModel
from spinverse.mesh.benchmark import benchmark_grid, case_kappa
from spinverse.mesh.generators import bcc_grid
from spinverse.solvers.fullspace import fullspace_signal
from spinverse.solvers.spectrum import block_mass_inverse_factor


def _fd_check(grid, kappa, prot, *, eps: float = 1e-6, seed: int = 0) -> tuple[float, dict]:
    fe = FEModel.build(grid, diffusivity=prot.diffusivity, outer_boundary="robin")
    linv = block_mass_inverse_factor(fe)
    s, state = fullspace_signal(fe, linv, kappa, prot, keep=True)
    rng = np.random.default_rng(seed)
    sbar = rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)
    grad, info = fullspace_backward(state, sbar)
    d = rng.standard_normal(grid.n_faces) * kappa
    rho = state.model.rho
    sp_, _ = fullspace_signal(fe, linv, kappa + eps * d, prot, rho=rho)
    sm_, _ = fullspace_signal(fe, linv, kappa - eps * d, prot, rho=rho)
    fd = float(np.real(np.sum(np.conj(sbar) * (sp_ - sm_))) / (2 * eps))
    return abs(fd - grad @ d) / abs(fd), info


PROT = Protocol(2e-3, 2.0, np.array([0.0, 1000.0, 5000.0]), fibonacci_directions(6),
                (PGSE(10_000.0, 60_000.0), PGSE(5_000.0, 6_000.0),
                 DoublePGSE(5_000.0, 10_000.0, 0.0)))


@pytest.mark.parametrize("state", ["start", "truth"])
def test_fd_benchmark_grid(state: str) -> None:
    """BCC 4 (the benchmark grid) at the published start and a ground truth."""
    grid = benchmark_grid()
    kappa = np.full(grid.n_faces, 1e-3) if state == "start" else case_kappa("018")
    err, info = _fd_check(grid, kappa, PROT)
    assert err <= 1e-5
    assert info["drift"] <= 1e-9


def test_fd_mixed_state_small_grid() -> None:
    grid = bcc_grid(2)
    rng = np.random.default_rng(5)
    kappa = 10.0 ** rng.uniform(-5, -1, grid.n_faces)
    err, _ = _fd_check(grid, kappa, PROT, seed=1)
    assert err <= 1e-5


def test_stored_and_recurrence_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real expansions recompute their vectors backwards; forcing the stored path (the
    one complex expansions use) gives the same gradient."""
    grid = bcc_grid(2)
    kappa = np.full(grid.n_faces, 1e-3)
    fe = FEModel.build(grid, diffusivity=2e-3, outer_boundary="robin")
    linv = block_mass_inverse_factor(fe)
    s, state = fullspace_signal(fe, linv, kappa, PROT, keep=True)
    sbar = np.random.default_rng(2).standard_normal(s.shape) + 0j
    g1, _ = fullspace_backward(state, sbar)
    _, state = fullspace_signal(fe, linv, kappa, PROT, keep=True)
    monkeypatch.setattr(afs, "MAX_DRIFT", -1.0)
    monkeypatch.setattr(afs, "TAPE_BYTES", 4 * 8 * 4 * grid.n_tets * 40)  # several blocks
    g2, _ = fullspace_backward(state, sbar)
    assert np.abs(g1 - g2).max() <= 1e-10 * np.abs(g1).max()


def test_torch_autograd_through_simulate() -> None:
    grid = bcc_grid(2)
    prot = Protocol(2e-3, 2.0, np.array([0.0, 3000.0]), fibonacci_directions(3),
                    (PGSE(10_000.0, 30_000.0),))
    kappa = torch.full((grid.n_faces,), 1e-3, dtype=torch.float64, requires_grad=True)
    s = simulate(grid, kappa, prot, outer_boundary="robin", propagator="fullspace")
    loss = (s.abs() ** 2).sum()
    loss.backward()
    assert kappa.grad is not None and torch.isfinite(kappa.grad).all()
    assert float(kappa.grad.abs().max()) > 0
