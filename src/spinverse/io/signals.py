"""The ``SIGNALS.npz`` file: a simulated (or measured) signal with everything needed to
reproduce it.

Keys: ``signal`` complex128 (n_sequences, n_bvalues, n_directions) = S in µm³; the
protocol (``bvalues`` s/mm², ``directions``, ``delta``/``Delta`` µs, ``sequence_types``,
``sequences_json``, ``diffusivity`` µm²/µs, ``length_scale`` µm); the model
(``outer_boundary``, ``solver``, ``n_modes``, ``n_dofs``); provenance (``spinverse_version``,
``mesh_source``, ``case``) and, when known, ``faces`` (F, 3) with ``kappa`` (F,) µm/µs.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from spinverse import __version__
from spinverse.acquisition.protocol import Protocol, protocol_from_arrays, protocol_to_arrays
from spinverse.errors import InputFileError, SpinverseError
from spinverse.fem.assembly import OUTER_BOUNDARIES


@dataclass(frozen=True)
class SignalFile:
    """Contents of a ``SIGNALS.npz``: ``signal`` (n_seq, n_b, n_dir) complex µm³."""

    signal: np.ndarray
    protocol: Protocol
    outer_boundary: str
    faces: np.ndarray | None = None
    kappa: np.ndarray | None = None
    source: str = ""

    @property
    def s0(self) -> np.ndarray:
        """|S(b=0)| per sequence and direction (n_seq, n_dir), µm³."""
        zero = np.flatnonzero(self.protocol.bvalues == 0)
        if len(zero) == 0:
            raise InputFileError("the protocol has no b = 0 row", source=self.source,
                                 field="bvalues")
        return np.abs(self.signal[:, zero[0], :])


def save_signals(
    path: str | PathLike[str],
    signal: np.ndarray,
    protocol: Protocol,
    *,
    outer_boundary: str,
    faces: np.ndarray | None = None,
    kappa: np.ndarray | None = None,
    **extra: object,
) -> Path:
    """Write a ``SIGNALS.npz`` (no pickles); ``extra`` adds scalar/array metadata."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "signal": np.asarray(signal, dtype=np.complex128),
        "outer_boundary": np.array(outer_boundary),
        "spinverse_version": np.array(__version__),
        **protocol_to_arrays(protocol),
    }
    if faces is not None:
        arrays["faces"] = np.asarray(faces, dtype=np.int64)
    if kappa is not None:
        arrays["kappa"] = np.asarray(kappa, dtype=np.float64)
    for key, value in extra.items():
        if value is not None:
            arrays[key] = np.asarray(value)
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(p)
    return p


def load_signals(path: str | PathLike[str]) -> SignalFile:
    """Read a ``SIGNALS.npz`` written by :func:`save_signals` (or by hand with the same
    keys); raises :class:`~spinverse.errors.InputFileError` on a missing, truncated or
    malformed file."""
    p = Path(path)
    src = str(path)
    if not p.is_file():
        raise InputFileError("no such file", source=src)
    try:
        with p.open("rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise InputFileError(f"cannot read file ({exc})", source=src) from exc
    if magic != b"PK":  # every .npz is a zip archive (np.load would try a pickle or .npy)
        raise InputFileError("not a readable .npz file (no zip signature)", source=src)
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFileError(f"not a readable .npz file ({exc})", source=src) from exc
    for key in ("signal", "bvalues", "directions"):
        if key not in arrays:
            raise InputFileError(f"missing key {key!r}", source=src, field=key)
    try:
        protocol = protocol_from_arrays(arrays, source=src)
    except SpinverseError:
        raise
    signal = np.asarray(arrays["signal"])
    if not np.issubdtype(signal.dtype, np.number):
        raise InputFileError(f"must be numbers, got dtype {signal.dtype}", source=src,
                             field="signal")
    expected = (protocol.n_sequences, protocol.n_bvalues, protocol.n_directions)
    if signal.shape != expected:
        raise InputFileError(
            f"shape {signal.shape} does not match the protocol {expected}",
            source=src, field="signal",
        )
    if not np.all(np.isfinite(signal)):
        raise InputFileError("contains NaN or infinite values", source=src, field="signal")
    outer = str(arrays.get("outer_boundary", np.array("reflecting")))
    if outer not in OUTER_BOUNDARIES:
        raise InputFileError(f"must be one of {', '.join(OUTER_BOUNDARIES)}, got {outer!r}",
                             source=src, field="outer_boundary")
    return SignalFile(
        signal=signal.astype(np.complex128),
        protocol=protocol,
        outer_boundary=outer,
        faces=arrays.get("faces"),
        kappa=arrays.get("kappa"),
        source=src,
    )
