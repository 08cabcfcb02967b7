"""Gradient waveforms: exact b-value factors (µs³) against independent quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.acquisition.sequences import (
    PGSE,
    SEQUENCE_TYPES,
    CosOGSE,
    DoublePGSE,
    PiecewiseConstant,
    Sequence,
    sequence_from_dict,
)
from spinverse.errors import ConfigError, ProtocolError


def quadrature_bfactor(seq: Sequence, step_us: float = 0.1) -> float:
    """∫F² (µs³) by brute force from the public f(t): midpoint rule for F on a uniform grid
    of ~``step_us`` (chosen so the test's breakpoints fall on grid nodes), trapezoid for F².
    Independent of every closed form in the package."""
    te = seq.echo_time
    n = round(te / step_us)
    t = np.linspace(0.0, te, n + 1)
    h = te / n
    F = np.concatenate(([0.0], np.cumsum(seq.f(t[:-1] + 0.5 * h)) * h))
    return float(np.trapezoid(F * F, t))


# --------------------------------------------------------------------------- b-values


@pytest.mark.parametrize(("delta", "Delta"), [(5e3, 6e3), (1e4, 2e4), (1e4, 6e4), (3e3, 3e3)])
def test_pgse_bvalue_factor_closed_form_and_quadrature(delta: float, Delta: float) -> None:
    seq = PGSE(delta, Delta)
    assert seq.bvalue_factor() == delta**2 * (Delta - delta / 3)
    assert seq.bvalue_factor() == pytest.approx(quadrature_bfactor(seq), rel=1e-7)
    assert seq.echo_time == Delta + delta


def test_pgse_published_b_gives_expected_q() -> None:
    seq = PGSE(5_000.0, 6_000.0)
    q = seq.q_from_b(1000.0)
    assert q == pytest.approx(math.sqrt(1000.0 / (25e6 * (6000.0 - 5000.0 / 3))), rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_cos_ogse_bvalue_factor_vs_quadrature(n: int) -> None:
    seq = CosOGSE(10_000.0, 12_000.0, n)
    assert seq.bvalue_factor() == pytest.approx(1e12 / (4 * np.pi**2 * n**2), rel=1e-14)
    assert seq.bvalue_factor() == pytest.approx(quadrature_bfactor(seq), rel=1e-6)


def test_double_pgse_bvalue_factor_vs_quadrature() -> None:
    seq = DoublePGSE(4_000.0, 10_000.0, 3_000.0)
    assert seq.echo_time == 2 * 14_000.0 + 3_000.0
    assert seq.bvalue_factor() == pytest.approx(2 * PGSE(4_000.0, 10_000.0).bvalue_factor())
    assert seq.bvalue_factor() == pytest.approx(quadrature_bfactor(seq), rel=1e-7)
    # the exact generic integration of its segments agrees with the closed form
    d, v = zip(*seq.segments(), strict=True)
    assert PiecewiseConstant(d, v).bvalue_factor() == pytest.approx(seq.bvalue_factor(),
                                                                    rel=1e-13)


def test_piecewise_constant_reproduces_pgse() -> None:
    pgse = PGSE(10_000.0, 20_000.0)
    segs = pgse.segments()
    assert segs == ((10_000.0, 1.0), (10_000.0, 0.0), (10_000.0, -1.0))
    pw = PiecewiseConstant(*zip(*segs, strict=True))
    assert pw.echo_time == pgse.echo_time
    assert pw.bvalue_factor() == pytest.approx(pgse.bvalue_factor(), rel=1e-14)
    t = np.linspace(-100.0, pgse.echo_time + 100.0, 1001)
    np.testing.assert_array_equal(pw.f(t), pgse.f(t))


def test_piecewise_bvalue_factor_vs_quadrature_irregular() -> None:
    seq = PiecewiseConstant([1000.0, 500.0, 2000.0, 700.0, 1500.0], [1.0, 0.0, -0.5, 0.3, -0.14])
    assert seq.bvalue_factor() == pytest.approx(quadrature_bfactor(seq), rel=1e-7)


def test_cos_ogse_piecewise_converges() -> None:
    seq = CosOGSE(10_000.0, 12_000.0, 2)
    assert seq.segments() is None
    errs = []
    for h in (500.0, 250.0, 125.0):
        segs = seq.piecewise(h)
        lobes = [d for d, _ in segs if d != 2_000.0]  # the exact zero gap stays whole
        assert len(lobes) == len(segs) - 1 and max(lobes) <= h + 1e-9
        assert sum(d for d, _ in segs) == pytest.approx(seq.echo_time, rel=1e-14)
        pw = PiecewiseConstant(*zip(*segs, strict=True))  # refocuses (validated)
        errs.append(abs(pw.bvalue_factor() / seq.bvalue_factor() - 1))
    assert errs[0] > 3.5 * errs[1] > 3.5**2 * errs[2]  # O(h²)


def test_piecewise_returns_exact_segments_when_they_exist() -> None:
    seq = PGSE(5_000.0, 6_000.0)
    assert seq.piecewise(1.0) == seq.segments()
    assert PGSE(5_000.0, 5_000.0).segments() == ((5_000.0, 1.0), (5_000.0, -1.0))


def test_pgse_f_profile() -> None:
    seq = PGSE(5_000.0, 6_000.0)
    t = np.array([-1.0, 0.0, 4_999.9, 5_000.0, 5_999.9, 6_000.0, 11_000.0, 11_000.1])
    np.testing.assert_array_equal(seq.f(t), [0, 1, 1, 0, 0, -1, -1, 0])
    assert seq.f(np.float64(1.0)).shape == ()


# --------------------------------------------------------------------------- dicts


@pytest.mark.parametrize(
    "seq",
    [
        PGSE(5_000.0, 6_000.0),
        DoublePGSE(5_000.0, 6_000.0, 0.0),
        CosOGSE(10_000.0, 12_000.0, 3),
        PiecewiseConstant((1.0, 2.0, 1.0), (1.0, 0.0, -1.0)),
    ],
)
def test_to_dict_round_trip(seq: Sequence) -> None:
    d = seq.to_dict()
    assert d["type"] == seq.kind
    assert SEQUENCE_TYPES[seq.kind] is type(seq)
    assert sequence_from_dict(d) == seq


def test_sequence_from_dict_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'Delta'"):
        sequence_from_dict({"type": "pgse", "delta": 1.0, "Delat": 2.0})
    with pytest.raises(ProtocolError, match="did you mean 'pgse'"):
        sequence_from_dict({"type": "pgs", "delta": 1.0, "Delta": 2.0})
    with pytest.raises(ProtocolError, match="missing key 'Delta'") as exc:
        sequence_from_dict({"type": "pgse", "delta": 1.0}, source="p.yaml", field="sequences[2]")
    assert exc.value.source == "p.yaml" and exc.value.field == "sequences[2].Delta"
    with pytest.raises(ProtocolError, match="type"):
        sequence_from_dict({"delta": 1.0, "Delta": 2.0})
    with pytest.raises(ProtocolError, match="mapping"):
        sequence_from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="delta > Delta") as exc:
        sequence_from_dict({"type": "pgse", "delta": 3.0, "Delta": 2.0}, field="sequences[0]")
    assert exc.value.field == "sequences[0].delta"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: PGSE(0.0, 10.0), "delta must be > 0"),
        (lambda: PGSE(-1.0, 10.0), "delta must be > 0"),
        (lambda: PGSE(20.0, 10.0), "delta > Delta"),
        (lambda: PGSE(float("nan"), 10.0), "finite"),
        (lambda: PGSE(1.0, float("inf")), "finite"),
        (lambda: PGSE("a", 10.0), "number"),
        (lambda: DoublePGSE(20.0, 10.0, 0.0), "delta > Delta"),
        (lambda: DoublePGSE(1.0, 10.0, -1.0), "mixing"),
        (lambda: CosOGSE(10.0, 12.0, 1.5), "non-integer"),
        (lambda: CosOGSE(10.0, 12.0, 0), ">= 1"),
        (lambda: CosOGSE(10.0, 12.0, "2"), "integer"),
        (lambda: CosOGSE(20.0, 12.0, 1), "delta > Delta"),
        (lambda: PiecewiseConstant((1.0, -1.0), (1.0, -1.0)), ">= 0"),
        (lambda: PiecewiseConstant((1.0, 1.0), (1.0,)), "differ in length"),
        (lambda: PiecewiseConstant((), ()), "at least one"),
        (lambda: PiecewiseConstant((1.0, 1.0), (1.0, float("nan"))), "finite"),
        (lambda: PiecewiseConstant((1.0, 1.0), (1.0, 0.5)), "refocus"),
        (lambda: PiecewiseConstant((1.0, 1.0), (0.0, 0.0)), "identically zero"),
        (lambda: PiecewiseConstant((0.0,), (1.0,)), "total duration"),
        (lambda: PiecewiseConstant(5.0, (1.0,)), "list"),
    ],
)
def test_invalid_sequences_raise(factory, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        factory()


def test_q_from_b_rejects_negative_and_bad_segment_length() -> None:
    seq = PGSE(5_000.0, 6_000.0)
    with pytest.raises(ProtocolError):
        seq.q_from_b(-1.0)
    with pytest.raises(ProtocolError):
        seq.q_from_b(np.array([0.0, np.nan]))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ProtocolError, match="max_segment_us"):
            CosOGSE(10.0, 12.0, 1).piecewise(bad)


def test_sequences_are_frozen() -> None:
    seq = PGSE(5_000.0, 6_000.0)
    with pytest.raises(AttributeError):
        seq.delta = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

times = st.floats(min_value=1.0, max_value=1e5, allow_nan=False)


@st.composite
def sequences(draw: st.DrawFn) -> Sequence:
    delta = draw(times)
    Delta = delta + draw(st.floats(min_value=0.0, max_value=1e5))
    kind = draw(st.sampled_from(sorted(SEQUENCE_TYPES)))
    if kind == "pgse":
        return PGSE(delta, Delta)
    if kind == "double_pgse":
        return DoublePGSE(delta, Delta, draw(st.floats(min_value=0.0, max_value=1e5)))
    if kind == "cos_ogse":
        return CosOGSE(delta, Delta, draw(st.integers(min_value=1, max_value=10)))
    durs = draw(st.lists(times, min_size=1, max_size=6))
    amplitude = st.one_of(st.just(0.0), st.floats(0.01, 2.0), st.floats(-2.0, -0.01))
    vals = draw(st.lists(amplitude, min_size=len(durs), max_size=len(durs)))
    if not any(vals):
        vals[0] = 1.0
    # append a closing segment that refocuses the gradient
    moment = sum(d * v for d, v in zip(durs, vals, strict=True))
    tail = draw(times)
    return PiecewiseConstant([*durs, tail], [*vals, -moment / tail])


@settings(max_examples=60, deadline=None)
@given(sequences(), st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e5)))
def test_b_from_q_inverts_q_from_b(seq: Sequence, b: float) -> None:
    assert seq.b_from_q(seq.q_from_b(b)) == pytest.approx(b, rel=1e-12, abs=0.0)
    bs = np.array([0.0, b, 2 * b])
    np.testing.assert_allclose(seq.b_from_q(seq.q_from_b(bs)), bs, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(sequences())
def test_bvalue_factor_positive(seq: Sequence) -> None:
    assert seq.bvalue_factor() > 0


@settings(max_examples=60, deadline=None)
@given(sequences(), st.floats(min_value=1e-6, max_value=1e6))
def test_f_zero_outside_echo(seq: Sequence, dt: float) -> None:
    te = seq.echo_time
    t = np.array([-dt, -1e-9 * te - 1e-12, te * (1 + 1e-9) + 1e-9, te + dt])
    np.testing.assert_array_equal(seq.f(t), 0.0)
