"""Hand-written reverse-mode derivatives (VJPs) of the matrix-formalism signal (NumPy).

Two levels:

* **Reduced level.** The signal is a function ``F(Λ, W_d, ν₀)`` of the reduced operator
  Λ = VᵀAV (n×n, 1/µs, diagonal at the solution), the projected moments W_d = VᵀJ_dV
  (3, n, n; µm) and ν₀ = VᵀM1 (n; µm^{3/2}). Given the cotangent S̄ of the complex signal
  (convention: δL = Re Σ conj(S̄)·δS, which is torch's), the functions here return Λ̄ for a
  *full symmetric* perturbation of Λ (not only its diagonal), W̄_d and ν̄₀. The Chebyshev
  propagator is differentiated exactly through its three-term recurrence (fixed plan:
  shift, scale, degree), the f = 0 intervals through the closed-form Fréchet derivative of
  exp(−τΛ) at diagonal Λ (divided differences).
* **FE level** (:func:`fe_kappa_vjp`): ∂L/∂κ_f = Σ_ij Λ̄_ij φ_iᵀQ_fφ_j (frozen basis) minus
  the subspace-rotation term Σ_i y_iᵀQ_fφ_i with (A − λ_iM) y_i = Pᵀg_i, y_i ⊥_M span V,
  g = Σ_d J_dV(W̄_d + W̄_dᵀ) + (M1)ν̄₀ᵀ. This is the exact derivative of the truncated model
  (it depends on span V only, so degenerate eigenvalues inside the kept set are harmless;
  the cut sits at a gap). Solved with the full spectrum (dense path) or by deflated
  preconditioned CG (sparse path), see :mod:`spinverse.autodiff.rotation`.

The forward passes are the engine's (:mod:`spinverse.solvers.reduced`); the reverse
modes here reuse its tapes and its direction chunks. The outer products Σ_k b_{k+1} t_kᴴ
are symmetric rank-2k updates (``dsyr2k``) on real/imaginary-split tapes.

Units: λ 1/µs, τ µs, s = q·f 1/(µm·µs), W µm, S µm³, κ µm/µs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dsyr2k

from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel
from spinverse.solvers.chebyshev import ChebyshevBlock, ChebyshevTape
from spinverse.solvers.reduced import ReducedModel, SequenceTape, clean_segments
from spinverse.solvers.spectrum import Spectrum


# ----------------------------------------------------------------------------- helpers
def exp_divided_differences(lam: np.ndarray, tau: float) -> np.ndarray:
    """(n, n) Φ_ij = (φ(λ_i) − φ(λ_j)) / (λ_i − λ_j), φ(x) = exp(−τx), Φ_ii = φ'(λ_i).

    The Fréchet derivative of exp(−τΛ) at diagonal Λ in the direction E is Φ ∘ E. Stable
    for equal or nearly equal λ (no cancellation), no overflow for τλ ≥ 0. λ in 1/µs, τ µs.
    """
    lo = np.minimum(lam[:, None], lam[None, :])
    d = np.abs(lam[:, None] - lam[None, :])
    x = tau * d
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(x > 1e-8, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0 - 0.5 * x)
    return -tau * np.exp(-tau * lo) * ratio


def sym_from_lower(a: np.ndarray) -> np.ndarray:
    """Symmetric matrix from its lower triangle (in place on a copy)."""
    low = np.tril(a)
    return low + np.tril(a, -1).T


def _syr2k_acc(acc: np.ndarray, alpha: float, p: np.ndarray, q: np.ndarray) -> None:
    """acc (Fortran (n, n), lower triangle) += alpha (pᵀq + qᵀp) for C-contiguous (m, n)."""
    # A C-contiguous (m, n) array is a Fortran (n, m) one: trans=0 gives A Bᵀ + B Aᵀ.
    out = dsyr2k(alpha, p.T, q.T, beta=1.0, c=acc, trans=0, lower=1, overwrite_c=1)
    if out is not acc:  # pragma: no cover - f2py copied (acc not Fortran-contiguous)
        acc[...] = out


def _axpy(y: np.ndarray, a: float, x: np.ndarray) -> None:
    """y += a x in place for same-shaped arrays (BLAS daxpy on the flat data)."""
    from scipy.linalg.blas import daxpy

    yf = y.reshape(-1, order="A")
    xf = x.reshape(-1, order="A")
    if y.flags.f_contiguous == x.flags.f_contiguous and np.shares_memory(yf, y):
        daxpy(xf, yf, a=a)
    else:  # pragma: no cover - layouts differ
        y += a * x


def _re_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, n) Re Σ_rows conj(a_r) ⊗ b_r for complex (..., n) stacks a, b."""
    n = a.shape[-1]
    a2 = np.concatenate([a.real.reshape(-1, n), a.imag.reshape(-1, n)])
    b2 = np.concatenate([b.real.reshape(-1, n), b.imag.reshape(-1, n)])
    return a2.T @ b2


