"""FE assembly of the per-face-permeability model: exact identities of the operators."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as la
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.autodiff.vjp import FluxBlocks
from spinverse.errors import PermeabilityError
from spinverse.fem.assembly import FEModel, build_model, check_kappa
from spinverse.mesh.benchmark import benchmark_grid
from spinverse.mesh.generators import box_grid, uniform_box_grid

D = 2e-3


@pytest.fixture(scope="module")
def grid():
    return uniform_box_grid([0, 0, 0], [3.0, 2.0, 4.0], [3, 2, 2])


def test_mass_integrates_volume_and_moments(grid):
    fe = build_model(grid, np.full(grid.n_faces, 1e-3), diffusivity=D)
    ones = np.ones(fe.n_dofs)
    assert ones @ fe.mass @ ones == pytest.approx(24.0, rel=1e-13)
    # ∫ x_d = V · centre of the box
    centre = [1.5, 1.0, 2.0]
    for d in range(3):
        assert ones @ fe.moments[d] @ ones == pytest.approx(24.0 * centre[d], rel=1e-13)


def test_first_moment_of_linear_function(grid):
    """∫ x_d x_e = exact for the box [0,a]×[0,b]×[0,c] (P1 interpolates x exactly)."""
    fe = build_model(grid, np.full(grid.n_faces, np.inf), diffusivity=D)
    x = fe.dof_points
    # ∫ x² over [0,3]: 9, × 2 × 4 → 72 ; ∫ x over [0,3] 4.5 then ∫ y over [0,2] 2 → x y: 4.5*2*4=36
    assert x[:, 0] @ (fe.moments[0] @ np.ones(fe.n_dofs)) == pytest.approx(72.0, rel=1e-12)
    assert x[:, 1] @ (fe.moments[0] @ np.ones(fe.n_dofs)) == pytest.approx(36.0, rel=1e-12)


def test_stiffness_kernel_and_energy(grid):
    fe = build_model(grid, np.full(grid.n_faces, 0.01), diffusivity=D)
    ones = np.ones(fe.n_dofs)
    assert np.abs(fe.stiffness @ ones).max() < 1e-15
    x = fe.dof_points[:, 0]
    # D ∫ |∇x|² = D V, and the flux of a continuous function vanishes
    assert x @ fe.stiffness @ x == pytest.approx(D * 24.0, rel=1e-12)
    q = fe.flux(np.full(grid.n_faces, 0.37))
    assert np.abs(q @ x).max() < 1e-12


def test_robin_flux_of_constant_is_kappa_times_area(grid):
    kappa = np.linspace(0.01, 0.2, grid.n_faces)
    fe = build_model(grid, kappa, diffusivity=D, outer_boundary="robin")
    ones = np.ones(fe.n_dofs)
    expected = np.sum(kappa[grid.is_outer] * grid.face_areas[grid.is_outer])
    assert ones @ fe.flux(kappa) @ ones == pytest.approx(expected, rel=1e-12)


def test_infinite_kappa_merges_nodes_to_vertices(grid):
    fe = build_model(grid, np.full(grid.n_faces, np.inf), diffusivity=D)
    assert fe.n_dofs == grid.n_points
    fe_dg = build_model(grid, np.full(grid.n_faces, 1.0), diffusivity=D)
    assert fe_dg.n_dofs == 4 * grid.n_tets


def test_benchmark_continuous_dofs_are_used_vertices():
    g = benchmark_grid()
    fe = build_model(g, np.full(g.n_faces, np.inf), diffusivity=D)
    assert fe.n_dofs == len(np.unique(g.tets))  # the 8 box corners belong to no tet


def test_zero_kappa_decouples_every_tet(grid):
    fe = build_model(grid, np.zeros(grid.n_faces), diffusivity=D)
    a = fe.operator(np.zeros(grid.n_faces)).toarray()
    w = la.eigh(a, fe.mass.toarray(), eigvals_only=True)
    assert np.sum(np.abs(w) < 1e-12) == grid.n_tets


def test_large_kappa_converges_to_continuous(grid):
    m_inf = build_model(grid, np.full(grid.n_faces, np.inf), diffusivity=D)
    w_inf = la.eigh(m_inf.stiffness.toarray(), m_inf.mass.toarray(), eigvals_only=True)[:10]
    errs = []
    for k in (1.0, 100.0):
        kap = np.full(grid.n_faces, k)
        m = build_model(grid, kap, diffusivity=D)
        w = la.eigh(m.operator(kap).toarray(), m.mass.toarray(), eigvals_only=True)[:10]
        errs.append(np.abs(w - w_inf).max())
    assert errs[1] < errs[0] / 50


def test_partial_merge_keeps_membrane_plane():
    g = box_grid(np.linspace(0, 2, 5), [0, 1], [0, 1])
    plane = np.all(np.isclose(g.points[g.faces][:, :, 0], 1.0), axis=1)
    kap = np.full(g.n_faces, np.inf)
    kap[plane] = 0.0
    fe = build_model(g, kap, diffusivity=D)
    # the plane's vertices are doubled, everything else is shared
    n_plane_vertices = np.sum(np.isclose(g.points[:, 0], 1.0))
    assert fe.n_dofs == g.n_points + n_plane_vertices
    w = la.eigh(fe.operator(kap).toarray(), fe.mass.toarray(), eigvals_only=True)
    assert np.sum(np.abs(w) < 1e-12) == 2  # two sealed compartments


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), robin=st.booleans())
def test_flux_is_linear_and_vjp_exact(seed, robin):
    rng = np.random.default_rng(seed)
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 2)
    boundary = "robin" if robin else "reflecting"
    fe = FEModel.build(g, diffusivity=D, outer_boundary=boundary)
    k1, k2 = rng.uniform(0, 1, (2, g.n_faces))
    q1, q2, q12 = fe.flux(k1), fe.flux(k2), fe.flux(2 * k1 - 3 * k2)
    assert abs(q12 - (2 * q1 - 3 * q2)).max() < 1e-14
    assert abs(q1 - q1.T).max() < 1e-16
    assert la.eigvalsh(fe.operator(k1).toarray()).min() > -1e-12
    u, v = rng.standard_normal((2, fe.n_dofs, 3))
    grad = FluxBlocks.build(fe).vjp(u, v)
    direction = rng.standard_normal(g.n_faces)
    expected = np.einsum("ik,ik->", u, fe.flux(direction) @ v)
    assert grad @ direction == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(
    ("kappa", "boundary", "match"),
    [
        (np.full(7, 1.0), "reflecting", "one value per face"),
        ("nan", "reflecting", "NaN"),
        ("neg", "reflecting", ">= 0"),
        ("inf_outer", "robin", "finite"),
        ("ok", "sideways", "must be one of"),
    ],
)
def test_bad_kappa_is_rejected(grid, kappa, boundary, match):
    k = np.full(grid.n_faces, 0.1)
    if isinstance(kappa, np.ndarray):
        k = kappa
    elif kappa == "nan":
        k[3] = np.nan
    elif kappa == "neg":
        k[3] = -1e-4
    elif kappa == "inf_outer":
        k[grid.outer_faces[0]] = np.inf
    with pytest.raises(PermeabilityError, match=match):
        check_kappa(grid, k, boundary)
