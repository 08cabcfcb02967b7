"""Coarse-to-fine pieces: the transfer to the refined grid and the µm surface metrics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_kappa
from spinverse.recon.coarse_to_fine import (
    fine_config,
    refine_answer,
    sample_surface,
    surface_metrics,
)
from spinverse.recon.metrics import enclosed_volume

GRID = benchmark_grid()


def test_transfer_keeps_the_surface_and_volume() -> None:
    """The coarse truth carried to the refined grid is the same surface: Chamfer at the
    sampling floor, the same enclosed volume, new faces open."""
    truth = case_barrier("018")
    fine, k = refine_answer(GRID, case_kappa("018"), 1)
    assert fine.grid.n_tets == 8 * GRID.n_tets
    barrier = np.flatnonzero(k < 1e-3)
    assert len(barrier) == 4 * len(truth)  # each coarse face splits into 4
    m = surface_metrics(fine.grid, barrier, GRID, truth)
    assert m["chamfer_um"] < 0.15 and m["hausdorff_um"] < 0.3
    assert abs(m["volume_error_rel"]) < 1e-12
    assert np.isclose(m["volume_um3"], enclosed_volume(GRID, truth))


def test_metrics_of_a_different_shape() -> None:
    a, b = case_barrier("018"), case_barrier("016")
    m = surface_metrics(GRID, a, GRID, b)
    same = surface_metrics(GRID, b, GRID, b)
    assert same["chamfer_um"] == 0.0 and same["hausdorff_um"] == 0.0
    assert m["chamfer_um"] > 1.0 and m["hausdorff_um"] >= m["chamfer_um"]
    assert np.isclose(m["volume_error_rel"],
                      enclosed_volume(GRID, a) / enclosed_volume(GRID, b) - 1.0)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, GRID.n_faces - 1), min_size=1, max_size=20, unique=True),
       st.floats(0.2, 3.0))
def test_samples_cover_each_triangle(faces: list[int], spacing: float) -> None:
    """Every point of a sampled triangle (checked at its vertices and edge midpoints) lies
    within one spacing of a sample, and every sample lies on one of the triangles."""
    pts = sample_surface(GRID, np.array(faces), spacing)
    tri = GRID.points[GRID.faces[faces]]
    probes = np.concatenate([tri.reshape(-1, 3),
                             0.5 * (tri + np.roll(tri, 1, axis=1)).reshape(-1, 3)])
    d = np.linalg.norm(probes[:, None] - pts[None], axis=2).min(axis=1)
    assert d.max() <= spacing
    per = len(pts) // len(faces)
    cen = pts.reshape(len(faces), per, 3).mean(axis=1)
    assert np.allclose(cen, tri.mean(axis=1))


def test_fine_config(tmp_path) -> None:
    cfg = fine_config(tmp_path / "k.npz", 7, seed=3)
    assert cfg.parameterisation.start == "file"
    assert cfg.stages[0].sequences == "all" and cfg.stages[0].iterations == 7
    assert cfg.seed == 3 and cfg.total_iterations == 7
