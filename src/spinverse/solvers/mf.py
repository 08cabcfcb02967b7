"""Matrix formalism: the forward engine, grid + per-face κ + protocol → signal.

One pipeline serves every caller (``spinverse simulate``, targets, the fit, reports and
the differentiable :func:`spinverse.simulate`): assemble A(κ) = K + Q(κ) (the per-grid FE
model is cached), eigen-solve against M and cut at λ_max = Dπ²/ℓ² at a spectral gap
(:mod:`spinverse.solvers.spectrum`), project J_d and ρ = 1 on the kept modes and propagate
every sequence there (:mod:`spinverse.solvers.reduced`). Where that needs many modes
(intermediate κ on fine grids), the full-space propagator
(:mod:`spinverse.solvers.fullspace`: no eigenmodes, the untruncated FE model) is chosen
by a cost model (``propagator="auto"``). :func:`forward` returns the signal and the state
the reverse mode (:mod:`spinverse.autodiff`) reuses.

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
import scipy.sparse as sp

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import Sequence
from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel, check_kappa
from spinverse.mesh.grid import TetGrid
from spinverse.solvers.chebyshev import DEFAULT_TOL
from spinverse.solvers.fullspace import FullSpaceModel, FullSpaceState, fullspace_signal
from spinverse.solvers.reduced import ReducedModel, SequenceTape
from spinverse.solvers.spectrum import (
    DENSE_FRACTION,
    DENSE_MAX_DOFS,
    Spectrum,
    blas_threads,
    block_mass_inverse_factor,
    count_below,
    solve_spectrum,
)

#: Dense products smaller than this many modes run on one BLAS thread (threading them
#: costs more than it gains, and much more when a core is busy).
THREADED_MIN_MODES = 256


# ------------------------------------------------------------------------- threads
_THREAD_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "spinverse_thread_limit", default=None)


@contextlib.contextmanager
def thread_limit(n_threads: int | None) -> Iterator[None]:
    """Within the block (this thread), simulations that do not pass ``n_threads`` use
    ``n_threads`` CPU threads (None: the default). Process-pool workers that share a
    machine set 1, so they do not oversubscribe the cores."""
    token = _THREAD_LIMIT.set(None if n_threads is None else max(1, int(n_threads)))
    try:
        yield
    finally:
        _THREAD_LIMIT.reset(token)


def resolve_threads(n_threads: int | None) -> int:
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


def blas(n_threads: int, big: bool = True) -> Any:
    """BLAS thread limit: ``n_threads`` for big dense work, else 1."""
    return blas_threads(n_threads if big else 1)


def propagator_threads(n_threads: int) -> Any:
    """Context for the propagators: they run on ``n_threads`` worker threads over
    direction chunks, each with single-threaded BLAS (threaded BLAS on these medium-size
    products scales poorly and collapses when a core is busy)."""
    if n_threads > 1:
        return blas_threads(1)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- cache
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
    propagator: str = "eigen"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class CachedModel:
    """The FE model of one grid, D, boundary mode and set of κ = ∞ faces, the block
    Cholesky factor of its mass matrix (or None) and ``extras`` other layers derive from
    it (e.g. the gradient's per-face flux blocks)."""

    fe: FEModel
    linv: sp.csr_matrix | None
    extras: dict[str, Any] = field(default_factory=dict)


class SimulationCache:
    """Reusable state for repeated simulations (optimisation loops).

    Keeps the assembled FE models (per grid, D, boundary mode and set of κ = ∞ faces),
    the propagator ``"auto"`` chose on the first call (``propagator``: kept, so that one
    optimisation never switches between the truncated and the full model), the last
    number of kept modes (``k_guess`` of the sparse eigen-solver), the kept
    eigenvectors of the last eigen-solve (``vectors``, (N, n), M-orthonormal: a basis to
    freeze with ``basis=...``) and the :class:`SimulationInfo` of the last call (``last``).
    """

    def __init__(self, *, shared: bool = False) -> None:
        # shared: the process-wide per-grid models (freed with their grid)
        self._models = _SHARED_MODELS if shared else {}
        self.k_guess: int | None = None
        self.vectors: np.ndarray | None = None
        self.last: SimulationInfo | None = None
        self.propagator: str | None = None  # the first "auto" choice, then kept

    def model(self, grid: TetGrid, kappa: np.ndarray, diffusivity: float,
              outer_boundary: str) -> CachedModel:
        """The cached model for this grid, D (µm²/µs), boundary mode and κ = ∞ faces."""
        cont = np.isinf(kappa)
        key = (id(grid), float(diffusivity), outer_boundary, cont.tobytes())
        hit = self._models.get(key)
        if hit is not None and hit[0]() is grid:
            return hit[1]
        fe = FEModel.build(grid, diffusivity=diffusivity, continuous=cont,
                           outer_boundary=outer_boundary)
        entry = CachedModel(fe, block_mass_inverse_factor(fe))
        self._models[key] = (weakref.ref(grid), entry)
        if self._models is _SHARED_MODELS:
            weakref.finalize(grid, _SHARED_MODELS.pop, key, None)
        return entry


#: FE models reused by calls that pass no cache, per grid (freed with the grid): repeated
#: calls on one grid skip the assembly. Only the model is shared, never solver state, so
#: results do not depend on earlier calls.
_SHARED_MODELS: dict[tuple, tuple[Any, CachedModel]] = {}


# ------------------------------------------------------------------------ reduction
def ritz_spectrum(a: Any, basis: np.ndarray, lambda_max: float) -> Spectrum:
    """Galerkin (Ritz) modes of (A, M) on a frozen M-orthonormal ``basis`` (N, m).

    The eigenpairs of the m × m matrix Φᵀ A Φ, rotated back: the model is the FE operator
    restricted to span(Φ). Its gradient with respect to κ is the frozen-basis formula
    (no subspace-rotation term), exact for this restricted model."""
    basis = np.asarray(basis, dtype=float)
    n_dofs = a.shape[0]
    if basis.ndim != 2 or basis.shape[0] != n_dofs or basis.shape[1] == 0:
        raise SolverError(f"frozen basis must have shape ({n_dofs}, m ≥ 1), "
                          f"got {basis.shape}")
    c = basis.T @ np.asarray(a @ basis)
    c = 0.5 * (c + c.T)
    values, u = np.linalg.eigh(c)
    return Spectrum(
        values=values, vectors=np.ascontiguousarray(basis @ u),
        extra_values=np.empty(0), extra_vectors=np.empty((n_dofs, 0)),
        lambda_max=float(lambda_max), next_value=np.inf, method="frozen", complete=False,
    )


def project(fe: FEModel, spec: Spectrum, *, tol: float = DEFAULT_TOL, n_threads: int = 1
            ) -> ReducedModel:
    """The reduced model on the kept modes of ``spec``: Λ, W_d = ΦᵀJ_dΦ, ν₀ = ΦᵀM1."""
    v = spec.vectors
    with blas(n_threads, spec.n_modes >= THREADED_MIN_MODES):
        moments = np.stack([v.T @ np.asarray(j @ v) for j in fe.moments])
    moments = 0.5 * (moments + moments.transpose(0, 2, 1))
    return ReducedModel(spec.values, moments, v.T @ fe.mass_ones, fe.dof_points, tol=tol,
                        workers=n_threads)


def reduce_model(
    fe: FEModel,
    kappa: np.ndarray,
    lambda_max: float,
    *,
    eig_method: str = "auto",
    cluster_rtol: float = 1e-6,
    k_guess: int | None = None,
    tol: float = DEFAULT_TOL,
) -> ReducedModel:
    """Eigen-solve A(κ) = K + Q(κ) against M and project (λ_max in 1/µs)."""
    spec = solve_spectrum(fe.operator(kappa), fe.mass, lambda_max, method=eig_method,
                          cluster_rtol=cluster_rtol, k_guess=k_guess,
                          linv=block_mass_inverse_factor(fe))
    return project(fe, spec, tol=tol)


def sequence_signal(reduced: ReducedModel, sequence: Sequence, q: np.ndarray,
                    directions: np.ndarray) -> np.ndarray:
    """S (n_b, n_dir) complex, µm³, for one sequence, q (n_b,) in 1/(µm·µs)."""
    return reduced.sequence_forward(sequence, q, directions)[0]


def mf_signal(reduced: ReducedModel, protocol: Protocol) -> np.ndarray:
    """S (n_sequences, n_bvalues, n_directions) complex128 in µm³ for a protocol."""
    return np.stack([sequence_signal(reduced, seq, protocol.q(i), protocol.directions)
                     for i, seq in enumerate(protocol.sequences)])


# ---------------------------------------------------------------- propagator choice
#: Propagators of :func:`forward`.
PROPAGATORS = ("auto", "eigen", "fullspace")
#: ``"auto"`` keeps the eigen path up to this many unknowns (the benchmark grid: the
#: published method's truncated model, and cheap there at any κ).
AUTO_MIN_DOFS = 8000
#: Cost model, seconds per unit on the 2-core development machine (forward only):
#: full space per (nnz of A × real column × Chebyshev step), dense eigen per N³, sparse
#: eigen per (N k² + columns × k² × 80); the backward pass costs ``_GRAD`` × forward.
_C_FULL, _C_DENSE, _C_SPARSE = 4e-10, 2e-10, 5e-9
_GRAD = {"fullspace": 3.0, "dense": 1.2, "sparse": 2.5}


def choose_propagator(fe: FEModel, linv: sp.spmatrix | None, kappa: np.ndarray, a: Any,
                      protocol: Protocol, *, keep: bool = False, k_guess: int | None = None,
                      ) -> tuple[str, FullSpaceModel | None, dict[str, float]]:
    """("eigen" | "fullspace", the full-space model if built, the estimated seconds).

    Full space: Chebyshev steps from the spectral bound ρ (a Lanczos estimate) and the
    protocol; eigen: the number of modes below λ_max by Sylvester's law of inertia (one
    sparse LDLᵀ), dense or sparse as :func:`solve_spectrum` would choose."""
    n = fe.n_dofs
    if n <= AUTO_MIN_DOFS or linv is None:
        return "eigen", None, {}
    full = FullSpaceModel.build(fe, linv, kappa, a=a)
    t_full = _C_FULL * a.nnz * full.work(protocol) * (_GRAD["fullspace"] if keep else 1.0)
    modes = count_below(a, fe.mass, protocol.lambda_max)
    modes = n if modes is None else modes
    n_cols = protocol.n_sequences * protocol.n_bvalues * protocol.n_directions
    if modes > DENSE_FRACTION * n and n <= DENSE_MAX_DOFS:
        t_eig = _C_DENSE * float(n) ** 3 * (_GRAD["dense"] if keep else 1.0)
    else:
        t_eig = _C_SPARSE * (n + 80.0 * n_cols) * float(modes) ** 2 * (
            _GRAD["sparse"] if keep else 1.0)
    est = {"fullspace_s": t_full, "eigen_s": t_eig, "modes_below": float(modes)}
    return ("fullspace" if t_full < t_eig else "eigen"), full, est


# -------------------------------------------------------------------------- forward
@dataclass(eq=False)
class ForwardState:
    """One forward pass: what the reverse mode reuses, and how it ran (``info``)."""

    model: CachedModel
    a: Any
    spec: Spectrum
    reduced: ReducedModel
    tapes: list[SequenceTape]
    protocol: Protocol
    info: SimulationInfo
    n_threads: int
    frozen: bool

    @property
    def fe(self) -> FEModel:
        return self.model.fe


def forward(grid: TetGrid, kappa: np.ndarray, protocol: Protocol, *,
            outer_boundary: str = "reflecting", eig_method: str = "auto",
            cluster_rtol: float = 1e-6, tol: float = DEFAULT_TOL,
            cache: SimulationCache | None = None, k_guess: int | None = None,
            n_threads: int | None = None, keep: bool = False,
            basis: np.ndarray | None = None, propagator: str = "auto",
            ) -> tuple[np.ndarray, ForwardState | FullSpaceState]:
    """S (n_seq, n_b, n_dir) complex µm³ for per-face κ (µm/µs), and the forward state.

    ``keep``: keep what a reverse mode needs (tapes, modes above the cut). ``basis``
    (N, m): skip the eigen-solve and use the Galerkin model on that frozen basis
    (:func:`ritz_spectrum`). ``cache``: reused per-grid work and solver state (default:
    only the grid's FE model is reused). ``propagator``: ``"eigen"`` (matrix formalism
    cut at λ_max), ``"fullspace"`` (no eigenmodes, untruncated) or ``"auto"`` (eigen up
    to :data:`AUTO_MIN_DOFS` unknowns, else the cheaper by :func:`choose_propagator`;
    kept in ``cache`` after its first call). Other options as :func:`spinverse.simulate`.
    """
    if propagator not in PROPAGATORS:
        raise SolverError(f"unknown propagator {propagator!r}; choose one of {PROPAGATORS}")
    cache = cache if cache is not None else SimulationCache(shared=True)
    nthr = resolve_threads(n_threads)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    k = check_kappa(grid, kappa, outer_boundary)
    with blas(1):
        model = cache.model(grid, k, protocol.diffusivity, outer_boundary)
        fe = model.fe
        a = fe.operator(k)
        t1 = time.perf_counter()
        timings["assemble"] = t1 - t0
        choice, full, details = propagator, None, {}
        if choice == "auto":
            if basis is not None:
                choice = "eigen"
            elif cache.propagator is not None:
                choice = cache.propagator
            else:
                choice, full, details = choose_propagator(fe, model.linv, k, a, protocol,
                                                          keep=keep, k_guess=cache.k_guess)
                cache.propagator = choice
                timings["choose"] = time.perf_counter() - t1
        if choice == "fullspace":
            if basis is not None:
                raise SolverError("a frozen basis needs the eigen propagator")
            out, fstate = fullspace_signal(fe, model.linv, k, protocol, n_threads=nthr,
                                           keep=keep, a=a, model=full)
            timings.update(setup=fstate.info["setup_s"], propagate=fstate.info["propagate_s"])
            info = SimulationInfo(
                outer_boundary=outer_boundary, n_dofs=fe.n_dofs, n_modes=0,
                eigen_gap=float("nan"), next_value=float("nan"), eig_method="none",
                timings=timings, propagator="fullspace",
                details={**details, "rho": fstate.info["rho"],
                         "degrees": fstate.info["degrees"]})
            if not np.all(np.isfinite(out)):
                raise SolverError("the full-space propagator produced a non-finite signal")
            cache.last = info
            fstate.info = info  # type: ignore[assignment]
            return out, fstate
        if basis is None:
            spec = solve_spectrum(
                a, fe.mass, protocol.lambda_max, method=eig_method, cluster_rtol=cluster_rtol,
                k_guess=k_guess if k_guess is not None else cache.k_guess, linv=model.linv,
                n_threads=nthr, margin=keep,
            )
            cache.vectors = spec.vectors
        else:
            with blas(nthr, basis.shape[1] >= THREADED_MIN_MODES):
                spec = ritz_spectrum(a, basis, protocol.lambda_max)
        t2 = time.perf_counter()
        timings["eigen"] = t2 - t1
        red = project(fe, spec, tol=tol, n_threads=nthr)
        t3 = time.perf_counter()
        timings["project"] = t3 - t2
        out = np.empty((protocol.n_sequences, protocol.n_bvalues, protocol.n_directions),
                       dtype=complex)
        tapes = []
        dirs = np.asarray(protocol.directions, dtype=float)
        with propagator_threads(nthr):
            for i, seq in enumerate(protocol.sequences):
                out[i], tape = red.sequence_forward(seq, protocol.q(i), dirs, keep)
                tapes.append(tape)
        timings["propagate"] = time.perf_counter() - t3
    if not np.all(np.isfinite(out)):
        raise SolverError("the matrix-formalism solver produced a non-finite signal")
    if basis is None:
        cache.k_guess = spec.n_modes
    info = SimulationInfo(
        outer_boundary=outer_boundary, n_dofs=fe.n_dofs, n_modes=spec.n_modes,
        eigen_gap=spec.gap, next_value=spec.next_value, eig_method=spec.method,
        timings=timings, details=details,
    )
    cache.last = info
    state = ForwardState(model, a, spec, red, tapes, protocol, info, nthr, basis is not None)
    return out, state
