"""Whole-shape moves: images under the grid's symmetries, and random kicks.

Shapes have near-symmetric twins (a bent axon and its mirror image shifted by a lattice
step; a small compartment and its rotated copy) whose loss is close to the truth's. A search
that lands on a twin reaches the truth's basin by the inverse image. For the whole region
and, when it has several compartments, for each compartment alone, :func:`symmetry_images`
lists the images under every cube symmetry of the grid (about its centre), translated by
the lattice vector that brings the image's centroid back nearest to the original's; for
the whole region also untranslated, and each of these also moved by each of the shortest
lattice steps. For the whole region, a symmetry and its composition with the point
reflection differ by the point reflection (which changes no signal magnitude) and a shift,
so only one of each pair is used. Images that lose more than a fifth of their tets off the
grid are skipped; the rest are repaired to closed 2-manifolds.

:func:`random_kick` makes one large random change for basin hopping: grow or shrink a patch
of the surface, shift a patch or a whole compartment by a lattice step, add a small new
compartment or remove one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from spinverse.recon.search.regions import RegionSpace

__all__ = ["symmetry_images", "components", "random_kick", "KICKS"]


def components(space: RegionSpace, region: np.ndarray) -> list[np.ndarray]:
    """The face-connected components of a region, each as a (T,) bool mask, largest
    first (ties: lowest first tet)."""
    idx = np.flatnonzero(region)
    if len(idx) == 0:
        return []
    local = -np.ones(space.grid.n_tets, dtype=np.int64)
    local[idx] = np.arange(len(idx))
    p = space.pairs[region[space.pairs[:, 0]] & region[space.pairs[:, 1]]]
    g = sp.coo_matrix((np.ones(len(p)), (local[p[:, 0]], local[p[:, 1]])),
                      shape=(len(idx), len(idx)))
    n, label = sp.csgraph.connected_components(g, directed=False)
    out = []
    for c in range(n):
        mask = np.zeros(space.grid.n_tets, dtype=bool)
        mask[idx[label == c]] = True
        out.append(mask)
    out.sort(key=lambda m: (-int(m.sum()), int(np.argmax(m))))
    return out


def _lattice_basis(space: RegionSpace) -> np.ndarray:
    """(L, 3) lattice translations (µm) that map tets onto tets, up to the grid's size."""
    from spinverse.recon.metrics import lattice_step, lattice_translations

    step = lattice_step(space.grid)
    extent = np.ptp(space.grid.points, axis=0) / step
    cands = lattice_translations(space.grid, int(np.ceil(extent.max())))
    return cands * step


def _recentre(space: RegionSpace, image: np.ndarray, centroid: np.ndarray,
              lattice: np.ndarray) -> np.ndarray:
    """The image translated by the lattice vector nearest to centroid − its centroid."""
    c = space.grid.tet_centroids
    v = space.grid.volumes
    own = (v[image] @ c[image]) / v[image].sum()
    t = lattice[int(np.argmin(np.linalg.norm(lattice - (centroid - own), axis=1)))]
    if not np.any(t):
        return image
    return space.image(image, space._tet_map(c + t))


def symmetry_images(space: RegionSpace, region: np.ndarray, *,
                    shifts: bool = True) -> list[np.ndarray]:
    """Distinct valid images of ``region`` and of its compartments (see the module
    docstring), the region itself excluded, in a fixed order."""
    refl = space.point_reflection
    maps = space.symmetries
    if len(maps) <= 1:
        return []
    lattice = _lattice_basis(space)
    step_maps = [None, *space.nearest_shift_maps()] if shifts else [None]
    c, v = space.grid.tet_centroids, space.grid.volumes
    parts = components(space, region)
    pieces = [(region, np.zeros_like(region))]
    if len(parts) > 1:
        pieces += [(p, region & ~p) for p in parts]
    out, seen = [], {np.packbits(region).tobytes()}
    for piece, rest in pieces:
        n = int(piece.sum())
        centroid = (v[piece] @ c[piece]) / v[piece].sum()
        whole = not rest.any()
        used: set[bytes] = set()
        for tmap in maps:
            if whole and refl is not None:  # one of each {s, reflection ∘ s}
                if tmap.tobytes() in used:
                    continue
                used.add(refl[tmap].tobytes())
            image = space.image(piece, tmap)
            bases = [_recentre(space, image, centroid, lattice)]
            if whole:  # about the grid centre too: the exact inverse of a symmetric twin
                bases.append(image)
            for base in bases:
                for smap in step_maps if whole else [None]:
                    img = base if smap is None else space.image(base, smap)
                    if img.sum() < 0.8 * n:
                        continue
                    cand = space.repair(img | rest)
                    key = np.packbits(cand).tobytes()
                    if key in seen or not space.is_valid(cand):
                        continue
                    seen.add(key)
                    out.append(cand)
    return out


#: The kinds of :func:`random_kick`.
KICKS = ("grow", "shrink", "shift_patch", "shift_component", "add_compartment",
         "remove_compartment")


def _ball(space: RegionSpace, seed: int, hops: int) -> np.ndarray:
    """(T,) bool: tets within ``hops`` face-steps of ``seed``."""
    mask = np.zeros(space.grid.n_tets, dtype=bool)
    mask[seed] = True
    frontier = [seed]
    for _ in range(hops):
        nxt = [int(n) for t in frontier for n in space.neighbours[t] if not mask[n]]
        mask[nxt] = True
        frontier = nxt
    return mask


def random_kick(space: RegionSpace, region: np.ndarray, rng: np.random.Generator,
                kind: str | None = None) -> tuple[str, np.ndarray] | None:
    """One random large move of ``region`` (kind drawn from :data:`KICKS` when None),
    repaired to a valid region; None when the move does not apply or leaves no valid
    region different from ``region``."""
    kind = kind or str(rng.choice(KICKS))
    boundary = space.boundary_tets(region)
    out = region.copy()
    hops = int(rng.integers(1, 3))
    if kind == "grow":
        outside = boundary[~region[boundary]]
        if len(outside) == 0:
            return None
        out |= _ball(space, int(rng.choice(outside)), hops) & ~region
    elif kind == "shrink":
        ins = boundary[region[boundary]]
        if len(ins) == 0:
            return None
        out &= ~_ball(space, int(rng.choice(ins)), hops)
    elif kind == "shift_patch":
        maps = space.nearest_shift_maps()
        ins = boundary[region[boundary]]
        if len(maps) == 0 or len(ins) == 0:
            return None
        patch = _ball(space, int(rng.choice(ins)), hops + 1) & region
        moved = space.image(patch, maps[int(rng.integers(len(maps)))])
        out = (region & ~patch) | moved
    elif kind == "shift_component":  # of one of several (the whole shape: see the images)
        maps = space.nearest_shift_maps()
        parts = components(space, region)
        if len(maps) == 0 or len(parts) < 2:
            return None
        part = parts[int(rng.integers(len(parts)))]
        out = (region & ~part) | space.image(part, maps[int(rng.integers(len(maps)))])
    elif kind == "add_compartment":
        far = ~region
        far[boundary] = False
        choices = np.flatnonzero(far)
        if len(choices) == 0:
            return None
        out |= _ball(space, int(rng.choice(choices)), hops - 1) & far
    elif kind == "remove_compartment":
        parts = components(space, region)
        if len(parts) < 2:
            return None
        out &= ~parts[int(rng.integers(len(parts)))]
    else:
        raise ValueError(f"unknown kick {kind!r}; choose one of {KICKS}")
    out = space.repair(out)
    if np.array_equal(out, region) or not space.is_valid(out):
        return None
    return kind, out
