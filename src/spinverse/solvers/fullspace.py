"""Bloch–Torrey propagation in the full sparse FE space: no eigenmodes.

The semi-discrete model M m' = −(K + Q(κ) + i q f(t) J_g) m, m(0) = 1, S = 1ᵀM m(TE) is
propagated directly: on each piecewise-constant piece of the waveform,

    m ← exp(−τ M⁻¹(A + i s J_g)) m,   A = K + Q(κ), s = q·f,

is a Chebyshev expansion in the sparse operator M⁻¹A (M is block diagonal: one 4×4 block
per tet, so M⁻¹A and M⁻¹J_d are sparse with the pattern of A and J_d). Its degree is set by
τ·ρ, with ρ an upper bound of the spectrum of (A, M), not by how many eigenvalues lie below
λ_max: at intermediate κ, where every tet is nearly its own compartment and the eigen path
needs thousands of modes, this costs a few hundred sparse products.

All columns (b-value × direction pairs) advance together as one real (N, 2C) block (real
parts, then imaginary parts); the products run on torch's threaded sparse kernels. PGSE
uses the symmetry S = wᴴ M w, w = exp(−(Δ−δ)/2 · M⁻¹A) exp(−δ M⁻¹(A + iqJ_g)) 1: two
expansions per column instead of three.

This is the *untruncated* FE model (no λ_max cut): it differs from the matrix formalism by
the truncation's error (the eigen path with every mode kept gives the same numbers). The
reverse mode (:mod:`spinverse.autodiff.fullspace`) is the exact derivative of the
polynomials evaluated (fixed plans), with the forward vectors recomputed backwards by the
three-term recurrence (no tape of every iterate; the drift of that recomputation is
measured on each call).

Units: M µm³, A µm³/µs, J µm⁴, ρ 1/µs, τ µs, s 1/(µm·µs), κ µm/µs, S µm³.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, Sequence
from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel
from spinverse.solvers.chebyshev import ChebyshevPlan, plan_expansion
from spinverse.solvers.reduced import SMOOTH_WAVEFORM_SEGMENT_US, Segments, clean_segments

#: Chebyshev tail bound of the full-space expansions, relative to the column norm.
FULLSPACE_TOL = 1e-10
#: Safety factor on the Lanczos estimate of the largest eigenvalue of (A, M).
RHO_MARGIN = 1.05
#: Bytes of one (N, 2C) block of columns the propagation works on at a time.
BLOCK_BYTES = 96 * 2**20
#: Bytes the reverse mode may use to store the vectors of one expansion (it works on
#: as many columns at a time as fit).
TAPE_BYTES = 384 * 2**20


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
    """A float64 torch CSR tensor from its index and value arrays (sorted indices)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, dtype=torch.float64,
                                       check_invariants=False)


def torch_csr(m: sp.spmatrix) -> torch.Tensor:
    """A SciPy sparse matrix as a float64 torch CSR tensor (sorted indices)."""
    c = sp.csr_matrix(m, dtype=np.float64)
    c.sort_indices()
    return csr_tensor(torch.from_numpy(c.indptr.astype(np.int64)),
                      torch.from_numpy(c.indices.astype(np.int64)), torch.from_numpy(c.data),
                      c.shape)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU kernels on ``n`` threads inside the block."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def spectral_bound(a: sp.spmatrix, linv: sp.spmatrix) -> float:
    """An upper bound (1/µs) of the spectrum of (A, M), M = LLᵀ: the Lanczos estimate of
    the largest eigenvalue of L⁻¹AL⁻ᵀ times :data:`RHO_MARGIN`, rounded up to a power of
    2^(1/8)."""
    sym = (linv @ sp.csr_matrix(a) @ linv.T).tocsr()
    v0 = np.random.default_rng(7).standard_normal(sym.shape[0])
    top = sla.eigsh(sym, k=1, which="LA", tol=1e-4, v0=v0, ncv=min(sym.shape[0], 24),
                    return_eigenvectors=False)
    bound = RHO_MARGIN * max(float(top[0]), 1e-12)
    # Rounded up to a grid of ratio 2^(1/8): nearby κ states share one plan (so the
    # polynomial, hence the signal, is a smooth function of κ between grid points).
    return float(2.0 ** (np.ceil(8.0 * np.log2(bound)) / 8.0))


