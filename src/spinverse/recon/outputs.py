"""Everything a reconstruction run leaves in its folder.

RUN_DIR/
  kappa.npz        kappa (F,) µm/µs, faces (F,3), barrier (indices of κ < threshold),
                   closed (indices: the surface of the enclosed region, no open edges)
  surface.ply/.vtu the recovered interface (barrier faces) as a triangle mesh
  surface_closed.ply  the closed interface (dangling barrier faces dropped)
  grid_kappa.vtu   the grid with per-face κ, for ParaView
  metrics.json     accuracy (when a reference surface is known), losses, modes, time
  config.yaml      the resolved configuration;  log.jsonl  one line per iteration
  loss.png, signals.png, kappa_hist.png, surface.png
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spinverse import __version__
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.io import save_surface, save_vtu
from spinverse.recon.reconstructor import Reconstruction
from spinverse.recon.targets import Target


def write_outputs(
    run_dir: Path,
    grid: TetGrid,
    rec: Reconstruction,
    target: Target,
    *,
    threshold: float,
    fitted_signal: np.ndarray,
    reference_faces: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    figures: bool = True,
    arrays: dict[str, np.ndarray] | None = None,
    history_figure: Callable[[Path, list[dict[str, Any]]], Any] | None = None,
) -> dict[str, Any]:
    """Write the run folder's files; returns the metrics dictionary.

    ``arrays`` are saved in kappa.npz beside κ (e.g. ``barrier_probability``);
    ``history_figure(path, history)`` draws loss.png (default: the optimiser's loss
    history, :func:`~spinverse.viz.recon.plot_history`)."""
    from spinverse.recon.metrics import closed_surface, evaluate, structural_validity

    run_dir.mkdir(parents=True, exist_ok=True)
    closed = closed_surface(grid, rec.barrier)
    np.savez(run_dir / "kappa.npz", kappa=rec.kappa, faces=grid.faces, barrier=rec.barrier,
             closed=closed,
             threshold=np.array(threshold), outer_boundary=np.array(target.outer_boundary),
             spinverse_version=np.array(__version__), **(arrays or {}))
    if len(rec.barrier):
        save_surface(run_dir / "surface.ply", grid, rec.barrier)
        save_surface(run_dir / "surface.vtu", grid, rec.barrier)
    if len(closed):
        save_surface(run_dir / "surface_closed.ply", grid, closed)
    save_vtu(run_dir / "grid_kappa.vtu", grid, kappa=rec.kappa)
    s0 = target.s0
    norm_fit = np.abs(fitted_signal) / s0[:, None, :]
    norm_tgt = np.abs(target.signal) / s0[:, None, :]
    per_seq = (100 * np.mean((norm_fit - norm_tgt) ** 2, axis=(1, 2))).tolist()
    metrics: dict[str, Any] = {
        "spinverse_version": __version__,
        "outer_boundary": target.outer_boundary,
        "threshold": threshold,
        "barrier_faces": int(len(rec.barrier)),
        "data_loss_final_stage": rec.data_loss,
        "data_loss_per_sequence": per_seq,
        "seconds": rec.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **({"iterations": len(rec.history), "restart": rec.restart,
            "modes_last": rec.history[-1].get("modes") if rec.history else None}
           if rec.info.get("method", "gradient") == "gradient" else {}),
        **rec.info,
        **(extra or {}),
    }
    if reference_faces is not None:
        metrics.update(evaluate(grid, rec.kappa, reference_faces, threshold=threshold))
    else:
        metrics.update({f"structure_{k}": v
                        for k, v in structural_validity(grid, rec.barrier).items()})
        metrics["closed_n_faces"] = int(len(closed))
        metrics.update({f"closed_structure_{k}": v
                        for k, v in structural_validity(grid, closed).items()})
    (run_dir / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=1))
    if figures:
        from spinverse.viz.recon import plot_history, plot_kappa_histogram, plot_surfaces
        from spinverse.viz.signals import plot_signals

        (history_figure or plot_history)(run_dir / "loss.png", rec.history)
        plot_signals(run_dir / "signals.png", target.protocol,
                     {"target": target.signal, "fitted": fitted_signal},
                     title="measured (markers) vs fitted (lines)")
        plot_kappa_histogram(run_dir / "kappa_hist.png", rec.kappa, threshold)
        surfaces = {"recovered": rec.barrier, "recovered, closed": closed}
        if reference_faces is not None:
            surfaces["target"] = np.asarray(reference_faces)
        plot_surfaces(run_dir / "surface.png", grid, surfaces)
    return metrics


def to_jsonable(obj: Any) -> Any:
    """``obj`` with NumPy values as Python ones and non-finite floats as strings."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj
