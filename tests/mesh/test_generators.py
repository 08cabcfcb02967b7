"""bcc_grid reproduces the benchmark grid; box_grid is a conforming tensor-product split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from spinverse.errors import MeshError
from spinverse.mesh.generators import bcc_grid, box_grid, uniform_box_grid
from spinverse.mesh.grid import TetGrid

from .helpers import euler_characteristic, surface_edge_counts

H = 20.0 / 3.0  # benchmark cube edge, µm


def _vertex_map(points: np.ndarray, reference: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Index in ``reference`` of each point (coordinates within ``tol`` µm)."""
    dist, idx = cKDTree(reference).query(points)
    assert np.all(dist < tol), f"max distance {dist.max()}"
    assert len(np.unique(idx)) == len(points)
    return idx


def _row_set(rows: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(r) for r in np.sort(rows, axis=1).tolist()}


# -------------------------------------------------------------------- BCC
def test_bcc_reproduces_benchmark_as_sets(bench_npz: dict[str, np.ndarray]) -> None:
    g = bcc_grid(4)
    ref_points = bench_npz["points"]
    assert g.n_points == len(ref_points)
    vmap = _vertex_map(g.points, ref_points)
    assert _row_set(vmap[g.tets]) == _row_set(bench_npz["tets"])
    assert _row_set(vmap[g.faces]) == _row_set(bench_npz["faces"])


def test_bcc_reproduces_benchmark_numbering(bench_npz: dict[str, np.ndarray]) -> None:
    """Stronger than required: the same vertex numbering, tet rows and face rows."""
    g = bcc_grid(4)
    np.testing.assert_allclose(g.points, bench_npz["points"], atol=1e-12)
    np.testing.assert_array_equal(g.tets, bench_npz["tets"])
    np.testing.assert_array_equal(g.faces, bench_npz["faces"])


def test_bcc_counts_and_volumes() -> None:
    g = bcc_grid(4)
    assert (g.n_points, g.n_tets, g.n_faces) == (189, 576, 1296)
    assert g.is_outer.sum() == 288
    np.testing.assert_allclose(g.volumes, H**3 / 12, rtol=1e-12)
    # box minus one square pyramid (base h², height h/2) per outer cube face
    box = (4 * H) ** 3
    np.testing.assert_allclose(g.volume, box - 6 * 16 * H**3 / 6, rtol=1e-12)
    assert abs(g.volume - 14222.2) < 0.1 and abs(box - 18963.0) < 0.1
    assert euler_characteristic(g) == 1
    assert np.all(surface_edge_counts(g, g.outer_faces) == 2)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_bcc_counts_formula(n: int) -> None:
    g = bcc_grid(n, lower=0.0, upper=float(n))
    assert g.n_points == (n + 1) ** 3 + n**3
    assert g.n_tets == 12 * n**2 * (n - 1)  # 4 tets per pair of face-adjacent cubes
    np.testing.assert_allclose(g.volumes, 1 / 12, rtol=1e-12)
    np.testing.assert_allclose(g.volume, n**3 - 6 * n**2 / 6, rtol=1e-12)
    assert euler_characteristic(g) == 1
    assert g.summary()["components"] == 1


def test_bcc_anisotropic_box() -> None:
    g = bcc_grid(3, lower=[0, 0, 0], upper=[3, 6, 9])
    np.testing.assert_allclose(g.volumes, 1 * 2 * 3 / 12, rtol=1e-12)
    np.testing.assert_allclose(g.bounding_box[1], [3, 6, 9])


def test_bcc_errors() -> None:
    with pytest.raises(MeshError, match="positive integer"):
        bcc_grid(0)
    with pytest.raises(MeshError, match="positive integer"):
        bcc_grid(2.5)  # type: ignore[arg-type]
    with pytest.raises(MeshError, match="must exceed"):
        bcc_grid(2, lower=1.0, upper=0.0)
    with pytest.raises(MeshError):  # one cube has no face-adjacent pair: no tets
        bcc_grid(1)


