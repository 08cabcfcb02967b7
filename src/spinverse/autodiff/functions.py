"""Differentiable forward model: ``simulate(grid, kappa, protocol)`` as a torch Function.

The forward pass runs the NumPy/SciPy matrix formalism (eigen-solve of A(κ) = K + Q(κ)
against M, truncation at λ_max = Dπ²/ℓ² at a spectral gap, batched Chebyshev propagators)
and keeps what the backward pass reuses (eigenpairs, Chebyshev tapes). The backward pass
is hand written (:mod:`spinverse.autodiff.vjp`): exact gradient of the *truncated discrete
model* with respect to every face κ, including the rotation of the kept subspace.

Units: κ µm/µs, S µm³, b s/mm², times µs, λ 1/µs.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spinverse.acquisition.protocol import Protocol
from spinverse.autodiff.spectrum import (
    Spectrum,
    blas_threads,
    block_mass_inverse_factor,
    solve_spectrum,
)
from spinverse.autodiff.vjp import (
    FluxBlocks,
    ReducedVJP,
    SequenceTape,
    _sym_lower_to_full,
    fe_kappa_vjp,
)
from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel, check_kappa
from spinverse.mesh.grid import TetGrid
from spinverse.solvers.chebyshev import DEFAULT_TOL
from spinverse.solvers.mf import SMOOTH_WAVEFORM_SEGMENT_US

__all__ = [
    "SimulationCache", "SimulationInfo", "simulate", "simulate_numpy", "thread_limit",
]


@dataclass
class SimulationInfo:
    """How a signal was computed: boundary mode, sizes, spectral gap, timings (s)."""

    outer_boundary: str
    n_dofs: int
    n_modes: int
    eigen_gap: float
    next_value: float
    eig_method: str
    timings: dict[str, float] = field(default_factory=dict)
    backward: dict[str, Any] = field(default_factory=dict)


class SimulationCache:
    """Reusable state for repeated :func:`simulate` calls (optimisation loops).

    Keeps the assembled FE models (per grid, D, boundary mode and set of κ = ∞ faces), the
    block Cholesky factor of M, the last number of kept modes (``k_guess`` of the sparse
    eigen-solver), the kept eigenvectors of the last eigen-solve (``vectors``, (N, n),
    M-orthonormal: a basis to freeze with ``simulate(..., basis=...)``) and the
    :class:`SimulationInfo` of the last call (``last``).
    """

    def __init__(self) -> None:
        self._models: dict[tuple, tuple[Any, FEModel, Any, FluxBlocks]] = {}
        self.k_guess: int | None = None
        self.vectors: np.ndarray | None = None
        self.last: SimulationInfo | None = None

    def model(
        self, grid: TetGrid, kappa: np.ndarray, diffusivity: float, outer_boundary: str
    ) -> tuple[FEModel, Any, FluxBlocks]:
        """The FE model, its block mass factor and per-face flux blocks for this grid,
        D (µm²/µs), boundary mode and set of κ = ∞ faces."""
        cont = np.isinf(kappa)
        key = (id(grid), float(diffusivity), outer_boundary, cont.tobytes())
        hit = self._models.get(key)
        if hit is not None and hit[0]() is grid:
            return hit[1], hit[2], hit[3]
        fe = FEModel.build(grid, diffusivity=diffusivity, continuous=cont,
                           outer_boundary=outer_boundary)
        linv = block_mass_inverse_factor(fe)
        blocks = FluxBlocks.build(fe)
        self._models[key] = (weakref.ref(grid), fe, linv, blocks)
        return fe, linv, blocks


_THREAD_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "spinverse_thread_limit", default=None)


@contextlib.contextmanager
def thread_limit(n_threads: int | None) -> Iterator[None]:
    """Within the block (this thread), :func:`simulate` calls that do not pass
    ``n_threads`` use ``n_threads`` CPU threads (None: the default). Process-pool workers
    that share a machine set 1, so they do not oversubscribe the cores."""
    token = _THREAD_LIMIT.set(None if n_threads is None else max(1, int(n_threads)))
    try:
        yield
    finally:
        _THREAD_LIMIT.reset(token)


def _threads(n_threads: int | None) -> int:
    """Threads for one call: ``n_threads``, else :func:`thread_limit`, else the
    ``SPINVERSE_NUM_THREADS`` environment variable, else the CPUs available."""
    if n_threads is not None:
        return max(1, int(n_threads))
    limit = _THREAD_LIMIT.get()
    if limit is not None:
        return limit
    env = os.environ.get("SPINVERSE_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise SolverError(f"SPINVERSE_NUM_THREADS must be an integer, got {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


#: Dense products smaller than this many modes run on one BLAS thread (threading them
#: costs more than it gains, and much more when a core is busy).
THREADED_MIN_MODES = 256


def _blas(n_threads: int, big: bool = True) -> Any:
    """BLAS thread limit: ``n_threads`` for big dense work, else 1."""
    return blas_threads(n_threads if big else 1)


def _propagator_threads(n_threads: int) -> Any:
    """Context for the propagators: they run on ``n_threads`` worker threads over
    direction chunks, each with single-threaded BLAS (threaded BLAS on these medium-size
    products scales poorly and collapses when a core is busy)."""
    if n_threads > 1:
        return blas_threads(1)
    return contextlib.nullcontext()


@dataclass(eq=False)
class ForwardState:
    """Everything the backward pass needs from one forward pass."""

    fe: FEModel
    a: Any
    spec: Spectrum
    reduced: ReducedVJP
    tapes: list[SequenceTape]
    protocol: Protocol
    info: SimulationInfo
    n_threads: int
    correction: bool
    blocks: FluxBlocks


def _sequence_q(protocol: Protocol, i: int) -> np.ndarray:
    return np.asarray(protocol.q(i), dtype=float)


def ritz_spectrum(fe: FEModel, a: Any, basis: np.ndarray, lambda_max: float) -> Spectrum:
    """Galerkin (Ritz) modes of (A, M) on a frozen M-orthonormal ``basis`` (N, m).

    The eigenpairs of the m × m matrix Φᵀ A Φ, rotated back: the model is the FE operator
    restricted to span(Φ). Its gradient with respect to κ is the frozen-basis formula
    (no subspace-rotation term), exact for this restricted model."""
    basis = np.asarray(basis, dtype=float)
    if basis.ndim != 2 or basis.shape[0] != fe.n_dofs or basis.shape[1] == 0:
        raise SolverError(f"frozen basis must have shape ({fe.n_dofs}, m ≥ 1), "
                          f"got {basis.shape}")
    c = basis.T @ np.asarray(a @ basis)
    c = 0.5 * (c + c.T)
    values, u = np.linalg.eigh(c)
    vectors = basis @ u
    return Spectrum(
        values=values, vectors=np.ascontiguousarray(vectors),
        extra_values=np.empty(0), extra_vectors=np.empty((fe.n_dofs, 0)),
        lambda_max=float(lambda_max), next_value=np.inf, method="frozen", complete=False,
    )


def forward_numpy(
    grid: TetGrid,
    kappa: np.ndarray,
    protocol: Protocol,
    *,
    outer_boundary: str = "reflecting",
    eig_method: str = "auto",
    cluster_rtol: float = 1e-6,
    tol: float = DEFAULT_TOL,
    cache: SimulationCache | None = None,
    k_guess: int | None = None,
    n_threads: int | None = None,
    keep: bool = True,
    correction: bool = True,
    basis: np.ndarray | None = None,
) -> tuple[np.ndarray, ForwardState]:
    """S (n_seq, n_b, n_dir) complex µm³ and the state for :func:`backward_numpy`.

    With ``basis`` (N, m) the eigen-solve is replaced by :func:`ritz_spectrum` on that
    frozen basis (and the gradient is the frozen-basis one)."""
    cache = cache if cache is not None else SimulationCache()
    nthr = _threads(n_threads)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    k = check_kappa(grid, kappa, outer_boundary)
    with _blas(1):
        fe, linv, blocks = cache.model(grid, k, protocol.diffusivity, outer_boundary)
        a = fe.operator(k)
        t1 = time.perf_counter()
        timings["assemble"] = t1 - t0
        if basis is None:
            spec = solve_spectrum(
                fe, a, protocol.lambda_max, method=eig_method, cluster_rtol=cluster_rtol,
                k_guess=k_guess if k_guess is not None else cache.k_guess, linv=linv,
                n_threads=nthr,
            )
            cache.vectors = spec.vectors
        else:
            with _blas(nthr, basis.shape[1] >= THREADED_MIN_MODES):
                spec = ritz_spectrum(fe, a, basis, protocol.lambda_max)
            correction = False
        t2 = time.perf_counter()
        timings["eigen"] = t2 - t1
        v = spec.vectors
        with _blas(nthr, spec.n_modes >= THREADED_MIN_MODES):
            moments = np.stack([v.T @ np.asarray(j @ v) for j in fe.moments])
        moments = 0.5 * (moments + moments.transpose(0, 2, 1))
        nu0 = v.T @ fe.mass_ones
        red = ReducedVJP(spec.values, moments, nu0, fe.dof_points, tol=tol, workers=nthr)
        t3 = time.perf_counter()
        timings["project"] = t3 - t2
        out = np.empty((protocol.n_sequences, protocol.n_bvalues, protocol.n_directions),
                       dtype=complex)
        tapes = []
        dirs = np.asarray(protocol.directions, dtype=float)
        with _propagator_threads(nthr):
            for i, seq in enumerate(protocol.sequences):
                q = _sequence_q(protocol, i)
                if seq.kind == "pgse":
                    s, tape = red.pgse_forward(seq.delta, seq.Delta, q, dirs, keep)  # type: ignore[attr-defined]
                else:
                    segs = seq.piecewise(SMOOTH_WAVEFORM_SEGMENT_US)
                    s = red.segments_forward(segs, q, dirs)
                    tape = SequenceTape("segments")
                out[i] = s
                tapes.append(tape)
        timings["propagate"] = time.perf_counter() - t3
    if not np.all(np.isfinite(out)):
        raise SolverError("the differentiable matrix-formalism solver produced a non-finite "
                          "signal")
    if basis is None:
        cache.k_guess = spec.n_modes
    info = SimulationInfo(
        outer_boundary=outer_boundary, n_dofs=fe.n_dofs, n_modes=spec.n_modes,
        eigen_gap=spec.gap, next_value=spec.next_value, eig_method=spec.method,
        timings=timings,
    )
    cache.last = info
    state = ForwardState(fe, a, spec, red, tapes, protocol, info, nthr, correction, blocks)
    return out, state


def backward_numpy(state: ForwardState, sbar: np.ndarray) -> np.ndarray:
    """(F,) ∂L/∂κ_f (grid face order) given S̄ (n_seq, n_b, n_dir) with δL = Re Σ conj(S̄)δS."""
    red, prot = state.reduced, state.protocol
    n = red.n
    t0 = time.perf_counter()
    sbar = np.asarray(sbar, dtype=complex)
    with _blas(1):
        lam_acc = np.zeros((n, n), order="F")
        w_acc = [np.zeros((n, n), order="F") for _ in range(3)]
        nu0_acc = np.zeros(n)
        dirs = np.asarray(prot.directions, dtype=float)
        with _propagator_threads(state.n_threads):
            for i, seq in enumerate(prot.sequences):
                if not np.any(sbar[i]):
                    continue
                q = _sequence_q(prot, i)
                if seq.kind == "pgse":
                    red.pgse_vjp(seq.delta, seq.Delta, q, dirs, state.tapes[i], sbar[i],  # type: ignore[attr-defined]
                                 lam_acc, w_acc, nu0_acc)
                else:
                    segs = seq.piecewise(SMOOTH_WAVEFORM_SEGMENT_US)
                    red.segments_vjp(segs, q, dirs, sbar[i], lam_acc, w_acc, nu0_acc)
        lam_bar = 0.5 * _sym_lower_to_full(lam_acc)
        w_bar = np.stack([0.5 * _sym_lower_to_full(w) for w in w_acc])
        t1 = time.perf_counter()
        with _blas(state.n_threads, n >= THREADED_MIN_MODES):
            grad, info = fe_kappa_vjp(state.fe, state.spec, state.a, lam_bar, w_bar,
                                      nu0_acc, correction=state.correction,
                                      blocks=state.blocks)
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
        s, state = forward_numpy(opts["grid"], k, opts["protocol"], keep=need,
                                 **opts["kwargs"])
        ctx.state = state if need else None
        ctx.device = kappa.device
        return torch.from_numpy(s)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_s: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        state = ctx.state
        if state is None:  # pragma: no cover - autograd does not call it then
            return None, None
        # The state (eigenpairs, tapes) is freed with the graph (retain_graph=False).
        g = backward_numpy(state, grad_s.detach().cpu().numpy())
        return torch.from_numpy(g).to(ctx.device), None


def simulate(
    grid: TetGrid,
    kappa: torch.Tensor,
    protocol: Protocol,
    *,
    outer_boundary: str = "reflecting",
    eig_method: str = "auto",
    cluster_rtol: float = 1e-6,
    tol: float = DEFAULT_TOL,
    cache: SimulationCache | None = None,
    k_guess: int | None = None,
    n_threads: int | None = None,
    correction: bool = True,
    basis: np.ndarray | None = None,
) -> torch.Tensor:
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
    iterations"); the gradient is then exact for that restricted model.

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
        "kwargs": dict(outer_boundary=outer_boundary, eig_method=eig_method,
                       cluster_rtol=cluster_rtol, tol=tol, cache=cache, k_guess=k_guess,
                       n_threads=n_threads, correction=correction, basis=basis),
    }
    return _SimulateFunction.apply(kappa, opts)


def simulate_numpy(
    grid: TetGrid, kappa: np.ndarray, protocol: Protocol, **kwargs: Any
) -> tuple[np.ndarray, SimulationInfo]:
    """Forward only (NumPy): S (n_seq, n_b, n_dir) complex µm³ and its info."""
    s, state = forward_numpy(grid, np.asarray(kappa, dtype=float), protocol, keep=False,
                             **kwargs)
    return s, state.info
