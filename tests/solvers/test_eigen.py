"""Eigen-solver: mode counts by inertia, gap-respecting truncation, dense vs sparse."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as la

from spinverse.errors import SolverError
from spinverse.fem.assembly import build_model
from spinverse.mesh.benchmark import benchmark_grid, case_kappa, resolve_case
from spinverse.mesh.generators import uniform_box_grid
from spinverse.solvers.spectrum import count_below, solve_spectrum

D = 2e-3


@pytest.fixture(scope="module")
def benchmark_017():
    g = benchmark_grid()
    kappa = case_kappa(resolve_case("017"))
    fe = build_model(g, kappa, diffusivity=D, outer_boundary="robin")
    return fe, kappa


def test_count_below_matches_dense(benchmark_017):
    fe, kappa = benchmark_017
    a = fe.operator(kappa)
    w = la.eigh(a.toarray(), fe.mass.toarray(), eigvals_only=True)
    for lam in (1e-4, 2e-3, D * np.pi**2 / 4, 2e-2):
        assert count_below(a, fe.mass, lam) == np.sum(w < lam)


def test_dense_and_sparse_agree(benchmark_017):
    fe, kappa = benchmark_017
    a = fe.operator(kappa)
    lmax = D * np.pi**2 / 4
    dense = solve_spectrum(a, fe.mass, lmax, method="dense")
    sparse = solve_spectrum(a, fe.mass, lmax, method="sparse")
    assert dense.n_modes == sparse.n_modes == 85
    np.testing.assert_allclose(sparse.values, dense.values, rtol=1e-9, atol=1e-14)
    # same subspace: projector difference
    p = dense.vectors.T @ (fe.mass @ sparse.vectors)
    np.testing.assert_allclose(np.abs(la.svdvals(p)), 1.0, atol=1e-8)
    # M-orthonormal
    g = sparse.vectors.T @ (fe.mass @ sparse.vectors)
    np.testing.assert_allclose(g, np.eye(85), atol=1e-10)


def test_truncation_never_splits_a_degenerate_cluster():
    """A cube with uniform κ has exactly repeated eigenvalues (cubic symmetry). Put λ_max
    right on the first member of a cluster: the whole cluster must be kept."""
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 2)
    kap = np.full(g.n_faces, 0.01)
    fe = build_model(g, kap, diffusivity=D)
    a = fe.operator(kap)
    w = la.eigh(a.toarray(), fe.mass.toarray(), eigvals_only=True)
    gaps = np.diff(w) <= 1e-9 * w[1:]
    i = int(np.flatnonzero(gaps & (w[:-1] > 1e-9))[0])  # w[i] == w[i+1]
    basis = solve_spectrum(a, fe.mass, w[i] * (1 + 1e-12), method="dense")
    assert basis.n_modes >= i + 2
    assert basis.next_value > basis.values[-1] * (1 + 1e-6)
    assert basis.gap > 1e-6


def test_bad_lambda_max():
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 1)
    fe = build_model(g, np.full(g.n_faces, 0.1), diffusivity=D)
    with pytest.raises(SolverError):
        solve_spectrum(fe.stiffness, fe.mass, -1.0)
    with pytest.raises(SolverError):
        solve_spectrum(fe.stiffness, fe.mass, 1.0, method="magic")


def test_uniform_start_state_of_the_benchmark_grid():
    """κ = 1e-3 on every face of the benchmark grid: the spec's 911 modes below the
    ℓ = 2 µm cut-off. The symmetric grid's clusters of repeated eigenvalues once made
    LAPACK's MRRR driver fail here with one BLAS thread, as in sweep workers (the solver
    then falls back to the full spectrum)."""
    from threadpoolctl import threadpool_limits

    g = benchmark_grid()
    kap = np.full(g.n_faces, 1e-3)
    fe = build_model(g, kap, diffusivity=D, outer_boundary="robin")
    a = fe.operator(kap)
    lmax = D * np.pi**2 / 4
    with threadpool_limits(limits=1):
        basis = solve_spectrum(a, fe.mass, lmax, method="dense")
    assert basis.n_modes == 911 == count_below(a, fe.mass, lmax)
    assert basis.next_value > lmax
    gram = basis.vectors.T @ (fe.mass @ basis.vectors)
    np.testing.assert_allclose(gram, np.eye(911), atol=1e-9)
