"""The forward model in one call: grid + per-face κ + protocol → complex signal (NumPy).

This is the non-differentiable entry point of the ``simulate`` CLI, targets, the search
and reports. Solvers (:data:`SOLVERS`): ``"mf"``, the matrix-formalism engine that the
differentiable :func:`spinverse.simulate` also runs (:mod:`spinverse.solvers.mf`), and
``"timestep"`` (Crank–Nicolson on the full FE system), its independent cross-check. A new
solver is a function with the :class:`Solver` signature, added with
:func:`register_solver`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spinverse.acquisition.protocol import Protocol as AcquisitionProtocol
from spinverse.errors import SolverError
from spinverse.fem.assembly import build_model, check_kappa
from spinverse.mesh.grid import TetGrid
from spinverse.solvers.timestep import DEFAULT_DT_US, timestep_signal


@dataclass(frozen=True)
class SimulationResult:
    """A simulated signal and how it was obtained.

    ``signal`` (n_sequences, n_bvalues, n_directions) complex128 in µm³.
    """

    signal: np.ndarray
    solver: str
    outer_boundary: str
    n_dofs: int
    n_modes: int | None = None
    eigen_gap: float | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def normalised(self) -> np.ndarray:
        """|S| / |S(b=0)| per sequence and direction (needs a b = 0 row first)."""
        mag = np.abs(self.signal)
        return mag / mag[:, :1, :]


class Solver(Protocol):
    """What a forward solver implements: the signal (µm³) of checked per-face κ (µm/µs,
    grid face order) for a protocol, as a :class:`SimulationResult` (``seconds`` is
    filled in by :func:`simulate_signal`). ``options`` are the solver's own keywords."""

    def __call__(self, grid: TetGrid, kappa: np.ndarray, protocol: AcquisitionProtocol, *,
                 outer_boundary: str, **options: Any) -> SimulationResult: ...


def _mf(grid: TetGrid, kappa: np.ndarray, protocol: AcquisitionProtocol, *,
        outer_boundary: str, eig_method: str = "auto", cluster_rtol: float = 1e-6,
        n_threads: int | None = None, propagator: str = "auto") -> SimulationResult:
    from spinverse.solvers.mf import forward

    signal, state = forward(grid, kappa, protocol, outer_boundary=outer_boundary,
                            eig_method=eig_method, cluster_rtol=cluster_rtol,
                            n_threads=n_threads, propagator=propagator)
    info = state.info
    full = info.propagator == "fullspace"
    return SimulationResult(signal=signal, solver="mf", outer_boundary=outer_boundary,
                            n_dofs=info.n_dofs, n_modes=None if full else info.n_modes,
                            eigen_gap=None if full else info.eigen_gap,
                            info={"timings": info.timings, "propagator": info.propagator,
                                  **info.details})


def _timestep(grid: TetGrid, kappa: np.ndarray, protocol: AcquisitionProtocol, *,
              outer_boundary: str, dt_us: float = DEFAULT_DT_US) -> SimulationResult:
    fe = build_model(grid, kappa, diffusivity=protocol.diffusivity,
                     outer_boundary=outer_boundary)
    signal = timestep_signal(fe, kappa, protocol, dt_us=dt_us)
    return SimulationResult(signal=signal, solver="timestep", outer_boundary=outer_boundary,
                            n_dofs=fe.n_dofs)


_COMMON = {"grid", "kappa", "protocol", "outer_boundary"}

#: Forward solvers by name.
SOLVERS: dict[str, Solver] = {"mf": _mf, "timestep": _timestep}


def register_solver(name: str, solver: Solver) -> Solver:
    """Make ``solver`` available to :func:`simulate_signal` as ``solver=name``."""
    if SOLVERS.get(name, solver) is not solver:
        raise ValueError(f"solver {name!r} is already registered")
    SOLVERS[name] = solver
    return solver


def simulate_signal(grid: TetGrid, kappa: np.ndarray, protocol: AcquisitionProtocol, *,
                    outer_boundary: str = "reflecting", solver: str = "mf",
                    **options: Any) -> SimulationResult:
    """Simulate the signal S (µm³) for per-face κ (µm/µs) in the grid's face order.

    Faces with κ = ∞ are continuous (merged nodes), κ = 0 seals a face. ``outer_boundary``
    is ``"reflecting"`` (Neumann, default) or ``"robin"`` (outer faces leak with their κ;
    the published method's convention). ``options`` go to the solver: ``"mf"`` takes
    ``eig_method`` (auto/dense/sparse), ``cluster_rtol``, ``n_threads`` and
    ``propagator`` (auto/eigen/fullspace, see :func:`spinverse.simulate`);
    ``"timestep"`` takes ``dt_us`` (µs).
    """
    if solver not in SOLVERS:
        raise SolverError(f"unknown solver {solver!r}; choose one of {tuple(SOLVERS)}")
    t0 = time.perf_counter()
    k = check_kappa(grid, kappa, outer_boundary)
    fn = SOLVERS[solver]
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise SolverError(f"solver {solver!r} takes no option {', '.join(unknown)}; its "
                              f"options: {', '.join(sorted(set(params) - _COMMON)) or 'none'}")
    result = fn(grid, k, protocol, outer_boundary=outer_boundary, **options)
    if not np.all(np.isfinite(result.signal)):
        raise SolverError(f"the {solver} solver produced a non-finite signal")
    return SimulationResult(
        signal=result.signal, solver=result.solver, outer_boundary=result.outer_boundary,
        n_dofs=result.n_dofs, n_modes=result.n_modes, eigen_gap=result.eigen_gap,
        seconds=time.perf_counter() - t0, info=result.info,
    )
