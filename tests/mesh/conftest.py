"""Shared fixtures of the mesh tests (lengths in µm)."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.mesh.grid import TetGrid

from .helpers import BENCHMARK_NPZ


@pytest.fixture(scope="session")
def bench_npz() -> dict[str, np.ndarray]:
    """The arrays of the shared benchmark file (not the package's shipped copy)."""
    if not BENCHMARK_NPZ.exists():
        pytest.skip(f"{BENCHMARK_NPZ} not available")
    with np.load(BENCHMARK_NPZ, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def bench_grid(bench_npz: dict[str, np.ndarray]) -> TetGrid:
    return TetGrid(bench_npz["points"], bench_npz["tets"], faces=bench_npz["faces"])
