"""Shape families: a few continuous parameters → a region of the grid, fitted by CMA-ES.

A family proposes whole shapes; every shape is voxelised (a tet is inside when its centroid
is: the rule under which a tube family represents the benchmark's bent axons exactly),
repaired to a closed 2-manifold surface and scored exactly, sharp. Parameters are in
units of the grid's half-width about its centre, so one CMA step size fits every grid.

* :class:`TubeFamily`: a tube of radius r around a polyline of ``n_segments`` segments
  (bent axons, cylinders; a polyline folded back on itself makes a blob);
* :class:`EllipsoidFamily`: centre, three semi-axes and a rotation (spheres, ellipsoids);
* :class:`BallsFamily`: a union of balls (several compartments, lumpy shapes);
* :class:`RingFamily`: a solid torus (shapes with a hole).

:func:`fit_family` runs CMA-ES (the ``cma`` package) with restarts of doubling population
(IPOP) until its budget of distinct shapes is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator

__all__ = ["ShapeFamily", "TubeFamily", "EllipsoidFamily", "BallsFamily", "RingFamily",
           "fit_family", "FamilyFit", "FAMILIES"]


def _segment_distance(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(N,) distance from each point to the polyline (K, 3)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(poly[:-1], poly[1:], strict=True):  # a few segments
        ab = b - a
        t = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-300), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - a - t[:, None] * ab, axis=1))
    return best


def _axes(tensor: np.ndarray) -> np.ndarray:
    """(3, 3) principal axes (columns, a right-handed frame) of a tensor, ascending."""
    vectors = np.linalg.eigh(0.5 * (tensor + tensor.T))[1]
    if np.linalg.det(vectors) < 0:
        vectors[:, 0] *= -1
    return vectors


def _rotation(vec: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (axis × angle, radians)."""
    angle = float(np.linalg.norm(vec))
    if angle < 1e-12:
        return np.eye(3)
    k = vec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


