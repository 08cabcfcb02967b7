"""Batched action of the Bloch–Torrey propagator in a reduced (eigen) basis.

Computes, for many columns at once,

    y_gk = exp(−τ (Λ + i s_gk W_g)) v_gk,

with Λ = diag(λ) (1/µs, λ ≥ 0), W_g a real symmetric moment matrix (µm) of gradient
direction g, and s_gk = q·f a real gradient strength (1/(µm·µs)). The exponential is
expanded in Chebyshev polynomials on an ellipse that encloses the field of values of the
shifted, scaled operator (a rectangle known a priori from λ and the range of x·g over
the domain), so no small dense exponentials and no orthogonalisation are needed: only
batched matrix products. The degree is chosen from a bound on the series tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ive

#: Target bound on the Chebyshev tail, relative to ‖v‖.
DEFAULT_TOL = 1e-13
#: Safety factor on the tail bound (Crouzeix's constant for non-normal operators).
_CROUZEIX = 1.0 + np.sqrt(2.0)
#: Largest allowed log round-off growth of one substep's Chebyshev sum (e³ ≈ 20).
_MAX_LOG_GROWTH = 3.0


@dataclass(frozen=True)
class ChebyshevPlan:
    """Shift, scale and degree of one batched Chebyshev expansion.

    exp(X) = exp(c) · exp(h Z) with Z = (X − c)/h, expanded as
    exp(h z) = e^h [ive(0, h) + 2 Σ_k ive(k, h) T_k(z)].
    """

    shift: np.ndarray  # (G, K) complex c_gk of one substep
    scale: float  # h > 0 of one substep
    coeffs: np.ndarray  # (degree + 1,) real: e^{-h} I_k(h) with the factor 2 for k ≥ 1
    substeps: int = 1  # the interval τ is split into this many equal substeps

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1


def _ellipse_rho(zeta: complex) -> float:
    """Bernstein-ellipse parameter ρ ≥ 1 of the ellipse (foci ±1) through ``zeta``."""
    root = np.sqrt(zeta * zeta - 1.0 + 0j)
    return float(max(abs(zeta + root), abs(zeta - root), 1.0))


def plan_expansion(
    lam_min: float,
    lam_max: float,
    tau: float,
    strength: np.ndarray,
    centre: np.ndarray,
    half_range: np.ndarray,
    *,
    tol: float = DEFAULT_TOL,
    max_degree: int = 4000,
) -> ChebyshevPlan:
    """Plan exp(−τ(Λ + i s W_g)) for strengths ``strength`` (G, K) in 1/(µm·µs).

    ``centre`` and ``half_range`` (G,) bound x·g over the domain in µm: the field of
    values of W_g lies in centre ± half_range. When the imaginary (gradient) part
    dominates, τ is split into substeps so that the Chebyshev sums lose at most e³ to
    round-off.
    """
    s = np.asarray(strength, dtype=float)
    substeps = 1
    while True:
        plan = _plan_substep(lam_min, lam_max, tau / substeps, s, centre, half_range,
                             tol, max_degree)
        loss = plan[3]
        if loss <= _MAX_LOG_GROWTH or substeps >= 4096:
            shift, h, coeffs, _ = plan
            return ChebyshevPlan(shift=shift, scale=h, coeffs=coeffs, substeps=substeps)
        substeps = int(np.ceil(substeps * loss / _MAX_LOG_GROWTH))


def _plan_substep(
    lam_min: float, lam_max: float, tau: float, s: np.ndarray, centre: np.ndarray,
    half_range: np.ndarray, tol: float, max_degree: int,
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Shift, scale, coefficients and log of the round-off growth for one substep."""
    h_real = 0.5 * tau * (lam_max - lam_min)
    h_imag = tau * np.abs(s) * half_range[:, None]  # (G, K)
    r = float(h_imag.max(initial=0.0))
    h = max(h_real, 0.5 * r, 1e-6)
    shift = -0.5 * tau * (lam_min + lam_max) - 1j * tau * s * centre[:, None]
    rho = _ellipse_rho(complex(h_real / h, r / h))
    # The partial sums carry terms of size e^{h((ρ+1/ρ)/2 − 1)}: that much round-off.
    growth = h * (0.5 * (rho + 1.0 / rho) - 1.0)
    # Degree: smallest K with C Σ_{k>K} 2 ive(k, h) ρ^k ≤ tol (tail in log space).
    ks = np.arange(max_degree + 2)
    with np.errstate(divide="ignore", over="ignore"):
        logterm = np.log(2.0 * ive(ks, h)) + ks * np.log(rho)
    logterm = np.where(np.isfinite(logterm), logterm, -np.inf)
    rev = np.logaddexp.accumulate(logterm[::-1])[::-1]
    tail = np.append(rev[1:], -np.inf)
    ok = np.flatnonzero(tail + np.log(_CROUZEIX) <= np.log(tol))
    degree = max(int(ok[0]) if len(ok) else max_degree, 1)
    coeffs = 2.0 * ive(np.arange(degree + 1), h)
    coeffs[0] *= 0.5
    return shift, h, coeffs, growth


def _apply_w(wg: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Real (G, n, n) stack times complex (G, n, K) stack, as two real products."""
    k = v.shape[2]
    both = np.matmul(wg, np.concatenate([v.real, v.imag], axis=2))
    return both[:, :, :k] + 1j * both[:, :, k:]


def expm_action(
    lam: np.ndarray,
    wg: np.ndarray,
    tau: float,
    strength: np.ndarray,
    v0: np.ndarray,
    plan: ChebyshevPlan,
) -> np.ndarray:
    """exp(−τ(diag(λ) + i s_gk W_g)) v0[g, :, k] for every (g, k).

    ``lam`` (n,) 1/µs, ``wg`` (G, n, n) µm, ``strength`` (G, K) 1/(µm·µs), ``v0``
    (G, n, K) complex or real. Returns (G, n, K) complex.
    """
    h = plan.scale
    c = plan.shift[:, None, :]  # (G, 1, K)
    lam_col = lam[None, :, None]
    s = strength[:, None, :]
    tau_step = tau / plan.substeps

    def z_apply(v: np.ndarray) -> np.ndarray:
        xv = -tau_step * (lam_col * v + 1j * s * _apply_w(wg, v))
        return (xv - c * v) / h

    y = np.asarray(v0, dtype=complex)
    for _ in range(plan.substeps):
        t_prev = y
        y = plan.coeffs[0] * t_prev
        if plan.degree >= 1:
            t_cur = z_apply(t_prev)
            y = y + plan.coeffs[1] * t_cur
            for k in range(2, plan.degree + 1):
                t_next = 2.0 * z_apply(t_cur) - t_prev
                y += plan.coeffs[k] * t_next
                t_prev, t_cur = t_cur, t_next
        y = np.exp(c + h) * y
    return y
