"""The FE model projected on its kept Laplace eigenmodes, and the signal propagated there.

In the basis of the kept modes Φ (φᵀMφ = 1, eigenvalues Λ ≤ λ_max) the magnetisation
coefficients obey ν' = −(Λ + i q f(t) W(ĝ)) ν with W(ĝ) = Σ_d ĝ_d Φᵀ J_d Φ (µm) and
ν(0) = ν₀ = ΦᵀM1; the signal is S = ν₀ᵀ ν(TE) in µm³. For PGSE,
S = uᴴ exp(−(Δ−δ)Λ) u with u = exp(−δ(Λ + iqW)) ν₀ (real), one Chebyshev action per
(b, direction); other waveforms are propagated segment by segment.

The propagation runs direction chunk by direction chunk (the W_g of a chunk stays in
cache; the products are memory bound otherwise), optionally on worker threads, and keeps
what the reverse mode (:mod:`spinverse.autodiff.vjp`) reuses: the tapes.

Units: λ 1/µs, τ µs, q·f 1/(µm·µs), W µm, ν₀ µm^{3/2}, S µm³.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spinverse.acquisition.sequences import PGSE, Sequence
from spinverse.solvers.chebyshev import (
    DEFAULT_TOL,
    ChebyshevBlock,
    ChebyshevPlan,
    ChebyshevTape,
    plan_expansion,
)

#: Default memory (bytes) a chunk of directions may use for W_g stacks and tapes.
CHUNK_BYTES = 384 * 2**20
#: The W_g matrices of one chunk of directions should stay in cache across the whole
#: recurrence (the products are memory bound otherwise): bytes of W_g per chunk.
CACHE_BYTES = 8 * 2**20
#: Longest piecewise-constant segment (µs) used to sample smooth waveforms (cosine OGSE).
SMOOTH_WAVEFORM_SEGMENT_US = 20.0

Segments = tuple[tuple[float, float], ...]
SegmentPlan = tuple[np.ndarray, ChebyshevPlan] | None


def direction_chunks(
    n_dir: int, per_direction_bytes: float, budget: float, min_chunks: int = 1
) -> list[slice]:
    """Split ``n_dir`` directions into balanced slices whose memory stays under ``budget``
    bytes, at least ``min_chunks`` of them (when there are enough directions)."""
    size = max(1, int(budget // max(per_direction_bytes, 1.0)))
    n_chunks = min(max(-(-n_dir // size), min_chunks), n_dir)
    edges = np.linspace(0, n_dir, n_chunks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@dataclass
class SequenceTape:
    """What the forward pass of one sequence keeps for its reverse mode.

    ``u`` (G, C, n) first-pulse states of the q > 0 columns per direction chunk (PGSE),
    ``tapes`` one :class:`ChebyshevTape` per direction chunk (None: recomputed),
    ``segments`` the piecewise-constant waveform of a non-PGSE sequence.
    """

    kind: str
    u: list[np.ndarray] | None = None
    tapes: list[ChebyshevTape] | None = None
    segments: Segments | None = None  # the waveform propagated ("segments" kind)


class ReducedModel:
    """The reduced model of one κ state and its signal for any sequence.

    ``lam`` (n,) 1/µs, ``moments`` (3, n, n) µm, ``nu0`` (n,) µm^{3/2}, ``dof_points``
    (N, 3) µm (bounds the field of values of W_g). ``tol``: Chebyshev tail bound.
    ``chunk_bytes``: memory per chunk of directions; ``tape_bytes``: the most the
    forward passes keep for the reverse mode (beyond it, the reverse mode recomputes);
    ``workers``: threads over direction chunks.
    """

    def __init__(
        self,
        lam: np.ndarray,
        moments: np.ndarray,
        nu0: np.ndarray,
        dof_points: np.ndarray,
        *,
        tol: float = DEFAULT_TOL,
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
        """Number of kept modes."""
        return len(self.lam)

    @property
    def n_modes(self) -> int:
        """Number of kept modes (as :attr:`n`)."""
        return len(self.lam)

    @property
    def values(self) -> np.ndarray:
        """Kept eigenvalues (n,), 1/µs."""
        return self.lam

    # ----------------------------------------------------------------------- helpers
    def map(self, fn: Callable, items: list) -> list:
        """``[fn(x) for x in items]``, on ``workers`` threads (the BLAS products and large
        ufuncs release the GIL; BLAS itself should then run single-threaded)."""
        if self.workers == 1 or len(items) < 2:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.workers, len(items))) as ex:
            return list(ex.map(fn, items))

    def direction_extent(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centre, half_range) of x·ĝ over the domain, (G,) each, µm."""
        proj = self.dof_points @ np.asarray(dirs, dtype=float).T
        lo, hi = proj.min(axis=0), proj.max(axis=0)
        return 0.5 * (lo + hi), 0.5 * (hi - lo)

    def direction_moments(self, dirs: np.ndarray) -> np.ndarray:
        """(G, n, n) W(ĝ) for unit directions (G, 3)."""
        return np.tensordot(dirs, self.moments, axes=(1, 0))

    def plan(self, tau: float, strength: np.ndarray, dirs: np.ndarray) -> ChebyshevPlan:
        """Chebyshev plan of exp(−τ(Λ + i s W_g)) for strengths (G, C) over ``dirs``."""
        centre, half = self.direction_extent(dirs)
        return plan_expansion(self.lam[0], self.lam[-1], tau, strength, centre, half,
                              tol=self.tol)

    def chunks(self, n_dir: int, n_col: int, n_vectors: int) -> list[slice]:
        """Direction chunks: the W_g of a chunk fits in cache, and ``n_vectors`` stored
        vectors per column fit in memory."""
        n = self.n
        per = 8.0 * n * n + 16.0 * n * n_col * (n_vectors + 4)
        budget = min(self.chunk_bytes, max(CACHE_BYTES, 8.0 * n * n) * per / (8.0 * n * n))
        return direction_chunks(n_dir, per, budget, self.workers)

    def static_signal(self, te: float) -> float:
        """S at q = 0 (µm³) after an echo time ``te`` µs."""
        return float(np.sum(self.nu0**2 * np.exp(-te * self.lam)))

    def block(self, wg: np.ndarray, tau: float, strength: np.ndarray, plan: ChebyshevPlan,
              ch: slice, on: np.ndarray) -> ChebyshevBlock:
        """The Chebyshev block of direction chunk ``ch`` (its W_g ``wg``) and columns
        ``on``, given the strengths (G, nb) and plan of all directions."""
        return ChebyshevBlock(self.lam, wg, tau, strength[ch][:, on], plan.shift[ch][:, on],
                              plan)

    def start(self, g: int, ncol: int) -> np.ndarray:
        """ν₀ broadcast to (G, C, n) complex."""
        return np.broadcast_to(self.nu0[None, None, :], (g, ncol, self.n)).astype(complex)

    # -------------------------------------------------------------------------- PGSE
    def pgse_forward(
        self, delta: float, big_delta: float, q: np.ndarray, dirs: np.ndarray, keep: bool
    ) -> tuple[np.ndarray, SequenceTape]:
        """S (nb, G) µm³ of a PGSE sequence (δ, Δ µs), real, and its tape."""
        lam, n = self.lam, self.n
        n_dir = len(dirs)
        strength = np.broadcast_to(q[None, :], (n_dir, len(q)))
        plan = self.plan(delta, strength, dirs)
        on = np.flatnonzero(q != 0.0)
        out = np.empty((len(q), n_dir), dtype=complex)
        out[q == 0.0, :] = self.static_signal(big_delta + delta)
        tape = SequenceTape("pgse", [] if keep else None, [] if keep else None)
        if len(on) == 0:
            return out, tape
        e2 = np.exp(-(big_delta - delta) * lam)[None, None, :]
        ncol = len(on)
        chunks = self.chunks(n_dir, ncol, 2 * plan.degree)
        tape_need = 16.0 * n_dir * n * plan.degree * ncol * plan.substeps
        store = keep and tape_need <= self.tape_bytes_left
        if store:
            self.tape_bytes_left -= tape_need

        def one(ch: slice) -> tuple[np.ndarray, ChebyshevTape]:
            blk = self.block(self.direction_moments(dirs[ch]), delta, strength, plan, ch, on)
            return blk.forward(self.start(blk.s.shape[0], ncol), store)

        for ch, (u, t) in zip(chunks, self.map(one, chunks), strict=True):
            out[on, ch] = np.einsum("gkn,gkn->kg", u.conj(), e2 * u).real
            if tape.u is not None and tape.tapes is not None:
                tape.u.append(u)
                tape.tapes.append(t)
        return out, tape

    # -------------------------------------------------------------- generic segments
    def segment_plans(self, segs: Segments, q: np.ndarray, dirs: np.ndarray
                      ) -> list[SegmentPlan]:
        """Per segment: None (f = 0) or (strength (G, nb), plan), planned over all
        directions."""
        n_dir = len(dirs)
        cache: dict[tuple[float, float], tuple[np.ndarray, ChebyshevPlan]] = {}
        plans: list[SegmentPlan] = []
        for duration, fval in segs:
            if fval == 0.0:
                plans.append(None)
                continue
            key = (duration, fval)
            if key not in cache:
                strength = np.broadcast_to(q[None, :] * fval, (n_dir, len(q)))
                cache[key] = (strength, self.plan(duration, strength, dirs))
            plans.append(cache[key])
        return plans

    def segments_chunk(
        self,
        segs: Segments,
        plans: list[SegmentPlan],
        on: np.ndarray,
        dirs: np.ndarray,
        ch: slice,
        keep_states: bool,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """ν(TE) (Gc, C, n) of the q > 0 columns of a direction chunk, and the states at
        the segment starts (plus the final one) when ``keep_states``."""
        wg = self.direction_moments(dirs[ch])
        nu = self.start(wg.shape[0], len(on))
        states: list[np.ndarray] = []
        for (duration, _), pl in zip(segs, plans, strict=True):
            if keep_states:
                states.append(nu)
            if pl is None:
                nu = np.exp(-duration * self.lam)[None, None, :] * nu
            else:
                nu, _ = self.block(wg, duration, *pl, ch, on).forward(nu, False)
        if keep_states:
            states.append(nu)
        return nu, states

    def segment_chunks(self, n_dir: int, plans: list[SegmentPlan], ncol: int,
                       n_seg: int) -> list[slice]:
        """Direction chunks of a segmented waveform (tapes of one segment and the
        ``n_seg`` segment-start states per column)."""
        max_deg = max((p[1].degree for p in plans if p is not None), default=1)
        return self.chunks(n_dir, ncol, 2 * max_deg + n_seg)

    def segments_forward(self, segments: Segments, q: np.ndarray, dirs: np.ndarray
                         ) -> np.ndarray:
        """S (nb, G) µm³ for a piecewise-constant waveform ((duration µs, f), …)."""
        segs = clean_segments(segments)
        on = np.flatnonzero(q != 0.0)
        out = np.empty((len(q), len(dirs)), dtype=complex)
        out[q == 0.0, :] = self.static_signal(sum(d for d, _ in segs))
        if len(on) == 0:
            return out
        plans = self.segment_plans(segs, q, dirs)
        chunks = self.segment_chunks(len(dirs), plans, len(on), 0)
        res = self.map(lambda ch: self.segments_chunk(segs, plans, on, dirs, ch, False)[0],
                       chunks)
        for ch, nu in zip(chunks, res, strict=True):
            out[on, ch] = np.einsum("n,gkn->kg", self.nu0, nu)
        return out

    # ---------------------------------------------------------------------- sequences
    def sequence_forward(self, seq: Sequence, q: np.ndarray, dirs: np.ndarray,
                         keep: bool = False) -> tuple[np.ndarray, SequenceTape]:
        """S (nb, G) µm³ of any sequence for q (nb,) in 1/(µm·µs), and its tape."""
        q = np.asarray(q, dtype=float)
        dirs = np.asarray(dirs, dtype=float)
        if isinstance(seq, PGSE):  # closed-form fast path: one action per column
            return self.pgse_forward(seq.delta, seq.Delta, q, dirs, keep)
        segs = seq.piecewise(SMOOTH_WAVEFORM_SEGMENT_US)
        return self.segments_forward(segs, q, dirs), SequenceTape("segments", segments=segs)


def clean_segments(segments: Segments) -> Segments:
    """The segments of positive duration, as floats (µs, f)."""
    return tuple((float(d), float(f)) for d, f in segments if d > 0)

