"""Geometric priors on the per-face field (hand-made configurations, gradients,
properties)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, enclosed_tets
from spinverse.mesh.generators import uniform_box_grid
from spinverse.mesh.grid import TetGrid
from spinverse.recon import priors as P

T = 0.1
OPEN_EDGE = 1.0 - T * math.log(2.0)  # softmin(1, 1) at an edge with one barrier face


def hard(n_faces: int, faces) -> torch.Tensor:
    """0/1 indicator of a face set."""
    p = torch.zeros(n_faces, dtype=torch.float64)
    p[torch.as_tensor(np.asarray(faces, dtype=np.int64))] = 1.0
    return p


def log10k(n_faces: int, faces) -> torch.Tensor:
    """The published ground truth: κ = 1e-5 on the faces, 0.1 elsewhere (log10)."""
    x = torch.full((n_faces,), -1.0, dtype=torch.float64)
    x[torch.as_tensor(np.asarray(faces, dtype=np.int64))] = -5.0
    return x


def softmin(a: float, b: float) -> float:
    return -T * math.log(math.exp(-a / T) + math.exp(-b / T))


@pytest.fixture(scope="module")
def one_tet():
    g = TetGrid(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]), np.array([[0, 1, 2, 3]]))
    return g, P.PriorTopology.from_grid(g)


@pytest.fixture(scope="module")
def two_tets():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0], [1, 1, 1.0]])
    g = TetGrid(pts, np.array([[0, 1, 2, 3], [1, 2, 3, 4]]))
    return g, P.PriorTopology.from_grid(g)


@pytest.fixture(scope="module")
def bench():
    g = benchmark_grid()
    return g, P.PriorTopology.from_grid(g)


@pytest.fixture(scope="module")
def small():
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 2)
    return g, P.PriorTopology.from_grid(g)


# ------------------------------------------------------------------ topology
def test_topology_arrays(bench):
    g, topo = bench
    assert topo.n_faces == g.n_faces and topo.n_edges == g.n_edges
    assert topo.pairs.dtype == torch.int64
    assert topo.pairs.shape == (len(g.face_pairs_sharing_edge), 2)
    counts = np.asarray(g.edge_face_incidence.sum(axis=1)).ravel()
    np.testing.assert_array_equal(topo.faces_per_edge.numpy(), counts)
    ef = topo.edge_faces.numpy()
    assert ef.shape == (g.n_edges, counts.max())
    np.testing.assert_array_equal((ef < g.n_faces).sum(1), counts)
    for e in (0, 17, g.n_edges - 1):
        np.testing.assert_array_equal(np.sort(ef[e][ef[e] < g.n_faces]), np.sort(g.edge_faces(e)))
    np.testing.assert_allclose(topo.face_areas.numpy(), g.face_areas)
    # K = Σ_e C(n_e, 2): every pair of faces at an edge, none repeated
    assert topo.n_pairs == int((counts * (counts - 1) // 2).sum())
    assert topo.to("cpu").pairs.device.type == "cpu"


def test_indicator():
    x = torch.tensor([-5.0, -3.0, -1.0], dtype=torch.float64)
    p = P.barrier_indicator(x)
    expect = [1 / (1 + math.exp(-4)), 0.5, 1 / (1 + math.exp(4))]
    np.testing.assert_allclose(p.numpy(), expect, rtol=1e-14)
    assert float(P.barrier_indicator(torch.tensor([-2.0], dtype=torch.float64), -2.0, 1.0)) == 0.5
    with pytest.raises(ValueError):
        P.barrier_indicator(x, width=0.0)


# ------------------------------------------------------------------ manifold
def test_manifold_single_tet_hand_values(one_tet):
    g, topo = one_tet  # 4 faces, 6 edges, 2 faces at every edge
    assert float(P.manifold_prior(hard(4, range(4)), topo)) == 0.0  # closed surface
    assert float(P.manifold_prior(hard(4, []), topo)) == 0.0  # nothing
    # one face: its 3 edges have k = 1 (open), divided by 2 faces per edge, mean over 6
    one = float(P.manifold_prior(hard(4, [0]), topo))
    assert one == pytest.approx(3 * OPEN_EDGE / 2 / 6, rel=1e-12)
    # three faces: 3 open edges (k = 1) and 3 edges with k = 2
    assert float(P.manifold_prior(hard(4, [0, 1, 2]), topo)) == pytest.approx(one, rel=1e-12)
    # edge counts
    np.testing.assert_allclose(P.edge_counts(hard(4, [0, 1]), topo).numpy().sum(), 6.0)


def test_manifold_branching_edge_hand_values(two_tets):
    g, topo = two_tets  # 7 faces, 9 edges; the shared face's 3 edges carry 3 faces
    shared = int(np.flatnonzero(~g.is_outer)[0])
    hull = g.outer_faces  # closed surface of the union: k = 2 everywhere
    assert float(P.manifold_prior(hard(7, hull), topo)) == 0.0
    # hull + the shared face: 3 branching edges with k = 3, each with 3 faces
    branched = float(P.manifold_prior(hard(7, np.append(hull, shared)), topo))
    assert branched == pytest.approx(3 * softmin(9.0, 1.0) / 3 / 9, rel=1e-12)
    # both closed tet surfaces are fine on their own
    t0 = g.tet_faces[0]
    assert float(P.manifold_prior(hard(7, t0), topo)) == 0.0


def test_manifold_closed_beats_open_and_branching_on_the_benchmark(bench):
    g, topo = bench
    closed = case_barrier("018")
    # the exact barrier of a voxelised tet cluster: k ∈ {0, 2} at every edge
    assert np.all(np.isin(P.edge_counts(hard(g.n_faces, closed), topo).numpy(), [0.0, 2.0]))
    assert float(P.manifold_prior(hard(g.n_faces, closed), topo)) == 0.0
    opened = closed[1:]  # a hole: 3 open edges
    e = g.face_edges[closed[0], 0]
    extra = next(f for f in g.edge_faces(e) if f not in set(closed))
    branched = np.append(closed, extra)  # one branching edge and two open ones
    for make in (hard, lambda n, f: P.barrier_indicator(log10k(n, f))):
        c, o, b = (float(P.manifold_prior(make(g.n_faces, f), topo))
                   for f in (closed, opened, branched))
        assert c < o and c < b
    # with hard indicators: exactly the open/branching edges cost
    fpe = topo.faces_per_edge.numpy()
    o = float(P.manifold_prior(hard(g.n_faces, opened), topo))
    assert o == pytest.approx(OPEN_EDGE * (1 / fpe[g.face_edges[closed[0]]]).sum() / g.n_edges)


def test_manifold_is_small_on_every_ground_truth(bench):
    g, topo = bench
    from spinverse.mesh.benchmark import case_names

    for name in case_names():
        b = case_barrier(name)
        assert enclosed_tets(g, b).any()
        val = float(P.manifold_prior(P.barrier_indicator(log10k(g.n_faces, b)), topo))
        assert val < 0.01, name


# ---------------------------------------------------------------- continuity
def test_continuity_hand_values(one_tet):
    g, topo = one_tet  # 6 pairs, all pairs of the 4 faces
    x = torch.tensor([-3.0, -3.0, -3.0, -3.0], dtype=torch.float64)
    assert float(P.continuity_prior(x, P.barrier_indicator(x), topo)) == 0.0
    # one face 1 decade off, gates given explicitly: 3 pairs with Huber = ½
    x = torch.tensor([-2.0, -3.0, -3.0, -3.0], dtype=torch.float64)
    gates = torch.full((4,), 0.5, dtype=torch.float64)  # |p_i − p_j| = 0: gate 1
    assert float(P.continuity_prior(x, gates, topo)) == pytest.approx(3 * 0.5 / 6)
    p = torch.tensor([0.9, 0.3, 0.3, 0.3], dtype=torch.float64)  # gate 1 − 0.6 = 0.4
    assert float(P.continuity_prior(x, p, topo)) == pytest.approx(0.4 * 3 * 0.5 / 6)
    # beyond δ = 5 decades the Huber is linear: 5 (7 − 2.5)
    x = torch.tensor([4.0, -3.0, -3.0, -3.0], dtype=torch.float64)
    assert float(P.continuity_prior(x, gates, topo)) == pytest.approx(3 * 5 * 4.5 / 6)
    assert float(P.continuity_prior(x, gates, topo, delta=10.0)) == pytest.approx(3 * 24.5 / 6)


def test_continuity_gate_frees_sharp_boundaries(bench):
    g, topo = bench
    b = case_barrier("017")
    sharp = log10k(g.n_faces, b)
    soft = sharp.clone()
    soft[torch.as_tensor(b)] = -3.0  # the same surface, undecided
    c_sharp = float(P.continuity_prior(sharp, P.barrier_indicator(sharp), topo))
    c_soft = float(P.continuity_prior(soft, P.barrier_indicator(soft), topo))
    assert c_sharp < 0.5 * c_soft
    # no gradient reaches p (the gate is detached)
    x = sharp.clone().requires_grad_(True)
    p = P.barrier_indicator(sharp).clone().requires_grad_(True)
    P.continuity_prior(x, p, topo).backward()
    assert p.grad is None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------- coherence, binarisation
def test_coherence_binarisation(one_tet, small):
    g, topo = small
    half = torch.full((g.n_faces,), 0.5, dtype=torch.float64)
    assert float(P.binarisation_prior(half)) == pytest.approx(0.25)
    assert float(P.binarisation_prior(torch.ones(g.n_faces, dtype=torch.float64))) == 0.0
    assert float(P.edge_coherence_prior(half, topo)) == 0.0
    g1, t1 = one_tet
    assert float(P.edge_coherence_prior(hard(4, [0]), t1)) == pytest.approx(3 / 6)


def test_shape_errors(one_tet):
    _, topo = one_tet
    with pytest.raises(ValueError, match="shape"):
        P.manifold_prior(torch.zeros(5, dtype=torch.float64), topo)
    with pytest.raises(ValueError, match="temperature"):
        P.manifold_prior(torch.zeros(4, dtype=torch.float64), topo, temperature=0.0)


# ----------------------------------------------------------------- gradients
def test_gradcheck(small):
    g, topo = small
    gen = torch.Generator().manual_seed(0)
    x0 = -5 + 4 * torch.rand(g.n_faces, generator=gen, dtype=torch.float64)
    p_fixed = P.barrier_indicator(x0)

    def indicator_priors(x):
        p = P.barrier_indicator(x)
        return (P.manifold_prior(p, topo), P.edge_coherence_prior(p, topo),
                P.binarisation_prior(p))

    assert torch.autograd.gradcheck(indicator_priors, (x0.clone().requires_grad_(True),))
    # continuity: the gate is detached, so check it with p held constant
    assert torch.autograd.gradcheck(lambda x: P.continuity_prior(x, p_fixed, topo),
                                    (x0.clone().requires_grad_(True),))
    # and with jumps beyond δ (the linear branch)
    wide = x0 * 3.0
    assert torch.autograd.gradcheck(lambda x: P.continuity_prior(x, p_fixed, topo, delta=1.0),
                                    (wide.requires_grad_(True),))


@pytest.mark.parametrize("fill", [-1e3, -5.0, -3.0, -1.0, 1e3])
def test_gradients_finite_at_extremes(bench, fill):
    g, topo = bench
    x = torch.full((g.n_faces,), fill, dtype=torch.float64)
    x[torch.as_tensor(case_barrier("019"))] = -fill
    x.requires_grad_(True)
    p = P.barrier_indicator(x)
    total = (2 * P.continuity_prior(x, p, topo) + 2 * P.manifold_prior(p, topo)
             + P.edge_coherence_prior(p, topo) + P.binarisation_prior(p))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def relabelled(small):
    g, topo = small
    perm = np.random.default_rng(1).permutation(g.n_faces)
    g2 = TetGrid(g.points, g.tets, faces=g.faces[perm])
    return perm, P.PriorTopology.from_grid(g2)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.0, 20.0))
def test_nonnegative_and_relabelling_invariant(small, relabelled, seed, spread):
    g, topo = small
    gen = torch.Generator().manual_seed(seed)
    x = -3 + spread * (torch.rand(g.n_faces, generator=gen, dtype=torch.float64) - 0.5)
    p = P.barrier_indicator(x)
    vals = {
        "continuity": P.continuity_prior(x, p, topo),
        "manifold": P.manifold_prior(p, topo),
        "coherence": P.edge_coherence_prior(p, topo),
        "binarisation": P.binarisation_prior(p),
    }
    for name, v in vals.items():
        assert v.ndim == 0 and torch.isfinite(v) and float(v) >= 0.0, name
    assert float(vals["binarisation"]) <= 0.25 and float(vals["coherence"]) <= 1.0
    perm, topo2 = relabelled
    x2, p2 = x[perm], p[perm]
    again = {
        "continuity": P.continuity_prior(x2, p2, topo2),
        "manifold": P.manifold_prior(p2, topo2),
        "coherence": P.edge_coherence_prior(p2, topo2),
        "binarisation": P.binarisation_prior(p2),
    }
    for name in vals:
        assert float(again[name]) == pytest.approx(float(vals[name]), rel=1e-12, abs=1e-15), name


@settings(max_examples=30, deadline=None)
@given(value=st.floats(-10.0, 5.0), delta=st.floats(0.1, 10.0))
def test_continuity_zero_for_constant_fields(small, value, delta):
    g, topo = small
    x = torch.full((g.n_faces,), value, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(g.n_faces, generator=gen, dtype=torch.float64)  # any gates
    assert float(P.continuity_prior(x, p, topo, delta=delta)) == 0.0
    assert float(P.edge_coherence_prior(torch.full_like(x, 0.3), topo)) == 0.0


@settings(max_examples=30, deadline=None)
@given(k=st.floats(0.0, 6.0))
def test_manifold_per_edge_shape(one_tet, k):
    # uniform p = k/2 on the single tet: every edge has k_e = k
    _, topo = one_tet
    val = float(P.manifold_prior(torch.full((4,), k / 2, dtype=torch.float64), topo))
    assert val == pytest.approx(softmin(k * k, (k - 2) ** 2) / 2, rel=1e-9, abs=1e-15)
    assert val >= 0.0
