"""Reading and writing grids with per-face permeability (points in µm, κ in µm/µs).

* ``.npz`` (the project's own format and the benchmark's): ``points`` (P, 3) µm, ``tets``
  (T, 4); optional ``faces`` (F', 3) and ``kappa`` (F',) µm/µs for the listed faces.
* Anything :mod:`meshio` reads with ``tetra`` cells (VTU, Gmsh ``.msh``, Medit ``.mesh``,
  …); ``triangle`` cells carrying cell data ``kappa`` give per-face κ.

Every failure raises :class:`~spinverse.errors.InputFileError` or
:class:`~spinverse.errors.MeshError` with ``source`` (the path) and ``field`` set.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.errors import InputFileError, MeshError, PermeabilityError
from spinverse.mesh.grid import TetGrid

__all__ = [
    "LoadedMesh",
    "KappaFileError",
    "load_mesh",
    "save_mesh_npz",
    "save_vtu",
    "save_surface",
    "surface_mesh",
    "SURFACE_SUFFIXES",
]

#: Output formats of :func:`save_surface`, chosen by file suffix.
SURFACE_SUFFIXES = (".ply", ".obj", ".vtu", ".stl")

_ZIP_MAGIC = b"PK\x03\x04"


class KappaFileError(InputFileError, PermeabilityError):
    """A file's per-face κ is invalid (NaN, negative, wrong length); catchable as either
    :class:`InputFileError` or :class:`PermeabilityError`."""


@dataclass(frozen=True, eq=False)
class LoadedMesh:
    """A grid read from a file, its per-face κ (F,) in µm/µs (grid face order) and the
    path it came from. Unpacks as ``grid, kappa = load_mesh(path)``."""

    grid: TetGrid
    kappa: np.ndarray
    source: str

    def __iter__(self) -> Iterator[Any]:
        yield self.grid
        yield self.kappa


# ------------------------------------------------------------------------ loading
def load_mesh(path: str | PathLike[str], *, kappa_default: float = np.inf) -> LoadedMesh:
    """Read a tetrahedral grid and per-face κ (µm/µs) from ``.npz`` or any meshio format.

    Faces not listed in the file get ``kappa_default`` (∞ = continuous, the default). The
    grid's face order is the sorted unique faces of the tets, unless the file's ``faces``
    (npz) or ``kappa``-carrying triangles (meshio) list every face exactly once, in which
    case the file's order is kept.
    """
    p = Path(path)
    src = str(path)
    kappa_default = float(kappa_default)
    if np.isnan(kappa_default) or kappa_default < 0:
        raise KappaFileError(
            f"kappa_default must be >= 0 (µm/µs), got {kappa_default}", source=src, field="kappa"
        )
    if not p.exists():
        raise InputFileError("file not found", source=src)
    if not p.is_file():
        raise InputFileError("not a regular file", source=src)
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputFileError(f"cannot read file: {exc}", source=src) from exc
    if p.suffix.lower() == ".npz" or head == _ZIP_MAGIC:
        arrays = _read_npz(p, src)
    else:
        arrays = _read_meshio(p, src)
    return _build(arrays, src, kappa_default)


def _read_npz(p: Path, src: str) -> dict[str, np.ndarray]:
    try:
        with p.open("rb") as fh:  # own the handle: np.load leaks it on a bad archive
            if fh.read(2) not in (b"PK", b"\x93N"):  # neither zip nor .npy
                raise InputFileError("unreadable .npz (no zip signature)", source=src)
            fh.seek(0)
            npz = np.load(fh, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise InputFileError("not an .npz archive (a single .npy array)", source=src)
            keys = set(npz.files)
            for key in ("points", "tets"):
                if key not in keys:
                    raise InputFileError(
                        f"missing key (found: {', '.join(sorted(keys)) or 'none'})",
                        source=src,
                        field=key,
                    )
            out = {k: np.asarray(npz[k]) for k in ("points", "tets", "faces", "kappa") if k in keys}
    except InputFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as exc:
        raise InputFileError(
            f"unreadable or truncated .npz ({type(exc).__name__}: {exc})", source=src
        ) from exc
    return out


def _read_meshio(p: Path, src: str) -> dict[str, np.ndarray]:
    import meshio

    # meshio prints the reader's error and calls sys.exit(1) when a file fails to parse:
    # capture the message and turn both into an InputFileError.
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            mesh = meshio.read(p)
    except (Exception, SystemExit) as exc:  # ReadError, KeyError, ValueError, exit...
        detail = " ".join(f"{type(exc).__name__}: {exc} {said.getvalue()}".split())
        if isinstance(exc, SystemExit):
            detail = " ".join(said.getvalue().split()) or "meshio gave up"
        raise InputFileError(f"cannot read as a mesh ({detail})", source=src) from None
    tets = [np.asarray(b.data) for b in mesh.cells if b.type == "tetra"]
    if not tets:
        kinds = ", ".join(sorted({b.type for b in mesh.cells})) or "none"
        raise InputFileError(f"no tetra cells (cell types: {kinds})", source=src, field="tetra")
    out = {"points": np.asarray(mesh.points), "tets": np.concatenate(tets)}
    kappa_blocks = mesh.cell_data.get("kappa")
    if kappa_blocks is not None:
        faces, kappa = [], []
        for block, data in zip(mesh.cells, kappa_blocks, strict=True):
            if block.type == "triangle":
                faces.append(np.asarray(block.data))
                kappa.append(np.asarray(data).reshape(len(block.data), -1)[:, 0])
        if faces:
            out["faces"] = np.concatenate(faces)
            out["kappa"] = np.concatenate(kappa)
    return out


def _int_array(a: np.ndarray, src: str, field: str, width: int) -> np.ndarray:
    if a.ndim != 2 or a.shape[1] != width:
        raise InputFileError(f"expected shape (N, {width}), got {a.shape}", source=src, field=field)
    if not np.issubdtype(a.dtype, np.integer):
        if (
            not np.issubdtype(a.dtype, np.floating)
            or not np.all(np.isfinite(a))
            or np.any(a != np.round(a))
            or np.any(np.abs(a) > 2**53)  # not an exact integer id
        ):
            raise InputFileError(
                f"vertex ids must be integers, got dtype {a.dtype}", source=src, field=field
            )
    return a.astype(np.int64)


def _build(arrays: dict[str, np.ndarray], src: str, kappa_default: float) -> LoadedMesh:
    points = arrays["points"]
    if points.ndim != 2 or points.shape[1] != 3 or not np.issubdtype(points.dtype, np.number):
        raise InputFileError(
            f"expected a numeric (P, 3) array, got {points.dtype} {points.shape}",
            source=src,
            field="points",
        )
    tets = _int_array(arrays["tets"], src, "tets", 4)
    grid = _grid(points, tets, None, src)

    faces = arrays.get("faces")
    kappa_in = arrays.get("kappa")
    kappa = np.full(grid.n_faces, kappa_default)
    if faces is None:
        if kappa_in is not None:  # κ without faces: one value per face, grid order
            kappa = _check_kappa(kappa_in, grid.n_faces, src, "face of the grid")
        return _loaded(grid, kappa, src)

    faces = _int_array(faces, src, "faces", 3)
    idx = grid.face_index(faces) if len(faces) else np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero(idx < 0)
    if bad.size:
        raise MeshError(
            f"{bad.size} rows are not faces of the grid (first: row {bad[0]} = "
            f"{faces[bad[0]].tolist()})",
            source=src,
            field="faces",
        )
    counts = np.bincount(idx, minlength=grid.n_faces)
    if counts.max(initial=0) > 1:
        f = int(np.argmax(counts))
        raise MeshError(
            f"face {grid.faces[f].tolist()} is listed {counts[f]} times", source=src, field="faces"
        )
    if len(faces) == grid.n_faces:  # a complete list fixes the face order
        grid = _grid(points, tets, faces, src)
        idx = np.arange(grid.n_faces)
    if kappa_in is not None:
        kappa[idx] = _check_kappa(kappa_in, len(faces), src, "row of 'faces'")
    return _loaded(grid, kappa, src)


def _grid(points: np.ndarray, tets: np.ndarray, faces: np.ndarray | None, src: str) -> TetGrid:
    try:
        return TetGrid(points, tets, faces=faces)
    except MeshError as exc:
        raise MeshError(exc.message, source=src, field=exc.field) from exc


def _check_kappa(kappa: np.ndarray, n: int, src: str, what: str) -> np.ndarray:
    k = np.asarray(kappa)
    if not np.issubdtype(k.dtype, np.number) or np.iscomplexobj(k):
        raise KappaFileError(
            f"must be real numbers, got dtype {k.dtype}", source=src, field="kappa"
        )
    k = k.astype(np.float64)
    if k.ndim != 1 or len(k) != n:
        raise KappaFileError(
            f"expected {n} values (one per {what}), got shape {k.shape}", source=src, field="kappa"
        )
    nan = np.isnan(k)
    if nan.any():
        raise KappaFileError(
            f"{nan.sum()} values are NaN (first: index {np.flatnonzero(nan)[0]})",
            source=src,
            field="kappa",
        )
    neg = k < 0
    if neg.any():
        i = np.flatnonzero(neg)[0]
        raise KappaFileError(
            f"{neg.sum()} values are negative (first: index {i} = {k[i]}); κ must be >= 0 µm/µs",
            source=src,
            field="kappa",
        )
    return k


def _loaded(grid: TetGrid, kappa: np.ndarray, src: str) -> LoadedMesh:
    kappa = np.ascontiguousarray(kappa, dtype=np.float64)
    kappa.setflags(write=False)
    return LoadedMesh(grid=grid, kappa=kappa, source=src)


# ------------------------------------------------------------------------ writing
def _face_values(grid: TetGrid, kappa: np.ndarray | None, src: str) -> np.ndarray | None:
    if kappa is None:
        return None
    return _check_kappa(np.asarray(kappa), grid.n_faces, src, "face of the grid")


def save_mesh_npz(
    path: str | PathLike[str], grid: TetGrid, kappa: np.ndarray | None = None
) -> Path:
    """Write ``points`` (µm), ``tets``, ``faces`` (the grid's face order) and, when given,
    ``kappa`` (F,) µm/µs to an ``.npz`` that :func:`load_mesh` reads back identically.
    Returns the path written (exactly ``path``; no suffix is added)."""
    p = Path(path)
    k = _face_values(grid, kappa, str(path))
    arrays = {"points": grid.points, "tets": grid.tets, "faces": grid.faces}
    if k is not None:
        arrays["kappa"] = k
    with p.open("wb") as fh:
        np.savez(fh, **arrays)
    return p


def _positive_tets(grid: TetGrid) -> np.ndarray:
    """Tets reordered so every signed volume is positive (the VTK convention)."""
    tets = grid.tets.copy()
    neg = grid.signed_volumes < 0
    tets[neg, 0], tets[neg, 1] = grid.tets[neg, 1], grid.tets[neg, 0]
    return tets


def save_vtu(
    path: str | PathLike[str],
    grid: TetGrid,
    *,
    kappa: np.ndarray | None = None,
    tet_data: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write the grid to VTU (meshio): a ``tetra`` block (positively oriented) and a
    ``triangle`` block of all faces in grid order. ``kappa`` (F,) µm/µs becomes cell data
    of the triangles (NaN on the tets) so ParaView can threshold it; ``tet_data`` maps names
    to (T,) or (T, k) arrays written on the tets (NaN on the triangles). The file reads
    back with :func:`load_mesh`, face order and κ included."""
    import meshio

    src = str(path)
    cells = [("tetra", _positive_tets(grid)), ("triangle", grid.faces)]
    cell_data: dict[str, list[np.ndarray]] = {}
    k = _face_values(grid, kappa, src)
    if k is not None:
        cell_data["kappa"] = [np.full(grid.n_tets, np.nan), k]
    cell_data["is_outer_face"] = [np.zeros(grid.n_tets), grid.is_outer.astype(np.float64)]
    for name, values in (tet_data or {}).items():
        v = np.asarray(values, dtype=np.float64)
        if v.shape[:1] != (grid.n_tets,):
            raise MeshError(
                f"expected {grid.n_tets} rows (one per tet), got shape {v.shape}",
                source=src,
                field=name,
            )
        if name in cell_data:
            raise MeshError("name clashes with a face field", source=src, field=name)
        cell_data[name] = [v, np.full((grid.n_faces, *v.shape[1:]), np.nan)]
    meshio.write(path, meshio.Mesh(grid.points, cells, cell_data=cell_data), file_format="vtu")
    return Path(path)


def surface_mesh(
    grid: TetGrid, face_indices: np.ndarray, *, inside: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The faces ``face_indices`` as a stand-alone triangle mesh: (V, 3) points in µm and
    (B, 3) triangles with compacted vertex ids (0..V-1, in increasing grid-vertex order).

    With ``inside`` (a (T,) tet mask, e.g. from :func:`~spinverse.mesh.phantoms.voxelise`)
    each triangle is oriented with its normal pointing away from its tet in the mask.
    """
    f = np.asarray(face_indices, dtype=np.int64).reshape(-1)
    if f.size and (f.min() < 0 or f.max() >= grid.n_faces):
        raise MeshError(f"face indices must lie in [0, {grid.n_faces - 1}]", field="face_indices")
    tris = grid.faces[f].copy()
    if inside is not None:
        mask = np.asarray(inside, dtype=bool)
        if mask.shape != (grid.n_tets,):
            raise MeshError(f"expected shape ({grid.n_tets},), got {mask.shape}", field="inside")
        ft, loc = grid.face_tets[f], grid.face_local[f]
        side0 = (ft[:, 0] >= 0) & mask[np.maximum(ft[:, 0], 0)]
        side1 = (ft[:, 1] >= 0) & mask[np.maximum(ft[:, 1], 0)]
        side = np.where(side0, 0, 1)
        has = side0 | side1
        rows = np.arange(len(f))
        opp = grid.tets[ft[rows, side], loc[rows, side]]
        p = grid.points
        a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
        flip = has & (np.einsum("ij,ij->i", np.cross(b - a, c - a), a - p[opp]) < 0)
        tris[flip, 1], tris[flip, 2] = tris[flip, 2], tris[flip, 1].copy()
    used, compact = np.unique(tris.reshape(-1), return_inverse=True)
    return grid.points[used], compact.reshape(-1, 3).astype(np.int64)


def save_surface(
    path: str | PathLike[str],
    grid: TetGrid,
    face_indices: np.ndarray,
    *,
    inside: np.ndarray | None = None,
) -> Path:
    """Write the faces ``face_indices`` (e.g. a barrier) as a triangle surface (µm); the
    format follows the suffix: ``.ply``, ``.obj``, ``.vtu`` or ``.stl`` (meshio). ``inside``
    orients the normals outward (see :func:`surface_mesh`)."""
    import meshio

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SURFACE_SUFFIXES:
        raise InputFileError(
            f"unsupported surface format {suffix or '(no suffix)'!r}; use one of "
            f"{', '.join(SURFACE_SUFFIXES)}",
            source=str(path),
        )
    points, tris = surface_mesh(grid, face_indices, inside=inside)
    meshio.write(p, meshio.Mesh(points, [("triangle", tris.astype(np.int32))]))
    return p
