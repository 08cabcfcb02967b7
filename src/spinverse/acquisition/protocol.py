"""Acquisition protocol: diffusivity, b-values × directions × sequences, and its YAML file.

Units: diffusivity µm²/µs, length scale ℓ µm, b-values s/mm² (= µs/µm²), every time of
a sequence in µs, q in 1/(µm·µs). A protocol is the full grid
(sequence, b-value, direction) of simulated signals.

YAML file (all times in µs)::

    diffusivity: 2.0e-3          # µm²/µs
    length_scale: 2.0            # µm, eigen truncation λ_max = D π² / ℓ²
    bvalues: [0, 1000, 2000]     # s/mm²  -- or  bvals: my.bval  (FSL file)
    directions: {fibonacci: 30}  # or a list of unit 3-vectors  -- or  bvecs: my.bvec
    sequences:
      - {type: pgse, delta: 5000, Delta: 6000}
      - {type: double_pgse, delta: 5000, Delta: 10000, mixing: 0}
      - {type: cos_ogse, delta: 10000, Delta: 12000, n_periods: 2}
      - {type: piecewise, durations: [1000, 500, 1000], values: [1, 0, -1]}

``bvals``/``bvecs`` paths are relative to the YAML file's folder. From an FSL pair, the
protocol takes the distinct b-values (first-occurrence order) and the distinct non-zero
vectors (b = 0 volumes carry (0, 0, 0)), since a protocol is a b-value × direction grid.

Errors: a missing or unreadable file, invalid YAML or a non-mapping document raise
:class:`InputFileError`; an unknown key raises :class:`ConfigError` with a "did you mean"
suggestion; a missing key or an invalid value raises :class:`ProtocolError`. Each names the
file (``source``) and the key (``field``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
)

from spinverse.acquisition.directions import fibonacci_directions, normalise_directions
from spinverse.acquisition.fsl import read_bvals, read_bvals_bvecs, read_bvecs
from spinverse.acquisition.sequences import (
    PGSE,
    SEQUENCE_TYPES,
    Sequence,
    check_keys,
    did_you_mean,
    sequence_from_dict,
)
from spinverse.errors import ConfigError, InputFileError, ProtocolError, SpinverseError

__all__ = [
    "Protocol",
    "published_protocol",
    "ProtocolConfig",
    "sequence_config",
    "PGSEConfig",
    "DoublePGSEConfig",
    "CosOGSEConfig",
    "PiecewiseConfig",
    "FibonacciConfig",
    "load_protocol",
    "save_protocol",
    "protocol_from_dict",
    "protocol_to_dict",
    "protocol_to_arrays",
    "protocol_from_arrays",
]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- Protocol


def _positive(value: Any, name: str, unit: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"expected a number in {unit}, got {value!r}", field=name) from None
    if not (math.isfinite(x) and x > 0):
        raise ProtocolError(f"must be finite and > 0 {unit}, got {x}", field=name)
    return x


@dataclass(frozen=True, eq=False)
class Protocol:
    """A diffusion acquisition: every (sequence, b-value, direction) combination.

    Attributes:
        diffusivity: D in µm²/µs (2e-3 µm²/µs = 2e-3 mm²/s).
        length_scale: ℓ in µm, sets the eigen truncation ``lambda_max = D π² / ℓ²``.
        bvalues: (nb,) b-values in s/mm² (= µs/µm²), finite and ≥ 0 (read-only array).
        directions: (nd, 3) unit gradient directions (read-only array).
        sequences: gradient waveforms (times in µs).
    """

    diffusivity: float
    length_scale: float
    bvalues: np.ndarray
    directions: np.ndarray
    sequences: tuple[Sequence, ...]

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "diffusivity", _positive(self.diffusivity, "diffusivity", "µm²/µs"))
        set_(self, "length_scale", _positive(self.length_scale, "length_scale", "µm"))
        try:
            b = np.array(self.bvalues, dtype=float)
        except (TypeError, ValueError):
            raise ProtocolError("b-values must be numbers (s/mm²)", field="bvalues") from None
        if b.ndim == 0:
            b = b.reshape(1)
        if b.ndim != 1 or b.size == 0:
            raise ProtocolError(f"expected a non-empty 1-D list of b-values, got shape "
                                f"{b.shape}", field="bvalues")
        if not np.all(np.isfinite(b)):
            raise ProtocolError("b-values must be finite", field="bvalues")
        if np.any(b < 0):
            raise ProtocolError(f"b-values must be >= 0 s/mm², got {b.min():g}",
                                field="bvalues")
        b.setflags(write=False)
        set_(self, "bvalues", b)
        dirs = normalise_directions(self.directions, field="directions")
        dirs.setflags(write=False)
        set_(self, "directions", dirs)
        seqs = self.sequences
        seqs = (seqs,) if isinstance(seqs, Sequence) else tuple(seqs)
        if not seqs:
            raise ProtocolError("at least one sequence is required", field="sequences")
        for i, s in enumerate(seqs):
            if not isinstance(s, Sequence):
                raise ProtocolError(f"not a Sequence: {s!r}", field=f"sequences[{i}]")
        set_(self, "sequences", seqs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Protocol):
            return NotImplemented
        return (
            self.diffusivity == other.diffusivity
            and self.length_scale == other.length_scale
            and np.array_equal(self.bvalues, other.bvalues)
            and np.array_equal(self.directions, other.directions)
            and self.sequences == other.sequences
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Protocol(diffusivity={self.diffusivity!r} µm²/µs, length_scale="
            f"{self.length_scale!r} µm, bvalues={self.bvalues.tolist()} s/mm², "
            f"n_directions={self.n_directions}, sequences={self.sequences!r})"
        )

    @property
    def n_sequences(self) -> int:
        """Number of sequences."""
        return len(self.sequences)

    @property
    def n_bvalues(self) -> int:
        """Number of b-values."""
        return int(self.bvalues.shape[0])

    @property
    def n_directions(self) -> int:
        """Number of gradient directions."""
        return int(self.directions.shape[0])

    def q(self, seq_index: int) -> np.ndarray:
        """(nb,) q = γG in 1/(µm·µs) giving each b-value with sequence ``seq_index``."""
        return np.asarray(self.sequences[seq_index].q_from_b(self.bvalues), dtype=float)

    @property
    def lambda_max(self) -> float:
        """Eigenvalue cut-off D π² / ℓ² in 1/µs."""
        return self.diffusivity * math.pi**2 / self.length_scale**2

    def replace(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def published_protocol() -> Protocol:
    """The protocol of the published benchmark.

    D = 2e-3 µm²/µs, ℓ = 2 µm, b ∈ {0, 1000, …, 5000} s/mm², 30 Fibonacci directions,
    PGSE (δ, Δ) = (5, 6), (10, 20), (10, 60) ms, i.e. in µs (5000, 6000), (10000, 20000),
    (10000, 60000).
    """
    return Protocol(
        diffusivity=2e-3,
        length_scale=2.0,
        bvalues=np.arange(0.0, 5001.0, 1000.0),
        directions=fibonacci_directions(30),
        sequences=(
            PGSE(delta=5_000.0, Delta=6_000.0),
            PGSE(delta=10_000.0, Delta=20_000.0),
            PGSE(delta=10_000.0, Delta=60_000.0),
        ),
    )


# --------------------------------------------------------------------------- config models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def sequence_config(kind: str) -> type[BaseModel]:
    """The YAML config model of a registered sequence kind, derived from its dataclass:
    ``{type: kind, <fields>}`` with the fields' types and documented units."""
    cls = SEQUENCE_TYPES[kind]
    cached = _SEQUENCE_CONFIGS.get(kind)
    if cached is not None and cached[0] is cls:
        return cached[1]
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {"type": (Literal[kind], ...)}  # type: ignore[valid-type]
    for f in dataclasses.fields(cls):
        fields[f.name] = (hints[f.name], Field(description=f.metadata.get("doc", "")))
    model = create_model(f"{cls.__name__}Config", __base__=_Model,
                         __doc__=f"``{{type: {kind}, ...}}``: {cls.__name__} (times in µs).",
                         **fields)
    _SEQUENCE_CONFIGS[kind] = (cls, model)
    return model


