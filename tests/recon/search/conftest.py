"""Tiny problems for the shape search (lengths µm, times µs, κ µm/µs).

A BCC grid of 2³ cubes (48 tets, box ±4 µm) with a short two-sequence protocol, and
targets simulated from known regions (κ 1e-5 on the region's surface, 0.1 elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import bcc_grid
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.targets import Target


@pytest.fixture(scope="session")
def grid():
    return bcc_grid(2, lower=-4.0, upper=4.0)


@pytest.fixture(scope="session")
def space(grid):
    return RegionSpace(grid)


def short_protocol(directions: np.ndarray | None = None) -> Protocol:
    """Two PGSE sequences (δ/Δ 3/5 and 5/20 ms), b ∈ {0, 1000, 3000} s/mm², ℓ = 2 µm."""
    g = fibonacci_directions(12) if directions is None else directions
    return Protocol(2e-3, 2.0, np.array([0.0, 1000.0, 3000.0]), g,
                    (PGSE(3_000.0, 5_000.0), PGSE(5_000.0, 20_000.0)))


@pytest.fixture(scope="session")
def protocol():
    return short_protocol()


def make_target(space: RegionSpace, protocol: Protocol, region: np.ndarray,
                outer_boundary: str = "reflecting") -> Target:
    sim = simulate_signal(space.grid, space.kappa(region), protocol,
                          outer_boundary=outer_boundary)
    return Target(sim.signal, protocol, outer_boundary)


def nearest_tet(space: RegionSpace, point) -> int:
    return int(np.argmin(np.linalg.norm(space.grid.tet_centroids - np.asarray(point), axis=1)))


@pytest.fixture(scope="session")
def two_regions(space):
    """Two compartments of 3 and 2 tets in opposite corners of the 48-tet grid."""
    i = nearest_tet(space, (-3.0, -3.0, -3.0))
    j = nearest_tet(space, (3.0, 2.0, 3.0))
    region = np.zeros(space.grid.n_tets, dtype=bool)
    region[[i, j, *space.neighbours[i][:2], space.neighbours[j][0]]] = True
    assert space.components(region) == 2 and space.is_valid(region)
    return region
