"""Reverse mode of the full-space propagator (:mod:`spinverse.solvers.fullspace`).

Each expansion y = F Σ_k c_k T_k(Z) v (fixed plan) is differentiated exactly: the dual
vectors b̃_k = M⁻¹b_k of the Clenshaw recurrence b_k = c_k ŷ + 2 Zᴴ b_{k+1} − b_{k+2} obey
the same recurrence with conj(Z) (M⁻¹ZᴴM = conj(Z) for Z = −τ/h·M⁻¹(A − μM) + iβM⁻¹J),
so no mass solves are needed, and

    ∂L/∂κ_f = −τ/h Σ_k α_k Re b̃_{k+1}ᴴ Q_f t_k,   α_0 = 1, α_k = 2,

accumulated as a sampled product on the sparsity pattern of Q, then mapped to faces by
the κ → Q map. For a real expansion (f = 0 pieces) the forward vectors t_k are recomputed backwards,
t_{k−1} = 2Z t_k − t_{k+1}, from the last two the forward pass kept, and the recomputed t_0
is compared with the stored input (``drift``); a complex one (gradient on), where that
backward recurrence is unstable, recomputes its vectors forwards from the stored input and
keeps them, a column block at a time.

Units: κ µm/µs, S µm³, τ µs.
"""

from __future__ import annotations

import numpy as np
import torch

from spinverse.solvers.fullspace import (
    TAPE_BYTES,
    Expansion,
    FullSpaceState,
    FullSpaceTape,
    csr_tensor,
    torch_threads,
)

#: Largest relative drift of the backwards-recomputed forward vectors accepted.
MAX_DRIFT = 1e-9
#: Below this many columns per block, storing every vector gives way to checkpoints.
FULL_STORE_MIN_COLUMNS = 4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / max(float(torch.linalg.vector_norm(b)),
                                                       1e-300))


def expansion_vjp(ex: Expansion, tape: list, dual: torch.Tensor, gacc: torch.Tensor
                  ) -> tuple[torch.Tensor, float]:
    """Dual cotangent (M⁻¹ v̄) of the input of ``ex.forward`` given that of its output
    (N, 2C); adds Σ −τ/h α_k b̃_{k+1} t_kᵀ, sampled on the flux pattern, to ``gacc``
    (torch CSR). Returns it and the largest relative drift of the recomputed inputs."""
    drift = 0.0
    for j in range(ex.substeps - 1, -1, -1):
        dual, d = _step_vjp(ex, tape[j], dual, gacc)
        drift = max(drift, d)
    return dual, drift


def _step_vjp(ex: Expansion, tape: tuple, dual: torch.Tensor, gacc: torch.Tensor
              ) -> tuple[torch.Tensor, float]:
    """One substep. A real expansion (spectrum of Z in [−1, 1]: the backward recurrence
    is stable) recomputes its vectors backwards and keeps the result when the drift is
    below :data:`MAX_DRIFT`; otherwise (complex Z, where running the recurrence backwards
    amplifies round-off) the vectors are recomputed forwards and stored, a few columns at
    a time."""
    if not ex.has_j:
        local = _zero_pattern(gacc)
        out, drift = _recurrence_vjp(ex, tape, dual, local)
        if drift <= MAX_DRIFT:
            gacc.values().add_(local.values())
            return out, drift
    return _stored_vjp(ex, tape[0], dual, gacc), 0.0


def _zero_pattern(gacc: torch.Tensor) -> torch.Tensor:
    return csr_tensor(gacc.crow_indices(), gacc.col_indices(), torch.zeros_like(gacc.values()),
                gacc.shape)