_SEQUENCE_CONFIGS: dict[str, tuple[type[Sequence], type[BaseModel]]] = {}
PGSEConfig = sequence_config("pgse")
DoublePGSEConfig = sequence_config("double_pgse")
CosOGSEConfig = sequence_config("cos_ogse")
PiecewiseConfig = sequence_config("piecewise")


class FibonacciConfig(_Model):
    """``{fibonacci: N}``: N directions on a Fibonacci sphere."""

    fibonacci: int = Field(ge=1, description="number of directions")


def _directions_tag(v: Any) -> str:
    return "fibonacci_mapping" if isinstance(v, Mapping | BaseModel) else "vectors"


# The tags do not collide with input keys, so error locations map back to the input.
DirectionsConfig = Annotated[
    Annotated[list[list[float]], Tag("vectors")]
    | Annotated[FibonacciConfig, Tag("fibonacci_mapping")],
    Discriminator(_directions_tag),
]


class ProtocolConfig(_Model):
    """Schema of a protocol YAML file (times in µs, b in s/mm², D in µm²/µs, ℓ in µm).

    Give exactly one of ``bvalues``/``bvals`` and one of ``directions``/``bvecs``.
    """

    diffusivity: float = Field(gt=0, description="diffusivity D, µm²/µs")
    length_scale: float = Field(gt=0, description="eigen truncation length ℓ, µm")
    bvalues: list[float] | None = Field(default=None, description="b-values, s/mm²")
    bvals: str | None = Field(default=None, description="FSL bvals file (relative path)")
    directions: DirectionsConfig | None = Field(
        default=None, description="list of unit 3-vectors, or {fibonacci: N}"
    )
    bvecs: str | None = Field(default=None, description="FSL bvecs file (relative path)")
    sequences: list[dict[str, Any]] = Field(
        min_length=1, description="waveforms {type: kind, ...} (see sequence_config), µs")


