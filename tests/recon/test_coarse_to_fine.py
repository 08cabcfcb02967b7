"""Coarse-to-fine pieces: the transfer to the refined grid, the µm surface metrics, the
refined continuous-tissue shape model, the pool and the fine search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_kappa, enclosed_tets
from spinverse.mesh.refine import refine, refine_kappa
from spinverse.recon.coarse_to_fine import (
    fine_search,
    sample_surface,
    shape_pool,
    surface_metrics,
)
from spinverse.recon.metrics import enclosed_volume
from spinverse.recon.search import Evaluator, RegionModel, RegionSpace
from spinverse.recon.targets import case_target
from tests.recon.test_workflow import SMALL

GRID = benchmark_grid()


def test_transfer_keeps_the_surface_and_volume() -> None:
    """The coarse truth carried to the refined grid is the same surface: Chamfer at the
    sampling floor, the same enclosed volume, new faces open."""
    truth = case_barrier("018")
    fine = refine(GRID, 1)
    k = refine_kappa(fine, GRID, case_kappa("018"), new_faces=0.1)
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


TRUTH = enclosed_tets(GRID, case_barrier("018"))


def test_refined_continuous_model_kappa() -> None:
    """A region scored on the refined grid: its membrane split 1:4 at the membrane κ,
    every other inner face continuous (∞), outer faces finite (the Robin leak)."""
    space = RegionSpace(GRID)
    fine = refine(GRID, 1)
    grid, k = RegionModel(space, None, refined=fine, continuous=True).simulation(TRUTH)
    assert grid is fine.grid
    membrane = np.flatnonzero(k == space.membrane_kappa)
    assert len(membrane) == 4 * int(space.membrane(TRUTH).sum())
    inner = ~grid.is_outer & (k != space.membrane_kappa)
    assert np.all(np.isinf(k[inner]))
    assert np.all(np.isfinite(k[grid.is_outer]))
    _, k0 = RegionModel(space, None).simulation(TRUTH)  # the coarse benchmark convention
    assert set(np.unique(k0)) == {space.membrane_kappa, space.other_kappa}


def test_refined_model_reproduces_the_refined_target() -> None:
    """The truth region scored on the refined continuous model is the refined target
    itself (two routes to one simulation: loss at round-off), and scores worse on the
    coarse grid (the coarse grid's own error)."""
    grid, target, _ = case_target("018", protocol=SMALL, refine=1,
                                  outer_boundary="reflecting")
    space = RegionSpace(grid)
    fine = Evaluator(RegionModel(space, target, refined=refine(grid, 1), continuous=True))
    coarse = Evaluator(RegionModel(space, target))
    assert fine.loss(TRUTH) < 1e-12
    assert coarse.loss(TRUTH) > 1e-6


def test_continuous_tissue_is_the_open_limit() -> None:
    """κ = ∞ off the membrane (merged nodes) is the limit of large finite κ: the signal
    at κ = 1e3 µm/µs differs by less than 1e-5 relative."""
    from spinverse.forward import simulate_signal
    from spinverse.recon.targets import continuous_tissue

    k = case_kappa("018")
    sig = [simulate_signal(GRID, kk, SMALL, outer_boundary="reflecting").signal
           for kk in (continuous_tissue(GRID, k, 0.1),
                      np.where(k >= 0.1, 1e3, k))]
    assert np.abs(sig[0] - sig[1]).max() < 1e-5 * np.abs(sig[0]).max()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=12),
       st.integers(1, 6), st.integers(1, 3))
def test_shape_pool(regions: list[list[bool]], size: int, distance: int) -> None:
    """Lowest losses first, at most ``size``, kept shapes pairwise ≥ ``distance`` apart,
    and nothing skipped that was far enough from every shape kept before it."""
    arr = [np.array(r) for r in regions]
    losses = np.arange(len(arr), dtype=float)[::-1]  # the last region is the best
    pool = shape_pool(arr, losses, size, min_distance=distance)
    assert 1 <= len(pool) <= size
    assert np.array_equal(pool[0], arr[-1])
    for i, a in enumerate(pool):
        for b in pool[:i]:
            assert (a != b).sum() >= distance
    if len(pool) < size:  # every region is within reach of a kept one
        for r in arr:
            assert any((r != p).sum() < distance for p in pool)


def test_correction_shifts_the_target_only() -> None:
    """``Evaluator.correct(Δ)`` scores S + Δ: the loss of a cached signal changes to that
    of the shifted signal, nothing is simulated again, and ``None`` restores it."""
    grid, target, _ = case_target("018", protocol=SMALL, outer_boundary="reflecting")
    ev = Evaluator(RegionModel(RegionSpace(grid), target))
    s = ev.signals([TRUTH])[0]
    offset = np.linspace(-0.01, 0.02, len(s))
    before, sims = ev.loss(TRUTH), ev.simulated
    ev.correct(offset)
    assert np.isclose(ev.loss(TRUTH), 100 * np.dot(ev.model.residual_weights(),
                                                   (s + offset - ev.model.normalised_target)
                                                   ** 2))
    assert ev.simulated == sims
    ev.correct(None)
    assert ev.loss(TRUTH) == before
    with pytest.raises(ValueError, match="shape"):
        ev.correct(np.zeros(3))


def test_fine_search_corrects_a_coarse_bias() -> None:
    """A refine-1 target and a start two tets off the truth: the corrected search returns
    the truth (exact on the fine model) and reports the truth's losses without giving
    the search its signal."""
    grid, target, _ = case_target("018", protocol=SMALL, refine=1,
                                  outer_boundary="reflecting")
    space = RegionSpace(grid)
    off = TRUTH.copy()
    b = space.boundary_tets(TRUTH)
    off[b[~TRUTH[b]][:2]] = True
    res = fine_search(grid, target, [off], levels=1, rounds=2, budget=150, checks=3,
                      workers=1, reference_region=TRUTH)
    assert res.history[0]["loss"] > 1e-6  # the start, scored on the refined model
    assert res.data_loss < 1e-12 and np.array_equal(res.region, TRUTH)
    assert res.info["truth_loss"] < 1e-12
    assert res.rounds[0]["answer_fine_loss"] == res.history[0]["loss"]
    assert res.refined.grid.n_tets == 8 * GRID.n_tets


def test_fine_search_rejects_bad_input() -> None:
    grid, target, _ = case_target("018", protocol=SMALL)
    with pytest.raises(ValueError, match="start"):
        fine_search(grid, target, [], levels=1)
    with pytest.raises(ValueError, match="levels"):
        fine_search(grid, target, [TRUTH], levels=0)
