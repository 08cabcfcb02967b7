"""Figures of a reconstruction run: loss history, κ histogram, recovered vs target surface."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.mesh.grid import TetGrid
from spinverse.viz.signals import _pyplot


def plot_history(path: str | PathLike[str], history: list[dict[str, Any]]) -> Path:
    """Loss terms, barrier-face count and (when logged) F1 / bad-edge % per iteration."""
    plt = _pyplot()
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
    plt = _pyplot()
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
    plt = _pyplot()
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