def test_bcc_large_is_fast() -> None:
    g = bcc_grid(12)
    assert g.n_tets == 12 * 144 * 11


# -------------------------------------------------------------------- box
def test_box_grid_volume_and_counts() -> None:
    xs, ys, zs = [0.0, 1.0, 3.0], [-1.0, 0.5, 1.0, 2.0], [0.0, 2.0]
    g = box_grid(xs, ys, zs)
    assert g.n_points == 3 * 4 * 2
    assert g.n_tets == 6 * 2 * 3 * 1
    np.testing.assert_allclose(g.volume, 3.0 * 3.0 * 2.0, rtol=1e-12)
    assert euler_characteristic(g) == 1


def test_box_grid_plane_of_faces() -> None:
    g = box_grid([0.0, 1.0, 2.5, 4.0], np.linspace(0, 2, 4), np.linspace(0, 1, 3))
    for x in (1.0, 2.5):
        on_plane = np.all(np.isclose(g.points[g.faces][:, :, 0], x), axis=1)
        assert np.all(~g.is_outer[on_plane])
        # the faces on the plane tile the whole 2 × 1 µm cross-section
        np.testing.assert_allclose(g.face_areas[on_plane].sum(), 2.0, rtol=1e-12)
        # and no tet straddles the plane
        x_tet = g.points[g.tets][:, :, 0]
        assert not np.any((x_tet.min(axis=1) < x - 1e-12) & (x_tet.max(axis=1) > x + 1e-12))


def test_uniform_box_grid() -> None:
    g = uniform_box_grid(-1.0, [1.0, 2.0, 3.0], (2, 3, 4))
    assert g.n_tets == 6 * 24
    np.testing.assert_allclose(g.volume, 2 * 3 * 4, rtol=1e-12)
    np.testing.assert_allclose(g.volumes, 1 / 6, rtol=1e-12)
    g2 = uniform_box_grid(0.0, 1.0, 3)
    assert g2.n_tets == 6 * 27


@pytest.mark.parametrize(
    ("xs", "match"),
    [([0.0], "at least 2"), ([0.0, 0.0, 1.0], "increasing"), ([0.0, np.nan], "finite")],
)
def test_box_grid_errors(xs: list[float], match: str) -> None:
    with pytest.raises(MeshError, match=match) as exc:
        box_grid(xs, [0, 1], [0, 1])
    assert exc.value.field == "xs"


def test_uniform_box_grid_errors() -> None:
    with pytest.raises(MeshError):
        uniform_box_grid(0.0, 1.0, 0)
    with pytest.raises(MeshError):
        uniform_box_grid(1.0, 0.0, 2)


coords = st.lists(
    st.floats(min_value=0.05, max_value=3.0, allow_nan=False), min_size=1, max_size=4
).map(lambda steps: np.concatenate([[0.0], np.cumsum(steps)]))


@settings(max_examples=30, deadline=None)
@given(xs=coords, ys=coords, zs=coords)
def test_box_grid_properties(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> None:
    g = box_grid(xs, ys, zs)
    lx, ly, lz = xs[-1], ys[-1], zs[-1]
    np.testing.assert_allclose(g.volume, lx * ly * lz, rtol=1e-10)
    n_tets_per_face = (g.face_tets >= 0).sum(axis=1)
    assert n_tets_per_face.min() >= 1 and n_tets_per_face.max() <= 2
    # conforming: the outer faces tile exactly the box surface (no hanging faces inside)
    area = 2 * (lx * ly + ly * lz + lx * lz)
    np.testing.assert_allclose(g.face_areas[g.is_outer].sum(), area, rtol=1e-10)
    assert np.all(surface_edge_counts(g, g.outer_faces) == 2)
    assert euler_characteristic(g) == 1
    assert isinstance(g, TetGrid)
