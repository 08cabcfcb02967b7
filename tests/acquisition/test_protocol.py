"""Acquisition protocol: validation, the published protocol, YAML and .npz round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from spinverse.acquisition import (
    PGSE,
    CosOGSE,
    DoublePGSE,
    PiecewiseConstant,
    Protocol,
    fibonacci_directions,
    load_protocol,
    protocol_from_arrays,
    protocol_from_dict,
    protocol_to_arrays,
    protocol_to_dict,
    published_protocol,
    save_protocol,
    write_bvals_bvecs,
)
from spinverse.errors import ConfigError, InputFileError, ProtocolError


def small_protocol() -> Protocol:
    return Protocol(
        diffusivity=2e-3,
        length_scale=2.0,
        bvalues=np.array([0.0, 1000.0, 2500.0]),
        directions=fibonacci_directions(4),
        sequences=(
            PGSE(5_000.0, 6_000.0),
            DoublePGSE(3_000.0, 8_000.0, 1_000.0),
            CosOGSE(10_000.0, 12_000.0, 2),
            PiecewiseConstant((1_000.0, 500.0, 1_000.0), (1.0, 0.0, -1.0)),
        ),
    )


def base_config() -> dict:
    return {
        "diffusivity": 2e-3,
        "length_scale": 2.0,
        "bvalues": [0, 1000, 2000],
        "directions": {"fibonacci": 6},
        "sequences": [{"type": "pgse", "delta": 5000, "Delta": 6000}],
    }


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- Protocol


def test_published_protocol() -> None:
    p = published_protocol()
    assert p.diffusivity == 2e-3 and p.length_scale == 2.0
    np.testing.assert_array_equal(p.bvalues, [0, 1000, 2000, 3000, 4000, 5000])
    np.testing.assert_allclose(p.directions, fibonacci_directions(30), atol=1e-15)
    assert [(s.delta, s.Delta) for s in p.sequences] == [
        (5_000.0, 6_000.0), (10_000.0, 20_000.0), (10_000.0, 60_000.0)
    ]
    assert all(isinstance(s, PGSE) for s in p.sequences)
    assert (p.n_sequences, p.n_bvalues, p.n_directions) == (3, 6, 30)
    assert p.lambda_max == pytest.approx(4.93e-3, rel=1e-3)
    assert p.lambda_max == pytest.approx(2e-3 * math.pi**2 / 4, rel=1e-15)


def test_q_reproduces_bvalues() -> None:
    p = published_protocol()
    for i, s in enumerate(p.sequences):
        q = p.q(i)
        assert q.shape == (6,) and q[0] == 0.0
        # b = q² δ² (Δ − δ/3), computed independently here
        np.testing.assert_allclose(q**2 * s.delta**2 * (s.Delta - s.delta / 3), p.bvalues,
                                   rtol=1e-13)


def test_protocol_is_immutable_and_replace_validates() -> None:
    p = published_protocol()
    with pytest.raises(ValueError):
        p.bvalues[0] = 1.0
    with pytest.raises(AttributeError):
        p.diffusivity = 1.0  # type: ignore[misc]
    p2 = p.replace(diffusivity=3e-3)
    assert p2.diffusivity == 3e-3 and p.diffusivity == 2e-3
    assert p2 != p and p.replace() == p
    with pytest.raises(ProtocolError, match="diffusivity"):
        p.replace(diffusivity=-1.0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"diffusivity": 0.0}, "diffusivity"),
        ({"diffusivity": float("nan")}, "diffusivity"),
        ({"length_scale": -2.0}, "length_scale"),
        ({"bvalues": np.array([0.0, -1.0])}, "bvalues"),
        ({"bvalues": np.array([0.0, np.inf])}, "bvalues"),
        ({"bvalues": np.array([])}, "bvalues"),
        ({"directions": np.zeros((0, 3))}, "directions"),
        ({"directions": np.array([[0.0, 0.0, 0.0]])}, "directions"),
        ({"directions": np.array([[1.0, 1.0, 0.0]])}, "directions"),
        ({"sequences": ()}, "sequences"),
        ({"sequences": ("pgse",)}, "sequences[0]"),
    ],
)
def test_protocol_validation(changes: dict, field: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        published_protocol().replace(**changes)
    assert exc.value.field == field


# --------------------------------------------------------------------------- YAML


def test_yaml_round_trip_exact(tmp_path: Path) -> None:
    p = small_protocol()
    path = save_protocol(p, tmp_path / "protocol.yaml")
    assert "µs" in path.read_text(encoding="utf-8")
    q = load_protocol(path)
    assert q == p
    np.testing.assert_array_equal(q.directions, p.directions)
    assert protocol_to_dict(q) == protocol_to_dict(p)


def test_load_minimal_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "# times in µs\n"
        "diffusivity: 2.0e-3\n"
        "length_scale: 2\n"
        "bvalues: [0, 1000, 2000]\n"
        "directions: [[1, 0, 0], [0, 0.6, 0.8]]\n"
        "sequences:\n"
        "  - {type: pgse, delta: 5e3, Delta: 6000}\n"
        "  - {type: cos_ogse, delta: 10000, Delta: 12000, n_periods: 2}\n",
        encoding="utf-8",
    )
    p = load_protocol(path)
    assert p.sequences == (PGSE(5_000.0, 6_000.0), CosOGSE(10_000.0, 12_000.0, 2))
    np.testing.assert_array_equal(p.directions, [[1, 0, 0], [0, 0.6, 0.8]])


def test_yaml_with_fsl_files(tmp_path: Path) -> None:
    sub = tmp_path / "acq"
    sub.mkdir()
    dirs = fibonacci_directions(5)
    bvals = np.array([0.0] + [1000.0] * 5 + [2000.0] * 5)
    bvecs = np.vstack([[0.0, 0.0, 0.0], dirs, dirs])
    write_bvals_bvecs(sub / "dwi.bval", sub / "dwi.bvec", bvals, bvecs)
    cfg = base_config()
    del cfg["bvalues"], cfg["directions"]
    cfg.update(bvals="dwi.bval", bvecs="dwi.bvec")
    p = load_protocol(write_yaml(sub / "p.yaml", cfg))  # paths relative to the YAML folder
    np.testing.assert_array_equal(p.bvalues, [0.0, 1000.0, 2000.0])
    np.testing.assert_array_equal(p.directions, dirs)
    # same through protocol_from_dict with an explicit base_dir
    assert protocol_from_dict(cfg, base_dir=sub) == p


def test_fsl_file_errors_name_the_file(tmp_path: Path) -> None:
    cfg = base_config()
    del cfg["bvalues"]
    cfg["bvals"] = "missing.bval"
    with pytest.raises(InputFileError, match="not found") as exc:
        load_protocol(write_yaml(tmp_path / "p.yaml", cfg))
    assert exc.value.source == str(tmp_path / "missing.bval")
    (tmp_path / "zero.bvec").write_text("0 0\n0 0\n0 0\n")
    cfg = base_config()
    del cfg["directions"]
    cfg["bvecs"] = "zero.bvec"
    with pytest.raises(ProtocolError, match="no non-zero vector"):
        load_protocol(write_yaml(tmp_path / "p.yaml", cfg))


def test_misspelled_key_suggestion(tmp_path: Path) -> None:
    cfg = base_config()
    cfg["diffusivty"] = cfg.pop("diffusivity")
    path = write_yaml(tmp_path / "p.yaml", cfg)
    with pytest.raises(ConfigError, match="did you mean 'diffusivity'") as exc:
        load_protocol(path)
    assert exc.value.source == str(path) and exc.value.field == "diffusivty"
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("mutate", "error", "field", "match"),
    [
        (lambda c: c["sequences"][0].update(Delat=1.0), ConfigError, "sequences[0].Delat",
         "did you mean 'Delta'"),
        (lambda c: c.update(directions={"fibonaci": 3}), ConfigError,
         "directions.fibonaci", "did you mean 'fibonacci'"),
        (lambda c: c["sequences"][0].update(type="pgs"), ProtocolError, "sequences[0].type",
         "did you mean 'pgse'"),
        (lambda c: c.update(bvals="x.bval"), ConfigError, "bvals", "not both"),
        (lambda c: c.pop("bvalues"), ProtocolError, "bvalues", "missing required key"),
        (lambda c: c.pop("directions"), ProtocolError, "directions", "missing required key"),
        (lambda c: c.pop("diffusivity"), ProtocolError, "diffusivity", "missing required key"),
        (lambda c: c.pop("sequences"), ProtocolError, "sequences", "missing required key"),
        (lambda c: c["sequences"][0].pop("Delta"), ProtocolError, "sequences[0].Delta",
         "missing required key 'Delta'"),
        (lambda c: c.update(sequences=[]), ProtocolError, "sequences", "at least 1"),
        (lambda c: c["sequences"][0].pop("type"), ProtocolError, "sequences[0].type",
         "missing required key 'type'"),
        (lambda c: c.update(diffusivity=-1), ProtocolError, "diffusivity", "greater than 0"),
        (lambda c: c.update(diffusivity="fast"), ProtocolError, "diffusivity", "number"),
        (lambda c: c.update(bvalues=[0, -1000]), ProtocolError, "bvalues", ">= 0"),
        (lambda c: c.update(bvalues=[0, "x"]), ProtocolError, "bvalues[1]", "number"),
        (lambda c: c.update(directions=[[1, 0]]), ProtocolError, "directions", "shape"),
        (lambda c: c.update(directions=[[1, 0, "z"]]), ProtocolError, "directions[0][2]",
         "number"),
        (lambda c: c.update(directions=5), ProtocolError, "directions", "list"),
        (lambda c: c.update(directions=[[1, 1, 0]]), ProtocolError, "directions",
         "not a unit vector"),
        (lambda c: c.update(directions={"fibonacci": 0}), ProtocolError,
         "directions.fibonacci", "greater than or equal to 1"),
        (lambda c: c["sequences"][0].update(delta=7000), ProtocolError, "sequences[0].delta",
         "delta > Delta"),
        (lambda c: c["sequences"].append({"type": "cos_ogse", "delta": 1e4, "Delta": 1.2e4,
                                          "n_periods": 1.5}),
         ProtocolError, "sequences[1].n_periods", "integer"),
        (lambda c: c["sequences"].append({"type": "piecewise", "durations": [1, 1],
                                          "values": [1, 0]}),
         ProtocolError, "sequences[1].values", "refocus"),
    ],
)
def test_config_errors(tmp_path: Path, mutate, error: type, field: str, match: str) -> None:
    cfg = base_config()
    mutate(cfg)
    path = write_yaml(tmp_path / "p.yaml", cfg)
    with pytest.raises(error, match=match) as exc:
        load_protocol(path)
    assert type(exc.value) is error
    assert exc.value.source == str(path)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("diffusivity: [1, 2\n", "not valid YAML"),
        ("", "empty"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("just a string\n", "expected a mapping"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(InputFileError, match=match) as exc:
        load_protocol(path)
    assert exc.value.source == str(path)


def test_missing_and_non_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_protocol(tmp_path / "absent.yaml")
    with pytest.raises(InputFileError, match="not a regular file"):
        load_protocol(tmp_path)
    with pytest.raises(InputFileError, match="mapping"):
        protocol_from_dict([1, 2, 3])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- arrays


def test_arrays_round_trip_through_npz(tmp_path: Path) -> None:
    p = small_protocol()
    arrays = protocol_to_arrays(p)
    assert set(arrays) == {"bvalues", "directions", "delta", "Delta", "sequence_types",
                           "sequences_json", "diffusivity", "length_scale"}
    np.testing.assert_array_equal(arrays["delta"][:3], [5_000.0, 3_000.0, 10_000.0])
    assert np.isnan(arrays["delta"][3]) and np.isnan(arrays["Delta"][3])
    assert list(arrays["sequence_types"]) == ["pgse", "double_pgse", "cos_ogse", "piecewise"]
    np.savez(tmp_path / "out.npz", **arrays)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as d:
        assert protocol_from_arrays(d) == p


def test_arrays_without_json_rebuild_pgse() -> None:
    p = published_protocol()
    arrays = protocol_to_arrays(p)
    del arrays["sequences_json"]
    assert protocol_from_arrays(arrays) == p
    arrays_bad = protocol_to_arrays(small_protocol())
    del arrays_bad["sequences_json"]
    with pytest.raises(InputFileError, match="needs 'sequences_json'"):
        protocol_from_arrays(arrays_bad, source="out.npz")
    del arrays["diffusivity"]
    with pytest.raises(InputFileError, match="missing array 'diffusivity'") as exc:
        protocol_from_arrays(arrays, source="out.npz")
    assert exc.value.source == "out.npz"
