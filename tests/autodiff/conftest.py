"""Shared fixtures of the autodiff tests (µm, µs, κ in µm/µs, b in s/mm²)."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, DoublePGSE
from spinverse.mesh.benchmark import benchmark_grid, case_kappa
from spinverse.mesh.generators import uniform_box_grid
from spinverse.mesh.grid import TetGrid


@pytest.fixture(scope="session")
def bench() -> TetGrid:
    return benchmark_grid()


def one_pgse(n_dir: int = 30) -> Protocol:
    """PGSE δ = 10 ms, Δ = 60 ms, 6 b-values, ``n_dir`` Fibonacci directions, ℓ = 2 µm."""
    return Protocol(2e-3, 2.0, np.arange(0.0, 5001.0, 1000.0), fibonacci_directions(n_dir),
                    (PGSE(10_000.0, 60_000.0),))


@pytest.fixture(scope="session")
def pgse1() -> Protocol:
    return one_pgse()


def bench_state(name: str, grid: TetGrid) -> np.ndarray:
    """κ (µm/µs) of the three FD-check states on the benchmark grid."""
    if name == "start":
        return np.full(grid.n_faces, 1e-3)
    truth = case_kappa("017")
    if name == "truth":
        return truth
    rng = np.random.default_rng(17)
    return truth * np.exp(0.5 * rng.standard_normal(grid.n_faces))  # "noisy"


@pytest.fixture(scope="session")
def small_grid() -> TetGrid:
    """12 tets (2×1×1 cells of 2 µm), 34 faces."""
    return uniform_box_grid(0.0, [4.0, 2.0, 2.0], [2, 1, 1])


@pytest.fixture(scope="session")
def small_protocol() -> Protocol:
    """ℓ = 0.5 µm (truncates the small grid's 48 modes at a gap), PGSE + double PGSE."""
    return Protocol(2e-3, 0.5, [0.0, 1000.0, 3000.0], fibonacci_directions(3),
                    (PGSE(5000.0, 10_000.0), DoublePGSE(3000.0, 5000.0, 1000.0)))


@pytest.fixture(scope="session")
def small_kappa(small_grid: TetGrid) -> np.ndarray:
    rng = np.random.default_rng(0)
    return 10 ** rng.uniform(-4, -1, small_grid.n_faces)
