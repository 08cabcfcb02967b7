"""Coarse-to-fine reconstruction: search on the grid, decide on the grid refined 1:8.

The benchmark grid's own physics error is larger than the differences between the shapes
the data must tell apart (benchmarks/README: against a refine-2 target, wrong shapes fit
better than the truth on the benchmark grid). The fine stage therefore re-decides with a
converged model, keeping the search's moves:

1. **pool**: the coarse run's best distinct shapes (from every shape its search simulated,
   the ``pool`` lowest coarse losses, each at least ``min_distance`` tets from those
   kept; for a gradient run, the region its barrier encloses);
2. **rescore**: every pooled shape simulated on ``refine(grid, levels)`` with continuous
   tissue off the membrane (:class:`~spinverse.recon.search.scoring.RegionModel` with
   ``refined=`` and ``continuous=True``: ≈ 1–5 s a shape on one core at one level);
3. **descend**: linearised multi-flip descents (the search's local move,
   :func:`~spinverse.recon.search.local.multiflip_descent`) from the best rescored shapes,
   every state scored on the refined grid, within a budget of distinct shapes.

Shapes stay unions of coarse tets (moves of fine tets would cost ≈ 4× more simulations
a step); the refined grid supplies the physics. Answers on different grids are compared
against the continuous reference surface in µm (:func:`surface_metrics`: Chamfer and
Hausdorff distances between densely sampled surfaces, enclosed-volume error), not in faces.

Units: µm, µm³, κ µm/µs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import OTHER_KAPPA
from spinverse.mesh.refine import RefinedGrid, refine, refine_kappa
from spinverse.recon.metrics import closed_surface, enclosed_volume
from spinverse.recon.search.config import SearchConfig
from spinverse.recon.search.local import multiflip_descent
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator, RegionModel, default_workers
from spinverse.recon.targets import Target

__all__ = ["FineSearchResult", "fine_search", "refine_answer", "sample_surface",
           "shape_pool", "surface_metrics"]

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


def shape_pool(regions: list[np.ndarray], losses: np.ndarray, size: int, *,
               min_distance: int = 2) -> list[np.ndarray]:
    """Up to ``size`` of ``regions`` ((T,) bool each), lowest ``losses`` first, skipping
    any within ``min_distance`` − 1 flipped tets of one already kept (so that a pool is
    not spent on one shape's single-tet variants)."""
    kept: list[np.ndarray] = []
    for i in np.argsort(losses, kind="stable"):
        r = np.asarray(regions[i], dtype=bool)
        if all(int((r != k).sum()) >= min_distance for k in kept):
            kept.append(r)
            if len(kept) >= size:
                break
    return kept


@dataclass
class FineSearchResult:
    """The fine stage's answer: a region of coarse tets, its data loss on the refined
    model, the refined grid, the pool's coarse and fine losses (rows of ``pool``), the
    descents' improvements (``history``) and run facts."""

    region: np.ndarray
    data_loss: float
    refined: RefinedGrid
    pool: list[dict[str, Any]]
    history: list[dict[str, Any]]
    simulations: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def fine_search(grid: TetGrid, target: Target, pool: list[np.ndarray], *, levels: int = 1,
                budget: int = 400, descents: int = 2, coarse_losses: np.ndarray | None = None,
                config: SearchConfig | None = None, workers: int | None = None,
                progress: bool = False,
                reference_region: np.ndarray | None = None) -> FineSearchResult:
    """Rescore ``pool`` (regions of ``grid``'s tets, best first) on the grid refined
    ``levels`` times and descend from the ``descents`` best, within ``budget`` distinct
    shapes beyond the pool (see the module docstring). ``config`` gives the membrane κ,
    the proposals per step and the seed; ``reference_region``, a known truth, is scored on
    the refined model too (``info["truth_loss"]``, one more simulation)."""
    from spinverse.recon.search.engine import SearchProgress

    if not pool:
        raise ValueError("the pool of shapes to rescore is empty")
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    cfg = config or SearchConfig()
    tic = time.perf_counter()
    space = RegionSpace(grid, cfg.membrane_kappa, cfg.other_kappa)
    refined = refine(grid, levels)
    model = RegionModel(space, target, refined=refined, continuous=True)
    rng = np.random.default_rng(cfg.seed)
    bar = SearchProgress(len(pool) + budget, progress, desc=f"refine {levels}")
    history: list[dict[str, Any]] = []
    with Evaluator(model, workers=workers or default_workers(), on_new=bar.advance) as ev:
        try:
            pool = [space.check(r) for r in pool]
            fine = ev.losses(pool)
            rows = [{"rank_coarse": i, "tets": int(r.sum()), "fine_loss": float(lo),
                     **({} if coarse_losses is None else
                        {"coarse_loss": float(coarse_losses[i])})}
                    for i, (r, lo) in enumerate(zip(pool, fine, strict=True))]
            order = np.argsort(fine, kind="stable")
            best = (float(fine[order[0]]), pool[order[0]])
            history.append({"simulations": ev.n_requested, "stage": "rescore",
                            "loss": best[0], "tets": int(best[1].sum())})
            bar.show("rescore", best[0])
            spent = ev.n_requested
            for d, i in enumerate(order[:descents]):
                left = budget - (ev.n_requested - spent)
                share = left // (descents - d)
                if share <= 0:
                    break
                stage = f"descent {d + 1}"

                def step(region: np.ndarray, loss: float, stage: str = stage) -> None:
                    history.append({"simulations": ev.n_requested, "stage": stage,
                                    "loss": loss, "tets": int(region.sum())})
                    bar.show(stage, loss)

                res = multiflip_descent(ev, space, pool[i], rng, budget=share,
                                        proposals=cfg.proposals, on_step=step)
                if res.loss < best[0]:
                    best = (res.loss, res.region)
            info: dict[str, Any] = {"fine_tets": refined.grid.n_tets, "levels": levels,
                                    "continuous_tissue": True}
            if reference_region is not None:
                info["truth_loss"] = ev.loss(space.check(reference_region))
            simulations = ev.simulated
        finally:
            bar.close()
    return FineSearchResult(region=best[1], data_loss=best[0], refined=refined, pool=rows,
                            history=history, simulations=simulations,
                            seconds=time.perf_counter() - tic, info=info)
