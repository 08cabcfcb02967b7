"""Configuration of the whole-shape search (``method: search`` in RECON.yaml).

Budgets count distinct shapes simulated (one full forward simulation each, ≈ 0.1–0.2 s on
one core on the 576-tet benchmark grid), not seconds, so a run is deterministic for its
seed on any machine. κ in µm/µs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SearchConfig", "EnsembleConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnsembleConfig(_Strict):
    """Which shapes the data cannot tell from the answer.

    ``tolerance``: a loss margin, or ``auto``: with ``snr`` two standard deviations of the
    noise in a loss difference, 2 · 20 · √loss / (√N · SNR) for N measurements; without,
    the median loss increase of the answer's single-tet neighbours (noise-free)."""

    tolerance: float | Literal["auto"] = "auto"
    snr: float | None = Field(None, gt=0, description="SNR of the target relative to "
                              "|S(b=0)|, when known (sets the auto tolerance)")
    max_members: int = Field(500, ge=1)


class SearchConfig(_Strict):
    """The whole-shape search: family fits (CMA-ES), linearised multi-flip descents, basin
    hopping (symmetry / lattice images, random large moves), all sharp and scored
    exactly. See :mod:`spinverse.recon.search.engine`."""

    method: Literal["search"] = "search"
    budget: int = Field(4000, ge=10, description="distinct shapes simulated in all")
    families: dict[Literal["tube", "ellipsoid", "balls", "ring"], int] = Field(
        default_factory=lambda: {"ellipsoid": 250, "ring": 200, "balls": 150, "tube": 300},
        description="shape family → budget of its CMA-ES fit (distinct shapes)")
    tube_segments: int = Field(4, ge=1, le=12, description="segments of the tube family")
    balls: int = Field(2, ge=1, le=8, description="balls of the balls family")
    descents: int = Field(3, ge=0, description="multi-flip descents from the best "
                          "distinct start / family shapes")
    descent_budget: int = Field(1500, ge=1, description="budget of one of those descents")
    trials: int = Field(2, ge=0, description="more fits (new seeds) of the family whose "
                        "descent went lowest, each followed by a descent")
    trial_budget: int = Field(200, ge=1, description="budget of one such fit")
    proposals: int = Field(12, ge=1, description="multi-flips simulated per descent step")
    hop_descents: int = Field(2, ge=0, description="descents from the best symmetry / "
                              "lattice images of each new best shape (0: no images)")
    hop_ratio: float = Field(4.0, ge=1, description="descend from a family shape or an image "
                             "other than the best only if its loss is at most this × the "
                             "best's")
    kick_budget: int = Field(400, ge=1, description="budget of a descent after a hop or "
                             "a random kick")
    elites: int = Field(12, ge=1, description="local minima kept for basin hopping")
    final_reserve: int = Field(300, ge=0, description="budget kept back for confirming the "
                               "answer (a full scan of its single flips)")
    stop_loss: float = Field(1e-12, ge=0, description="end the search when a shape's loss "
                             "is at most this (an exact fit of a noise-free target)")
    membrane_kappa: float = Field(1e-5, gt=0, description="κ of a shape's surface, µm/µs")
    other_kappa: float = Field(0.1, gt=0, description="κ of every other face, µm/µs")
    threshold: float = Field(1e-3, gt=0, description="barrier threshold on κ, µm/µs (for "
                             "the metrics of the κ field written)")
    ensemble: EnsembleConfig = EnsembleConfig()
    seed: int = 0
    workers: int | None = Field(None, ge=1, description="processes (default: the cores)")

    @model_validator(mode="after")
    def _kappas(self) -> SearchConfig:
        if not self.membrane_kappa < self.threshold < self.other_kappa:
            raise ValueError("need membrane_kappa < threshold < other_kappa")
        return self
