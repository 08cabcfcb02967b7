"""Numbers that tell a search failure from an ambiguity of the data.

* Always: the answer's data loss beside the loss increase of its single-tet neighbours
  (a sharp minimum when every neighbour costs more).
* With a known truth (benchmarks): the truth's own loss against the same target, its
  *one-tet level* (the median loss of random one-tet moves of the truth: an answer above it
  is a search failure, at or below it the data barely separate the answer from the truth),
  the answer's best overlap with the truth's images under the grid's symmetries and
  lattice shifts (a high overlap with an image and a low F1 against the truth: a twin), and
  whether the truth is in the ensemble.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spinverse.recon.search.ensemble import Ensemble
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator

__all__ = ["neighbour_summary", "truth_diagnostics", "ONE_TET_MOVES"]

#: Random one-tet moves of the truth that define its one-tet level.
ONE_TET_MOVES = 12


def neighbour_summary(answer_loss: float, neighbour_losses: np.ndarray) -> dict[str, Any]:
    """The answer's loss and the loss increase of its single-tet neighbours."""
    rise = np.asarray(neighbour_losses, float) - answer_loss
    return {
        "answer_loss": float(answer_loss),
        "neighbours": int(len(rise)),
        "neighbour_loss_increase_median": float(np.median(rise)) if len(rise) else None,
        "neighbour_loss_increase_min": float(rise.min()) if len(rise) else None,
        "sharp_minimum": bool(len(rise) and rise.min() > 0),
    }


def truth_diagnostics(evaluator: Evaluator, space: RegionSpace, answer: np.ndarray,
                      truth: np.ndarray, ensemble: Ensemble, *, seed: int = 0,
                      moves: int = ONE_TET_MOVES) -> dict[str, Any]:
    """Scores against a known truth region (see the module docstring); costs ``moves`` + 1
    simulations (cached ones are free)."""
    rng = np.random.default_rng(seed)
    cand = space.boundary_tets(truth)
    picks = rng.choice(cand, size=min(moves, len(cand)), replace=False)
    flips = []
    for t in picks:
        r = truth.copy()
        r[t] = ~r[t]
        flips.append(r)
    truth_loss = evaluator.loss(truth)
    flip_loss = evaluator.losses(flips)
    twin, sym, shift = space.best_twin_overlap(answer, truth)
    refl = space.point_reflection
    truth_images = [truth] + ([space.image(truth, refl)] if refl is not None else [])
    in_ens = any(np.array_equal(m, t) for m in ensemble.regions for t in truth_images)
    best_member = max(max(space.overlap(m, t) for t in truth_images)
                      for m in ensemble.regions)
    return {
        "truth_loss": float(truth_loss),
        "truth_one_tet_level": float(np.median(flip_loss)),
        "truth_one_tet_increase": float(np.median(flip_loss - truth_loss)),
        "truth_one_tet_moves": int(len(flips)),
        "answer_tet_dice": space.overlap(answer, truth),
        "twin_overlap": float(twin),
        "twin_symmetry": int(sym),
        "twin_shift": int(shift),
        "truth_in_ensemble": bool(in_ens),
        "ensemble_best_tet_dice": float(best_member),
    }