# --------------------------------------------------------------------------- dict / YAML


def _field_from_loc(loc: tuple[Any, ...], data: Any) -> str | None:
    """Dotted key path (``sequences[1].delta``) of a pydantic error location, skipping the
    union-member tags pydantic inserts (they do not index into the input)."""
    out = ""
    cur = data
    for k, el in enumerate(loc):
        last = k == len(loc) - 1
        if isinstance(el, int) and isinstance(cur, list | tuple) and 0 <= el < len(cur):
            out += f"[{el}]"
            cur = cur[el]
        elif isinstance(el, str) and isinstance(cur, Mapping) and (el in cur or last):
            out += f".{el}" if out else el
            cur = cur.get(el)
    return out or None


def _validation_error(e: ValidationError, data: Any, source: str | None) -> ProtocolError:
    errs = e.errors()
    err = errs[0]
    field = _field_from_loc(tuple(err["loc"]), data)
    if err["type"] == "missing":
        msg = f"missing required key '{err['loc'][-1]}'"
    else:
        msg = f"{err['msg']} (got {err.get('input')!r})"
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more error(s))"
    return ProtocolError(msg, source=source, field=field)


def _precheck(d: Mapping[str, Any], source: str | None) -> None:
    """Unknown keys (with suggestions) and either/or keys, before pydantic validation."""
    check_keys(d, ProtocolConfig.model_fields, source=source)
    for a, b in (("bvalues", "bvals"), ("directions", "bvecs")):
        if a in d and b in d:
            raise ConfigError(f"give either '{a}' or '{b}', not both", source=source, field=b)
        if a not in d and b not in d:
            raise ProtocolError(f"missing required key '{a}' (or '{b}: FILE')",
                                source=source, field=a)
    if isinstance(d.get("directions"), Mapping):
        check_keys(d["directions"], FibonacciConfig.model_fields, source=source,
                    prefix="directions.")
    seqs = d.get("sequences")
    if isinstance(seqs, list):
        for i, s in enumerate(seqs):
            if not isinstance(s, Mapping):
                continue
            kind = s.get("type")
            if kind is None:
                raise ProtocolError(
                    f"missing required key 'type' (one of {', '.join(SEQUENCE_TYPES)})",
                    source=source, field=f"sequences[{i}].type",
                )
            if kind not in SEQUENCE_TYPES:
                raise ProtocolError(
                    f"unknown sequence type '{kind}'{did_you_mean(str(kind), SEQUENCE_TYPES)}"
                    f"; known types: {', '.join(SEQUENCE_TYPES)}",
                    source=source, field=f"sequences[{i}].type",
                )
            check_keys(s, sequence_config(kind).model_fields, source=source,
                        prefix=f"sequences[{i}].")


