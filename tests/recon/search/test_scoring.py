"""Exact, memoised, parallel scoring of regions."""

import numpy as np

from spinverse.recon.search.scoring import Evaluator, RegionModel

from .conftest import make_target


def test_truth_scores_zero_and_others_more(space, protocol, two_regions):
    ev = Evaluator(RegionModel(space, make_target(space, protocol, two_regions)))
    assert ev.loss(two_regions) < 1e-20
    other = two_regions.copy()
    other[np.flatnonzero(~two_regions)[0]] = True
    assert ev.loss(other) > 1e-4


def test_loss_is_the_published_data_term(space, protocol, two_regions):
    target = make_target(space, protocol, two_regions)
    ev = Evaluator(RegionModel(space, target))
    other = ~two_regions
    other[0] = False
    s = ev.signals([other])[0].reshape(target.signal.shape)
    t = np.abs(target.signal) / target.s0[:, None, :]
    assert np.isclose(ev.loss(other), 100 * np.mean((s - t) ** 2), rtol=1e-12)


def test_cache_counts_requests_and_parallel_equals_serial(space, protocol, two_regions, tmp_path):
    model = RegionModel(space, make_target(space, protocol, two_regions))
    rng = np.random.default_rng(1)
    regions = [rng.random(space.grid.n_tets) < 0.3 for _ in range(5)]
    regions.append(regions[0].copy())
    serial = Evaluator(model, workers=1)
    a = serial.signals(regions)
    assert serial.simulated == 5 and serial.n_requested == 5
    serial.signals(regions[:2])
    assert serial.simulated == 5  # cached
    with Evaluator(model, workers=2) as parallel:
        b = parallel.signals(regions)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)  # one BLAS thread each: bitwise the same
    serial.save(tmp_path / "cache.npz")
    fresh = Evaluator(model)
    assert fresh.load(tmp_path / "cache.npz") == 5
    c = fresh.signals(regions)
    assert fresh.simulated == 0
    for x, y in zip(a, c, strict=True):
        assert np.array_equal(x, y)
