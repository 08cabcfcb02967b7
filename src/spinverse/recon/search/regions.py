"""Sharp shapes on a fixed grid: a *region* is a set of tets, (T,) bool.

A region's membrane is its closed surface: every face used by exactly one of its tets
(grid-boundary faces of its tets included). :class:`RegionSpace` holds the per-grid
topology the shape search needs: which tets can flip (the region's boundary), whether a
region's surface is a 2-manifold (no edge with other than 0 or 2 membrane faces), the κ
field (µm/µs) of a region, and the grid's own symmetries (the cube group about the grid
centre and lattice translations) as tet permutations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from spinverse.errors import MeshError
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import BARRIER_KAPPA, OTHER_KAPPA

__all__ = ["RegionSpace", "cube_group"]


def cube_group() -> np.ndarray:
    """(48, 3, 3) the signed permutation matrices (symmetries of the cube), identity
    first, then the other rotations (det +1), then the improper ones."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            mats.append(m)
    mats.sort(key=lambda m: (not np.allclose(m, np.eye(3)), np.linalg.det(m) < 0))
    return np.array(mats)


@dataclass(frozen=True, eq=False)
class RegionSpace:
    """Topology of regions (tet sets) on ``grid``; κ in µm/µs.

    ``membrane_kappa`` is the κ of a region's surface faces and ``other_kappa`` of every
    other face (the benchmark's ground-truth convention: 1e-5 and 0.1 µm/µs).
    """

    grid: TetGrid
    membrane_kappa: float = BARRIER_KAPPA
    other_kappa: float = OTHER_KAPPA

    # ----------------------------------------------------------------- topology
    @cached_property
    def pairs(self) -> np.ndarray:
        """(I, 2) the two tets of every interior face."""
        ft = self.grid.face_tets
        return ft[ft[:, 1] >= 0]

    @cached_property
    def neighbours(self) -> list[np.ndarray]:
        """Face neighbours of each tet."""
        p = self.pairs
        both = np.concatenate([p, p[:, ::-1]])
        order = np.argsort(both[:, 0], kind="stable")
        split = np.cumsum(np.bincount(both[:, 0], minlength=self.grid.n_tets))[:-1]
        return np.split(both[order, 1], split)

    def check(self, inside: np.ndarray) -> np.ndarray:
        """``inside`` as a (T,) bool array; :class:`MeshError` on a wrong shape."""
        mask = np.asarray(inside, dtype=bool)
        if mask.shape != (self.grid.n_tets,):
            raise MeshError(f"expected a ({self.grid.n_tets},) tet mask, got shape "
                            f"{mask.shape}", field="region")
        return mask

    def membrane(self, inside: np.ndarray) -> np.ndarray:
        """(F,) bool: the faces used by exactly one tet of the region."""
        counts = np.bincount(self.grid.tet_faces[inside].reshape(-1),
                             minlength=self.grid.n_faces)
        return counts == 1

    def faces(self, inside: np.ndarray) -> np.ndarray:
        """(B,) sorted indices of the region's membrane faces."""
        return np.flatnonzero(self.membrane(inside))

    def kappa(self, inside: np.ndarray) -> np.ndarray:
        """(F,) κ (µm/µs): ``membrane_kappa`` on the region's surface, else ``other_kappa``."""
        return np.where(self.membrane(inside), self.membrane_kappa, self.other_kappa)

    def boundary_tets(self, inside: np.ndarray) -> np.ndarray:
        """Sorted tets that share a face with a tet on the other side of the membrane:
        the tets whose flip changes the region by one tet next to its surface."""
        p = self.pairs
        cut = inside[p[:, 0]] != inside[p[:, 1]]
        return np.unique(p[cut].reshape(-1))

    def bad_edges(self, inside: np.ndarray) -> int:
        """Edges of the region's surface with other than 2 membrane faces (0: the
        surface is a closed 2-manifold; an edge where two tets of the region touch
        without sharing a face has 4)."""
        fe = self.grid.face_edges[self.membrane(inside)].reshape(-1)
        counts = np.bincount(fe, minlength=self.grid.n_edges)
        return int(np.count_nonzero((counts != 0) & (counts != 2)))

    def is_valid(self, inside: np.ndarray) -> bool:
        """Non-empty, not the whole grid, and a closed 2-manifold surface."""
        n = int(np.count_nonzero(inside))
        return 0 < n < self.grid.n_tets and self.bad_edges(inside) == 0

    def repair(self, inside: np.ndarray, max_steps: int = 200) -> np.ndarray:
        """A nearby valid region: while an edge of the surface has 4 or more membrane
        faces, add the outside tet at that edge with the most region neighbours (ties:
        lowest index); deterministic, no simulation. Returns a copy."""
        out = np.array(inside, dtype=bool)
        ef = self.grid.edge_face_incidence
        for _ in range(max_steps):
            fe = self.grid.face_edges[self.membrane(out)].reshape(-1)
            counts = np.bincount(fe, minlength=self.grid.n_edges)
            bad = np.flatnonzero((counts != 0) & (counts != 2))
            if len(bad) == 0 or out.all():
                return out
            faces = ef.indices[ef.indptr[bad[0]]:ef.indptr[bad[0] + 1]]
            tets = np.unique(self.grid.face_tets[faces].reshape(-1))
            tets = tets[(tets >= 0) & ~out[tets]]
            if len(tets) == 0:  # pragma: no cover - a bad edge always has an outside tet
                return out
            score = [np.count_nonzero(out[self.neighbours[t]]) for t in tets]
            out[tets[int(np.argmax(score))]] = True
        return out

    def components(self, inside: np.ndarray) -> int:
        """Number of face-connected components of the region."""
        import scipy.sparse as sp

        p = self.pairs[inside[self.pairs[:, 0]] & inside[self.pairs[:, 1]]]
        idx = np.flatnonzero(inside)
        if len(idx) == 0:
            return 0
        local = -np.ones(self.grid.n_tets, dtype=np.int64)
        local[idx] = np.arange(len(idx))
        g = sp.coo_matrix((np.ones(len(p)), (local[p[:, 0]], local[p[:, 1]])),
                          shape=(len(idx), len(idx)))
        return int(sp.csgraph.connected_components(g, directed=False)[0])

    # --------------------------------------------------------------- symmetries
    @cached_property
    def centre(self) -> np.ndarray:
        """(3,) centre of the grid's bounding box, µm."""
        lo, hi = self.grid.bounding_box
        return 0.5 * (lo + hi)

    def _tet_map(self, mapped_centroids: np.ndarray) -> np.ndarray:
        """(T,) the tet whose centroid is at each mapped centroid, -1 where none."""
        c = self.grid.tet_centroids
        scale = float(np.ptp(c, axis=0).max()) or 1.0
        d, idx = cKDTree(c).query(mapped_centroids)
        return np.where(d <= 1e-6 * scale, idx, -1)

    @cached_property
    def symmetries(self) -> np.ndarray:
        """(S, T) tet permutations of the cube-group elements about :attr:`centre` that map
        the grid onto itself (identity first; all 48 on a BCC box grid)."""
        rel = self.grid.tet_centroids - self.centre
        maps = []
        for m in cube_group():
            tmap = self._tet_map(rel @ m.T + self.centre)
            if np.all(tmap >= 0) and len(np.unique(tmap)) == len(tmap):
                maps.append(tmap)
        return np.array(maps)

    @cached_property
    def point_reflection(self) -> np.ndarray | None:
        """(T,) tet map of x → 2c − x when it maps the grid onto itself (the signal
        magnitude cannot see it), else None."""
        tmap = self._tet_map(2 * self.centre - self.grid.tet_centroids)
        return tmap if np.all(tmap >= 0) else None

    @cached_property
    def shifts(self) -> np.ndarray:
        """(K, 3) lattice translations (µm), shortest first, zero excluded: every
        combination of −1, 0, +1 lattice steps per axis and the eight half-diagonals (the
        BCC lattice), kept when every tet whose moved centroid stays at least a lattice
        step inside the grid's bounding box lands on a tet (tets at the box's faces are
        cut differently), and some do; (0, 3) on an unstructured grid."""
        from spinverse.recon.metrics import lattice_step, lattice_translations

        step = lattice_step(self.grid)
        lo, hi = self.grid.bounding_box
        out = []
        for c in lattice_translations(self.grid, 1)[1:]:
            moved = self.grid.tet_centroids + c * step
            stay = np.all((moved >= lo + step) & (moved <= hi - step), axis=1)
            tmap = self._tet_map(moved)
            if stay.any() and np.all(tmap[stay] >= 0):
                out.append(c * step)
        return np.array(out).reshape(-1, 3)

    @cached_property
    def shift_maps(self) -> np.ndarray:
        """(K, T) tet map of each of :attr:`shifts` (-1 where a tet leaves the grid)."""
        return np.array([self._tet_map(self.grid.tet_centroids + s) for s in self.shifts]
                        ).reshape(-1, self.grid.n_tets)

    def nearest_shift_maps(self) -> np.ndarray:
        """The tet maps of the shortest non-zero shifts (one axis step or one
        half-diagonal: 14 on a BCC grid)."""
        if len(self.shifts) == 0:
            return self.shift_maps
        length = np.linalg.norm(self.shifts, axis=1)
        from spinverse.recon.metrics import lattice_step

        keep = length <= np.max(lattice_step(self.grid)) * (1 + 1e-9)
        return self.shift_maps[keep]

    def image(self, inside: np.ndarray, tmap: np.ndarray) -> np.ndarray:
        """The region's image under a tet map; tets mapped off the grid are dropped."""
        out = np.zeros_like(inside)
        src = tmap[inside]
        out[src[src >= 0]] = True
        return out

    def overlap(self, a: np.ndarray, b: np.ndarray) -> float:
        """Tet Dice coefficient 2|a∩b| / (|a| + |b|), volume-weighted."""
        v = self.grid.volumes
        den = v[a].sum() + v[b].sum()
        return float(2 * v[a & b].sum() / den) if den > 0 else 1.0

    def best_twin_overlap(self, a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
        """Best Dice of ``a`` with the images of ``b`` under the grid's symmetries
        composed with no shift or one of :attr:`shifts`: (dice, symmetry index, shift
        index or -1)."""
        best = (self.overlap(a, b), 0, -1)
        for s, sym in enumerate(self.symmetries):
            img = self.image(b, sym)
            for k, shift in enumerate([None, *self.shift_maps]):
                cand = img if shift is None else self.image(img, shift)
                d = self.overlap(a, cand)
                if d > best[0] + 1e-12:
                    best = (d, s, k - 1)
        return best
