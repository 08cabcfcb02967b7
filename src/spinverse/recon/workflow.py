"""End-to-end reconstruction runs (what the CLI calls): fit a target with either method
and write the run folder (targets are made in :mod:`spinverse.recon.targets`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.forward import simulate_signal
from spinverse.mesh.grid import TetGrid
from spinverse.recon.config import ReconConfig
from spinverse.recon.reconstructor import Reconstruction, Reconstructor
from spinverse.recon.search.config import SearchConfig
from spinverse.recon.targets import Target

log = logging.getLogger(__name__)


def reconstruct(
    grid: TetGrid,
    target: Target,
    run_dir: str | Path,
    *,
    config: ReconConfig | SearchConfig | None = None,
    reference_faces: np.ndarray | None = None,
    progress: bool = True,
    figures: bool = True,
    extra: dict[str, Any] | None = None,
    refine: int = 0,
    refine_iterations: int = 20,
) -> tuple[Reconstruction, dict[str, Any]]:
    """Fit ``target`` and write RUN_DIR (κ, surface, metrics, log, config, figures).

    ``config``: a :class:`SearchConfig` (the whole-shape search, the default) or a
    :class:`ReconConfig` (gradient descent on per-face κ, e.g. the published preset).
    ``refine`` > 0: then continue on the grid refined that many times (1:8 each) for
    ``refine_iterations`` gradient iterations from the transferred answer, written to
    RUN_DIR/refined (:mod:`spinverse.recon.coarse_to_fine`); the returned reconstruction
    and metrics are then the fine ones."""
    from spinverse.recon.outputs import write_outputs

    cfg = config if config is not None else SearchConfig()
    if isinstance(cfg, SearchConfig):
        rec, metrics = _search(grid, target, Path(run_dir), cfg, reference_faces, progress,
                               figures, extra)
    else:
        run = Path(run_dir)
        rec = Reconstructor(grid, target, cfg, progress=progress,
                            reference_faces=reference_faces).fit(run)
        fitted = simulate_signal(grid, rec.kappa, target.protocol,
                                 outer_boundary=target.outer_boundary).signal
        metrics = write_outputs(run, grid, rec, target, threshold=cfg.threshold,
                                fitted_signal=fitted, reference_faces=reference_faces,
                                extra=extra, figures=figures)
    if refine:
        return _refine(grid, target, Path(run_dir), rec, metrics, refine, refine_iterations,
                       reference_faces, progress, figures, extra, cfg)
    return rec, metrics


def _refine(grid: TetGrid, target: Target, run: Path, coarse: Reconstruction,
            coarse_metrics: dict[str, Any], levels: int, iterations: int,
            reference_faces: np.ndarray | None, progress: bool, figures: bool,
            extra: dict[str, Any] | None, cfg: ReconConfig | SearchConfig,
            ) -> tuple[Reconstruction, dict[str, Any]]:
    """The fine stage of a coarse-to-fine run, in RUN/refined."""
    import json

    from spinverse.mesh.refine import coarse_face_of
    from spinverse.recon.coarse_to_fine import fine_config, refine_answer, surface_metrics
    from spinverse.recon.outputs import write_outputs

    out = run / "refined"
    out.mkdir(parents=True, exist_ok=True)
    fine, k0 = refine_answer(grid, coarse.kappa, levels)
    start = out / "start_kappa.npz"
    np.savez_compressed(start, kappa=k0, faces=fine.grid.faces)
    fcfg = fine_config(start.resolve(), iterations, seed=getattr(cfg, "seed", 0))
    ref_fine = None
    if reference_faces is not None:
        src = coarse_face_of(fine, grid)
        ref_fine = np.flatnonzero(np.isin(src, reference_faces) & (src >= 0))
    log.info("coarse-to-fine: %d → %d tets, %d iterations", grid.n_tets, fine.grid.n_tets,
             iterations)
    rec = Reconstructor(fine.grid, target, fcfg, progress=progress,
                        reference_faces=ref_fine).fit(out)
    fitted = simulate_signal(fine.grid, rec.kappa, target.protocol,
                             outer_boundary=target.outer_boundary).signal
    surf: dict[str, Any] = {}
    if reference_faces is not None:
        surf = {"coarse": surface_metrics(grid, coarse.barrier, grid, reference_faces),
                "transferred": surface_metrics(fine.grid, np.flatnonzero(k0 < fcfg.threshold),
                                               grid, reference_faces),
                "fine": surface_metrics(fine.grid, rec.barrier, grid, reference_faces)}
    more = {**(extra or {}), "refine": levels, "refine_iterations": iterations,
            "coarse_data_loss": coarse.data_loss, "surface_um": surf}
    metrics = write_outputs(out, fine.grid, rec, target, threshold=fcfg.threshold,
                            fitted_signal=fitted, reference_faces=ref_fine, extra=more,
                            figures=figures)
    coarse_metrics["refined"] = {"surface_um": surf, "data_loss": rec.data_loss}
    (run / "coarse_to_fine.json").write_text(json.dumps(
        {"coarse_data_loss": coarse.data_loss, "fine_data_loss": rec.data_loss,
         "surface_um": surf, "fine_tets": fine.grid.n_tets, "iterations": iterations},
        indent=1), encoding="utf-8")
    return rec, metrics


def _search(grid: TetGrid, target: Target, run: Path, cfg: SearchConfig,
            reference_faces: np.ndarray | None, progress: bool, figures: bool,
            extra: dict[str, Any] | None) -> tuple[Reconstruction, dict[str, Any]]:
    from functools import partial

    import yaml

    from spinverse.mesh.benchmark import enclosed_tets
    from spinverse.recon.outputs import write_outputs
    from spinverse.recon.search import ShapeSearch
    from spinverse.viz.recon import plot_barrier_probability, plot_search_history

    truth = None
    if reference_faces is not None:
        truth = enclosed_tets(grid, reference_faces)
        truth = truth if truth.any() else None
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    search = ShapeSearch(grid, target, cfg, progress=progress)
    res = search.run(run, reference_region=truth)
    fitted = simulate_signal(grid, res.kappa, target.protocol,
                             outer_boundary=target.outer_boundary).signal
    ens = res.ensemble
    import resource

    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    info = {"method": "search", "simulations": res.simulations,
            "peak_rss_workers_mb": workers_mb,
            **ens.summary(search.space),
            **{k: v for k, v in res.info.items() if k != "truth"},
            **{f"{k}": v for k, v in res.info.get("truth", {}).items()}}
    if reference_faces is not None:
        info["barrier_probability_on_truth_mean"] = _probability_on_reference(
            grid, res.barrier_probability, res.barrier, reference_faces)
    rec = Reconstruction(kappa=res.kappa, barrier=res.barrier, history=res.history,
                         data_loss=res.data_loss, seconds=res.seconds, info=info)
    history_fig = partial(plot_search_history, ensemble_losses=ens.losses,
                          neighbour_losses=res.neighbour_losses)
    metrics = write_outputs(
        run, grid, rec, target, threshold=cfg.threshold, fitted_signal=fitted,
        reference_faces=reference_faces, extra=extra, figures=figures,
        arrays={"barrier_probability": res.barrier_probability, "region": res.region,
                "ensemble_regions": np.packbits(ens.regions, axis=1),
                "ensemble_losses": ens.losses, "ensemble_weights": ens.weights},
        history_figure=history_fig)
    if figures:
        plot_barrier_probability(run / "probability.png", grid, res.barrier_probability,
                                 reference_faces)
    return rec, metrics


def _probability_on_reference(grid: TetGrid, probability: np.ndarray, answer: np.ndarray,
                              reference: np.ndarray) -> float:
    """Mean barrier probability over the reference faces, after putting the probability
    map in the reference's frame by the alignment that scores the answer best (the
    blind symmetries of :func:`~spinverse.recon.metrics.best_aligned_scores`)."""
    from spinverse.recon.metrics import align_face_values

    aligned = align_face_values(grid, answer, reference, probability)
    return float(aligned[np.asarray(reference, dtype=np.int64)].mean())
