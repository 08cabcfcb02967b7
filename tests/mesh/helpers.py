"""Helpers shared by the mesh tests (lengths in µm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinverse.mesh.grid import TetGrid

#: The repository's ``../shared`` folder (read-only benchmark and spec files).
SHARED = Path(__file__).resolve().parents[3] / "shared"
BENCHMARK_NPZ = SHARED / "benchmarks" / "voxel_meshes.npz"


def euler_characteristic(grid: TetGrid) -> int:
    """V - E + F - T of the grid (1 for a grid whose union is a topological ball)."""
    used = np.unique(grid.tets)
    return len(used) - grid.n_edges + grid.n_faces - grid.n_tets


def surface_edge_counts(grid: TetGrid, face_indices: np.ndarray) -> np.ndarray:
    """For every edge of the given faces, how many of those faces contain it."""
    fe = grid.face_edges[np.asarray(face_indices, dtype=np.int64)].reshape(-1)
    counts = np.bincount(fe, minlength=grid.n_edges)
    return counts[np.unique(fe)]
