"""The subspace-rotation solve of the gradient (see :mod:`spinverse.autodiff.vjp`).

For the kept modes (λ_i, φ_i) of :func:`spinverse.solvers.spectrum.solve_spectrum`,
solves (A − λ_i M) y_i = Pᵀ g_i with y_i M-orthogonal to the kept modes: with the full
spectrum (dense path) by the spectral formula (two GEMMs), otherwise by deflated
preconditioned CG. Units: λ, σ in 1/µs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from spinverse.errors import SolverError
from spinverse.fem.assembly import FEModel
from spinverse.solvers.spectrum import Spectrum, spd_factor


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
