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
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator, RegionModel
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
    refine_budget: int = 600,
) -> tuple[Reconstruction, dict[str, Any]]:
    """Fit ``target`` and write RUN_DIR (κ, surface, metrics, log, config, figures).

    ``config``: a :class:`SearchConfig` (the whole-shape search, the default) or a
    :class:`ReconConfig` (gradient descent on per-face κ, e.g. the published preset).
    ``refine`` > 0: then correct the answer with the physics of the grid refined that many
    times (1:8 each) by a defect-corrected search of ``refine_budget`` coarse shapes a
    round (:mod:`spinverse.recon.coarse_to_fine`), written to RUN_DIR/refined; the
    returned reconstruction and metrics are then the fine ones."""
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
        return _refine(grid, target, Path(run_dir), rec, refine, refine_budget,
                       reference_faces, progress, figures, extra, cfg)
    return rec, metrics


def _refine(grid: TetGrid, target: Target, run: Path, coarse: Reconstruction,
            levels: int, budget: int, reference_faces: np.ndarray | None, progress: bool,
            figures: bool, extra: dict[str, Any] | None, cfg: ReconConfig | SearchConfig,
            ) -> tuple[Reconstruction, dict[str, Any]]:
    """The fine stage of a coarse-to-fine run (:mod:`spinverse.recon.coarse_to_fine`),
    written to RUN/refined, with RUN/coarse_to_fine.json comparing the two answers."""
    import json

    from spinverse.mesh.refine import coarse_face_of, refine_kappa
    from spinverse.recon.coarse_to_fine import fine_search, surface_metrics
    from spinverse.recon.outputs import write_outputs
    from spinverse.viz.recon import plot_search_history

    scfg = cfg if isinstance(cfg, SearchConfig) else SearchConfig()
    starts, known = _coarse_shapes(grid, target, run, coarse, scfg)
    truth = _reference_region(grid, reference_faces)
    log.info("coarse-to-fine: %d known shapes, %d levels, %d coarse shapes a round",
             len(known) + len(starts), levels, budget)
    out = run / "refined"
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    res = fine_search(grid, target, starts, known=known, levels=levels, budget=budget,
                      config=scfg, progress=progress, reference_region=truth,
                      log_file=out / "log.jsonl")
    fine = res.refined
    space = RegionSpace(grid, scfg.membrane_kappa, scfg.other_kappa)
    sim_grid, sim_kappa = RegionModel(space, target, refined=fine,
                                      continuous=True).simulation(res.region)
    fitted = simulate_signal(sim_grid, sim_kappa, target.protocol,
                             outer_boundary=target.outer_boundary).signal
    # written with the benchmark convention (finite κ off the membrane)
    kappa = refine_kappa(fine, grid, space.kappa(res.region), new_faces=scfg.other_kappa)
    rec = Reconstruction(kappa=kappa, barrier=np.flatnonzero(kappa < scfg.threshold),
                         history=res.history, data_loss=res.data_loss, seconds=res.seconds,
                         info={"method": "defect-corrected search", **res.info})
    ref_fine = None
    surf: dict[str, Any] = {}
    if reference_faces is not None:
        src = coarse_face_of(fine, grid)
        ref_fine = np.flatnonzero(np.isin(src, reference_faces) & (src >= 0))
        surf = {"coarse": surface_metrics(grid, coarse.barrier, grid, reference_faces),
                "fine": surface_metrics(fine.grid, rec.barrier, grid, reference_faces)}
    summary = {"levels": levels, "fine_tets": fine.grid.n_tets, "budget": budget,
               "coarse_data_loss": coarse.data_loss,
               "coarse_answer_fine_loss": res.history[0]["loss"],
               "fine_data_loss": res.data_loss, "truth_fine_loss": res.info.get("truth_loss"),
               "coarse_simulations": res.info["coarse_simulations"],
               "fine_simulations": res.info["fine_simulations"], "seconds": res.seconds,
               "surface_um": surf, "rounds": res.rounds}
    more = {**(extra or {}), **summary}
    metrics = write_outputs(out, fine.grid, rec, target,
                            threshold=scfg.threshold, fitted_signal=fitted,
                            reference_faces=ref_fine, extra=more, figures=figures,
                            arrays={"region_coarse_tets": res.region},
                            history_figure=plot_search_history)
    (run / "coarse_to_fine.json").write_text(json.dumps(summary, indent=1),
                                             encoding="utf-8")
    return rec, metrics


def _coarse_shapes(grid: TetGrid, target: Target, run: Path, coarse: Reconstruction,
                   cfg: SearchConfig) -> tuple[list[np.ndarray], dict[bytes, np.ndarray]]:
    """What the fine stage starts from: the coarse search's cache (every shape it
    simulated, with its signal), or for a gradient answer the region its barrier
    encloses."""
    from spinverse.mesh.benchmark import enclosed_tets
    from spinverse.recon.search.engine import CACHE_FILE

    cache = run / CACHE_FILE
    if cache.exists():
        ev = Evaluator(RegionModel(RegionSpace(grid, cfg.membrane_kappa, cfg.other_kappa),
                                   target))
        ev.load(cache)
        return [], ev.cache
    region = enclosed_tets(grid, coarse.barrier)
    if not region.any():
        region = enclosed_tets(grid, np.flatnonzero(coarse.kappa < cfg.threshold))
    return [region], {}


def _reference_region(grid: TetGrid, reference_faces: np.ndarray | None
                      ) -> np.ndarray | None:
    """The tets a reference surface encloses, or None (no reference, or it encloses
    nothing)."""
    from spinverse.mesh.benchmark import enclosed_tets

    if reference_faces is None:
        return None
    region = enclosed_tets(grid, reference_faces)
    return region if region.any() else None


def _search(grid: TetGrid, target: Target, run: Path, cfg: SearchConfig,
            reference_faces: np.ndarray | None, progress: bool, figures: bool,
            extra: dict[str, Any] | None) -> tuple[Reconstruction, dict[str, Any]]:
    from functools import partial

    import yaml

    from spinverse.recon.outputs import write_outputs
    from spinverse.recon.search import ShapeSearch
    from spinverse.viz.recon import plot_barrier_probability, plot_search_history

    truth = _reference_region(grid, reference_faces)
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
