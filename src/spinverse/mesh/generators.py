"""Structured tetrahedral grids: the benchmark's BCC grid and tensor-product boxes (µm).

* :func:`bcc_grid` builds the body-centred-cubic tetrahedralisation of the published
  benchmark (``bcc_grid(4)`` is the benchmark grid): vertices at the cube corners and
  cube centres, one tetrahedron per (cube edge, pair of face-adjacent cubes sharing it).
* :func:`box_grid` splits each cell of a tensor-product grid into 6 tetrahedra (Kuhn /
  Freudenthal split along the main diagonal), so that planes of faces lie exactly at every
  given coordinate: the natural grid for slabs and planar membranes.

Every generator returns a :class:`~spinverse.mesh.grid.TetGrid` whose points are in
lexicographic order of their (x, y, z) lattice index and whose tets have sorted vertex ids,
rows in lexicographic order (:func:`bcc_grid` numbers the cell corners before the cell
centres, like the benchmark file).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np

from spinverse.errors import MeshError
from spinverse.mesh.grid import TetGrid

__all__ = ["bcc_grid", "box_grid", "uniform_box_grid", "BENCHMARK_HALF_WIDTH"]

#: Half-width of the benchmark box in µm (the box is [-40/3, 40/3]³, cube edge 20/3 µm).
BENCHMARK_HALF_WIDTH = 40.0 / 3.0

ArrayLike3 = float | Sequence[float] | np.ndarray


def _corner(value: ArrayLike3, name: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(v)):
        raise MeshError(f"must be finite, got {v.tolist()}", field=name)
    return v


def _sorted_tets(tets: np.ndarray) -> np.ndarray:
    tets = np.sort(tets, axis=1)
    return tets[np.lexsort(tets.T[::-1])]


def bcc_grid(
    n_cubes: int,
    lower: ArrayLike3 = -BENCHMARK_HALF_WIDTH,
    upper: ArrayLike3 = BENCHMARK_HALF_WIDTH,
) -> TetGrid:
    """Body-centred-cubic tetrahedralisation of the box ``[lower, upper]`` (µm).

    ``n_cubes`` cubes per axis (cells of edge ``(upper - lower) / n_cubes`` µm, which need not
    be cubic when the box is not); vertices are the ``(n+1)³`` cell corners plus the ``n³``
    cell centres. For every cell edge and every pair of face-adjacent cells that share that
    edge, one tetrahedron (the two edge ends and the two cell centres) of volume
    hx·hy·hz/12 µm³ (h³/12 for cubic cells).
    Tets exist only where both cells exist, so the union is the box minus one square pyramid
    per outer cell face. ``bcc_grid(4)`` reproduces the benchmark grid (189 points, 576
    tets, 1296 faces of which 288 outer).
    """
    n = int(n_cubes)
    if n < 1 or n != n_cubes:
        raise MeshError(f"n_cubes must be a positive integer, got {n_cubes!r}", field="n_cubes")
    lo, hi = _corner(lower, "lower"), _corner(upper, "upper")
    if np.any(hi <= lo):
        raise MeshError(f"upper {hi.tolist()} must exceed lower {lo.tolist()}", field="upper")

    # Half-lattice indices 0..2n per axis: corners are all-even, centres all-odd.
    m = 2 * n + 1

    idx = np.stack(np.meshgrid(*(np.arange(m),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    parity = idx % 2
    # Corners (all even) first, then centres (all odd), each in lexicographic order: the
    # numbering of the benchmark file.
    half = np.concatenate([idx[np.all(parity == 0, axis=1)], idx[np.all(parity == 1, axis=1)]])
    lookup = -np.ones((m, m, m), dtype=np.int64)  # half-lattice index -> point id
    lookup[half[:, 0], half[:, 1], half[:, 2]] = np.arange(len(half))

    def ids(q: np.ndarray) -> np.ndarray:
        return lookup[q[:, 0], q[:, 1], q[:, 2]]

    points = lo + (hi - lo) * (half / (2 * n))

    blocks = []
    eye = np.eye(3, dtype=np.int64)
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        # Edges along axis a: start corner (cell index) i_a in 0..n-1, i_b, i_c in 0..n.
        ranges = [np.arange(n + 1)] * 3
        ranges[a] = np.arange(n)
        start = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
        p0 = 2 * start
        p1 = p0 + 2 * eye[a]
        # The four cells around the edge are offset by -1 or 0 along b and c; each pair of
        # face-adjacent ones differs in exactly one of b, c.
        for fixed, moving in ((b, c), (c, b)):
            for s_fixed in (-1, 0):
                cell0 = start.copy()
                cell0[:, fixed] += s_fixed
                cell1 = cell0.copy()
                cell0[:, moving] -= 1
                ok = np.all((cell0 >= 0) & (cell0 < n), axis=1) & np.all(
                    (cell1 >= 0) & (cell1 < n), axis=1
                )
                c0, c1 = 2 * cell0[ok] + 1, 2 * cell1[ok] + 1  # cell centres
                q0, q1 = p0[ok], p1[ok]
                blocks.append(np.stack([ids(q0), ids(q1), ids(c0), ids(c1)], axis=1))
    return TetGrid(points, _sorted_tets(np.concatenate(blocks)))


#: The 6 Kuhn simplices of the unit cube: each follows the path 0 → e_p0 → e_p0+e_p1 → 1.
def _kuhn_offsets() -> np.ndarray:
    out = []
    for perm in permutations(range(3)):
        v = np.zeros(3, dtype=np.int64)
        path = [v.copy()]
        for ax in perm:
            v[ax] += 1
            path.append(v.copy())
        out.append(path)
    return np.array(out, dtype=np.int64)  # (6, 4, 3)


_KUHN = _kuhn_offsets()


def _axis_coords(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) < 2:
        raise MeshError(f"needs at least 2 coordinates, got {len(v)}", field=name)
    if not np.all(np.isfinite(v)):
        raise MeshError("coordinates must be finite", field=name)
    if np.any(np.diff(v) <= 0):
        raise MeshError("coordinates must be strictly increasing", field=name)
    return v


def box_grid(
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    zs: Sequence[float] | np.ndarray,
) -> TetGrid:
    """Tensor-product box grid on the strictly increasing coordinates ``xs, ys, zs`` (µm).

    Each of the ``(len(xs)-1)(len(ys)-1)(len(zs)-1)`` cells is split into 6 tetrahedra by
    the Kuhn (Freudenthal) split along its main diagonal; every cell uses the same split,
    so the grid is conforming and every coordinate plane ``x = xs[i]`` (``y = ys[j]``,
    ``z = zs[k]``) is exactly a union of faces.
    """
    axes = [_axis_coords(v, nm) for v, nm in ((xs, "xs"), (ys, "ys"), (zs, "zs"))]
    nx, ny, nz = (len(a) for a in axes)
    grid = np.meshgrid(*axes, indexing="ij")
    points = np.stack([g.reshape(-1) for g in grid], axis=1)
    cells = np.stack(
        np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), np.arange(nz - 1), indexing="ij"),
        axis=-1,
    ).reshape(-1, 1, 1, 3)
    ijk = cells + _KUHN[None]  # (C, 6, 4, 3)
    ids = (ijk[..., 0] * ny + ijk[..., 1]) * nz + ijk[..., 2]
    return TetGrid(points, _sorted_tets(ids.reshape(-1, 4)))


def uniform_box_grid(
    lower: ArrayLike3,
    upper: ArrayLike3,
    n: int | Sequence[int],
) -> TetGrid:
    """:func:`box_grid` with ``n`` uniform cells per axis (an int or 3 ints) on the box
    ``[lower, upper]`` (µm; scalars or 3-vectors)."""
    lo, hi = _corner(lower, "lower"), _corner(upper, "upper")
    counts = np.broadcast_to(np.asarray(n), (3,))
    if np.any(counts < 1) or np.any(counts != np.round(counts)):
        raise MeshError(f"n must be positive integers, got {np.asarray(n).tolist()}", field="n")
    if np.any(hi <= lo):
        raise MeshError(f"upper {hi.tolist()} must exceed lower {lo.tolist()}", field="upper")
    return box_grid(*(np.linspace(lo[d], hi[d], int(counts[d]) + 1) for d in range(3)))
