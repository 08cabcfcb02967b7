"""Geometric phantoms (µm) and their voxelisation onto a fixed tetrahedral grid.

A shape is a frozen dataclass with ``contains(points) -> bool mask``. The boundary counts
as inside (``<=``, with a relative tolerance of 1e-9 of the shape's size so that lattice
points lying on the surface analytically are not lost to round-off). The benchmark cannot
tell ``<=`` from ``<``: no grid vertex lies within 0.16 µm of the surfaces of targets
016-019, and both conventions reproduce them exactly (sphere r 10; cylinder r 10, height
40 along z; cylinder r 8, height 22, axis (0, -sin 45°, cos 45°) = z rotated +45° about x;
torus R 10, r 6 in the xy plane; all centred at 0). ``<=`` is kept because it puts a box
phantom's barrier exactly on grid planes that coincide with its walls.

Voxelising follows the benchmark: keep the tets whose four vertices are inside
(:func:`voxelise`); the barrier is the set of faces used by exactly one kept tet
(:func:`barrier_faces`); :func:`phantom_kappa` turns it into a per-face κ (µm/µs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from spinverse.errors import MeshError
from spinverse.mesh.grid import TetGrid

__all__ = [
    "Shape",
    "Sphere",
    "Cylinder",
    "Torus",
    "Ellipsoid",
    "Box",
    "Tube",
    "Union",
    "random_bent_axon",
    "voxelise",
    "barrier_faces",
    "phantom_kappa",
    "BARRIER_KAPPA",
    "OTHER_KAPPA",
]

#: Ground-truth κ on barrier faces in the benchmark convention, µm/µs.
BARRIER_KAPPA = 1e-5
#: Ground-truth κ on every other face in the benchmark convention, µm/µs.
OTHER_KAPPA = 0.1
#: Relative tolerance of :meth:`Shape.contains` on the boundary (times the shape's size).
REL_TOL = 1e-9


@runtime_checkable
class Shape(Protocol):
    """Anything with ``contains(points (N, 3) µm) -> (N,) bool``."""

    def contains(self, points: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------- helpers
def _vec3(value: float | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(v)):
        raise MeshError(f"must be finite, got {v.tolist()}", field=name)
    v.setflags(write=False)
    return v


def _positive(value: float, name: str, *, allow_inf: bool = False) -> float:
    v = float(value)
    if not (v > 0) or (np.isinf(v) and not allow_inf):
        what = "positive" if allow_inf else "positive and finite"
        raise MeshError(f"must be {what}, got {v}", field=name)
    return v


def _unit(value: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    v = _vec3(value, name)
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise MeshError("must be a non-zero vector", field=name)
    u = v / norm
    u.setflags(write=False)
    return u


def _points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.shape[0] == 3:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 3:
        raise MeshError(f"expected points of shape (N, 3), got {p.shape}", field="points")
    return p


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Sphere:
    """Ball ``|x - center| <= radius`` (µm)."""

    center: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        _set(self, "center", _vec3(self.center, "center"))
        _set(self, "radius", _positive(self.radius, "radius"))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside or on the sphere."""
        d = np.linalg.norm(_points(points) - self.center, axis=1)
        return d <= self.radius * (1 + REL_TOL)


@dataclass(frozen=True)
class Cylinder:
    """Circular cylinder (µm) of ``radius`` around the line through ``center`` along
    ``axis`` (any direction); ``height`` finite gives a capped cylinder of that length
    centred on ``center``, ``inf`` an infinite one."""

    center: np.ndarray
    axis: np.ndarray
    radius: float
    height: float = np.inf

    def __post_init__(self) -> None:
        _set(self, "center", _vec3(self.center, "center"))
        _set(self, "axis", _unit(self.axis, "axis"))
        _set(self, "radius", _positive(self.radius, "radius"))
        _set(self, "height", _positive(self.height, "height", allow_inf=True))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside or on the cylinder."""
        d = _points(points) - self.center
        t = d @ self.axis
        rho = np.linalg.norm(d - t[:, None] * self.axis, axis=1)
        ok = rho <= self.radius * (1 + REL_TOL)
        if np.isfinite(self.height):
            ok &= np.abs(t) <= 0.5 * self.height * (1 + REL_TOL)
        return ok


@dataclass(frozen=True)
class Torus:
    """Solid torus (µm): points within ``minor_radius`` of the circle of radius
    ``major_radius`` around ``center`` in the plane normal to ``axis``."""

    center: np.ndarray
    axis: np.ndarray
    major_radius: float
    minor_radius: float

    def __post_init__(self) -> None:
        _set(self, "center", _vec3(self.center, "center"))
        _set(self, "axis", _unit(self.axis, "axis"))
        _set(self, "major_radius", _positive(self.major_radius, "major_radius"))
        _set(self, "minor_radius", _positive(self.minor_radius, "minor_radius"))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside or on the torus."""
        d = _points(points) - self.center
        t = d @ self.axis
        rho = np.linalg.norm(d - t[:, None] * self.axis, axis=1)
        dist = np.hypot(rho - self.major_radius, t)
        return dist <= self.minor_radius * (1 + REL_TOL)