def _recurrence_vjp(ex: Expansion, tape: tuple, dual: torch.Tensor, gacc: torch.Tensor
                    ) -> tuple[torch.Tensor, float]:
    """Clenshaw dual recurrence with t_k recomputed backwards from (t_{K−1}, t_K)."""
    v, t_lo, t_hi = tape
    c = ex.coeffs
    kdeg = ex.degree
    yhat = ex.times_factor(dual, True)
    scale = ex.alpha  # −τ/h
    b_next2: torch.Tensor | None = None
    b_next = yhat * float(c[kdeg])
    b_spare = torch.empty_like(v)
    t_cur = t_lo
    t_spare = torch.empty_like(v)
    for k in range(kdeg - 1, 0, -1):
        torch.sparse.sampled_addmm(gacc, b_next, t_cur.T, beta=1.0, alpha=2.0 * scale,
                                   out=gacc)
        b_k = ex.twice_z_minus(b_next, b_next2, True, b_spare)
        b_k.add_(yhat, alpha=float(c[k]))
        t_new = ex.twice_z_minus(t_cur, t_hi, False, t_spare)
        b_spare = b_next2 if b_next2 is not None else torch.empty_like(v)
        b_next2, b_next = b_next, b_k
        t_spare = t_hi
        t_hi, t_cur = t_cur, t_new
    drift = _rel(t_cur, v) if kdeg > 1 else 0.0
    torch.sparse.sampled_addmm(gacc, b_next, v.T, beta=1.0, alpha=scale, out=gacc)
    out = ex.twice_z_minus(b_next, b_next2, True, b_spare, two=1.0)
    out.add_(yhat, alpha=float(c[0]))
    return out, drift


