"""Lowest Laplace eigenmodes of the FE model, truncated at a spectral gap.

Solves (K + Q) φ = λ M φ with φᵀ M φ = 1 for every λ ≤ λ_max (1/µs), then extends the
set so that it never ends inside a cluster of nearly equal eigenvalues: a truncation
through a degenerate cluster would make the reduced model depend on an arbitrary choice
of basis vectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from threadpoolctl import threadpool_limits

from spinverse.errors import SolverError

log = logging.getLogger(__name__)

#: Below this many unknowns a dense generalised eigen-solver is used by default.
DENSE_MAX_DOFS = 500
#: Above this fraction of wanted modes out of all unknowns, LAPACK beats ARPACK.
DENSE_FRACTION = 0.2


def count_below(stiffness: sp.spmatrix, mass: sp.spmatrix, lam: float) -> int | None:
    """Number of eigenvalues of (stiffness, mass) below ``lam`` by Sylvester's law of
    inertia: the negative pivots of a symmetric LDLᵀ factorisation of A − λM.

    Uses SuperLU with symmetric ordering and diagonal pivoting; returns None when that
    factorisation is not symmetric or breaks down (then callers fall back to growing k).
    """
    shifted = (stiffness - lam * mass).tocsc()
    try:
        lu = sla.splu(shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options={"SymmetricMode": True})
    except RuntimeError:
        return None
    if not np.array_equal(lu.perm_r, lu.perm_c):
        return None
    diag = lu.U.diagonal()
    if not np.all(np.isfinite(diag)) or np.any(diag == 0):
        return None
    return int(np.count_nonzero(diag < 0))


@dataclass(frozen=True)
class EigenBasis:
    """Kept eigenpairs, ``values`` (n,) in 1/µs ascending and M-orthonormal ``vectors``
    (N, n); ``next_value`` is the first eigenvalue not kept (inf when all were kept)."""

    values: np.ndarray
    vectors: np.ndarray
    lambda_max: float
    next_value: float
    method: str

    @property
    def n_modes(self) -> int:
        return len(self.values)

    @property
    def gap(self) -> float:
        """Relative gap between the last kept and the first discarded eigenvalue."""
        if not np.isfinite(self.next_value) or self.n_modes == 0:
            return np.inf
        last = self.values[-1]
        return float((self.next_value - last) / max(abs(self.next_value), 1e-300))


def _cut(values: np.ndarray, lambda_max: float, cluster_rtol: float, scale: float) -> int:
    """Number of leading values to keep: all ≤ λ_max, extended through any cluster."""
    n = int(np.searchsorted(values, lambda_max, side="right"))
    while 0 < n < len(values) and values[n] - values[n - 1] <= cluster_rtol * max(
        abs(values[n]), scale
    ):
        n += 1
    return n


def laplace_eigenmodes(
    stiffness: sp.spmatrix,
    mass: sp.spmatrix,
    lambda_max: float,
    *,
    cluster_rtol: float = 1e-6,
    method: str = "auto",
    k_guess: int | None = None,
) -> EigenBasis:
    """Eigenpairs of (stiffness, mass) with λ ≤ ``lambda_max`` (1/µs), cut at a gap.

    ``method``: ``"dense"`` (LAPACK, for small N), ``"sparse"`` (shift-invert Lanczos via
    ARPACK, with a growing number of requested modes) or ``"auto"``. ``cluster_rtol`` is
    the relative distance under which two eigenvalues count as one cluster.
    """
    n_dofs = stiffness.shape[0]
    if lambda_max <= 0 or not np.isfinite(lambda_max):
        raise SolverError(f"lambda_max must be positive and finite, got {lambda_max}")
    scale = 1e-9 * lambda_max
    n_below = count_below(stiffness, mass, lambda_max) if method != "dense" else None
    if method == "auto":
        small = n_dofs <= DENSE_MAX_DOFS
        many = n_below is None or n_below > DENSE_FRACTION * n_dofs
        method = "dense" if small or many else "sparse"
    if k_guess is None and n_below is not None:
        k_guess = n_below
    if method == "dense":
        values, vectors = _dense(stiffness, mass, lambda_max, cluster_rtol, scale)
    elif method == "sparse":
        values, vectors = _sparse(stiffness, mass, lambda_max, cluster_rtol, scale, k_guess)
    else:
        raise SolverError(f"unknown eigen method {method!r}; use 'dense', 'sparse' or 'auto'")
    if not np.all(np.isfinite(values)):
        raise SolverError("eigen-solver returned non-finite eigenvalues")
    n = _cut(values, lambda_max, cluster_rtol, scale)
    nxt = float(values[n]) if n < len(values) else np.inf
    if n == 0:
        raise SolverError(
            f"no eigenvalue below lambda_max = {lambda_max:g} 1/µs (smallest "
            f"{values[0]:g}); increase the length scale"
        )
    return EigenBasis(values[:n].copy(), np.ascontiguousarray(vectors[:, :n]), lambda_max,
                      nxt, method)


def _dense(
    stiffness: sp.spmatrix, mass: sp.spmatrix, lambda_max: float, cluster_rtol: float,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """LAPACK path: reduce to standard form with the Cholesky factor of M, then the
    MRRR solver (``evr``) for the eigenvalues up to 2 λ_max (all of them if needed)."""
    a = stiffness.toarray() if sp.issparse(stiffness) else np.asarray(stiffness, float)
    m = mass.toarray() if sp.issparse(mass) else np.asarray(mass, float)
    chol = la.cholesky(m, lower=True, check_finite=False)
    c = la.solve_triangular(chol, a, lower=True, check_finite=False)
    c = la.solve_triangular(chol, c.T, lower=True, check_finite=False)
    c = 0.5 * (c + c.T)
    try:
        values, y = la.eigh(c, subset_by_value=(-np.inf, 2.0 * lambda_max), driver="evr",
                            check_finite=False)
    except la.LinAlgError:
        # MRRR can fail on large clusters of (exactly) repeated eigenvalues, which
        # symmetric grids have: take the whole spectrum by divide and conquer instead.
        log.debug("eigh(evr) failed on %d unknowns; using the full spectrum (evd)", len(c))
        values, y = la.eigh(c, driver="evd", check_finite=False)
    if _cut(values, lambda_max, cluster_rtol, scale) >= len(values) and len(values) < len(c):
        values, y = la.eigh(c, driver="evd", check_finite=False)
    vectors = la.solve_triangular(chol.T, y, lower=False, check_finite=False)
    return values, vectors


def _sparse(
    stiffness: sp.spmatrix,
    mass: sp.spmatrix,
    lambda_max: float,
    cluster_rtol: float,
    scale: float,
    k_guess: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    n_dofs = stiffness.shape[0]
    a = sp.csc_matrix(stiffness)
    m = sp.csc_matrix(mass)
    # Shift slightly below zero: A − σM is then positive definite (A is semi-definite).
    sigma = -1e-3 * lambda_max
    lu = sla.splu((a - sigma * m).tocsc())
    op = sla.LinearOperator((n_dofs, n_dofs), matvec=lu.solve, dtype=np.float64)
    k = max(16, int(k_guess * 1.1) + 8) if k_guess else 64
    while True:
        if k >= n_dofs // 4:
            log.debug("eigsh: %d of %d modes requested, switching to LAPACK", k, n_dofs)
            return _dense(stiffness, mass, lambda_max, cluster_rtol, scale)
        try:
            # ARPACK's work is sparse solves and small dense updates: one BLAS thread is
            # as fast and does not suffer from oversubscription on shared machines.
            with threadpool_limits(limits=1, user_api="blas"):
                values, vectors = sla.eigsh(
                    a, k=k, M=m, sigma=sigma, which="LM", OPinv=op, tol=0.0,
                    ncv=min(n_dofs, k + max(32, k // 2)),
                )
        except sla.ArpackNoConvergence as exc:  # pragma: no cover - rare
            raise SolverError(f"ARPACK did not converge for {k} modes: {exc}") from exc
        order = np.argsort(values)
        values, vectors = values[order], vectors[:, order]
        n = _cut(values, lambda_max, cluster_rtol, scale)
        if n < k:
            return values, vectors
        log.debug("eigsh: %d modes not enough below %g, retrying", k, lambda_max)
        k = int(k * 1.6) + 8
