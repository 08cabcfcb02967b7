"""The published voxel-mesh benchmark, shipped as ``spinverse/data/voxel_meshes.npz``.

One fixed BCC grid of 576 tets (box [-40/3, 40/3]³ µm, see :func:`bcc_grid`) and 16 target
barrier surfaces on it, indexed by row of the file's ``faces`` array (which equals the
grid's own face order). Ground truth κ: 1e-5 µm/µs on barrier faces, 0.1 µm/µs elsewhere.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import scipy.sparse as sp

from spinverse.errors import InputFileError, MeshError
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import BARRIER_KAPPA, OTHER_KAPPA, phantom_kappa

__all__ = [
    "BENCHMARK_RESOURCE",
    "case_names",
    "resolve_case",
    "benchmark_grid",
    "case_barrier",
    "case_kappa",
    "enclosed_tets",
]

#: File name of the benchmark inside the ``spinverse.data`` package.
BENCHMARK_RESOURCE = "voxel_meshes.npz"


@cache
def _arrays() -> dict[str, np.ndarray]:
    ref = resources.files("spinverse.data").joinpath(BENCHMARK_RESOURCE)
    try:
        with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:  # pragma: no cover - broken install
        raise InputFileError(f"cannot read the shipped benchmark: {exc}", source=str(ref)) from exc
    for arr in data.values():
        arr.setflags(write=False)
    return data


def case_names() -> list[str]:
    """The 16 benchmark case names, e.g. ``'018_sphere_10r_in_grid_20x20'``."""
    return [str(n) for n in _arrays()["names"]]


def resolve_case(name_or_prefix: str) -> str:
    """Full case name from a full name or a unique prefix (``"017"``, ``"018_sphere"``).

    Raises :class:`~spinverse.errors.InputFileError` (field ``case``) listing the valid
    names when nothing or more than one case matches.
    """
    key = str(name_or_prefix).strip()
    if key.startswith("barrier_"):
        key = key[len("barrier_") :]
    names = case_names()
    if key in names:
        return key
    hits = [n for n in names if key and n.startswith(key)]
    if len(hits) == 1:
        return hits[0]
    why = "is ambiguous" if hits else "matches no case"
    valid = ", ".join(hits or names)
    raise InputFileError(
        f"{name_or_prefix!r} {why}; {'candidates' if hits else 'valid names'}: {valid}",
        source=BENCHMARK_RESOURCE,
        field="case",
    )


@cache
def benchmark_grid() -> TetGrid:
    """The benchmark grid (189 points, 576 tets, 1296 faces; µm), in the file's face order."""
    d = _arrays()
    return TetGrid(d["points"], d["tets"], faces=d["faces"])


def case_barrier(name: str) -> np.ndarray:
    """(B,) int64 sorted indices into the benchmark grid's faces of the case's barrier.

    ``name`` may be a unique prefix (see :func:`resolve_case`)."""
    full = resolve_case(name)
    return np.sort(np.asarray(_arrays()[f"barrier_{full}"], dtype=np.int64))


def case_kappa(
    name: str,
    *,
    barrier_kappa: float = BARRIER_KAPPA,
    other_kappa: float = OTHER_KAPPA,
) -> np.ndarray:
    """(F,) float64 ground-truth κ in µm/µs of a case: ``barrier_kappa`` on its barrier
    faces, ``other_kappa`` on every other face (outer faces included)."""
    return phantom_kappa(
        benchmark_grid(), case_barrier(name), barrier_kappa=barrier_kappa, other_kappa=other_kappa
    )


def enclosed_tets(grid: TetGrid, barrier: np.ndarray) -> np.ndarray:
    """(T,) bool: the tets enclosed by a closed barrier surface (face indices).

    The tets are split into regions connected through non-barrier interior faces; a region
    is enclosed when every face bounding it (used by exactly one of its tets, outer faces
    included) is a barrier face. Inverse of
    :func:`~spinverse.mesh.phantoms.barrier_faces` for voxelised shapes whose regions
    touch no outer face outside the barrier.
    """
    is_barrier = np.zeros(grid.n_faces, dtype=bool)
    b = np.asarray(barrier, dtype=np.int64)
    if b.size and (b.min() < 0 or b.max() >= grid.n_faces):
        raise MeshError(f"face indices must lie in [0, {grid.n_faces - 1}]", field="barrier")
    is_barrier[b] = True
    ft = grid.face_tets
    link = (ft[:, 1] >= 0) & ~is_barrier
    g = sp.coo_matrix(
        (np.ones(link.sum()), (ft[link, 0], ft[link, 1])), shape=(grid.n_tets, grid.n_tets)
    )
    n_comp, label = sp.csgraph.connected_components(g, directed=False)
    # A region "leaks" if one of its bounding faces is not a barrier face.
    leak = np.zeros(n_comp, dtype=bool)
    unlinked = ~link & ~is_barrier  # outer faces that are not barriers
    leak[label[ft[unlinked, 0]]] = True
    return ~leak[label]