def _stored_vjp(ex: Expansion, v: torch.Tensor, dual: torch.Tensor, gacc: torch.Tensor
                ) -> torch.Tensor:
    """Clenshaw dual recurrence against forward vectors recomputed from the substep input
    ``v``: all K of them when that leaves at least :data:`FULL_STORE_MIN_COLUMNS` columns
    per block within :data:`TAPE_BYTES`; else with checkpoints (a first pass keeps
    (t_s, t_{s+1}) every m ≈ √K steps, then each stretch of m vectors is recomputed from
    its checkpoint and consumed backwards: about 3√K vectors per column, one more pass)."""
    n, ncol = v.shape[0], v.shape[1] // 2
    c = ex.coeffs
    kdeg = ex.degree
    scale = ex.alpha
    if TAPE_BYTES // (kdeg * n * 16) >= FULL_STORE_MIN_COLUMNS:
        m = kdeg  # every vector fits for enough columns: one recomputation, no checkpoints
    else:
        m = max(1, int(np.ceil(np.sqrt(kdeg))))
    n_vec = 2 * (-(-kdeg // m)) + m + 6
    width = max(1, int(TAPE_BYTES // (n_vec * n * 16)))
    out = torch.empty_like(v)
    for s0 in range(0, ncol, width):
        sl = slice(s0, min(ncol, s0 + width))
        idx = torch.cat([torch.arange(sl.start, sl.stop), ncol + torch.arange(sl.start, sl.stop)])
        sub = ex.columns(sl)
        vs = v[:, idx].contiguous()
        ckpt = _checkpoints(sub, vs, m)
        yhat = sub.times_factor(dual[:, idx].contiguous(), True)
        b_next2: torch.Tensor | None = None
        b_next = yhat * float(c[kdeg])
        spare = torch.empty_like(vs)
        store = torch.empty((m, n, len(idx)), dtype=torch.float64)
        for start in range((kdeg - 1) // m * m, -1, -m):
            stop = min(start + m, kdeg)
            t_s, t_s1 = ckpt[start]
            store[0].copy_(t_s)
            if stop - start > 1:
                store[1].copy_(t_s1)
            for j in range(2, stop - start):
                sub.twice_z_minus(store[j - 1], store[j - 2], False, store[j])
            for k in range(stop - 1, start - 1, -1):
                t_k = store[k - start]
                if k == 0:
                    torch.sparse.sampled_addmm(gacc, b_next, t_k.T, beta=1.0, alpha=scale,
                                               out=gacc)
                    break
                torch.sparse.sampled_addmm(gacc, b_next, t_k.T, beta=1.0, alpha=2.0 * scale,
                                           out=gacc)
                b_k = sub.twice_z_minus(b_next, b_next2, True, spare)
                b_k.add_(yhat, alpha=float(c[k]))
                spare = b_next2 if b_next2 is not None else torch.empty_like(vs)
                b_next2, b_next = b_next, b_k
        o = sub.twice_z_minus(b_next, b_next2, True, spare, two=1.0)
        o.add_(yhat, alpha=float(c[0]))
        out[:, idx] = o
    return out


def _checkpoints(ex: Expansion, v: torch.Tensor, m: int
                 ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{s: (t_s, t_{s+1})} for s = 0, m, 2m, … < K of the forward recurrence from v."""
    kdeg = ex.degree
    t_prev = v
    t_cur = ex.twice_z_minus(v, None, False, torch.empty_like(v), two=1.0)
    ckpt = {0: (v, t_cur)}
    if m >= kdeg:
        return ckpt
    spare = torch.empty_like(v)
    for j in range(1, kdeg):  # produces t_{j+1}; afterwards (t_prev, t_cur) = (t_j, t_{j+1})
        t_next = ex.twice_z_minus(t_cur, t_prev, False, spare)
        spare = t_prev if (t_prev is not v and not _kept(ckpt, t_prev)) \
            else torch.empty_like(v)
        t_prev, t_cur = t_cur, t_next
        if j % m == 0:
            ckpt[j] = (t_prev, t_cur)
    return ckpt


def _kept(ckpt: dict, t: torch.Tensor) -> bool:
    return any(t is a or t is b for a, b in ckpt.values())


def _tape_vjp(state: FullSpaceState, tp: FullSpaceTape, col_bar: np.ndarray,
              gacc: torch.Tensor) -> float:
    """Reverse mode of one column block given S̄ of its columns (C,) complex."""
    ncol = len(tp.columns)
    if tp.kind == "pgse":  # S = wᴴMw real: M⁻¹w̄ = 2 Re(S̄) w
        w = tp.final
        assert w is not None
        g = torch.from_numpy(np.tile(2.0 * col_bar.real, 2))
        dual = w * g
    else:  # S = 1ᵀM m: M⁻¹m̄ = S̄ 1
        dual = torch.empty((state.model.n, 2 * ncol), dtype=torch.float64)
        dual[:, :ncol] = torch.from_numpy(np.ascontiguousarray(col_bar.real))
        dual[:, ncol:] = torch.from_numpy(np.ascontiguousarray(col_bar.imag))
    drift = 0.0
    for ex, tape in zip(reversed(tp.expansions), reversed(tp.tapes), strict=True):
        dual, d = expansion_vjp(ex, tape, dual, gacc)
        drift = max(drift, d)
    return drift


def fullspace_backward(state: FullSpaceState, sbar: np.ndarray) -> tuple[np.ndarray, dict]:
    """(F,) ∂L/∂κ_f (grid face order) given S̄ (n_seq, n_b, n_dir), δL = Re Σ conj(S̄)δS,
    and diagnostics (``drift``: largest relative error of the recomputed forward vectors).
    """
    fe = state.model.fe
    n = fe.n_dofs
    sbar = np.asarray(sbar, dtype=complex)
    n_dir = state.protocol.n_directions
    with torch_threads(state.n_threads):
        gacc = csr_tensor(torch.from_numpy(fe.flux_indptr.astype(np.int64)),
                    torch.from_numpy(fe.flux_cols.astype(np.int64)),
                    torch.zeros(len(fe.flux_cols), dtype=torch.float64), (n, n))
        drift = 0.0
        for i, tapes in enumerate(state.tapes):
            q = np.asarray(state.protocol.q(i), dtype=float)
            bar = sbar[i].reshape(-1).copy()
            # The q = 0 column stands for every (q = 0, direction) entry.
            zero_rows = np.flatnonzero(q == 0.0)
            if len(zero_rows):
                bar[zero_rows[0] * n_dir] = sbar[i][zero_rows].sum()
            for tp in tapes:
                cb = bar[tp.columns]
                if np.any(cb):
                    drift = max(drift, _tape_vjp(state, tp, cb, gacc))
        grad = fe.flux_map.T @ gacc.values().numpy()
    return np.asarray(grad), {"drift": drift}
