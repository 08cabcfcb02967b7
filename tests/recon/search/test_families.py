"""Shape families (voxelised by tet centroid) and their CMA-ES fits."""

import numpy as np
import pytest

from spinverse.recon.search.families import (
    BallsFamily,
    EllipsoidFamily,
    RingFamily,
    TubeFamily,
    fit_family,
)
from spinverse.recon.search.scoring import Evaluator, RegionModel

from .conftest import make_target

POINTS = np.random.default_rng(0).uniform(-1, 1, size=(500, 3))


def test_tube_contains_points_within_the_radius_of_its_polyline():
    fam = TubeFamily(2)
    x = np.r_[[-1, 0, 0], [0, 0, 0], [0, 1, 0], 0.3]
    inside = fam.contains(x, POINTS)
    p = POINTS
    d1 = np.hypot(p[:, 1], p[:, 2]) * (p[:, 0] <= 0) + np.linalg.norm(p, axis=1) * (p[:, 0] > 0)
    seg2 = np.hypot(p[:, 0], p[:, 2]) * ((p[:, 1] >= 0) & (p[:, 1] <= 1))
    seg2 = np.where((p[:, 1] >= 0) & (p[:, 1] <= 1), seg2, np.inf)
    expect = (np.minimum(d1, seg2) <= 0.3) & (p[:, 0] >= -1)
    assert np.array_equal(inside, expect | (np.linalg.norm(p - [-1, 0, 0], axis=1) <= 0.3))
    assert fam.dim() == len(x) == len(fam.bounds()[0])


def test_ellipsoid_and_balls_contain_what_they_should():
    ell = EllipsoidFamily()
    x = np.r_[[0.1, 0, 0], np.log([0.5, 0.2, 0.2]), [0, 0, np.pi / 2]]  # long axis on y
    inside = ell.contains(x, POINTS)
    rel = POINTS - [0.1, 0, 0]
    assert np.array_equal(inside, (rel[:, 1] / 0.5) ** 2 + (rel[:, 0] / 0.2) ** 2
                          + (rel[:, 2] / 0.2) ** 2 <= 1 + 1e-12)
    balls = BallsFamily(2)
    xb = np.r_[[0.5, 0, 0], [-0.5, 0, 0], [0.2, 0.3]]
    inside = balls.contains(xb, POINTS)
    expect = ((np.linalg.norm(POINTS - [0.5, 0, 0], axis=1) <= 0.2)
              | (np.linalg.norm(POINTS - [-0.5, 0, 0], axis=1) <= 0.3))
    assert np.array_equal(inside, expect)


def test_ring_contains_the_points_near_its_circle():
    ring = RingFamily()
    x = np.r_[[0.0, 0.0, 0.1], [0.0, 0.0, 2.0], 0.6, 0.2]  # axis z (any length)
    inside = ring.contains(x, POINTS)
    rho = np.hypot(POINTS[:, 0], POINTS[:, 1])
    assert np.array_equal(inside, np.hypot(rho - 0.6, POINTS[:, 2] - 0.1) <= 0.2)


@pytest.mark.parametrize("family", [TubeFamily(2), EllipsoidFamily(), BallsFamily(2), RingFamily()])
def test_start_vectors_lie_within_bounds_and_match_the_volume(family):
    tensor = np.diag([1e-4, 2e-4, 9e-4])
    lo, hi = family.bounds()
    starts = family.starts(tensor, 0.3)
    assert len(starts) >= 2
    grid_pts = np.stack(np.meshgrid(*[np.linspace(-1.5, 1.5, 61)] * 3), -1).reshape(-1, 3)
    cell = (3.0 / 60) ** 3
    for x0 in starts:
        assert x0.shape == (family.dim(),)
        assert np.all(x0 >= lo) and np.all(x0 <= hi)
    volume = family.contains(starts[0], grid_pts).sum() * cell
    assert 0.15 < volume < 0.6  # the first start holds about the volume asked for


def test_fit_improves_keeps_to_its_budget_and_is_deterministic(space, protocol):
    centre = space.grid.tet_centroids
    truth = space.repair(np.linalg.norm(centre - [1.0, 1.0, 0.0], axis=1) <= 2.2)
    model = RegionModel(space, make_target(space, protocol, truth))
    fam = BallsFamily(1)
    x0 = np.r_[[0.0, 0.0, 0.0], 0.4]
    half = 0.5 * np.ptp(space.grid.points, axis=0).max()
    ev = Evaluator(model)
    start_loss = ev.loss(space.repair(fam.contains(x0, (centre - space.centre) / half)))
    fits = [fit_family(fam, space, Evaluator(model), [x0], budget=150, seed=4)
            for _ in range(2)]
    for fit in fits:
        assert fit.evaluations <= 150 + 16  # a generation may finish past the budget
        assert space.is_valid(fit.region)
        assert fit.loss < 0.2 * start_loss
    assert np.array_equal(fits[0].region, fits[1].region) and fits[0].loss == fits[1].loss
