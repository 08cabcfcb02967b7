"""Sweep machinery, run in-process with Dask's synchronous scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spinverse.cli.main import app
from spinverse.errors import ConfigError
from spinverse.sweep.report import collect, rescore, write_report
from spinverse.sweep.runner import METRICS, run_folder, run_one, run_sweep
from spinverse.sweep.spec import MeshCase, SweepConfig, expand, load_sweep


def tiny_sweep() -> SweepConfig:
    return SweepConfig.model_validate({
        "cases": ["017", "018"],
        "arms": {"a": {"preset": "both", "iterations": 4},
                 "b": {"preset": "curriculum", "iterations": 4}},
        "seeds": [0, 1],
        "noise": ["none", {"kind": "rician", "snr": 50}],
    })


class FakeRun:
    """Stands in for a reconstruction: writes metrics.json like run_one does, counts calls,
    and can die after a number of runs (a killed sweep)."""

    def __init__(self, die_after: int | None = None):
        self.calls: list[str] = []
        self.die_after = die_after

    def __call__(self, spec, out):
        folder = run_folder(Path(out), spec)
        if (folder / METRICS).is_file():
            return {**json.loads((folder / METRICS).read_text()), "status": "done"}
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(spec.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        rec = {"run_id": spec.run_id, "arm": spec.arm_name, "case": spec.case_label,
               "seed": spec.seed, "noise": spec.noise.label, "status": "done",
               "f1": 0.5 + 0.1 * spec.seed, "f1_aligned": 0.9, "chamfer": 1.0,
               "chamfer_aligned": 0.5, "bad_pct": 0.0, "seconds": 1.0}
        (folder / METRICS).write_text(json.dumps(rec))
        return rec


def test_expand_is_the_product():
    runs = expand(tiny_sweep())
    assert len(runs) == 2 * 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert runs[0].case_label.startswith("017_cyl")


def test_killed_sweep_resumes_only_missing_runs(tmp_path):
    sweep = tiny_sweep()
    first = FakeRun(die_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path, scheduler="synchronous", run=first, echo=lambda s: None)
    assert len(first.calls) == 5
    second = FakeRun()
    records = run_sweep(sweep, tmp_path, scheduler="synchronous", run=second,
                        echo=lambda s: None)
    assert len(second.calls) == 16 - 5
    assert not set(first.calls) & set(second.calls)
    assert len(records) == 16 and all(r["status"] == "done" for r in records)
    third = FakeRun()
    run_sweep(sweep, tmp_path, scheduler="synchronous", run=third, echo=lambda s: None)
    assert third.calls == []


def test_failed_run_is_recorded_and_others_continue(tmp_path):
    sweep = SweepConfig(cases=[MeshCase(mesh="missing.npz", target="missing_signals.npz")])
    spec = expand(sweep, tmp_path)[0]
    rec = run_one(spec, str(tmp_path))
    assert rec["status"] == "failed" and "missing.npz" in rec["error"]
    err = json.loads((run_folder(tmp_path, spec) / "error.json").read_text())
    assert err["status"] == "failed"
    rows = collect(tmp_path)
    assert len(rows) == 1 and rows[0]["status"] == "failed"


def test_report_tables_and_figures(tmp_path):
    run_sweep(tiny_sweep(), tmp_path, scheduler="synchronous", run=FakeRun(),
              echo=lambda s: None)
    report = write_report(tmp_path)
    text = report.read_text()
    assert "| a | 8 | 8 |" in text and "| b | 8 | 8 |" in text
    assert (tmp_path / "results.csv").read_text().count("\n") == 17
    assert (tmp_path / "boxplots.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "results.json").read_text())) == 16


def test_rescore_recomputes_metrics_from_kappa(tmp_path):
    """Runs of benchmark cases get their metrics recomputed from kappa.npz (here the
    ground truth, so every score is perfect); the report then counts them as recovered."""
    import numpy as np

    from spinverse.mesh.benchmark import case_kappa

    run_sweep(tiny_sweep(), tmp_path, scheduler="synchronous", run=FakeRun(),
              echo=lambda s: None)
    for path in tmp_path.rglob(METRICS):
        case = json.loads(path.read_text())["case"]
        np.savez(path.parent / "kappa.npz", kappa=case_kappa(case), threshold=1e-3)
    assert rescore(tmp_path) == 16
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--rescore"])  # the same, CLI
    assert res.exit_code == 0 and "rescored 16 runs" in res.output, res.output
    for r in collect(tmp_path):
        assert r["f1"] == 1.0 and r["closed_f1_aligned"] == 1.0 and r["closed_bad_pct"] == 0
        assert r["seconds"] == 1.0  # other keys kept
    text = write_report(tmp_path, figures=False).read_text()
    assert "| a | 8 | 8 | 1 ± 0 | 1 ± 0 | 0 ± 0 | 0 ± 0 | 0 ± 0 | 8 | 1 ± 0 |" in text


def test_report_reads_infinite_scores(tmp_path):
    """metrics.json writes an infinite Chamfer (empty surface) as "inf": the tables still
    treat it as a number (the mean skips it)."""
    run_sweep(tiny_sweep(), tmp_path, scheduler="synchronous", run=FakeRun(),
              echo=lambda s: None)
    path = next(tmp_path.rglob(METRICS))
    rec = json.loads(path.read_text()) | {"chamfer": "inf", "closed_chamfer": "inf"}
    path.write_text(json.dumps(rec))
    text = write_report(tmp_path, figures=False).read_text()
    assert "| inf |" in text
    rows = json.loads((tmp_path / "results.json").read_text())
    assert sum(r["chamfer"] == "inf" for r in rows) == 1
    import pandas as pd

    assert pd.read_csv(tmp_path / "results.csv")["chamfer"].max() == float("inf")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cases: all\narms: {a: {preset: both, iteratons: 3}}\n", "did you mean 'iterations'"),
        ("cases: all\nseeds: []\n", "seeds"),
        ("cases: all\narms: {a: {preset: everything}}\n", "arms.a.preset"),
        ("- 1\n", "mapping"),
    ],
)
def test_bad_sweep_files(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_sweep(p)


def test_sweep_yaml_round_trip(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"cases": ["018"], "arms": {"x": {"preset": "joint"}},
                                 "noise": [{"kind": "gaussian", "snr": 20}]}))
    s = load_sweep(p)
    (run,) = expand(s, tmp_path)
    assert run.run_id.endswith("seed0-gaussian20") and run.arm.preset == "joint"


def test_arm_length_scale_sets_the_protocol():
    """An arm's ℓ (µm) replaces the published protocol's 2 µm for benchmark targets."""
    from spinverse.sweep.runner import _protocol

    sweep = SweepConfig.model_validate({"cases": ["018"], "arms": {
        "light": {"preset": "both", "length_scale": 4.0}, "published": {"preset": "both"}}})
    runs = {r.arm_name: r for r in expand(sweep)}
    assert _protocol(runs["light"]).length_scale == 4.0
    assert _protocol(runs["published"]).length_scale == 2.0
    with pytest.raises(ValueError):
        SweepConfig.model_validate({"arms": {"x": {"length_scale": -1.0}}})


def test_each_run_uses_one_thread(tmp_path, monkeypatch):
    """Process workers share the machine: a run must not start more threads than its core."""
    import spinverse.recon.workflow as workflow
    from spinverse.solvers.mf import resolve_threads

    seen = {}

    def fake_reconstruct(grid, target, folder, **kw):
        seen["threads"] = resolve_threads(None)
        raise RuntimeError("stop here")

    monkeypatch.setattr(workflow, "reconstruct", fake_reconstruct)
    spec = expand(SweepConfig.model_validate({"cases": ["018"]}), tmp_path)[0]
    rec = run_one(spec, str(tmp_path), figures=False)
    assert seen["threads"] == 1
    assert rec["status"] == "failed" and "stop here" in rec["error"]


def test_search_arm_resolves_to_a_one_process_search_config():
    """A search arm runs the whole-shape search, one process per sweep worker, with its
    overrides, the run's seed and, with noise, the noise's SNR for the ensemble."""
    from spinverse.recon.search import SearchConfig
    from spinverse.sweep.runner import _config

    sweep = SweepConfig.model_validate({
        "cases": ["018"],
        "arms": {"s": {"preset": "search", "config": {"budget": 123,
                                                       "ensemble": {"max_members": 7}}}},
        "seeds": [4], "noise": ["none", {"kind": "rician", "snr": 30}]})
    clean, noisy = expand(sweep)
    for spec, snr in ((clean, None), (noisy, 30.0)):
        cfg = _config(spec)
        assert isinstance(cfg, SearchConfig)
        assert (cfg.budget, cfg.workers, cfg.seed) == (123, 1, 4)
        assert cfg.ensemble.max_members == 7 and cfg.ensemble.snr == snr
    assert "snr" not in sweep.arms["s"].config["ensemble"]  # the arm itself is unchanged
