"""Closed triangle surfaces (STL, PLY, OBJ, ... via meshio) as phantoms on a fixed grid.

* :func:`read_surface` reads a triangle surface (points in µm) and checks that it is made
  of triangles only and, by default, closed (every edge shared by exactly two triangles).
* :func:`inside_surface` classifies points by the generalised winding number
  ``w(p) = Σ_t Ω_t(p) / 4π`` (Ω_t: the signed solid angle of triangle t seen from p, by the
  Van Oosterom-Strackee formula): ``|w| > 1/2`` is inside. It is vectorised, independent
  of the triangles' orientation and exact up to round-off for closed surfaces, for points
  not on the surface itself.
* :func:`voxelise_surface` applies the project's voxelisation rule (see
  :mod:`spinverse.mesh.phantoms`): keep the tets whose four vertices are inside; the
  barrier is the set of faces used by exactly one kept tet.

:class:`TriangleSurface` has ``contains(points)``, so it is a
:class:`~spinverse.mesh.phantoms.Shape` and works with ``voxelise`` and ``Union``.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinverse.errors import InputFileError, MeshError
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import barrier_faces, voxelise

__all__ = [
    "TriangleSurface",
    "read_surface",
    "inside_surface",
    "winding_number",
    "voxelise_surface",
    "open_edges",
]

PathLike = str | os.PathLike[str]

#: Largest number of (point, triangle) pairs evaluated at once by :func:`winding_number`.
_CHUNK = 2_000_000


def _check_surface(points: np.ndarray, triangles: np.ndarray,
                   src: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points)
    t = np.asarray(triangles)
    if p.ndim != 2 or p.shape[1] != 3 or not np.issubdtype(p.dtype, np.number) \
            or np.iscomplexobj(p):
        raise MeshError(f"expected real (V, 3) points, got {p.dtype} {p.shape}", source=src,
                        field="points")
    if not np.all(np.isfinite(p)):
        raise MeshError("points must be finite", source=src, field="points")
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0 or not np.issubdtype(t.dtype, np.integer):
        raise MeshError(f"expected a non-empty integer (T, 3) array, got {t.dtype} {t.shape}",
                        source=src, field="triangles")
    if t.min() < 0 or t.max() >= len(p):
        raise MeshError(f"vertex ids must lie in [0, {len(p) - 1}]", source=src,
                        field="triangles")
    return p.astype(np.float64), t.astype(np.int64)


def open_edges(triangles: np.ndarray) -> np.ndarray:
    """(K, 2) edges (sorted vertex pairs) not shared by exactly two triangles: empty for a
    closed (watertight, edge-manifold) surface."""
    t = np.asarray(triangles, dtype=np.int64)
    e = np.sort(t[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq[counts != 2]


@dataclass(frozen=True, eq=False)
class TriangleSurface:
    """A triangle surface: ``points`` (V, 3) µm and ``triangles`` (T, 3) vertex ids.
    ``contains`` is the winding-number inside test (meaningful for closed surfaces)."""

    points: np.ndarray
    triangles: np.ndarray

    def __post_init__(self) -> None:
        p, t = _check_surface(self.points, self.triangles)
        p.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "points", p)
        object.__setattr__(self, "triangles", t)

    @property
    def is_closed(self) -> bool:
        """True when every edge is shared by exactly two triangles."""
        return len(open_edges(self.triangles)) == 0

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside (|winding number| > 1/2)."""
        return inside_surface(points, self.points, self.triangles)