# ------------------------------------------------------------------ Chebyshev primitive
def chebyshev_vjp(
    blk: ChebyshevBlock,
    tape: ChebyshevTape,
    ubar: np.ndarray,
    dirs: np.ndarray,
    lam_acc: np.ndarray,
    w_acc: list[np.ndarray],
) -> np.ndarray:
    """Reverse mode of ``blk.forward`` given ū (G, C, n) (δL = Re Σ ūᴴ δu).

    Adds 2·sym(Λ̄) to the lower triangle of the Fortran-ordered ``lam_acc`` (n, n) and
    2·sym(W̄_d) to the lower triangles of ``w_acc`` (3 Fortran (n, n) arrays), given
    ``dirs`` (G, 3) unit directions; returns v̄0 (G, C, n) complex.
    """
    vbar = ubar
    for j in range(blk.substeps - 1, -1, -1):
        if tape.t is not None:
            t = tape.t[j]
        else:
            g, ncol, _ = ubar.shape
            t = blk.new_tape(g, ncol)
            blk.step(tape.inputs[j], t)
        vbar = _step_vjp(blk, t, vbar, dirs, lam_acc, w_acc)
    return vbar


def _step_vjp(
    blk: ChebyshevBlock,
    t: np.ndarray,
    ubar: np.ndarray,
    dirs: np.ndarray,
    lam_acc: np.ndarray,
    w_acc: list[np.ndarray],
) -> np.ndarray:
    c = blk.coeffs
    kdeg = blk.degree
    g, ncol, n = ubar.shape
    ybar = np.conj(blk.factor) * ubar
    # Clenshaw-type adjoint: b_k = c_k ȳ + 2 Zᴴ b_{k+1} − b_{k+2}; the tape bt holds
    # α_k b_{k+1} (α_0 = 1, α_k = 2), real and imaginary parts.
    bt = blk.new_tape(g, ncol)
    b_next2 = np.zeros_like(ybar)
    b_next = c[kdeg] * ybar  # b_K
    for k in range(kdeg - 1, 0, -1):
        bt[:, k, 0], bt[:, k, 1] = b_next.real, b_next.imag
        b_k = blk.zh(b_next)
        b_k *= 2.0
        b_k += c[k] * ybar
        b_k -= b_next2
        b_next2, b_next = b_next, b_k
    bt[:, 1:] *= 2.0
    bt[:, 0, 0], bt[:, 0, 1] = b_next.real, b_next.imag
    v0bar = c[0] * ybar + blk.zh(b_next) - b_next2  # b_0
    # Z̄_col = Σ_k α_k b_{k+1} t_kᴴ;  Λ̄ = −τ/h Σ Re Z̄,  W̄_g = −τ/h Σ s Im Z̄.
    scale = -blk.tau / blk.h
    rows = kdeg * 2 * ncol
    for j in range(g):
        q = t[j].reshape(rows, n)
        p = bt[j].reshape(rows, n)
        _syr2k_acc(lam_acc, scale, p, q)
        # Im(P Qᴴ) = Pi Qrᵀ − Pr Qiᵀ, weighted per column by s: rows [s Pi; −s Pr].
        sj = blk.s[j][None, :, None]
        p2 = np.empty((kdeg, 2, ncol, n))
        np.multiply(bt[j, :, 1], sj, out=p2[:, 0])
        np.multiply(bt[j, :, 0], -sj, out=p2[:, 1])
        wgbar = dsyr2k(scale, p2.reshape(rows, n).T, q.T, trans=0, lower=1)
        for d in range(3):
            if dirs[j, d] != 0.0:
                _axpy(w_acc[d], dirs[j, d], wgbar)
    return v0bar


