"""Reconstruction configuration, curriculum schedule and noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spinverse.errors import ConfigError, InputFileError
from spinverse.recon.config import (
    ABLATION_ARMS,
    Ramp,
    ablation_arm,
    config_from_dict,
    dump_config,
    load_config,
    no_curriculum,
    published_preset,
)
from spinverse.recon.curriculum import learning_rate, locate, prior_weights, stage_start
from spinverse.recon.noise import add_noise


def test_published_preset_matches_the_spec():
    c = published_preset()
    assert c.total_iterations == 400
    assert [s.sequences for s in c.stages] == [[2], [1]]
    assert c.optimizer.lr == 0.6 and c.optimizer.clip_norm == 1.0
    assert c.parameterisation.kappa_min == 1e-5 and c.parameterisation.kappa_max == 0.1
    assert c.parameterisation.start_kappa == 1e-3 and c.threshold == 1e-3
    assert c.stages[0].priors["continuity"] == 2.0
    assert c.stages[0].priors["manifold"] == Ramp(start=0.0, end=2.0)


def test_learning_rate_schedule():
    c = published_preset()
    lr = [learning_rate(c, locate(c, i)) for i in range(400)]
    assert lr[0] == pytest.approx(0.6 / 50)
    assert lr[49] == pytest.approx(0.6)
    assert lr[199] == pytest.approx(0.06, rel=1e-3)  # cosine to 0.1× at the stage end
    assert lr[200] == pytest.approx(0.6 / 50)  # restarts at the stage switch
    assert all(a >= b - 1e-12 for a, b in zip(lr[50:199], lr[51:200], strict=False))


def test_prior_ramp_and_stage_lookup():
    c = published_preset()
    assert prior_weights(locate(c, 0))["manifold"] == 0.0
    assert prior_weights(locate(c, 199))["manifold"] == pytest.approx(2.0)
    assert prior_weights(locate(c, 300))["manifold"] == 2.0
    assert locate(c, 200).stage_index == 1 and stage_start(c, 1) == 200
    with pytest.raises(IndexError):
        locate(c, 400)


def test_ablation_arms():
    assert set(ABLATION_ARMS) == {"curriculum", "continuity", "manifold", "both"}
    assert ablation_arm("curriculum").stages[0].priors == {}
    assert set(ablation_arm("continuity").stages[1].priors) == {"continuity"}
    assert set(ablation_arm("manifold").stages[1].priors) == {"manifold"}
    assert ablation_arm("both") == published_preset()
    joint = no_curriculum()
    assert len(joint.stages) == 1 and joint.stages[0].sequences == [1, 2]
    assert joint.total_iterations == 400
    with pytest.raises(ConfigError):
        ablation_arm("everything")


def test_yaml_round_trip_and_partial_files(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(dump_config(published_preset()))
    assert load_config(path) == published_preset()
    path.write_text("seed: 5\nthreshold: 2.0e-3\n")
    c = load_config(path)
    assert c.seed == 5 and c.threshold == 2e-3 and c.total_iterations == 400


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("treshold: 1.0e-3\n", "did you mean 'threshold'"),
        ("optimizer: {lr: -1}\n", "optimizer.lr"),
        ("parameterisation: {start_kappa: 1.0}\n", "kappa_min < start_kappa < kappa_max"),
        ("stages: []\n", "stages"),
        ("stages: [{name: a, sequences: [0], iterations: 5, priors: {continuty: 1}}]\n",
         "did you mean 'continuity'"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(InputFileError):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(InputFileError):
        load_config(p)


def test_config_from_dict_rejects_non_mapping():
    with pytest.raises(ConfigError):
        config_from_dict([1, 2])  # type: ignore[arg-type]


@given(snr=st.floats(5, 1000), seed=st.integers(0, 1000))
def test_rician_noise_level(snr, seed):
    rng = np.random.default_rng(1)
    s = (rng.uniform(0.5, 1.0, (2, 400, 3)) + 0j) * 1000
    s[:, 0, :] = 2000
    noisy = add_noise(s, snr=snr, kind="gaussian", seed=seed)
    resid = (noisy.real - np.abs(s))[:, 1:, :] / (2000 / snr)
    assert abs(resid.std() - 1) < 0.1
    ric = add_noise(s, snr=snr, kind="rician", seed=seed)
    assert np.all(ric.real >= 0) and np.all(ric.imag == 0)
    assert np.array_equal(ric, add_noise(s, snr=snr, kind="rician", seed=seed))


def test_noise_errors():
    s = np.ones((1, 2, 1), complex)
    with pytest.raises(ConfigError):
        add_noise(s, snr=0, kind="rician")
    with pytest.raises(ConfigError):
        add_noise(s, snr=10, kind="laplace")
