"""1:8 refinement: children tile their parent, the grid stays conforming, the benchmark's
BCC grid refines into the finer BCC grid, and per-face κ / regions carry over."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from spinverse.errors import MeshError
from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_kappa, enclosed_tets
from spinverse.mesh.generators import bcc_grid, box_grid
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import barrier_faces, phantom_kappa
from spinverse.mesh.refine import coarse_face_of, refine, refine_kappa, refine_region


def _barycentric(tet_points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, 4) barycentric coordinates of points x (n, 3) in tets (n, 4, 3)."""
    mat = np.transpose(tet_points[:, 1:] - tet_points[:, :1], (0, 2, 1))
    lam = np.linalg.solve(mat, (x - tet_points[:, 0])[..., None])[..., 0]
    return np.concatenate([1 - lam.sum(axis=1, keepdims=True), lam], axis=1)


def _check_children(coarse: TetGrid, refined) -> None:
    fine = refined.grid
    assert fine.n_tets == 8**refined.levels * coarse.n_tets
    # equal volumes: every child has 1/8 (per level) of its parent's
    np.testing.assert_allclose(fine.volumes, coarse.volumes[refined.parent] / 8**refined.levels,
                               rtol=1e-10)
    # every vertex of every child lies in (or on) its parent
    par = coarse.points[coarse.tets[refined.parent]]
    for k in range(4):
        assert _barycentric(par, fine.points[fine.tets[:, k]]).min() > -1e-10
    # conforming: the outer surface has the same area, split 4× per level
    assert fine.face_areas[fine.is_outer].sum() == pytest.approx(
        coarse.face_areas[coarse.is_outer].sum(), rel=1e-12)
    assert fine.is_outer.sum() == coarse.is_outer.sum() * 4**refined.levels


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=12, max_size=12))
def test_children_tile_any_tet(coords):
    pts = np.array(coords).reshape(4, 3)
    vol = abs(np.linalg.det(pts[1:] - pts[0])) / 6
    edge = max(np.linalg.norm(pts[i] - pts[j]) for i in range(4) for j in range(i))
    if edge < 1e-3 or vol < 1e-2 * edge**3:  # too small or flat: not a valid cell
        return
    coarse = TetGrid(pts, np.array([[0, 1, 2, 3]]))
    for levels in (1, 2):
        _check_children(coarse, refine(coarse, levels))


def test_box_grid_children_tile_and_conform():
    coarse = box_grid([0, 1, 2.5], [0, 1], [0, 2, 3])
    _check_children(coarse, refine(coarse, 2))


def test_bcc_refines_into_the_finer_bcc_grid():
    coarse, fine_ref = bcc_grid(2), bcc_grid(4)
    fine = refine(coarse).grid
    dist, vmap = cKDTree(fine_ref.points).query(fine.points)
    assert dist.max() < 1e-9
    ref_tets = {tuple(t) for t in np.sort(fine_ref.tets, axis=1).tolist()}
    children = {tuple(t) for t in np.sort(vmap[fine.tets], axis=1).tolist()}
    # the finer BCC grid also fills the pyramids at the box faces; the rest is the same
    assert children <= ref_tets
    assert len(ref_tets - children) == fine_ref.n_tets - fine.n_tets > 0


def test_levels_zero_is_the_same_grid_and_bad_levels_raise():
    g = bcc_grid(2)
    r = refine(g, 0)
    assert r.grid is g and np.array_equal(r.parent, np.arange(g.n_tets))
    for bad in (-1, 1.5):
        with pytest.raises(MeshError, match="levels"):
            refine(g, bad)


def test_coarse_faces_are_split_into_four_and_new_faces_are_inside():
    g = bcc_grid(2)
    r = refine(g)
    src = coarse_face_of(r, g)
    on = src >= 0
    assert np.bincount(src[on], minlength=g.n_faces).tolist() == [4] * g.n_faces
    np.testing.assert_allclose(
        np.bincount(src[on], weights=r.grid.face_areas[on], minlength=g.n_faces),
        g.face_areas, rtol=1e-12)
    assert (~on).sum() == 8 * g.n_tets  # 4 cut off the corners + 4 inside the octahedron
    assert not np.any(r.grid.is_outer[~on])
    with pytest.raises(MeshError, match="coarse"):
        coarse_face_of(r, box_grid([0, 1], [0, 1], [0, 1]))


def test_refine_kappa_keeps_membranes():
    g = box_grid([0, 1, 2], [0, 1], [0, 1])
    plane = np.all(np.isclose(g.points[g.faces][:, :, 0], 1.0), axis=1)
    kap = np.where(plane, 1e-4, np.inf)
    r = refine(g, 2)
    fk = refine_kappa(r, g, kap)
    fine_plane = np.all(np.isclose(r.grid.points[r.grid.faces][:, :, 0], 1.0), axis=1)
    assert np.all(fk[fine_plane] == 1e-4) and np.all(np.isinf(fk[~fine_plane]))
    assert np.all(refine_kappa(r, g, kap, new_faces=0.1)[~fine_plane & (
        coarse_face_of(r, g) < 0)] == 0.1)
    with pytest.raises(MeshError, match="κ"):
        refine_kappa(r, g, kap[:-1])


@pytest.mark.parametrize("prefix", ["000", "018", "019"])
def test_benchmark_case_kappa_equals_the_refined_region(prefix):
    g = benchmark_grid()
    r = refine(g)
    inside = enclosed_tets(g, case_barrier(prefix))
    fine_inside = refine_region(r, inside)
    assert fine_inside.sum() == 8 * inside.sum()
    expected = phantom_kappa(r.grid, barrier_faces(r.grid, fine_inside))
    assert np.array_equal(refine_kappa(r, g, case_kappa(prefix), new_faces=0.1), expected)
    with pytest.raises(MeshError, match="mask"):
        refine_region(r, inside[:10])
