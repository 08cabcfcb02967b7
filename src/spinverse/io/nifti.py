"""Measured signals from 4-D NIfTI images with FSL gradient tables (optional: nibabel).

:func:`read_voxel_signal` takes one voxel (or the mean over a mask) of a 4-D diffusion
image and arranges its volumes into the project's (n_bvalues, n_directions) grid:

* volumes with b ≤ ``b0_threshold`` (s/mm², default 0) are averaged into the b = 0 row,
  the same value for every direction;
* every other distinct b-value is a shell; each shell must hold the same set of unit
  directions (equal within ``direction_tol``, default 1e-6; antipodes ``g`` and ``-g`` are
  different directions), else :class:`~spinverse.errors.ProtocolError`. Repeated
  directions within a shell are averaged. Directions are in the order of
  ``protocol_template``'s directions when they are the same set, else in the order of
  their first appearance in the lowest shell; b-values in increasing order.

The returned signal has shape (1, n_bvalues, n_directions), complex128, in the image's
intensity units (not µm³: normalise by the b = 0 row before comparing with a simulation).
The protocol's diffusivity (µm²/µs), length scale (µm) and sequence (times in µs) come from
``protocol_template`` or explicit keyword arguments, which win.

:func:`write_voxel_image` writes a small synthetic 4-D image (and its bvals/bvecs) from a
SIGNALS-like array, for tests and examples. nibabel is imported lazily:
``pip install 'spinverse[nifti]'``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from spinverse.acquisition.directions import normalise_directions
from spinverse.acquisition.fsl import read_bvals_bvecs, write_bvals_bvecs
from spinverse.acquisition.protocol import Protocol
from spinverse.acquisition.sequences import PGSE, Sequence
from spinverse.errors import ConfigError, InputFileError, ProtocolError, SpinverseError

__all__ = [
    "MissingDependencyError",
    "optional_import",
    "read_voxel_signal",
    "write_voxel_image",
]

PathLike = str | os.PathLike[str]


class MissingDependencyError(SpinverseError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def optional_import(name: str, extra: str) -> ModuleType:
    """Import the optional module ``name`` or raise :class:`MissingDependencyError` saying
    ``pip install 'spinverse[<extra>]'``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError(
            f"the optional dependency {name!r} is not installed; "
            f"install it with: pip install 'spinverse[{extra}]'",
            field=name,
        ) from None


# ------------------------------------------------------------------------------ reading
def _load_image(path: PathLike, what: str) -> Any:
    nib = optional_import("nibabel", "nifti")
    p, src = Path(path), str(path)
    if not p.exists():
        raise InputFileError(f"{what} not found", source=src)
    if not p.is_file():
        raise InputFileError("not a regular file", source=src)
    try:
        return nib.load(p)
    except Exception as exc:  # nibabel raises ImageFileError, ValueError, OSError, ...
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise InputFileError(f"cannot read as a NIfTI image ({detail})", source=src) from None


def _voxel_index(voxel: Any, shape: tuple[int, ...], src: str) -> tuple[int, int, int]:
    try:
        v = tuple(int(i) for i in voxel)
        exact = all(int(i) == i for i in voxel)
    except (TypeError, ValueError):
        v, exact = (), False
    if len(v) != 3 or not exact:
        raise InputFileError(f"expected 3 integer indices (i, j, k), got {voxel!r}",
                             source=src, field="voxel")
    if any(i < 0 or i >= n for i, n in zip(v, shape, strict=True)):
        raise InputFileError(f"voxel {v} lies outside the image of shape {shape}",
                             source=src, field="voxel")
    return v  # type: ignore[return-value]