@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid (µm) with ``semi_axes`` (a, b, c) along the columns of ``rotation``
    (a 3×3 rotation matrix; identity = axis-aligned)."""

    center: np.ndarray
    semi_axes: np.ndarray
    rotation: np.ndarray | None = None

    def __post_init__(self) -> None:
        _set(self, "center", _vec3(self.center, "center"))
        axes = _vec3(self.semi_axes, "semi_axes")
        if np.any(axes <= 0):
            raise MeshError(f"must be positive, got {axes.tolist()}", field="semi_axes")
        _set(self, "semi_axes", axes)
        if self.rotation is not None:
            r = np.asarray(self.rotation, dtype=np.float64)
            if r.shape != (3, 3) or not np.allclose(r.T @ r, np.eye(3), atol=1e-9):
                raise MeshError("must be a 3×3 orthogonal matrix", field="rotation")
            r = r.copy()
            r.setflags(write=False)
            _set(self, "rotation", r)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside or on the ellipsoid."""
        d = _points(points) - self.center
        if self.rotation is not None:
            d = d @ self.rotation  # coordinates along the ellipsoid's axes
        return np.sum((d / self.semi_axes) ** 2, axis=1) <= 1 + 2 * REL_TOL


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lower <= x <= upper`` (µm)."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = _vec3(self.lower, "lower"), _vec3(self.upper, "upper")
        if np.any(hi <= lo):
            raise MeshError(f"upper {hi.tolist()} must exceed lower {lo.tolist()}", field="upper")
        _set(self, "lower", lo)
        _set(self, "upper", hi)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside or on the box."""
        p = _points(points)
        tol = REL_TOL * float(np.max(self.upper - self.lower))
        return np.all((p >= self.lower - tol) & (p <= self.upper + tol), axis=1)


@dataclass(frozen=True)
class Tube:
    """Union of capsules of ``radius`` around the segments of ``polyline`` (K, 3) µm:
    a bent axon with rounded ends."""

    polyline: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        p = np.asarray(self.polyline, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or len(p) < 2:
            raise MeshError(f"expected shape (K, 3) with K >= 2, got {p.shape}", field="polyline")
        if not np.all(np.isfinite(p)):
            raise MeshError("must be finite", field="polyline")
        p = p.copy()
        p.setflags(write=False)
        _set(self, "polyline", p)
        _set(self, "radius", _positive(self.radius, "radius"))

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) distance in µm from each point to the polyline."""
        p = _points(points)
        a, b = self.polyline[:-1], self.polyline[1:]
        ab = b - a
        len2 = np.maximum(np.einsum("ij,ij->i", ab, ab), np.finfo(float).tiny)
        best = np.full(len(p), np.inf)
        for k in range(len(ab)):  # loop over segments (few), vectorised over points
            t = np.clip((p - a[k]) @ ab[k] / len2[k], 0.0, 1.0)
            best = np.minimum(best, np.linalg.norm(p - a[k] - t[:, None] * ab[k], axis=1))
        return best

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are within ``radius`` of the polyline."""
        return self.distance(points) <= self.radius * (1 + REL_TOL)


@dataclass(frozen=True)
class Union:
    """Union of shapes."""

    shapes: tuple[Shape, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        shapes = tuple(self.shapes)
        if not shapes:
            raise MeshError("needs at least one shape", field="shapes")
        _set(self, "shapes", shapes)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) True where the points (µm) are inside any of the shapes."""
        p = _points(points)
        out = np.zeros(len(p), dtype=bool)
        for s in self.shapes:
            out |= s.contains(p)
        return out


