"""`spinverse reconstruct` from a measured-style target: NIfTI → reconstruct → VTU."""

from __future__ import annotations

import json

import meshio
import numpy as np
import pytest
from typer.testing import CliRunner

from spinverse.acquisition.protocol import Protocol, save_protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.cli.main import _nifti_target, app
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import uniform_box_grid

pytest.importorskip("nibabel")
from spinverse.io.nifti import write_voxel_image  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 6×3×3 µm box split by a sealed plane at x = 3 µm; its signal written into every
    voxel of a 2×2×2 NIfTI image in arbitrary units (× 1234.5), with FSL bvals/bvecs."""
    d = tmp_path_factory.mktemp("nifti_case")
    grid = uniform_box_grid([0, 0, 0], [6.0, 3.0, 3.0], [2, 1, 1])
    plane = np.flatnonzero(np.all(np.isclose(grid.points[grid.faces][:, :, 0], 3.0), axis=1))
    kappa = np.full(grid.n_faces, 0.1)
    kappa[plane] = 1e-5
    dirs = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    prot = Protocol(2e-3, 1.5, np.array([0.0, 1000.0, 3000.0]), dirs, (PGSE(5000.0, 20000.0),))
    sim = simulate_signal(grid, kappa, prot, outer_boundary="reflecting").signal
    np.savez(d / "grid.npz", points=grid.points, tets=grid.tets, faces=grid.faces)
    save_protocol(prot, d / "protocol.yaml")
    write_voxel_image(d / "dwi.nii.gz", sim, prot.bvalues, dirs, bvals_path=d / "bvals",
                      bvecs_path=d / "bvecs", voxel_scale=np.full((2, 2, 2), 1234.5), n_b0=2)
    return d, grid, sim, plane


def _args(d, out, *extra):
    return ["reconstruct", "--target", str(d / "dwi.nii.gz"), "--grid", str(d / "grid.npz"),
            "--bvals", str(d / "bvals"), "--bvecs", str(d / "bvecs"),
            "--protocol", str(d / "protocol.yaml"), "--out", str(out), "--quiet", *extra]


def test_nifti_target_is_the_simulated_signal(files):
    """Read back and rescaled to the grid volume, the voxel is the simulated signal: with
    a reflecting outer boundary S(b = 0) is exactly the sample volume (µm³)."""
    d, grid, sim, _ = files
    assert np.allclose(np.abs(sim[:, 0, :]), grid.volume, rtol=1e-10)
    tgt = _nifti_target(d / "dwi.nii.gz", d / "bvals", d / "bvecs", "1,0,1", None,
                        d / "protocol.yaml", grid)
    assert tgt.outer_boundary == "reflecting"
    assert np.allclose(np.abs(tgt.signal), np.abs(sim), rtol=1e-12)


def test_nifti_reconstruct_to_vtu(files, tmp_path):
    d, grid, _, plane = files
    out = tmp_path / "run"
    res = runner.invoke(app, _args(d, out, "--voxel", "1,0,1", "--iterations", "8"))
    assert res.exit_code == 0, res.output
    k = np.load(out / "kappa.npz")
    assert k["kappa"].shape == (grid.n_faces,) and np.array_equal(k["faces"], grid.faces)
    vtu = meshio.read(out / "grid_kappa.vtu")
    assert len(vtu.points) == grid.n_points
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["outer_boundary"] == "reflecting"
    losses = [json.loads(ln)["data"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and losses[-1] < losses[0]  # the fit moves towards the target
    if len(k["barrier"]):
        surf = meshio.read(out / "surface.vtu")
        assert len(surf.cells_dict["triangle"]) == len(k["barrier"])


@pytest.mark.parametrize("extra, message", [
    (["--voxel", "1,0"], "three integers"),
    (["--voxel", "1,0,1", "--mask", "m.nii.gz"], "exactly one of"),
    ([], "exactly one of"),
])
def test_nifti_usage_errors(files, tmp_path, extra, message):
    d, *_ = files
    res = runner.invoke(app, _args(d, tmp_path / "r", *extra))
    assert res.exit_code == 2 and message in res.output


def test_nifti_needs_bvals(files, tmp_path):
    d, *_ = files
    args = _args(d, tmp_path / "r", "--voxel", "1,0,1")
    i = args.index("--bvals")
    del args[i:i + 2]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "needs --bvals" in res.output
