"""Eigen-solves for the differentiable forward model and the subspace-rotation solve.

:func:`solve_spectrum` returns the kept modes (λ ≤ λ_max, cut at a gap with the same rule
as :func:`spinverse.solvers.eigen.laplace_eigenmodes`) plus modes *above* the cut:

* ``"dense"``: the full spectrum (LAPACK divide and conquer). When the mass matrix is
  block diagonal (every tet its own 4 nodes, no κ = ∞ faces) the pencil is reduced to
  standard form with the exact 4×4 block Cholesky factors, which is cheaper than the
  generalised driver. The rotation solve is then the spectral formula (two GEMMs).
* ``"sparse"``: shift-invert Lanczos (ARPACK, fixed start vector) for the kept modes and
  a margin of extra modes; the rotation solve is preconditioned CG on the M-orthogonal
  complement with the deflated preconditioner P(A − σ_bM)⁻¹ (one shift σ_b per block of
  columns, inside the block's range of λ_i), the extra modes handled exactly by the
  spectral formula.

``"auto"`` picks dense for small grids and when many modes are kept (counted beforehand
by Sylvester's law of inertia, :func:`spinverse.solvers.eigen.count_below`), sparse
otherwise.

Units: λ, μ in 1/µs; A, M as in :mod:`spinverse.fem.assembly`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from threadpoolctl import ThreadpoolController

from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel
from spinverse.solvers.eigen import _cut, count_below

log = logging.getLogger(__name__)

_CONTROLLER: ThreadpoolController | None = None


def blas_threads(n: int | None) -> Any:
    """Context limiting the BLAS libraries loaded so far to ``n`` threads (None: as is).
    A cached controller: cheaper than ``threadpool_limits`` on every call."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")


#: Up to this many unknowns ``"auto"`` may use the dense full spectrum (memory ≈ 5 N²
#: doubles: 3 GB at N = 8640, where it is 3× faster than ARPACK + CG for 1842 modes).
DENSE_MAX_DOFS = 9000
#: Below this many unknowns ``"auto"`` always uses the dense full spectrum.
DENSE_MIN_DOFS = 800
#: ``"auto"`` uses the dense path when more than this fraction of the modes is kept.
DENSE_FRACTION = 0.2


@dataclass(eq=False)
class Spectrum:
    """Kept modes ``values`` (n,) / ``vectors`` (N, n) (M-orthonormal) and ``extra_values``
    (m,) / ``extra_vectors`` (N, m) above the cut; ``complete``: the extra modes are the
    whole complement. ``next_value`` is the first eigenvalue not kept (1/µs)."""

    values: np.ndarray
    vectors: np.ndarray
    extra_values: np.ndarray
    extra_vectors: np.ndarray
    lambda_max: float
    next_value: float
    method: str
    complete: bool
    info: dict = field(default_factory=dict)

    @property
    def n_modes(self) -> int:
        return len(self.values)

    @property
    def gap(self) -> float:
        """Relative gap (μ_{n+1} − λ_n)/μ_{n+1} at the cut."""
        if not np.isfinite(self.next_value):
            return np.inf
        return float((self.next_value - self.values[-1]) / max(abs(self.next_value), 1e-300))


# ------------------------------------------------------------------------ mass factor
def block_mass_inverse_factor(fe: FEModel) -> sp.csr_matrix | None:
    """Sparse L⁻¹ with M = LLᵀ when M is block diagonal with one 4×4 block per tet (no
    merged nodes), else None."""
    dm = fe.dofmap
    if dm.n_dofs != dm.tet_dofs.size or not np.array_equal(
        np.sort(dm.tet_dofs.reshape(-1)), np.arange(dm.n_dofs)
    ):
        return None
    m = fe.mass.tocsr()
    idx = dm.tet_dofs  # (T, 4)
    mb = np.empty((len(idx), 4, 4))
    for i in range(4):
        for j in range(4):
            mb[:, i, j] = np.asarray(m[idx[:, i], idx[:, j]]).reshape(-1)
    # Nothing outside the diagonal blocks (no coupling between tets in M).
    if not np.isclose(mb.sum(), m.sum(), rtol=1e-12, atol=0):
        return None
    lb = np.linalg.cholesky(mb)
    linv = np.linalg.inv(lb)  # lower triangular blocks
    rows = np.repeat(idx, 4, axis=1).reshape(-1)
    cols = np.tile(idx, (1, 4)).reshape(-1)
    out = sp.csr_matrix((linv.reshape(-1), (rows, cols)), shape=m.shape)
    out.eliminate_zeros()
    return out


