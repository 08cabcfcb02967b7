"""`spinverse permeability`: the contract (flags, permeability.json keys, figure) and its
one-line errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spinverse.acquisition.protocol import published_protocol
from spinverse.cli.main import app
from spinverse.forward import simulate_signal
from spinverse.io.signals import save_signals
from spinverse.mesh.benchmark import benchmark_grid, case_barrier

runner = CliRunner()
KAPPA = 3e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The sphere of case 018 with κ = 3e-5 µm/µs on its membrane, 0.1 elsewhere (Robin)."""
    d = tmp_path_factory.mktemp("perm")
    grid = benchmark_grid()
    mem = case_barrier("018")
    prot = published_protocol()
    k = np.full(grid.n_faces, 0.1)
    k[mem] = KAPPA
    sim = simulate_signal(grid, k, prot, outer_boundary="robin")
    save_signals(d / "s.npz", sim.signal, prot, outer_boundary="robin", faces=grid.faces,
                 kappa=k, solver="mf", n_dofs=sim.n_dofs, n_modes=sim.n_modes)
    np.savez(d / "g.npz", points=grid.points, tets=grid.tets, faces=grid.faces)
    tri = grid.faces[mem][:, ::-1]  # any vertex order
    np.savez(d / "m.npz", faces=tri)
    return d, grid, mem


def _args(d, out, *extra, membrane="m.npz"):
    return ["permeability", "--target", str(d / "s.npz"), "--grid", str(d / "g.npz"),
            "--membrane", str(d / membrane), "--out", str(out), *extra]


def test_fit_writes_the_contract(files, tmp_path):
    d, grid, mem = files
    res = runner.invoke(app, _args(d, tmp_path / "o", "--snr", "50"))
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "o" / "permeability.json").read_text())
    assert abs(r["kappa"] / KAPPA - 1) < 1e-6
    assert 0 < r["kappa_std"] < 0.05 * KAPPA
    assert len(r["exchange_time_ms"]) == 1 and r["exchange_time_ms"][0] > 0
    assert r["data_loss"] < 1e-15
    assert (tmp_path / "o" / "fit.png").stat().st_size > 1000
    no_snr = runner.invoke(app, _args(d, tmp_path / "p"))
    assert no_snr.exit_code == 0, no_snr.output
    assert json.loads((tmp_path / "p" / "permeability.json").read_text())["kappa_std"] is None


def test_exchange_time_is_volume_over_kappa_area(files, tmp_path):
    d, grid, mem = files
    from spinverse.mesh.benchmark import enclosed_tets

    res = runner.invoke(app, _args(d, tmp_path / "o"))
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "o" / "permeability.json").read_text())
    inside = enclosed_tets(grid, mem)
    tau = grid.volumes[inside].sum() / (r["kappa"] * grid.face_areas[mem].sum()) / 1000
    assert np.isclose(r["exchange_time_ms"][0], tau, rtol=1e-9)


def test_bad_inputs_are_one_line_errors(files, tmp_path):
    d, grid, mem = files
    np.savez(tmp_path / "empty.npz", faces=np.zeros((0, 3), dtype=np.int64))
    np.savez(tmp_path / "alien.npz", faces=np.array([[0, 1, 2], [0, 1, 188]]))
    np.savez(tmp_path / "nofaces.npz", tris=np.array([[0, 1, 2]]))
    from spinverse.io.signals import load_signals

    sig = load_signals(d / "s.npz")
    prot = sig.protocol.replace(bvalues=sig.protocol.bvalues[1:])
    save_signals(tmp_path / "nob0.npz", sig.signal[:, 1:], prot, outer_boundary="robin")
    def with_membrane(name):
        return [*_args(d, tmp_path / "o")[:5], "--membrane", str(tmp_path / name), "--out",
                str(tmp_path / "o")]

    cases = [
        (_args(d, tmp_path / "o", membrane="x"), "no such file"),
        (with_membrane("empty.npz"), "empty"),
        (with_membrane("alien.npz"), "not faces of the grid"),
        (with_membrane("nofaces.npz"), "missing key 'faces'"),
        (["permeability", "--target", str(tmp_path / "nob0.npz"), "--grid", str(d / "g.npz"),
          "--membrane", str(d / "m.npz"), "--out", str(tmp_path / "o")], "b = 0"),
        (_args(d, tmp_path / "o", "--snr", "-3"), "--snr must be positive"),
        (_args(d, tmp_path / "o", "--other-kappa", "0"), "--other-kappa"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output, (needle, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