def _volumes(img: Any, voxel: Any, mask_path: PathLike | None, src: str) -> np.ndarray:
    """(n_volumes,) intensities of one voxel, or their mean over a mask."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) != 4:
        raise InputFileError(f"expected a 4-D image (x, y, z, volume), got shape {shape}",
                             source=src, field="shape")
    if (voxel is None) == (mask_path is None):
        raise ConfigError("give exactly one of voxel=(i, j, k) or mask_path", source=src,
                          field="voxel")
    if voxel is not None:
        i, j, k = _voxel_index(voxel, shape[:3], src)
        values = np.asarray(img.dataobj[i, j, k, :])
    else:
        msrc = str(mask_path)
        mimg = _load_image(mask_path, "mask")  # type: ignore[arg-type]
        mask = np.asarray(mimg.dataobj)
        if mask.ndim == 4 and mask.shape[3] == 1:
            mask = mask[..., 0]
        if mask.shape != shape[:3]:
            raise InputFileError(f"mask shape {mask.shape} does not match the image's "
                                 f"{shape[:3]}", source=msrc, field="shape")
        sel = np.nonzero(np.nan_to_num(mask) != 0)
        if len(sel[0]) == 0:
            raise InputFileError("the mask selects no voxel", source=msrc, field="mask")
        values = np.array([np.asarray(img.dataobj[..., v])[sel].mean()
                           for v in range(shape[3])])
    if not np.issubdtype(values.dtype, np.number):
        raise InputFileError(f"expected numeric intensities, got {values.dtype}",
                             source=src, field="signal")
    values = values.astype(np.complex128)
    if not np.all(np.isfinite(values)):
        raise InputFileError("the selected voxel(s) hold NaN or infinite intensities",
                             source=src, field="signal")
    return values


def _directions_of_shell(vecs: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct directions (within ``tol``, max-abs) of a shell, first-appearance order,
    and the index of each vector's direction."""
    uniq: list[np.ndarray] = []
    label = np.empty(len(vecs), dtype=np.int64)
    for n, v in enumerate(vecs):
        for u, w in enumerate(uniq):
            if np.max(np.abs(v - w)) <= tol:
                label[n] = u
                break
        else:
            label[n] = len(uniq)
            uniq.append(v)
    return np.array(uniq).reshape(-1, 3), label


def _protocol_parts(
    template: Protocol | None,
    diffusivity: float | None,
    length_scale: float | None,
    sequence: Sequence | None,
    delta: float | None,
    Delta: float | None,
) -> tuple[float, float, Sequence]:
    if template is not None and not isinstance(template, Protocol):
        raise ProtocolError(f"expected a Protocol, got {type(template).__name__}",
                            field="protocol_template")
    d = diffusivity if diffusivity is not None else getattr(template, "diffusivity", None)
    ell = length_scale if length_scale is not None else getattr(template, "length_scale", None)
    if sequence is None and (delta is not None or Delta is not None):
        if delta is None or Delta is None:
            raise ProtocolError("give both delta and Delta (µs) for a PGSE sequence",
                                field="delta" if delta is None else "Delta")
        sequence = PGSE(delta=float(delta), Delta=float(Delta))
    if sequence is None and template is not None:
        if template.n_sequences != 1:
            raise ProtocolError(
                f"the template has {template.n_sequences} sequences; pass sequence= "
                "(or delta=, Delta=) to choose the one of this image", field="sequences")
        sequence = template.sequences[0]
    for value, name, unit in ((d, "diffusivity", "µm²/µs"), (ell, "length_scale", "µm")):
        if value is None:
            raise ProtocolError(f"unknown {name} ({unit}): pass {name}= or "
                                "protocol_template=", field=name)
    if sequence is None:
        raise ProtocolError("unknown sequence: pass sequence=, delta= and Delta= (µs), or "
                            "protocol_template=", field="sequences")
    return float(d), float(ell), sequence  # type: ignore[arg-type]


