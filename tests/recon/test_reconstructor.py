"""The optimisation loop on a tiny grid: outputs, exact resume, rollback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.autodiff import simulate
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import uniform_box_grid
from spinverse.recon.config import ReconConfig, StageConfig
from spinverse.recon.metrics import closed_surface
from spinverse.recon.reconstructor import Reconstructor, Target
from spinverse.recon.workflow import reconstruct


@pytest.fixture(scope="module")
def problem():
    grid = uniform_box_grid([0, 0, 0], [6.0, 3.0, 3.0], [2, 1, 1])
    plane = np.flatnonzero(np.all(np.isclose(grid.points[grid.faces][:, :, 0], 3.0), axis=1))
    kappa = np.full(grid.n_faces, 0.1)
    kappa[plane] = 1e-5
    prot = Protocol(2e-3, 1.5, np.array([0.0, 1000.0, 3000.0]),
                    np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]),
                    (PGSE(5000.0, 10000.0), PGSE(5000.0, 20000.0)))
    sig = simulate_signal(grid, kappa, prot, outer_boundary="reflecting").signal
    return grid, Target(sig, prot, "reflecting"), plane


def config(iterations=6, **kw) -> ReconConfig:
    return ReconConfig(stages=[
        StageConfig(name="a", sequences=[1], iterations=iterations // 2, warmup=1,
                    priors={"continuity": 1.0, "manifold": 1.0}),
        StageConfig(name="b", sequences="all", iterations=iterations - iterations // 2,
                    warmup=1, priors={"continuity": 1.0}),
    ], checkpoint_every=1, **kw)


def test_outputs_and_log(problem, tmp_path):
    grid, target, plane = problem
    rec, metrics = reconstruct(grid, target, tmp_path, config=config(),
                               reference_faces=plane, progress=False)
    for name in ("kappa.npz", "metrics.json", "log.jsonl", "config.yaml", "loss.png",
                 "signals.png", "kappa_hist.png", "surface.png", "grid_kappa.vtu"):
        assert (tmp_path / name).is_file(), name
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["iteration"] for ln in lines] == list(range(6))
    k = np.load(tmp_path / "kappa.npz")
    assert k["kappa"].shape == (grid.n_faces,) and np.array_equal(k["faces"], grid.faces)
    assert np.array_equal(k["barrier"], np.flatnonzero(k["kappa"] < 1e-3))
    assert np.array_equal(k["closed"], closed_surface(grid, k["barrier"]))
    assert metrics["closed_n_faces"] == len(k["closed"])
    assert (tmp_path / "surface_closed.ply").is_file() == (len(k["closed"]) > 0)
    assert np.all((k["kappa"] >= 1e-5 * (1 - 1e-12)) & (k["kappa"] <= 0.1 * (1 + 1e-12)))
    assert "f1" in metrics and metrics["outer_boundary"] == "reflecting"
    assert all(np.isfinite(h["loss"]) and h["modes"] > 0 for h in rec.history)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["adam", "global_adam"])
def test_interrupted_run_resumes_to_identical_kappa(problem, tmp_path, optimizer):
    grid, target, _ = problem

    def config_(**kw) -> ReconConfig:
        return config(optimizer={"name": optimizer}, **kw)

    full = Reconstructor(grid, target, config_(), progress=False).fit(tmp_path / "a")
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Interrupt
        return simulate(*args, **kwargs)

    with pytest.raises(Interrupt):
        Reconstructor(grid, target, config_(), simulate=dying, progress=False).fit(
            tmp_path / "b")
    resumed = Reconstructor(grid, target, config_(), progress=False).fit(tmp_path / "b")
    assert np.array_equal(full.kappa, resumed.kappa)
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 6


def test_non_finite_loss_rolls_back_and_lowers_the_step(problem, tmp_path):
    grid, target, _ = problem
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        s = simulate(*args, **kwargs)
        return s * float("nan") if calls["n"] == 2 else s

    rec = Reconstructor(grid, target, config(), simulate=flaky, progress=False).fit()
    assert rec.info["rollbacks"] == 1
    assert np.all(np.isfinite(rec.kappa)) and len(rec.history) == 6


def test_resume_refuses_another_config(problem, tmp_path):
    grid, target, _ = problem
    Reconstructor(grid, target, config(), progress=False).fit(tmp_path)
    from spinverse.errors import ConfigError

    with pytest.raises(ConfigError):
        Reconstructor(grid, target, config(seed=3), progress=False).fit(tmp_path)


def test_same_command_twice_gives_identical_kappa(problem):
    grid, target, _ = problem
    a = Reconstructor(grid, target, config(), progress=False).fit()
    b = Reconstructor(grid, target, config(), progress=False).fit()
    assert np.array_equal(a.kappa, b.kappa)
    assert torch.get_default_dtype() == torch.float32  # the loop does not change globals


def _frozen(**kw) -> ReconConfig:
    cfg = config(iterations=10, **kw)
    return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(
        update={"eigen_refresh": 3})})


def test_eigen_refresh_freezes_the_basis_between_solves(problem):
    grid, target, _ = problem
    frozen_calls = []

    def spy(*args, **kwargs):
        frozen_calls.append("basis" in kwargs)
        return simulate(*args, **kwargs)

    rec = Reconstructor(grid, target, _frozen(), simulate=spy, progress=False).fit()
    # stages of 5 iterations, a solve at 0 and 3 of each stage, then the exact final loss
    assert frozen_calls == [False, True, True, False, True] * 2 + [False]
    assert np.all(np.isfinite(rec.kappa)) and np.isfinite(rec.data_loss)


def test_interrupted_frozen_basis_run_resumes_to_identical_kappa(problem, tmp_path):
    grid, target, _ = problem
    full = Reconstructor(grid, target, _frozen(), progress=False).fit(tmp_path / "a")
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # iteration 7: inside a frozen block of stage b
            raise Interrupt
        return simulate(*args, **kwargs)

    with pytest.raises(Interrupt):
        Reconstructor(grid, target, _frozen(), simulate=dying, progress=False).fit(
            tmp_path / "b")
    resumed = Reconstructor(grid, target, _frozen(), progress=False).fit(tmp_path / "b")
    assert np.array_equal(full.kappa, resumed.kappa)


def test_checkpoint_from_before_a_new_config_field_still_resumes():
    from spinverse.recon.config import dump_config
    from spinverse.recon.reconstructor import _same_config

    cfg = config()
    old = "\n".join(ln for ln in dump_config(cfg).splitlines() if "eigen_refresh" not in ln)
    assert old != dump_config(cfg)
    assert _same_config(old, cfg)
    assert not _same_config(old, config(seed=3))
    assert not _same_config("{not: [valid", cfg)


def _file_start(path) -> ReconConfig:
    from spinverse.recon.config import ParameterisationConfig

    return config(parameterisation=ParameterisationConfig(start="file", start_file=str(path)))


def test_start_from_file_uses_its_kappa(problem, tmp_path):
    grid, target, plane = problem
    truth = np.full(grid.n_faces, 0.1)
    truth[plane] = 1e-5
    np.savez(tmp_path / "k.npz", kappa=truth, faces=grid.faces)
    rec = Reconstructor(grid, target, _file_start(tmp_path / "k.npz"), progress=False)
    start = rec.start_kappa()
    # kept 1 % of the 4-decade log range inside the bounds, so ≤ 0.04 decades off
    assert np.allclose(np.log10(start), np.log10(truth), atol=0.04 + 1e-12)
    assert np.all(start[plane] < 1e-3) and np.all(np.delete(start, plane) > 1e-3)
    # the first iteration's data term sees the truth: far below the uniform start's
    fit = rec.fit()
    uniform = Reconstructor(grid, target, config(), progress=False).fit()
    assert fit.history[0]["data"] < 0.1 * uniform.history[0]["data"]


def test_start_file_errors(problem, tmp_path):
    from pydantic import ValidationError

    from spinverse.errors import ConfigError
    from spinverse.recon.config import ParameterisationConfig

    grid, target, _ = problem
    with pytest.raises(ValidationError, match="go together"):
        ParameterisationConfig(start_file="x.npz")
    with pytest.raises(ValidationError, match="go together"):
        ParameterisationConfig(start="file")
    cases = {
        "short.npz": {"kappa": np.full(grid.n_faces - 1, 0.01)},
        "nokappa.npz": {"faces": grid.faces},
        "order.npz": {"kappa": np.full(grid.n_faces, 0.01), "faces": grid.faces[::-1]},
        "negative.npz": {"kappa": np.full(grid.n_faces, -0.01)},
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        rec = Reconstructor(grid, target, _file_start(tmp_path / name), progress=False)
        with pytest.raises(ConfigError, match="start_file"):
            rec.start_kappa()
    rec = Reconstructor(grid, target, _file_start(tmp_path / "missing.npz"), progress=False)
    with pytest.raises(ConfigError, match="cannot read"):
        rec.start_kappa()


def test_a_repeated_sequence_index_weighs_that_sequence_more(problem):
    grid, target, _ = problem
    stages = [StageConfig(name=str(s), sequences=s, iterations=1) for s in ([0], [1], [0, 0, 1])]
    rec = Reconstructor(grid, target, ReconConfig(stages=stages), progress=False)
    kappa = torch.full((grid.n_faces,), 1e-2, dtype=torch.float64)
    first, second, weighted = (float(rec.data_loss(kappa, i)) for i in range(3))
    assert first != pytest.approx(second, rel=1e-3)
    assert weighted == pytest.approx((2 * first + second) / 3, rel=1e-10)


def test_own_normalisation_is_blind_to_scale_and_is_the_attenuation(problem):
    """data_normalise: own compares E(b) = |S|/|S(b=0)| of each signal: a target scaled
    by any factor gives the same loss (the published target-S0 one does not), and the
    value is the formula's."""
    grid, target, plane = problem
    kappa = np.full(grid.n_faces, 0.02)
    k = torch.from_numpy(kappa)
    scaled = Target(3.7 * target.signal, target.protocol, target.outer_boundary)
    own = config(data_normalise="own")
    losses = {name: [float(Reconstructor(grid, t, c, progress=False).data_loss(k, 1))
                     for t in (target, scaled)]
              for name, c in (("own", own), ("target", config()))}
    assert losses["own"][0] == pytest.approx(losses["own"][1], rel=1e-12)
    assert losses["target"][1] > 1.5 * losses["target"][0]
    s = np.abs(simulate_signal(grid, kappa, target.protocol,
                               outer_boundary="reflecting").signal)
    t = np.abs(target.signal)
    expected = 100 * np.mean((s / s[:, :1] - t / t[:, :1]) ** 2)
    assert losses["own"][0] == pytest.approx(expected, rel=1e-8)
    truth = np.full(grid.n_faces, 0.1)
    truth[plane] = 1e-5
    assert float(Reconstructor(grid, target, own, progress=False).data_loss(
        torch.from_numpy(truth), 1)) < 1e-12


