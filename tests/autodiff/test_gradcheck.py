"""torch.autograd.gradcheck of the differentiable simulator on a small box grid."""

from __future__ import annotations

import pytest

from spinverse.autodiff.check import gradcheck_simulate


@pytest.mark.parametrize("outer", ["reflecting", "robin"])
def test_gradcheck_small_grid(small_grid, small_kappa, small_protocol, outer: str) -> None:
    # PGSE (dedicated path) and double PGSE (generic segment path), complex output.
    assert gradcheck_simulate(small_grid, small_kappa, small_protocol, outer_boundary=outer)
