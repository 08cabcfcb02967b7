"""Mesh io: npz / meshio round trips, face order and κ, surfaces, and every error case."""

from __future__ import annotations

import warnings
from pathlib import Path

import meshio
import numpy as np
import pytest

from spinverse.errors import InputFileError, MeshError, PermeabilityError
from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_kappa, enclosed_tets
from spinverse.mesh.generators import bcc_grid, uniform_box_grid
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.io import (
    SURFACE_SUFFIXES,
    KappaFileError,
    LoadedMesh,
    load_mesh,
    save_mesh_npz,
    save_surface,
    save_vtu,
    surface_mesh,
)

from .helpers import BENCHMARK_NPZ, surface_edge_counts


@pytest.fixture(scope="module")
def grid() -> TetGrid:
    return bcc_grid(2, lower=0.0, upper=4.0)


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def _raises(exc_type, path: Path, field: str | None, match: str, **kwargs):
    with pytest.raises(exc_type, match=match) as info:
        load_mesh(path, **kwargs)
    err = info.value
    assert err.source == str(path)
    assert err.field == field
    assert "\n" not in str(err)
    return err


# ------------------------------------------------------------------ round trips
def test_npz_round_trip(tmp_path: Path, grid: TetGrid) -> None:
    kappa = np.linspace(0.0, 1.0, grid.n_faces)
    kappa[3] = np.inf
    p = save_mesh_npz(tmp_path / "g.npz", grid, kappa)
    assert p == tmp_path / "g.npz" and p.exists()
    loaded = load_mesh(p)
    assert isinstance(loaded, LoadedMesh) and loaded.source == str(p)
    g, k = loaded  # unpacks
    np.testing.assert_array_equal(g.points, grid.points)
    np.testing.assert_array_equal(g.tets, grid.tets)
    np.testing.assert_array_equal(g.faces, grid.faces)
    np.testing.assert_array_equal(k, kappa)
    assert not k.flags.writeable


def test_npz_without_kappa_uses_default(tmp_path: Path, grid: TetGrid) -> None:
    p = save_mesh_npz(tmp_path / "g.npz", grid)
    assert np.all(np.isinf(load_mesh(p).kappa))
    np.testing.assert_array_equal(load_mesh(p, kappa_default=0.5).kappa, 0.5)
    p2 = _write_npz(tmp_path / "bare.npz", points=grid.points, tets=grid.tets)
    np.testing.assert_array_equal(load_mesh(p2).grid.faces, grid.faces)


def test_npz_kappa_without_faces_is_in_grid_order(tmp_path: Path, grid: TetGrid) -> None:
    kappa = np.arange(grid.n_faces, dtype=float)
    p = _write_npz(tmp_path / "k.npz", points=grid.points, tets=grid.tets, kappa=kappa)
    np.testing.assert_array_equal(load_mesh(p).kappa, kappa)


def test_complete_faces_keep_file_order(tmp_path: Path, grid: TetGrid) -> None:
    rng = np.random.default_rng(0)
    perm = rng.permutation(grid.n_faces)
    faces = rng.permuted(grid.faces[perm], axis=1)  # shuffled rows and vertex order
    kappa = rng.uniform(0, 1, grid.n_faces)
    p = _write_npz(tmp_path / "o.npz", points=grid.points, tets=grid.tets, faces=faces, kappa=kappa)
    g, k = load_mesh(p)
    np.testing.assert_array_equal(g.faces, np.sort(faces, axis=1))
    np.testing.assert_array_equal(k, kappa)


def test_partial_faces_keep_grid_order(tmp_path: Path, grid: TetGrid) -> None:
    listed = np.array([5, 1, 9])
    faces = grid.faces[listed][:, ::-1]
    kappa = np.array([0.0, 2.0, 3.0])  # κ = 0 is valid
    p = _write_npz(tmp_path / "p.npz", points=grid.points, tets=grid.tets, faces=faces, kappa=kappa)
    g, k = load_mesh(p, kappa_default=7.0)
    np.testing.assert_array_equal(g.faces, grid.faces)
    np.testing.assert_array_equal(k[listed], kappa)
    rest = np.setdiff1d(np.arange(grid.n_faces), listed)
    np.testing.assert_array_equal(k[rest], 7.0)


