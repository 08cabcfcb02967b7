"""What the data leave open: the shapes within a loss tolerance of the answer.

Every shape a search scored is kept (the evaluator's cache). The ensemble is the distinct
valid shapes whose data loss is within ``tolerance`` of the answer's, each weighted by
exp(−(loss − loss_answer) / tolerance). Members are put in the answer's frame first: the
point reflection through the grid centre changes no signal magnitude, so a reflected copy
is the same hypothesis (lattice shifts do change the signal of a box with leaky walls and
stay distinct). ``barrier_probability`` (F,) is the weighted frequency with which each face
is a membrane face across the members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator

__all__ = ["Ensemble", "build_ensemble", "auto_tolerance"]


def auto_tolerance(answer_loss: float, neighbour_losses: np.ndarray, *,
                   snr: float | None, n_measurements: int) -> float:
    """The ensemble's loss tolerance (see :class:`~spinverse.recon.search.config.
    EnsembleConfig`): 2 · 20 · √loss / (√N · SNR) with a known SNR, else the median loss
    increase of the answer's single-tet neighbours."""
    if snr is not None:
        return float(2 * 20 * np.sqrt(max(answer_loss, 0.0)) / (np.sqrt(n_measurements) * snr))
    rise = np.asarray(neighbour_losses, dtype=float) - answer_loss
    rise = rise[np.isfinite(rise)]
    return float(np.median(rise)) if len(rise) else 0.0


@dataclass(frozen=True)
class Ensemble:
    """Members (M, T) bool in the answer's frame (the answer first), their data losses
    and weights (summing to 1), and the tolerance that selected them."""

    regions: np.ndarray
    losses: np.ndarray
    weights: np.ndarray
    tolerance: float

    @property
    def size(self) -> int:
        return len(self.losses)

    def barrier_probability(self, space: RegionSpace) -> np.ndarray:
        """(F,) weighted frequency of each face being a membrane face."""
        prob = np.zeros(space.grid.n_faces)
        for w, r in zip(self.weights, self.regions, strict=True):
            prob += w * space.membrane(r)
        return np.clip(prob, 0.0, 1.0)

    def tet_probability(self) -> np.ndarray:
        """(T,) weighted frequency of each tet being inside."""
        return np.clip(self.weights @ self.regions.astype(float), 0.0, 1.0)

    def summary(self, space: RegionSpace) -> dict[str, float | int]:
        """Size and spread: tets that differ from the answer (weighted mean and max), and
        the mean face entropy (bits) of ``barrier_probability`` over the faces it makes
        uncertain (0 < p < 1)."""
        off = (self.regions != self.regions[0]).sum(axis=1)
        p = self.barrier_probability(space)
        unsure = p[(p > 0) & (p < 1)]
        ent = -(unsure * np.log2(unsure) + (1 - unsure) * np.log2(1 - unsure))
        return {
            "ensemble_size": self.size,
            "ensemble_tolerance": self.tolerance,
            "ensemble_loss_max": float(self.losses.max()),
            "ensemble_tets_off_mean": float(self.weights @ off),
            "ensemble_tets_off_max": int(off.max()),
            "ensemble_uncertain_faces": int(len(unsure)),
            "ensemble_face_entropy_mean_bits": float(ent.mean()) if len(ent) else 0.0,
        }


def _in_frame(space: RegionSpace, region: np.ndarray, answer: np.ndarray) -> np.ndarray:
    refl = space.point_reflection
    if refl is None:
        return region
    image = space.image(region, refl)
    return image if space.overlap(image, answer) > space.overlap(region, answer) else region


def build_ensemble(evaluator: Evaluator, space: RegionSpace, answer: np.ndarray,
                   tolerance: float, *, max_members: int = 500) -> Ensemble:
    """The ensemble among the shapes this run scored (see the module docstring)."""
    answer_key = evaluator.key(answer)
    answer_loss = evaluator.known_loss(answer_key)
    tol = max(float(tolerance), 0.0)
    scored = sorted((evaluator.known_loss(k), k) for k in evaluator.requested
                    if k in evaluator.cache)
    members = [answer]
    losses = [answer_loss]
    seen = {answer_key}
    for loss, key in scored:
        if loss > answer_loss + tol or len(members) >= max_members:
            break
        region = _in_frame(space, evaluator.region(key), answer)
        k = evaluator.key(region)
        if k in seen or not space.is_valid(region):
            continue
        seen.add(k)
        members.append(region)
        losses.append(loss)
    loss_arr = np.array(losses)
    w = np.exp(-(loss_arr - loss_arr.min()) / tol) if tol > 0 else (loss_arr == loss_arr.min())
    w = np.asarray(w, dtype=float)
    return Ensemble(np.array(members), loss_arr, w / w.sum(), tol)
