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
  preconditioned CG (sparse path), see :mod:`spinverse.autodiff.spectrum`.

Performance notes: the Chebyshev recurrences run direction chunk by direction chunk, so
that W_g stays in cache (the products v·W_g with 2·(#b) rows are memory bound otherwise),
optionally on worker threads; the outer products Σ_k b_{k+1} t_kᴴ are symmetric rank-2k
updates (``dsyr2k``) on real/imaginary-split tapes.

Units: λ 1/µs, τ µs, s = q·f 1/(µm·µs), W µm, S µm³, κ µm/µs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dsyr2k

from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel
from spinverse.solvers.chebyshev import ChebyshevPlan

log = logging.getLogger(__name__)

#: Default memory (bytes) a chunk of directions may use for W_g stacks and tapes.
CHUNK_BYTES = 384 * 2**20
#: The W_g matrices of one chunk of directions should stay in cache across the whole
#: recurrence (the products are memory bound otherwise): bytes of W_g per chunk.
CACHE_BYTES = 8 * 2**20


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


def _sym_lower_to_full(a: np.ndarray) -> np.ndarray:
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


def direction_chunks(
    n_dir: int, per_direction_bytes: float, budget: float, min_chunks: int = 1
) -> list[slice]:
    """Split ``n_dir`` directions into balanced slices whose memory stays under ``budget``
    bytes, at least ``min_chunks`` of them (when there are enough directions)."""
    size = max(1, int(budget // max(per_direction_bytes, 1.0)))
    n_chunks = min(max(-(-n_dir // size), min_chunks), n_dir)
    edges = np.linspace(0, n_dir, n_chunks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


# ------------------------------------------------------------------ Chebyshev primitive
@dataclass
class ChebyshevTape:
    """Inputs of each substep (list of (G, C, n) complex) and, when kept, the forward
    vectors t_0 … t_{K−1} of each substep as real (G, K, 2, C, n) arrays (real and
    imaginary parts; None: recompute in the backward pass)."""

    inputs: list[np.ndarray]
    t: list[np.ndarray] | None


class ChebyshevBlock:
    """exp(−τ(Λ + i s_gk W_g)) acting on columns stored as rows, (G, C, n), with its
    exact reverse mode.

    ``lam`` (n,) 1/µs, ``wg`` (G, n, n) µm, ``strength`` (G, C) 1/(µm·µs), ``shift`` (G, C)
    complex (of one substep) and ``plan`` (scale, coefficients, substeps) from
    :func:`~spinverse.solvers.chebyshev.plan_expansion`, kept fixed: the derivative is
    that of the polynomial actually evaluated.
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
        self.substeps = int(getattr(plan, "substeps", 1))
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

    def _w(self, v: np.ndarray) -> np.ndarray:
        # v W_g (= (W_g v)ᵀ, W_g symmetric) on stacked real and imaginary rows.
        ncol = v.shape[1]
        out = np.matmul(np.concatenate([v.real, v.imag], axis=1), self.wg)
        return out[:, :ncol] + 1j * out[:, ncol:]

    def _z(self, v: np.ndarray) -> np.ndarray:
        return self.d * v + self.e * self._w(v)

    def _zh(self, v: np.ndarray) -> np.ndarray:
        return self.dc * v + self.ec * self._w(v)

    def _step(self, v0: np.ndarray, tape: np.ndarray | None) -> np.ndarray:
        c = self.coeffs
        kdeg = self.degree
        t_prev = np.asarray(v0, dtype=complex)
        y = c[0] * t_prev
        if tape is not None:
            tape[:, 0, 0], tape[:, 0, 1] = t_prev.real, t_prev.imag
        t_cur = self._z(t_prev)
        y += c[1] * t_cur
        for k in range(2, kdeg + 1):
            if tape is not None:
                tape[:, k - 1, 0], tape[:, k - 1, 1] = t_cur.real, t_cur.imag
            t_next = self._z(t_cur)
            t_next *= 2.0
            t_next -= t_prev
            y += c[k] * t_next
            t_prev, t_cur = t_cur, t_next
        y *= self.factor
        return y

    def _new_tape(self, g: int, ncol: int) -> np.ndarray:
        return np.empty((g, self.degree, 2, ncol, len(self.lam)))

    def forward(self, v0: np.ndarray, keep_tape: bool) -> tuple[np.ndarray, ChebyshevTape]:
        """(exp(…) v0, tape) for ``v0`` (G, C, n). The tape always holds the substep
        inputs, and the recurrence vectors when ``keep_tape``."""
        g, ncol, _ = v0.shape
        y = np.asarray(v0, dtype=complex)
        inputs, tapes = [], ([] if keep_tape else None)
        for _ in range(self.substeps):
            inputs.append(y)
            t = self._new_tape(g, ncol) if keep_tape else None
            y = self._step(y, t)
            if tapes is not None:
                tapes.append(t)
        return y, ChebyshevTape(inputs, tapes)

    def backward(
        self,
        tape: ChebyshevTape,
        ubar: np.ndarray,
        dirs: np.ndarray,
        lam_acc: np.ndarray,
        w_acc: np.ndarray,
    ) -> np.ndarray:
        """Reverse mode given ū (G, C, n) (δL = Re Σ ūᴴ δu).

        Adds 2·sym(Λ̄) to the lower triangle of the Fortran-ordered ``lam_acc`` (n, n) and
        2·sym(W̄_d) to the lower triangles of ``w_acc`` (3 Fortran (n, n) arrays), given
        ``dirs`` (G, 3) unit directions; returns v̄0 (G, C, n) complex.
        """
        vbar = ubar
        for j in range(self.substeps - 1, -1, -1):
            if tape.t is not None:
                t = tape.t[j]
            else:
                g, ncol, _ = ubar.shape
                t = self._new_tape(g, ncol)
                self._step(tape.inputs[j], t)
            vbar = self._step_backward(t, vbar, dirs, lam_acc, w_acc)
        return vbar

    def _step_backward(
        self,
        t: np.ndarray,
        ubar: np.ndarray,
        dirs: np.ndarray,
        lam_acc: np.ndarray,
        w_acc: np.ndarray,
    ) -> np.ndarray:
        c = self.coeffs
        kdeg = self.degree
        g, ncol, n = ubar.shape
        ybar = np.conj(self.factor) * ubar
        # Clenshaw-type adjoint: b_k = c_k ȳ + 2 Zᴴ b_{k+1} − b_{k+2}; the tape bt holds
        # α_k b_{k+1} (α_0 = 1, α_k = 2), real and imaginary parts.
        bt = self._new_tape(g, ncol)
        b_next2 = np.zeros_like(ybar)
        b_next = c[kdeg] * ybar  # b_K
        for k in range(kdeg - 1, 0, -1):
            bt[:, k, 0], bt[:, k, 1] = b_next.real, b_next.imag
            b_k = self._zh(b_next)
            b_k *= 2.0
            b_k += c[k] * ybar
            b_k -= b_next2
            b_next2, b_next = b_next, b_k
        bt[:, 1:] *= 2.0
        bt[:, 0, 0], bt[:, 0, 1] = b_next.real, b_next.imag
        v0bar = c[0] * ybar + self._zh(b_next) - b_next2  # b_0
        # Z̄_col = Σ_k α_k b_{k+1} t_kᴴ;  Λ̄ = −τ/h Σ Re Z̄,  W̄_g = −τ/h Σ s Im Z̄.
        scale = -self.tau / self.h
        rows = kdeg * 2 * ncol
        for j in range(g):
            q = t[j].reshape(rows, n)
            p = bt[j].reshape(rows, n)
            _syr2k_acc(lam_acc, scale, p, q)
            # Im(P Qᴴ) = Pi Qrᵀ − Pr Qiᵀ, weighted per column by s: rows [s Pi; −s Pr].
            sj = self.s[j][None, :, None]
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
class SequenceTape:
    """What the forward pass of one sequence keeps for its VJP.

    ``u`` (G, n, C) first-pulse states of the q > 0 columns (PGSE), ``tapes`` one
    :class:`ChebyshevTape` per direction chunk (None: recomputed in the backward pass).
    """

    kind: str
    u: list[np.ndarray] | None = None
    tapes: list[ChebyshevTape] | None = None


class ReducedVJP:
    """Forward signal and reduced-level VJP of one protocol on a reduced model.

    ``lam`` (n,) 1/µs, ``moments`` (3, n, n) µm, ``nu0`` (n,) µm^{3/2}, ``dof_points``
    (N, 3) µm (bounds the field of values of W_g). ``tol``: Chebyshev tail bound.
    ``chunk_bytes``: memory per chunk of directions; ``tape_bytes``: the most the
    forward pass keeps for the backward pass (beyond it, the backward recomputes).
    """

    def __init__(
        self,
        lam: np.ndarray,
        moments: np.ndarray,
        nu0: np.ndarray,
        dof_points: np.ndarray,
        *,
        tol: float,
        chunk_bytes: float = CHUNK_BYTES,
        tape_bytes: float = 1.0 * 2**30,
        workers: int = 1,
    ) -> None:
        self.lam = np.asarray(lam, dtype=float)
        self.moments = np.asarray(moments, dtype=float)
        self.nu0 = np.asarray(nu0, dtype=float)
        self.dof_points = dof_points
        self.tol = tol
        self.chunk_bytes = chunk_bytes
        self.tape_bytes_left = tape_bytes
        self.workers = max(1, int(workers))

    @property
    def n(self) -> int:
        return len(self.lam)

    def _map(self, fn: Callable, items: list) -> list:
        """``[fn(x) for x in items]``, on ``workers`` threads (the BLAS products and large
        ufuncs release the GIL; BLAS itself should then run single-threaded)."""
        if self.workers == 1 or len(items) < 2:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.workers, len(items))) as ex:
            return list(ex.map(fn, items))

    def _accumulate(self, fn: Callable, chunks: list, lam_acc: np.ndarray,
                    w_acc: list, nu0_acc: np.ndarray) -> None:
        """Run ``fn(i, chunk, lam_acc, w_acc, nu0_acc)`` over the chunks: one contiguous group
        of chunks per worker with its own accumulators, summed in a fixed order (the result
        does not depend on thread timing)."""
        if self.workers == 1 or len(chunks) < 2:
            for i, ch in enumerate(chunks):
                fn(i, ch, lam_acc, w_acc, nu0_acc)
            return
        n = self.n
        n_groups = min(self.workers, len(chunks))
        edges = np.linspace(0, len(chunks), n_groups + 1).round().astype(int)

        def group(gi: int) -> tuple[np.ndarray, list, np.ndarray]:
            la = np.zeros((n, n), order="F")
            wa = [np.zeros((n, n), order="F") for _ in range(3)]
            na = np.zeros(n)
            for i in range(edges[gi], edges[gi + 1]):
                fn(i, chunks[i], la, wa, na)
            return la, wa, na

        for la, wa, na in self._map(group, list(range(n_groups))):
            lam_acc += la
            for d in range(3):
                w_acc[d] += wa[d]
            nu0_acc += na

    def _extent(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proj = self.dof_points @ dirs.T
        lo, hi = proj.min(axis=0), proj.max(axis=0)
        return 0.5 * (lo + hi), 0.5 * (hi - lo)

    def _wg(self, dirs: np.ndarray) -> np.ndarray:
        return np.tensordot(dirs, self.moments, axes=(1, 0))

    def _plan(self, tau: float, strength: np.ndarray, dirs: np.ndarray) -> ChebyshevPlan:
        from spinverse.solvers.chebyshev import plan_expansion

        centre, half = self._extent(dirs)
        return plan_expansion(self.lam[0], self.lam[-1], tau, strength, centre, half,
                              tol=self.tol)

    def _chunks(self, n_dir: int, degree: int, n_col: int, tapes: int) -> list[slice]:
        """Direction chunks: W_g of a chunk fits in cache, and its tapes in memory."""
        n = self.n
        per = 8.0 * n * n + 16.0 * n * n_col * (tapes * degree + 4)
        budget = min(self.chunk_bytes, max(CACHE_BYTES, 8.0 * n * n) * per / (8.0 * n * n))
        return direction_chunks(n_dir, per, budget, self.workers)

    # ------------------------------------------------------------------ b = 0 columns
    def _static_signal(self, te: float) -> float:
        return float(np.sum(self.nu0**2 * np.exp(-te * self.lam)))

    def _static_vjp(self, te: float, a: float, lam_acc: np.ndarray, nu0_acc: np.ndarray) -> None:
        if a == 0.0:
            return
        phi = exp_divided_differences(self.lam, te)
        lam_acc += (2.0 * a) * phi * np.outer(self.nu0, self.nu0)
        nu0_acc += 2.0 * a * np.exp(-te * self.lam) * self.nu0

    # ------------------------------------------------------------------------ PGSE
    def pgse_forward(
        self, delta: float, big_delta: float, q: np.ndarray, dirs: np.ndarray, keep: bool
    ) -> tuple[np.ndarray, SequenceTape]:
        """S (nb, G) µm³ of a PGSE sequence (δ, Δ µs) and its tape."""
        lam, n = self.lam, self.n
        n_dir = len(dirs)
        strength = np.broadcast_to(q[None, :], (n_dir, len(q)))
        plan = self._plan(delta, strength, dirs)
        on = np.flatnonzero(q != 0.0)
        out = np.empty((len(q), n_dir), dtype=complex)
        out[q == 0.0, :] = self._static_signal(big_delta + delta)
        tape = SequenceTape("pgse", [] if keep else None, [] if keep else None)
        if len(on) == 0:
            return out, tape
        e2 = np.exp(-(big_delta - delta) * lam)[None, None, :]
        ncol = len(on)
        chunks = self._chunks(n_dir, plan.degree, ncol, 2)
        tape_need = 16.0 * n_dir * n * plan.degree * ncol * getattr(plan, "substeps", 1)
        store = keep and tape_need <= self.tape_bytes_left
        if store:
            self.tape_bytes_left -= tape_need
        def one(ch: slice) -> tuple[np.ndarray, ChebyshevTape]:
            blk = ChebyshevBlock(lam, self._wg(dirs[ch]), delta, strength[ch][:, on],
                                 plan.shift[ch][:, on], plan)
            v0 = np.broadcast_to(self.nu0[None, None, :], (blk.s.shape[0], ncol, n))
            return blk.forward(v0.astype(complex), store)

        for ch, (u, t) in zip(chunks, self._map(one, chunks), strict=True):
            out[on, ch] = np.einsum("gkn,gkn->kg", u.conj(), e2 * u).real
            if keep:
                tape.u.append(u)  # type: ignore[union-attr]
                tape.tapes.append(t)  # type: ignore[union-attr]
        return out, tape

    def pgse_vjp(
        self,
        delta: float,
        big_delta: float,
        q: np.ndarray,
        dirs: np.ndarray,
        tape: SequenceTape,
        sbar: np.ndarray,
        lam_acc: np.ndarray,
        w_acc: np.ndarray,
        nu0_acc: np.ndarray,
    ) -> None:
        """Accumulate 2·sym(Λ̄), 2·sym(W̄_d) (lower triangles) and ν̄₀ for S̄ (nb, G)."""
        lam, n = self.lam, self.n
        n_dir = len(dirs)
        a = np.real(sbar)  # S is real for PGSE: only Re S̄ matters
        zero = q == 0.0
        self._static_vjp(big_delta + delta, float(a[zero].sum()), lam_acc, nu0_acc)
        on = np.flatnonzero(~zero)
        if len(on) == 0:
            return
        strength = np.broadcast_to(q[None, :], (n_dir, len(q)))
        plan = self._plan(delta, strength, dirs)
        tau2 = big_delta - delta
        e2 = np.exp(-tau2 * lam)[None, None, :]
        phi2 = exp_divided_differences(lam, tau2)
        ncol = len(on)
        have = bool(tape.tapes) and bool(tape.u)
        chunks = self._chunks(n_dir, plan.degree, ncol, 2)
        if have and len(tape.tapes) != len(chunks):  # type: ignore[arg-type]
            raise SolverError("tape does not match the direction chunks")
        def one(i: int, ch: slice, lam_acc: np.ndarray, w_acc: list,
                nu0_acc: np.ndarray) -> None:
            blk = ChebyshevBlock(lam, self._wg(dirs[ch]), delta, strength[ch][:, on],
                                 plan.shift[ch][:, on], plan)
            if have:
                u, t = tape.u[i], tape.tapes[i]  # type: ignore[index]
            else:
                v0 = np.broadcast_to(self.nu0[None, None, :], (blk.s.shape[0], ncol, n))
                u, t = blk.forward(v0.astype(complex), True)
            ac = a[on][:, ch].T[:, :, None]  # (Gc, C, 1)
            # E2 = exp(−(Δ−δ)Λ): Λ̄ += Φ₂ ∘ Re Σ a u uᴴ.
            r = _re_outer(u * ac, u)
            lam_acc += 2.0 * phi2 * r
            ubar = 2.0 * ac * (e2 * u)
            v0bar = blk.backward(t, ubar, dirs[ch], lam_acc, w_acc)
            nu0_acc += v0bar.real.sum(axis=(0, 1))

        self._accumulate(one, chunks, lam_acc, w_acc, nu0_acc)

    # ------------------------------------------------------------- generic segments
    def _segment_plans(
        self, segs: tuple[tuple[float, float], ...], q: np.ndarray, dirs: np.ndarray
    ) -> list[tuple[np.ndarray, ChebyshevPlan] | None]:
        """Per segment: None (f = 0) or (strength (G, nb), plan), planned over all
        directions (as :func:`spinverse.solvers.mf.sequence_signal` does)."""
        n_dir = len(dirs)
        cache: dict[tuple[float, float], tuple[np.ndarray, ChebyshevPlan]] = {}
        plans: list[tuple[np.ndarray, ChebyshevPlan] | None] = []
        for duration, fval in segs:
            if fval == 0.0:
                plans.append(None)
                continue
            key = (duration, fval)
            if key not in cache:
                strength = np.broadcast_to(q[None, :] * fval, (n_dir, len(q)))
                cache[key] = (strength, self._plan(duration, strength, dirs))
            plans.append(cache[key])
        return plans

    def _segments_chunk(
        self,
        segs: tuple[tuple[float, float], ...],
        plans: list,
        on: np.ndarray,
        dirs: np.ndarray,
        ch: slice,
        keep_states: bool,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """ν(TE) (Gc, C, n) of the q > 0 columns of a direction chunk, and the states at
        the segment starts (plus the final one) when ``keep_states``."""
        lam, n = self.lam, self.n
        wg = self._wg(dirs[ch])
        g = wg.shape[0]
        nu = np.broadcast_to(self.nu0[None, None, :], (g, len(on), n)).astype(complex)
        states: list[np.ndarray] = []
        for (duration, _), pl in zip(segs, plans, strict=True):
            if keep_states:
                states.append(nu)
            if pl is None:
                nu = np.exp(-duration * lam)[None, None, :] * nu
                continue
            strength, plan = pl
            blk = ChebyshevBlock(lam, wg, duration, strength[ch][:, on], plan.shift[ch][:, on],
                                 plan)
            nu, _ = blk.forward(nu, False)
        if keep_states:
            states.append(nu)
        return nu, states

    def _segments_chunks(self, n_dir: int, plans: list, ncol: int, n_seg: int) -> list[slice]:
        n = self.n
        max_deg = max((p[1].degree for p in plans if p is not None), default=1)
        per = 8.0 * n * n + 16.0 * n * ncol * (2 * max_deg + n_seg + 4)
        budget = min(self.chunk_bytes, max(CACHE_BYTES, 8.0 * n * n) * per / (8.0 * n * n))
        return direction_chunks(n_dir, per, budget, self.workers)

    def segments_forward(
        self, segments: tuple[tuple[float, float], ...], q: np.ndarray, dirs: np.ndarray
    ) -> np.ndarray:
        """S (nb, G) µm³ for a piecewise-constant waveform ((duration µs, f), …)."""
        segs = tuple((float(d), float(f)) for d, f in segments if d > 0)
        te = sum(d for d, _ in segs)
        on = np.flatnonzero(q != 0.0)
        out = np.empty((len(q), len(dirs)), dtype=complex)
        out[q == 0.0, :] = self._static_signal(te)
        if len(on) == 0:
            return out
        plans = self._segment_plans(segs, q, dirs)
        chunks = self._segments_chunks(len(dirs), plans, len(on), 0)
        res = self._map(lambda ch: self._segments_chunk(segs, plans, on, dirs, ch, False)[0],
                        chunks)
        for ch, nu in zip(chunks, res, strict=True):
            out[on, ch] = np.einsum("n,gkn->kg", self.nu0, nu)
        return out

    def segments_vjp(
        self,
        segments: tuple[tuple[float, float], ...],
        q: np.ndarray,
        dirs: np.ndarray,
        sbar: np.ndarray,
        lam_acc: np.ndarray,
        w_acc: list,
        nu0_acc: np.ndarray,
    ) -> None:
        """Reverse mode through a piecewise-constant waveform (recomputes the forward pass
        per direction chunk, keeping the states at the segment starts)."""
        lam = self.lam
        segs = tuple((float(d), float(f)) for d, f in segments if d > 0)
        te = sum(d for d, _ in segs)
        zero = q == 0.0
        self._static_vjp(te, float(np.real(sbar[zero]).sum()), lam_acc, nu0_acc)
        on = np.flatnonzero(~zero)
        if len(on) == 0:
            return
        plans = self._segment_plans(segs, q, dirs)

        def one(i: int, ch: slice, lam_acc: np.ndarray, w_acc: list,
                nu0_acc: np.ndarray) -> None:
            nu_end, states = self._segments_chunk(segs, plans, on, dirs, ch, True)
            wg = self._wg(dirs[ch])
            sb = sbar[on][:, ch].T[:, :, None]  # (Gc, C, 1)
            # S = ν0ᵀ ν_end:  ν̄0 += Re Σ conj(S̄) ν_end;  ν̄_end = S̄ ν0.
            nu0_acc += np.real(np.conj(sb) * nu_end).sum(axis=(0, 1))
            nubar = sb * self.nu0[None, None, :]
            for m in range(len(segs) - 1, -1, -1):
                duration, _ = segs[m]
                prev = states[m]
                if plans[m] is None:
                    ph = exp_divided_differences(lam, duration)
                    r = _re_outer(nubar, prev)
                    lam_acc += ph * (r + r.T)
                    nubar = np.exp(-duration * lam)[None, None, :] * nubar
                else:
                    strength, plan = plans[m]
                    blk = ChebyshevBlock(lam, wg, duration, strength[ch][:, on],
                                         plan.shift[ch][:, on], plan)
                    _, t = blk.forward(prev, True)
                    nubar = blk.backward(t, nubar, dirs[ch], lam_acc, w_acc)
            nu0_acc += nubar.real.sum(axis=(0, 1))

        chunks = self._segments_chunks(len(dirs), plans, len(on), len(segs))
        self._accumulate(one, chunks, lam_acc, w_acc, nu0_acc)


# ------------------------------------------------------------------------- FE level
def flux_vjp_chunked(fe: FEModel, u: np.ndarray, v: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """(F,) ∂/∂κ_f of Σ_k u_kᵀ Q(κ) v_k for real (N, K) u, v, in bounded memory."""
    rows, cols = fe.flux_rows, fe.flux_cols
    w = np.empty(len(rows))
    for s0 in range(0, len(rows), chunk):
        sl = slice(s0, s0 + chunk)
        w[sl] = np.einsum("ik,ik->i", u[rows[sl]], v[cols[sl]])
    return np.asarray(fe.flux_map.T @ w)


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
    spec: object,
    a: sp.spmatrix,
    lam_bar: np.ndarray,
    w_bar: np.ndarray,
    nu0_bar: np.ndarray,
    *,
    correction: bool = True,
    rotation_solve: Callable | None = None,
    blocks: FluxBlocks | None = None,
) -> tuple[np.ndarray, dict]:
    """∂L/∂κ_f (F,) in (µm/µs)⁻¹ × [L] from the reduced cotangents (symmetric Λ̄, W̄_d).

    Frozen basis: Σ_ij Λ̄_ij φ_iᵀQ_fφ_j. With ``correction`` (default) the exact
    subspace-rotation term −Σ_i y_iᵀQ_fφ_i is added (see module docstring).
    """
    v = spec.vectors  # type: ignore[attr-defined]
    u = v @ lam_bar
    info: dict = {}
    if correction:
        if rotation_solve is None:
            from spinverse.autodiff.spectrum import rotation_solve as _rs

            rotation_solve = _rs
        jv = np.concatenate([np.asarray(j @ v) for j in fe.moments], axis=1)  # (N, 3n)
        g = jv @ (2.0 * w_bar).reshape(-1, v.shape[1])
        g += np.outer(fe.mass_ones, nu0_bar)
        y, info = rotation_solve(spec, fe, a, g)
        u -= y
    if blocks is None:
        blocks = FluxBlocks.build(fe)
    return blocks.vjp(u, v), info
