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


@dataclass
class ChebyshevTape:
    """Inputs of each substep (list of (G, C, n) complex) and, when kept, the forward
    vectors t_0 … t_{K−1} of each substep as real (G, K, 2, C, n) arrays (real and
    imaginary parts; None: recomputed by the reverse mode)."""

    inputs: list[np.ndarray]
    t: list[np.ndarray] | None


class ChebyshevBlock:
    """exp(−τ(Λ + i s_gk W_g)) acting on columns stored as rows, (G, C, n).

    ``lam`` (n,) 1/µs, ``wg`` (G, n, n) µm, ``strength`` (G, C) 1/(µm·µs), ``shift`` (G, C)
    complex (of one substep) and ``plan`` (scale, coefficients, substeps) from
    :func:`plan_expansion`, kept fixed, so that the reverse mode
    (:func:`spinverse.autodiff.vjp.chebyshev_vjp`) is that of the polynomial evaluated.
    """

    def __init__(
        self,
        lam: np.ndarray,
        wg: np.ndarray,
        tau: float,
        strength: np.ndarray,
        shift: np.ndarray,
        plan: ChebyshevPlan,
    ) -> None:
        self.lam, self.wg = lam, wg
        self.substeps = int(plan.substeps)
        self.tau = float(tau) / self.substeps  # one substep
        self.s = np.asarray(strength, dtype=float)
        self.shift = np.asarray(shift, dtype=complex)
        self.h = float(plan.scale)
        self.coeffs = plan.coeffs
        h = self.h
        # Z v = D ∘ v + E ∘ (W_g v);  Zᴴ = conj(Z) (Z is complex symmetric).
        self.d = (-self.tau * lam[None, None, :] - self.shift[:, :, None]) / h  # (G, C, n)
        self.e = (-1j * self.tau / h) * self.s[:, :, None]  # (G, C, 1)
        self.dc = np.conj(self.d)
        self.ec = np.conj(self.e)
        self.factor = np.exp(self.shift + self.h)[:, :, None]  # (G, C, 1)

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def w(self, v: np.ndarray) -> np.ndarray:
        """v W_g (= (W_g v)ᵀ, W_g symmetric) for complex (G, C, n), as one real product."""
        ncol = v.shape[1]
        out = np.matmul(np.concatenate([v.real, v.imag], axis=1), self.wg)
        return out[:, :ncol] + 1j * out[:, ncol:]

    def z(self, v: np.ndarray) -> np.ndarray:
        """The shifted, scaled operator Z applied to ``v`` (G, C, n)."""
        return self.d * v + self.e * self.w(v)

    def zh(self, v: np.ndarray) -> np.ndarray:
        """Zᴴ applied to ``v`` (G, C, n)."""
        return self.dc * v + self.ec * self.w(v)

    def new_tape(self, g: int, ncol: int) -> np.ndarray:
        """Empty real (G, K, 2, C, n) storage for the vectors of one substep."""
        return np.empty((g, self.degree, 2, ncol, len(self.lam)))

    def step(self, v0: np.ndarray, tape: np.ndarray | None) -> np.ndarray:
        """One substep exp(…) v0, storing t_0 … t_{K−1} in ``tape`` when given."""
        c = self.coeffs
        t_prev = np.asarray(v0, dtype=complex)
        y = c[0] * t_prev
        if tape is not None:
            tape[:, 0, 0], tape[:, 0, 1] = t_prev.real, t_prev.imag
        t_cur = self.z(t_prev)
        y += c[1] * t_cur
        for k in range(2, self.degree + 1):
            if tape is not None:
                tape[:, k - 1, 0], tape[:, k - 1, 1] = t_cur.real, t_cur.imag
            t_next = self.z(t_cur)
            t_next *= 2.0
            t_next -= t_prev
            y += c[k] * t_next
            t_prev, t_cur = t_cur, t_next
        y *= self.factor
        return y

    def forward(self, v0: np.ndarray, keep_tape: bool) -> tuple[np.ndarray, ChebyshevTape]:
        """(exp(…) v0, tape) for ``v0`` (G, C, n). The tape always holds the substep
        inputs, and the recurrence vectors when ``keep_tape``."""
        g, ncol, _ = v0.shape
        y = np.asarray(v0, dtype=complex)
        inputs: list[np.ndarray] = []
        tapes: list[np.ndarray] | None = [] if keep_tape else None
        for _ in range(self.substeps):
            inputs.append(y)
            t = self.new_tape(g, ncol) if keep_tape else None
            y = self.step(y, t)
            if tapes is not None and t is not None:
                tapes.append(t)
        return y, ChebyshevTape(inputs, tapes)


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
    block = ChebyshevBlock(lam, wg, tau, strength, plan.shift, plan)
    y, _ = block.forward(np.ascontiguousarray(np.swapaxes(v0, 1, 2), dtype=complex), False)
    return np.swapaxes(y, 1, 2)
