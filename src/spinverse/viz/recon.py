"""Figures of a reconstruction run: loss history, κ histogram, recovered vs target surface."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.mesh.grid import TetGrid
from spinverse.viz.signals import pyplot


def plot_history(path: str | PathLike[str], history: list[dict[str, Any]]) -> Path:
    """Loss terms, barrier-face count and (when logged) F1 / bad-edge % per iteration."""
    plt = pyplot()
    it = np.array([h["iteration"] for h in history])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.semilogy(it, [h["loss"] for h in history], label="total", color="k")
    ax.semilogy(it, [h["data"] for h in history], label="data", color="C0")
    for key in sorted({k for h in history for k in h if k.startswith("prior_")}):
        ax.semilogy(it, [max(h.get(key, np.nan), 1e-12) for h in history],
                    label=key.removeprefix("prior_"), lw=0.8)
    stages = [h["stage"] for h in history]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for a in axes:
                a.axvline(it[i], color="grey", ls=":", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_title("loss")
    ax.legend(fontsize=7)
    axes[1].plot(it, [h["barrier_faces"] for h in history], color="C3")
    axes[1].set_xlabel("iteration")
    axes[1].set_title("faces below the κ threshold")
    if any("f1" in h for h in history):
        axes[2].plot(it, [h.get("f1", np.nan) for h in history], label="face F1")
        axes[2].plot(it, [h.get("bad_edges_pct", np.nan) / 100 for h in history],
                     label="bad edges / 100 %")
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].legend(fontsize=7)
        axes[2].set_title("against the reference surface")
    else:
        axes[2].plot(it, [h["grad_norm"] for h in history], color="C2")
        axes[2].set_yscale("log")
        axes[2].set_title("gradient norm (before clipping)")
    axes[2].set_xlabel("iteration")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_kappa_histogram(path: str | PathLike[str], kappa: np.ndarray,
                         threshold: float = 1e-3) -> Path:
    """Histogram of log10 κ (µm/µs) over the faces, with the barrier threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    finite = kappa[np.isfinite(kappa) & (kappa > 0)]
    ax.hist(np.log10(finite), bins=60, color="C0")
    ax.axvline(np.log10(threshold), color="C3", ls="--",
               label=f"threshold {threshold:g} µm/µs")
    ax.set_xlabel("log10 κ (κ in µm/µs)")
    ax.set_ylabel("faces")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_surfaces(
    path: str | PathLike[str],
    grid: TetGrid,
    surfaces: dict[str, np.ndarray],
) -> Path:
    """3-D renderings side by side of barrier face sets (e.g. recovered and target)."""
    plt = pyplot()
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    n = len(surfaces)
    fig = plt.figure(figsize=(4.2 * n, 4.2))
    lo, hi = grid.bounding_box
    for i, (title, faces) in enumerate(surfaces.items()):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        tri = grid.points[grid.faces[np.asarray(faces, dtype=int)]]
        outer = grid.is_outer[np.asarray(faces, dtype=int)]
        colours = np.where(outer[:, None], [[0.85, 0.55, 0.2, 0.55]], [[0.2, 0.45, 0.8, 0.7]])
        ax.add_collection3d(Poly3DCollection(tri, facecolors=colours, edgecolor="k",
                                             linewidths=0.2))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect((1, 1, 1))
        ax.set_title(f"{title} ({len(faces)} faces)", fontsize=9)
        ax.set_xlabel("x µm", fontsize=7)
        ax.set_ylabel("y µm", fontsize=7)
        ax.set_zlabel("z µm", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig: Any, path: str | PathLike[str], plt: Any) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_search_history(path: str | PathLike[str], history: list[dict[str, Any]],
                        ensemble_losses: np.ndarray | None = None,
                        neighbour_losses: np.ndarray | None = None) -> Path:
    """Best data loss against the number of shapes simulated (a marker per improvement,
    coloured by stage), and the losses of the ensemble and of the answer's single-tet
    neighbours."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    sims = [h["simulations"] for h in history]
    ax.step(sims, [h["loss"] for h in history], where="post", color="k", lw=1)
    stages = list(dict.fromkeys(h["stage"] for h in history if h["stage"] != "end"))
    for i, st in enumerate(stages):
        pts = [(h["simulations"], h["loss"]) for h in history if h["stage"] == st]
        ax.scatter(*zip(*pts, strict=True), s=14, color=f"C{i}", label=st, zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("shapes simulated")
    ax.set_ylabel("data loss of the best shape")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    floor = 1e-6
    if neighbour_losses is not None and len(neighbour_losses):
        ax.hist(np.log10(np.maximum(neighbour_losses, floor)), bins=30, alpha=0.6,
                color="C1", label="answer's single-tet neighbours")
    if ensemble_losses is not None and len(ensemble_losses):
        ax.hist(np.log10(np.maximum(ensemble_losses, floor)), bins=30, alpha=0.6,
                color="C0", label="ensemble members")
        ax.axvline(np.log10(max(float(np.min(ensemble_losses)), floor)), color="k", ls="--",
                   lw=0.8, label="answer")
    ax.set_xlabel("log10 data loss")
    ax.set_ylabel("shapes")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_barrier_probability(path: str | PathLike[str], grid: TetGrid,
                             probability: np.ndarray,
                             reference: np.ndarray | None = None) -> Path:
    """Faces with a non-zero barrier probability, coloured by it (3-D, two views), and
    the reference surface when known."""
    plt = pyplot()
    import matplotlib
    from matplotlib import cm
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    prob = np.asarray(probability, float)
    faces = np.flatnonzero(prob > 0)
    panels = [("barrier probability", 30, -60), ("barrier probability (turned)", 30, 30)]
    if reference is not None:
        panels.append(("reference surface", 30, -60))
    fig = plt.figure(figsize=(4.2 * len(panels) + 0.8, 4.2))
    lo, hi = grid.bounding_box
    cmap = matplotlib.colormaps["viridis"]
    for i, (title, elev, azim) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        if title.startswith("reference"):
            ref = np.asarray(reference, dtype=int)
            tri = grid.points[grid.faces[ref]]
            colours = [(0.2, 0.45, 0.8, 0.6)] * len(ref)
        else:
            order = np.argsort(prob[faces])
            tri = grid.points[grid.faces[faces[order]]]
            colours = cmap(prob[faces[order]])
            colours[:, 3] = 0.25 + 0.6 * prob[faces[order]]
        ax.add_collection3d(Poly3DCollection(tri, facecolors=colours, edgecolor="k",
                                             linewidths=0.1))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=6)
    sm = cm.ScalarMappable(cmap=cmap)
    sm.set_clim(0, 1)
    fig.colorbar(sm, ax=fig.axes, shrink=0.6, label="P(face is a membrane)")
    return _save(fig, path, plt)


def plot_permeability_fit(path: str | PathLike[str], target: Any, fit: Any) -> Path:
    """The data loss against log10 κ (the scan and the fit, with its CRLB ±2σ band when
    known) beside the measured and fitted normalised signals."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    ax.semilogy(fit.scan["log10_kappa"], np.maximum(fit.scan["data_loss"], 1e-30), "o-",
                color="C0", label="scan (one κ for every group)")
    for j, x in enumerate(fit.log10_kappa):
        ax.axvline(x, color=f"C{j + 1}", lw=1.2, label=f"fit: κ = {10 ** x:.3g} µm/µs")
        if fit.log10_kappa_std is not None:
            s = fit.log10_kappa_std[j]
            ax.axvspan(x - 2 * s, x + 2 * s, color=f"C{j + 1}", alpha=0.2)
    ax.set_xlabel("log10 κ (κ in µm/µs)")
    ax.set_ylabel("data loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    shape = target.signal.shape
    t = (np.abs(target.signal) / target.s0[:, None, :]).mean(axis=2)
    f = fit.fitted_signal.reshape(shape).mean(axis=2)
    b = np.asarray(target.protocol.bvalues)
    for i in range(shape[0]):
        ax.plot(b, t[i], "o", color=f"C{i}", label=f"sequence {i}: measured")
        ax.plot(b, f[i], "-", color=f"C{i}", label=f"sequence {i}: fitted")
    ax.set_xlabel("b (s/mm²)")
    ax.set_ylabel("|S| / S0, mean over directions")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)
