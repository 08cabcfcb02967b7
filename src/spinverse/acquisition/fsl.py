"""FSL gradient tables: ``bvals`` (b in s/mm², one row) and ``bvecs`` (3 rows × n).

Readers also accept the transposed layouts (a single column of b-values; n rows × 3
vectors). A 3 × 3 bvecs file is read in the FSL layout (rows are x, y, z).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spinverse.errors import InputFileError, ProtocolError

__all__ = ["read_bvals", "read_bvecs", "read_bvals_bvecs", "write_bvals_bvecs"]

PathLike = str | os.PathLike[str]


def _read_table(path: PathLike) -> np.ndarray:
    """Numeric table of a whitespace/comma separated text file (``#`` comments skipped)."""
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise InputFileError("file not found", source=src)
    if not p.is_file():
        raise InputFileError("not a regular file", source=src)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read as text: {e}", source=src) from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        try:
            rows.append([float(tok) for tok in line.split()])
        except ValueError:
            raise InputFileError(f"non-numeric content on line {lineno}: {line[:60]!r}",
                                 source=src) from None
    if not rows:
        raise InputFileError("file is empty", source=src)
    if len({len(r) for r in rows}) != 1:
        raise InputFileError("rows have different numbers of values", source=src)
    table = np.array(rows, dtype=float)
    if not np.all(np.isfinite(table)):
        raise InputFileError("contains NaN or inf", source=src)
    return table


def read_bvals(path: PathLike) -> np.ndarray:
    """b-values (n,) in s/mm² from an FSL bvals file (one row, or one column)."""
    t = _read_table(path)
    if t.shape[0] != 1 and t.shape[1] != 1:
        raise InputFileError(f"expected one row of b-values, got a {t.shape[0]} × "
                             f"{t.shape[1]} table", source=str(path))
    b = t.ravel()
    if np.any(b < 0):
        raise ProtocolError(f"negative b-value {b.min():g} s/mm²", source=str(path),
                            field="bvals")
    return b


def read_bvecs(path: PathLike) -> np.ndarray:
    """Gradient vectors (n, 3) from an FSL bvecs file (3 rows × n, or n rows × 3).

    Vectors are returned as stored (not normalised: b = 0 volumes often carry (0, 0, 0)).
    """
    t = _read_table(path)
    if t.shape[0] == 3:
        return np.ascontiguousarray(t.T)
    if t.shape[1] == 3:
        return t
    raise InputFileError(f"expected 3 rows (or 3 columns) of vector components, got a "
                         f"{t.shape[0]} × {t.shape[1]} table", source=str(path))


def read_bvals_bvecs(bvals_path: PathLike, bvecs_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an FSL pair: b-values (n,) in s/mm² and vectors (n, 3), one per volume."""
    bvals = read_bvals(bvals_path)
    bvecs = read_bvecs(bvecs_path)
    if bvals.shape[0] != bvecs.shape[0]:
        raise ProtocolError(
            f"{bvals.shape[0]} b-values in {bvals_path} but {bvecs.shape[0]} vectors",
            source=str(bvecs_path), field="bvecs",
        )
    return bvals, bvecs


def _fmt(x: float) -> str:
    """Shortest decimal string that reads back to exactly ``x``."""
    return np.format_float_positional(float(x), unique=True, trim="-")


def write_bvals_bvecs(
    bvals_path: PathLike, bvecs_path: PathLike, bvals: np.ndarray, bvecs: np.ndarray
) -> None:
    """Write b-values (n,) in s/mm² and vectors (n, 3) as FSL files (exact round trip)."""
    b = np.asarray(bvals, dtype=float)
    v = np.asarray(bvecs, dtype=float)
    if b.ndim != 1:
        raise ProtocolError(f"bvals must be 1-D, got shape {b.shape}", field="bvals")
    if v.ndim != 2 or v.shape[1] != 3:
        raise ProtocolError(f"bvecs must have shape (n, 3), got {v.shape}", field="bvecs")
    if b.shape[0] != v.shape[0]:
        raise ProtocolError(f"{b.shape[0]} b-values but {v.shape[0]} vectors", field="bvecs")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
        raise ProtocolError("bvals and bvecs must be finite", field="bvals")
    if np.any(b < 0):
        raise ProtocolError("b-values must be >= 0 s/mm²", field="bvals")
    Path(bvals_path).write_text(" ".join(_fmt(x) for x in b) + "\n", encoding="utf-8")
    Path(bvecs_path).write_text(
        "".join(" ".join(_fmt(x) for x in row) + "\n" for row in v.T), encoding="utf-8"
    )
