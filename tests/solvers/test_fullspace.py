"""Full-space propagator: the same discrete model as the eigen path with every mode kept.

The eigen path is itself checked against exact signals (``test_mf.py``); with λ_max above
the whole spectrum it is the untruncated FE model, which the full-space Chebyshev
propagation must reproduce to its tail bound (units: µm, µs, κ µm/µs).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, CosOGSE, DoublePGSE
from spinverse.errors import SolverError
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import bcc_grid
from spinverse.solvers import mf
from spinverse.solvers.mf import SimulationCache, choose_propagator, forward

GRID = bcc_grid(2)
SEQS = (PGSE(10_000.0, 30_000.0), PGSE(5_000.0, 6_000.0), DoublePGSE(5_000.0, 10_000.0, 0.0),
        CosOGSE(10_000.0, 12_000.0, 2))


def protocol(length_scale: float) -> Protocol:
    return Protocol(2e-3, length_scale, np.array([0.0, 1000.0, 4000.0]),
                    fibonacci_directions(5), SEQS)


def all_modes(kappa: np.ndarray, outer: str) -> np.ndarray:
    """The eigen path with λ_max above the whole spectrum (every mode kept)."""
    s, state = forward(GRID, kappa, protocol(0.01), outer_boundary=outer,
                       eig_method="dense", propagator="eigen")
    assert state.info.n_modes == 4 * GRID.n_tets
    return s


@pytest.mark.parametrize("outer", ["robin", "reflecting"])
@pytest.mark.parametrize("state", ["uniform", "membrane"])
def test_matches_eigen_with_every_mode(outer: str, state: str) -> None:
    rng = np.random.default_rng(3)
    if state == "uniform":
        kappa = np.full(GRID.n_faces, 1e-3)
    else:
        kappa = np.where(rng.random(GRID.n_faces) < 0.3, 1e-5, 0.1)
    ref = all_modes(kappa, outer)
    s, st_ = forward(GRID, kappa, protocol(2.0), outer_boundary=outer, propagator="fullspace")
    assert st_.info.propagator == "fullspace"
    assert np.abs(s - ref).max() <= 1e-8 * np.abs(ref).max()


@settings(max_examples=4, deadline=None)
@given(st.lists(st.floats(-5.0, -1.0), min_size=GRID.n_faces, max_size=GRID.n_faces))
def test_random_states_match_and_pgse_is_real_positive(logk: list[float]) -> None:
    kappa = 10.0 ** np.asarray(logk)
    prot = Protocol(2e-3, 2.0, np.array([0.0, 4000.0]), fibonacci_directions(3), SEQS[:3])
    ref, _ = forward(GRID, kappa, Protocol(2e-3, 0.01, prot.bvalues, prot.directions,
                                           prot.sequences),
                     outer_boundary="robin", eig_method="dense", propagator="eigen")
    s, _ = forward(GRID, kappa, prot, outer_boundary="robin", propagator="fullspace")
    assert np.abs(s - ref).max() <= 1e-8 * np.abs(ref).max()
    pgse = s[:2]
    assert np.all(pgse.real > 0) and np.all(pgse.imag == 0)


def test_truncation_is_the_difference_to_the_matrix_formalism() -> None:
    """On the benchmark grid at κ = 1e-3 the ℓ = 2 µm cut keeps 911 of 2 304 modes: the
    full-space result is far closer to the every-mode model than the truncated one."""
    grid = bcc_grid(4)
    kappa = np.full(grid.n_faces, 1e-3)

    def prot(ell: float) -> Protocol:
        return Protocol(2e-3, ell, np.array([0.0, 5000.0]), fibonacci_directions(3),
                        (PGSE(10_000.0, 60_000.0),))

    ref, _ = forward(grid, kappa, prot(0.01), outer_boundary="robin", eig_method="dense",
                     propagator="eigen")
    full, _ = forward(grid, kappa, prot(2.0), outer_boundary="robin", propagator="fullspace")
    cut, st_ = forward(grid, kappa, prot(2.0), outer_boundary="robin", propagator="eigen")
    assert st_.info.n_modes == 911
    scale = np.abs(ref).max()
    assert np.abs(full - ref).max() <= 1e-9 * scale
    assert np.abs(cut - ref).max() >= 1e-6 * scale  # 3.9e-6 of S(b = 0)


def test_simulate_signal_option_and_errors() -> None:
    kappa = np.full(GRID.n_faces, 1e-3)
    res = simulate_signal(GRID, kappa, protocol(2.0), outer_boundary="robin",
                          propagator="fullspace")
    assert res.n_modes is None and res.info["propagator"] == "fullspace"
    assert res.info["rho"] > 0
    with pytest.raises(SolverError, match="unknown propagator"):
        forward(GRID, kappa, protocol(2.0), propagator="krylov")
    cont = kappa.copy()
    cont[~GRID.is_outer] = np.inf
    with pytest.raises(SolverError, match="every face finite"):
        forward(GRID, cont, protocol(2.0), propagator="fullspace")
    with pytest.raises(SolverError, match="frozen basis"):
        forward(GRID, kappa, protocol(2.0), propagator="fullspace",
                basis=np.eye(4 * GRID.n_tets)[:, :8])


def test_auto_cost_model_and_pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many modes below λ_max (uniform κ = 1e-3) → full space; a membrane state with
    few modes → eigen; a cache keeps its first choice."""
    monkeypatch.setattr(mf, "AUTO_MIN_DOFS", 0)
    grid = bcc_grid(4)
    prot = Protocol(2e-3, 2.0, np.array([0.0, 3000.0]), fibonacci_directions(4), SEQS[:1])
    from spinverse.fem.assembly import FEModel
    from spinverse.solvers.spectrum import block_mass_inverse_factor

    fe = FEModel.build(grid, diffusivity=2e-3, outer_boundary="robin")
    linv = block_mass_inverse_factor(fe)
    uniform = np.full(grid.n_faces, 1e-3)
    choice, model, est = choose_propagator(fe, linv, uniform, fe.operator(uniform), prot)
    assert choice == "fullspace" and model is not None
    assert est["modes_below"] > 500
    membrane = np.full(grid.n_faces, 0.1)
    membrane[np.random.default_rng(0).random(grid.n_faces) < 0.05] = 1e-5
    choice, _, est = choose_propagator(fe, linv, membrane, fe.operator(membrane), prot)
    assert choice == "eigen" and est["modes_below"] < 200
    cache = SimulationCache()
    forward(grid, uniform, prot, outer_boundary="robin", cache=cache)
    assert cache.propagator == "fullspace"
    forward(grid, membrane, prot, outer_boundary="robin", cache=cache)
    assert cache.last is not None and cache.last.propagator == "fullspace"
