"""Interface metrics: Chamfer, face scores, structural validity, volumes, symmetries."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_names, resolve_case
from spinverse.mesh.benchmark import enclosed_tets as bench_enclosed
from spinverse.recon.metrics import (
    SAMPLE_WEIGHTS,
    best_aligned_scores,
    chamfer_squared,
    enclosed_tets,
    evaluate,
    face_scores,
    structural_validity,
)


@pytest.fixture(scope="module")
def grid():
    return benchmark_grid()


def test_sample_weights_are_ten_barycentric_points():
    assert SAMPLE_WEIGHTS.shape == (10, 3)
    np.testing.assert_allclose(SAMPLE_WEIGHTS.sum(1), 1.0)
    assert len(np.unique(SAMPLE_WEIGHTS.round(12), axis=0)) == 10


@pytest.mark.parametrize("name", case_names())
def test_every_target_is_perfect_against_itself(grid, name):
    b = case_barrier(name)
    kappa = np.full(grid.n_faces, 0.1)
    kappa[b] = 1e-5
    m = evaluate(grid, kappa, b)
    assert m["f1"] == 1.0 and m["chamfer"] == 0.0 and m["bad_pct"] == 0.0
    assert m["volume_error"] == 0.0 and m["target_volume"] > 0
    assert np.array_equal(enclosed_tets(grid, b), bench_enclosed(grid, b))


def test_point_reflection_is_recognised(grid):
    target = case_barrier(resolve_case("000"))  # a bent axon: not point symmetric
    centre = np.zeros(3)
    from spinverse.recon.metrics import _map_faces, _vertex_map

    reflected = _map_faces(grid, _vertex_map(grid, 2 * centre - grid.points), target)
    assert reflected is not None and set(reflected) != set(target)
    assert face_scores(reflected, target, grid.n_faces)[2] < 1.0
    aligned = best_aligned_scores(grid, reflected, target)
    assert aligned["f1_aligned"] == 1.0 and aligned["alignment"].startswith("reflection")


def test_lattice_translation_is_recognised(grid):
    target = case_barrier(resolve_case("018"))
    h = 20.0 / 3.0
    from spinverse.recon.metrics import _map_faces, _vertex_map

    shifted = _map_faces(grid, _vertex_map(grid, grid.points + [h, 0, 0]), target)
    assert shifted is not None
    assert face_scores(shifted, target, grid.n_faces)[2] < 0.5
    assert chamfer_squared(grid, shifted, target) == pytest.approx(0.0, abs=1e-9)
    assert best_aligned_scores(grid, shifted, target)["f1_aligned"] == 1.0


def test_outline_only_and_open_sheets(grid):
    target = case_barrier(resolve_case("018"))
    outline = grid.outer_faces
    assert face_scores(outline, target, grid.n_faces)[2] == 0.0
    assert structural_validity(grid, outline)["bad_pct"] == 0.0  # the hull is closed
    sheet = target[:10]
    sv = structural_validity(grid, sheet)
    assert sv["open_edges"] > 0 and sv["bad_pct"] > 0


def test_chamfer_hand_values(grid):
    f = np.array([0])
    assert chamfer_squared(grid, f, f) == 0.0
    assert chamfer_squared(grid, np.array([], int), f) == np.inf
    # uncentred distance between a face and its translate = 2 |t|²
    from spinverse.recon.metrics import face_samples

    a = face_samples(grid, f)
    assert a.shape == (10, 3)
    g0, g1 = grid.faces[0], grid.faces[1]
    both = chamfer_squared(grid, np.array([0]), np.array([1]), centre=False)
    assert both > 0 and np.isfinite(both)
    assert set(g0) != set(g1)


def test_face_scores():
    assert face_scores(np.array([0, 1, 2]), np.array([1, 2, 3, 4]), 10) == pytest.approx(
        (2 / 3, 0.5, 2 * (2 / 3 * 0.5) / (2 / 3 + 0.5)))
    assert face_scores(np.array([], int), np.array([1]), 5) == (0.0, 0.0, 0.0)
