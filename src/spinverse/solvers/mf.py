"""Matrix formalism: the Bloch–Torrey signal in a truncated Laplace eigenbasis.

In the basis of the kept eigenmodes Φ (φᵀMφ = 1, eigenvalues Λ ≤ λ_max) the magnetisation
coefficients obey ν' = −(Λ + i q f(t) W(ĝ)) ν with W(ĝ) = Φᵀ(Σ_d ĝ_d J_d)Φ (µm) and
ν(0) = ν₀ = ΦᵀMρ; the signal is S = ν₀ᵀ ν(TE) in µm³. For PGSE with real ν₀,
S = uᴴ exp(−(Δ−δ)Λ) u with u = exp(−δ(Λ + iqW)) ν₀, one exponential action per
(b, direction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import Sequence
from spinverse.fem.assembly import FEModel
from spinverse.solvers.chebyshev import DEFAULT_TOL, expm_action, plan_expansion
from spinverse.solvers.eigen import EigenBasis, laplace_eigenmodes

#: Below this many modes the propagation runs on one BLAS thread.
SMALL_MODEL_MODES = 256
#: Longest piecewise-constant segment (µs) used to sample smooth waveforms (cosine OGSE).
SMOOTH_WAVEFORM_SEGMENT_US = 20.0


@dataclass(frozen=True, eq=False)
class ReducedModel:
    """The FE model projected on its kept eigenmodes.

    ``values`` (n,) 1/µs, ``moments`` (3, n, n) µm, ``nu0`` (n,) µm^{3/2}.
    ``dof_points`` (N, 3) µm bounds the field of values of the moment matrices.
    """

    basis: EigenBasis
    moments: np.ndarray
    nu0: np.ndarray
    dof_points: np.ndarray

    @property
    def values(self) -> np.ndarray:
        return self.basis.values

    @property
    def n_modes(self) -> int:
        return self.basis.n_modes

    def direction_moments(self, directions: np.ndarray) -> np.ndarray:
        """(G, n, n) W(ĝ) for each unit direction (G, 3)."""
        return np.einsum("gd,dij->gij", directions, self.moments)

    def direction_extent(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centre, half_range) of x·ĝ over the domain, (G,) each, µm."""
        proj = self.dof_points @ np.asarray(directions, dtype=float).T  # (N, G)
        lo, hi = proj.min(axis=0), proj.max(axis=0)
        return 0.5 * (lo + hi), 0.5 * (hi - lo)


def reduce_model(
    fe: FEModel,
    kappa: np.ndarray,
    lambda_max: float,
    *,
    eig_method: str = "auto",
    cluster_rtol: float = 1e-6,
    k_guess: int | None = None,
) -> ReducedModel:
    """Eigen-solve A(κ) = K + Q(κ) against M and project J_d and ρ = 1 (λ_max in 1/µs)."""
    basis = laplace_eigenmodes(
        fe.operator(kappa), fe.mass, lambda_max,
        cluster_rtol=cluster_rtol, method=eig_method, k_guess=k_guess,
    )
    phi = basis.vectors
    moments = np.stack([phi.T @ (j @ phi) for j in fe.moments])
    moments = 0.5 * (moments + moments.transpose(0, 2, 1))
    nu0 = phi.T @ fe.mass_ones
    return ReducedModel(basis, moments, nu0, fe.dof_points)


def _propagate_segments(
    reduced: ReducedModel,
    wg: np.ndarray,
    centre: np.ndarray,
    half: np.ndarray,
    segments: tuple[tuple[float, float], ...],
    q: np.ndarray,
    tol: float,
) -> np.ndarray:
    """ν(TE) for a piecewise-constant waveform; returns (G, n, K) complex."""
    lam = reduced.values
    n_dir, n_b = wg.shape[0], len(q)
    nu = np.broadcast_to(reduced.nu0[None, :, None], (n_dir, len(lam), n_b)).astype(complex)
    for duration, fval in segments:
        if duration <= 0:
            continue
        if fval == 0.0:
            nu = np.exp(-duration * lam)[None, :, None] * nu
            continue
        strength = np.broadcast_to(q[None, :] * fval, (n_dir, n_b))
        plan = plan_expansion(lam[0], lam[-1], duration, strength, centre, half, tol=tol)
        nu = expm_action(lam, wg, duration, strength, nu, plan)
    return nu


def sequence_signal(
    reduced: ReducedModel,
    sequence: Sequence,
    q: np.ndarray,
    directions: np.ndarray,
    *,
    tol: float = DEFAULT_TOL,
) -> np.ndarray:
    """S (n_b, n_dir) complex, µm³, for one sequence, q (n_b,) in 1/(µm·µs)."""
    lam = reduced.values
    wg = reduced.direction_moments(directions)
    centre, half = reduced.direction_extent(directions)
    n_dir = len(directions)
    if sequence.kind == "pgse":
        delta, big_delta = sequence.delta, sequence.Delta  # type: ignore[attr-defined]
        strength = np.broadcast_to(q[None, :], (n_dir, len(q)))
        plan = plan_expansion(lam[0], lam[-1], delta, strength, centre, half, tol=tol)
        v0 = np.broadcast_to(reduced.nu0[None, :, None], (n_dir, len(lam), len(q)))
        u = expm_action(lam, wg, delta, strength, v0, plan)
        decay = np.exp(-(big_delta - delta) * lam)[None, :, None]
        s = np.einsum("gnk,gnk->gk", u.conj(), decay * u)
    else:
        segments = sequence.piecewise(SMOOTH_WAVEFORM_SEGMENT_US)
        nu = _propagate_segments(reduced, wg, centre, half, segments, q, tol)
        s = np.einsum("n,gnk->gk", reduced.nu0, nu)
    return s.T


def mf_signal(reduced: ReducedModel, protocol: Protocol, *, tol: float = DEFAULT_TOL) -> np.ndarray:
    """S (n_sequences, n_bvalues, n_directions) complex128 in µm³ for a protocol."""
    out = np.empty((protocol.n_sequences, protocol.n_bvalues, protocol.n_directions), complex)
    # Small reduced models are latency-bound: one BLAS thread avoids threading overhead.
    threads = 1 if reduced.n_modes < SMALL_MODEL_MODES else None
    with threadpool_limits(limits=threads, user_api="blas"):
        for i, seq in enumerate(protocol.sequences):
            out[i] = sequence_signal(reduced, seq, protocol.q(i), protocol.directions, tol=tol)
    return out