def _validated_sequence(s: dict[str, Any], i: int, source: str | None) -> dict[str, Any]:
    """Sequence ``i`` of a config checked against its kind's config model (types)."""
    try:
        return sequence_config(s["type"]).model_validate(s).model_dump()
    except ValidationError as e:
        raise _relocate(_validation_error(e, s, None), source, f"sequences[{i}].") from None


def _relocate(e: SpinverseError, source: str | None, prefix: str = "") -> SpinverseError:
    """The same error with ``source`` filled in (if unset) and ``prefix`` on its field."""
    field = f"{prefix}{e.field}" if prefix and e.field else (e.field or prefix or None)
    return type(e)(e.message, source=e.source or source, field=field)


def _unique_rows(a: np.ndarray) -> np.ndarray:
    seen: dict[bytes, None] = {}
    keep = []
    for i, row in enumerate(a):
        key = row.tobytes()
        if key not in seen:
            seen[key] = None
            keep.append(i)
    return a[keep]


def protocol_from_dict(
    d: Mapping[str, Any], *, source: str | None = None, base_dir: PathLike | None = None
) -> Protocol:
    """Build a protocol from a config mapping (the YAML schema of this module).

    ``source`` names the file in error messages; ``bvals``/``bvecs`` paths are resolved
    against ``base_dir`` (default: ``source``'s folder, else the working directory).
    """
    if not isinstance(d, Mapping):
        raise InputFileError(f"expected a mapping of keys at the top level, got "
                             f"{type(d).__name__}", source=source)
    _precheck(d, source)
    try:
        cfg = ProtocolConfig.model_validate(dict(d))
    except ValidationError as e:
        raise _validation_error(e, d, source) from None
    if base_dir is None:
        base_dir = Path(source).parent if source else Path.cwd()
    base = Path(base_dir)

    if cfg.bvals is not None and cfg.bvecs is not None:
        read_bvals_bvecs(base / cfg.bvals, base / cfg.bvecs)  # one vector per b-value
    if cfg.bvals is not None:
        b_file = read_bvals(base / cfg.bvals)
        bvalues = np.array(list(dict.fromkeys(b_file.tolist())), dtype=float)
    else:
        bvalues = np.asarray(cfg.bvalues, dtype=float)

    try:
        if cfg.bvecs is not None:
            vecs = read_bvecs(base / cfg.bvecs)
            nonzero = np.linalg.norm(vecs, axis=1) > 1e-6
            if not nonzero.any():
                raise ProtocolError("no non-zero vector in the bvecs file",
                                    source=str(base / cfg.bvecs), field="bvecs")
            directions = _unique_rows(
                normalise_directions(vecs[nonzero], source=str(base / cfg.bvecs),
                                     field="bvecs")
            )
        elif isinstance(cfg.directions, FibonacciConfig):
            directions = fibonacci_directions(cfg.directions.fibonacci)
        else:
            directions = normalise_directions(np.asarray(cfg.directions, dtype=float))
        sequences = tuple(
            sequence_from_dict(_validated_sequence(s, i, source), field=f"sequences[{i}]")
            for i, s in enumerate(cfg.sequences)
        )
        return Protocol(
            diffusivity=cfg.diffusivity,
            length_scale=cfg.length_scale,
            bvalues=bvalues,
            directions=directions,
            sequences=sequences,
        )
    except SpinverseError as e:
        raise _relocate(e, source) from None


def protocol_to_dict(p: Protocol) -> dict[str, Any]:
    """Plain YAML-able dict of ``p`` (the inverse of :func:`protocol_from_dict`, exact)."""
    return {
        "diffusivity": float(p.diffusivity),
        "length_scale": float(p.length_scale),
        "bvalues": [float(b) for b in p.bvalues],
        "directions": [[float(x) for x in row] for row in p.directions],
        "sequences": [s.to_dict() for s in p.sequences],
    }


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line saying what is wrong with a YAML text and where (1-based line, column)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is not None and problem:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())


def load_protocol(path: PathLike) -> Protocol:
    """Read a protocol YAML file (see the module docstring for the schema; times in µs)."""
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise InputFileError("protocol file not found", source=src)
    if not p.is_file():
        raise InputFileError("not a regular file", source=src)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read as text: {e}", source=src) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputFileError(f"not valid YAML: {_yaml_problem(e)}", source=src) from None
    if data is None:
        raise InputFileError("the file is empty", source=src)
    if not isinstance(data, dict):
        raise InputFileError(
            f"expected a mapping of keys (diffusivity, bvalues, ...), got "
            f"{type(data).__name__}", source=src,
        )
    return protocol_from_dict(data, source=src, base_dir=p.parent)


