"""Triangle surfaces (STL/PLY/OBJ) as phantoms: reading, winding-number inside test,
voxelisation onto the benchmark grid (lengths in µm)."""

from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np
import pytest

from spinverse.errors import InputFileError, MeshError
from spinverse.mesh.generators import bcc_grid
from spinverse.mesh.phantoms import Sphere, Torus, barrier_faces, voxelise
from spinverse.mesh.surfaces import (
    TriangleSurface,
    inside_surface,
    open_edges,
    read_surface,
    voxelise_surface,
    winding_number,
)


def icosphere(radius: float, levels: int, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """A closed triangulated sphere (vertices on the sphere), outward oriented."""
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    pts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = [tuple(x) for x in f]
    cache: dict[tuple[int, int], int] = {}  # edge -> its midpoint (edges never recur)

    def mid(i: int, j: int) -> int:
        key = (min(i, j), max(i, j))
        if key not in cache:
            m = pts[i] + pts[j]
            pts.append(m / np.linalg.norm(m))
            cache[key] = len(pts) - 1
        return cache[key]

    for _ in range(levels):
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(center) + radius * np.array(pts), np.array(faces, dtype=np.int64)


def inscribed_gap(points: np.ndarray, tris: np.ndarray, center, radius: float) -> float:
    """Largest distance (µm) between the sphere and the inscribed triangulation."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return radius - float(np.abs(np.einsum("ij,ij->i", a - center, n)).min())


RADIUS = 10.0  # the benchmark sphere (case 018): no grid vertex within 0.16 µm of it


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray]:
    return icosphere(RADIUS, 3)


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj"])
def test_voxelised_sphere_file_matches_analytic(tmp_path: Path, sphere, suffix: str) -> None:
    points, tris = sphere
    grid = bcc_grid(4)
    gap = inscribed_gap(points, tris, np.zeros(3), RADIUS)
    dist = np.abs(np.linalg.norm(grid.points, axis=1) - RADIUS)
    assert gap < 0.1 < dist.min()  # no grid vertex lies within the triangulation error
    path = tmp_path / f"sphere{suffix}"
    kw = {"binary": True} if suffix in (".stl", ".ply") else {}
    meshio.write(path, meshio.Mesh(points, [("triangle", tris)]), **kw)
    p, t = read_surface(path)
    assert len(t) == len(tris) and len(p) == len(points)
    inside, barrier = voxelise_surface(grid, path)
    expected = voxelise(grid, Sphere([0, 0, 0], RADIUS))
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(inside, expected)
    np.testing.assert_array_equal(barrier, barrier_faces(grid, expected))
    # the same through a (points, triangles) pair and a TriangleSurface in voxelise()
    np.testing.assert_array_equal(voxelise_surface(grid, (p, t))[0], expected)
    np.testing.assert_array_equal(voxelise(grid, TriangleSurface(p, t)), expected)


def test_winding_number_matches_analytic_sphere(sphere) -> None:
    points, tris = sphere
    center = np.array([1.0, -2.0, 0.5])
    points = points + center
    gap = inscribed_gap(points, tris, center, RADIUS)
    rng = np.random.default_rng(0)
    q = rng.uniform(-14, 14, size=(2000, 3)) + center
    r = np.linalg.norm(q - center, axis=1)
    q = q[np.abs(r - RADIUS) > 2 * gap]
    truth = Sphere(center, RADIUS).contains(q)
    np.testing.assert_array_equal(inside_surface(q, points, tris), truth)
    w = winding_number(q, points, tris)
    np.testing.assert_allclose(w, truth.astype(float), atol=1e-9)
    # orientation does not matter for the inside test; it flips the winding number's sign
    flipped = tris[:, ::-1]
    np.testing.assert_allclose(winding_number(q, points, flipped), -w, atol=1e-12)
    np.testing.assert_array_equal(inside_surface(q, points, flipped), truth)


def _torus(R: float, r: float, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(n) * 2 * np.pi / n, np.arange(m) * 2 * np.pi / m,
                       indexing="ij")
    pts = np.stack([(R + r * np.cos(v)) * np.cos(u), (R + r * np.cos(v)) * np.sin(u),
                    r * np.sin(v)], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    a, b = i * m + j, ((i + 1) % n) * m + j
    c, d = ((i + 1) % n) * m + (j + 1) % m, i * m + (j + 1) % m
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                           np.stack([a, c, d], -1).reshape(-1, 3)])
    return pts, tris


def test_winding_number_non_convex_torus() -> None:
    pts, tris = _torus(10.0, 6.0, 64, 32)
    assert len(open_edges(tris)) == 0
    rng = np.random.default_rng(1)
    q = rng.uniform(-17, 17, size=(2000, 3))
    rho = np.hypot(np.hypot(q[:, 0], q[:, 1]) - 10.0, q[:, 2])
    q = q[np.abs(rho - 6.0) > 0.1]  # the chords lie within ~0.05 µm of the torus
    truth = Torus([0, 0, 0], [0, 0, 1], 10.0, 6.0).contains(q)
    assert truth.any() and (~truth).any()
    np.testing.assert_array_equal(inside_surface(q, pts, tris), truth)


def test_read_surface_rejects_open_and_non_triangle(tmp_path: Path, sphere) -> None:
    points, tris = sphere
    open_path = tmp_path / "open.ply"
    meshio.write(open_path, meshio.Mesh(points, [("triangle", tris[1:])]))
    with pytest.raises(InputFileError, match="not closed") as info:
        read_surface(open_path)
    assert info.value.source == str(open_path) and info.value.field == "triangles"
    p, t = read_surface(open_path, require_closed=False)  # allowed when asked
    assert len(t) == len(tris) - 1
    with pytest.raises(MeshError, match="not closed"):
        voxelise_surface(bcc_grid(2), (p, t))

    quad_path = tmp_path / "quad.obj"
    quad = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    meshio.write(quad_path, meshio.Mesh(quad, [("quad", np.array([[0, 1, 2, 3]]))]))
    with pytest.raises(InputFileError, match="triangles only") as info:
        read_surface(quad_path)
    assert info.value.field == "cells"

    with pytest.raises(InputFileError, match="not found"):
        read_surface(tmp_path / "missing.stl")
    junk = tmp_path / "junk.stl"
    junk.write_bytes(b"\x00\x01 definitely not an STL")
    with pytest.raises(InputFileError, match="cannot read"):
        read_surface(junk)


def test_surface_validation() -> None:
    with pytest.raises(MeshError):
        TriangleSurface(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(MeshError):
        TriangleSurface(np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError):
        winding_number(np.zeros((2, 2)), np.eye(3), np.array([[0, 1, 2]]))
