"""forward.simulate_signal: the solver registry and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.errors import SolverError
from spinverse.forward import SOLVERS, SimulationResult, register_solver, simulate_signal
from spinverse.mesh.generators import box_grid


@pytest.fixture
def setup():
    grid = box_grid(np.linspace(0, 6, 3), np.linspace(0, 4, 3), [0, 3])
    prot = Protocol(2e-3, 1.0, np.array([0.0, 2000.0]), np.eye(3), (PGSE(4000.0, 9000.0),))
    return grid, np.full(grid.n_faces, np.inf), prot


def test_a_registered_solver_is_called_with_checked_kappa(setup, monkeypatch):
    grid, kappa, prot = setup
    monkeypatch.setitem(SOLVERS, "mf", SOLVERS["mf"])  # restore the registry afterwards
    seen = {}

    def halved(grid, kappa, protocol, *, outer_boundary, scale=0.5):
        seen.update(kappa=kappa, scale=scale)
        ref = SOLVERS["mf"](grid, kappa, protocol, outer_boundary=outer_boundary)
        return SimulationResult(ref.signal * scale, "halved", outer_boundary, ref.n_dofs)

    register_solver("halved", halved)
    try:
        res = simulate_signal(grid, kappa, prot, solver="halved", scale=0.25)
        ref = simulate_signal(grid, kappa, prot)
        np.testing.assert_allclose(res.signal, 0.25 * ref.signal, rtol=1e-13)
        assert res.solver == "halved" and seen["scale"] == 0.25 and res.seconds > 0
        with pytest.raises(ValueError, match="already registered"):
            register_solver("halved", lambda *a, **k: None)  # type: ignore[arg-type]
    finally:
        SOLVERS.pop("halved", None)


def test_unknown_solver_and_options_fail_clearly(setup):
    grid, kappa, prot = setup
    with pytest.raises(SolverError, match="mf"):
        simulate_signal(grid, kappa, prot, solver="krylov")
    with pytest.raises(SolverError, match="dt_us"):
        simulate_signal(grid, kappa, prot, solver="mf", dt_us=5.0)


def test_mf_and_timestep_agree(setup):
    """The engine against its independent cross-check (Crank–Nicolson + Richardson)."""
    grid, _, prot = setup
    kappa = np.full(grid.n_faces, 1e-3)
    mf = simulate_signal(grid, kappa, prot, outer_boundary="robin").signal
    ts = simulate_signal(grid, kappa, prot, outer_boundary="robin", solver="timestep",
                         dt_us=20.0).signal
    np.testing.assert_allclose(np.abs(ts), np.abs(mf), rtol=2e-4)