def read_surface(path: PathLike, *, require_closed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle surface (STL, PLY, OBJ or any meshio format): (V, 3) points in µm
    and (T, 3) int64 triangles. Exactly repeated points (STL stores one copy per triangle)
    are merged and unused ones dropped.

    Raises :class:`InputFileError` when the file is missing or unreadable, holds cells
    other than triangles (quads, polygons, tets...) or, with ``require_closed``, is not
    closed (an edge not shared by exactly two triangles).
    """
    import meshio

    p, src = Path(path), str(path)
    if not p.exists():
        raise InputFileError("file not found", source=src)
    if not p.is_file():
        raise InputFileError("not a regular file", source=src)
    said = io.StringIO()
    try:  # meshio prints and may sys.exit on a parse failure
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            mesh = meshio.read(p)
    except (Exception, SystemExit) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc} {said.getvalue()}".split())
        raise InputFileError(f"cannot read as a surface ({detail})", source=src) from None
    kinds = sorted({b.type for b in mesh.cells if len(b.data)})
    other = [k for k in kinds if k not in ("triangle", "vertex", "line")]
    if other:
        raise InputFileError(f"expected triangles only, found {', '.join(other)} cells "
                             "(triangulate the surface first)", source=src, field="cells")
    tris = [np.asarray(b.data) for b in mesh.cells if b.type == "triangle"]
    if not tris or sum(len(t) for t in tris) == 0:
        raise InputFileError(f"no triangle cells (cell types: {', '.join(kinds) or 'none'})",
                             source=src, field="cells")
    try:
        points, triangles = _check_surface(np.asarray(mesh.points), np.concatenate(tris), src)
    except MeshError as exc:
        raise InputFileError(exc.message, source=src, field=exc.field) from None
    uniq, inverse = np.unique(points, axis=0, return_inverse=True)
    triangles = inverse.reshape(-1)[triangles]
    used, compact = np.unique(triangles, return_inverse=True)
    points, triangles = uniq[used], compact.reshape(-1, 3).astype(np.int64)
    if np.any((triangles[:, 0] == triangles[:, 1]) | (triangles[:, 1] == triangles[:, 2])
              | (triangles[:, 0] == triangles[:, 2])):
        raise InputFileError("a triangle repeats a vertex (degenerate)", source=src,
                             field="triangles")
    if require_closed:
        bad = open_edges(triangles)
        if len(bad):
            raise InputFileError(
                f"the surface is not closed: {len(bad)} edges are not shared by exactly two "
                f"triangles (first: between points {points[bad[0, 0]].tolist()} and "
                f"{points[bad[0, 1]].tolist()})", source=src, field="triangles")
    return points, triangles


def winding_number(points: np.ndarray, surface_points: np.ndarray,
                   triangles: np.ndarray) -> np.ndarray:
    """(N,) generalised winding number of a triangle surface at each point (µm): ±1 inside
    a closed surface (sign = orientation), 0 outside; fractional for open surfaces."""
    q = np.asarray(points, dtype=np.float64)
    if q.ndim == 1 and q.shape[0] == 3:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != 3:
        raise MeshError(f"expected points of shape (N, 3), got {q.shape}", field="points")
    sp, tri = _check_surface(surface_points, triangles)
    corners = [sp[tri[:, k]].T[:, None, :] for k in range(3)]  # 3 × (3, 1, T)
    out = np.empty(len(q))
    step = max(1, _CHUNK // len(tri))
    for s in range(0, len(q), step):
        x = q[s : s + step].T[:, :, None]  # (3, n, 1)
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = (v - x for v in corners)  # (n, T) each
        la = np.sqrt(ax * ax + ay * ay + az * az)
        lb = np.sqrt(bx * bx + by * by + bz * bz)
        lc = np.sqrt(cx * cx + cy * cy + cz * cz)
        det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        den = (la * lb * lc + (ax * bx + ay * by + az * bz) * lc
               + (bx * cx + by * cy + bz * cz) * la + (cx * ax + cy * ay + cz * az) * lb)
        # Ω = 2 atan2(det, den) (Van Oosterom-Strackee); w = Σ Ω / 4π
        out[s : s + step] = np.arctan2(det, den).sum(axis=1) / (2 * np.pi)
    return out


def inside_surface(points: np.ndarray, surface_points: np.ndarray,
                   triangles: np.ndarray) -> np.ndarray:
    """(N,) bool: True where the points (µm) are inside the closed surface
    (|generalised winding number| > 1/2; any triangle orientation)."""
    return np.abs(winding_number(points, surface_points, triangles)) > 0.5


def voxelise_surface(
    grid: TetGrid,
    surface: PathLike | tuple[np.ndarray, np.ndarray] | TriangleSurface,
    *,
    require_closed: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The tets of ``grid`` inside a closed surface (a file path, a (points, triangles)
    pair or a :class:`TriangleSurface`; µm): ``(inside (T,) bool, barrier (B,) int64 face
    indices)``, with the rule of :func:`~spinverse.mesh.phantoms.voxelise` (all four
    vertices inside) and :func:`~spinverse.mesh.phantoms.barrier_faces`."""
    if isinstance(surface, TriangleSurface):
        shape = surface
    elif isinstance(surface, tuple):
        shape = TriangleSurface(*surface)
    else:
        shape = TriangleSurface(*read_surface(surface, require_closed=require_closed))
    if require_closed and not shape.is_closed:
        raise MeshError("the surface is not closed (an edge not shared by exactly two "
                        "triangles)", field="triangles")
    inside = voxelise(grid, shape)
    return inside, barrier_faces(grid, inside)
