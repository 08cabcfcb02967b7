"""Geometric priors and the κ parameterisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, resolve_case
from spinverse.mesh.generators import uniform_box_grid
from spinverse.recon import priors as P
from spinverse.recon.parameterisation import LogSigmoidKappa


@pytest.fixture(scope="module")
def bench():
    g = benchmark_grid()
    return g, P.PriorTopology.from_grid(g)


def indicator(n_faces: int, faces: np.ndarray) -> torch.Tensor:
    p = torch.zeros(n_faces, dtype=torch.float64)
    p[torch.as_tensor(faces)] = 1.0
    return p


def test_manifold_prior_zero_on_closed_surfaces_and_positive_otherwise(bench):
    g, topo = bench
    closed = case_barrier(resolve_case("018"))
    assert float(P.manifold_prior(indicator(g.n_faces, closed), topo)) < 1e-12
    # removing one face opens the surface: its three edges now have one face too few
    opened = closed[1:]
    assert float(P.manifold_prior(indicator(g.n_faces, opened), topo)) > 1e-4
    # adding a face that shares an edge with the surface makes a branching edge
    e = g.face_edges[closed[0], 0]
    extra = [f for f in g.edge_faces(e) if f not in set(closed)][0]
    branched = np.append(closed, extra)
    assert float(P.manifold_prior(indicator(g.n_faces, branched), topo)) > 1e-4


def test_continuity_prior_values(bench):
    g, topo = bench
    logk = torch.full((g.n_faces,), -3.0, dtype=torch.float64)
    p = P.barrier_indicator(logk)
    assert float(P.continuity_prior(logk, p, topo)) == 0.0
    # sharp binary field: the gate (1 − |p_i − p_j|) switches the jumps off
    b = case_barrier(resolve_case("017"))
    logk = torch.full((g.n_faces,), -1.0, dtype=torch.float64)
    logk[torch.as_tensor(b)] = -5.0
    sharp = float(P.continuity_prior(logk, P.barrier_indicator(logk), topo))
    # the same surface, but only half-way down (undecided faces): costs more
    soft = logk.clone()
    soft[torch.as_tensor(b)] = -3.0
    assert sharp < 0.5 * float(P.continuity_prior(soft, P.barrier_indicator(soft), topo))
    # Huber: beyond δ = 5 decades the growth is linear
    pair = topo.pairs[0]
    x = torch.full((g.n_faces,), 0.0, dtype=torch.float64)
    x[pair[0]] = 7.0
    ones = torch.full_like(x, 0.5)
    val = float(P.continuity_prior(x, ones, topo)) * len(topo.pairs)
    n_pairs_with_face = int((topo.pairs == pair[0]).any(1).sum())
    assert val == pytest.approx(n_pairs_with_face * 5.0 * (7.0 - 2.5))


def test_coherence_and_binarisation():
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 1)
    topo = P.PriorTopology.from_grid(g)
    half = torch.full((g.n_faces,), 0.5, dtype=torch.float64)
    assert float(P.binarisation_prior(half)) == pytest.approx(0.25)
    assert float(P.edge_coherence_prior(half, topo)) == 0.0
    assert float(P.binarisation_prior(torch.ones(g.n_faces, dtype=torch.float64))) == 0.0


def test_priors_gradcheck():
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 1)
    topo = P.PriorTopology.from_grid(g)
    logk = torch.linspace(-5, -1, g.n_faces, dtype=torch.float64, requires_grad=True)

    def total(x):
        p = P.barrier_indicator(x)
        return (P.manifold_prior(p, topo) + P.edge_coherence_prior(p, topo)
                + P.binarisation_prior(p))

    assert torch.autograd.gradcheck(total, (logk,))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_priors_nonnegative_and_relabelling_invariant(seed):
    g = uniform_box_grid([0, 0, 0], [1, 1, 1], 2)
    topo = P.PriorTopology.from_grid(g)
    gen = torch.Generator().manual_seed(seed)
    logk = -5 + 4 * torch.rand(g.n_faces, generator=gen, dtype=torch.float64)
    p = P.barrier_indicator(logk)
    vals = [P.continuity_prior(logk, p, topo), P.manifold_prior(p, topo),
            P.edge_coherence_prior(p, topo), P.binarisation_prior(p)]
    assert all(float(v) >= 0 and torch.isfinite(v) for v in vals)
    # relabel the faces: a grid with permuted face order gives the same values
    perm = np.random.default_rng(seed).permutation(g.n_faces)
    from spinverse.mesh.grid import TetGrid

    g2 = TetGrid(g.points, g.tets, faces=g.faces[perm])
    topo2 = P.PriorTopology.from_grid(g2)
    logk2, p2 = logk[perm], p[perm]
    assert float(P.manifold_prior(p2, topo2)) == pytest.approx(float(vals[1]), rel=1e-12)
    assert float(P.continuity_prior(logk2, p2, topo2)) == pytest.approx(float(vals[0]),
                                                                        rel=1e-12)


def test_parameterisation_round_trip_bounds_and_fixed_faces():
    par = LogSigmoidKappa()
    v0 = par.logits_for_kappa(torch.full((3,), 1e-3, dtype=torch.float64))
    assert torch.allclose(v0, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    k = torch.tensor([2e-5, 1e-3, 0.05], dtype=torch.float64)
    assert torch.allclose(par.kappa(par.logits_for_kappa(k)), k, rtol=1e-10)
    extreme = par.kappa(torch.tensor([-1e3, 1e3], dtype=torch.float64))
    assert float(extreme[0]) >= 1e-5 * (1 - 1e-12) and float(extreme[1]) <= 0.1 * (1 + 1e-12)
    mask = torch.tensor([True, False, False])
    fixed = LogSigmoidKappa(fixed_mask=mask, fixed_values=1e-4)
    v = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    fixed.kappa(v).sum().backward()
    assert float(fixed.kappa(v)[0]) == pytest.approx(1e-4)
    assert v.grad[0] == 0 and v.grad[1] != 0
    with pytest.raises(ValueError):
        LogSigmoidKappa(kappa_min=1.0, kappa_max=0.1)