@dataclass(eq=False)
class FullSpaceModel:
    """The sparse operators of one κ state for full-space propagation.

    ``a`` = M⁻¹A (1/µs), ``j`` = M⁻¹(J_d − x0_d M) stacked side by side (N, 3N) (µm),
    ``x0`` (3,) µm the box centre, ``rho`` ≥ the largest eigenvalue of (A, M), ``mass``
    M (µm³). The shifted, scaled copies of ``a`` the expansions use are cached per scale.
    """

    fe: FEModel
    a: torch.Tensor
    j: torch.Tensor
    x0: np.ndarray
    rho: float
    mass: torch.Tensor
    tol: float = FULLSPACE_TOL
    _scaled: dict[float, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, fe: FEModel, linv: sp.spmatrix | None, kappa: np.ndarray, *,
              a: sp.spmatrix | None = None, tol: float = FULLSPACE_TOL,
              rho: float | None = None) -> FullSpaceModel:
        """From the FE model, its block mass factor ``linv`` (L⁻¹, M = LLᵀ) and per-face
        κ (µm/µs). Needs a block-diagonal mass matrix (every face finite). ``rho``: the
        spectral bound to use (1/µs; default: estimated), e.g. to hold the plans fixed."""
        if linv is None:
            raise SolverError("the full-space propagator needs every face finite (κ = ∞ "
                              "faces merge nodes and couple the mass matrix); use the "
                              "eigen path")
        a = fe.operator(kappa) if a is None else a
        minv = (linv.T @ linv).tocsr()
        pts = fe.dof_points
        x0 = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        eye = sp.identity(fe.n_dofs, format="csr")
        j = sp.hstack([minv @ fe.moments[d] - x0[d] * eye for d in range(3)]).tocsr()
        rho = spectral_bound(a, linv) if rho is None else float(rho)
        return cls(fe, torch_csr(minv @ a), torch_csr(j), x0, rho, torch_csr(fe.mass), tol)

    @property
    def n(self) -> int:
        return self.fe.n_dofs

    def scaled(self, alpha: float) -> torch.Tensor:
        """α(M⁻¹A − (ρ/2) I) as a torch CSR (cached per α)."""
        key = float(alpha)
        hit = self._scaled.get(key)
        if hit is None:
            crow, col = self.a.crow_indices(), self.a.col_indices()
            vals = alpha * self.a.values()
            rows = torch.repeat_interleave(torch.arange(self.n), crow[1:] - crow[:-1])
            vals = torch.where(rows == col, vals - alpha * 0.5 * self.rho, vals)
            hit = csr_tensor(crow, col, vals, (self.n, self.n))
            if len(self._scaled) > 8:
                self._scaled.clear()
            self._scaled[key] = hit
        return hit

    def work(self, protocol: Protocol) -> float:
        """Real columns × Chebyshev steps of a forward pass of ``protocol`` (the cost
        model's unit; a step with the gradient on counts 1.5)."""
        dirs = np.asarray(protocol.directions, dtype=float)
        total = 0.0
        for i, seq in enumerate(protocol.sequences):
            q = np.asarray(protocol.q(i), dtype=float)
            cols = 2.0 * (np.count_nonzero(q) * len(dirs) + 1)
            for dur, f in sequence_pieces(seq)[1]:
                ex = Expansion(self, dur, np.full(1, f * np.abs(q).max()), dirs[:1])
                total += cols * ex.degree * ex.substeps * (1.5 if ex.has_j else 1.0)
        return total

    def extent(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centre, half_range) of x·g over the DOFs for directions (C, 3), µm, with the
        centre x0·g (the shift the moment operator ``j`` carries)."""
        proj = (self.fe.dof_points - self.x0) @ np.asarray(dirs, dtype=float).T
        return np.asarray(dirs, dtype=float) @ self.x0, np.abs(proj).max(axis=0)


class Expansion:
    """exp(−τ M⁻¹(A + i s_c J_{g_c})) on a real (N, 2C) block of C complex columns.

    ``strength`` (C,) 1/(µm·µs), ``dirs`` (C, 3) unit directions. The plan (shift, scale,
    degree, substeps; :func:`plan_expansion` over the ellipse holding the field of values)
    is fixed at construction, so the reverse mode differentiates exactly this polynomial.
    """

    def __init__(self, model: FullSpaceModel, tau: float, strength: np.ndarray,
                 dirs: np.ndarray) -> None:
        self.model = model
        s = np.asarray(strength, dtype=float)
        dirs = np.asarray(dirs, dtype=float)
        centre, half = model.extent(dirs)
        plan: ChebyshevPlan = plan_expansion(0.0, model.rho, tau, s[:, None], centre, half,
                                             tol=model.tol)
        self.plan = plan
        self.substeps = int(plan.substeps)
        self.tau = float(tau) / self.substeps
        self.h = float(plan.scale)
        self.coeffs = plan.coeffs
        self.alpha = -self.tau / self.h
        self.zs = model.scaled(self.alpha)
        # Shift of the plan: −τρ/2 − iτ s c; the real part is in zs, the imaginary part in j.
        factor = np.exp(plan.shift[:, 0] + self.h)  # (C,)
        self.fr = torch.from_numpy(np.ascontiguousarray(factor.real))
        self.fi = torch.from_numpy(np.ascontiguousarray(factor.imag))
        beta = -self.tau * s / self.h  # (C,)  Z = zs + i β Σ_d g_d j_d
        self.has_j = bool(np.any(beta != 0.0))
        self.wg = torch.from_numpy(np.ascontiguousarray((beta[:, None] * dirs).T))  # (3, C)
        self.ncol = len(s)

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def columns(self, sl: slice) -> Expansion:
        """The same expansion (same plan) restricted to the columns ``sl``."""
        sub = copy.copy(self)
        sub.fr, sub.fi, sub.wg = self.fr[sl], self.fi[sl], self.wg[:, sl]
        sub.ncol = sub.fr.shape[0]
        return sub

    # ------------------------------------------------------------------ operator
    def twice_z_minus(self, t: torch.Tensor, prev: torch.Tensor | None, conj: bool,
                      out: torch.Tensor, two: float = 2.0) -> torch.Tensor:
        """out = two · Z t − prev (prev None: no subtraction); Z → conj(Z) with ``conj``
        (the operator of the dual recurrence)."""
        if prev is None:
            out.zero_()
            torch.addmm(out, self.zs, t, beta=0.0, alpha=two, out=out)
        else:
            torch.addmm(prev, self.zs, t, beta=-1.0, alpha=two, out=out)
        if self.has_j:
            self._add_j(t, two * (-1.0 if conj else 1.0), out)
        return out

    def _add_j(self, t: torch.Tensor, sign: float, out: torch.Tensor) -> None:
        """out += sign · i β Σ_d g_d j_d t, in the real/imaginary split layout."""
        c = self.ncol
        n = t.shape[0]
        stacked = torch.empty((3 * n, 2 * c), dtype=torch.float64)
        for d in range(3):
            w = sign * self.wg[d]
            blk = stacked[d * n:(d + 1) * n]
            # i w (t_r + i t_i) = −w t_i + i w t_r
            torch.mul(t[:, c:], -w, out=blk[:, :c])
            torch.mul(t[:, :c], w, out=blk[:, c:])
        torch.addmm(out, self.model.j, stacked, beta=1.0, alpha=1.0, out=out)

    def times_factor(self, y: torch.Tensor, conj: bool) -> torch.Tensor:
        """The columns of y times the plan's complex factor (conjugated with ``conj``)."""
        c = self.ncol
        fi = -self.fi if conj else self.fi
        yr, yi = y[:, :c], y[:, c:]
        return torch.cat([yr * self.fr - yi * fi, yi * self.fr + yr * fi], dim=1)

    # ------------------------------------------------------------------- forward
    def forward(self, v: torch.Tensor, keep: bool) -> tuple[torch.Tensor, list]:
        """(exp(…) v, tape); the tape holds per substep (input, t_{K−1}, t_K) when
        ``keep``."""
        tape: list = []
        y = v
        for _ in range(self.substeps):
            y, last = self._step(y)
            if keep:
                tape.append(last)
        return y, tape

    def _step(self, v: torch.Tensor, store: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, tuple]:
        """One substep: (exp(…) v, (v, t_{K−1}, t_K)); with ``store`` (K, N, 2C), the
        vectors t_0 … t_{K−1} are written there."""
        c = self.coeffs
        t_prev = v
        y = v * c[0]
        t_cur = self.twice_z_minus(v, None, False, torch.empty_like(v), two=1.0)
        y.add_(t_cur, alpha=float(c[1]))
        if store is not None:
            store[0].copy_(v)
        spare = torch.empty_like(v)
        for k in range(2, self.degree + 1):
            if store is not None:
                store[k - 1].copy_(t_cur)
            t_next = self.twice_z_minus(t_cur, t_prev, False, spare)
            y.add_(t_next, alpha=float(c[k]))
            spare = t_prev if t_prev is not v else torch.empty_like(v)
            t_prev, t_cur = t_cur, t_next
        return self.times_factor(y, False), (v, t_prev, t_cur)


