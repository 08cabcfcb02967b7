"""Differentiable forward model: ``simulate(grid, kappa, protocol)`` as a torch Function.

The forward pass is the engine's (:func:`spinverse.solvers.mf.forward`: eigen-solve of
A(κ) = K + Q(κ) against M, truncation at λ_max = Dπ²/ℓ² at a spectral gap, batched
Chebyshev propagators), keeping what the backward pass reuses (eigenpairs, Chebyshev
tapes). The backward pass is hand written (:mod:`spinverse.autodiff.vjp`): exact gradient
of the *truncated discrete model* with respect to every face κ, including the rotation
of the kept subspace.

Units: κ µm/µs, S µm³, b s/mm², times µs, λ 1/µs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from spinverse.acquisition.protocol import Protocol
from spinverse.autodiff.fullspace import fullspace_backward
from spinverse.autodiff.vjp import (
    FluxBlocks,
    ReducedCotangents,
    fe_kappa_vjp,
    pgse_vjp,
    segments_vjp,
)
from spinverse.mesh.grid import TetGrid
from spinverse.solvers.chebyshev import DEFAULT_TOL
from spinverse.solvers.fullspace import FullSpaceState
from spinverse.solvers.mf import (
    THREADED_MIN_MODES,
    ForwardState,
    SimulationCache,
    SimulationInfo,
    blas,
    forward,
    propagator_threads,
    thread_limit,
)

__all__ = ["SimulationCache", "SimulationInfo", "simulate", "thread_limit"]


def _flux_blocks(state: ForwardState) -> FluxBlocks:
    """The per-face flux blocks of the state's FE model (built once per cached model)."""
    blocks = state.model.extras.get("flux_blocks")
    if blocks is None:
        blocks = state.model.extras["flux_blocks"] = FluxBlocks.build(state.fe)
    return blocks


def backward_numpy(state: ForwardState | FullSpaceState, sbar: np.ndarray, *,
                   correction: bool = True) -> np.ndarray:
    """(F,) ∂L/∂κ_f (grid face order) given S̄ (n_seq, n_b, n_dir) with δL = Re Σ conj(S̄)δS.

    ``correction=False``: the frozen-basis gradient (diagnostics; always so for a state
    computed on a frozen basis; no effect on a full-space state)."""
    if isinstance(state, FullSpaceState):
        t0 = time.perf_counter()
        grad, info = fullspace_backward(state, sbar)
        info["fullspace_s"] = time.perf_counter() - t0
        state.info.backward = info  # type: ignore[attr-defined]
        return grad
    red, prot = state.reduced, state.protocol
    t0 = time.perf_counter()
    sbar = np.asarray(sbar, dtype=complex)
    with blas(1):
        acc = ReducedCotangents.zeros(red.n)
        dirs = np.asarray(prot.directions, dtype=float)
        with propagator_threads(state.n_threads):
            for i, seq in enumerate(prot.sequences):
                if not np.any(sbar[i]):
                    continue
                q = np.asarray(prot.q(i), dtype=float)
                tape = state.tapes[i]
                if tape.segments is None:  # PGSE
                    pgse_vjp(red, seq.delta, seq.Delta, q, dirs, tape, sbar[i], acc)  # type: ignore[attr-defined]
                else:
                    segments_vjp(red, tape.segments, q, dirs, sbar[i], acc)
        lam_bar, w_bar, nu0_bar = acc.symmetric()
        t1 = time.perf_counter()
        with blas(state.n_threads, red.n >= THREADED_MIN_MODES):
            grad, info = fe_kappa_vjp(state.fe, state.spec, state.a, lam_bar, w_bar, nu0_bar,
                                      correction=correction and not state.frozen,
                                      blocks=_flux_blocks(state))
        t2 = time.perf_counter()
    info = dict(info)
    info.update(reduced_s=t1 - t0, fe_s=t2 - t1)
    state.info.backward = info
    return grad


