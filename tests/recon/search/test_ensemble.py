"""The ensemble: tolerance, membership and per-face barrier probability, on a case built to
be ambiguous: a region and its mirror image x → −x have equal signals when every gradient
direction is mapped onto ± itself by the mirror (|S(−ĝ)| = |S(ĝ)|)."""

import numpy as np
import pytest

from spinverse.recon.search.ensemble import auto_tolerance, build_ensemble
from spinverse.recon.search.local import multiflip_descent
from spinverse.recon.search.scoring import Evaluator, RegionModel

from .conftest import make_target, short_protocol

MIRROR_SAFE = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 1 / np.sqrt(2), 1 / np.sqrt(2)],
                        [0, 1 / np.sqrt(2), -1 / np.sqrt(2)]])


def mirror_x(space):
    """Tet map of x → −x about the grid centre (diag(−1, 1, 1) in the cube group)."""
    from spinverse.recon.search.regions import cube_group

    group = cube_group()
    k = [i for i, m in enumerate(group) if np.allclose(m, np.diag([-1.0, 1, 1]))][0]
    rel = space.grid.tet_centroids - space.centre
    return space._tet_map(rel @ group[k].T + space.centre)


@pytest.fixture(scope="module")
def ambiguous(space, two_regions):
    protocol = short_protocol(MIRROR_SAFE)
    twin = space.image(two_regions, mirror_x(space))
    assert not np.array_equal(twin, two_regions)
    assert not np.array_equal(space.image(two_regions, space.point_reflection), twin)
    target = make_target(space, protocol, two_regions, "robin")
    return Evaluator(RegionModel(space, target)), two_regions, twin


def test_the_twin_has_the_truths_signal(ambiguous):
    ev, truth, twin = ambiguous
    assert ev.loss(truth) < 1e-20 and ev.loss(twin) < 1e-20
    assert np.allclose(ev.signals([truth])[0], ev.signals([twin])[0], rtol=1e-9, atol=1e-12)


def test_equal_twins_share_the_probability(space, ambiguous):
    ev, truth, twin = ambiguous
    ens = build_ensemble(ev, space, truth, 1e-10)
    assert ens.size == 2
    assert np.allclose(ens.weights, 0.5)
    p = ens.barrier_probability(space)
    a, b = space.membrane(truth), space.membrane(twin)
    assert np.allclose(p[a & b], 1.0)
    assert np.allclose(p[a ^ b], 0.5)
    assert np.all(p[~(a | b)] == 0)
    summary = ens.summary(space)
    assert summary["ensemble_size"] == 2
    assert summary["ensemble_tets_off_max"] == int((truth != twin).sum())
    assert summary["ensemble_uncertain_faces"] == int((a ^ b).sum())


def test_auto_tolerance_and_membership(space, ambiguous):
    ev, truth, twin = ambiguous
    res = multiflip_descent(ev, space, truth, np.random.default_rng(0))
    assert res.converged and np.array_equal(res.region, truth)
    tol = auto_tolerance(res.loss, res.neighbour_losses, snr=None, n_measurements=30)
    assert np.isclose(tol, np.median(res.neighbour_losses - res.loss))
    ev.losses([twin])
    ens = build_ensemble(ev, space, truth, tol)
    assert all(lo <= res.loss + tol for lo in ens.losses)
    keys = {m.tobytes() for m in ens.regions}
    assert truth.tobytes() in keys and twin.tobytes() in keys
    # Every neighbour within the tolerance is a member; none above it.
    inside = res.neighbour_losses <= res.loss + tol
    assert ens.size >= 2 + int(inside.sum()) - 1  # a neighbour may equal the twin
    assert ens.weights[0] == ens.weights.max()


def test_noise_tolerance_is_two_standard_deviations_of_a_loss_difference():
    # σ ≈ 20 √loss / (√N · SNR) for the published loss; the tolerance is 2σ.
    assert np.isclose(auto_tolerance(0.04, np.array([1.0]), snr=50, n_measurements=400),
                      2 * 20 * 0.2 / (20 * 50))