def test_benchmark_file_loads_in_its_face_order() -> None:
    if not BENCHMARK_NPZ.exists():
        pytest.skip("shared benchmark not available")
    g, k = load_mesh(BENCHMARK_NPZ)
    np.testing.assert_array_equal(g.faces, benchmark_grid().faces)
    assert g.n_tets == 576 and np.all(np.isinf(k))


def test_vtu_round_trip(tmp_path: Path) -> None:
    grid = benchmark_grid()
    kappa = case_kappa("018")
    inside = enclosed_tets(grid, case_barrier("018"))
    p = save_vtu(
        tmp_path / "g.vtu",
        grid,
        kappa=kappa,
        tet_data={"inside": inside, "vec": np.ones((grid.n_tets, 3))},
    )
    raw = meshio.read(p)
    assert [b.type for b in raw.cells] == ["tetra", "triangle"]
    np.testing.assert_array_equal(raw.cell_data["kappa"][1], kappa)
    assert np.isnan(raw.cell_data["kappa"][0]).all()
    np.testing.assert_array_equal(raw.cell_data["inside"][0], inside)
    pts = raw.points[raw.cells[0].data]
    assert np.all(np.linalg.det(pts[:, 1:] - pts[:, :1]) > 0)  # positively oriented tets
    g, k = load_mesh(p)
    np.testing.assert_allclose(g.points, grid.points)
    np.testing.assert_array_equal(np.sort(g.tets, axis=1), grid.tets)
    np.testing.assert_array_equal(g.faces, grid.faces)
    np.testing.assert_array_equal(k, kappa)


def test_vtu_without_kappa(tmp_path: Path, grid: TetGrid) -> None:
    p = save_vtu(tmp_path / "g.vtu", grid)
    g, k = load_mesh(p, kappa_default=0.25)
    assert g.n_tets == grid.n_tets and np.all(k == 0.25)


def test_meshio_triangles_with_partial_kappa(tmp_path: Path, grid: TetGrid) -> None:
    listed = np.array([0, 4, 8, 12])
    mesh = meshio.Mesh(
        grid.points,
        [("tetra", grid.tets), ("triangle", grid.faces[listed][:, [2, 0, 1]])],
        cell_data={"kappa": [np.full(grid.n_tets, np.nan), np.array([1.0, 2.0, 3.0, 0.0])]},
    )
    p = tmp_path / "partial.vtu"
    meshio.write(p, mesh)
    g, k = load_mesh(p, kappa_default=0.1)
    np.testing.assert_array_equal(g.faces, grid.faces)
    np.testing.assert_array_equal(k[listed], [1.0, 2.0, 3.0, 0.0])
    assert np.sum(k == 0.1) == grid.n_faces - 4


@pytest.mark.parametrize(("name", "fmt"), [("g.msh", "gmsh22"), ("g.mesh", "medit")])
def test_other_meshio_formats(tmp_path: Path, grid: TetGrid, name: str, fmt: str) -> None:
    p = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meshio.write(p, meshio.Mesh(grid.points, [("tetra", grid.tets)]), file_format=fmt)
    g, k = load_mesh(p)
    np.testing.assert_array_equal(np.sort(g.tets, axis=1), grid.tets)
    np.testing.assert_array_equal(g.faces, grid.faces)
    assert np.all(np.isinf(k))


# --------------------------------------------------------------------- surfaces
def test_surface_mesh_compacts_and_orients() -> None:
    grid = benchmark_grid()
    b = case_barrier("018")
    inside = enclosed_tets(grid, b)
    pts, tris = surface_mesh(grid, b)
    used = np.unique(grid.faces[b])
    np.testing.assert_array_equal(pts, grid.points[used])
    assert tris.shape == (48, 3) and tris.max() == len(used) - 1
    np.testing.assert_array_equal(used[tris], grid.faces[b])
    pts, tris = surface_mesh(grid, b, inside=inside)
    vol = np.einsum("ij,ij->i", pts[tris[:, 0]], np.cross(pts[tris[:, 1]], pts[tris[:, 2]]))
    np.testing.assert_allclose(vol.sum() / 6, grid.volumes[inside].sum(), rtol=1e-12)
    # consistently oriented: every directed edge appears once
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    with pytest.raises(MeshError):
        surface_mesh(grid, [grid.n_faces])
    with pytest.raises(MeshError):
        surface_mesh(grid, b, inside=inside[:3])


