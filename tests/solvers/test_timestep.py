"""Crank–Nicolson time stepping cross-checks the matrix formalism on the same mesh."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, CosOGSE, DoublePGSE
from spinverse.fem.assembly import build_model
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import uniform_box_grid
from spinverse.solvers.mf import reduce_model, sequence_signal
from spinverse.solvers.timestep import timestep_sequence_signal

D = 2e-3


@pytest.fixture(scope="module")
def setup():
    g = uniform_box_grid([0, 0, 0], [8.0, 4.0, 4.0], [4, 2, 2])
    rng = np.random.default_rng(0)
    kappa = 10 ** rng.uniform(-5, -1, g.n_faces)
    fe = build_model(g, kappa, diffusivity=D, outer_boundary="robin")
    # ℓ small enough that every mode is kept: MF is then the exact semi-discrete solution
    reduced = reduce_model(fe, kappa, 1e3)
    assert reduced.n_modes == fe.n_dofs
    return fe, kappa, reduced


DIRS = np.array([[1.0, 0.0, 0.0], [0.48, 0.6, 0.64]])


@pytest.mark.parametrize("seq", [PGSE(3000.0, 7000.0), DoublePGSE(2000.0, 4000.0, 1000.0)])
def test_timestep_agrees_with_matrix_formalism(setup, seq):
    fe, kappa, reduced = setup
    q = seq.q_from_b(np.array([0.0, 1000.0, 3000.0]))
    s_mf = sequence_signal(reduced, seq, q, DIRS)
    s_ts = timestep_sequence_signal(fe, kappa, seq, q, DIRS, dt_us=50.0)
    scale = np.abs(s_mf[0]).max()
    assert np.abs(s_ts - s_mf).max() < 1e-4 * scale


def test_cosine_ogse_converges_to_timestep(setup):
    """Smooth waveforms: MF samples f piecewise-constantly, time stepping at midpoints;
    both converge to the same signal."""
    fe, kappa, reduced = setup
    seq = CosOGSE(4000.0, 5000.0, 2)
    q = seq.q_from_b(np.array([0.0, 1000.0]))
    s_mf = sequence_signal(reduced, seq, q, DIRS)
    s_ts = timestep_sequence_signal(fe, kappa, seq, q, DIRS, dt_us=10.0)
    assert np.abs(s_ts - s_mf).max() < 2e-4 * np.abs(s_mf[0]).max()


def test_timestep_richardson_is_higher_order(setup):
    fe, kappa, reduced = setup
    seq = PGSE(3000.0, 7000.0)
    q = seq.q_from_b(np.array([3000.0]))
    ref = sequence_signal(reduced, seq, q, DIRS[:1])
    errs = [np.abs(timestep_sequence_signal(fe, kappa, seq, q, DIRS[:1], dt_us=dt,
                                            richardson=False) - ref).max()
            for dt in (50.0, 25.0)]
    assert 3.5 < errs[0] / errs[1] < 4.5  # Crank–Nicolson is second order


def test_forward_solvers_agree_end_to_end(setup):
    fe, kappa, _ = setup
    p = Protocol(D, 0.05, np.array([0.0, 2000.0]), DIRS, (PGSE(3000.0, 7000.0),))
    mf = simulate_signal(fe.grid, kappa, p, outer_boundary="robin", solver="mf")
    ts = simulate_signal(fe.grid, kappa, p, outer_boundary="robin", solver="timestep",
                         dt_us=50.0)
    assert np.abs(mf.signal - ts.signal).max() < 1e-4 * np.abs(mf.signal).max()
