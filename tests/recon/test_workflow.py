"""Benchmark targets built by the workflow, including the non-inverse-crime ones."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.mesh.benchmark import benchmark_grid, case_barrier, enclosed_tets
from spinverse.recon.targets import case_target

# A small protocol (µs, s/mm², µm²/µs, ℓ 4 µm) so that the refined grid solves in seconds.
SMALL = Protocol(2e-3, 4.0, np.array([0.0, 1000.0, 3000.0]), np.eye(3),
                 (PGSE(10000.0, 20000.0),))


@pytest.mark.parametrize("refine", [0, 1])
def test_case_target_on_a_refined_grid(refine):
    grid, target, barrier = case_target("018", protocol=SMALL, refine=refine,
                                        outer_boundary="reflecting")
    assert grid.n_tets == benchmark_grid().n_tets == 576
    assert np.array_equal(barrier, case_barrier("018"))
    # reflecting box: S(b = 0) is the volume of the sample, which refinement keeps
    np.testing.assert_allclose(np.abs(target.signal[:, 0]), grid.volume, rtol=1e-9)


def test_refined_target_is_close_but_not_identical():
    """Robin outer faces leak, so |S(b = 0)| is below the sample volume on both grids,
    but above the ball's (which κ = 1e-5 µm/µs nearly seals) half; the two discretisations
    give different, close signals."""
    grid = benchmark_grid()
    ball = grid.volumes[enclosed_tets(grid, case_barrier("018"))].sum()
    s = [np.abs(case_target("018", protocol=SMALL, refine=r)[1].signal) for r in (0, 1)]
    for x in s:
        assert np.all((0.5 * ball < x[:, 0]) & (x[:, 0] < 0.99 * grid.volume))
    e = [x / x[:, :1] for x in s]
    assert 1e-4 < np.abs(e[0] - e[1]).max() < 0.1


@pytest.mark.slow
def test_coarse_to_fine_run(tmp_path):
    """``refine=1`` after a gradient fit (here started at the truth and kept there): the
    answer's region is rescored on the refined grid against a refine-1 target (where it
    is exact), scored in µm against the reference surface; the run folder holds both
    levels."""
    import json

    from spinverse.mesh.benchmark import case_kappa
    from spinverse.mesh.refine import refine
    from spinverse.recon.config import ParameterisationConfig, ReconConfig, StageConfig
    from spinverse.recon.workflow import reconstruct

    grid, target, barrier = case_target("018", protocol=SMALL, refine=1,
                                        outer_boundary="reflecting")
    start = tmp_path / "truth.npz"
    np.savez(start, kappa=case_kappa("018"), faces=grid.faces)
    cfg = ReconConfig(stages=[StageConfig(name="s", sequences="all", iterations=1)],
                      parameterisation=ParameterisationConfig(start="file",
                                                              start_file=str(start)))
    run = tmp_path / "run"
    rec, _ = reconstruct(grid, target, run, config=cfg, reference_faces=barrier,
                         progress=False, figures=True, refine=1, refine_budget=5)
    assert len(rec.kappa) == refine(grid, 1).grid.n_faces
    summary = json.loads((run / "coarse_to_fine.json").read_text())
    assert summary["fine_tets"] == 8 * grid.n_tets and summary["rounds"]
    assert summary["truth_fine_loss"] < 1e-12  # the target's own model
    assert summary["fine_data_loss"] <= summary["coarse_answer_fine_loss"] < 1e-12
    surf = summary["surface_um"]
    assert surf["coarse"]["chamfer_um"] == 0.0  # one step from the truth keeps it
    assert surf["fine"]["chamfer_um"] < 0.15  # the same surface, finer faces
    assert abs(surf["fine"]["volume_error_rel"]) < 1e-12
    for level in ("coarse", "fine"):
        assert surf[level]["hausdorff_um"] >= surf[level]["chamfer_um"] >= 0
    assert (run / "refined" / "loss.png").is_file()
    assert (run / "refined" / "log.jsonl").read_text().count("round") >= 2
    with np.load(run / "refined" / "kappa.npz") as k:
        assert k["region_coarse_tets"].sum() == enclosed_tets(grid, barrier).sum()