# ---------------------------------------------------------------------- eigen-solves
def solve_spectrum(
    fe: FEModel,
    a: sp.spmatrix,
    lambda_max: float,
    *,
    method: str = "auto",
    cluster_rtol: float = 1e-6,
    k_guess: int | None = None,
    linv: sp.spmatrix | None = None,
    n_threads: int | None = None,
) -> Spectrum:
    """Modes of (A, M) with λ ≤ ``lambda_max`` (1/µs) cut at a gap, plus modes above it.

    ``method``: ``"dense"``, ``"sparse"`` or ``"auto"`` (dense for small problems and
    when more than :data:`DENSE_FRACTION` of the modes lie below λ_max, counted by
    Sylvester's law of inertia; sparse otherwise and above :data:`DENSE_MAX_DOFS`
    unknowns). ``k_guess``: expected number of kept modes (sparse).
    ``linv``: a precomputed :func:`block_mass_inverse_factor` (dense path).
    ``n_threads``: BLAS threads of the dense path (ARPACK always runs on one: its work is
    sparse solves and small dense updates).
    """
    n_dofs = a.shape[0]
    if lambda_max <= 0 or not np.isfinite(lambda_max):
        raise SolverError(f"lambda_max must be positive and finite, got {lambda_max}")
    if method == "auto":
        if n_dofs <= DENSE_MIN_DOFS:
            method = "dense"
        else:
            n_below = count_below(a, fe.mass, lambda_max)
            if n_below is not None:
                k_guess = n_below
            many = n_below is None or n_below > DENSE_FRACTION * n_dofs
            method = "dense" if (many and n_dofs <= DENSE_MAX_DOFS) else "sparse"
    scale = 1e-9 * lambda_max
    if method == "dense":
        with blas_threads(n_threads):
            values, vectors = _dense_full(fe, a, linv)
        complete = True
    elif method == "sparse":
        with blas_threads(1):
            values, vectors = _sparse_margin(fe, a, lambda_max, cluster_rtol, scale,
                                             k_guess)
        complete = len(values) == n_dofs
    else:
        raise SolverError(f"unknown eigen method {method!r}; use 'dense', 'sparse' or 'auto'")
    if not np.all(np.isfinite(values)):
        raise SolverError("eigen-solver returned non-finite eigenvalues")
    n = _cut(values, lambda_max, cluster_rtol, scale)
    if n == 0:
        raise SolverError(
            f"no eigenvalue below lambda_max = {lambda_max:g} 1/µs (smallest "
            f"{values[0]:g}); increase the length scale"
        )
    nxt = float(values[n]) if n < len(values) else np.inf
    return Spectrum(
        values=values[:n].copy(),
        vectors=np.ascontiguousarray(vectors[:, :n]),
        extra_values=values[n:].copy(),
        extra_vectors=np.ascontiguousarray(vectors[:, n:]),
        lambda_max=float(lambda_max),
        next_value=nxt,
        method=method,
        complete=complete,
    )


