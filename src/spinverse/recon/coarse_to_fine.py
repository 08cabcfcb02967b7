"""Coarse-to-fine reconstruction: search on the grid, correct it with the grid refined 1:8.

The benchmark grid's own physics error is larger than the differences between the shapes
the data must tell apart: against a refine-2 target, wrong shapes fit better than the
truth on the benchmark grid (benchmarks/README, "Coarse-to-fine"). Scoring every shape on
a refined grid would fix that but costs 5–10× more a shape. The error, though, is nearly
the same for every shape near a given one, so the fine stage is a **defect correction**:
with ``a`` the current answer and Δ = S_fine(a) − S_coarse(a) (one fine simulation),
S_coarse(x) + Δ stands in for S_fine(x) near ``a``. Each round:

1. one simulation of the answer on ``refine(grid, levels)`` with continuous tissue off the
   membrane (:class:`~spinverse.recon.search.scoring.RegionModel` with ``refined=`` and
   ``continuous=True``) gives Δ;
2. every shape the coarse model has simulated (the coarse search's whole cache) is
   rescored with the corrected coarse model, free;
3. linearised multi-flip descents (:func:`~spinverse.recon.search.local.multiflip_descent`)
   with the corrected coarse model from the best distinct of them (:func:`shape_pool`);
4. the best distinct corrected shapes are simulated on the refined grid; the best of them
   becomes the answer if it lowers the fine loss, else the stage ends.

The answer is always scored on the refined grid. Shapes stay unions of coarse tets; the
refined grid supplies the physics. Answers on different grids are compared against the
continuous reference surface in µm (:func:`surface_metrics`: Chamfer and Hausdorff
distances between densely sampled surfaces, enclosed-volume error), not in faces.

Units: µm, µm³, κ µm/µs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from spinverse.mesh.grid import TetGrid
from spinverse.mesh.refine import RefinedGrid, refine
from spinverse.recon.metrics import closed_surface, enclosed_volume
from spinverse.recon.search.config import SearchConfig
from spinverse.recon.search.local import multiflip_descent
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator, RegionModel, default_workers
from spinverse.recon.targets import Target

__all__ = ["COARSE_BUDGET", "FineSearchResult", "fine_search", "sample_surface", "shape_pool",
           "surface_metrics"]

#: The coarse search's default budget (shapes) when a fine stage follows it: the fine stage
#: goes on from the coarse answer, and 1 500 gives a fine answer as close as the
#: search's 4 000 in less than half the time (benchmarks/README.md, "Coarse-to-fine").
COARSE_BUDGET = 1500

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
    """The fine stage's answer: a region of coarse tets and its data loss on the refined
    model, the refined grid, one row per round (``rounds``), the improvements
    (``history``) and run facts (simulations on each model, the truth's fine loss when
    known)."""

    region: np.ndarray
    data_loss: float
    refined: RefinedGrid
    rounds: list[dict[str, Any]]
    history: list[dict[str, Any]]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def fine_search(grid: TetGrid, target: Target, starts: list[np.ndarray], *,
                levels: int = 1, known: dict[bytes, np.ndarray] | None = None,
                rounds: int = 4, budget: int = 600, descents: int = 2, checks: int = 6,
                config: SearchConfig | None = None, workers: int | None = None,
                progress: bool = False, reference_region: np.ndarray | None = None,
                log_file: str | Path | None = None) -> FineSearchResult:
    """Defect-corrected search (see the module docstring) from the best of ``starts``
    (regions of ``grid``'s tets) and of the ``known`` coarse signals (an
    :class:`~spinverse.recon.search.scoring.Evaluator` cache of the same target, e.g. the
    coarse search's), for at most ``rounds`` rounds of ``budget`` coarse shapes and
    ``checks`` fine ones each. ``config`` gives the κ values, proposals and seed;
    ``reference_region``, a known truth, is scored on the refined model too
    (``info["truth_loss"]``). ``log_file``: every round and improvement appended as a JSON
    line as it happens."""
    from spinverse.recon.search.engine import SearchProgress

    if not starts and not known:
        raise ValueError("no shapes to start from: give starts or known signals")
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    cfg = config or SearchConfig()
    tic = time.perf_counter()
    space = RegionSpace(grid, cfg.membrane_kappa, cfg.other_kappa)
    refined = refine(grid, levels)
    rng = np.random.default_rng(cfg.seed)
    n_workers = workers or default_workers()
    bar = SearchProgress(rounds * (budget + checks), progress, desc=f"refine {levels}")
    history: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []

    def note(entry: dict[str, Any], keep: bool = True) -> None:
        if keep:
            history.append(entry)
        if log_file is not None:
            with open(log_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**entry, "seconds": time.perf_counter() - tic}) + "\n")

    coarse = Evaluator(RegionModel(space, target), workers=n_workers, on_new=bar.advance)
    fine = Evaluator(RegionModel(space, target, refined=refined, continuous=True),
                     workers=n_workers, on_new=bar.advance)
    coarse.cache.update(known or {})
    closed: dict[bytes, bool] = {}  # whether a cached shape's surface is a closed manifold

    def ranked(size: int) -> tuple[list[np.ndarray], float]:
        """The ``size`` best distinct closed shapes of the coarse cache by the (corrected)
        coarse loss, and the best such loss."""
        keys = [k for k in coarse.cache
                if closed.setdefault(k, space.is_valid(coarse.region(k)))]
        losses = np.array([coarse.known_loss(k) for k in keys])
        regions = [coarse.region(k) for k in keys]
        return (shape_pool(regions, losses, size),
                float(losses.min()) if len(losses) else float("inf"))

    truth: tuple[np.ndarray, np.ndarray] | None = None
    if reference_region is not None:  # simulated apart, so that no search sees it
        ref = space.check(reference_region)
        truth = (RegionModel(space, target).signal(ref),
                 RegionModel(space, target, refined=refined, continuous=True).signal(ref))
    with coarse, fine:
        try:
            coarse.signals([space.check(r) for r in starts])
            shapes, _ = ranked(1)
            if not shapes:
                raise ValueError("none of the shapes to start from has a closed surface")
            answer = shapes[0]
            loss = fine.loss(answer)
            note({"round": 0, "stage": "coarse answer", "loss": loss,
                  "tets": int(answer.sum()), "simulations": fine.n_requested})
            for rnd in range(1, rounds + 1):
                offset = fine.signals([answer])[0] - coarse.signals([answer])[0]
                coarse.correct(offset)
                pool, _ = ranked(descents)
                spent = coarse.n_requested
                for d, start in enumerate(pool):
                    share = (budget - (coarse.n_requested - spent)) // (len(pool) - d)
                    if share > 0:
                        multiflip_descent(coarse, space, start, rng, budget=share,
                                          proposals=cfg.proposals)
                picks, best_corrected = ranked(checks)
                fine_losses = fine.losses(picks)
                best = int(np.argmin(fine_losses))
                row = {"round": rnd, "answer_fine_loss": loss,
                       "offset_rms": float(np.sqrt(np.mean(offset ** 2))),
                       "best_corrected_loss": best_corrected,
                       "checked_fine_losses": [float(x) for x in fine_losses],
                       "coarse_simulations": coarse.simulated,
                       "fine_simulations": fine.simulated}
                if truth is not None:
                    row["truth_corrected_loss"] = coarse.loss_of(truth[0])
                rows.append(row)
                note(row, keep=False)
                if fine_losses[best] >= loss * (1 - 1e-9):
                    break
                answer, loss = picks[best], float(fine_losses[best])
                note({"round": rnd, "stage": f"round {rnd}", "loss": loss,
                      "tets": int(answer.sum()), "simulations": fine.n_requested})
                bar.show(f"round {rnd}", loss)
            info: dict[str, Any] = {"fine_tets": refined.grid.n_tets, "levels": levels,
                                    "continuous_tissue": True, "rounds": len(rows),
                                    "coarse_simulations": coarse.simulated,
                                    "fine_simulations": fine.simulated}
            if truth is not None:
                info["truth_loss"] = fine.loss_of(truth[1])
        finally:
            bar.close()
    return FineSearchResult(region=answer, data_loss=loss, refined=refined, rounds=rows,
                            history=history, seconds=time.perf_counter() - tic, info=info)
