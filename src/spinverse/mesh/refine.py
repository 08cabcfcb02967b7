"""Uniform 1:8 ("red") refinement of a tetrahedral grid, for targets that are not an
inverse crime.

Every tet is split at its edge midpoints into four corner tets and an inner octahedron,
which is cut along its shortest diagonal into four more (Bey's rule): eight children of
equal volume that tile the parent exactly. Midpoints are shared between neighbours, so the
refined grid is conforming. A region (a set of parent tets) maps onto the refined grid as
the set of their children, so a barrier surface is the *same geometric surface* on both
grids: only the discretisation changes. On the benchmark's BCC grid the children are
exactly the tets of ``bcc_grid(8)`` that lie inside ``bcc_grid(4)``'s domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinverse.errors import MeshError
from spinverse.mesh.grid import TetGrid, unique_rows

__all__ = ["RefinedGrid", "refine", "refine_region", "refine_kappa", "coarse_face_of"]

# The six edges of a tet, as local vertex pairs, and where each midpoint sits in `mid`.
_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
# Corner tets: vertex i with the midpoints of its three edges (indices into _EDGES).
_CORNERS = np.array([[0, 1, 2], [0, 3, 4], [1, 3, 5], [2, 4, 5]])
# Octahedron split: for each diagonal (pair of opposite edges) the other four midpoints
# in ring order; each consecutive ring pair with the diagonal is one inner tet.
_DIAGONALS = np.array([[0, 5], [1, 4], [2, 3]])
_RINGS = np.array([[1, 2, 4, 3], [0, 2, 5, 3], [0, 1, 5, 4]])


@dataclass(frozen=True)
class RefinedGrid:
    """A refined grid and, for each of its tets, the parent tet it came from."""

    grid: TetGrid
    #: (T_fine,) int64: index of each fine tet's parent in the coarse grid.
    parent: np.ndarray
    #: Number of 1:8 refinement levels applied.
    levels: int


def _refine_once(grid: TetGrid) -> tuple[TetGrid, np.ndarray]:
    tets = grid.tets
    n_t, n_p = len(tets), grid.n_points
    pairs = np.sort(tets[:, _EDGES].reshape(-1, 2), axis=1)  # (6T, 2)
    edges, inverse = unique_rows(pairs)
    mid = (n_p + inverse).reshape(n_t, 6)  # point id of each tet edge's midpoint
    points = np.concatenate([grid.points, grid.points[edges].mean(axis=1)])

    corners = np.concatenate([tets[:, :, None], mid[:, _CORNERS]], axis=2)  # (T, 4, 4)
    diag_len = np.linalg.norm(points[mid[:, _DIAGONALS[:, 0]]]
                              - points[mid[:, _DIAGONALS[:, 1]]], axis=2)  # (T, 3)
    choice = np.argmin(diag_len, axis=1)  # ties: the first diagonal, deterministic
    a = mid[np.arange(n_t), _DIAGONALS[choice, 0]]
    b = mid[np.arange(n_t), _DIAGONALS[choice, 1]]
    ring = np.take_along_axis(mid, _RINGS[choice], axis=1)  # (T, 4)
    inner = np.stack([np.stack([a, b, ring[:, k], ring[:, (k + 1) % 4]], axis=1)
                      for k in range(4)], axis=1)  # (T, 4, 4)
    children = np.concatenate([corners, inner], axis=1).reshape(-1, 4)
    parent = np.repeat(np.arange(n_t, dtype=np.int64), 8)
    return TetGrid(points, children), parent


def refine(grid: TetGrid, levels: int = 1) -> RefinedGrid:
    """Split every tet into 8 children ``levels`` times (each level: 8× the tets, edges
    halved, lengths in µm unchanged); returns the fine grid and each fine tet's parent in
    ``grid``. The fine grid's face order is its own (sorted unique faces)."""
    n = int(levels)
    if n < 0 or n != levels:
        raise MeshError(f"levels must be a non-negative integer, got {levels!r}",
                        field="levels")
    fine, parent = grid, np.arange(grid.n_tets, dtype=np.int64)
    for _ in range(n):
        fine, step = _refine_once(fine)
        parent = parent[step]
    parent.setflags(write=False)
    return RefinedGrid(fine, parent, n)


def refine_region(refined: RefinedGrid, inside: np.ndarray) -> np.ndarray:
    """(T_fine,) bool: the fine tets whose parent is in the coarse tet mask ``inside``."""
    mask = np.asarray(inside, dtype=bool)
    n_coarse = int(refined.parent.max()) + 1 if refined.parent.size else 0
    if mask.ndim != 1 or len(mask) < n_coarse:
        raise MeshError(f"expected a coarse tet mask of length ≥ {n_coarse}, got shape "
                        f"{mask.shape}", field="inside")
    return mask[refined.parent]


def coarse_face_of(refined: RefinedGrid, coarse: TetGrid) -> np.ndarray:
    """(F_fine,) int64: for each fine face, the coarse face it lies on, or -1 for the new
    faces that cut through the inside of a coarse tet."""
    if len(refined.parent) != refined.grid.n_tets or (
            refined.parent.size and refined.parent.max() >= coarse.n_tets):
        raise MeshError("the refined grid does not come from this coarse grid",
                        field="coarse")
    fine = refined.grid
    tet = fine.face_tets[:, 0]  # one fine tet per face; its parent contains the face
    par = refined.parent[tet]
    verts = coarse.points[coarse.tets[par]]  # (F, 4, 3)
    x = fine.face_centroids
    mat = np.transpose(verts[:, 1:] - verts[:, :1], (0, 2, 1))
    lam123 = np.linalg.solve(mat, (x - verts[:, 0])[..., None])[..., 0]
    lam = np.concatenate([1.0 - lam123.sum(axis=1, keepdims=True), lam123], axis=1)
    # A face on the parent's boundary has a zero barycentric coordinate at its centroid;
    # a face through the parent's inside has its centroid strictly inside.
    on = np.abs(lam) < 1e-9
    result = np.full(fine.n_faces, -1, dtype=np.int64)
    hit = np.flatnonzero(on.any(axis=1))
    local = np.argmax(on[hit], axis=1)  # the vertex opposite the face
    result[hit] = coarse.tet_faces[par[hit], _opposite_slot(coarse, par[hit], local)]
    return result


def _opposite_slot(coarse: TetGrid, tets: np.ndarray, vertex: np.ndarray) -> np.ndarray:
    """Column of ``coarse.tet_faces`` holding the face of ``tets`` opposite local ``vertex``."""
    faces = coarse.faces[coarse.tet_faces[tets]]  # (n, 4, 3)
    v = coarse.tets[tets, vertex]
    lacks = ~np.any(faces == v[:, None, None], axis=2)  # (n, 4): the face without v
    return np.argmax(lacks, axis=1)


def refine_kappa(refined: RefinedGrid, coarse: TetGrid, kappa: np.ndarray, *,
                 new_faces: float = np.inf) -> np.ndarray:
    """(F_fine,) κ in µm/µs on the refined grid: each fine face lying on a coarse face
    keeps that face's κ; the new faces inside coarse tets get ``new_faces`` (default ∞,
    continuous; the benchmark convention uses 0.1 on every non-barrier face)."""
    k = np.asarray(kappa, dtype=np.float64)
    if k.shape != (coarse.n_faces,):
        raise MeshError(f"expected ({coarse.n_faces},) per-face κ, got shape {k.shape}",
                        field="kappa")
    src = coarse_face_of(refined, coarse)
    out = np.full(refined.grid.n_faces, float(new_faces))
    out[src >= 0] = k[src[src >= 0]]
    return out
