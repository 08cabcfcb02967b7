"""The staged schedule: which stage an iteration belongs to, its learning rate (linear
warm-up then cosine decay, restarted at every stage) and its prior weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

from spinverse.recon.config import Ramp, ReconConfig, StageConfig


@dataclass(frozen=True)
class StageStep:
    """Where iteration ``iteration`` (global, 0-based) falls in the curriculum."""

    stage_index: int
    stage: StageConfig
    local: int  # iteration within the stage


def locate(config: ReconConfig, iteration: int) -> StageStep:
    """The stage of a global iteration (raises IndexError past the end)."""
    start = 0
    for i, stage in enumerate(config.stages):
        if iteration < start + stage.iterations:
            return StageStep(i, stage, iteration - start)
        start += stage.iterations
    raise IndexError(f"iteration {iteration} is past the last stage")


def stage_start(config: ReconConfig, stage_index: int) -> int:
    """Global iteration at which a stage begins."""
    return sum(s.iterations for s in config.stages[:stage_index])


def learning_rate(config: ReconConfig, step: StageStep) -> float:
    """lr at a step: linear warm-up over ``warmup`` iterations, then cosine decay to
    ``lr_final_ratio`` × lr at the end of the stage."""
    base = config.optimizer.lr
    s = step.stage
    if s.warmup and step.local < s.warmup:
        return base * (step.local + 1) / s.warmup
    span = max(s.iterations - s.warmup, 1)
    x = min(max(step.local - s.warmup, 0) / span, 1.0)
    floor = s.lr_final_ratio
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x)))


def prior_weights(step: StageStep) -> dict[str, float]:
    """The weight of each prior at a step (ramps are linear over the stage)."""
    out = {}
    n = max(step.stage.iterations - 1, 1)
    for name, w in step.stage.priors.items():
        if isinstance(w, Ramp):
            out[name] = w.start + (w.end - w.start) * min(step.local / n, 1.0)
        else:
            out[name] = float(w)
    return out