@dataclass(frozen=True)
class ShapeFamily:
    """Base: ``region(x)`` for a parameter vector in half-width units."""

    name = "family"

    def dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def starts(self, tensor: np.ndarray, volume: float) -> list[np.ndarray]:  # pragma: no cover
        """Start vectors (the first the most likely) from the target's apparent diffusion
        tensor (3, 3) and the volume of its compartment (half-width units³)."""
        raise NotImplementedError

    def contains(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:  # pragma: no cover
        """(N,) bool for points in half-width units about the grid centre."""
        raise NotImplementedError


@dataclass(frozen=True)
class TubeFamily(ShapeFamily):
    """A tube: ``n_segments + 1`` polyline vertices (3 each) and a radius."""

    n_segments: int = 4
    name = "tube"

    def dim(self) -> int:
        return 3 * (self.n_segments + 1) + 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = 3 * (self.n_segments + 1)
        return (np.r_[np.full(n, -1.3), 0.05], np.r_[np.full(n, 1.3), 1.0])

    def starts(self, tensor: np.ndarray, volume: float) -> list[np.ndarray]:
        axis = _axes(tensor)[:, -1]
        poly = np.outer(np.linspace(-1.1, 1.1, self.n_segments + 1), axis)
        radius = np.sqrt(volume / (np.pi * 2.0))  # a tube across the box
        return [np.r_[poly.ravel(), np.clip(f * radius, 0.06, 0.99)] for f in (1.0, 0.8, 1.25)]

    def contains(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        poly = np.asarray(x[:-1]).reshape(self.n_segments + 1, 3)
        return _segment_distance(points, poly) <= x[-1]


@dataclass(frozen=True)
class EllipsoidFamily(ShapeFamily):
    """An ellipsoid: centre (3), log semi-axes (3), rotation vector (3)."""

    name = "ellipsoid"

    def dim(self) -> int:
        return 9

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.r_[np.full(3, -1.0), np.full(3, np.log(0.05)), np.full(3, -2 * np.pi)],
                np.r_[np.full(3, 1.0), np.full(3, np.log(2.0)), np.full(3, 2 * np.pi)])

    def starts(self, tensor: np.ndarray, volume: float) -> list[np.ndarray]:
        from scipy.spatial.transform import Rotation

        values = np.linalg.eigvalsh(0.5 * (tensor + tensor.T))
        vectors = _axes(tensor)
        shape = np.sqrt(np.maximum(values, 1e-2 * max(values.max(), 1e-30)))
        axes = shape * np.cbrt(volume / (4 / 3 * np.pi * np.prod(shape)))
        rotvec = Rotation.from_matrix(vectors).as_rotvec()
        return [np.r_[np.zeros(3), np.log(np.clip(f * axes, 0.06, 1.9)), rotvec]
                for f in (1.0, 0.85, 1.15)]

    def contains(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        rel = (points - x[:3]) @ _rotation(x[6:9])
        return np.sum((rel / np.exp(x[3:6])) ** 2, axis=1) <= 1.0


@dataclass(frozen=True)
class BallsFamily(ShapeFamily):
    """A union of ``n_balls`` balls: centres (3 each) and radii (separate compartments,
    or one lumpy one where they overlap)."""

    n_balls: int = 2
    name = "balls"

    def dim(self) -> int:
        return 4 * self.n_balls

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_balls
        return (np.r_[np.full(3 * n, -1.0), np.full(n, 0.05)],
                np.r_[np.full(3 * n, 1.0), np.full(n, 1.0)])

    def starts(self, tensor: np.ndarray, volume: float) -> list[np.ndarray]:
        axes = _axes(tensor)
        n = self.n_balls
        radius = np.clip(np.cbrt(volume / (n * 4 / 3 * np.pi)), 0.06, 0.99)
        out = []
        for k, spread in ((-1, 0.5), (-1, 0.8), (1, 0.6)):  # along the main / middle axis
            line = np.linspace(-spread, spread, n) if n > 1 else np.zeros(1)
            out.append(np.r_[np.outer(line, axes[:, k]).ravel(), np.full(n, radius)])
        return out

    def contains(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        n = self.n_balls
        centres, radii = np.asarray(x[:3 * n]).reshape(n, 3), np.asarray(x[3 * n:])
        d = np.linalg.norm(points[:, None, :] - centres[None], axis=2)
        return np.any(d <= radii[None], axis=1)


@dataclass(frozen=True)
class RingFamily(ShapeFamily):
    """A solid torus: centre (3), axis (3, any length), major and minor radius (rings,
    shapes with a hole)."""

    name = "ring"

    def dim(self) -> int:
        return 8

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.r_[np.full(3, -1.0), np.full(3, -1.0), 0.1, 0.05],
                np.r_[np.full(3, 1.0), np.full(3, 1.0), 1.2, 0.8])

    def starts(self, tensor: np.ndarray, volume: float) -> list[np.ndarray]:
        axis = _axes(tensor)[:, 0]  # a flat ring diffuses least along its axis
        out = []
        for major in (0.75, 0.5, 1.0):
            minor = np.sqrt(volume / (2 * np.pi**2 * major))
            out.append(np.r_[np.zeros(3), axis, major, np.clip(minor, 0.06, 0.7)])
        return out

    def contains(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        axis = np.asarray(x[3:6], float)
        axis = axis / max(float(np.linalg.norm(axis)), 1e-12)
        d = points - x[:3]
        t = d @ axis
        rho = np.linalg.norm(d - t[:, None] * axis, axis=1)
        return np.hypot(rho - x[6], t) <= x[7]


#: Families by name (the search config refers to these).
FAMILIES: dict[str, Callable[[], ShapeFamily]] = {
    "tube": TubeFamily,
    "ellipsoid": EllipsoidFamily,
    "balls": BallsFamily,
    "ring": RingFamily,
}


@dataclass(frozen=True)
class FamilyFit:
    """Best region found by a family fit, its loss and parameters, and the fit's cost."""

    family: str
    region: np.ndarray
    loss: float
    x: np.ndarray
    evaluations: int
    restarts: int


def fit_family(
    family: ShapeFamily,
    space: RegionSpace,
    evaluator: Evaluator,
    starts: list[np.ndarray],
    *,
    budget: int,
    seed: int,
    sigma0: float = 0.3,
    popsize: int = 16,
    max_restarts: int = 3,
) -> FamilyFit:
    """CMA-ES over ``family`` from the best of ``starts`` until ``budget`` distinct
    regions have been scored (cached ones are free), with IPOP restarts from the best
    point. Shapes that are not valid regions (empty, the whole grid, not a closed
    2-manifold after repair) get a penalty; the fit's loss is inf when it found no valid
    one."""
    import cma

    half = 0.5 * np.ptp(space.grid.points, axis=0).max()
    pts = (space.grid.tet_centroids - space.centre) / half
    lo, hi = family.bounds()
    start = evaluator.n_requested
    penalty = 1e3

    def region(x: np.ndarray) -> np.ndarray:
        inside = family.contains(np.asarray(x), pts)
        return space.repair(inside) if inside.any() else inside

    def score(xs: list[np.ndarray]) -> tuple[list[np.ndarray], list[float], list[bool]]:
        regions = [region(x) for x in xs]
        ok = [space.is_valid(r) for r in regions]
        valid = [r for r, good in zip(regions, ok, strict=True) if good]
        scored = iter(evaluator.losses(valid)) if valid else iter(())
        return regions, [next(scored) if good else penalty for good in ok], ok

    xs0 = [np.clip(np.asarray(x, float), lo, hi) for x in starts]
    regions, losses, ok = score(xs0)
    i = int(np.argmin(losses))
    best_x = xs0[i]
    best_loss, best_region = (losses[i], regions[i]) if ok[i] else (np.inf, regions[i])
    restarts = 0
    xstart, pop = best_x, popsize
    while evaluator.n_requested - start < budget and restarts <= max_restarts:
        es = cma.CMAEvolutionStrategy(
            xstart, sigma0,
            {"popsize": pop, "seed": seed + 1000 * restarts + 1, "verbose": -9,
             "bounds": [lo.tolist(), hi.tolist()], "maxiter": 100000},
        )
        stale = 0
        while not es.stop() and evaluator.n_requested - start < budget and stale < 30:
            xs = es.ask()
            before = evaluator.n_requested
            regions, losses, ok = score(xs)
            stale = stale + 1 if evaluator.n_requested == before else 0
            es.tell(xs, losses)
            i = int(np.argmin(losses))
            if ok[i] and losses[i] < best_loss:
                best_loss, best_region, best_x = losses[i], regions[i], np.asarray(xs[i])
        restarts += 1
        xstart, pop = best_x, 2 * pop
    return FamilyFit(family.name, best_region, float(best_loss), best_x,
                     evaluator.n_requested - start, restarts)