# ------------------------------------------------------------------- sequence level
@dataclass
class ReducedCotangents:
    """Accumulators of the reduced-level VJP: lower triangles of 2·sym(Λ̄) and
    2·sym(W̄_d) (Fortran (n, n) arrays) and ν̄₀ (n,)."""

    lam: np.ndarray
    w: list[np.ndarray]
    nu0: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> ReducedCotangents:
        return cls(np.zeros((n, n), order="F"), [np.zeros((n, n), order="F") for _ in range(3)],
                   np.zeros(n))

    def add(self, other: ReducedCotangents) -> None:
        self.lam += other.lam
        for d in range(3):
            self.w[d] += other.w[d]
        self.nu0 += other.nu0

    def symmetric(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Λ̄ (n, n), W̄ (3, n, n), ν̄₀ (n,)), the symmetric cotangents."""
        return (0.5 * sym_from_lower(self.lam),
                np.stack([0.5 * sym_from_lower(w) for w in self.w]), self.nu0)


def _accumulate(red: ReducedModel, fn: Callable, chunks: list, acc: ReducedCotangents) -> None:
    """Run ``fn(i, chunk, acc)`` over the chunks: one contiguous group of chunks per
    worker with its own accumulators, summed in a fixed order (the result does not depend
    on thread timing)."""
    if red.workers == 1 or len(chunks) < 2:
        for i, ch in enumerate(chunks):
            fn(i, ch, acc)
        return
    n_groups = min(red.workers, len(chunks))
    edges = np.linspace(0, len(chunks), n_groups + 1).round().astype(int)

    def group(gi: int) -> ReducedCotangents:
        part = ReducedCotangents.zeros(red.n)
        for i in range(edges[gi], edges[gi + 1]):
            fn(i, chunks[i], part)
        return part

    for part in red.map(group, list(range(n_groups))):
        acc.add(part)


def _static_vjp(red: ReducedModel, te: float, a: float, acc: ReducedCotangents) -> None:
    """Reverse mode of the q = 0 signal Σ ν₀² exp(−te λ), weighted by ``a``."""
    if a == 0.0:
        return
    phi = exp_divided_differences(red.lam, te)
    acc.lam += (2.0 * a) * phi * np.outer(red.nu0, red.nu0)
    acc.nu0 += 2.0 * a * np.exp(-te * red.lam) * red.nu0


def pgse_vjp(
    red: ReducedModel,
    delta: float,
    big_delta: float,
    q: np.ndarray,
    dirs: np.ndarray,
    tape: SequenceTape,
    sbar: np.ndarray,
    acc: ReducedCotangents,
) -> None:
    """Accumulate the reduced cotangents of a PGSE sequence (δ, Δ µs) for S̄ (nb, G)."""
    lam = red.lam
    n_dir = len(dirs)
    a = np.real(sbar)  # S is real for PGSE: only Re S̄ matters
    zero = q == 0.0
    _static_vjp(red, big_delta + delta, float(a[zero].sum()), acc)
    on = np.flatnonzero(~zero)
    if len(on) == 0:
        return
    strength = np.broadcast_to(q[None, :], (n_dir, len(q)))
    plan = red.plan(delta, strength, dirs)
    tau2 = big_delta - delta
    e2 = np.exp(-tau2 * lam)[None, None, :]
    phi2 = exp_divided_differences(lam, tau2)
    ncol = len(on)
    have = bool(tape.tapes) and bool(tape.u)
    chunks = red.chunks(n_dir, ncol, 2 * plan.degree)
    if have and len(tape.tapes) != len(chunks):  # type: ignore[arg-type]
        raise SolverError("tape does not match the direction chunks")

    def one(i: int, ch: slice, acc: ReducedCotangents) -> None:
        blk = red.block(red.direction_moments(dirs[ch]), delta, strength, plan, ch, on)
        if have:
            u, t = tape.u[i], tape.tapes[i]  # type: ignore[index]
        else:
            u, t = blk.forward(red.start(blk.s.shape[0], ncol), True)
        ac = a[on][:, ch].T[:, :, None]  # (Gc, C, 1)
        # E2 = exp(−(Δ−δ)Λ): Λ̄ += Φ₂ ∘ Re Σ a u uᴴ.
        acc.lam += 2.0 * phi2 * _re_outer(u * ac, u)
        ubar = 2.0 * ac * (e2 * u)
        v0bar = chebyshev_vjp(blk, t, ubar, dirs[ch], acc.lam, acc.w)
        acc.nu0 += v0bar.real.sum(axis=(0, 1))

    _accumulate(red, one, chunks, acc)


def segments_vjp(
    red: ReducedModel,
    segments: tuple[tuple[float, float], ...],
    q: np.ndarray,
    dirs: np.ndarray,
    sbar: np.ndarray,
    acc: ReducedCotangents,
) -> None:
    """Reverse mode through a piecewise-constant waveform (recomputes the forward pass
    per direction chunk, keeping the states at the segment starts)."""
    lam = red.lam
    segs = clean_segments(segments)
    zero = q == 0.0
    _static_vjp(red, sum(d for d, _ in segs), float(np.real(sbar[zero]).sum()), acc)
    on = np.flatnonzero(~zero)
    if len(on) == 0:
        return
    plans = red.segment_plans(segs, q, dirs)

    def one(i: int, ch: slice, acc: ReducedCotangents) -> None:
        nu_end, states = red.segments_chunk(segs, plans, on, dirs, ch, True)
        wg = red.direction_moments(dirs[ch])
        sb = sbar[on][:, ch].T[:, :, None]  # (Gc, C, 1)
        # S = ν0ᵀ ν_end:  ν̄0 += Re Σ conj(S̄) ν_end;  ν̄_end = S̄ ν0.
        acc.nu0 += np.real(np.conj(sb) * nu_end).sum(axis=(0, 1))
        nubar = sb * red.nu0[None, None, :]
        for m in range(len(segs) - 1, -1, -1):
            duration, _ = segs[m]
            prev = states[m]
            pl = plans[m]
            if pl is None:
                ph = exp_divided_differences(lam, duration)
                r = _re_outer(nubar, prev)
                acc.lam += ph * (r + r.T)
                nubar = np.exp(-duration * lam)[None, None, :] * nubar
            else:
                blk = red.block(wg, duration, *pl, ch, on)
                _, t = blk.forward(prev, True)
                nubar = chebyshev_vjp(blk, t, nubar, dirs[ch], acc.lam, acc.w)
        acc.nu0 += nubar.real.sum(axis=(0, 1))

    chunks = red.segment_chunks(len(dirs), plans, len(on), len(segs))
    _accumulate(red, one, chunks, acc)

# ------------------------------------------------------------------------- FE level
@dataclass(frozen=True, eq=False)
class FluxBlocks:
    """Per-face view of Q(κ) = Σ_f κ_f Q_f: the (up to 6) DOFs touched by face f
    (``dofs`` (F, 6), padded with DOF 0) and Q_f on them (``coef`` (F, 6, 6), µm²)."""

    dofs: np.ndarray
    coef: np.ndarray

    @classmethod
    def build(cls, fe: FEModel) -> FluxBlocks:
        """From the κ → Q map of ``fe`` (pattern ``flux_rows/cols``, ``flux_map``)."""
        n_faces = fe.flux_map.shape[1]
        fm = sp.coo_matrix(fe.flux_map)
        order = np.lexsort((fm.row, fm.col))
        ent, face, val = fm.row[order], fm.col[order], fm.data[order]
        rows, cols = fe.flux_rows[ent], fe.flux_cols[ent]
        dofs = np.zeros((n_faces, 6), dtype=np.int64)
        coef = np.zeros((n_faces, 6, 6))
        starts = np.searchsorted(face, np.arange(n_faces + 1))
        for f in range(n_faces):
            sl = slice(starts[f], starts[f + 1])
            if sl.start == sl.stop:
                continue
            d = np.unique(np.concatenate([rows[sl], cols[sl]]))
            if len(d) > 6:  # pragma: no cover - not a P1 face
                raise SolverError(f"face {f} couples {len(d)} > 6 DOFs")
            dofs[f, : len(d)] = d
            i = np.searchsorted(d, rows[sl])
            j = np.searchsorted(d, cols[sl])
            np.add.at(coef[f], (i, j), val[sl])
        return cls(dofs, coef)

    def vjp(self, u: np.ndarray, v: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """(F,) Σ_k u_kᵀ Q_f v_k for real (N, K) u, v."""
        n_faces = len(self.dofs)
        out = np.empty(n_faces)
        for s0 in range(0, n_faces, chunk):
            sl = slice(s0, min(s0 + chunk, n_faces))
            d = self.dofs[sl]
            pu = np.matmul(u[d], v[d].transpose(0, 2, 1))  # (c, 6, 6)
            out[sl] = np.einsum("fij,fij->f", self.coef[sl], pu)
        return out


def fe_kappa_vjp(
    fe: FEModel,
    spec: Spectrum,
    a: sp.spmatrix,
    lam_bar: np.ndarray,
    w_bar: np.ndarray,
    nu0_bar: np.ndarray,
    *,
    correction: bool = True,
    blocks: FluxBlocks | None = None,
) -> tuple[np.ndarray, dict]:
    """∂L/∂κ_f (F,) in (µm/µs)⁻¹ × [L] from the reduced cotangents (symmetric Λ̄, W̄_d).

    Frozen basis: Σ_ij Λ̄_ij φ_iᵀQ_fφ_j. With ``correction`` (default) the exact
    subspace-rotation term −Σ_i y_iᵀQ_fφ_i is added (see module docstring).
    """
    v = spec.vectors
    u = v @ lam_bar
    info: dict = {}
    if correction:
        from spinverse.autodiff.rotation import rotation_solve

        jv = np.concatenate([np.asarray(j @ v) for j in fe.moments], axis=1)  # (N, 3n)
        g = jv @ (2.0 * w_bar).reshape(-1, v.shape[1])
        g += np.outer(fe.mass_ones, nu0_bar)
        y, info = rotation_solve(spec, fe, a, g)
        u -= y
    if blocks is None:
        blocks = FluxBlocks.build(fe)
    return blocks.vjp(u, v), info
