"""The analytic reference: exact matrix-formalism PGSE signals for domains with known Laplace
eigenfunctions (slab, two permeable slabs, disk, ball), the simulator's cross-check.

Units: length µm, time µs, diffusivity D µm²/µs, permeability κ µm/µs, eigenvalues λ 1/µs,
b-values s/mm² (numerically equal to µs/µm², so b·D is dimensionless), q = γG 1/(µm·µs).

Every domain is reduced to its eigen-data (:class:`EigenData`): the Neumann (or permeable)
Laplace eigenvalues ``λ_k = D·k²``, the moment matrix ``B_jk = ∫ x φ_j φ_k`` of the coordinate
along the gradient in the orthonormal eigenbasis, and ``ν0_k = ∫ φ_k`` (uniform initial
magnetisation ρ = 1). One routine, :func:`matrix_formalism_pgse`, then propagates

    S(b) = ν0ᵀ E1ᴴ E2 E1 ν0,  E1 = expm(−δ(Λ + i q B)),  E2 = expm(−(Δ − δ)Λ),

with ``q`` from ``b = q² δ² (Δ − δ/3)``, and returns ``E(b) = |S(b)| / |S(0)|``.
Since ``E1`` is complex symmetric and ν0 real, ``S = wᴴ E2 w`` with ``w = E1 ν0`` is real and
non-negative. Shifting the coordinate origin multiplies E1 by a phase that cancels against
E1ᴴ, so the moment matrices are built about the domain centre (smaller ``‖qB‖``).

Domains: free diffusion, the impermeable slab (gradient ⟂ plates), the disk / cylinder
(gradient ⟂ axis; ``J_n(α r/R) cos nθ``, ``J_n'(α) = 0``), the ball (``j_l(α r/R) P_l(cos θ)``,
``j_l'(α) = 0``) and two slabs ``[0, a] ∪ [a, a + b]`` joined by a membrane of permeability κ
at ``x = a`` (eigen-equation ``D k sin(ka) sin(kb) = κ sin(k(a + b))``). Unless a mode count is
given, every series is truncated adaptively (always at a gap in the spectrum) until the
signal changes by less than ``tol`` (1e-9 by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg, optimize, special
from threadpoolctl import threadpool_limits

from spinverse.errors import ProtocolError, SolverError

__all__ = [
    "EigenData",
    "matrix_formalism_pgse",
    "pgse_adc",
    "free_signal",
    "slab_eigendata",
    "slab_signal",
    "disk_eigendata",
    "cylinder_signal",
    "ball_eigendata",
    "sphere_signal",
    "two_slab_eigenvalues",
    "two_slab_eigendata",
    "two_slab_signal",
    "exchange_rate",
    "moment_sum",
    "truncated_moment_sum",
    "bessel_derivative_zeros",
]

Domain = Literal["slab", "disk", "ball"]

#: Default convergence tolerance of the adaptive truncation (absolute, on E).
_TOL = 1e-9
#: Eigenvalues closer than this (relative) are treated as one cluster when truncating.
_GAP_RTOL = 1e-6
#: Hard cap on the number of modes the adaptive truncation may use.
_MAX_MODES = 4000


@dataclass(frozen=True)
class EigenData:
    """Eigen-data of a domain in an orthonormal eigenbasis.

    ``eigvals`` λ_k (1/µs, ascending, shape (n,)); ``moment`` B_jk = ∫ x φ_j φ_k (µm, (n, n),
    coordinate along the gradient measured from the domain centre); ``nu0`` ν0_k = ∫ φ_k
    (µm^(d/2) for a d-dimensional domain, (n,)); ``volume`` |Ω| (µm^d).
    """

    eigvals: np.ndarray
    moment: np.ndarray
    nu0: np.ndarray
    volume: float

    @property
    def n_modes(self) -> int:
        """Number of modes kept."""
        return int(self.eigvals.size)


# --------------------------------------------------------------------------- validation


def _positive(value: float, name: str) -> float:
    x = float(value)
    if not (x > 0) or math.isinf(x):
        raise ProtocolError(f"must be a positive finite number, got {value!r}", field=name)
    return x


def _check_pgse(delta_us: float, Delta_us: float) -> tuple[float, float]:
    delta = _positive(delta_us, "delta_us")
    Delta = _positive(Delta_us, "Delta_us")
    if delta > Delta:
        raise ProtocolError(
            f"delta > Delta ({delta} µs > {Delta} µs): the pulses would overlap",
            field="delta_us",
        )
    return delta, Delta


def _check_bvalues(bvalues: ArrayLike) -> np.ndarray:
    b = np.asarray(bvalues, dtype=float)
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ProtocolError("b-values must be finite and >= 0 s/mm²", field="bvalues")
    return b


def _check_kappa(kappa: float) -> float:
    k = float(kappa)
    if math.isnan(k) or k < 0:
        raise ProtocolError(f"kappa must be >= 0 µm/µs (or inf), got {kappa!r}", field="kappa")
    return k


# --------------------------------------------------------------------------- propagation


def matrix_formalism_pgse(
    eigvals: ArrayLike,
    moment: ArrayLike,
    nu0: ArrayLike,
    bvalues: ArrayLike,
    delta_us: float,
    Delta_us: float,
    *,
    n_exact: int | None = None,
) -> np.ndarray:
    """Normalised PGSE signal E(b) = |S(b)| / |S(0)| from eigen-data (matrix formalism).

    ``eigvals`` λ_k in 1/µs, ``moment`` B (µm, real symmetric), ``nu0`` ν0 = ∫ φ_k,
    ``bvalues`` in s/mm² (= µs/µm²), δ = ``delta_us`` and Δ = ``Delta_us`` in µs.
    S = ν0ᵀ E1ᴴ E2 E1 ν0 with E1 = expm(−δ(Λ + iqB)), E2 = expm(−(Δ−δ)Λ),
    q = sqrt(b / (δ²(Δ − δ/3))) in 1/(µm·µs). Returns an array shaped like ``bvalues``.

    ``n_exact``: propagate only the first ``n_exact`` modes (P) exactly and eliminate the
    others (Q) adiabatically: during a pulse they follow P quasi-statically, which adds
    q² B_PQ Λ_Q⁻¹ B_QP to the pulse generator (second order in q B / λ_Q; use it only when
    λ_Q δ ≫ 1, and ν0 must vanish on Q). Default: all modes exactly.
    """
    delta, Delta = _check_pgse(delta_us, Delta_us)
    b = _check_bvalues(bvalues)
    lam = np.asarray(eigvals, dtype=float)
    B = np.asarray(moment, dtype=float)
    v0 = np.asarray(nu0, dtype=float)
    n = lam.size
    if B.shape != (n, n) or v0.shape != (n,):
        raise ValueError(
            f"inconsistent shapes: eigvals {lam.shape}, moment {B.shape}, nu0 {v0.shape}"
        )
    p = n if n_exact is None else max(1, min(int(n_exact), n))
    return _propagate(lam, B[:p], v0, b, delta, Delta)


def _propagate(
    lam: np.ndarray,
    B_top: np.ndarray,
    v0: np.ndarray,
    b: np.ndarray,
    delta: float,
    Delta: float,
) -> np.ndarray:
    """Matrix formalism with the first p = B_top.shape[0] modes exact, the rest adiabatic."""
    p, n = B_top.shape
    s0 = float(np.sum(np.exp(-(Delta + delta) * lam) * v0 * v0))
    if not s0 > 0:
        raise SolverError("S(b=0) vanishes: nu0 carries no signal")
    lam_p, B_pp, v0_p = lam[:p], B_top[:, :p], v0[:p]
    tail = np.zeros((p, p))
    if p < n:
        lam_q, B_pq = lam[p:], B_top[:, p:]
        if np.any(lam_q <= 0) or np.linalg.norm(v0[p:]) > 1e-12 * np.linalg.norm(v0):
            raise ValueError("eliminated modes must have lambda > 0 and nu0 = 0")
        tail = (B_pq / lam_q) @ B_pq.T
    decay = np.exp(-(Delta - delta) * lam_p)  # diagonal of E2
    factor = delta * delta * (Delta - delta / 3.0)  # µs³

    def signal(bi: float) -> float:
        q = math.sqrt(bi / factor)
        H = np.diag(lam_p) + 1j * q * B_pp + (q * q) * tail
        w = linalg.expm(-delta * H) @ v0_p
        return float(np.real(np.vdot(w, decay * w)))

    # small dense matrices are latency-bound: one BLAS thread avoids oversubscription
    with threadpool_limits(limits=1, user_api="blas"):
        flat = np.array([abs(signal(bi)) / s0 if bi > 0 else 1.0 for bi in b.ravel()])
    return flat.reshape(b.shape)


def pgse_adc(eig: EigenData, delta_us: float, Delta_us: float) -> float:
    """Low-b apparent diffusivity ADC = −dE/db at b = 0 (µm²/µs) of the eigen-data.

    Exact second order in q: ADC = Σ_k c_k² G(λ_k) / (|ν0|² δ²(Δ − δ/3)), c = Bν0,
    G(λ) = 2/λ² [λδ − 1 + e^{−λδ} − e^{−λΔ}(cosh λδ − 1)] (µs³), G(0) = 0, with δ, Δ in µs.
    Requires ν0 in the null space of Λ (reflecting or permeable walls).
    """
    delta, Delta = _check_pgse(delta_us, Delta_us)
    lam, v0 = eig.eigvals, eig.nu0
    scale = np.linalg.norm(v0)
    if np.any((np.abs(v0) > 1e-12 * scale) & (lam > 1e-14 * max(lam.max(), 1e-300))):
        raise SolverError("pgse_adc needs nu0 in the null space of the eigenvalues")
    c = eig.moment @ v0
    x = lam * delta
    xs = np.minimum(x, 1.0)
    # e^{−λΔ}(cosh λδ − 1): sinh form for small λδ (no cancellation), exponentials otherwise
    cross = np.where(
        x < 1.0,
        np.exp(-lam * Delta) * 2.0 * np.sinh(0.5 * xs) ** 2,
        0.5 * (np.exp(-lam * (Delta - delta)) + np.exp(-lam * (Delta + delta)))
        - np.exp(-lam * Delta),
    )
    bracket = np.expm1(-x) + x - cross
    safe = np.where(lam > 0, lam, 1.0)
    G = np.where(lam > 0, 2.0 * bracket / safe**2, 0.0)
    return float(np.sum(c * c * G) / (v0 @ v0) / (delta * delta * (Delta - delta / 3.0)))


def free_signal(bvalues: ArrayLike, diffusivity: float) -> np.ndarray:
    """Free (unbounded) diffusion E(b) = exp(−b D); b in s/mm², D in µm²/µs."""
    D = _positive(diffusivity, "diffusivity")
    return np.exp(-_check_bvalues(bvalues) * D)


# --------------------------------------------------------------------------- truncation


def _cut_at_gap(eigvals: np.ndarray, n: int) -> int:
    """Smallest n' ≥ n such that eigvals[n'] is not in the cluster of eigvals[n' − 1]."""
    n = max(1, min(n, eigvals.size))
    while n < eigvals.size and eigvals[n] - eigvals[n - 1] <= _GAP_RTOL * abs(eigvals[n - 1]):
        n += 1
    return n


#: make(n, choose_p) -> (λ, B[:p], ν0) for n modes with p = choose_p(λ) exact rows.
Builder = Callable[[int, Callable[[np.ndarray], int]], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _signal(
    make: Builder,
    bvalues: ArrayLike,
    delta_us: float,
    Delta_us: float,
    n_modes: int | None,
    tol: float,
    *,
    n_start: int,
    ratio: int,
    what: str,
) -> np.ndarray:
    """E(b) with ``n_modes`` modes all propagated exactly, or adaptively (``n_modes=None``).

    Adaptive: of n modes, propagate exactly the lowest n/ratio and every mode with
    λδ < 3 (not damped within one pulse), cut at a gap; fold the others in adiabatically
    (their error shrinks with n like the truncation error); grow n by 1.5× until two
    successive E differ by ≤ ``tol``. Convergence is algebraic in n, fast when the pulse
    phase q·δ·size is a few radians (the benchmark protocols) and slow for short strong
    pulses; past _MAX_MODES a SolverError reports the change reached.
    """
    delta, Delta = _check_pgse(delta_us, Delta_us)
    b = _check_bvalues(bvalues)
    if n_modes is not None:
        if int(n_modes) < 1:
            raise ValueError(f"n_modes must be >= 1, got {n_modes}")
        return _propagate(*make(int(n_modes), lambda lam: lam.size), b, delta, Delta)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    lam_exact = 3.0 / delta

    def compute(n: int) -> np.ndarray:
        def choose_p(lam: np.ndarray) -> int:
            return _cut_at_gap(lam, max(n // ratio, int(np.sum(lam < lam_exact)), 2))

        return _propagate(*make(n, choose_p), b, delta, Delta)

    n = n_start
    prev = compute(n)
    change = math.inf
    while n < _MAX_MODES:
        n = min(int(math.ceil(1.5 * n)), _MAX_MODES)
        cur = compute(n)
        change = float(np.max(np.abs(cur - prev), initial=0.0))
        if change <= tol:
            return cur
        prev = cur
    raise SolverError(
        f"{what}: eigen series not converged to tol={tol:g} with {n} modes (last change "
        f"{change:.2g}); short pulses with a large phase qδ·size need many modes: loosen tol "
        "or fix n_modes"
    )


def _full(build: Callable[[int], EigenData]) -> Builder:
    """Builder from an EigenData factory (full moment matrix, rows sliced afterwards)."""

    def make(
        n: int, choose_p: Callable[[np.ndarray], int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = build(n)
        return e.eigvals, e.moment[: choose_p(e.eigvals)], e.nu0

    return make


# --------------------------------------------------------------------------- 1-D: slabs


def _cos_integrals(c: float, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∫₀ᶜ cos(ux)cos(vx) dx, ∫₀ᶜ x cos(ux)cos(vx) dx) for all pairs (broadcast), smooth in u−v."""

    def j0(w: np.ndarray) -> np.ndarray:  # ∫₀ᶜ cos(wx) dx
        return c * np.sinc(w * c / np.pi)

    def j1(w: np.ndarray) -> np.ndarray:  # ∫₀ᶜ x cos(wx) dx
        return c * c * (np.sinc(w * c / np.pi) - 0.5 * np.sinc(w * c / (2 * np.pi)) ** 2)

    dif, tot = u - v, u + v
    return 0.5 * (j0(dif) + j0(tot)), 0.5 * (j1(dif) + j1(tot))


def _piecewise_cos_eigendata(
    a: float, b: float, k: np.ndarray, A: np.ndarray, C: np.ndarray, diffusivity: float
) -> EigenData:
    """Eigen-data of φ_j = A_j cos(k_j x) on [0, a], C_j cos(k_j (a + b − x)) on [a, a + b].

    A, C need not be normalised; the moment is about the centre x = (a + b)/2.
    """
    L = a + b
    u, v = k[:, None], k[None, :]
    i0a, i1a = _cos_integrals(a, u, v)
    i0b, i1b = _cos_integrals(b, u, v)
    AA, CC = A[:, None] * A[None, :], C[:, None] * C[None, :]
    gram = AA * i0a + CC * i0b
    # left: ∫₀ᵃ (x − L/2)…; right, with y = L − x: ∫₀ᵇ (L/2 − y)…
    Bm = AA * (i1a - 0.5 * L * i0a) + CC * (0.5 * L * i0b - i1b)
    norm = np.sqrt(np.diag(gram))
    Bm = Bm / np.outer(norm, norm)
    Bm = 0.5 * (Bm + Bm.T)
    nu0 = (A * a * np.sinc(k * a / np.pi) + C * b * np.sinc(k * b / np.pi)) / norm
    nu0 = np.where(k == 0, nu0, 0.0)  # ∫φ_k = 0 exactly for k > 0 (flux conservation)
    return EigenData(diffusivity * k * k, Bm, nu0, L)


def slab_eigendata(width_um: float, diffusivity: float, *, n_modes: int) -> EigenData:
    """Impermeable slab [0, L] (L = ``width_um`` µm), D µm²/µs: λ_j = D(jπ/L)², j < n_modes."""
    L = _positive(width_um, "width_um")
    D = _positive(diffusivity, "diffusivity")
    k = np.arange(int(n_modes)) * np.pi / L
    return _piecewise_cos_eigendata(L, 0.0, k, np.ones_like(k), np.zeros_like(k), D)


def slab_signal(width_um: float, bvalues: ArrayLike, delta_us: float, Delta_us: float,
                diffusivity: float, *, n_modes: int | None = None,
                tol: float = _TOL) -> np.ndarray:
    """PGSE E(b) in an impermeable slab of width ``width_um`` µm, gradient ⟂ plates.

    b in s/mm², δ, Δ in µs, D in µm²/µs; ``n_modes`` fixes the truncation, otherwise it grows
    until E changes by ≤ ``tol``.
    """
    return _signal(_full(lambda n: slab_eigendata(width_um, diffusivity, n_modes=n)),
                   bvalues, delta_us, Delta_us, n_modes, tol, n_start=64, ratio=4,
                   what="slab")


# ----------------------------------------------------------- 1-D: two permeable slabs


@dataclass(frozen=True)
class _Pole:
    k: float  # 1/µm
    na: int | None  # k = na·π/a, or None
    nb: int | None  # k = nb·π/b, or None


def _two_slab_poles(a: float, b: float, count: int) -> list[_Pole]:
    """The first ``count`` distinct poles of cot(ka) + cot(kb) (k ≥ 0), common ones merged."""
    kmax = (count + 2) * np.pi / min(a, b)
    na_max, nb_max = int(kmax * a / np.pi) + 1, int(kmax * b / np.pi) + 1
    tagged = sorted(
        [(n * np.pi / a, n, "a") for n in range(na_max + 1)]
        + [(m * np.pi / b, m, "b") for m in range(nb_max + 1)]
    )
    poles: list[_Pole] = []
    i = 0
    while i < len(tagged) and len(poles) < count:
        k, n, side = tagged[i]
        if i + 1 < len(tagged) and tagged[i + 1][2] != side:
            k2, n2, _ = tagged[i + 1]
            na, nb = (n, n2) if side == "a" else (n2, n)
            if math.isclose(na * b, nb * a, rel_tol=1e-13, abs_tol=0.0):
                poles.append(_Pole(na * np.pi / a, na, nb))
                i += 2
                continue
        poles.append(_Pole(k, n if side == "a" else None, n if side == "b" else None))
        i += 1
    return poles


def _phase(length: float, pole: _Pole, n: int | None, t: float) -> tuple[float, float]:
    """(sin, cos) of length·(pole.k + t), accurate in t near a pole of that side."""
    if n is None:
        x = length * (pole.k + t)
        return math.sin(x), math.cos(x)
    sign = -1.0 if n % 2 else 1.0
    return sign * math.sin(length * t), sign * math.cos(length * t)


def _two_slab_modes(
    a: float, b: float, kappa: float, diffusivity: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, A, C) of the n lowest modes of the two-slab domain, 0 < κ < ∞.

    Between consecutive distinct poles p_i < p_{i+1} of cot(ka) + cot(kb), the function
    G(k) = cot(ka) + cot(kb) − D k/κ decreases from +∞ to −∞: exactly one root. Common poles
    (sin ka = sin kb = 0, including k = 0) are roots themselves. So near-degenerate pairs at
    small κ (a root just above a common pole) are bracketed exactly.
    """
    D = diffusivity
    poles = _two_slab_poles(a, b, n + 2)
    ks: list[float] = []
    As: list[float] = []
    Cs: list[float] = []
    for i, p in enumerate(poles[:-1]):
        if p.na is not None and p.nb is not None:  # common pole: a root itself
            sa_sign = -1.0 if p.na % 2 else 1.0
            sb_sign = -1.0 if p.nb % 2 else 1.0
            ks.append(p.k)
            As.append(sb_sign)  # A cos ka = C cos kb with cos ka = ±1, cos kb = ±1
            Cs.append(sa_sign)
        h = poles[i + 1].k - p.k

        def G(t: float, p: _Pole = p) -> float:
            sa, ca = _phase(a, p, p.na, t)
            sb, cb = _phase(b, p, p.nb, t)
            return ca / sa + cb / sb - D * (p.k + t) / kappa

        lo, hi = 0.5 * h, 0.5 * h
        while G(lo) <= 0:
            hi, lo = lo, lo / 8.0
            if lo < 1e-300:
                raise SolverError(f"two-slab root not bracketed near k = {p.k} (kappa={kappa})")
        while G(hi) >= 0:
            lo, hi = hi, h - (h - hi) / 8.0
            if h - hi < 1e-15 * h:
                raise SolverError(f"two-slab root not bracketed below k = {poles[i + 1].k}")
        t = optimize.brentq(G, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
        sa, _ = _phase(a, p, p.na, t)
        sb, _ = _phase(b, p, p.nb, t)
        ks.append(p.k + t)
        As.append(sb)  # A sin ka + C sin kb = 0 (flux continuity)
        Cs.append(-sa)
    k = np.asarray(ks)
    order = np.argsort(k, kind="stable")[:n]
    return k[order], np.asarray(As)[order], np.asarray(Cs)[order]


def _two_slab_kAC(
    a: float, b: float, kappa: float, diffusivity: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if kappa == 0.0:  # two decoupled slabs: union of both spectra (double zero eigenvalue)
        ka = np.arange(n) * np.pi / a
        kb = np.arange(n) * np.pi / b
        k = np.concatenate([ka, kb])
        A = np.concatenate([np.ones(n), np.zeros(n)])
        C = np.concatenate([np.zeros(n), np.ones(n)])
        order = np.argsort(k, kind="stable")[:n]
        return k[order], A[order], C[order]
    if math.isinf(kappa):  # one slab of width a + b: cos(kx) = (−1)^j cos(k(L − x))
        j = np.arange(n)
        return j * np.pi / (a + b), np.ones(n), np.where(j % 2, -1.0, 1.0)
    return _two_slab_modes(a, b, kappa, diffusivity, n)


def two_slab_eigenvalues(
    a_um: float, b_um: float, kappa: float, diffusivity: float, n: int
) -> np.ndarray:
    """The n lowest eigenvalues λ = D k² (1/µs) of slabs [0, a] ∪ [a, a + b] (µm).

    Membrane of permeability ``kappa`` (µm/µs) at x = a, reflecting walls, D µm²/µs.
    Roots of D k sin(ka) sin(kb) = κ sin(k(a + b)); κ = 0 gives the union of both slabs'
    spectra (λ = 0 twice), κ = inf the spectrum of one slab of width a + b.
    """
    a, b = _positive(a_um, "a_um"), _positive(b_um, "b_um")
    D = _positive(diffusivity, "diffusivity")
    k, _, _ = _two_slab_kAC(a, b, _check_kappa(kappa), D, int(n))
    return D * k * k


def two_slab_eigendata(
    a_um: float, b_um: float, kappa: float, diffusivity: float, *, n_modes: int
) -> EigenData:
    """Eigen-data (n_modes lowest modes) of the permeable two-slab domain; see
    :func:`two_slab_eigenvalues`. Moment about the centre x = (a + b)/2 µm."""
    a, b = _positive(a_um, "a_um"), _positive(b_um, "b_um")
    D = _positive(diffusivity, "diffusivity")
    k, A, C = _two_slab_kAC(a, b, _check_kappa(kappa), D, int(n_modes) + 4)
    n = _cut_at_gap(D * k * k, int(n_modes))
    return _piecewise_cos_eigendata(a, b, k[:n], A[:n], C[:n], D)


def two_slab_signal(a_um: float, b_um: float, kappa: float, bvalues: ArrayLike,
                    delta_us: float, Delta_us: float, diffusivity: float, *,
                    n_modes: int | None = None, tol: float = _TOL) -> np.ndarray:
    """PGSE E(b) for two slabs [0, a] ∪ [a, a + b] µm joined by a membrane κ µm/µs at x = a.

    Gradient along x, reflecting outer walls; b in s/mm², δ, Δ in µs, D in µm²/µs.
    ``kappa`` may be 0 (decoupled slabs) or ``inf`` (one slab).
    """
    return _signal(
        _full(lambda n: two_slab_eigendata(a_um, b_um, kappa, diffusivity, n_modes=n)),
        bvalues, delta_us, Delta_us, n_modes, tol, n_start=64, ratio=4, what="two-slab")


def exchange_rate(a: float, b: float, kappa: float, D: float) -> float:
    """Smallest non-zero eigenvalue λ2 (1/µs) of the two-slab domain (a, b µm; κ µm/µs;
    D µm²/µs). For κ·ℓ/D ≪ 1 it tends to κ(1/a + 1/b); 0 for κ = 0, D(π/(a + b))² for κ = inf.
    """
    kappa = _check_kappa(kappa)
    if kappa == 0.0:
        return 0.0
    lam = two_slab_eigenvalues(a, b, kappa, D, 2)
    return float(lam[1])


# --------------------------------------------------------------------------- disk and ball


def _bessel(order: np.ndarray, x: np.ndarray, spherical: bool) -> tuple[np.ndarray, ...]:
    """(f, f', f'') for f = J_n (or j_l) at x > 0, from the Bessel equation."""
    if spherical:
        f = special.spherical_jn(order, x)
        d1 = special.spherical_jn(order, x, derivative=True)
        d2 = -2.0 * d1 / x - (1.0 - order * (order + 1) / x**2) * f
    else:
        f = special.jv(order, x)
        d1 = special.jvp(order, x)
        d2 = -d1 / x - (1.0 - (order / x) ** 2) * f
    return f, d1, d2


#: Largest zero table computed so far, per kind (spherical?): (x_max, order, α).
_ZEROS: dict[bool, tuple[float, np.ndarray, np.ndarray]] = {}


def _all_derivative_zeros(x_max: float, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(order, α) of every zero 0 < α ≤ x_max of J_n' (or j_l'), all orders (cached)."""
    cached = _ZEROS.get(spherical)
    if cached is None or cached[0] < x_max:
        top = max(x_max, 1.5 * cached[0]) if cached is not None else x_max
        cached = (top, *_compute_derivative_zeros(top, spherical))
        _ZEROS[spherical] = cached
    _, order, alpha = cached
    keep = alpha <= x_max
    return order[keep], alpha[keep]


def _compute_derivative_zeros(x_max: float, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(order, α) of every zero 0 < α ≤ x_max of J_n' (or j_l'), all orders.

    Disk: scipy's ``jnp_zeros`` per order. Ball, vectorised over all orders: every zero of
    j_l' exceeds l (l ≥ 1) and consecutive ones are more than π apart, so a 0.5 grid from
    0.9·l brackets each alone; bisection then bracket-safeguarded Newton steps reach
    round-off.
    """
    if not spherical:
        orders, zeros = [], []
        for n in range(int(x_max) + 1):
            nt = int((x_max - n) / np.pi) + 2
            z = special.jnp_zeros(n, nt)
            while z[-1] <= x_max:
                nt *= 2
                z = special.jnp_zeros(n, nt)
            z = z[z <= x_max]
            orders.append(np.full(z.size, n))
            zeros.append(z)
        return np.concatenate(orders), np.concatenate(zeros)
    orders, grids = [], []
    for n in range(int(x_max) + 1):
        g = np.arange(max(0.9 * n, 0.5), x_max + 0.5, 0.5)
        if g.size >= 2:
            orders.append(np.full(g.size, n))
            grids.append(g)
    if not grids:
        return np.zeros(0, dtype=int), np.zeros(0)
    order, x = np.concatenate(orders), np.concatenate(grids)
    f = _bessel(order, x, spherical)[1]
    i = np.nonzero((order[:-1] == order[1:]) & (np.sign(f[:-1]) * np.sign(f[1:]) < 0))[0]
    nn, lo, hi, flo = order[i], x[i], x[i + 1], f[i]
    for _ in range(7):  # bisect to a 0.004-wide bracket
        mid = 0.5 * (lo + hi)
        fm = _bessel(nn, mid, spherical)[1]
        left = np.sign(fm) == np.sign(flo)
        lo, flo, hi = np.where(left, mid, lo), np.where(left, fm, flo), np.where(left, hi, mid)
    root = 0.5 * (lo + hi)
    for _ in range(12):  # Newton on f', shrinking the bracket; a step leaving it bisects
        _, d1, d2 = _bessel(nn, root, spherical)
        left = np.sign(d1) == np.sign(flo)
        lo, flo = np.where(left, root, lo), np.where(left, d1, flo)
        hi = np.where(left, hi, root)
        new = root - d1 / np.where(d2 != 0, d2, 1.0)
        inside = (new >= lo) & (new <= hi) & (d2 != 0)
        root = np.where(d1 == 0, root, np.where(inside, new, 0.5 * (lo + hi)))
    keep = root <= x_max
    return nn[keep], root[keep]


def bessel_derivative_zeros(order: int, x_max: float, *, spherical: bool = False) -> np.ndarray:
    """Positive zeros α ≤ x_max of J_n'(α) (or j_l'(α) if ``spherical``), ascending.

    The trivial zero α = 0 (the constant mode of n = l = 0) is not included.
    """
    nn, root = _all_derivative_zeros(max(float(x_max), float(order) + 1.0), spherical)
    z = np.sort(root[nn == order])
    return z[z <= x_max]


def _radial_modes(n_modes: int, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(order, α) of the n_modes lowest modes (extended to a gap) of the cos nθ / m = 0
    family, the constant mode (0, 0) first."""
    x_max = 1.12 * math.sqrt(2.0 * np.pi * n_modes) + 6.0  # ≈ n_modes zeros lie below
    while True:
        order, alpha = _all_derivative_zeros(x_max, spherical)
        if alpha.size >= n_modes + 2:
            break
        x_max *= 1.2
    order = np.concatenate([[0], order])
    alpha = np.concatenate([[0.0], alpha])
    perm = np.argsort(alpha, kind="stable")
    order, alpha = order[perm], alpha[perm]
    n = _cut_at_gap(alpha * alpha, n_modes)
    return order[:n], alpha[:n]


def _radial_data(
    radius_um: float,
    diffusivity: float,
    n_modes: int,
    choose_p: Callable[[np.ndarray], int] | None,
    *,
    spherical: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ, B[:p], ν0), p = choose_p(λ) (all if None), for the disk (cos nθ J_n modes, gradient
    along x) or the ball (P_l j_l modes, gradient along z); radial moments in closed form."""
    R = _positive(radius_um, "radius_um")
    D = _positive(diffusivity, "diffusivity")
    with threadpool_limits(limits=1, user_api="blas"):
        return _radial_data_impl(R, D, int(n_modes), choose_p, spherical)


def _radial_data_impl(
    R: float,
    D: float,
    n_modes: int,
    choose_p: Callable[[np.ndarray], int] | None,
    spherical: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order, alpha = _radial_modes(n_modes, spherical)
    lam = D * (alpha / R) ** 2
    p = alpha.size if choose_p is None else choose_p(lam)
    safe = np.where(alpha > 0, alpha, 1.0)
    if spherical:
        f_end = special.spherical_jn(order, alpha)  # j_l(α)
        # ∫₀¹ j_l(αs)² s² ds, and the shift m(m + 1) of the radial operator
        norm = np.sqrt(
            np.where(alpha > 0, 0.5 * (1 - order * (order + 1) / safe**2) * f_end**2, 1 / 3)
        )  # Y_l0 is normalised on the sphere
        lo = np.minimum(order[:p, None], order[None, :])
        angular = (lo + 1) / np.sqrt((2 * lo + 1) * (2 * lo + 3))  # ∫ cosθ Y_l0 Y_l+1,0 dΩ
        shift = 2.0 * lo * (lo + 2)
        volume = 4.0 / 3.0 * np.pi * R**3
    else:
        f_end = special.jv(order, alpha)  # J_n(α)
        radial_norm = np.where(alpha > 0, 0.5 * (1 - (order / safe) ** 2) * f_end**2, 0.5)
        norm = np.sqrt(radial_norm * np.where(order == 0, 2 * np.pi, np.pi))
        lo = np.minimum(order[:p, None], order[None, :])
        angular = np.where(lo == 0, np.pi, 0.5 * np.pi)  # ∫ cosθ cos nθ cos (n+1)θ dθ
        shift = 2.0 * lo * (lo + 1)
        volume = np.pi * R * R
    # Closed form (Green's identity + Lommel integrals), for J_n'(α) = J_{n+1}'(β) = 0:
    #   ∫₀¹ s² J_n(αs) J_{n+1}(βs) ds = J_n(α) J_{n+1}(β) (α² + β² − 2n(n+1)) / (β² − α²)²,
    #   ∫₀¹ s³ j_l(αs) j_{l+1}(βs) ds = j_l(α) j_{l+1}(β) (α² + β² − 2l(l+2)) / (β² − α²)².
    coupled = np.abs(order[:p, None] - order[None, :]) == 1
    a2, b2 = alpha[:p, None] ** 2, alpha[None, :] ** 2
    gap = np.where(coupled, (b2 - a2) ** 2, 1.0)
    radial = f_end[:p, None] * f_end[None, :] * (a2 + b2 - shift) / gap
    B = np.where(coupled, R * radial * angular, 0.0) / (norm[:p, None] * norm[None, :])
    nu0 = np.where(alpha == 0, math.sqrt(volume), 0.0)
    return lam, B, nu0


def disk_eigendata(radius_um: float, diffusivity: float, *, n_modes: int) -> EigenData:
    """Eigen-data of the disk of radius R µm (cylinder cross-section), gradient along x.

    Modes J_n(α r/R) cos nθ with J_n'(α) = 0 (the only ones reachable from the uniform state),
    λ = D α²/R² (1/µs), the n_modes lowest (extended to a gap).
    """
    lam, B, nu0 = _radial_data(radius_um, diffusivity, n_modes, None, spherical=False)
    return EigenData(lam, 0.5 * (B + B.T), nu0, math.pi * float(radius_um) ** 2)


def ball_eigendata(radius_um: float, diffusivity: float, *, n_modes: int) -> EigenData:
    """Eigen-data of the ball of radius R µm, gradient along z.

    Modes j_l(α r/R) P_l(cos θ) with j_l'(α) = 0 (m = 0, the only ones reachable),
    λ = D α²/R² (1/µs), the n_modes lowest (extended to a gap).
    """
    lam, B, nu0 = _radial_data(radius_um, diffusivity, n_modes, None, spherical=True)
    return EigenData(lam, 0.5 * (B + B.T), nu0, 4.0 / 3.0 * math.pi * float(radius_um) ** 3)


def _radial_signal(spherical: bool, radius_um: float, bvalues: ArrayLike, delta_us: float,
                   Delta_us: float, diffusivity: float, n_modes: int | None,
                   tol: float) -> np.ndarray:
    return _signal(
        lambda n, choose_p: _radial_data(radius_um, diffusivity, n, choose_p,
                                         spherical=spherical),
        bvalues, delta_us, Delta_us, n_modes, tol, n_start=320, ratio=8,
        what="sphere" if spherical else "cylinder",
    )


def cylinder_signal(radius_um: float, bvalues: ArrayLike, delta_us: float, Delta_us: float,
                    diffusivity: float, *, n_modes: int | None = None,
                    tol: float = _TOL) -> np.ndarray:
    """PGSE E(b) in an impermeable cylinder of radius ``radius_um`` µm, gradient ⟂ axis
    (b in s/mm², δ, Δ in µs, D in µm²/µs; adaptive truncation to ``tol`` unless
    ``n_modes``)."""
    return _radial_signal(False, radius_um, bvalues, delta_us, Delta_us, diffusivity,
                          n_modes, tol)


def sphere_signal(radius_um: float, bvalues: ArrayLike, delta_us: float, Delta_us: float,
                  diffusivity: float, *, n_modes: int | None = None,
                  tol: float = _TOL) -> np.ndarray:
    """PGSE E(b) in an impermeable sphere of radius ``radius_um`` µm (units and
    truncation as :func:`cylinder_signal`)."""
    return _radial_signal(True, radius_um, bvalues, delta_us, Delta_us, diffusivity,
                          n_modes, tol)


# --------------------------------------------------------------------------- sum rule


def moment_sum(domain: Domain, size: float) -> float:
    """Exact Σ_{k≥1} B_0k² = variance of the gradient coordinate over the domain (µm²).

    ``size``: slab width L (L²/12), disk radius R (R²/4) or ball radius R (R²/5), in µm.
    """
    size = _positive(size, "size")
    factors = {"slab": 1.0 / 12.0, "disk": 0.25, "ball": 0.2}
    if domain not in factors:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(factors)}")
    return factors[domain] * size * size


def truncated_moment_sum(eig: EigenData) -> float:
    """Truncated Σ_{k≥1} B_0k² (µm²) from eigen-data, with φ_0 = ν0/|ν0| the uniform state.

    Equals ‖B u‖² − (uᵀ B u)², u = ν0/‖ν0‖; tends to :func:`moment_sum` as modes are added.
    Also valid with several zero modes (κ = 0 two-slab).
    """
    u = eig.nu0 / np.linalg.norm(eig.nu0)
    c = eig.moment @ u
    return float(c @ c - (u @ c) ** 2)