def test_own_normalisation_needs_b0_in_every_stage(problem):
    from spinverse.errors import ConfigError

    grid, target, _ = problem
    cfg = ReconConfig(stages=[StageConfig(name="high b", sequences=[0], iterations=2,
                                          bvalues=[1000.0, 3000.0])],
                      data_normalise="own")
    with pytest.raises(ConfigError, match="b = 0"):
        Reconstructor(grid, target, cfg, progress=False)
    Reconstructor(grid, target, cfg.model_copy(update={"data_normalise": "target"}),
                  progress=False)


@pytest.fixture
def prior_registry():
    from spinverse.recon import priors as P

    saved = dict(P.PRIORS)
    yield P
    P.PRIORS.clear()
    P.PRIORS.update(saved)


def test_a_new_prior_is_one_declaration(problem, prior_registry):
    """A prior registered in one line is accepted by configs and weighted in the fit."""
    grid, target, _ = problem
    prior_registry.register_prior("barrier_fraction", lambda logk, p, topo: p.mean())
    cfg = ReconConfig(stages=[StageConfig(name="a", sequences="all", iterations=2, warmup=1,
                                          priors={"barrier_fraction": 3.0})])
    rec = Reconstructor(grid, target, cfg, progress=False)
    v = torch.zeros(grid.n_faces, dtype=torch.float64, requires_grad=True)
    terms = rec.prior_terms(v, {"barrier_fraction": 3.0, "continuity": 0.0})
    p = prior_registry.barrier_indicator(rec.param.log10_kappa(v))
    assert set(terms) == {"barrier_fraction"}
    assert float(terms["barrier_fraction"].detach()) == pytest.approx(
        3.0 * float(p.detach().mean()), rel=1e-12)
    terms["barrier_fraction"].backward()
    assert v.grad is not None and torch.all(torch.isfinite(v.grad)) and v.grad.abs().sum() > 0
    assert np.all(np.isfinite(rec.fit().kappa))


def test_unknown_prior_names_the_registered_ones(prior_registry):
    with pytest.raises(ValueError) as e:
        StageConfig(name="a", sequences="all", iterations=2, priors={"smoothness": 1.0})
    assert all(name in str(e.value) for name in prior_registry.PRIORS)
    with pytest.raises(ValueError, match="already registered"):
        prior_registry.register_prior("manifold", lambda logk, p, topo: p.sum())
