"""Hypothesis fuzzing of the loaders and the simulator (bounded: ≤ 30 examples each).

* Random valid small box grids (random point numbering, tet order, vertex order and
  per-face κ) and random protocols simulate to finite signals with |S| ≤ the grid's volume
  and S(b=0) = the volume (reflecting outer boundary: mass is conserved).
* Random invalid mutations of meshes, protocols, signal files and reconstruction configs
  (NaN injection, shape mangling, key deletion or misspelling, negative values, wrong
  types) always raise a :class:`~spinverse.errors.SpinverseError` subclass from the
  loaders, never another exception.
* Random bytes written to a ``.npz`` or ``.yaml`` path make the CLI exit with code 2.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from spinverse.acquisition.protocol import load_protocol
from spinverse.cli.main import app
from spinverse.errors import SpinverseError
from spinverse.forward import simulate_signal
from spinverse.io.signals import load_signals, save_signals
from spinverse.mesh.generators import uniform_box_grid
from spinverse.mesh.io import load_mesh
from spinverse.recon.config import config_from_dict, load_config

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
runner = CliRunner()
_counter = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fresh(folder: Path, suffix: str) -> Path:
    """A new file name in ``folder`` (hypothesis runs many examples per test)."""
    return folder / f"f{next(_counter)}{suffix}"


# ---------------------------------------------------------------------------- valid inputs
@st.composite
def valid_meshes(draw: st.DrawFn) -> dict[str, Any]:
    """Arrays of a valid box grid (µm) with a random numbering and per-face κ (µm/µs)."""
    size = [draw(st.floats(1.0, 5.0)) for _ in range(3)]
    n = [draw(st.integers(1, 2)) for _ in range(3)]
    g = uniform_box_grid([0, 0, 0], size, n)
    perm = np.array(draw(st.permutations(range(g.n_points))))
    points = np.empty_like(g.points)
    points[perm] = g.points  # old vertex i becomes perm[i]
    tets = perm[g.tets]
    tets = tets[np.array(draw(st.permutations(range(g.n_tets))))]
    tets = np.array([np.roll(t, draw(st.integers(0, 3))) for t in tets])
    chosen = draw(st.lists(st.integers(0, g.n_faces - 1), unique=True, max_size=g.n_faces))
    values = st.one_of(st.sampled_from([0.0, np.inf]), st.floats(1e-5, 1.0))
    kappa = np.array([draw(values) for _ in chosen], dtype=float)
    faces = perm[g.faces[np.array(chosen, dtype=np.int64)]].reshape(-1, 3)[:, ::-1]
    return {"points": points, "tets": tets, "faces": faces, "kappa": kappa,
            "volume": g.volume}


@st.composite
def valid_protocols(draw: st.DrawFn) -> dict[str, Any]:
    """A protocol mapping (YAML schema; times µs, b s/mm², D µm²/µs, ℓ µm)."""
    seqs = []
    for _ in range(draw(st.integers(1, 2))):
        delta = draw(st.floats(500.0, 10_000.0))
        Delta = delta + draw(st.floats(0.0, 20_000.0))
        kind = draw(st.sampled_from(["pgse", "double_pgse", "cos_ogse"]))
        seq: dict[str, Any] = {"type": kind, "delta": delta, "Delta": Delta}
        if kind == "double_pgse":
            seq["mixing"] = draw(st.floats(0.0, 5_000.0))
        elif kind == "cos_ogse":
            seq["n_periods"] = draw(st.integers(1, 2))
        seqs.append(seq)
    dirs = draw(st.lists(st.tuples(*[st.floats(-1, 1)] * 3).filter(
        lambda v: np.linalg.norm(v) > 0.1), min_size=1, max_size=3))
    return {
        "diffusivity": draw(st.floats(1e-3, 3e-3)),
        "length_scale": draw(st.floats(0.7, 3.0)),
        "bvalues": [0.0] + draw(st.lists(st.floats(1.0, 5000.0), max_size=2)),
        "directions": [(np.array(v) / np.linalg.norm(v)).tolist() for v in dirs],
        "sequences": seqs,
    }


@FUZZ
@given(mesh=valid_meshes(), prot=valid_protocols())
def test_valid_inputs_simulate_finite_and_bounded(folder: Path, mesh: dict, prot: dict):
    mesh_path, prot_path = fresh(folder, ".npz"), fresh(folder, ".yaml")
    np.savez(mesh_path, **{k: mesh[k] for k in ("points", "tets", "faces", "kappa")})
    prot_path.write_text(yaml.safe_dump(prot), encoding="utf-8")
    grid, kappa = load_mesh(mesh_path)
    protocol = load_protocol(prot_path)
    assert grid.volume == pytest.approx(mesh["volume"], rel=1e-12)
    s = simulate_signal(grid, kappa, protocol, outer_boundary="reflecting").signal
    assert s.shape == (protocol.n_sequences, protocol.n_bvalues, protocol.n_directions)
    assert np.all(np.isfinite(s))
    volume = grid.volume
    assert np.all(np.abs(s[:, 0]) <= volume * (1 + 1e-9))
    assert np.allclose(np.abs(s[:, 0]), volume, rtol=1e-8)  # mass is conserved
    assert np.all(np.abs(s) <= volume * (1 + 1e-6))


# ---------------------------------------------------------------------------- mesh mutations
GRID = uniform_box_grid([0, 0, 0], [4.0, 2.0, 2.0], [2, 1, 1])
MESH = {"points": GRID.points, "tets": GRID.tets, "faces": GRID.faces[:4],
        "kappa": np.array([1e-3, 1e-2, 0.1, 1.0])}


def _mesh_mutations(draw: st.DrawFn) -> Callable[[dict[str, np.ndarray]], None]:
    key = draw(st.sampled_from(["points", "tets", "faces", "kappa"]))
    ints = key in ("tets", "faces")

    def nan(m: dict) -> None:
        a = m[key].astype(float)
        bad = {"points": [np.nan, np.inf, -np.inf], "kappa": [np.nan, -np.inf]}  # κ = ∞ is ok
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(
            bad.get(key, [np.nan, np.inf, 0.5, 1e30])))
        m[key] = a

    def shape(m: dict) -> None:
        a = m[key]
        how = draw(st.sampled_from(["flat", "drop_col", "add_col", "transpose", "empty",
                                    "3d", "drop_row"] if key != "kappa" else
                                   ["drop_row", "add_row", "2d", "empty"]))
        if how == "flat":
            m[key] = a.reshape(-1)
        elif how == "drop_col":
            m[key] = a[:, :-1]
        elif how == "add_col":
            m[key] = np.hstack([a, a[:, :1]])
        elif how == "transpose":
            m[key] = a.T
        elif how == "empty":
            m[key] = a[:0]
        elif how == "3d":
            m[key] = a[None]
        elif how == "2d":
            m[key] = a[:, None]
        elif how == "add_row":
            m[key] = np.concatenate([a, a[:1]])
        elif how == "drop_row":
            if key == "points":
                m[key] = a[:-1]  # the last vertex is used: an out-of-range id
            elif key == "tets":
                m["tets"] = a[1:]  # faces[0] is then no longer a face of the grid
            else:
                m[key] = a[:-1]  # faces and kappa differ in length

    def delete(m: dict) -> None:
        del m[draw(st.sampled_from(["points", "tets", "faces"]))]

    def negative(m: dict) -> None:
        if key == "points":  # fold a vertex onto another: zero-volume or inverted tets
            m["points"] = m["points"].copy()
            m["points"][7] = m["points"][draw(st.sampled_from([0, 1, 3, 5]))]
            return
        a = m[key].copy()
        a.flat[draw(st.integers(0, a.size - 1))] = -draw(st.integers(1, 5) if ints else
                                                        st.floats(1e-9, 1e3))
        m[key] = a

    def dtype(m: dict) -> None:
        kind = draw(st.sampled_from(["str", "complex", "bool"]))
        a = m[key]
        m[key] = {"str": a.astype(str), "complex": a + 1j, "bool": a > 0}[kind]

    def duplicate(m: dict) -> None:
        if key in ("tets", "faces"):
            m[key] = np.concatenate([m[key], m[key][-1:, ::-1]])
            if key == "faces":
                m["kappa"] = np.append(m["kappa"], 1.0)
        else:
            nan(m)

    return draw(st.sampled_from([nan, shape, delete, negative, dtype, duplicate]))


@st.composite
def bad_meshes(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """The valid mesh arrays with one random invalidating mutation."""
    m = {k: v.copy() for k, v in MESH.items()}
    _mesh_mutations(draw)(m)
    return m


@FUZZ
@given(mesh=bad_meshes())
def test_mesh_mutations_raise_typed_errors(folder: Path, mesh: dict):
    path = fresh(folder, ".npz")
    np.savez(path, **mesh)
    with pytest.raises(SpinverseError):
        load_mesh(path)


# ---------------------------------------------------------------------------- protocol
PROTOCOL: dict[str, Any] = {
    "diffusivity": 2e-3,
    "length_scale": 1.0,
    "bvalues": [0, 1000, 3000],
    "directions": [[1, 0, 0], [0, 1, 0]],
    "sequences": [{"type": "pgse", "delta": 5000, "Delta": 10000},
                  {"type": "cos_ogse", "delta": 5000, "Delta": 6000, "n_periods": 1}],
}
_POSITIVE = [("diffusivity",), ("length_scale",), ("sequences", 0, "delta"),
             ("sequences", 0, "Delta"), ("sequences", 1, "delta"), ("sequences", 1, "Delta")]
_NON_NEGATIVE = [("bvalues", 1), ("bvalues", 2)]


def _get(d: Any, path: tuple) -> Any:
    for p in path[:-1]:
        d = d[p]
    return d


def _misspell(draw: st.DrawFn, key: str, taken: set[str]) -> str:
    how = draw(st.sampled_from(["drop", "double", "suffix", "upper"]))
    i = draw(st.integers(0, len(key) - 1))
    new = {"drop": key[:i] + key[i + 1:], "double": key[:i] + key[i] + key[i:],
           "suffix": key + "_x", "upper": key.upper() + "X"}[how]
    return new if new and new not in taken else key + "_typo"


@st.composite
def bad_protocols(draw: st.DrawFn) -> dict[str, Any]:
    d = copy.deepcopy(PROTOCOL)
    kind = draw(st.sampled_from(["value", "zero_or_negative", "delete", "misspell",
                                 "shape", "delta_gt_Delta", "type"]))
    if kind == "value":  # NaN, infinite or non-numeric values anywhere
        path = draw(st.sampled_from(_POSITIVE + _NON_NEGATIVE + [("directions", 0, 1)]))
        _get(d, path)[path[-1]] = draw(st.sampled_from(
            [float("nan"), float("inf"), -float("inf"), "abc", None, [1.0], {"a": 1}]))
    elif kind == "zero_or_negative":
        path = draw(st.sampled_from(_POSITIVE + _NON_NEGATIVE))
        bound = 0.0 if path in _POSITIVE else -1e-6
        _get(d, path)[path[-1]] = draw(st.floats(-1e6, bound))
    elif kind == "delete":
        where = draw(st.sampled_from([(), ("sequences", 0), ("sequences", 1)]))
        target = d if not where else d[where[0]][where[1]]
        del target[draw(st.sampled_from(sorted(target)))]
    elif kind == "misspell":
        where = draw(st.sampled_from([(), ("sequences", 0), ("sequences", 1)]))
        target = d if not where else d[where[0]][where[1]]
        key = draw(st.sampled_from(sorted(target)))
        target[_misspell(draw, key, set(target))] = target.pop(key)
    elif kind == "shape":
        how = draw(st.sampled_from(["dir2", "dir_flat", "dir_zero", "dir_long", "b_nested",
                                    "no_dirs", "no_b", "no_seqs", "seq_scalar", "seqs_map"]))
        if how == "dir2":
            d["directions"] = [[1, 0]]
        elif how == "dir_flat":
            d["directions"] = [1, 0, 0, 0]
        elif how == "dir_zero":
            d["directions"][draw(st.integers(0, 1))] = [0, 0, 0]
        elif how == "dir_long":
            d["directions"][0] = [draw(st.floats(1.1, 100.0)), 0, 0]
        elif how == "b_nested":
            d["bvalues"] = [[0, 1000]]
        elif how == "no_dirs":
            d["directions"] = []
        elif how == "no_b":
            d["bvalues"] = []
        elif how == "no_seqs":
            d["sequences"] = []
        elif how == "seq_scalar":
            d["sequences"] = [5000]
        else:
            d["sequences"] = {"type": "pgse"}
    elif kind == "delta_gt_Delta":
        s = d["sequences"][draw(st.integers(0, 1))]
        s["delta"] = s["Delta"] * draw(st.floats(1.001, 10.0))
    else:
        d["sequences"][0]["type"] = draw(st.sampled_from(["PGSE", "ogse", "", "trapezoid"]))
    return d


@FUZZ
@given(prot=bad_protocols())
def test_protocol_mutations_raise_typed_errors(folder: Path, prot: dict):
    path = fresh(folder, ".yaml")
    path.write_text(yaml.safe_dump(prot), encoding="utf-8")
    with pytest.raises(SpinverseError):
        load_protocol(path)


# ---------------------------------------------------------------------------- signals
SIGNAL_MUTATIONS = ["delete", "shape", "nan", "dtype", "directions", "sequences_json",
                    "outer", "bvalues"]


@FUZZ
@given(kind=st.sampled_from(SIGNAL_MUTATIONS), seed=st.integers(0, 10**6))
def test_signal_file_mutations_raise_typed_errors(folder: Path, kind: str, seed: int):
    rng = np.random.default_rng(seed)
    prot_path = fresh(folder, ".yaml")
    prot_path.write_text(yaml.safe_dump(PROTOCOL), encoding="utf-8")
    prot = load_protocol(prot_path)
    path = save_signals(fresh(folder, ".npz"), np.ones((2, 3, 2), complex), prot,
                        outer_boundary="reflecting")
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    if kind == "delete":
        del a[rng.choice(["signal", "bvalues", "directions", "diffusivity", "length_scale"])]
    elif kind == "shape":
        a["signal"] = a["signal"].reshape(-1)[: int(rng.integers(0, 12))]
    elif kind == "nan":
        a["signal"].flat[int(rng.integers(0, 12))] = rng.choice([np.nan, np.inf])
    elif kind == "dtype":
        a["signal"] = a["signal"].astype(str)
    elif kind == "directions":
        a["directions"] = a["directions"] * rng.uniform(1.5, 3.0)
    elif kind == "sequences_json":
        a["sequences_json"] = np.array(rng.choice(['{"type": "pgse"}', "[", "[1]", "[{}]"]))
    elif kind == "outer":
        a["outer_boundary"] = np.array(rng.choice(["", "dirichlet", "Robin"]))
    else:
        a["bvalues"] = np.array([0.0, -1.0, np.nan])[: int(rng.integers(1, 4))] - 1.0
    np.savez(path, **a)
    with pytest.raises(SpinverseError):
        load_signals(path)


# ---------------------------------------------------------------------------- configs
_CONFIG_KEYS = ["parameterisation", "optimizer", "stages", "threshold", "data_scale",
                "data_normalise",
                "stopping", "seed", "restarts", "checkpoint_every"]
_STAGE = {"name": "s", "sequences": [0], "iterations": 10, "warmup": 2,
          "priors": {"continuity": 1.0}}


@st.composite
def bad_configs(draw: st.DrawFn) -> Any:
    d: dict[str, Any] = {"stages": [copy.deepcopy(_STAGE)], "threshold": 1e-3,
                         "optimizer": {"lr": 0.5}, "parameterisation": {"kappa_min": 1e-5}}
    kind = draw(st.sampled_from(["unknown", "stage_delete", "negative", "type", "prior",
                                 "not_mapping", "bounds"]))
    if kind == "unknown":
        where = draw(st.sampled_from(["top", "stage", "optimizer", "parameterisation"]))
        target = {"top": d, "stage": d["stages"][0], "optimizer": d["optimizer"],
                  "parameterisation": d["parameterisation"]}[where]
        key = draw(st.sampled_from(sorted(target) if where != "top" else _CONFIG_KEYS))
        if key in target:
            target[_misspell(draw, key, set(target) | set(_CONFIG_KEYS))] = target.pop(key)
        else:
            target[_misspell(draw, key, set(_CONFIG_KEYS))] = 1
    elif kind == "stage_delete":
        del d["stages"][0][draw(st.sampled_from(["name", "sequences", "iterations"]))]
    elif kind == "negative":
        path = draw(st.sampled_from([("threshold",), ("optimizer", "lr"),
                                     ("stages", 0, "iterations"),
                                     ("parameterisation", "kappa_min")]))
        _get(d, path)[path[-1]] = -draw(st.floats(0.0, 1e3))
    elif kind == "type":
        path = draw(st.sampled_from([("threshold",), ("stages",), ("stages", 0, "name"),
                                     ("stages", 0, "sequences"), ("optimizer",)]))
        bad = [None, [[1]], {"a": 1}] + (["x"] if path[-1] != "name" else [])
        _get(d, path)[path[-1]] = draw(st.sampled_from(bad))
    elif kind == "prior":
        d["stages"][0]["priors"] = {draw(st.text("abcxyz", min_size=1, max_size=8)): 1.0}
    elif kind == "not_mapping":
        return draw(st.sampled_from([[1, 2], "stages", 3, [{"stages": []}]]))
    else:
        d["parameterisation"] = {"kappa_min": 1.0, "kappa_max": 0.1}
    return d


@FUZZ
@given(cfg=bad_configs())
def test_config_mutations_raise_typed_errors(folder: Path, cfg: Any):
    with pytest.raises(SpinverseError):
        config_from_dict(cfg)
    path = fresh(folder, ".yaml")
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(SpinverseError):
        load_config(path)


# ---------------------------------------------------------------------------- random bytes
def _exit_code(args: list[str]) -> tuple[int, str]:
    res = runner.invoke(app, args)
    return res.exit_code, res.output


garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b),  # a zip signature, then junk
    st.binary(max_size=300).map(lambda b: b"\x93NUMPY\x01\x00" + b),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
)


@FUZZ
@given(data=garbage)
def test_random_bytes_npz_exit_2(folder: Path, data: bytes):
    path = fresh(folder, ".npz")
    path.write_bytes(data)
    code, out = _exit_code(["info", str(path)])
    assert code == 2, out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), out
    with pytest.raises(SpinverseError):
        load_signals(path)


@pytest.fixture(scope="module")
def good_mesh(folder: Path) -> Path:
    path = folder / "good_mesh.npz"
    np.savez(path, points=GRID.points, tets=GRID.tets)
    return path


@FUZZ
@given(data=garbage)
def test_random_bytes_yaml_exit_2(folder: Path, good_mesh: Path, data: bytes):
    path = fresh(folder, ".yaml")
    path.write_bytes(data)
    code, out = _exit_code(["simulate", str(good_mesh), "-p", str(path),
                            "-o", str(folder / "never.npz")])
    assert code == 2, out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), out
    # a RECON.yaml: either a valid (partial) config or a typed error, never anything else
    try:
        load_config(path)
    except SpinverseError:
        pass
