"""Sparse assembly of the per-face-permeability finite-element model.

Every tetrahedron owns 4 P1 nodes (discontinuous P1). A face with κ = ∞ is an ordinary
continuous face: the coinciding nodes of its two tets are merged into one degree of
freedom, so a known geometry costs only the nodes it needs. A face with finite κ couples
its two tets through the flux term κ ∫_f (u₁ − u₂)²; κ = 0 decouples them. Outer faces are
reflecting (Neumann) or, in ``"robin"`` mode, leak with κ ∫_f u² (the published method's
"reference-compatible" convention).

Units: M in µm³, K and Q in µm³/µs, J_d in µm⁴, κ in µm/µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from spinverse.errors import PermeabilityError
from spinverse.fem.local import (
    barycentric_gradients,
    face_mass_blocks,
    mass_blocks,
    moment_blocks,
    stiffness_blocks,
)
from spinverse.mesh.grid import TetGrid

OuterBoundary = Literal["reflecting", "robin"]
OUTER_BOUNDARIES: tuple[str, ...] = ("reflecting", "robin")


def check_kappa(grid: TetGrid, kappa: np.ndarray, outer_boundary: str) -> np.ndarray:
    """Validate a per-face permeability array (µm/µs) and return it as float64."""
    if outer_boundary not in OUTER_BOUNDARIES:
        raise PermeabilityError(
            f"must be one of {OUTER_BOUNDARIES}, got {outer_boundary!r}", field="outer_boundary"
        )
    k = np.asarray(kappa, dtype=np.float64)
    if k.shape != (grid.n_faces,):
        raise PermeabilityError(
            f"expected one value per face, shape ({grid.n_faces},), got {k.shape}", field="kappa"
        )
    if np.isnan(k).any():
        raise PermeabilityError(
            f"{np.isnan(k).sum()} faces have NaN permeability", field="kappa"
        )
    if (k < 0).any():
        raise PermeabilityError(
            f"permeability must be >= 0 µm/µs, {(k < 0).sum()} faces are negative "
            f"(min {k.min():g})",
            field="kappa",
        )
    if outer_boundary == "robin" and np.isinf(k[grid.is_outer]).any():
        raise PermeabilityError(
            "robin outer boundary needs finite κ on outer faces (κ = inf there would be a "
            "Dirichlet wall); use outer_boundary='reflecting' or give finite values",
            field="kappa",
        )
    return k


def _local_positions(tets_rows: np.ndarray, face_rows: np.ndarray) -> np.ndarray:
    """(n, 3) position (0..3) of each face vertex within its tet."""
    return np.argmax(tets_rows[:, None, :] == face_rows[:, :, None], axis=2)


@dataclass(frozen=True, eq=False)
class DofMap:
    """Degrees of freedom after merging the nodes across continuous (κ = ∞) faces.

    ``tet_dofs[t, i]`` is the DOF of local node ``i`` of tet ``t``.
    """

    tet_dofs: np.ndarray
    n_dofs: int
    continuous: np.ndarray

    @classmethod
    def build(cls, grid: TetGrid, continuous: np.ndarray) -> DofMap:
        """Merge the coinciding nodes of the two tets of every face in ``continuous``."""
        continuous = np.asarray(continuous, dtype=bool) & ~grid.is_outer
        n_local = 4 * grid.n_tets
        f = np.flatnonzero(continuous)
        if len(f) == 0:
            dofs = np.arange(n_local, dtype=np.int64).reshape(-1, 4)
            return cls(dofs, n_local, continuous)
        t1, t2 = grid.face_tets[f, 0], grid.face_tets[f, 1]
        fv = grid.faces[f]
        p1 = _local_positions(grid.tets[t1], fv)
        p2 = _local_positions(grid.tets[t2], fv)
        a = (4 * t1[:, None] + p1).reshape(-1)
        b = (4 * t2[:, None] + p2).reshape(-1)
        graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_local, n_local))
        n, labels = connected_components(graph, directed=False)
        return cls(labels.reshape(-1, 4).astype(np.int64), int(n), continuous)

    @cached_property
    def local_to_dof(self) -> sp.csr_matrix:
        """(4T, N) 0/1 matrix mapping DOF values to tet-local node values."""
        n_local = self.tet_dofs.size
        return sp.csr_matrix(
            (np.ones(n_local), (np.arange(n_local), self.tet_dofs.reshape(-1))),
            shape=(n_local, self.n_dofs),
        )


def _assemble_blocks(blocks: np.ndarray, tet_dofs: np.ndarray, n: int) -> sp.csr_matrix:
    """Sum (T, 4, 4) element blocks into an (n, n) CSR matrix."""
    rows = np.repeat(tet_dofs, 4, axis=1).reshape(-1)
    cols = np.tile(tet_dofs, (1, 4)).reshape(-1)
    m = sp.csr_matrix((blocks.reshape(-1), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    return m


@dataclass(frozen=True, eq=False)
class FEModel:
    """Sparse operators of the per-face-permeability model for a fixed set of continuous
    faces (κ = ∞) and outer-boundary mode.

    The flux matrix is linear in κ: ``Q(κ).data = flux_map @ κ`` on a fixed pattern, so
    changing κ (reconstruction) costs one sparse mat-vec, and ∂(uᵀ Q v)/∂κ_f is
    :class:`spinverse.autodiff.vjp.FluxBlocks`.
    """

    grid: TetGrid
    dofmap: DofMap
    diffusivity: float
    outer_boundary: str
    mass: sp.csr_matrix
    stiffness: sp.csr_matrix
    moments: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]
    flux_indptr: np.ndarray
    flux_rows: np.ndarray
    flux_cols: np.ndarray
    flux_map: sp.csr_matrix

    @classmethod
    def build(
        cls,
        grid: TetGrid,
        *,
        diffusivity: float,
        continuous: np.ndarray | None = None,
        outer_boundary: str = "reflecting",
    ) -> FEModel:
        """Assemble M, K, J and the κ → Q map.

        ``continuous`` is a (F,) bool mask of faces treated as κ = ∞ (merged nodes);
        default none.
        """
        if outer_boundary not in OUTER_BOUNDARIES:
            raise PermeabilityError(
                f"must be one of {OUTER_BOUNDARIES}, got {outer_boundary!r}",
                field="outer_boundary",
            )
        if continuous is None:
            continuous = np.zeros(grid.n_faces, dtype=bool)
        dm = DofMap.build(grid, continuous)
        n = dm.n_dofs
        grads, vol = barycentric_gradients(grid.points, grid.tets)
        mass = _assemble_blocks(mass_blocks(vol), dm.tet_dofs, n)
        stiff = _assemble_blocks(stiffness_blocks(grads, vol, diffusivity), dm.tet_dofs, n)
        mom = tuple(
            _assemble_blocks(b, dm.tet_dofs, n)
            for b in moment_blocks(grid.points, grid.tets, vol)
        )
        indptr, rows, cols, fmap = cls._flux_pattern(grid, dm, outer_boundary)
        return cls(grid, dm, float(diffusivity), outer_boundary, mass, stiff, mom,  # type: ignore[arg-type]
                   indptr, rows, cols, fmap)

    @staticmethod
    def _flux_pattern(
        grid: TetGrid, dm: DofMap, outer_boundary: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, sp.csr_matrix]:
        n = dm.n_dofs
        fmass = face_mass_blocks(grid.face_areas)
        r_all, c_all, v_all, f_all = [], [], [], []

        def add(f: np.ndarray, da: np.ndarray, db: np.ndarray, sign: float) -> None:
            r_all.append(np.repeat(da, 3, axis=1).reshape(-1))
            c_all.append(np.tile(db, (1, 3)).reshape(-1))
            v_all.append(sign * fmass[f].reshape(-1))
            f_all.append(np.repeat(f, 9))

        inner = np.flatnonzero(~grid.is_outer & ~dm.continuous)
        if len(inner):
            t1, t2 = grid.face_tets[inner, 0], grid.face_tets[inner, 1]
            fv = grid.faces[inner]
            d1 = np.take_along_axis(dm.tet_dofs[t1], _local_positions(grid.tets[t1], fv), 1)
            d2 = np.take_along_axis(dm.tet_dofs[t2], _local_positions(grid.tets[t2], fv), 1)
            add(inner, d1, d1, 1.0)
            add(inner, d2, d2, 1.0)
            add(inner, d1, d2, -1.0)
            add(inner, d2, d1, -1.0)
        if outer_boundary == "robin":
            outer = grid.outer_faces
            t1 = grid.face_tets[outer, 0]
            d1 = np.take_along_axis(
                dm.tet_dofs[t1], _local_positions(grid.tets[t1], grid.faces[outer]), 1
            )
            add(outer, d1, d1, 1.0)
        if not r_all:
            empty = np.zeros(0, dtype=np.int64)
            return (np.zeros(n + 1, dtype=np.int64), empty, empty,
                    sp.csr_matrix((0, grid.n_faces)))
        r, c = np.concatenate(r_all), np.concatenate(c_all)
        keys, slot = np.unique(r * n + c, return_inverse=True)
        rows, cols = keys // n, keys % n
        fmap = sp.csr_matrix(
            (np.concatenate(v_all), (slot.reshape(-1), np.concatenate(f_all))),
            shape=(len(keys), grid.n_faces),
        )
        fmap.sum_duplicates()
        indptr = np.searchsorted(rows, np.arange(n + 1)).astype(np.int64)
        return indptr, rows, cols, fmap

    # ---------------------------------------------------------------- operators
    @property
    def n_dofs(self) -> int:
        return self.dofmap.n_dofs

    def flux(self, kappa: np.ndarray) -> sp.csr_matrix:
        """Q(κ) in µm³/µs for per-face κ (µm/µs); entries of continuous faces ignored."""
        k = np.where(np.isfinite(kappa), kappa, 0.0)
        data = self.flux_map @ k
        n = self.n_dofs
        return sp.csr_matrix((data, self.flux_cols, self.flux_indptr), shape=(n, n))

    def operator(self, kappa: np.ndarray) -> sp.csr_matrix:
        """A(κ) = K + Q(κ) in µm³/µs."""
        return (self.stiffness + self.flux(kappa)).tocsr()

    @cached_property
    def mass_ones(self) -> np.ndarray:
        """M·1 (µm³): the projection of a uniform initial magnetisation ρ = 1."""
        return np.asarray(self.mass @ np.ones(self.n_dofs))

    def moment(self, direction: np.ndarray) -> sp.csr_matrix:
        """Σ_d g_d J_d (µm⁴) for a unit gradient direction g."""
        g = np.asarray(direction, dtype=float)
        return (g[0] * self.moments[0] + g[1] * self.moments[1] + g[2] * self.moments[2]).tocsr()

    @cached_property
    def dof_points(self) -> np.ndarray:
        """(N, 3) coordinates of each DOF in µm."""
        pts = np.zeros((self.n_dofs, 3))
        pts[self.dofmap.tet_dofs.reshape(-1)] = self.grid.points[self.grid.tets.reshape(-1)]
        return pts


def build_model(
    grid: TetGrid,
    kappa: np.ndarray,
    *,
    diffusivity: float,
    outer_boundary: str = "reflecting",
) -> FEModel:
    """FE model for per-face κ (µm/µs): faces with κ = ∞ become continuous."""
    k = check_kappa(grid, kappa, outer_boundary)
    return FEModel.build(
        grid, diffusivity=diffusivity, continuous=np.isinf(k), outer_boundary=outer_boundary
    )
