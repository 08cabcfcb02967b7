"""Coarse-to-fine reconstruction: fit on the grid, continue on the grid refined 1:8.

The answer on the coarse grid (any method) is carried to ``refine(grid, levels)`` by the
parent map (:func:`spinverse.mesh.refine.refine_kappa`: a fine face on a coarse face keeps
its κ, the new faces inside coarse tets get the open value), then the per-face κ of the
fine grid is fitted by gradient descent from that start (the gradient method's machinery,
:class:`~spinverse.recon.reconstructor.Reconstructor`, all sequences in one stage, with
its priors). The fine model runs on whichever propagator the cost model picks (the
full-space one where intermediate κ needs many modes; see :mod:`spinverse.solvers.mf`).

Answers on different grids are compared against the continuous reference surface in µm
(:func:`surface_metrics`: Chamfer and Hausdorff distances between densely sampled
surfaces, enclosed-volume error), not in faces.

Units: µm, µm³, κ µm/µs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import OTHER_KAPPA
from spinverse.mesh.refine import RefinedGrid, refine, refine_kappa
from spinverse.recon.config import ReconConfig, published_preset
from spinverse.recon.metrics import closed_surface, enclosed_volume

__all__ = ["fine_config", "refine_answer", "sample_surface", "surface_metrics"]

#: Spacing (µm) of the points sampled on a surface for the µm metrics.
SAMPLE_SPACING_UM = 0.25


def sample_surface(grid: TetGrid, faces: np.ndarray,
                   spacing: float = SAMPLE_SPACING_UM) -> np.ndarray:
    """(P, 3) points (µm) covering the triangles ``faces`` of ``grid`` no farther than
    about ``spacing`` apart: each triangle split into m² congruent sub-triangles (m from
    its longest edge), one point at each sub-triangle's centroid."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1)
    if len(f) == 0:
        return np.zeros((0, 3))
    tri = grid.points[grid.faces[f]]  # (B, 3, 3)
    edge = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max()
    m = max(1, int(np.ceil(edge / spacing)))
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    keep = i + j < m
    up = np.stack([i[keep] + 1 / 3, j[keep] + 1 / 3], axis=1) / m  # upward sub-triangles
    keep2 = i + j < m - 1
    down = np.stack([i[keep2] + 2 / 3, j[keep2] + 2 / 3], axis=1) / m
    uv = np.concatenate([up, down])  # (m², 2) barycentric (u, v)
    w = np.column_stack([1.0 - uv.sum(axis=1), uv])  # (m², 3)
    return np.einsum("sk,bkd->bsd", w, tri).reshape(-1, 3)


def surface_metrics(pred_grid: TetGrid, pred_faces: np.ndarray, ref_grid: TetGrid,
                    ref_faces: np.ndarray) -> dict[str, float]:
    """Distances (µm) between the closed surface of a barrier ``pred_faces`` of
    ``pred_grid`` and a reference surface ``ref_faces`` of ``ref_grid`` (the two grids may
    differ but share the frame), and the enclosed-volume error.

    ``chamfer_um``: ½(mean distance pred → ref + mean ref → pred); ``hausdorff_um``: the
    largest of those distances; ``volume_um3`` / ``volume_ref_um3`` and
    ``volume_error_rel`` = (V − V_ref)/V_ref (signed)."""
    a = sample_surface(pred_grid, closed_surface(pred_grid, pred_faces))
    b = sample_surface(ref_grid, ref_faces)
    v, v_ref = enclosed_volume(pred_grid, pred_faces), enclosed_volume(ref_grid, ref_faces)
    out = {"volume_um3": v, "volume_ref_um3": v_ref,
           "volume_error_rel": (v - v_ref) / v_ref if v_ref > 0 else float("nan")}
    if len(a) == 0 or len(b) == 0:
        return {**out, "chamfer_um": float("inf"), "hausdorff_um": float("inf")}
    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return {**out, "chamfer_um": float(0.5 * (d_ab.mean() + d_ba.mean())),
            "hausdorff_um": float(max(d_ab.max(), d_ba.max()))}


def refine_answer(grid: TetGrid, kappa: np.ndarray, levels: int,
                  open_kappa: float = OTHER_KAPPA) -> tuple[RefinedGrid, np.ndarray]:
    """The fine grid and the coarse answer's κ (µm/µs) on it; faces inside coarse tets
    get ``open_kappa``."""
    fine = refine(grid, levels)
    return fine, refine_kappa(fine, grid, kappa, new_faces=open_kappa)


def fine_config(start_file: str | Path, iterations: int, *, seed: int = 0,
                base: ReconConfig | None = None) -> ReconConfig:
    """The fine stage: one stage fitting every sequence for ``iterations`` from the κ in
    ``start_file``, with the published preset's last-stage priors and optimiser."""
    from spinverse.recon.config import StageConfig

    cfg = base or published_preset()
    last = cfg.stages[-1]
    stage = StageConfig(name="fine, all sequences", sequences="all", iterations=iterations,
                        priors=last.priors)
    param = cfg.parameterisation.model_copy(update={"start": "file",
                                                    "start_file": str(start_file)})
    return cfg.model_copy(update={"stages": [stage], "parameterisation": param, "seed": seed})
