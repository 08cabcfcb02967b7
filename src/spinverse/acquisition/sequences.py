"""Diffusion-encoding gradient waveforms (time profiles f(t)), with times in µs.

A sequence describes the dimensionless time profile ``f(t)`` of the diffusion gradient;
the encoding strength is carried separately by ``q = γG`` in 1/(µm·µs). With
``F(t) = ∫₀ᵗ f`` (µs), the b-value is ``b = q² ∫₀^TE F(t)² dt``; :meth:`Sequence.bvalue_factor`
returns that integral in µs³, so that b (in µs/µm², numerically equal to s/mm²) is
``q² · bvalue_factor()``. Every concrete sequence computes it in closed form.

Sequences are immutable (frozen dataclasses) and validate themselves on construction,
raising :class:`~spinverse.errors.ProtocolError`. A new waveform is one declaration: a
``Sequence`` subclass with a ``kind`` and its parameters as dataclass fields (units in
``field(metadata={"doc": ...})``), decorated with :func:`register_sequence`; its YAML config
model, ``sequence_from_dict`` and the solvers then know it.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from spinverse.errors import ConfigError, ProtocolError

__all__ = [
    "Sequence",
    "PGSE",
    "DoublePGSE",
    "CosOGSE",
    "PiecewiseConstant",
    "SEQUENCE_TYPES",
    "register_sequence",
    "sequence_from_dict",
]

Segments = tuple[tuple[float, float], ...]

#: Relative tolerance on the refocusing condition F(TE) = 0 of a piecewise waveform.
_ECHO_RTOL = 1e-8


# --------------------------------------------------------------------------- helpers


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(
    d: Mapping[str, Any],
    allowed: Iterable[str],
    *,
    source: str | None = None,
    prefix: str = "",
) -> None:
    """Raise :class:`ConfigError` naming the first key of ``d`` not in ``allowed``."""
    allowed = set(allowed)
    for key in d:
        if key not in allowed:
            raise ConfigError(
                f"unknown key '{key}'{did_you_mean(key, allowed)}; "
                f"allowed keys: {', '.join(sorted(allowed))}",
                source=source,
                field=f"{prefix}{key}",
            )


def _finite_float(value: Any, name: str) -> float:
    """``float(value)``, raising :class:`ProtocolError` if not a finite real number."""
    if isinstance(value, bool):
        raise ProtocolError(f"expected a number, got {value!r}", field=name)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"expected a number, got {value!r}", field=name) from None
    if not math.isfinite(x):
        raise ProtocolError(f"must be finite, got {x}", field=name)
    return x


def _check_delta_Delta(delta: float, Delta: float) -> None:
    if delta <= 0:
        raise ProtocolError(f"delta must be > 0 µs, got {delta}", field="delta")
    if Delta <= 0:
        raise ProtocolError(f"Delta must be > 0 µs, got {Delta}", field="Delta")
    if delta > Delta:
        raise ProtocolError(
            f"delta > Delta ({delta} µs > {Delta} µs): the second gradient pulse would "
            "start before the first one ends",
            field="delta",
        )


def _piecewise_F2_integral(durations: np.ndarray, values: np.ndarray) -> float:
    """Exact ∫ F(t)² dt (µs³) for a piecewise-constant f given by segments, F(0) = 0."""
    d = np.asarray(durations, dtype=float)
    v = np.asarray(values, dtype=float)
    a = np.concatenate(([0.0], np.cumsum(v * d)[:-1]))  # F at the start of each segment
    # ∫₀^d (a + v s)² ds = a² d + a v d² + v² d³ / 3
    return float(np.sum(a * a * d + a * v * d * d + v * v * d**3 / 3.0))


# --------------------------------------------------------------------------- base class


@dataclass(frozen=True)
class Sequence(abc.ABC):
    """A diffusion-encoding waveform: dimensionless time profile f(t), t in µs.

    Subclasses set ``kind`` and either implement :meth:`_breakpoints` (exact piecewise
    constant waveforms) or override :meth:`f` and :meth:`segments` (smooth ones).
    """

    kind: ClassVar[str] = ""

    # -- to implement -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def echo_time(self) -> float:
        """Echo time TE in µs; f vanishes outside [0, TE]."""

    def _breakpoints(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(edges (n+1,) µs, values (n,)) of a piecewise-constant f, or None if smooth."""
        return None

    # -- generic ------------------------------------------------------------------------
    def f(self, t: np.ndarray) -> np.ndarray:
        """Time profile f(t) (dimensionless) at times ``t`` (µs), 0 outside [0, TE].

        Segment ``k`` covers ``[t_k, t_{k+1})``; the last one also includes TE.
        """
        bp = self._breakpoints()
        if bp is None:  # pragma: no cover - smooth subclasses override f
            raise NotImplementedError
        edges, values = bp
        t = np.asarray(t, dtype=float)
        k = np.searchsorted(edges, t, side="right") - 1
        k = np.clip(k, 0, len(values) - 1)
        inside = (t >= 0.0) & (t <= edges[-1])
        return np.where(inside, values[k], 0.0)

    def bvalue_factor(self) -> float:
        """∫₀^TE F(t)² dt in µs³ with F(t) = ∫₀ᵗ f, so that b = q² · bvalue_factor (exact)."""
        segs = self.segments()
        if segs is None:  # pragma: no cover - smooth subclasses override
            raise NotImplementedError
        d, v = np.array(segs, dtype=float).T
        return _piecewise_F2_integral(d, v)

    def q_from_b(self, b: float | np.ndarray) -> float | np.ndarray:
        """q in 1/(µm·µs) giving b-value(s) ``b`` in s/mm² (= µs/µm²): q = √(b / factor)."""
        b_arr = np.asarray(b, dtype=float)
        if not np.all(np.isfinite(b_arr)) or np.any(b_arr < 0):
            raise ProtocolError(f"b-values must be finite and >= 0 s/mm², got {b}", field="b")
        q = np.sqrt(b_arr / self.bvalue_factor())
        return float(q) if q.ndim == 0 else q

    def b_from_q(self, q: float | np.ndarray) -> float | np.ndarray:
        """b-value(s) in s/mm² (= µs/µm²) for q in 1/(µm·µs): b = q² · factor."""
        q_arr = np.asarray(q, dtype=float)
        b = q_arr * q_arr * self.bvalue_factor()
        return float(b) if b.ndim == 0 else b

    def segments(self) -> Segments | None:
        """Exact ``((duration_us, f_value), ...)`` covering [0, TE] (positive durations
        only), or None for a smooth waveform."""
        bp = self._breakpoints()
        if bp is None:
            return None
        edges, values = bp
        durations = np.diff(edges)
        return tuple(
            (float(d), float(v)) for d, v in zip(durations, values, strict=True) if d > 0
        )

    def piecewise(self, max_segment_us: float) -> Segments:
        """Exact segments if the waveform is piecewise constant, otherwise a midpoint-sampled
        piecewise-constant approximation whose sampled segments are no longer than
        ``max_segment_us`` µs (pieces where f is exactly constant may be kept whole)."""
        _check_max_segment(max_segment_us)
        segs = self.segments()
        if segs is not None:
            return segs
        te = self.echo_time
        m = max(1, math.ceil(te / max_segment_us))
        h = te / m
        mid = (np.arange(m) + 0.5) * h
        return tuple((h, float(v)) for v in self.f(mid))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able dict: ``{"type": kind, <parameters>}`` (times in µs)."""
        out: dict[str, Any] = {"type": self.kind}
        for fld in dataclasses.fields(self):
            val = getattr(self, fld.name)
            out[fld.name] = list(val) if isinstance(val, tuple) else val
        return out


def _check_max_segment(max_segment_us: float) -> None:
    ok = isinstance(max_segment_us, numbers.Real) and not isinstance(max_segment_us, bool)
    if not (ok and math.isfinite(max_segment_us) and max_segment_us > 0):
        raise ProtocolError(
            f"max_segment_us must be a finite number > 0 µs, got {max_segment_us!r}",
            field="max_segment_us",
        )


_S = TypeVar("_S", bound="type[Sequence]")

#: Sequence classes by their ``kind`` (the ``type`` key of a config / dict), filled by
#: :func:`register_sequence`.
SEQUENCE_TYPES: dict[str, type[Sequence]] = {}


def register_sequence(cls: _S) -> _S:
    """Class decorator: make a frozen-dataclass ``Sequence`` subclass known by its ``kind``
    to YAML configs, :func:`sequence_from_dict` and the solvers."""
    if not (isinstance(cls, type) and issubclass(cls, Sequence) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_sequence expects a dataclass Sequence subclass, got {cls!r}")
    kind = cls.kind
    if not kind or not isinstance(kind, str):
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'kind'")
    if SEQUENCE_TYPES.get(kind, cls) is not cls:
        raise ValueError(f"sequence kind {kind!r} is already registered by "
                         f"{SEQUENCE_TYPES[kind].__name__}")
    SEQUENCE_TYPES[kind] = cls
    return cls


def _doc(text: str) -> Any:
    """A required dataclass field documented (units included) for its config model."""
    return field(metadata={"doc": text})


# --------------------------------------------------------------------------- concrete


@register_sequence
@dataclass(frozen=True)
class PGSE(Sequence):
    """Pulsed-gradient spin echo: f = +1 on [0, δ), 0 on [δ, Δ), −1 on [Δ, Δ+δ].

    ``delta`` δ (pulse duration) and ``Delta`` Δ (pulse separation) in µs; TE = Δ + δ;
    bvalue_factor = δ²(Δ − δ/3) µs³.
    """

    delta: float = _doc("gradient pulse duration δ, µs")
    Delta: float = _doc("pulse separation Δ (start to start), µs")
    kind: ClassVar[str] = "pgse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", _finite_float(self.delta, "delta"))
        object.__setattr__(self, "Delta", _finite_float(self.Delta, "Delta"))
        _check_delta_Delta(self.delta, self.Delta)

    @property
    def echo_time(self) -> float:
        """TE = Δ + δ in µs."""
        return self.Delta + self.delta

    def _breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        d, D = self.delta, self.Delta
        return np.array([0.0, d, D, D + d]), np.array([1.0, 0.0, -1.0])

    def bvalue_factor(self) -> float:
        """δ²(Δ − δ/3) in µs³ (exact)."""
        d = self.delta
        return d * d * (self.Delta - d / 3.0)


@register_sequence
@dataclass(frozen=True)
class DoublePGSE(Sequence):
    """Two identical PGSE blocks (δ, Δ) along the same axis; the second starts ``mixing`` µs
    after the first ends (``mixing = 0``: back to back).

    TE = 2(Δ + δ) + mixing µs; F returns to 0 between blocks, so bvalue_factor =
    2 δ²(Δ − δ/3) µs³.
    """

    delta: float = _doc("gradient pulse duration δ, µs")
    Delta: float = _doc("pulse separation Δ within each block, µs")
    mixing: float = _doc("gap between the end of block 1 and block 2, µs")
    kind: ClassVar[str] = "double_pgse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", _finite_float(self.delta, "delta"))
        object.__setattr__(self, "Delta", _finite_float(self.Delta, "Delta"))
        object.__setattr__(self, "mixing", _finite_float(self.mixing, "mixing"))
        _check_delta_Delta(self.delta, self.Delta)
        if self.mixing < 0:
            raise ProtocolError(f"mixing must be >= 0 µs, got {self.mixing}", field="mixing")

    @property
    def echo_time(self) -> float:
        """TE = 2(Δ + δ) + mixing in µs."""
        return 2.0 * (self.Delta + self.delta) + self.mixing

    def _breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        d, D = self.delta, self.Delta
        t1 = D + d + self.mixing  # start of the second block
        edges = np.array([0.0, d, D, D + d, t1, t1 + d, t1 + D, t1 + D + d])
        return edges, np.array([1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0])

    def bvalue_factor(self) -> float:
        """2 δ²(Δ − δ/3) in µs³ (exact)."""
        d = self.delta
        return 2.0 * d * d * (self.Delta - d / 3.0)


@register_sequence
@dataclass(frozen=True)
class CosOGSE(Sequence):
    """Cosine oscillating-gradient spin echo: f = cos(2πn t/δ) on [0, δ), 0 on [δ, Δ),
    −cos(2πn (t−Δ)/δ) on [Δ, Δ+δ], with ``n_periods`` n a positive integer.

    Times in µs; TE = Δ + δ; bvalue_factor = δ³ / (4π² n²) µs³ (exact).
    """

    delta: float = _doc("duration δ of each oscillating lobe, µs")
    Delta: float = _doc("lobe separation Δ (start to start), µs")
    n_periods: int = _doc("number of cosine periods per lobe (integer)")
    kind: ClassVar[str] = "cos_ogse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", _finite_float(self.delta, "delta"))
        object.__setattr__(self, "Delta", _finite_float(self.Delta, "Delta"))
        _check_delta_Delta(self.delta, self.Delta)
        n = self.n_periods
        if isinstance(n, bool) or not isinstance(n, int | float | np.integer | np.floating):
            raise ProtocolError(f"n_periods must be an integer, got {n!r}", field="n_periods")
        if not (math.isfinite(n) and float(n).is_integer()):
            raise ProtocolError(
                f"n_periods must be an integer (non-integer periods do not refocus), got {n}",
                field="n_periods",
            )
        if n < 1:
            raise ProtocolError(f"n_periods must be >= 1, got {n}", field="n_periods")
        object.__setattr__(self, "n_periods", int(n))

    @property
    def echo_time(self) -> float:
        """TE = Δ + δ in µs."""
        return self.Delta + self.delta

    def f(self, t: np.ndarray) -> np.ndarray:
        """Time profile f(t) at ``t`` (µs): cosine lobes on [0, δ) and [Δ, Δ+δ], else 0."""
        t = np.asarray(t, dtype=float)
        d, D = self.delta, self.Delta
        w = 2.0 * np.pi * self.n_periods / d
        lobe1 = (t >= 0.0) & (t < d)
        lobe2 = (t >= D) & (t <= D + d)
        return np.where(lobe1, np.cos(w * t), 0.0) - np.where(lobe2, np.cos(w * (t - D)), 0.0)

    def segments(self) -> None:
        """None: the waveform is smooth (use :meth:`piecewise`)."""
        return None

    def piecewise(self, max_segment_us: float) -> Segments:
        """Midpoint-sampled lobes (segments ≤ ``max_segment_us`` µs, at least 4 per period)
        with the exact zero gap between them as one segment; F(TE) = 0 to round-off."""
        _check_max_segment(max_segment_us)
        d, D = self.delta, self.Delta
        m = max(math.ceil(d / max_segment_us), 4 * self.n_periods)
        h = d / m
        lobe = np.cos(2.0 * np.pi * self.n_periods * (np.arange(m) + 0.5) / m)
        segs = [(h, float(v)) for v in lobe]
        if D > d:
            segs.append((D - d, 0.0))
        segs.extend((h, float(-v)) for v in lobe)
        return tuple(segs)

    def bvalue_factor(self) -> float:
        """δ³ / (4π² n²) in µs³ (exact)."""
        n = self.n_periods
        return self.delta**3 / (4.0 * np.pi**2 * n * n)


@register_sequence
@dataclass(frozen=True)
class PiecewiseConstant(Sequence):
    """Arbitrary piecewise-constant waveform: ``values[k]`` (dimensionless) for
    ``durations[k]`` µs, starting at t = 0; TE = Σ durations.

    The refocusing condition F(TE) = Σ values·durations = 0 must hold (relative
    tolerance 1e-8), and f must not vanish identically.
    """

    durations: tuple[float, ...] = _doc("segment durations, µs")
    values: tuple[float, ...] = _doc("dimensionless f value of each segment")
    kind: ClassVar[str] = "piecewise"

    def __post_init__(self) -> None:
        durs = self._as_tuple(self.durations, "durations")
        vals = self._as_tuple(self.values, "values")
        if len(durs) == 0:
            raise ProtocolError("at least one segment is required", field="durations")
        if len(durs) != len(vals):
            raise ProtocolError(
                f"durations ({len(durs)}) and values ({len(vals)}) differ in length",
                field="values",
            )
        if any(d < 0 for d in durs):
            raise ProtocolError(f"durations must be >= 0 µs, got {list(durs)}", field="durations")
        if math.fsum(durs) <= 0:
            raise ProtocolError("total duration must be > 0 µs", field="durations")
        object.__setattr__(self, "durations", durs)
        object.__setattr__(self, "values", vals)
        moments = [d * v for d, v in zip(durs, vals, strict=True)]
        scale = math.fsum(abs(m) for m in moments)
        if scale == 0:
            raise ProtocolError("the waveform is identically zero (b = 0 for every q)",
                                field="values")
        F_te = math.fsum(moments)
        if abs(F_te) > _ECHO_RTOL * scale:
            raise ProtocolError(
                f"the gradient does not refocus: F(TE) = Σ values·durations = {F_te:g} µs "
                "must be 0",
                field="values",
            )

    @staticmethod
    def _as_tuple(x: Any, name: str) -> tuple[float, ...]:
        if isinstance(x, str | bytes) or not isinstance(x, Iterable):
            raise ProtocolError(f"expected a list of numbers, got {x!r}", field=name)
        arr = np.asarray(list(x), dtype=object)
        if arr.ndim != 1:
            raise ProtocolError(f"expected a flat list of numbers, got {x!r}", field=name)
        return tuple(_finite_float(v, name) for v in arr)

    @property
    def echo_time(self) -> float:
        """TE = Σ durations in µs."""
        return math.fsum(self.durations)

    def _breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        edges = np.concatenate(([0.0], np.cumsum(self.durations)))
        edges[-1] = self.echo_time
        return edges, np.asarray(self.values, dtype=float)

    def bvalue_factor(self) -> float:
        """∫F² in µs³, integrating the piecewise-linear F² exactly."""
        return _piecewise_F2_integral(np.asarray(self.durations), np.asarray(self.values))


def sequence_from_dict(
    d: Mapping[str, Any], *, source: str | None = None, field: str | None = None
) -> Sequence:
    """Build a sequence from ``{"type": kind, <parameters>}`` (times in µs), the inverse of
    :meth:`Sequence.to_dict`.

    Unknown keys raise :class:`ConfigError` (with a "did you mean" suggestion); missing keys
    and invalid values raise :class:`ProtocolError`. ``field`` prefixes reported field names.
    """
    prefix = f"{field}." if field else ""
    if not isinstance(d, Mapping):
        raise ProtocolError(f"a sequence must be a mapping, got {d!r}", source=source,
                            field=field)
    if "type" not in d:
        raise ProtocolError(
            f"missing key 'type' (one of {', '.join(SEQUENCE_TYPES)})",
            source=source, field=f"{prefix}type",
        )
    kind = d["type"]
    if kind not in SEQUENCE_TYPES:
        raise ProtocolError(
            f"unknown sequence type '{kind}'{did_you_mean(str(kind), SEQUENCE_TYPES)}; "
            f"known types: {', '.join(SEQUENCE_TYPES)}",
            source=source, field=f"{prefix}type",
        )
    cls = SEQUENCE_TYPES[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    check_keys(d, ["type", *names], source=source, prefix=prefix)
    for name in names:
        if name not in d:
            raise ProtocolError(f"missing key '{name}' for a '{kind}' sequence",
                                source=source, field=f"{prefix}{name}")
    try:
        return cls(**{name: d[name] for name in names})
    except ProtocolError as e:
        raise ProtocolError(e.message, source=source,
                            field=f"{prefix}{e.field}" if e.field else field) from None
