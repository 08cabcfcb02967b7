"""TetGrid: topology invariants on the benchmark grid and validation errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spinverse.errors import MeshError
from spinverse.mesh.grid import TET_FACE_LOCAL, TetGrid

from .helpers import euler_characteristic, surface_edge_counts

UNIT_TET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)


def two_tets(apex2: tuple[float, float, float]) -> TetGrid:
    points = np.vstack([UNIT_TET, apex2])
    return TetGrid(points, [[0, 1, 2, 3], [0, 1, 2, 4]])


# ----------------------------------------------------------------- topology
def test_benchmark_sizes(bench_grid: TetGrid) -> None:
    g = bench_grid
    assert (g.n_points, g.n_tets, g.n_faces) == (189, 576, 1296)
    assert g.is_outer.sum() == 288
    assert len(g.interior_faces) == 1008 and len(g.outer_faces) == 288
    assert g.summary()["components"] == 1


def test_default_face_order_is_lexicographic(bench_grid: TetGrid) -> None:
    g = TetGrid(bench_grid.points, bench_grid.tets)
    f = g.faces
    assert np.all(np.diff(f, axis=1) > 0)
    order = np.lexsort(f.T[::-1])
    np.testing.assert_array_equal(order, np.arange(len(f)))
    np.testing.assert_array_equal(f, bench_grid.faces)


def test_tet_faces_match_local_vertices(bench_grid: TetGrid) -> None:
    g = bench_grid
    tf = g.tet_faces
    assert tf.shape == (g.n_tets, 4)
    assert np.all(np.sort(tf, axis=1)[:, 1:] != np.sort(tf, axis=1)[:, :-1])  # 4 distinct
    local = np.sort(g.tets[:, TET_FACE_LOCAL], axis=2)
    np.testing.assert_array_equal(g.faces[tf], local)


def test_face_tets_and_counts(bench_grid: TetGrid) -> None:
    g = bench_grid
    ft = g.face_tets
    n_tets_per_face = (ft >= 0).sum(axis=1)
    assert set(np.unique(n_tets_per_face)) == {1, 2}
    np.testing.assert_array_equal(n_tets_per_face == 1, g.is_outer)
    # 4 T = 2 F_interior + F_outer
    assert 4 * g.n_tets == 2 * (~g.is_outer).sum() + g.is_outer.sum()
    # each face is face `face_local` of each of its tets
    for side in range(2):
        ok = ft[:, side] >= 0
        rows = np.flatnonzero(ok)
        np.testing.assert_array_equal(g.tet_faces[ft[ok, side], g.face_local[ok, side]], rows)
    assert np.all(g.face_local[g.is_outer, 1] == -1)


def test_edges_and_incidence(bench_grid: TetGrid) -> None:
    g = bench_grid
    assert euler_characteristic(g) == 1  # the union is a (dimpled) ball
    fe = g.face_edges
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        np.testing.assert_array_equal(g.edges[fe[:, k]], g.faces[:, [i, j]])
    m = g.edge_face_incidence
    assert m.shape == (g.n_edges, g.n_faces)
    np.testing.assert_array_equal(np.asarray(m.sum(axis=0)).ravel(), 3)
    e = int(fe[0, 0])
    assert 0 in g.edge_faces(e)
    pairs = g.face_pairs_sharing_edge
    shared = [len(set(fe[a]) & set(fe[b])) for a, b in pairs[:200]]
    assert all(s == 1 for s in shared)


def test_outer_surface_is_closed_manifold(bench_grid: TetGrid) -> None:
    counts = surface_edge_counts(bench_grid, bench_grid.outer_faces)
    assert np.all(counts == 2)


def test_geometry(bench_grid: TetGrid) -> None:
    g = bench_grid
    h = 20.0 / 3.0
    np.testing.assert_allclose(g.volumes, h**3 / 12, rtol=1e-12)
    np.testing.assert_allclose(g.volume, 14222.222222222, rtol=1e-9)
    assert np.all(g.face_areas > 0)
    np.testing.assert_allclose(g.face_areas, g.face_areas[0], rtol=1e-12)  # congruent
    lo, hi = g.bounding_box
    np.testing.assert_allclose(lo, -40 / 3)
    np.testing.assert_allclose(hi, 40 / 3)


def test_face_index(bench_grid: TetGrid) -> None:
    g = bench_grid
    rng = np.random.default_rng(0)
    tri = rng.permuted(g.faces, axis=1)
    np.testing.assert_array_equal(g.face_index(tri), np.arange(g.n_faces))
    assert g.face_index([0, 1, 2])[0] == -1
    assert g.face_index(g.faces[5])[0] == 5


def test_custom_face_order_kept(bench_grid: TetGrid) -> None:
    perm = np.random.default_rng(1).permutation(bench_grid.n_faces)
    faces = bench_grid.faces[perm][:, ::-1]  # any vertex order
    g = TetGrid(bench_grid.points, bench_grid.tets, faces=faces)
    np.testing.assert_array_equal(g.faces, bench_grid.faces[perm])
    np.testing.assert_array_equal(g.faces[g.tet_faces], bench_grid.faces[bench_grid.tet_faces])


def test_immutable(bench_grid: TetGrid) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench_grid.points = bench_grid.points  # type: ignore[misc]
    for arr in (bench_grid.points, bench_grid.tets, bench_grid.faces):
        with pytest.raises(ValueError):
            arr[0, 0] = 0


# --------------------------------------------------------------- validation
def test_single_tet_ok() -> None:
    g = TetGrid(UNIT_TET, [[0, 1, 2, 3]])
    assert g.n_faces == 4 and g.is_outer.all()
    assert g.volume == pytest.approx(1 / 6)


def test_two_tets_across_a_face_ok() -> None:
    g = two_tets((0.3, 0.3, -1.0))
    assert g.n_faces == 7 and (~g.is_outer).sum() == 1


@pytest.mark.parametrize(
    ("points", "tets", "field", "match"),
    [
        (np.vstack([UNIT_TET[:3], [np.nan, 0, 1]]), [[0, 1, 2, 3]], "points", "NaN"),
        (np.vstack([UNIT_TET[:3], [np.inf, 0, 1]]), [[0, 1, 2, 3]], "points", "infinite"),
        (UNIT_TET[:, :2], [[0, 1, 2, 3]], "points", "shape"),
        (UNIT_TET, [[0, 1, 2]], "tets", "shape"),
        (UNIT_TET, np.zeros((0, 4), dtype=int), "tets", "T > 0"),
        (UNIT_TET, [[0, 1, 2, 4]], "tets", "vertex ids"),
        (UNIT_TET, [[0, 1, 2, -1]], "tets", "vertex ids"),
        (UNIT_TET, [[0, 1, 2, 2.5]], "tets", "integers"),
        (np.vstack([UNIT_TET[:3], [0.5, 0.5, 0]]), [[0, 1, 2, 3]], "tets", "zero volume"),
        (UNIT_TET, [[0, 1, 2, 3], [3, 2, 1, 0]], "tets", "duplicate"),
    ],
)
def test_validation_errors(points, tets, field: str, match: str) -> None:
    with pytest.raises(MeshError, match=match) as exc:
        TetGrid(points, tets)
    assert exc.value.field == field


def test_overlapping_inverted_pair() -> None:
    with pytest.raises(MeshError, match="overlap") as exc:
        two_tets((0.1, 0.1, 0.5))  # both apexes on the same side of the shared face
    assert exc.value.field == "tets"


def test_face_shared_by_three_tets() -> None:
    points = np.vstack([UNIT_TET, [0.3, 0.3, -1.0], [0.2, 0.2, 2.0]])
    with pytest.raises(MeshError, match="shared by 3 tets"):
        TetGrid(points, [[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 5]])


def test_faces_argument_errors() -> None:
    g = TetGrid(UNIT_TET, [[0, 1, 2, 3]])
    with pytest.raises(MeshError, match="not faces") as exc:
        TetGrid(np.vstack([UNIT_TET, [1, 1, 1]]), [[0, 1, 2, 3]], faces=[*g.faces[:3], [0, 1, 4]])
    assert exc.value.field == "faces"
    with pytest.raises(MeshError, match="each of the grid's 4 faces once"):
        TetGrid(UNIT_TET, [[0, 1, 2, 3]], faces=g.faces[:3])
    with pytest.raises(MeshError, match="once"):
        TetGrid(UNIT_TET, [[0, 1, 2, 3]], faces=np.vstack([g.faces[:3], g.faces[:1]]))
    with pytest.raises(MeshError, match="shape"):
        TetGrid(UNIT_TET, [[0, 1, 2, 3]], faces=np.zeros((4, 2), dtype=int))