class _SimulateFunction(torch.autograd.Function):
    """κ (F,) float64 → S (n_seq, n_b, n_dir) complex128, hand-written backward."""

    @staticmethod
    def forward(ctx: Any, kappa: torch.Tensor, opts: dict) -> torch.Tensor:  # type: ignore[override]
        k = kappa.detach().cpu().numpy().astype(np.float64, copy=True)
        need = bool(ctx.needs_input_grad[0])
        s, state = forward(opts["grid"], k, opts["protocol"], keep=need, **opts["kwargs"])
        ctx.state = state if need else None
        ctx.correction = opts["correction"]
        ctx.device = kappa.device
        return torch.from_numpy(s)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_s: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        state = ctx.state
        if state is None:  # pragma: no cover - autograd does not call it then
            return None, None
        # The state (eigenpairs, tapes) is freed with the graph (retain_graph=False).
        g = backward_numpy(state, grad_s.detach().cpu().numpy(), correction=ctx.correction)
        return torch.from_numpy(g).to(ctx.device), None


def simulate(grid: TetGrid, kappa: torch.Tensor, protocol: Protocol, *,
             outer_boundary: str = "reflecting", eig_method: str = "auto",
             cluster_rtol: float = 1e-6, tol: float = DEFAULT_TOL,
             cache: SimulationCache | None = None, k_guess: int | None = None,
             n_threads: int | None = None, correction: bool = True,
             basis: np.ndarray | None = None, propagator: str = "auto") -> torch.Tensor:
    """Differentiable signal S (n_sequences, n_bvalues, n_directions), complex128, µm³.

    ``kappa``: float64 tensor (F,) of per-face permeabilities in µm/µs, in ``grid.faces``
    order (κ = ∞ faces are continuous and get zero gradient). ``outer_boundary``:
    ``"reflecting"`` (Neumann, default) or ``"robin"`` (outer faces leak with their κ; the
    published benchmark's convention). Matrix formalism truncated at λ_max = Dπ²/ℓ² at a
    spectral gap; the gradient is that of this discrete model, exact to round-off.

    Options: ``eig_method`` (``"auto"``/``"dense"``/``"sparse"``), ``cluster_rtol`` (the
    cut's cluster tolerance), ``tol`` (Chebyshev tail bound), ``cache`` (a
    :class:`SimulationCache` reused across calls: FE model, mass factor, ``k_guess``;
    ``cache.last`` holds the :class:`SimulationInfo`), ``k_guess`` (expected number of
    modes, sparse solver), ``n_threads`` (CPU threads: worker threads over gradient
    directions for the propagators, BLAS threads for the large dense products; default:
    :func:`thread_limit`, else ``$SPINVERSE_NUM_THREADS``, else the CPUs available;
    results are bit-for-bit reproducible for a given ``n_threads`` and agree to round-off
    across values; on a machine where other jobs keep a core busy,
    ``n_threads=1`` can be faster), ``correction=False`` (frozen-basis gradient, for
    diagnostics only), ``basis``: (N, m) M-orthonormal vectors, e.g. ``cache.vectors``
    of an earlier call, to skip the eigen-solve and use the Galerkin model on that frozen
    basis (:func:`ritz_spectrum`; the published method's "eigenbasis refreshed every k
    iterations"); the gradient is then exact for that restricted model. ``propagator``:
    ``"eigen"`` (the above), ``"fullspace"`` (:mod:`spinverse.solvers.fullspace`: no
    eigenmodes, the untruncated FE model; its cost follows ρτ, not the number of modes,
    which suits intermediate κ on fine grids; every face must be finite) or ``"auto"``
    (default: eigen up to 8 000 unknowns, else the cheaper by a cost model; a ``cache``
    keeps the first choice, so an optimisation never switches model).

    Cost: one eigen-solve (dense LAPACK when many modes are kept, else shift-invert
    Lanczos) and one batched Chebyshev pass per sequence forward; the backward pass
    reuses the eigenpairs and the Chebyshev vectors (tapes) of the forward pass.
    """
    if not isinstance(kappa, torch.Tensor):
        kappa = torch.as_tensor(np.asarray(kappa, dtype=np.float64))
    if kappa.dtype != torch.float64:
        raise TypeError(f"kappa must be a float64 tensor, got {kappa.dtype}")
    opts = {
        "grid": grid,
        "protocol": protocol,
        "correction": correction,
        "kwargs": dict(outer_boundary=outer_boundary, eig_method=eig_method,
                       cluster_rtol=cluster_rtol, tol=tol, cache=cache, k_guess=k_guess,
                       n_threads=n_threads, basis=basis, propagator=propagator),
    }
    return _SimulateFunction.apply(kappa, opts)

