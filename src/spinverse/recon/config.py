"""Reconstruction configuration (YAML, validated by pydantic; unknown keys rejected).

The default is the published method's preset: fit the long PGSE (δ/Δ = 10/60 ms) for 200
iterations, then the middle one (10/20 ms) for 200, Adam lr 0.6 with a 50-iteration
warm-up and cosine decay to 0.1× per stage, gradient clip 1.0, continuity weight 2 and a
manifold weight ramped 0 → 2 over the first stage. κ in µm/µs, b in s/mm².
"""

from __future__ import annotations

import difflib
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spinverse.errors import ConfigError, InputFileError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ramp(_Strict):
    """A prior weight that changes linearly from ``start`` to ``end`` over a stage."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)


Weight = float | Ramp


class ParameterisationConfig(_Strict):
    """κ_f = 10^(a + (b − a) σ(v_f / τ)), a = log10 κ_min, b = log10 κ_max (µm/µs)."""

    kappa_min: float = Field(1e-5, gt=0, description="lower bound of κ, µm/µs")
    kappa_max: float = Field(0.1, gt=0, description="upper bound of κ, µm/µs")
    temperature: float = Field(1.0, gt=0, description="logit temperature τ")
    start_kappa: float = Field(1e-3, gt=0, description="initial κ on every face, µm/µs")
    start: Literal["uniform", "adc_ellipsoid", "adc_tube", "file"] = Field(
        "uniform",
        description="uniform: start_kappa everywhere (published); adc_ellipsoid / adc_tube: "
                    "a closed ellipsoid / straight tube from the target's apparent diffusion "
                    "tensor, sized to its |S(b=0)| (spinverse.recon.initial); file: the κ of "
                    "start_file (refine an earlier run)")
    start_file: str | None = Field(
        None, description="with start: file, an .npz holding 'kappa' (F,) µm/µs in the "
                          "grid's face order (and optionally 'faces' (F,3) to check it), "
                          "e.g. an earlier run's kappa.npz; relative to the working directory")
    init_noise: float = Field(0.0, ge=0, description="std of logit noise at the start "
                              "(restarts > 0 always add 0.1)")

    @model_validator(mode="after")
    def _bounds(self) -> ParameterisationConfig:
        if not self.kappa_min < self.start_kappa < self.kappa_max:
            raise ValueError("need kappa_min < start_kappa < kappa_max")
        if (self.start == "file") != (self.start_file is not None):
            raise ValueError("start: file and start_file go together")
        return self


class OptimizerConfig(_Strict):
    name: Literal["adam", "global_adam"] = Field(
        "adam", description="adam: per-face step normalisation (published); global_adam: "
                            "one RMS for all faces, steps proportional to the gradient")
    lr: float = Field(0.6, gt=0, description="peak Adam learning rate (on the logits)")
    betas: tuple[float, float] = (0.9, 0.999)
    clip_norm: float = Field(1.0, gt=0, description="gradient-norm clip")
    eigen_refresh: int = Field(
        1, ge=1,
        description="iterations between eigen-solves; in between, the eigenbasis of the "
                    "last solve is frozen (Galerkin model on it, exact gradient of that "
                    "model). 1: a fresh solve and the exact gradient every iteration; the "
                    "published method refreshes every 10")


class StageConfig(_Strict):
    """One stage of the curriculum."""

    name: str
    sequences: list[int] | Literal["all"] = Field(
        description="indices into the protocol's sequences fitted in this stage, or 'all'"
    )
    bvalues: list[float] | None = Field(None, description="subset of b-values, s/mm²")
    iterations: int = Field(gt=0)
    warmup: int = Field(50, ge=0, description="linear warm-up iterations")
    lr_final_ratio: float = Field(0.1, gt=0, le=1, description="cosine decay floor × lr")
    priors: dict[str, Weight] = Field(default_factory=dict,
                                      description="prior name → weight or {start, end}")

    @model_validator(mode="after")
    def _known_priors(self) -> StageConfig:
        from spinverse.recon.priors import PRIORS

        for key in self.priors:
            if key not in PRIORS:
                hint = difflib.get_close_matches(key, PRIORS, n=1)
                raise ValueError(f"unknown prior {key!r}"
                                 + (f"; did you mean {hint[0]!r}?" if hint else "")
                                 + f"; known: {', '.join(PRIORS)}")
        return self


class StoppingConfig(_Strict):
    """End a stage early when its loss has not improved by ``min_rel_improvement`` over
    ``patience`` iterations (0 disables)."""

    patience: int = Field(0, ge=0)
    min_rel_improvement: float = Field(1e-4, ge=0)


class ReconConfig(_Strict):
    """Everything a reconstruction run needs besides the target and the grid."""

    parameterisation: ParameterisationConfig = ParameterisationConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    stages: list[StageConfig] = Field(min_length=1)
    threshold: float = Field(1e-3, gt=0, description="barrier threshold on κ, µm/µs")
    data_scale: float = Field(100.0, gt=0, description="factor of the data term")
    data_normalise: Literal["target", "own"] = Field(
        "target", description="target: both |S| divided by the target's |S(b=0)| (published; "
        "the b = 0 row fits the volume too); own: each signal by its own |S(b=0)|, the "
        "attenuation E(b), blind to the overall scale and to an S0 the model gets wrong "
        "(e.g. the leak through Robin outer faces); needs b = 0 in every stage")
    stopping: StoppingConfig = StoppingConfig()
    seed: int = 0
    restarts: int = Field(1, ge=1, description="random restarts; the best data loss wins")
    checkpoint_every: int = Field(10, ge=1)

    @property
    def total_iterations(self) -> int:
        return sum(s.iterations for s in self.stages)

    def scaled_to(self, total: int) -> ReconConfig:
        """A copy whose stages (iterations and warm-ups) are scaled to about ``total``
        iterations in all, keeping their proportions."""
        factor = total / self.total_iterations
        stages = [s.model_copy(update={"iterations": max(1, round(s.iterations * factor)),
                                       "warmup": round(s.warmup * factor)})
                  for s in self.stages]
        return self.model_copy(update={"stages": stages})

    def with_priors(self, **weights: Weight | None) -> ReconConfig:
        """A copy with the named prior weights set (None removes) in every stage."""
        stages = []
        for s in self.stages:
            priors = dict(s.priors)
            for k, w in weights.items():
                if w is None:
                    priors.pop(k, None)
                else:
                    priors[k] = w
            stages.append(s.model_copy(update={"priors": priors}))
        return self.model_copy(update={"stages": stages})


def published_preset() -> ReconConfig:
    """The published schedule: long (10/60 ms) then middle (10/20 ms) PGSE of the
    published protocol (sequence indices 2 and 1), 200 iterations each, with priors."""
    return ReconConfig(
        stages=[
            StageConfig(name="long 10/60 ms", sequences=[2], iterations=200,
                        priors={"continuity": 2.0, "manifold": Ramp(start=0.0, end=2.0)}),
            StageConfig(name="middle 10/20 ms", sequences=[1], iterations=200,
                        priors={"continuity": 2.0, "manifold": 2.0}),
        ]
    )


#: Named arms of the published ablation (prior weights applied to the preset).
ABLATION_ARMS: dict[str, dict[str, Any]] = {
    "curriculum": {"continuity": None, "manifold": None},
    "continuity": {"manifold": None},
    "manifold": {"continuity": None},
    "both": {},
}


def ablation_arm(name: str) -> ReconConfig:
    """The preset with one ablation arm's priors (curriculum, continuity, manifold, both),
    or ``"joint"``: both priors without the curriculum (see :func:`no_curriculum`)."""
    if name == "joint":
        return no_curriculum()
    if name not in ABLATION_ARMS:
        raise ConfigError(f"unknown arm {name!r}; known: {', '.join(ABLATION_ARMS)}",
                          field="arm")
    return published_preset().with_priors(**ABLATION_ARMS[name])


def no_curriculum(config: ReconConfig | None = None,
                  sequences: list[int] | Literal["all"] | None = None) -> ReconConfig:
    """One stage fitting ``sequences`` (default: the long and middle ones, [1, 2])
    together for the same total iterations, with the last stage's priors (the control
    that shows why the curriculum matters; also the default for a target with a single
    sequence, e.g. one measured voxel)."""
    base = config or published_preset()
    last = base.stages[-1]
    stage = StageConfig(name="joint", sequences=[1, 2] if sequences is None else sequences,
                        iterations=base.total_iterations, warmup=base.stages[0].warmup,
                        priors=dict(last.priors))
    return base.model_copy(update={"stages": [stage]})


def _format_error(e: ValidationError, source: str | None,
                  model: type[BaseModel] | None = None) -> ConfigError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        parent: Any = model or ReconConfig
        for part in err["loc"][:-1]:
            if isinstance(part, str) and hasattr(parent, "model_fields"):
                ann = parent.model_fields[part].annotation
                parent = getattr(ann, "__args__", [ann])[0]
        known = list(getattr(parent, "model_fields", {}))
        hint = difflib.get_close_matches(key, known, n=1)
        msg = f"unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
    return ConfigError(msg, source=source, field=loc or None)


def config_from_dict(data: dict[str, Any], *, source: str | None = None) -> ReconConfig:
    """Validate a mapping; keys missing at the top level fall back to the preset."""
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping of keys to values", source=source)
    merged = {**published_preset().model_dump(), **data}
    try:
        return ReconConfig.model_validate(merged)
    except ValidationError as e:
        raise _format_error(e, source) from None


def _read_yaml(path: str | PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputFileError("no such file", source=str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read as text ({exc})", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        what = (f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
                if mark is not None and problem else " ".join(str(exc).split()))
        raise InputFileError(f"not valid YAML: {what}", source=str(path)) from exc
    return {} if data is None else data


def load_config(path: str | PathLike[str]) -> ReconConfig:
    """Read a RECON.yaml of the gradient method (any top-level key omitted takes the
    published preset's value)."""
    return config_from_dict(_read_yaml(path), source=str(path))


#: Keys that only the gradient method has (a file with one of them and no ``method`` key
#: is read as ``method: gradient``, as before the search existed).
GRADIENT_KEYS = ("parameterisation", "optimizer", "stages", "data_scale", "data_normalise",
                 "stopping", "restarts", "checkpoint_every")
METHODS = ("search", "gradient")


def method_config_from_dict(data: Any, *, source: str | None = None) -> Any:
    """A :class:`~spinverse.recon.search.config.SearchConfig` (``method: search``, the
    default) or a :class:`ReconConfig` (``method: gradient``, or gradient-only keys)."""
    from spinverse.recon.search.config import SearchConfig

    if not isinstance(data, dict):
        raise ConfigError("must be a mapping of keys to values", source=source)
    data = dict(data)
    implied = "gradient" if any(k in data for k in GRADIENT_KEYS) else "search"
    method = data.pop("method", implied)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}",
                          source=source, field="method")
    if method == "gradient":
        return config_from_dict(data, source=source)
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as e:
        raise _format_error(e, source, SearchConfig) from None


def load_method_config(path: str | PathLike[str]) -> Any:
    """Read a RECON.yaml of either method (see :func:`method_config_from_dict`)."""
    return method_config_from_dict(_read_yaml(path), source=str(path))


def dump_config(config: ReconConfig) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
