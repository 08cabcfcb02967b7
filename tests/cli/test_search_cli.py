"""`spinverse reconstruct` runs the whole-shape search by default: its run folder, its
metrics, resume, and the options that belong to one method or the other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.cli.main import Preset, _method_config, app
from spinverse.forward import simulate_signal
from spinverse.io.signals import save_signals
from spinverse.mesh.generators import bcc_grid
from spinverse.recon.coarse_to_fine import COARSE_BUDGET
from spinverse.recon.search import RegionSpace, SearchConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 48-tet grid, a 3-tet compartment in a corner, Robin walls; the signal file carries
    the truth's κ, so the run is scored against it."""
    d = tmp_path_factory.mktemp("search_cli")
    grid = bcc_grid(2, lower=-4.0, upper=4.0)
    space = RegionSpace(grid)
    c = grid.tet_centroids
    i = int(np.argmin(np.linalg.norm(c - [-3.0, -3.0, -3.0], axis=1)))
    region = np.zeros(grid.n_tets, dtype=bool)
    region[[i, *space.neighbours[i][:2]]] = True
    prot = Protocol(2e-3, 2.0, np.array([0.0, 1000.0, 3000.0]), fibonacci_directions(12),
                    (PGSE(3_000.0, 5_000.0), PGSE(5_000.0, 20_000.0)))
    kappa = space.kappa(region)
    sim = simulate_signal(grid, kappa, prot, outer_boundary="robin")
    save_signals(d / "signals.npz", sim.signal, prot, outer_boundary="robin",
                 faces=grid.faces, kappa=kappa, solver="mf", n_dofs=sim.n_dofs,
                 n_modes=sim.n_modes)
    np.savez(d / "grid.npz", points=grid.points, tets=grid.tets, faces=grid.faces)
    return d, space, region


def _args(d, out, *extra):
    return ["reconstruct", "--target", str(d / "signals.npz"), "--grid", str(d / "grid.npz"),
            "--out", str(out), "--quiet", *extra]


def test_default_is_the_search_and_writes_its_run_folder(files, tmp_path):
    d, space, region = files
    out = tmp_path / "run"
    res = runner.invoke(app, _args(d, out, "--budget", "200"))
    assert res.exit_code == 0, res.output
    assert "shapes simulated" in res.output and "ensemble:" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "search" and m["outer_boundary"] == "robin"
    for key in ("answer_loss", "neighbour_loss_increase_median", "ensemble_size",
                "ensemble_tolerance", "truth_one_tet_level", "twin_overlap",
                "barrier_probability_on_truth_mean", "f1_aligned", "bad_pct"):
        assert key in m, key
    assert m["bad_pct"] == 0.0  # a region's surface is a closed 2-manifold
    with np.load(out / "kappa.npz") as k:
        prob, kappa, barrier = k["barrier_probability"], k["kappa"], k["barrier"]
        members = np.unpackbits(k["ensemble_regions"], axis=1, count=space.grid.n_tets)
        assert members.shape[0] == m["ensemble_size"] == len(k["ensemble_losses"])
        assert np.isclose(k["ensemble_weights"].sum(), 1.0)
    assert prob.shape == kappa.shape and np.all((prob >= 0) & (prob <= 1))
    assert set(np.unique(kappa)) <= {1e-5, 0.1}
    assert np.array_equal(barrier, np.flatnonzero(kappa < 1e-3))
    for name in ("probability.png", "loss.png", "surface.png", "signals.png",
                 "search_cache.npz", "log.jsonl", "config.yaml"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"] == 200
    # Rerunning resumes from the cache: nothing to simulate, the same answer.
    again = runner.invoke(app, _args(d, out, "--budget", "200"))
    assert again.exit_code == 0, again.output
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["simulated_this_session"] == 0 and m2["answer_loss"] == m["answer_loss"]


def test_published_preset_runs_the_gradient_method(files, tmp_path):
    d, _, _ = files
    cfg = tmp_path / "recon.yaml"
    cfg.write_text("method: gradient\nstages:\n  - {name: all, sequences: all, iterations: 3,"
                   " warmup: 0}\n")
    res = runner.invoke(app, _args(d, tmp_path / "run", "--config", str(cfg)))
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["iterations"] == 3 and "ensemble_size" not in m


@pytest.mark.parametrize(("extra", "message"), [
    (["--preset", "search", "--iterations", "5"], "--iterations belongs to the gradient"),
    (["--preset", "published", "--budget", "50"], "--budget belongs to the search"),
    (["--preset", "published", "--config", "x.yaml"], "not both"),
])
def test_options_of_the_other_method_are_one_line_errors(files, tmp_path, extra, message):
    d, _, _ = files
    res = runner.invoke(app, _args(d, tmp_path / "run", *extra))
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_search_config_errors_name_the_key(files, tmp_path):
    d, _, _ = files
    cfg = tmp_path / "recon.yaml"
    cfg.write_text("method: search\nbudgett: 10\n")
    res = runner.invoke(app, _args(d, tmp_path / "run", "--config", str(cfg)))
    assert res.exit_code == 2
    assert "budgett" in res.output and "did you mean 'budget'" in res.output


@pytest.mark.parametrize(("budget", "refine", "expected"), [
    (None, 0, SearchConfig().budget),   # the search's own default
    (None, 1, COARSE_BUDGET),           # --refine: the fine stage does the rest
    (700, 1, 700),                      # --budget always wins
])
def test_refine_lowers_only_the_default_budget(budget, refine, expected):
    cfg = _method_config(None, None, seed=0, iterations=None, budget=budget, snr=None,
                         refine=refine)
    assert isinstance(cfg, SearchConfig) and cfg.budget == expected


def test_refine_keeps_a_config_files_budget_and_the_gradient_method(tmp_path):
    cfg = tmp_path / "recon.yaml"
    cfg.write_text("method: search\nbudget: 321\n")
    assert _method_config(cfg, None, seed=0, iterations=None, budget=None, snr=None,
                          refine=1).budget == 321
    grad = _method_config(None, Preset.published, seed=0, iterations=None, budget=None,
                          snr=None, refine=1)
    assert not isinstance(grad, SearchConfig)
