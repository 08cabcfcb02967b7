"""4-D NIfTI + FSL bvals/bvecs → one voxel's signal on the (b-value, direction) grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from spinverse.acquisition.directions import fibonacci_directions
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE
from spinverse.errors import ConfigError, InputFileError, ProtocolError
from spinverse.io.nifti import (
    MissingDependencyError,
    optional_import,
    read_voxel_signal,
    write_voxel_image,
)

TEMPLATE = Protocol(diffusivity=2e-3, length_scale=2.0, bvalues=[0.0],
                    directions=[[1.0, 0.0, 0.0]], sequences=(PGSE(5000.0, 20000.0),))
BVALUES = np.array([0.0, 1000.0, 2500.0])
DIRS = fibonacci_directions(6)


def synthetic_signal() -> np.ndarray:
    """A SIGNALS-like (1, 3, 6) array: constant b = 0 row, decays with b."""
    rng = np.random.default_rng(3)
    s = np.empty((1, len(BVALUES), len(DIRS)), complex)
    s[0, 0] = 100.0
    s[0, 1:] = 100.0 * np.exp(-BVALUES[1:, None] * rng.uniform(5e-4, 2e-3, size=len(DIRS)))
    return s


@pytest.fixture()
def image(tmp_path: Path) -> dict:
    pytest.importorskip("nibabel")
    sig = synthetic_signal()
    scale = np.arange(1, 9, dtype=float).reshape(2, 2, 2)
    n_vol = 3 + 2 * len(DIRS)
    order = np.random.default_rng(0).permutation(n_vol)  # interleave b = 0 and shells
    paths = {k: tmp_path / n for k, n in (("img", "dwi.nii.gz"), ("bval", "dwi.bval"),
                                          ("bvec", "dwi.bvec"))}
    bv, gv = write_voxel_image(paths["img"], sig, BVALUES, DIRS, bvals_path=paths["bval"],
                               bvecs_path=paths["bvec"], voxel_scale=scale, n_b0=3,
                               volume_order=order)
    return {"signal": sig, "scale": scale, "bvals": bv, "bvecs": gv, **paths}


def test_round_trip_one_voxel(image: dict) -> None:
    template = TEMPLATE.replace(bvalues=BVALUES, directions=DIRS)
    s, prot = read_voxel_signal(image["img"], image["bval"], image["bvec"], (1, 0, 1),
                                protocol_template=template)
    assert s.shape == (1, 3, 6) and s.dtype == np.complex128
    np.testing.assert_allclose(s, image["signal"] * image["scale"][1, 0, 1], rtol=1e-12)
    assert prot == template  # directions in the template's order (the same set)
    # without a matching template: directions in the order of their first volume in the
    # lowest shell, the signal permuted alike
    s1, prot1 = read_voxel_signal(image["img"], image["bval"], image["bvec"], (1, 0, 1),
                                  protocol_template=TEMPLATE)
    first = [np.flatnonzero(np.all(np.abs(image["bvecs"] - g) < 1e-12, axis=1)
                            & (image["bvals"] == 1000))[0] for g in DIRS]
    order = np.argsort(first)
    np.testing.assert_allclose(prot1.directions, DIRS[order], atol=1e-12)
    np.testing.assert_allclose(s1, s[:, :, order], rtol=1e-12)
    assert prot1.diffusivity == 2e-3 and prot1.length_scale == 2.0
    assert prot1.sequences == (PGSE(5000.0, 20000.0),)


def test_mask_mean_and_keyword_protocol(image: dict, tmp_path: Path) -> None:
    import nibabel as nib

    mask = np.zeros((2, 2, 2), np.uint8)
    mask[0, 1, 0] = mask[1, 1, 1] = mask[1, 0, 0] = 1
    mask_path = tmp_path / "mask.nii"
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(mask_path))
    s, prot = read_voxel_signal(image["img"], image["bval"], image["bvec"],
                                mask_path=mask_path, diffusivity=3e-3, length_scale=1.5,
                                delta=4000, Delta=8000, protocol_template=TEMPLATE)
    factor = image["scale"][mask.astype(bool)].mean()
    ref, _ = read_voxel_signal(image["img"], image["bval"], image["bvec"], (0, 0, 0),
                               protocol_template=TEMPLATE)
    np.testing.assert_allclose(s, ref * factor, rtol=1e-12)  # scale[0, 0, 0] = 1
    assert prot.diffusivity == 3e-3 and prot.length_scale == 1.5  # keywords win
    assert prot.sequences == (PGSE(4000.0, 8000.0),)

    empty = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), str(empty))
    with pytest.raises(InputFileError, match="no voxel") as info:
        read_voxel_signal(image["img"], image["bval"], image["bvec"], mask_path=empty,
                          protocol_template=TEMPLATE)
    assert info.value.source == str(empty)
    wrong = tmp_path / "wrong.nii"
    nib.save(nib.Nifti1Image(np.ones((3, 2, 2), np.uint8), np.eye(4)), str(wrong))
    with pytest.raises(InputFileError, match="does not match"):
        read_voxel_signal(image["img"], image["bval"], image["bvec"], mask_path=wrong,
                          protocol_template=TEMPLATE)


def _fsl(tmp_path: Path, bvals: list[float], vecs: np.ndarray) -> tuple[Path, Path, Path]:
    """A 1×1×1 image with one volume per entry and its FSL files."""
    nib = pytest.importorskip("nibabel")
    img = tmp_path / "x.nii"
    data = np.arange(1.0, len(bvals) + 1.0).reshape(1, 1, 1, -1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(img))
    from spinverse.acquisition.fsl import write_bvals_bvecs

    write_bvals_bvecs(tmp_path / "x.bval", tmp_path / "x.bvec", np.array(bvals), vecs)
    return img, tmp_path / "x.bval", tmp_path / "x.bvec"


def test_mismatched_shells_raise(tmp_path: Path) -> None:
    x, y, z = np.eye(3)
    img, bval, bvec = _fsl(tmp_path, [0, 1000, 1000, 2000, 2000],
                           np.array([[0, 0, 0], x, y, x, z]))
    with pytest.raises(ProtocolError, match="same directions") as info:
        read_voxel_signal(img, bval, bvec, (0, 0, 0), protocol_template=TEMPLATE)
    assert info.value.source == str(bvec) and info.value.field == "bvecs"
    # antipodes are distinct directions: -y in the second shell does not match y
    img, bval, bvec = _fsl(tmp_path, [1000, 1000, 2000, 2000], np.array([x, y, x, -y]))
    with pytest.raises(ProtocolError, match="antipodes"):
        read_voxel_signal(img, bval, bvec, (0, 0, 0), protocol_template=TEMPLATE)
    # a direction missing from a shell
    img, bval, bvec = _fsl(tmp_path, [1000, 1000, 2000], np.array([x, y, x]))
    with pytest.raises(ProtocolError, match="missing"):
        read_voxel_signal(img, bval, bvec, (0, 0, 0), protocol_template=TEMPLATE)


def test_antipodes_kept_and_repeats_averaged(tmp_path: Path) -> None:
    x = np.array([1.0, 0, 0])
    img, bval, bvec = _fsl(tmp_path, [0, 1000, 1000, 0, 1000, 2000, 2000],
                           np.array([[0, 0, 0], x, -x, [0, 0, 0], x, -x, x]))
    s, prot = read_voxel_signal(img, bval, bvec, (0, 0, 0), protocol_template=TEMPLATE)
    np.testing.assert_array_equal(prot.directions, [x, -x])
    np.testing.assert_array_equal(prot.bvalues, [0, 1000, 2000])
    # volumes hold 1..7: b0 = mean(1, 4); (1000, x) = mean(2, 5); (1000, -x) = 3; ...
    np.testing.assert_allclose(s[0], [[2.5, 2.5], [3.5, 3.0], [7.0, 6.0]])


def test_input_errors(image: dict, tmp_path: Path) -> None:
    args = (image["img"], image["bval"], image["bvec"])
    with pytest.raises(InputFileError, match="outside") as info:
        read_voxel_signal(*args, (2, 0, 0), protocol_template=TEMPLATE)
    assert info.value.field == "voxel"
    with pytest.raises(InputFileError, match="3 integer"):
        read_voxel_signal(*args, (0, 0), protocol_template=TEMPLATE)
    with pytest.raises(ConfigError, match="exactly one"):
        read_voxel_signal(*args, protocol_template=TEMPLATE)
    with pytest.raises(ProtocolError, match="diffusivity"):
        read_voxel_signal(*args, (0, 0, 0), length_scale=1.0, delta=1, Delta=2)
    with pytest.raises(ProtocolError, match="sequence"):
        read_voxel_signal(*args, (0, 0, 0), diffusivity=1e-3, length_scale=1.0)
    two = TEMPLATE.replace(sequences=(PGSE(1.0, 2.0), PGSE(2.0, 3.0)))
    with pytest.raises(ProtocolError, match="2 sequences"):
        read_voxel_signal(*args, (0, 0, 0), protocol_template=two)
    short = tmp_path / "short.bval"
    short.write_text("0 1000\n")
    with pytest.raises(ProtocolError):  # 2 b-values but 15 vectors
        read_voxel_signal(image["img"], short, image["bvec"], (0, 0, 0),
                          protocol_template=TEMPLATE)
    with pytest.raises(InputFileError, match="not found"):
        read_voxel_signal(tmp_path / "none.nii", image["bval"], image["bvec"], (0, 0, 0),
                          protocol_template=TEMPLATE)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputFileError, match="NIfTI"):
        read_voxel_signal(junk, image["bval"], image["bvec"], (0, 0, 0),
                          protocol_template=TEMPLATE)


def test_volume_count_must_match(tmp_path: Path) -> None:
    img, bval, bvec = _fsl(tmp_path, [0, 1000, 1000], np.array([[0, 0, 0], [1, 0, 0],
                                                              [0, 1, 0]]))
    bval.write_text("0 1000\n")
    bvec.write_text("0 1\n0 0\n0 0\n")
    with pytest.raises(ProtocolError, match="3 volumes") as info:
        read_voxel_signal(img, bval, bvec, (0, 0, 0), protocol_template=TEMPLATE)
    assert info.value.field == "bvals"


def test_missing_nibabel_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'spinverse\[nifti\]'"):
        optional_import("nibabel", "nifti")
    with pytest.raises(ImportError, match="nibabel"):  # also catchable as ImportError
        read_voxel_signal(tmp_path / "x.nii", tmp_path / "x.bval", tmp_path / "x.bvec",
                          (0, 0, 0), protocol_template=TEMPLATE)
    with pytest.raises(MissingDependencyError):
        write_voxel_image(tmp_path / "x.nii", np.ones((1, 1)), [0.0], [[1.0, 0, 0]])