def read_voxel_signal(
    image_path: PathLike,
    bvals_path: PathLike,
    bvecs_path: PathLike,
    voxel: tuple[int, int, int] | None = None,
    mask_path: PathLike | None = None,
    *,
    protocol_template: Protocol | None = None,
    diffusivity: float | None = None,
    length_scale: float | None = None,
    sequence: Sequence | None = None,
    delta: float | None = None,
    Delta: float | None = None,
    b0_threshold: float = 0.0,
    direction_tol: float = 1e-6,
) -> tuple[np.ndarray, Protocol]:
    """One voxel's (or a mask's mean) diffusion signal as (1, n_b, n_dir) complex, and its
    :class:`Protocol` (b in s/mm²; D, ℓ and the sequence from ``protocol_template`` or the
    keyword arguments: ``diffusivity`` µm²/µs, ``length_scale`` µm, ``sequence`` or PGSE
    ``delta``/``Delta`` µs). See the module docstring for how volumes are arranged.

    Raises :class:`InputFileError` (unreadable files, a voxel outside the image, a bad
    mask), :class:`ProtocolError` (volumes ≠ b-values, shells with different directions,
    missing diffusivity/length scale/sequence), :class:`ConfigError` (both or neither of
    ``voxel`` and ``mask_path``) and :class:`MissingDependencyError` without nibabel.
    """
    d, ell, seq = _protocol_parts(protocol_template, diffusivity, length_scale, sequence,
                                  delta, Delta)
    src = str(image_path)
    img = _load_image(image_path, "image")
    bvals, bvecs = read_bvals_bvecs(bvals_path, bvecs_path)
    n_vol = int(img.shape[3]) if len(img.shape) == 4 else 0
    if len(img.shape) == 4 and n_vol != len(bvals):
        raise ProtocolError(f"{len(bvals)} b-values for an image of {n_vol} volumes ({src})",
                            source=str(bvals_path), field="bvals")
    values = _volumes(img, voxel, mask_path, src)

    b0 = bvals <= float(b0_threshold)
    shells = np.unique(bvals[~b0])
    if len(shells) == 0:
        raise ProtocolError("no diffusion-weighted volume (every b-value is 0)",
                            source=str(bvals_path), field="bvals")
    vecs = normalise_directions(bvecs[~b0], source=str(bvecs_path), field="bvecs")
    dw_values, dw_b = values[~b0], bvals[~b0]
    dw_index = np.flatnonzero(~b0)
    ref = None
    rows = []
    for b in shells:
        here = dw_b == b
        dirs, label = _directions_of_shell(vecs[here], direction_tol)
        if ref is None:
            ref = dirs
        dist = np.abs(dirs[:, None, :] - ref[None, :, :]).max(axis=2)
        match = dist <= direction_tol
        missing = np.flatnonzero(~match.any(axis=0))
        extra = np.flatnonzero(~match.any(axis=1))
        if extra.size or missing.size:
            if extra.size:
                vol = int(dw_index[here][np.flatnonzero(label == extra[0])[0]])
                what = (f"volume {vol} (b = {b:g}) has direction "
                        f"{np.round(dirs[extra[0]], 6).tolist()}, which is not in")
            else:
                what = (f"direction {np.round(ref[missing[0]], 6).tolist()} is missing from "
                        f"the b = {b:g} shell but is in")
            raise ProtocolError(
                f"{what} the b = {shells[0]:g} shell: every shell must have the same "
                f"directions (within {direction_tol:g}; antipodes are distinct)",
                source=str(bvecs_path), field="bvecs")
        to_ref = np.argmax(match, axis=1)[label]  # reference direction of each volume
        row = np.zeros(len(ref), dtype=np.complex128)
        np.add.at(row, to_ref, dw_values[here])
        rows.append(row / np.bincount(to_ref, minlength=len(ref)))
    assert ref is not None
    if protocol_template is not None and len(protocol_template.directions) == len(ref):
        # the template's directions, if they are the image's, fix the order
        close = np.abs(protocol_template.directions[:, None, :] - ref[None]).max(axis=2)
        perm = np.argmax(close <= direction_tol, axis=1)
        if np.all(close[np.arange(len(ref)), perm] <= direction_tol) and \
                len(set(perm.tolist())) == len(ref):
            ref, rows = ref[perm], [row[perm] for row in rows]
    bvalues = list(shells.astype(float))
    if b0.any():
        rows.insert(0, np.full(len(ref), values[b0].mean()))
        bvalues.insert(0, 0.0)
    protocol = Protocol(diffusivity=d, length_scale=ell, bvalues=np.array(bvalues),
                        directions=ref, sequences=(seq,))
    return np.array(rows)[None], protocol


