"""Exact, fast gradients of the simulated signal with respect to every face permeability.

* :func:`simulate` — differentiable forward model (torch autograd Function around the
  engine :func:`spinverse.solvers.mf.forward`, hand-written backward pass).
* :mod:`~spinverse.autodiff.losses` — ``normalised_magnitude``, ``signal_loss``.
* :mod:`~spinverse.autodiff.check` — finite-difference and ``gradcheck`` utilities.
* :mod:`~spinverse.autodiff.vjp`, :mod:`~spinverse.autodiff.rotation` — the NumPy VJPs.

Units: κ µm/µs, S µm³, b s/mm², times µs.
"""

from __future__ import annotations

from spinverse.autodiff.functions import (
    SimulationCache,
    SimulationInfo,
    simulate,
    thread_limit,
)
from spinverse.autodiff.losses import b0_magnitude, normalised_magnitude, signal_loss

__all__ = [
    "SimulationCache",
    "SimulationInfo",
    "b0_magnitude",
    "normalised_magnitude",
    "signal_loss",
    "simulate",
    "thread_limit",
]
