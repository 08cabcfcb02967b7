"""Gradient directions: unit 3-vectors ĝ (dimensionless, in the grid's µm frame)."""

from __future__ import annotations

import numpy as np

from spinverse.errors import ProtocolError

__all__ = ["fibonacci_directions", "normalise_directions"]

#: Rows whose norm is within this of 1 are returned bit-for-bit (already unit to round-off).
_UNIT_EXACT_TOL = 4.0 * np.finfo(float).eps


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` directions on a Fibonacci sphere, shape (n, 3), as in the published benchmark.

    For i = 0…n−1: z_i = 1 − (2i+1)/n, φ_i = i·π(3 − √5),
    ĝ_i = (√(1−z_i²) cos φ_i, √(1−z_i²) sin φ_i, z_i). Antipodal pairs are not removed.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ProtocolError(f"the number of directions must be an integer >= 1, got {n!r}",
                            field="fibonacci")
    i = np.arange(int(n), dtype=float)
    z = 1.0 - (2.0 * i + 1.0) / n
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def normalise_directions(
    dirs: np.ndarray,
    *,
    source: str | None = None,
    field: str | None = "directions",
    allow_non_unit: bool = False,
    atol: float = 1e-3,
) -> np.ndarray:
    """Validated unit directions, a new float array of shape (n, 3).

    ``dirs`` is (n, 3) (or a single (3,) vector). Raises :class:`ProtocolError` on a wrong
    shape, no rows, NaN/inf, a zero-length row, or a row whose norm differs from 1 by more
    than ``atol`` unless ``allow_non_unit`` (then every row is rescaled to unit length).
    Rows within ``atol`` of unit length are rescaled; those already unit to round-off are
    returned unchanged, so normalising twice is exact.
    """
    try:
        a = np.array(dirs, dtype=float)
    except (TypeError, ValueError):
        raise ProtocolError("directions must be numeric (n, 3) vectors",
                            source=source, field=field) from None
    if a.ndim == 1 and a.shape[0] == 3:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != 3:
        raise ProtocolError(f"directions must have shape (n, 3), got {a.shape}",
                            source=source, field=field)
    if a.shape[0] == 0:
        raise ProtocolError("at least one direction is required", source=source, field=field)
    bad = ~np.all(np.isfinite(a), axis=1)
    if bad.any():
        raise ProtocolError(f"direction {int(np.argmax(bad))} is not finite (NaN or inf)",
                            source=source, field=field)
    norm = np.linalg.norm(a, axis=1)
    zero = norm < 1e-12
    if zero.any():
        raise ProtocolError(f"direction {int(np.argmax(zero))} has zero length",
                            source=source, field=field)
    off = np.abs(norm - 1.0)
    if not allow_non_unit and np.any(off > atol):
        k = int(np.argmax(off))
        raise ProtocolError(
            f"direction {k} is not a unit vector (norm {norm[k]:.6g}, tolerance {atol:g}); "
            "normalise it or pass allow_non_unit=True",
            source=source, field=field,
        )
    scale = np.where(off <= _UNIT_EXACT_TOL, 1.0, norm)
    return a / scale[:, None]