# ------------------------------------------------------------------------------ writing
def write_voxel_image(
    image_path: PathLike,
    signal: np.ndarray,
    bvalues: SequenceABC[float] | np.ndarray,
    directions: np.ndarray,
    *,
    bvals_path: PathLike | None = None,
    bvecs_path: PathLike | None = None,
    shape: tuple[int, int, int] = (2, 2, 2),
    voxel_scale: np.ndarray | None = None,
    n_b0: int = 1,
    volume_order: SequenceABC[int] | np.ndarray | None = None,
    sequence_index: int = 0,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a synthetic 4-D NIfTI whose every voxel holds ``|signal|`` (times
    ``voxel_scale[x, y, z]``, default 1), one volume per (b, direction) with b > 0 and
    ``n_b0`` volumes of the b = 0 row's mean over directions.

    ``signal`` is (n_b, n_dir) or SIGNALS-like (n_seq, n_b, n_dir) (``sequence_index``
    picks the sequence) for ``bvalues`` (n_b,) s/mm² and unit ``directions`` (n_dir, 3).
    Volumes are written b = 0 first, then by b-value and direction, permuted by
    ``volume_order`` when given. Writes the FSL ``bvals_path``/``bvecs_path`` when given
    (b = 0 volumes carry (0, 0, 0)) and returns the per-volume b-values (n_vol,) and
    vectors (n_vol, 3).
    """
    nib = optional_import("nibabel", "nifti")
    s = np.asarray(signal)
    if s.ndim == 3:
        s = s[sequence_index]
    b = np.asarray(bvalues, dtype=float).reshape(-1)
    g = normalise_directions(directions)
    if s.shape != (len(b), len(g)):
        raise ProtocolError(f"signal shape {s.shape} does not match {len(b)} b-values × "
                            f"{len(g)} directions", field="signal")
    mag = np.abs(s).astype(float)
    vol_b: list[float] = []
    vol_g: list[np.ndarray] = []
    vol_v: list[float] = []
    zero = np.flatnonzero(b == 0)
    if zero.size:
        for _ in range(int(n_b0)):
            vol_b.append(0.0)
            vol_g.append(np.zeros(3))
            vol_v.append(float(mag[zero].mean()))
    for i in np.flatnonzero(b != 0):
        for j in range(len(g)):
            vol_b.append(float(b[i]))
            vol_g.append(g[j])
            vol_v.append(float(mag[i, j]))
    order = (np.arange(len(vol_b)) if volume_order is None
             else np.asarray(volume_order, dtype=np.int64))
    if sorted(order.tolist()) != list(range(len(vol_b))):
        raise ConfigError(f"must be a permutation of range({len(vol_b)})",
                          field="volume_order")
    bv, gv, vv = np.array(vol_b)[order], np.array(vol_g)[order], np.array(vol_v)[order]
    scale = np.ones(shape) if voxel_scale is None else np.asarray(voxel_scale, dtype=float)
    if scale.shape != tuple(shape):
        raise ConfigError(f"expected shape {tuple(shape)}, got {scale.shape}",
                          field="voxel_scale")
    data = (scale[..., None] * vv).astype(dtype)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(image_path))
    if bvals_path is not None and bvecs_path is not None:
        write_bvals_bvecs(bvals_path, bvecs_path, bv, gv)
    return bv, gv
