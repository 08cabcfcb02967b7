"""Linearised multi-flip descent and its binary least-squares proposals."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.recon.search.local import binary_least_squares, multiflip_descent
from spinverse.recon.search.scoring import Evaluator, RegionModel

from .conftest import make_target


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 10))
def test_tabu_search_finds_the_best_binary_least_squares(seed, m):
    """Against brute force over all 2^m subsets (z ≠ 0)."""
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(15, m))
    residual = jac @ (rng.random(m) < 0.4) + 0.1 * rng.normal(size=15)
    best = min((float(np.sum((residual - jac[:, list(c)].sum(axis=1)) ** 2)), c)
               for k in range(1, m + 1) for c in itertools.combinations(range(m), k))
    found = binary_least_squares(jac, residual, np.random.default_rng(0))
    assert np.isclose(found[0][0], best[0], rtol=1e-9, atol=1e-12)
    objs = [o for o, _ in found]
    assert objs == sorted(objs)
    for obj, subset in found[:5]:  # the objectives are the true ones
        assert np.isclose(obj, np.sum((residual - jac[:, list(subset)].sum(axis=1)) ** 2))


def test_descent_returns_to_the_truth_from_a_nearby_region(space, protocol, two_regions):
    ev = Evaluator(RegionModel(space, make_target(space, protocol, two_regions)))
    start = two_regions.copy()
    start[space.neighbours[int(np.flatnonzero(two_regions)[0])][-1]] ^= True
    assert ev.loss(start) > 1e-3
    res = multiflip_descent(ev, space, start, np.random.default_rng(0))
    assert res.converged
    assert np.array_equal(res.region, two_regions)
    assert res.loss < 1e-20
    # Converged: every single flip of the answer was simulated and costs more.
    assert np.array_equal(res.neighbour_tets, space.boundary_tets(two_regions))
    assert np.all(res.neighbour_losses > res.loss)
    for t, lo in zip(res.neighbour_tets, res.neighbour_losses, strict=True):
        flipped = two_regions.copy()
        flipped[t] ^= True
        assert np.isclose(lo, ev.loss(flipped), rtol=1e-9)


def test_descent_respects_its_budget(space, protocol, two_regions):
    ev = Evaluator(RegionModel(space, make_target(space, protocol, two_regions)))
    start = np.zeros(space.grid.n_tets, dtype=bool)
    start[:6] = True
    start = space.repair(start)
    res = multiflip_descent(ev, space, start, np.random.default_rng(0), budget=5)
    assert not res.converged
    # The budget is checked between steps: one step's scan may finish past it.
    assert ev.n_requested <= 1 + 5 + len(space.boundary_tets(start)) + 12