def save_protocol(p: Protocol, path: PathLike) -> Path:
    """Write ``p`` as a protocol YAML file (exact round trip with :func:`load_protocol`)."""
    header = (
        "# spinverse acquisition protocol. Units: diffusivity µm²/µs, length_scale µm,\n"
        "# bvalues s/mm² (= µs/µm²), sequence times µs.\n"
    )
    body = yaml.safe_dump(protocol_to_dict(p), sort_keys=False, default_flow_style=None,
                          allow_unicode=True)
    out = Path(path)
    out.write_text(header + body, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- arrays (.npz)


def _seq_param(s: Sequence, name: str) -> float:
    val = getattr(s, name, None)
    return float(val) if isinstance(val, int | float) else math.nan


def protocol_to_arrays(p: Protocol) -> dict[str, np.ndarray]:
    """Arrays describing ``p`` for an output .npz (no pickles).

    Keys: ``bvalues`` (nb,) s/mm², ``directions`` (nd, 3), ``delta``/``Delta`` (n_seq,) µs
    (NaN where the sequence has none), ``sequence_types`` (n_seq,) str, ``sequences_json``
    (0-d str, exact round trip), ``diffusivity`` (0-d) µm²/µs, ``length_scale`` (0-d) µm.
    """
    return {
        "bvalues": np.array(p.bvalues, dtype=float),
        "directions": np.array(p.directions, dtype=float),
        "delta": np.array([_seq_param(s, "delta") for s in p.sequences], dtype=float),
        "Delta": np.array([_seq_param(s, "Delta") for s in p.sequences], dtype=float),
        "sequence_types": np.array([s.kind for s in p.sequences], dtype=str),
        "sequences_json": np.array(json.dumps([s.to_dict() for s in p.sequences])),
        "diffusivity": np.array(p.diffusivity, dtype=float),
        "length_scale": np.array(p.length_scale, dtype=float),
    }


def _scalar_str(a: Any) -> str:
    v = np.asarray(a).item()
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def protocol_from_arrays(d: Mapping[str, Any], *, source: str | None = None) -> Protocol:
    """Inverse of :func:`protocol_to_arrays` (accepts an open ``np.load`` result).

    Uses ``sequences_json`` when present; otherwise rebuilds PGSE sequences from
    ``sequence_types``, ``delta`` and ``Delta`` (µs).
    """
    def get(key: str) -> Any:
        if key not in d:
            raise InputFileError(f"missing array '{key}'", source=source, field=key)
        return d[key]

    try:
        if "sequences_json" in d:
            try:
                items = json.loads(_scalar_str(d["sequences_json"]))
            except (ValueError, TypeError) as e:
                raise InputFileError(f"invalid JSON: {e}", source=source,
                                     field="sequences_json") from None
            if not isinstance(items, list):
                raise InputFileError("expected a JSON list of sequences", source=source,
                                     field="sequences_json")
            sequences = tuple(
                sequence_from_dict(s, field=f"sequences_json[{i}]") for i, s in enumerate(items)
            )
        else:
            kinds = [str(k) for k in np.asarray(get("sequence_types")).ravel()]
            deltas = np.asarray(get("delta"), dtype=float).ravel()
            Deltas = np.asarray(get("Delta"), dtype=float).ravel()
            if not (len(kinds) == len(deltas) == len(Deltas)):
                raise InputFileError("sequence_types, delta and Delta differ in length",
                                     source=source, field="sequence_types")
            seqs = []
            for i, (k, dl, DL) in enumerate(zip(kinds, deltas, Deltas, strict=True)):
                if k != "pgse":
                    raise InputFileError(f"sequence {i} of type '{k}' needs 'sequences_json'",
                                         source=source, field="sequence_types")
                seqs.append(PGSE(float(dl), float(DL)))
            sequences = tuple(seqs)
        return Protocol(
            diffusivity=get("diffusivity"),
            length_scale=get("length_scale"),
            bvalues=np.asarray(get("bvalues"), dtype=float),
            directions=np.asarray(get("directions"), dtype=float),
            sequences=sequences,
        )
    except SpinverseError as e:
        raise _relocate(e, source) from None

