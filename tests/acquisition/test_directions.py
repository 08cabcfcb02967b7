"""Gradient directions: Fibonacci sphere of the published benchmark and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinverse.acquisition.directions import fibonacci_directions, normalise_directions
from spinverse.errors import ProtocolError


def test_fibonacci_formula_elementwise() -> None:
    n = 30
    g = fibonacci_directions(n)
    assert g.shape == (30, 3)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    for i in range(n):
        z = 1.0 - (2 * i + 1) / n
        phi = i * golden
        r = math.sqrt(1.0 - z * z)
        np.testing.assert_allclose(g[i], [r * math.cos(phi), r * math.sin(phi), z],
                                   rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, rtol=0, atol=1e-15)


def test_fibonacci_first_and_last_and_no_antipode_removal() -> None:
    g = fibonacci_directions(30)
    assert g[0, 2] == pytest.approx(1 - 1 / 30) and g[0, 1] == 0.0
    assert g[-1, 2] == pytest.approx(-1 + 1 / 30)
    np.testing.assert_allclose(g[:, 2], -g[::-1, 2], atol=1e-15)  # z symmetric
    assert len(fibonacci_directions(1)) == 1


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "30"])
def test_fibonacci_rejects_bad_n(n: object) -> None:
    with pytest.raises(ProtocolError):
        fibonacci_directions(n)  # type: ignore[arg-type]


def test_normalise_keeps_unit_vectors_exactly() -> None:
    g = fibonacci_directions(30)
    out = normalise_directions(g)
    np.testing.assert_array_equal(out, g)
    np.testing.assert_array_equal(normalise_directions(out), out)
    assert out is not g


def test_normalise_single_vector_and_small_deviation() -> None:
    out = normalise_directions([0.0, 0.0, 1.0005])
    assert out.shape == (1, 3)
    np.testing.assert_allclose(out, [[0.0, 0.0, 1.0]], atol=0)


def test_normalise_non_unit() -> None:
    with pytest.raises(ProtocolError, match="not a unit vector") as exc:
        normalise_directions([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], source="x.yaml")
    assert exc.value.source == "x.yaml" and "direction 1" in str(exc.value)
    out = normalise_directions([[1.0, 1.0, 0.0], [0.0, 0.0, -3.0]], allow_non_unit=True)
    np.testing.assert_allclose(out, [[2**-0.5, 2**-0.5, 0.0], [0.0, 0.0, -1.0]], atol=1e-16)


@pytest.mark.parametrize(
    ("dirs", "match"),
    [
        ([[0.0, 0.0, 0.0]], "zero length"),
        ([[1.0, 0.0, 0.0], [np.nan, 0.0, 1.0]], "not finite"),
        ([[np.inf, 0.0, 0.0]], "not finite"),
        ([[1.0, 0.0]], "shape"),
        (np.zeros((0, 3)), "at least one"),
        ([["a", "b", "c"]], "numeric"),
    ],
)
def test_normalise_errors(dirs: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        normalise_directions(dirs, allow_non_unit=True)  # type: ignore[arg-type]