def _dense_full(
    fe: FEModel, a: sp.spmatrix, linv: sp.spmatrix | None
) -> tuple[np.ndarray, np.ndarray]:
    if linv is None:
        linv = block_mass_inverse_factor(fe)
    if linv is not None:
        c = (linv @ sp.csr_matrix(a) @ linv.T).toarray()
        c = 0.5 * (c + c.T)
        values, z = la.eigh(c, driver="evd", check_finite=False, overwrite_a=True)
        vectors = np.asarray(linv.T @ z)
    else:
        values, vectors = la.eigh(a.toarray(), fe.mass.toarray(), driver="gvd",
                                  check_finite=False, overwrite_a=True, overwrite_b=True)
    return values, vectors


def spd_factor(k: sp.spmatrix) -> sla.SuperLU:
    """Sparse LU of a symmetric positive definite matrix: symmetric minimum-degree
    ordering and no pivoting (half the fill of the default COLAMD ordering here)."""
    kc = sp.csc_matrix(k)
    try:
        return sla.splu(kc, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                        options={"SymmetricMode": True})
    except RuntimeError:  # pragma: no cover - numerically singular pivot
        return sla.splu(kc, permc_spec="MMD_AT_PLUS_A")


def _sparse_margin(
    fe: FEModel,
    a: sp.spmatrix,
    lambda_max: float,
    cluster_rtol: float,
    scale: float,
    k_guess: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift-invert Lanczos; keeps asking for more modes until the cut leaves a margin of
    extra modes (≥ 10 % and ≥ 16) above it."""
    n_dofs = a.shape[0]
    ac, m = sp.csc_matrix(a), sp.csc_matrix(fe.mass)
    sigma = -1e-3 * lambda_max
    lu = spd_factor(ac - sigma * m)
    op = sla.LinearOperator((n_dofs, n_dofs), matvec=lu.solve, dtype=np.float64)
    k = max(32, int(k_guess * 1.2) + 24) if k_guess else 64
    # A fixed start vector: ARPACK's default is random, which makes runs differ in
    # round-off (the issue asks for deterministic gradients).
    v0 = np.random.default_rng(12345).standard_normal(n_dofs)
    while True:
        if k >= n_dofs - 1:
            return _dense_full(fe, a, None)
        try:
            values, vectors = sla.eigsh(
                ac, k=k, M=m, sigma=sigma, which="LM", OPinv=op, tol=0.0, v0=v0,
                ncv=min(n_dofs, max(2 * k + 1, k + 32)),
            )
        except sla.ArpackNoConvergence as exc:  # pragma: no cover - rare
            raise SolverError(f"ARPACK did not converge for {k} modes: {exc}") from exc
        order = np.argsort(values)
        values, vectors = values[order], vectors[:, order]
        n = _cut(values, lambda_max, cluster_rtol, scale)
        if k - n >= max(16, n // 10):
            return values, vectors
        log.debug("eigsh: %d modes leave no margin above %g, retrying", k, lambda_max)
        k = max(int(k * 1.5) + 8, int(n * 1.2) + 24)


# ------------------------------------------------------------------ rotation solve
def _block_shift(lam_all: np.ndarray, lo: float, hi: float, ceiling: float) -> float:
    """A shift σ inside [lo, hi] (1/µs) in the middle of the widest nearby gap between
    kept eigenvalues (so that A − σM is safely invertible), below ``ceiling``."""
    target = 0.5 * (lo + hi)
    j = int(np.searchsorted(lam_all, target))
    cands = []
    for i in range(max(j - 3, 1), min(j + 4, len(lam_all))):
        a, b = lam_all[i - 1], lam_all[i]
        if b > a:
            cands.append((b - a, 0.5 * (a + b)))
    if not cands:
        return min(target, 0.5 * (hi + ceiling))
    gap, mid = max(cands)
    return float(min(mid, 0.5 * (hi + ceiling)))


def _indefinite_factor(k: sp.spmatrix) -> sla.SuperLU:
    """Sparse LU of a symmetric (possibly indefinite) matrix, threshold pivoting."""
    return sla.splu(sp.csc_matrix(k), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                    options={"SymmetricMode": True})


def rotation_solve(
    spec: Spectrum,
    fe: FEModel,
    a: sp.spmatrix,
    g: np.ndarray,
    *,
    rtol: float = 1e-12,
    max_iter: int = 500,
    block: int = 256,
) -> tuple[np.ndarray, dict]:
    """Y (N, n) with (A − λ_i M) y_i = Pᵀ g_i and y_i M-orthogonal to the kept modes.

    ``g`` (N, n). Uses the spectral formula over the extra modes (exact when the spectrum
    is complete) and, on the rest of the complement, preconditioned CG with the deflated
    preconditioner P (A − σ_b M)⁻¹, one shift σ_b per block of columns, taken inside the
    block's range of λ_i (the preconditioned spectrum (μ_j − λ_i)/(μ_j − σ_b) is then
    close to 1: a few iterations).
    """
    lam = spec.values
    x_e, mu = spec.extra_vectors, spec.extra_values
    info: dict = {"method": "spectral" if spec.complete else "pcg"}
    coef = x_e.T @ g  # (m, n)
    coef /= mu[:, None] - lam[None, :]
    y = x_e @ coef
    if spec.complete:
        return y, info
    m = fe.mass
    vv = np.concatenate([spec.vectors, x_e], axis=1)  # deflated basis

    def proj_t(r: np.ndarray) -> np.ndarray:  # Pᵀ r = r − M V Vᵀ r
        return r - m @ (vv @ (vv.T @ r))

    def proj(z: np.ndarray) -> np.ndarray:  # P z = z − V Vᵀ M z
        return z - vv @ (vv.T @ (m @ z))

    mu_next = float(mu[-1]) if len(mu) else spec.next_value
    ac = sp.csr_matrix(a)
    iters, shifts = [], []
    n_blocks = -(-len(lam) // block)
    edges = np.linspace(0, len(lam), n_blocks + 1).round().astype(int)
    for c0, c1 in zip(edges[:-1], edges[1:], strict=True):
        cols = slice(int(c0), int(c1))
        li = lam[cols][None, :]
        sigma = _block_shift(lam, float(lam[cols][0]), float(lam[cols][-1]), mu_next)
        try:
            lu = _indefinite_factor(a - sigma * m)
        except RuntimeError:  # pragma: no cover - exactly singular: fall back below 0
            sigma = -0.25 * spec.lambda_max
            lu = spd_factor(a - sigma * m)
        shifts.append(sigma)
        rhs = proj_t(g[:, cols])
        x = np.zeros_like(rhs)
        r = rhs.copy()
        z = proj(lu.solve(r))
        p = z.copy()
        rz = np.einsum("ij,ij->j", r, z)
        rz0 = np.where(rz > 0, rz, 1.0)
        active = rz > 0
        it = 0
        while active.any() and it < max_iter:
            it += 1
            bp = ac @ p - (m @ p) * li
            pbp = np.einsum("ij,ij->j", p, bp)
            if np.any(pbp[active] <= 0):
                raise SolverError("rotation solve: operator not positive on the complement "
                                  "(the cut is not at a gap?)")
            alpha = np.where(active, rz / np.where(pbp > 0, pbp, 1.0), 0.0)
            x += alpha * p
            r -= alpha * bp
            # Deflated preconditioner P (A − σM)⁻¹: keeps the iterates in the complement
            # and removes the kept modes near σ, where (A − σM)⁻¹ is large.
            z = proj(lu.solve(r))
            rz_new = np.einsum("ij,ij->j", r, z)
            active = active & (np.abs(rz_new) > (rtol**2) * rz0)
            beta = np.where(active, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
            p = z + beta * p
            rz = rz_new
        if active.any():
            raise SolverError(f"rotation solve: CG did not converge in {max_iter} iterations")
        iters.append(it)
        y[:, cols] += proj(x)
    info.update(cg_iterations=iters, shifts=shifts, deflated=len(mu),
                mu_deflated_max=mu_next)
    return y, info
