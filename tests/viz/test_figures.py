"""Every figure function writes a readable PNG of the size it drew (Agg backend)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from spinverse.acquisition.protocol import published_protocol  # noqa: E402
from spinverse.mesh.benchmark import benchmark_grid, case_barrier, resolve_case  # noqa: E402
from spinverse.viz import recon as R  # noqa: E402
from spinverse.viz.signals import plot_signals  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_signal_and_history_figures(tmp_path):
    prot = published_protocol()
    rng = np.random.default_rng(0)
    s = np.exp(-np.outer(prot.bvalues, np.ones(prot.n_directions)) * 2e-4)[None] * 500.0
    target = np.repeat(s, prot.n_sequences, axis=0)
    fitted = target * (1 + 0.01 * rng.standard_normal(target.shape))
    w, h = _png_size(plot_signals(tmp_path / "signals.png", prot,
                                  {"target": target, "fitted": fitted}))
    assert w > 400 and h > 200
    history = [{"iteration": i, "stage": "long" if i < 4 else "middle",
                "loss": 1.0 / (i + 1), "data": 0.5 / (i + 1),
                "prior_continuity": 0.1, "barrier_faces": 10 + i, "f1": 0.1 * i,
                "bad_edges_pct": 0.0} for i in range(8)]
    assert _png_size(R.plot_history(tmp_path / "loss.png", history))[0] > 400
    search = [{"simulations": 10 * (i + 1), "loss": 1.0 / (i + 1), "stage": "descent"}
              for i in range(5)]
    assert _png_size(R.plot_search_history(tmp_path / "search.png", search,
                                           np.array([0.2, 0.25]), np.array([0.3, 0.5])))[0]


def test_surface_and_probability_figures(tmp_path):
    grid = benchmark_grid()
    barrier = case_barrier(resolve_case("018"))
    kappa = np.full(grid.n_faces, 0.1)
    kappa[barrier] = 1e-5
    assert _png_size(R.plot_kappa_histogram(tmp_path / "hist.png", kappa))[0] > 200
    assert _png_size(R.plot_surfaces(tmp_path / "surface.png", grid,
                                     {"recovered": barrier, "target": barrier}))[0] > 400
    prob = np.zeros(grid.n_faces)
    prob[barrier] = np.linspace(0.2, 1.0, len(barrier))
    assert _png_size(R.plot_barrier_probability(tmp_path / "prob.png", grid, prob,
                                                reference=barrier))[0] > 400
