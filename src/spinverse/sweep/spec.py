"""SWEEP.yaml: which cases, arms, seeds and noise levels to run (their product).

```yaml
cases: all                      # or a list: benchmark names/prefixes, or
                                #   {mesh: grid.npz, target: signals.npz}, or
                                #   {phantom: sphere, radius: 8, bcc: 4, name: s8}
arms:                           # name -> preset (ablation arm) and overrides
  curriculum: {preset: curriculum}
  both: {preset: both}
  joint: {preset: joint}
  short: {preset: both, iterations: 100, config: {seed: 3}}
  light: {preset: both, length_scale: 4.0, config: {parameterisation: {start_kappa: 0.01}}}
  search: {preset: search, config: {budget: 2000}}   # the whole-shape search
seeds: [0]
noise: [none, {kind: rician, snr: 50}]
```
Paths are relative to the YAML file. Units: κ µm/µs, radii µm.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinverse.errors import ConfigError, InputFileError

PRESETS = ("curriculum", "continuity", "manifold", "both", "joint")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeshCase(_Strict):
    mesh: str = Field(description="GRID.npz (points, tets, optional faces)")
    target: str = Field(description="SIGNALS.npz to fit")
    name: str | None = None


class PhantomCase(_Strict):
    phantom: Literal["sphere", "bent_axon"]
    bcc: int = Field(4, ge=2, description="BCC cubes per axis over the benchmark box")
    radius: float = Field(8.0, gt=0, description="µm")
    seed: int = Field(0, description="seed of random phantoms (bent axons)")
    name: str | None = None


class Arm(_Strict):
    preset: Literal["curriculum", "continuity", "manifold", "both", "joint", "search"] = "both"
    iterations: int | None = Field(None, gt=0, description="scale stages to this total "
                                   "(gradient presets)")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="top-level RECON.yaml keys overriding the preset "
                                   "(for search: SearchConfig keys, e.g. budget)")
    length_scale: float | None = Field(
        None, gt=0, description="eigen truncation length ℓ (µm) of the published protocol "
        "used to simulate and fit benchmark and phantom targets (default: its 2 µm)")


class Noise(_Strict):
    kind: Literal["none", "rician", "gaussian"] = "none"
    snr: float | None = Field(None, gt=0)

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}{self.snr:g}"


class SweepConfig(_Strict):
    cases: Literal["all"] | list[str | MeshCase | PhantomCase] = "all"
    arms: dict[str, Arm] = Field(default_factory=lambda: {"both": Arm()})
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    noise: list[Literal["none"] | Noise] = Field(default_factory=lambda: ["none"], min_length=1)


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: a case, an arm, a seed and a noise level."""

    case: str | MeshCase | PhantomCase
    case_label: str
    arm_name: str
    arm: Arm
    seed: int
    noise: Noise
    base_dir: str

    @property
    def run_id(self) -> str:
        return f"{self.arm_name}/{self.case_label}/seed{self.seed}-{self.noise.label}"


def case_label(case: str | MeshCase | PhantomCase) -> str:
    if isinstance(case, str):
        from spinverse.mesh.benchmark import resolve_case

        return resolve_case(case)
    if isinstance(case, MeshCase):
        return case.name or Path(case.mesh).stem
    return case.name or f"{case.phantom}_r{case.radius:g}_bcc{case.bcc}_s{case.seed}"


def expand(sweep: SweepConfig, base_dir: str | PathLike[str] = ".") -> list[RunSpec]:
    """Every run of the sweep (product of cases × arms × seeds × noise levels)."""
    if sweep.cases == "all":
        from spinverse.mesh.benchmark import case_names

        cases: list[Any] = case_names()
    else:
        cases = list(sweep.cases)
    noises = [Noise() if n == "none" else n for n in sweep.noise]
    runs = []
    for (arm_name, arm), case, seed, noise in itertools.product(
        sweep.arms.items(), cases, sweep.seeds, noises
    ):
        runs.append(RunSpec(case, case_label(case), arm_name, arm, seed, noise, str(base_dir)))
    return runs


def load_sweep(path: str | PathLike[str]) -> SweepConfig:
    """Read and validate SWEEP.yaml (unknown keys rejected with a suggestion)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError("no such file", source=str(path))
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputFileError(f"not valid YAML ({exc})".splitlines()[0], source=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping", source=str(path))
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            hint = difflib.get_close_matches(key, list(SweepConfig.model_fields) + list(
                Arm.model_fields) + ["kind", "snr"], n=1)
            msg = f"unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        raise ConfigError(msg, source=str(path), field=loc) from None
