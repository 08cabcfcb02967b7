"""Gradients on the benchmark grid against central finite differences of the same
discrete model (same kept modes at every evaluation), at the three states of the issue:
uniform κ = 1e-3 µm/µs (start), ground truth of case 017, ground truth × exp(noise)."""

from __future__ import annotations

import numpy as np
import pytest

from spinverse.autodiff.check import check_simulate_gradient

from .conftest import bench_state, one_pgse

TOL = 1e-6  # the issue asks for 1e-5; the gradient is exact, FD noise is ~1e-8


def _check(bench, state, outer, n_dir, steps=(3e-3,), frozen=False):
    rep = check_simulate_gradient(bench, bench_state(state, bench), one_pgse(n_dir),
                                  outer_boundary=outer, steps=steps, frozen=frozen,
                                  n_threads=1)
    assert rep.best.same_model2, str(rep)  # a valid difference exists
    assert rep.rel_error <= TOL, str(rep)
    return rep


@pytest.mark.parametrize("outer", ["robin", "reflecting"])
@pytest.mark.parametrize("state", ["truth", "noisy"])
def test_fd_truth_states(bench, state: str, outer: str) -> None:
    _check(bench, state, outer, 30)


def test_frozen_basis_is_not_enough(bench) -> None:
    rep = _check(bench, "noisy", "robin", 30, frozen=True)
    assert rep.frozen_rel_error is not None
    assert rep.frozen_rel_error > 100 * rep.rel_error


def test_fd_start_state_robin_few_directions(bench) -> None:
    # 911 modes with the next one 0.6 % above the cut: the step must not cross it.
    rep = _check(bench, "start", "robin", 6, steps=(1e-3,))
    assert rep.info["n_modes"] == 911
    assert rep.best.same_model4


@pytest.mark.slow
@pytest.mark.parametrize("outer", ["robin", "reflecting"])
def test_fd_start_state_full(bench, outer: str) -> None:
    # Reflecting: 1092 modes, the next one 0.27 % above the cut: ±2h would cross it.
    rep = _check(bench, "start", outer, 30, steps=(1e-3, 5e-4), frozen=True)
    assert rep.frozen_rel_error is not None and rep.frozen_rel_error > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("outer", ["robin", "reflecting"])
@pytest.mark.parametrize("state", ["truth", "noisy"])
def test_fd_dense_path(bench, state: str, outer: str) -> None:
    """The dense (full spectrum) and sparse (ARPACK + PCG) paths give the same gradient."""
    rep = check_simulate_gradient(bench, bench_state(state, bench), one_pgse(30),
                                  outer_boundary=outer, steps=(3e-3,), eig_method="dense",
                                  n_threads=1)
    assert rep.rel_error <= TOL, str(rep)
    assert np.isfinite(rep.derivative)