def random_bent_axon(
    seed: int | np.random.Generator | None,
    *,
    n_segments: int = 6,
    radius: float = 7.0,
    box: tuple[float | Sequence[float], float | Sequence[float]] = (-40.0 / 3, 40.0 / 3),
    axis: int | None = None,
    wander: float = 0.5,
    overshoot: float = 0.1,
) -> Tube:
    """A reproducible random bent axon (µm) crossing ``box = (lower, upper)``.

    The polyline has ``n_segments`` segments of equal extent along ``axis`` (random when
    None), from ``overshoot`` × box length outside one face to as far outside the opposite
    face, so the tube runs through both walls. Its two lateral coordinates do a Gaussian
    random walk (step s.d. ``wander`` × half the box width), reflected into the band that
    keeps the tube (``radius``) off the four side walls. The same ``seed`` gives the same
    tube.

    On the benchmark grid, radii of about 7 µm give fills of 0.12-0.18 like the
    benchmark's bent axons (whose names quote smaller radii, 4.2-5.5: those are not tube
    radii in µm under the four-vertex voxelisation rule).
    """
    rng = np.random.default_rng(seed)
    n = int(n_segments)
    if n < 1 or n != n_segments:
        raise MeshError(f"must be a positive integer, got {n_segments}", field="n_segments")
    radius = _positive(radius, "radius")
    lo, hi = _vec3(box[0], "box"), _vec3(box[1], "box")
    if np.any(hi <= lo):
        raise MeshError(f"upper {hi.tolist()} must exceed lower {lo.tolist()}", field="box")
    a = int(rng.integers(3)) if axis is None else int(axis)
    if a not in (0, 1, 2) or (axis is not None and a != axis):
        raise MeshError(f"must be 0, 1 or 2, got {axis}", field="axis")
    side = [d for d in range(3) if d != a]
    mid, half = 0.5 * (lo + hi)[side], 0.5 * (hi - lo)[side]
    band = np.maximum(half - radius, 0.0)  # lateral offsets allowed around the mid-line
    lateral = np.empty((n + 1, 2))
    lateral[0] = rng.uniform(-1.0, 1.0, size=2) * band
    steps = rng.normal(0.0, 1.0, size=(n, 2)) * (wander * half)
    period = np.where(band > 0, 4 * band, 1.0)
    for k in range(n):  # a handful of steps; fold into [-band, band] by reflection
        y = np.mod(lateral[k] + steps[k] + band, period)
        lateral[k + 1] = np.where(band > 0, np.minimum(y, period - y) - band, 0.0)
    length = hi[a] - lo[a]
    poly = np.empty((n + 1, 3))
    poly[:, a] = np.linspace(lo[a] - overshoot * length, hi[a] + overshoot * length, n + 1)
    poly[:, side] = mid + lateral
    return Tube(poly, radius)


# ----------------------------------------------------------------- voxelisation
def voxelise(grid: TetGrid, shape: Shape) -> np.ndarray:
    """(T,) bool: the tets whose four vertices are all inside ``shape``."""
    inside = np.asarray(shape.contains(grid.points), dtype=bool)
    if inside.shape != (grid.n_points,):
        raise MeshError(
            f"contains() returned shape {inside.shape}, expected ({grid.n_points},)",
            field="shape",
        )
    return inside[grid.tets].all(axis=1)


def barrier_faces(grid: TetGrid, inside: np.ndarray) -> np.ndarray:
    """(B,) int64 sorted face indices used by exactly one tet of the mask ``inside`` (T,):
    the closed surface of the kept tets, grid-boundary faces of kept tets included."""
    mask = np.asarray(inside, dtype=bool)
    if mask.shape != (grid.n_tets,):
        raise MeshError(
            f"expected a ({grid.n_tets},) tet mask, got shape {mask.shape}", field="inside"
        )
    counts = np.bincount(grid.tet_faces[mask].reshape(-1), minlength=grid.n_faces)
    return np.flatnonzero(counts == 1).astype(np.int64)


def phantom_kappa(
    grid: TetGrid,
    barrier: np.ndarray,
    *,
    barrier_kappa: float = BARRIER_KAPPA,
    other_kappa: float = OTHER_KAPPA,
) -> np.ndarray:
    """(F,) float64 per-face κ in µm/µs: ``barrier_kappa`` on the faces ``barrier`` (indices
    or an (F,) bool mask), ``other_kappa`` elsewhere (benchmark ground truth: 1e-5 / 0.1)."""
    b = np.asarray(barrier)
    kappa = np.full(grid.n_faces, float(other_kappa))
    if b.dtype == bool:
        if b.shape != (grid.n_faces,):
            raise MeshError(
                f"expected a ({grid.n_faces},) face mask, got shape {b.shape}", field="barrier"
            )
        kappa[b] = barrier_kappa
        return kappa
    b = b.astype(np.int64).reshape(-1)
    if b.size and (b.min() < 0 or b.max() >= grid.n_faces):
        raise MeshError(
            f"face indices must lie in [0, {grid.n_faces - 1}], got [{b.min()}, {b.max()}]",
            field="barrier",
        )
    kappa[b] = barrier_kappa
    return kappa