@pytest.mark.parametrize("suffix", SURFACE_SUFFIXES)
def test_save_surface(tmp_path: Path, suffix: str) -> None:
    grid = benchmark_grid()
    b = case_barrier("019")
    p = save_surface(tmp_path / f"s{suffix}", grid, b, inside=enclosed_tets(grid, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meshio's STL reader warns on overflow checks
        m = meshio.read(p)
    tris = np.concatenate([c.data for c in m.cells if c.type == "triangle"])
    assert len(tris) == len(b)
    assert len(m.points) == len(np.unique(grid.faces[b]))
    assert np.all(surface_edge_counts(grid, b) == 2)


def test_save_surface_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="unsupported surface format"):
        save_surface(tmp_path / "s.xyz", benchmark_grid(), case_barrier("018"))


def test_save_errors(tmp_path: Path, grid: TetGrid) -> None:
    with pytest.raises(KappaFileError, match="expected"):
        save_mesh_npz(tmp_path / "a.npz", grid, np.ones(3))
    with pytest.raises(KappaFileError, match="NaN"):
        save_vtu(tmp_path / "a.vtu", grid, kappa=np.full(grid.n_faces, np.nan))
    with pytest.raises(MeshError, match="one per tet"):
        save_vtu(tmp_path / "a.vtu", grid, tet_data={"x": np.ones(2)})


# ----------------------------------------------------------------------- errors
def test_missing_file(tmp_path: Path) -> None:
    _raises(InputFileError, tmp_path / "nope.npz", None, "not found")


def test_directory(tmp_path: Path) -> None:
    _raises(InputFileError, tmp_path, None, "not a regular file")


def test_truncated_npz(tmp_path: Path, grid: TetGrid) -> None:
    full = save_mesh_npz(tmp_path / "full.npz", grid, np.ones(grid.n_faces)).read_bytes()
    for n in (10, len(full) // 2, len(full) - 30):
        p = tmp_path / f"cut{n}.npz"
        p.write_bytes(full[:n])
        _raises(InputFileError, p, None, "unreadable or truncated")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("text.npz", b"just some text\n", "unreadable"),
        ("garbage.vtu", b"<not really xml", "cannot read as a mesh"),
        ("bad.msh", b"junk\n", "cannot read as a mesh"),
        ("mesh.unknown", b"whatever", "cannot read as a mesh"),
    ],
)
def test_wrong_format(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    _raises(InputFileError, p, None, match)


def test_npy_named_npz(tmp_path: Path) -> None:
    p = tmp_path / "array.npz"
    with p.open("wb") as fh:
        np.save(fh, np.zeros((4, 3)))
    _raises(InputFileError, p, None, "single .npy")


def test_pickled_object_array(tmp_path: Path, grid: TetGrid) -> None:
    p = tmp_path / "obj.npz"
    with p.open("wb") as fh:
        np.savez(fh, points=grid.points, tets=np.array([object()] * 4, dtype=object))
    _raises(InputFileError, p, None, "unreadable")


@pytest.mark.parametrize("missing", ["points", "tets"])
def test_missing_keys(tmp_path: Path, grid: TetGrid, missing: str) -> None:
    arrays = {"points": grid.points, "tets": grid.tets}
    del arrays[missing]
    p = _write_npz(tmp_path / "m.npz", **arrays)
    _raises(InputFileError, p, missing, "missing key")


def test_no_tetra_cells(tmp_path: Path, grid: TetGrid) -> None:
    p = tmp_path / "tri.vtu"
    meshio.write(p, meshio.Mesh(grid.points, [("triangle", grid.faces)]))
    _raises(InputFileError, p, "tetra", "no tetra cells")


def test_faces_not_of_grid(tmp_path: Path, grid: TetGrid) -> None:
    faces = np.vstack([grid.faces[:2], [[0, 1, 2]]])  # (0, 1, 2) is not a face
    assert grid.face_index([0, 1, 2])[0] == -1
    p = _write_npz(
        tmp_path / "f.npz", points=grid.points, tets=grid.tets, faces=faces, kappa=np.ones(3)
    )
    _raises(MeshError, p, "faces", "not faces of the grid")


def test_faces_listed_twice(tmp_path: Path, grid: TetGrid) -> None:
    faces = grid.faces[[0, 1, 0]]
    p = _write_npz(
        tmp_path / "f.npz", points=grid.points, tets=grid.tets, faces=faces, kappa=np.ones(3)
    )
    _raises(MeshError, p, "faces", "listed 2 times")


@pytest.mark.parametrize(
    ("kappa", "match"),
    [
        (np.array([0.1, np.nan, 0.2]), "NaN"),
        (np.array([0.1, -1e-9, 0.2]), "negative"),
        (np.array([0.1, 0.2]), "expected 3 values"),
        (np.ones((3, 1)), "expected 3 values"),
        (np.array(["a", "b", "c"]), "real numbers"),
    ],
)
def test_bad_kappa(tmp_path: Path, grid: TetGrid, kappa: np.ndarray, match: str) -> None:
    p = _write_npz(
        tmp_path / "k.npz", points=grid.points, tets=grid.tets, faces=grid.faces[:3], kappa=kappa
    )
    err = _raises(KappaFileError, p, "kappa", match)
    assert isinstance(err, InputFileError) and isinstance(err, PermeabilityError)


def test_kappa_without_faces_wrong_length(tmp_path: Path, grid: TetGrid) -> None:
    p = _write_npz(tmp_path / "k.npz", points=grid.points, tets=grid.tets, kappa=np.ones(5))
    _raises(KappaFileError, p, "kappa", f"expected {grid.n_faces} values")


def test_bad_kappa_default(tmp_path: Path, grid: TetGrid) -> None:
    p = save_mesh_npz(tmp_path / "g.npz", grid)
    _raises(KappaFileError, p, "kappa", "kappa_default", kappa_default=-1.0)


def test_bad_kappa_in_vtu(tmp_path: Path, grid: TetGrid) -> None:
    kappa = np.ones(grid.n_faces)
    kappa[2] = -3.0
    mesh = meshio.Mesh(
        grid.points,
        [("tetra", grid.tets), ("triangle", grid.faces)],
        cell_data={"kappa": [np.zeros(grid.n_tets), kappa]},
    )
    p = tmp_path / "neg.vtu"
    meshio.write(p, mesh)
    _raises(KappaFileError, p, "kappa", "negative")


@pytest.mark.parametrize(
    ("arrays", "field", "match"),
    [
        ({"points": np.zeros((4, 2)), "tets": np.array([[0, 1, 2, 3]])}, "points", "shape"),
        ({"points": np.eye(4, 3), "tets": np.array([[0, 1, 2]])}, "tets", "shape"),
        ({"points": np.eye(4, 3), "tets": np.array([[0, 1, 2, 3.5]])}, "tets", "integers"),
        (
            {"points": np.eye(4, 3), "tets": np.array([[0, 1, 2, 3]]), "faces": np.array([[0, 1]])},
            "faces",
            "shape",
        ),
    ],
)
def test_bad_shapes(tmp_path: Path, arrays: dict, field: str, match: str) -> None:
    p = _write_npz(tmp_path / "s.npz", **arrays)
    _raises(InputFileError, p, field, match)


def test_invalid_grid_reports_source(tmp_path: Path) -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)  # flat
    p = _write_npz(tmp_path / "flat.npz", points=points, tets=np.array([[0, 1, 2, 3]]))
    _raises(MeshError, p, "tets", "zero volume")
    nan = np.eye(4, 3)
    nan[1, 1] = np.nan
    p = _write_npz(tmp_path / "nan.npz", points=nan, tets=np.array([[0, 1, 2, 3]]))
    _raises(MeshError, p, "points", "NaN")


def test_large_box_round_trip_is_fast(tmp_path: Path) -> None:
    g = uniform_box_grid(0.0, 10.0, 12)  # 10 368 tets
    kappa = np.random.default_rng(0).uniform(0, 1, g.n_faces)
    g2, k2 = load_mesh(save_mesh_npz(tmp_path / "big.npz", g, kappa))
    np.testing.assert_array_equal(k2, kappa)
    assert g2.n_tets == g.n_tets
