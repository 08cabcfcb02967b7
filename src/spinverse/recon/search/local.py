"""Local search over sharp shapes: linearised multi-flip descent.

Single-tet descent stalls where every single flip raises the loss but a coordinated
change (shift a stretch of a tube sideways: remove tets on one side, add on the other)
lowers it. Each step here simulates every single-tet flip of the region's boundary
exactly, which gives the exact signal change ΔS_t of each flip; a multi-flip z ⊂ boundary
is then predicted by the linear model S(z) ≈ S + Σ_{t∈z} ΔS_t, and the subsets with the
lowest predicted loss (found by tabu search on that quadratic in binary z) are simulated
exactly. The best valid region among the single flips and those proposals is taken when it
lowers the loss; the descent ends when none does (a local minimum for every move the model
proposes) or when its budget is spent. Every state is sharp and scored exactly: the linear
model only proposes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator

__all__ = ["DescentResult", "multiflip_descent", "binary_least_squares"]


@dataclass(frozen=True)
class DescentResult:
    """Where a descent stopped: the region and its loss, the steps taken, whether every
    single flip of the region was simulated from it and none lowers the loss
    (``converged``), the loss of each single-tet flip of that region when so
    (``neighbour_tets``, ``neighbour_losses``; empty otherwise), and the signal change of
    flipping each tet as last simulated (``delta``, reusable by a descent nearby)."""

    region: np.ndarray
    loss: float
    steps: int
    converged: bool
    neighbour_tets: np.ndarray
    neighbour_losses: np.ndarray
    delta: dict[int, np.ndarray]


def binary_least_squares(
    jac: np.ndarray, residual: np.ndarray, rng: np.random.Generator, *,
    restarts: int = 20, steps: int = 200, tenure: int = 7, keep: int = 40,
) -> list[tuple[float, tuple[int, ...]]]:
    """Low values of ‖r − J z‖² over binary z by tabu search (one-bit moves, the best
    non-tabu move each step, a flipped bit tabu for ``tenure`` steps), from z = 0 and from
    random sparse starts. Returns up to ``keep`` (objective, sorted indices of z) pairs,
    lowest first, z ≠ 0."""
    g = jac.T @ jac
    h = jac.T @ residual
    diag = np.diag(g).copy()
    base = float(residual @ residual)
    m = len(h)
    found: dict[tuple[int, ...], float] = {}
    for start in range(restarts):
        z = np.zeros(m, bool) if start == 0 else rng.random(m) < rng.uniform(0.02, 0.15)
        gz = g[:, z].sum(axis=1)
        obj = base - 2 * h[z].sum() + float(z @ gz)
        tabu_until = np.zeros(m, dtype=np.int64)
        for step in range(steps):
            # Change of the objective when bit i flips (gz includes g_ii when z_i = 1).
            delta = np.where(z, 2 * h - 2 * gz + diag, -2 * h + 2 * gz + diag)
            delta[tabu_until > step] = np.inf
            i = int(np.argmin(delta))
            if not np.isfinite(delta[i]):
                break
            obj += float(delta[i])
            z[i] = ~z[i]
            gz += g[:, i] if z[i] else -g[:, i]
            tabu_until[i] = step + tenure
            if z.any():
                key = tuple(np.flatnonzero(z).tolist())
                if obj < found.get(key, np.inf):
                    found[key] = obj
    return sorted((o, k) for k, o in found.items())[:keep]


def _flip(inside: np.ndarray, tets: np.ndarray) -> np.ndarray:
    out = inside.copy()
    out[tets] = ~out[tets]
    return out


def _near(space: RegionSpace, tets: np.ndarray, hops: int) -> set[int]:
    """Tets within ``hops`` face-steps of any of ``tets``."""
    near = set(int(t) for t in tets)
    frontier = set(near)
    for _ in range(hops):
        frontier = {int(n) for t in frontier for n in space.neighbours[t]} - near
        near |= frontier
    return near


def multiflip_descent(
    evaluator: Evaluator,
    space: RegionSpace,
    inside: np.ndarray,
    rng: np.random.Generator,
    *,
    budget: int | None = None,
    proposals: int = 12,
    max_steps: int = 100,
    rescan_hops: int | None = 2,
    delta: dict[int, np.ndarray] | None = None,
    changed: np.ndarray | None = None,
    confirm: bool = True,
    on_step: Callable[[np.ndarray, float], None] | None = None,
) -> DescentResult:
    """Linearised multi-flip descent from ``inside`` (see the module docstring).

    ``budget``: stop once this many more distinct regions have been requested.
    ``proposals``: multi-flips simulated per step. ``rescan_hops``: after a step, only the
    single flips within this many face-steps of the tets that changed are simulated again;
    the others keep their signal change from an earlier step in the linear model (exact
    for independent flips; ``None``: a full scan every step). ``delta`` and ``changed``:
    start from another descent's signal changes, those of the tets near ``changed`` (the
    tets that differ from that descent's region) simulated again. ``confirm``: before the
    descent ends, simulate every single flip of the region from it (a full scan); without,
    it may end on a linear model that is partly out of date (``converged`` False).
    Accepted states are always simulated exactly. ``on_step(region, loss)`` after each
    accepted step.
    """
    start = evaluator.n_requested
    target = evaluator.target
    sqrt_w = np.sqrt(100.0 * evaluator.model.residual_weights())
    current = inside.copy()
    base = evaluator.signals([current])[0]
    loss = evaluator.loss_of(base)
    delta = dict(delta) if delta is not None else {}
    fresh: set[int] = set(delta)  # tets whose signal change is taken as current
    if changed is not None and rescan_hops is not None:
        fresh -= _near(space, np.asarray(changed), rescan_hops)
    elif changed is not None:
        fresh.clear()
    exact: set[int] = set()  # tets whose flip was simulated from the current region
    step = 0

    def result(converged: bool, tets=None, losses=None) -> DescentResult:
        empty = np.zeros(0, dtype=np.int64)
        return DescentResult(current, loss, step, converged,
                             empty if tets is None else tets,
                             np.zeros(0) if losses is None else losses, delta)

    while step < max_steps:
        if budget is not None and evaluator.n_requested - start >= budget:
            return result(False)
        cand = space.boundary_tets(current)
        todo = [int(t) for t in cand if t not in fresh]
        singles = {int(t): _flip(current, np.array([t])) for t in cand}
        for t, sig in zip(todo, evaluator.signals([singles[t] for t in todo]), strict=True):
            delta[t] = sig - base
        fresh.update(todo)
        exact.update(todo)
        cols = np.array([delta[int(t)] for t in cand])
        is_exact = np.array([int(t) in exact for t in cand])
        single_loss = np.array([evaluator.loss_of(base + d) for d in cols])
        valid = np.array([space.is_valid(singles[int(t)]) for t in cand])
        jac = (cols * sqrt_w).T
        res = (target - base) * sqrt_w
        picks = []
        for _, subset in binary_least_squares(jac, res, rng):
            if len(subset) < 2 and is_exact[subset[0]]:
                continue
            region = _flip(current, cand[list(subset)])
            if space.is_valid(region):
                picks.append(region)
            if len(picks) >= proposals:
                break
        prop_loss = evaluator.losses(picks) if picks else np.zeros(0)
        options = [(lo, i, singles[int(t)]) for i, (t, lo, ok, ex) in
                   enumerate(zip(cand, single_loss, valid, is_exact, strict=True)) if ok and ex]
        options += [(lo, len(cand) + i, r) for i, (lo, r) in
                    enumerate(zip(prop_loss, picks, strict=True))]
        best = min(options, key=lambda o: (o[0], o[1])) if options else None
        if best is None or best[0] >= loss * (1 - 1e-9):
            if is_exact.all():
                return result(True, cand, single_loss)
            if not confirm:
                return result(False)
            fresh.clear()  # confirm with a full scan
            continue
        moved = np.flatnonzero(best[2] != current)
        current, loss = best[2], float(best[0])
        base = evaluator.signals([current])[0]
        fresh = set() if rescan_hops is None else fresh - _near(space, moved, rescan_hops)
        exact = set()
        step += 1
        if on_step is not None:
            on_step(current, loss)
    return result(False)
