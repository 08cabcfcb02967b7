"""Gradient checks: directional derivatives against central finite differences.

:func:`fd_directional` compares a claimed directional derivative of any scalar function
with 2nd- and 4th-order central differences over several steps and reports, per step, the
relative error and the conditioning of the difference (how much relative round-off in
the function value is amplified). :func:`check_simulate_gradient` does this for
:func:`~spinverse.autodiff.functions.simulate` in log κ, verifying that the finite
difference stays inside the same discrete model (same number of kept modes at every
evaluation). :func:`gradcheck_simulate` runs :func:`torch.autograd.gradcheck` (meant for
small grids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spinverse.acquisition.protocol import Protocol
from spinverse.autodiff.functions import SimulationCache, simulate
from spinverse.mesh.grid import TetGrid

__all__ = [
    "FDRow",
    "FDReport",
    "fd_directional",
    "GradientCheckReport",
    "check_simulate_gradient",
    "gradcheck_simulate",
]

EPS = np.finfo(float).eps


@dataclass(frozen=True)
class FDRow:
    """One step ``h``: 2nd-order (±h) and 4th-order (±h, ±2h) central differences, their
    relative errors against the claimed derivative, the conditioning |f|/|h·f'| of the
    difference (the factor by which relative round-off in f is amplified) and whether the
    evaluations of each stayed in the discrete model of t = 0."""

    step: float
    fd2: float
    fd4: float
    rel_err2: float
    rel_err4: float
    conditioning: float
    same_model2: bool
    same_model4: bool

    @property
    def same_model(self) -> bool:
        return self.same_model2 and self.same_model4

    @property
    def rel_error(self) -> float:
        """Smallest relative error among the valid (same-model) differences (inf: none)."""
        errs = [e for e, ok in ((self.rel_err2, self.same_model2),
                                (self.rel_err4, self.same_model4)) if ok]
        return min(errs, default=float("inf"))


@dataclass
class FDReport:
    """All steps of a directional check; ``best`` is the row with the smallest error."""

    derivative: float
    value: float
    rows: list[FDRow]
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> FDRow:
        """The row with the smallest valid (same-model) error."""
        return min(self.rows, key=lambda r: r.rel_error)

    @property
    def best_fd(self) -> float:
        """The finite difference of the best row (4th order when valid)."""
        b = self.best
        return b.fd4 if b.same_model4 and b.rel_err4 <= b.rel_err2 else b.fd2

    @property
    def rel_error(self) -> float:
        """Smallest relative error over steps and orders, same-model differences only
        (inf when every step changed the discrete model)."""
        return self.best.rel_error

    def __str__(self) -> str:
        lines = [f"directional derivative {self.derivative:.12e} (f = {self.value:.6e})"]
        lines.append(f"{'step':>9} {'fd2':>20} {'rel2':>9} {'fd4':>20} {'rel4':>9} "
                     f"{'cond':>9} same(±h,±2h)")
        for r in self.rows:
            lines.append(f"{r.step:9.2e} {r.fd2:20.12e} {r.rel_err2:9.2e} {r.fd4:20.12e} "
                         f"{r.rel_err4:9.2e} {r.conditioning:9.2e} "
                         f"{r.same_model2},{r.same_model4}")
        for k, v in self.info.items():
            lines.append(f"{k}: {v}")
        return "\n".join(lines)


def fd_directional(
    fun: Callable[[float], float | tuple[float, Any]],
    derivative: float,
    *,
    steps: Sequence[float] = (1e-2, 3e-3, 1e-3, 3e-4),
) -> FDReport:
    """Check ``derivative`` = d/dt fun(t) at t = 0 with central differences.

    ``fun(t)`` returns the value, or (value, key) where ``key`` identifies the discrete
    model used (e.g. the number of kept modes): a difference whose evaluations do not all
    share the key of t = 0 is flagged (``same_model2``/``same_model4`` False) and ignored
    by ``best`` and ``rel_error``.
    """

    def call(t: float) -> tuple[float, Any]:
        out = fun(t)
        return (float(out[0]), out[1]) if isinstance(out, tuple) else (float(out), None)

    f0, key0 = call(0.0)
    rows = []
    scale = max(abs(derivative), 1e-300)
    for h in steps:
        vals, keys = {}, {}
        for m in (-2, -1, 1, 2):
            vals[m], keys[m] = call(m * h)
        same2 = keys[1] == key0 and keys[-1] == key0
        same4 = same2 and keys[2] == key0 and keys[-2] == key0
        fd2 = (vals[1] - vals[-1]) / (2 * h)
        fd4 = (8 * (vals[1] - vals[-1]) - (vals[2] - vals[-2])) / (12 * h)
        cond = abs(f0) / max(abs(h * derivative), 1e-300)
        rows.append(FDRow(h, fd2, fd4, abs(fd2 - derivative) / scale,
                          abs(fd4 - derivative) / scale, cond, same2, same4))
    return FDReport(derivative, f0, rows)


@dataclass
class GradientCheckReport(FDReport):
    """:class:`FDReport` of a :func:`simulate` gradient, plus the frozen-basis error."""

    frozen_rel_error: float | None = None


def _default_loss(s: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * s.real).sum() + (weights.flip(-1) * s.imag).sum()


def check_simulate_gradient(
    grid: TetGrid,
    kappa: np.ndarray,
    protocol: Protocol,
    *,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    direction: np.ndarray | None = None,
    steps: Sequence[float] = (3e-3, 1e-3),
    seed: int = 0,
    frozen: bool = False,
    **simulate_kwargs: Any,
) -> GradientCheckReport:
    """Directional derivative of ``loss(simulate(grid, κ, protocol))`` in log κ.

    Along ``direction`` (F,) in log κ (default: standard normal with ``seed``), i.e.
    d/dt L(κ ∘ exp(t·v)), by autograd and by central differences of the *same* discrete
    model (the number of kept modes is checked at every evaluation). ``loss`` defaults to
    a random linear functional of S. ``frozen=True`` also reports the error of the
    frozen-basis gradient (no subspace-rotation term). ``simulate_kwargs`` go to
    :func:`simulate` (``outer_boundary``, ``eig_method``, ``tol``, …).
    """
    rng = np.random.default_rng(seed)
    k0 = np.asarray(kappa, dtype=float)
    v = rng.standard_normal(k0.shape) if direction is None else np.asarray(direction, float)
    v = np.where(np.isfinite(k0), v, 0.0)
    if loss is None:
        w = torch.as_tensor(
            rng.standard_normal((protocol.n_sequences, protocol.n_bvalues,
                                 protocol.n_directions))
        )

        def loss(s: torch.Tensor) -> torch.Tensor:
            return _default_loss(s, w)

    cache = simulate_kwargs.pop("cache", None) or SimulationCache()

    def grad_along(correction: bool) -> tuple[float, float, int]:
        kt = torch.tensor(k0, requires_grad=True)
        val = loss(simulate(grid, kt, protocol, cache=cache, correction=correction,
                            **simulate_kwargs))
        val.backward()
        g = kt.grad.numpy()  # type: ignore[union-attr]
        gv = np.where(np.isfinite(k0), g * k0, 0.0)
        return float(np.dot(gv, v)), float(val.detach()), cache.last.n_modes  # type: ignore[union-attr]

    dd, _, n0 = grad_along(True)
    info = cache.last

    def fun(t: float) -> tuple[float, int]:
        with torch.no_grad():
            kk = torch.tensor(np.where(np.isfinite(k0), k0 * np.exp(t * v), k0))
            val = float(loss(simulate(grid, kk, protocol, cache=cache, **simulate_kwargs)))
        return val, cache.last.n_modes  # type: ignore[union-attr]

    rep = fd_directional(fun, dd, steps=steps)
    out = GradientCheckReport(rep.derivative, rep.value, rep.rows)
    out.info = {
        "outer_boundary": info.outer_boundary if info else None,
        "n_modes": n0,
        "eigen_gap": info.eigen_gap if info else None,
        "eig_method": info.eig_method if info else None,
    }
    if frozen:
        ddf, _, _ = grad_along(False)
        ref = out.best_fd
        out.frozen_rel_error = abs(ddf - ref) / max(abs(ref), 1e-300)
        out.info["frozen_basis_rel_error"] = out.frozen_rel_error
    return out


def gradcheck_simulate(
    grid: TetGrid,
    kappa: np.ndarray,
    protocol: Protocol,
    *,
    eps: float = 1e-4,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    log_space: bool = True,
    **simulate_kwargs: Any,
) -> bool:
    """:func:`torch.autograd.gradcheck` of S(κ) (complex, all entries) on a small grid.

    With ``log_space`` the input is log κ (steps ``eps`` are relative changes of κ). The
    default ``eps`` = 1e-4 balances truncation against round-off: an eigenvalue is only
    known to ~1e-16·‖M⁻¹A‖, which the echo time amplifies (δλ·TE), so much smaller steps
    measure noise. Cost: two forward solves per face; use a grid with few faces.
    """
    cache = simulate_kwargs.pop("cache", None) or SimulationCache()
    x0 = np.log(kappa) if log_space else np.asarray(kappa, float)

    def f(x: torch.Tensor) -> torch.Tensor:
        k = torch.exp(x) if log_space else x
        return simulate(grid, k, protocol, cache=cache, **simulate_kwargs)

    x = torch.tensor(x0, requires_grad=True)
    return bool(torch.autograd.gradcheck(f, (x,), eps=eps, atol=atol, rtol=rtol,
                                         fast_mode=False))
