"""FSL bvals/bvecs files (b in s/mm²)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.fsl import (
    read_bvals,
    read_bvals_bvecs,
    read_bvecs,
    write_bvals_bvecs,
)
from spinverse.errors import InputFileError, ProtocolError


def test_round_trip_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bvals = np.array([0.0, 1000.0, 2000.0, 995.5, 0.1, 1.0 / 3.0])
    bvecs = np.vstack([[0.0, 0.0, 0.0], fibonacci_directions(5)])
    bvecs[3] += rng.normal(scale=1e-3, size=3)
    write_bvals_bvecs(tmp_path / "b.bval", tmp_path / "b.bvec", bvals, bvecs)
    text = (tmp_path / "b.bvec").read_text().splitlines()
    assert len(text) == 3 and len(text[0].split()) == 6  # FSL layout: 3 rows × n
    assert len((tmp_path / "b.bval").read_text().splitlines()) == 1
    b2, v2 = read_bvals_bvecs(tmp_path / "b.bval", tmp_path / "b.bvec")
    np.testing.assert_array_equal(b2, bvals)
    np.testing.assert_array_equal(v2, bvecs)


def test_transposed_layouts_and_commas(tmp_path: Path) -> None:
    (tmp_path / "col.bval").write_text("0\n1000\n2000\n3000\n")
    (tmp_path / "rows.bvec").write_text("# n × 3\n0 0 0\n1, 0, 0\n0 1 0\n0 0 1\n")
    b, v = read_bvals_bvecs(tmp_path / "col.bval", tmp_path / "rows.bvec")
    np.testing.assert_array_equal(b, [0, 1000, 2000, 3000])
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_three_by_three_is_fsl_layout(tmp_path: Path) -> None:
    (tmp_path / "x.bvec").write_text("1 0 0\n0 1 0.6\n0 0 0.8\n")
    np.testing.assert_array_equal(read_bvecs(tmp_path / "x.bvec")[2], [0, 0.6, 0.8])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found") as exc:
        read_bvals(tmp_path / "nope.bval")
    assert exc.value.source == str(tmp_path / "nope.bval")
    with pytest.raises(InputFileError, match="not a regular file"):
        read_bvecs(tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("0 1000 abc\n", "non-numeric content on line 1"),
        ("", "empty"),
        ("0 1000\n2000\n", "different numbers"),
        ("0 1000\n2000 3000\n", "one row"),
        ("0 nan 1000\n", "NaN"),
    ],
)
def test_bad_bvals(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "bad.bval"
    f.write_text(content)
    with pytest.raises(InputFileError, match=match):
        read_bvals(f)


def test_negative_bval(tmp_path: Path) -> None:
    f = tmp_path / "neg.bval"
    f.write_text("0 -5 1000\n")
    with pytest.raises(ProtocolError, match="negative"):
        read_bvals(f)


def test_bad_bvecs(tmp_path: Path) -> None:
    f = tmp_path / "bad.bvec"
    f.write_text("1 0\n0 1\n")
    with pytest.raises(InputFileError, match="3 rows"):
        read_bvecs(f)
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputFileError):
        read_bvecs(f)


def test_mismatched_lengths(tmp_path: Path) -> None:
    (tmp_path / "a.bval").write_text("0 1000 2000\n")
    (tmp_path / "a.bvec").write_text("1 0\n0 1\n0 0\n")
    with pytest.raises(ProtocolError, match="3 b-values") as exc:
        read_bvals_bvecs(tmp_path / "a.bval", tmp_path / "a.bvec")
    assert exc.value.field == "bvecs"


@pytest.mark.parametrize(
    ("bvals", "bvecs", "match"),
    [
        (np.zeros(3), np.zeros((2, 3)), "3 b-values but 2"),
        (np.zeros((3, 1)), np.zeros((3, 3)), "1-D"),
        (np.zeros(3), np.zeros((3, 2)), "shape"),
        (np.array([0.0, -1.0]), np.zeros((2, 3)), ">= 0"),
        (np.array([0.0, np.nan]), np.zeros((2, 3)), "finite"),
    ],
)
def test_write_errors(tmp_path: Path, bvals: np.ndarray, bvecs: np.ndarray, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        write_bvals_bvecs(tmp_path / "x.bval", tmp_path / "x.bvec", bvals, bvecs)
