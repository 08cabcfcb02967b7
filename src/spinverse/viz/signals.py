"""Plots of diffusion signals: normalised |S| against b, per sequence."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.acquisition.protocol import Protocol


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: the
    ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sequence_label(seq: object) -> str:
    d = seq.to_dict()  # type: ignore[attr-defined]
    kind = d.pop("type")
    parts = ", ".join(f"{k}={v / 1000:g} ms" if isinstance(v, float) else f"{k}={v}"
                      for k, v in d.items() if not isinstance(v, list))
    return f"{kind} ({parts})" if parts else kind


def plot_signals(
    path: str | PathLike[str],
    protocol: Protocol,
    signals: dict[str, np.ndarray],
    *,
    n_directions: int = 4,
    title: str | None = None,
) -> Path:
    """Save a PNG of E = |S| / |S(b=0)| against b (s/mm²), one panel per sequence.

    ``signals`` maps a label (e.g. "target", "fitted") to an (n_seq, n_b, n_dir) array;
    the first is drawn with markers, the others with lines, for ``n_directions`` evenly
    chosen gradient directions (colours).
    """
    plt = pyplot()
    b = protocol.bvalues
    zero = int(np.argmin(b))
    dirs = np.unique(np.linspace(0, protocol.n_directions - 1, n_directions).astype(int))
    n_seq = protocol.n_sequences
    fig, axes = plt.subplots(1, n_seq, figsize=(4.2 * n_seq, 3.6), squeeze=False)
    styles = ["o", "-", "--", ":"]
    for i, ax in enumerate(axes[0]):
        for j, (label, s) in enumerate(signals.items()):
            e = np.abs(s[i]) / np.abs(s[i, zero])[None, :]
            for c, d in enumerate(dirs):
                g = protocol.directions[d]
                ax.plot(
                    b, e[:, d], styles[j % len(styles)], color=f"C{c}",
                    mfc="none" if j == 0 else None,
                    label=(f"{label}, ĝ=({g[0]:.2f},{g[1]:.2f},{g[2]:.2f})"
                           if i == 0 else None),
                )
        ax.set_yscale("log")
        ax.set_xlabel("b (s/mm²)")
        ax.set_title(_sequence_label(protocol.sequences[i]), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("|S| / |S(b=0)|")
    axes[0, 0].legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
