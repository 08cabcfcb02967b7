"""The shipped benchmark: names, prefixes, grid, barriers and ground-truth κ."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spinverse.errors import InputFileError, MeshError
from spinverse.mesh import benchmark as bm
from spinverse.mesh.generators import bcc_grid
from spinverse.mesh.phantoms import barrier_faces

from .helpers import BENCHMARK_NPZ, surface_edge_counts

NAMES = bm.case_names()


def test_shipped_copy_equals_shared_file() -> None:
    from importlib import resources

    shipped = resources.files("spinverse.data").joinpath(bm.BENCHMARK_RESOURCE).read_bytes()
    if not BENCHMARK_NPZ.exists():
        pytest.skip("shared benchmark not available")
    assert shipped == BENCHMARK_NPZ.read_bytes()


def test_case_names(bench_npz: dict[str, np.ndarray]) -> None:
    assert len(NAMES) == 16
    assert NAMES == [str(n) for n in bench_npz["names"]]
    assert NAMES[-1] == "019_torus_majr10_minr6"
    assert sum(n.split("_")[1] == "bentaxon" for n in NAMES) == 12


@pytest.mark.parametrize(
    ("key", "full"),
    [
        ("017", "017_cyl_10r_40h_in_grid_20x20"),
        ("018_sphere", "018_sphere_10r_in_grid_20x20"),
        ("019_torus_majr10_minr6", "019_torus_majr10_minr6"),
        ("barrier_016", "016_cyl_8r_22h_45d_in_3g_20r_mesh"),
        (" 000 ", "000_bentaxon_r4.58_seg9_fill0.115_tets66_bf88"),
    ],
)
def test_resolve_case(key: str, full: str) -> None:
    assert bm.resolve_case(key) == full


@pytest.mark.parametrize(("key", "why"), [("01", "ambiguous"), ("003", "no case"), ("", "no case")])
def test_resolve_case_errors(key: str, why: str) -> None:
    with pytest.raises(InputFileError, match=why) as exc:
        bm.resolve_case(key)
    assert exc.value.field == "case"
    msg = str(exc.value)
    assert "\n" not in msg
    if why == "no case":
        assert all(n in msg for n in NAMES)  # lists the valid names


def test_benchmark_grid(bench_npz: dict[str, np.ndarray]) -> None:
    g = bm.benchmark_grid()
    assert g is bm.benchmark_grid()  # cached
    np.testing.assert_array_equal(g.faces, bench_npz["faces"])
    np.testing.assert_array_equal(g.tets, bench_npz["tets"])
    np.testing.assert_allclose(g.points, bcc_grid(4).points, atol=1e-12)
    np.testing.assert_array_equal(g.faces, bcc_grid(4).faces)


@pytest.mark.parametrize("name", NAMES)
def test_case_barrier_closed_and_consistent_with_name(name: str) -> None:
    g = bm.benchmark_grid()
    b = bm.case_barrier(name)
    assert b.dtype == np.int64 and np.all(np.diff(b) > 0)
    assert np.all(surface_edge_counts(g, b) == 2)  # closed, edge-manifold
    inside = bm.enclosed_tets(g, b)
    np.testing.assert_array_equal(barrier_faces(g, inside), b)
    m = re.search(r"fill([\d.]+)_tets(\d+)_bf(\d+)", name)
    if m:  # bent axons quote their fill, tet count and barrier size
        assert inside.sum() == int(m.group(2))
        assert len(b) == int(m.group(3))
        assert round(inside.mean(), 3) == float(m.group(1))
        assert g.is_outer[b].sum() == 16  # runs through two opposite walls


def test_known_sizes() -> None:
    g = bm.benchmark_grid()
    sphere = bm.enclosed_tets(g, bm.case_barrier("018"))
    assert sphere.sum() == 48
    np.testing.assert_allclose(g.volumes[sphere].sum(), 1185.185185, rtol=1e-6)
    sizes = {k: len(bm.case_barrier(k)) for k in ("016", "017", "018", "019")}
    assert sizes == {"016": 52, "017": 96, "018": 48, "019": 88}


def test_case_kappa() -> None:
    g = bm.benchmark_grid()
    k = bm.case_kappa("018")
    assert k.shape == (g.n_faces,) and k.dtype == np.float64
    np.testing.assert_array_equal(np.flatnonzero(k < 1e-3), bm.case_barrier("018"))
    assert set(np.unique(k)) == {1e-5, 0.1}
    k2 = bm.case_kappa("018_sphere_10r_in_grid_20x20", barrier_kappa=0.0, other_kappa=np.inf)
    assert np.all(k2[bm.case_barrier("018")] == 0) and np.isinf(k2).sum() == g.n_faces - 48


def test_enclosed_tets_errors() -> None:
    g = bm.benchmark_grid()
    with pytest.raises(MeshError):
        bm.enclosed_tets(g, [g.n_faces])
    assert not bm.enclosed_tets(g, []).any()