# ------------------------------------------------------------------------- columns
@dataclass
class FullSpaceTape:
    """What one column block of one sequence keeps for the reverse mode."""

    kind: str  # "pgse" or "segments"
    columns: np.ndarray  # (C,) flat indices into (n_b, n_dir) of the block's columns
    expansions: list[Expansion]
    tapes: list[list]
    final: torch.Tensor | None = None  # PGSE: w (N, 2C)


def _columns(q: np.ndarray, n_dir: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat (b, direction) indices of the q ≠ 0 columns, and of one q = 0 column (or
    empty): S at q = 0 does not depend on the direction."""
    on = np.flatnonzero(q != 0.0)
    cols = (on[:, None] * n_dir + np.arange(n_dir)[None, :]).reshape(-1)
    zero = np.flatnonzero(q == 0.0)
    return cols, (zero[:1] * n_dir)


def _blocks(n_cols: int, n: int) -> list[slice]:
    """Column blocks of at most :data:`BLOCK_BYTES` per (N, 2C) array."""
    size = max(1, int(BLOCK_BYTES // (16 * n)))
    edges = np.linspace(0, n_cols, -(-n_cols // size) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _ones(n: int, c: int) -> torch.Tensor:
    v = torch.zeros((n, 2 * c), dtype=torch.float64)
    v[:, :c] = 1.0
    return v


def sequence_pieces(seq: Sequence) -> tuple[str, Segments]:
    """("pgse", ((δ, +1), ((Δ−δ)/2, 0))) for PGSE (the symmetric form), else
    ("segments", the piecewise-constant waveform)."""
    if isinstance(seq, PGSE):
        return "pgse", ((seq.delta, 1.0), (0.5 * (seq.Delta - seq.delta), 0.0))
    return "segments", clean_segments(seq.piecewise(SMOOTH_WAVEFORM_SEGMENT_US))


def sequence_forward(model: FullSpaceModel, seq: Sequence, q: np.ndarray, dirs: np.ndarray,
                     keep: bool) -> tuple[np.ndarray, list[FullSpaceTape], list[int]]:
    """S (n_b, n_dir) complex µm³ of one sequence, q (n_b,) 1/(µm·µs), its tapes and the
    Chebyshev degree × substeps of each piece."""
    q = np.asarray(q, dtype=float)
    dirs = np.asarray(dirs, dtype=float)
    n_b, n_dir = len(q), len(dirs)
    kind, pieces = sequence_pieces(seq)
    cols, zero = _columns(q, n_dir)
    allc = np.concatenate([zero, cols])
    flat = np.empty(n_b * n_dir, dtype=complex)
    tapes: list[FullSpaceTape] = []
    degrees: list[int] = []
    for blk in _blocks(len(allc), model.n):
        c = allc[blk]
        strength = q[c // n_dir]
        cdirs = dirs[c % n_dir]
        exps = [Expansion(model, dur, strength * f, cdirs) for dur, f in pieces]
        degrees = [ex.degree * ex.substeps for ex in exps]
        v = _ones(model.n, len(c))
        tps = []
        for ex in exps:
            v, tp = ex.forward(v, keep)
            tps.append(tp)
        nc = len(c)
        if kind == "pgse":  # S = wᴴ M w
            mw = model.mass @ v
            s = (v * mw).sum(dim=0)
            sig = (s[:nc] + s[nc:]).numpy().astype(complex)
        else:  # S = 1ᵀ M m
            mw = model.mass @ torch.ones((model.n, 1), dtype=torch.float64)
            s = (v * mw).sum(dim=0).numpy()
            sig = s[:nc] + 1j * s[nc:]
        flat[c] = sig
        if keep:
            tapes.append(FullSpaceTape(kind, c, exps, tps, v if kind == "pgse" else None))
    if len(zero):
        flat.reshape(n_b, n_dir)[q == 0.0, :] = flat[zero[0]]
    return flat.reshape(n_b, n_dir), tapes, degrees


@dataclass(eq=False)
class FullSpaceState:
    """One full-space forward pass: the model and the tapes of every sequence."""

    model: FullSpaceModel
    tapes: list[list[FullSpaceTape]]
    protocol: Protocol
    n_threads: int
    info: dict


def fullspace_signal(fe: FEModel, linv: sp.spmatrix | None, kappa: np.ndarray,
                     protocol: Protocol, *, n_threads: int = 1, keep: bool = False,
                     tol: float = FULLSPACE_TOL, a: sp.spmatrix | None = None,
                     rho: float | None = None, model: FullSpaceModel | None = None,
                     ) -> tuple[np.ndarray, FullSpaceState]:
    """S (n_seq, n_b, n_dir) complex µm³ by full-space propagation, and the state the
    reverse mode reuses (``keep``). ``rho``: fixed spectral bound (1/µs; default
    estimated per call); ``model``: an already built :class:`FullSpaceModel` of κ."""
    t0 = time.perf_counter()
    with torch_threads(n_threads):
        if model is None:
            model = FullSpaceModel.build(fe, linv, kappa, a=a, tol=tol, rho=rho)
        t1 = time.perf_counter()
        dirs = np.asarray(protocol.directions, dtype=float)
        out = np.empty((protocol.n_sequences, protocol.n_bvalues, protocol.n_directions),
                       dtype=complex)
        tapes = []
        degrees = []
        for i, seq in enumerate(protocol.sequences):
            out[i], tp, deg = sequence_forward(model, seq, protocol.q(i), dirs, keep)
            tapes.append(tp)
            degrees.append(deg)
    info = {"rho": model.rho, "setup_s": t1 - t0, "propagate_s": time.perf_counter() - t1,
            "degrees": degrees}
    return out, FullSpaceState(model, tapes, protocol, n_threads, info)
