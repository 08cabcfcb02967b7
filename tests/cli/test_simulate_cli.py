"""The `spinverse simulate / info / cases` contract and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from spinverse.cli.main import app
from spinverse.io.signals import load_signals
from spinverse.mesh.generators import uniform_box_grid

runner = CliRunner()


@pytest.fixture()
def files(tmp_path):
    g = uniform_box_grid([0, 0, 0], [4.0, 2.0, 2.0], [2, 1, 1])
    mesh = tmp_path / "mesh.npz"
    plane = np.flatnonzero(np.all(np.isclose(g.points[g.faces][:, :, 0], 2.0), axis=1))
    # faces in reversed vertex order, to check "any vertex order"
    np.savez(mesh, points=g.points, tets=g.tets, faces=g.faces[plane][:, ::-1],
             kappa=np.full(len(plane), 1e-4))
    prot = {
        "diffusivity": 2e-3, "length_scale": 1.0, "bvalues": [0, 1000, 3000],
        "directions": [[1, 0, 0], [0, 1, 0]],
        "sequences": [{"type": "pgse", "delta": 5000, "Delta": 10000}],
    }
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml.safe_dump(prot))
    return g, mesh, protocol, prot


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_simulate_writes_the_contract(files, tmp_path):
    g, mesh, protocol, _ = files
    out = tmp_path / "s.npz"
    res = run("simulate", mesh, "--protocol", protocol, "--out", out)
    assert res.exit_code == 0, res.output
    data = np.load(out)
    assert data["signal"].dtype == np.complex128
    assert data["signal"].shape == (1, 3, 2)
    for key in ("bvalues", "directions", "delta", "Delta", "diffusivity", "length_scale",
                "outer_boundary", "faces", "kappa", "spinverse_version"):
        assert key in data.files, key
    assert str(data["outer_boundary"]) == "reflecting"
    # reflecting box: S(b=0) is the volume, and the membrane slows the decay along x only
    assert abs(data["signal"][0, 0, 0]) == pytest.approx(16.0, rel=1e-10)
    sig = load_signals(out)
    assert sig.protocol.n_bvalues == 3
    assert np.sum(sig.kappa < 1e-3) == 2 * 1  # the plane x = 2 of a 1×1 cross-section


def test_simulate_solvers_agree(files, tmp_path):
    _, mesh, protocol, prot = files
    prot["length_scale"] = 0.05  # keep every mode, so MF is the exact semi-discrete answer
    protocol.write_text(yaml.safe_dump(prot))
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert run("simulate", mesh, "-p", protocol, "-o", a).exit_code == 0
    assert run("simulate", mesh, "-p", protocol, "-o", b, "--solver", "timestep").exit_code == 0
    sa, sb = np.load(a)["signal"], np.load(b)["signal"]
    assert np.abs(sa - sb).max() < 1e-4 * np.abs(sa).max()


def test_simulate_case_uses_robin(tmp_path):
    out = tmp_path / "c.npz"
    res = run("simulate", "--case", "018", "--out", out)
    assert res.exit_code == 0, res.output
    d = np.load(out)
    assert str(d["outer_boundary"]) == "robin"
    assert d["signal"].shape == (3, 6, 30)
    assert int(d["n_modes"]) == 61


def test_cases_and_info(files):
    res = run("cases")
    assert res.exit_code == 0 and "018_sphere_10r_in_grid_20x20" in res.output
    _, mesh, _, _ = files
    res = run("info", mesh)
    assert res.exit_code == 0 and "tets" in res.output and "kappa_finite" in res.output


def _bad_mesh(tmp_path, kind):
    g = uniform_box_grid([0, 0, 0], [2.0, 2.0, 2.0], 1)
    pts, tets = g.points.copy(), g.tets.copy()
    extra = {}
    if kind == "nan":
        pts[0, 0] = np.nan
    elif kind == "flat":
        pts[:, 2] = 0.0
    elif kind == "inverted":
        # move a vertex through the opposite face: the two tets overlap
        pts = np.vstack([pts, [1.0, 1.0, 1.0]])
        tets = np.array([[0, 1, 2, 8], [0, 1, 2, 3]])
        pts[3] = [1.2, 1.1, 0.8]
    elif kind == "not_a_face":
        extra = {"faces": np.array([[0, 1, 2]]), "kappa": np.array([1.0])}
    elif kind == "negative_kappa":
        extra = {"faces": g.faces[:1], "kappa": np.array([-1.0])}
    path = tmp_path / f"{kind}.npz"
    np.savez(path, points=pts, tets=tets, **extra)
    return path


@pytest.mark.parametrize("kind", ["nan", "flat", "inverted", "not_a_face", "negative_kappa"])
def test_bad_meshes_exit_2_with_one_line(files, tmp_path, kind):
    _, _, protocol, _ = files
    res = run("simulate", _bad_mesh(tmp_path, kind), "-p", protocol, "-o", tmp_path / "x.npz")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sequences": [{"type": "pgse", "delta": 9000, "Delta": 5000}]}, "delta > Delta"),
        ({"bvalues": [0, -1000]}, "bvalues"),
        ({"directions": [[0, 0, 0]]}, "directions"),
        ({"diffusivity": None}, "diffusivity"),
        ({"lenght_scale": 1.0}, "length_scale"),
    ],
)
def test_bad_protocols_exit_2(files, tmp_path, change, needle):
    _, mesh, protocol, prot = files
    for k, v in change.items():
        if v is None:
            prot.pop(k)
        else:
            prot[k] = v
    protocol.write_text(yaml.safe_dump(prot))
    res = run("simulate", mesh, "-p", protocol, "-o", tmp_path / "x.npz")
    assert res.exit_code == 2, res.output
    assert needle in res.output and str(protocol) in res.output


def test_missing_inputs(tmp_path, files):
    _, mesh, protocol, _ = files
    assert run("simulate", tmp_path / "nope.npz", "-p", protocol).exit_code == 2
    assert run("simulate", mesh, "-p", tmp_path / "nope.yaml").exit_code == 2
    assert run("simulate", "-p", protocol).exit_code == 2  # neither mesh nor case
    assert run("simulate", "--case", "nonexistent-case").exit_code == 2
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    assert run("simulate", junk, "-p", protocol).exit_code == 2


@pytest.mark.parametrize("argv", [
    ["simulate", "--outer-boundary", "bogus"],
    ["simulate", "--no-such-option"],
    ["info"],
    ["simulate", "--solver", "magic", "--case", "018"],
])
def test_usage_errors_are_one_line(capsys, argv):
    from spinverse.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--help" in err[0]


def test_simulate_refine_keeps_the_membrane_and_converges(files, tmp_path):
    """--refine 1: 8× the tets, the membrane's κ on the 4 children of each of its faces,
    new faces continuous (--kappa-default inf); reflecting box, so S(b=0) is still the
    volume; one level changes the signal by less than the coarse grid's own error scale."""
    _, mesh, protocol, _ = files
    coarse, fine = tmp_path / "c.npz", tmp_path / "f.npz"
    assert run("simulate", mesh, "-p", protocol, "-o", coarse).exit_code == 0
    res = run("simulate", mesh, "-p", protocol, "-o", fine, "--refine", "1")
    assert res.exit_code == 0, res.output
    c, f = load_signals(coarse), load_signals(fine)
    assert np.sum(f.kappa < 1e-3) == 4 * np.sum(c.kappa < 1e-3) == 8
    assert int(np.load(fine)["refine"]) == 1
    assert abs(f.signal[0, 0, 0]) == pytest.approx(16.0, rel=1e-10)
    e_c, e_f = (np.abs(s.signal) / np.abs(s.signal[:, :1]) for s in (c, f))
    assert 0 < np.abs(e_c - e_f).max() < 0.05
    assert run("simulate", mesh, "-p", protocol, "--refine", "-1").exit_code == 2


def test_reconstruct_refine_target_needs_a_case(files, tmp_path):
    _, mesh, _, _ = files
    res = run("reconstruct", "--target", tmp_path / "s.npz", "--grid", mesh,
              "--refine-target", "1")
    assert res.exit_code == 2 and "--refine-target needs --case" in res.output
