"""Accuracy and structural validity of a recovered interface (NumPy).

The interface is the set of faces with κ below a threshold (1e-3 µm/µs by default), given
as indices into ``grid.faces``. Distances in µm, squared Chamfer in µm², volumes in µm³.

Conventions
-----------
* **Chamfer** (:func:`chamfer_squared`): each face set is sampled at the 10 fixed
  barycentric points of :data:`SAMPLE_WEIGHTS`; both point clouds are mean-centred
  (translation invariant), and the value is mean(pred → target nearest squared distance) +
  mean(target → pred). An empty prediction (or target) gives ``inf``; both empty give 0.
* **Face scores** (:func:`face_scores`): precision = TP/|pred| (0 for an empty prediction),
  recall = TP/|target| (0 for an empty target), F1 = 2PR/(P + R) (0 when TP = 0); an empty
  prediction of an empty target scores (1, 1, 1).
* **Structural validity** (:func:`structural_validity`): over the edges used by the
  predicted faces, d(e) = number of predicted faces at e; open d = 1, branching d > 2,
  bad d ≠ 2, also in % of those edges (0 % when there are none).
* **Enclosed region** (:func:`enclosed_tets`): the tets are split into components connected
  through interior non-barrier faces (the tet adjacency graph cut at barrier faces). A
  component is *enclosed* when none of its outer-boundary faces is a non-barrier face, i.e.
  barrier faces that lie on the grid's outer wall close a surface that runs through the wall
  (the clipped cylinder 017, the torus 019, the bent axons), while a region that reaches the
  wall through a non-barrier outer face is outside. Components without outer faces are
  enclosed when they are cut off at all. The same definition as
  :func:`spinverse.mesh.benchmark.enclosed_tets`. Consequence: barriers on every outer face
  ("outline only") enclose the whole grid.
* **Symmetries** (:func:`grid_symmetries`, :func:`best_aligned_scores`): the signal cannot
  tell lattice translations apart and, for antipodally symmetric protocols, the point
  reflection through the grid centre. The aligned scores are the best over the identity,
  the point reflection (if it maps the grid onto itself) and the lattice translations of up
  to ±2 cells per axis (cube-edge multiples and, on a body-centred grid, the half-diagonal
  shifts (h/2)(±1, ±1, ±1) + cube-edge multiples), alone or combined with the reflection. A
  translation is used only when it maps every predicted face onto a face of the grid.
* **Closed interface** (:func:`closed_surface`): the surface of the enclosed region, i.e.
  the barrier faces that separate an enclosed tet from a non-enclosed one (or an enclosed
  tet from the outside of the grid). Dangling barrier "fins" with the same region on both
  sides are dropped, so the surface has no open edge (each edge has an even number of its
  faces; 4 or more is a branching edge where two parts touch along an edge). It is a subset
  of the raw barrier. :func:`evaluate` reports every score for it too (``closed_*`` keys).
"""

from __future__ import annotations

import weakref
from itertools import product
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import barrier_faces

__all__ = [
    "SAMPLE_WEIGHTS",
    "barrier_from_kappa",
    "face_samples",
    "chamfer_squared_points",
    "chamfer_squared",
    "face_scores",
    "structural_validity",
    "enclosed_tets",
    "enclosed_volume",
    "closed_surface",
    "volume_error",
    "lattice_step",
    "lattice_translations",
    "grid_symmetries",
    "transform_faces",
    "best_aligned_scores",
    "evaluate",
]

#: The 10 fixed barycentric sample points per face (rows sum to 1), all interior: the
#: centroid (1/3, 1/3, 1/3); 3 points towards the vertices, the permutations of
#: (2/3, 1/6, 1/6); 6 edge-adjacent points, the permutations of (0.6, 0.3, 0.1) (the one
#: with weight 0.1 on vertex k lies near the edge opposite k). Prefixes of 1 and 4 rows
#: are used for ``n = 1`` and ``n = 4``.
SAMPLE_WEIGHTS = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3],
        [0.6, 0.3, 0.1], [0.6, 0.1, 0.3], [0.3, 0.6, 0.1],
        [0.1, 0.6, 0.3], [0.3, 0.1, 0.6], [0.1, 0.3, 0.6],
    ]
)
SAMPLE_WEIGHTS.setflags(write=False)


def _faces(faces: np.ndarray | list[int], n_faces: int, name: str = "faces") -> np.ndarray:
    """Sorted unique int64 face indices, validated against ``n_faces``."""
    f = np.asarray(faces)
    if f.size == 0:
        return np.zeros(0, dtype=np.int64)
    if f.dtype == bool:
        if f.shape != (n_faces,):
            raise ValueError(f"{name}: a bool mask must have shape ({n_faces},)")
        return np.flatnonzero(f)
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{name} must be integer face indices, got dtype {f.dtype}")
    f = np.unique(f.astype(np.int64).reshape(-1))
    if f[0] < 0 or f[-1] >= n_faces:
        raise ValueError(f"{name} must lie in [0, {n_faces - 1}], got [{f[0]}, {f[-1]}]")
    return f


def _mask(faces: np.ndarray, n_faces: int) -> np.ndarray:
    m = np.zeros(n_faces, dtype=bool)
    m[faces] = True
    return m


# -------------------------------------------------------------------- basics
def barrier_from_kappa(kappa: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Sorted int64 indices of the faces with κ < ``threshold`` (both µm/µs)."""
    k = np.asarray(kappa, dtype=np.float64)
    if k.ndim != 1:
        raise ValueError(f"kappa must be 1-D (one value per face), got shape {k.shape}")
    return np.flatnonzero(k < threshold)


def face_samples(grid: TetGrid, faces: np.ndarray, n: int = 10) -> np.ndarray:
    """(n·B, 3) sample points (µm) of the B faces, face by face: the first ``n`` rows of
    :data:`SAMPLE_WEIGHTS` (n ∈ {1, 4, 10}) applied to each triangle's vertices."""
    if n not in (1, 4, 10):
        raise ValueError(f"n must be 1, 4 or 10, got {n}")
    f = np.asarray(faces, dtype=np.int64).reshape(-1)
    tri = grid.points[grid.faces[f]]  # (B, 3, 3)
    return np.einsum("sk,bkd->bsd", SAMPLE_WEIGHTS[:n], tri).reshape(-1, 3)


def chamfer_squared_points(a: np.ndarray, b: np.ndarray, *, centre: bool = True) -> float:
    """Squared Chamfer distance between two point sets (N, 3), (M, 3) in µm: mean over a of
    the squared distance to the nearest point of b plus the same from b to a, after
    subtracting each set's mean when ``centre``. ``inf`` if exactly one set is empty, 0 if
    both are."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        return 0.0 if len(a) == len(b) else float("inf")
    if centre:
        a = a - a.mean(axis=0)
        b = b - b.mean(axis=0)
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float(np.mean(da**2) + np.mean(db**2))


def chamfer_squared(grid: TetGrid, pred_faces: np.ndarray, target_faces: np.ndarray, *,
                    centre: bool = True) -> float:
    """Squared Chamfer distance (µm²) between two face sets, each sampled at 10 fixed
    barycentric points per face and (by default) mean-centred, which makes it invariant
    to translations. ``inf`` for an empty prediction (or target), 0 when both are empty."""
    pred = _faces(pred_faces, grid.n_faces, "pred_faces")
    target = _faces(target_faces, grid.n_faces, "target_faces")
    return chamfer_squared_points(face_samples(grid, pred), face_samples(grid, target),
                                  centre=centre)


def face_scores(pred: np.ndarray, target: np.ndarray,
                n_faces: int) -> tuple[float, float, float]:
    """Face-level (precision, recall, F1) of a predicted barrier (face indices) against
    the target (conventions for empty sets in the module docstring)."""
    p = _mask(_faces(pred, n_faces, "pred"), n_faces)
    t = _mask(_faces(target, n_faces, "target"), n_faces)
    n_p, n_t = int(p.sum()), int(t.sum())
    if n_p == 0 and n_t == 0:
        return 1.0, 1.0, 1.0
    tp = int(np.count_nonzero(p & t))
    precision = tp / n_p if n_p else 0.0
    recall = tp / n_t if n_t else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if tp else 0.0
    return float(precision), float(recall), float(f1)


def structural_validity(grid: TetGrid, faces: np.ndarray) -> dict[str, float | int]:
    """Barrier faces per edge d(e) over the edges of the predicted surface: counts of
    open (d = 1), branching (d > 2) and bad (d ≠ 2) edges, ``n_edges`` (edges with d ≥ 1)
    and the same as % of ``n_edges`` (0 when the surface is empty)."""
    f = _faces(faces, grid.n_faces)
    d = np.bincount(grid.face_edges[f].reshape(-1), minlength=grid.n_edges)
    d = d[d > 0]
    n = int(len(d))
    open_, branching = int(np.count_nonzero(d == 1)), int(np.count_nonzero(d > 2))
    bad = open_ + branching

    def pct(c: int) -> float:
        return 100.0 * c / n if n else 0.0

    return {"open_edges": open_, "branching_edges": branching, "bad_edges": bad,
            "n_edges": n, "open_pct": pct(open_), "branching_pct": pct(branching),
            "bad_pct": pct(bad)}


# -------------------------------------------------------------------- volumes
def enclosed_tets(grid: TetGrid, faces: np.ndarray) -> np.ndarray:
    """(T,) bool: the tets enclosed by a barrier (face indices). Components of the tet
    adjacency graph cut at barrier faces; a component is enclosed when none of its outer
    faces is a non-barrier face (see the module docstring)."""
    barrier = _mask(_faces(faces, grid.n_faces), grid.n_faces)
    ft = grid.face_tets
    link = ~barrier & (ft[:, 1] >= 0)
    g = sp.coo_matrix((np.ones(int(link.sum())), (ft[link, 0], ft[link, 1])),
                      shape=(grid.n_tets, grid.n_tets))
    n_comp, labels = connected_components(g, directed=False)
    leaky = np.zeros(n_comp, dtype=bool)
    leaky[labels[ft[grid.is_outer & ~barrier, 0]]] = True
    return ~leaky[labels]


def enclosed_volume(grid: TetGrid, faces: np.ndarray) -> float:
    """Volume (µm³) of the tets enclosed by the barrier (see :func:`enclosed_tets`)."""
    return float(grid.volumes[enclosed_tets(grid, faces)].sum())


def closed_surface(grid: TetGrid, faces: np.ndarray) -> np.ndarray:
    """(C,) sorted face indices: the surface of the region enclosed by the barrier ``faces``
    (see :func:`enclosed_tets`), a subset of ``faces`` without open edges."""
    return barrier_faces(grid, enclosed_tets(grid, faces))


def volume_error(grid: TetGrid, pred: np.ndarray, target: np.ndarray, *,
                 relative: bool = False) -> float:
    """Volume (µm³) of the symmetric difference of the enclosed regions of ``pred`` and
    ``target``; with ``relative`` divided by the target's enclosed volume (``inf`` when
    that is 0 and the difference is not, 0 when both are 0)."""
    a, b = enclosed_tets(grid, pred), enclosed_tets(grid, target)
    diff = float(grid.volumes[a ^ b].sum())
    if not relative:
        return diff
    ref = float(grid.volumes[b].sum())
    if ref > 0:
        return diff / ref
    return 0.0 if diff == 0 else float("inf")


# ----------------------------------------------------------------- symmetries
def lattice_step(grid: TetGrid) -> np.ndarray:
    """(3,) lattice step per axis in µm: the shortest grid edge parallel to each axis
    (the cube edge h = 20/3 µm on the benchmark grid)."""
    e = grid.edges
    vec = grid.points[e[:, 1]] - grid.points[e[:, 0]]
    length = np.linalg.norm(vec, axis=1)
    step = np.empty(3)
    for ax in range(3):  # three axes, not a loop over edges
        along = np.abs(np.abs(vec[:, ax]) - length) <= 1e-9 * length
        step[ax] = length[along].min() if along.any() else length.min()
    return step


def lattice_translations(grid: TetGrid, max_shift: int = 2, *,
                         body_centred: bool = True) -> np.ndarray:
    """(S, 3) candidate lattice translations in units of :func:`lattice_step`, sorted by
    length (the zero shift first): all integer vectors with components in ±``max_shift``
    and, with ``body_centred``, the half-integer ones (components in ±(max_shift − ½)),
    the BCC lattice's half-diagonal shifts."""
    r = np.arange(-max_shift, max_shift + 1, dtype=np.float64)
    cells = [np.array(list(product(r, r, r)))]
    if body_centred and max_shift >= 1:
        h = np.arange(-max_shift, max_shift, dtype=np.float64) + 0.5
        cells.append(np.array(list(product(h, h, h))))
    s = np.concatenate(cells)
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], np.abs(s).sum(1), (s**2).sum(1)))
    return s[order]


def _grid_centre(grid: TetGrid) -> np.ndarray:
    lo, hi = grid.bounding_box
    return 0.5 * (lo + hi)


def _vertex_maps(grid: TetGrid, mapped_points: np.ndarray) -> np.ndarray:
    """(..., P) vertex id at each mapped point (..., P, 3), -1 where there is none."""
    scale = float(np.ptp(grid.points, axis=0).max()) or 1.0
    d, idx = cKDTree(grid.points).query(mapped_points.reshape(-1, 3))
    out = np.where(d <= 1e-7 * scale, idx, -1)
    return out.reshape(mapped_points.shape[:-1])


def _map_face_sets(grid: TetGrid, vmaps: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(S, B) image of each face under each vertex map (S, P); -1 where not a face."""
    tri = vmaps[:, grid.faces[faces]]  # (S, B, 3)
    return grid.face_index(tri.reshape(-1, 3)).reshape(tri.shape[:2])


_TRANSFORMS: weakref.WeakKeyDictionary[TetGrid, dict[tuple, dict[str, np.ndarray]]] = (
    weakref.WeakKeyDictionary())


def _transforms(grid: TetGrid, max_shift: int, body_centred: bool) -> dict[str, np.ndarray]:
    """Candidate transforms (cached per grid): ``reflect`` (S,) bool, ``shift`` (S, 3) in
    lattice steps, ``vmaps`` (S, P) vertex maps (-1 where a vertex leaves the grid), in
    order of simplicity (the identity first, see :func:`best_aligned_scores`). The
    reflection variants are included only when the reflection maps the grid onto
    itself."""
    key = (int(max_shift), bool(body_centred))
    cache = _TRANSFORMS.setdefault(grid, {})
    if key in cache:
        return cache[key]
    shifts = lattice_translations(grid, max_shift, body_centred=body_centred)
    step = lattice_step(grid)
    refl = "reflection" in grid_symmetries(grid)
    bases = [grid.points] + ([2 * _grid_centre(grid) - grid.points] if refl else [])
    pts = np.stack([b[None] + (shifts * step)[:, None, :] for b in bases])  # (R, S, P, 3)
    vmaps = _vertex_maps(grid, pts).reshape(-1, grid.n_points)
    reflect = np.repeat(np.arange(len(bases)) == 1, len(shifts))
    shift = np.tile(shifts, (len(bases), 1))
    # Simplest first: by shift length, then without before with the reflection.
    order = np.lexsort((reflect, np.arange(len(shift)) % len(shifts)))
    out = {"reflect": reflect[order], "shift": shift[order], "vmaps": vmaps[order]}
    cache[key] = out
    return out


def grid_symmetries(grid: TetGrid) -> dict[str, np.ndarray]:
    """Face permutations (F,) of the point symmetries that map the grid onto itself and
    that the signal cannot see: always ``"identity"``, and ``"reflection"`` (point
    reflection through the bounding-box centre, x → 2c − x) when it maps every face onto a
    face (true for the BCC benchmark grid). ``perm[f]`` is the image of face f.

    Lattice translations do not map a finite grid onto itself; they are applied to a face
    set by :func:`transform_faces` and kept only when every face lands on a face."""
    ident = np.arange(grid.n_faces)
    out = {"identity": ident}
    vmap = _vertex_maps(grid, 2 * _grid_centre(grid) - grid.points)
    if np.all(vmap >= 0):
        perm = _map_face_sets(grid, vmap[None], ident)[0]
        if np.all(perm >= 0) and len(np.unique(perm)) == grid.n_faces:
            out["reflection"] = perm
    return out


def transform_faces(grid: TetGrid, faces: np.ndarray, *, reflect: bool = False,
                    shift: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 0.0)
                    ) -> np.ndarray | None:
    """Image of a face set under x → (2c − x if ``reflect`` else x) + shift·step (shift
    in lattice steps, see :func:`lattice_step`; c the grid centre); ``None`` if a face
    does not land on a face of the grid."""
    f = _faces(faces, grid.n_faces)
    base = 2 * _grid_centre(grid) - grid.points if reflect else grid.points
    vmap = _vertex_maps(grid, base + np.asarray(shift, dtype=np.float64) * lattice_step(grid))
    mapped = _map_face_sets(grid, vmap[None], f)[0]
    return None if np.any(mapped < 0) else np.sort(mapped)


def _alignment_label(reflect: bool, shift: np.ndarray) -> str:
    parts = ["reflection"] if reflect else []
    if np.any(shift != 0):
        parts.append("shift(" + ",".join(f"{s:+g}" for s in shift) + ")h")
    return "+".join(parts) or "identity"


def _best_transform(grid: TetGrid, tr: dict[str, np.ndarray], p: np.ndarray, t: np.ndarray
                    ) -> tuple[int, np.ndarray, int]:
    """Index of the transform in ``tr`` that maps the faces ``p`` onto ``t`` with the
    highest F1 (ties: the simplest), the mapped faces and how many transforms were valid."""
    if not len(p):
        return 0, p, 1
    mapped = _map_face_sets(grid, tr["vmaps"], p)  # (S, B)
    valid = np.all(mapped >= 0, axis=1)
    tmask = _mask(t, grid.n_faces)
    tp = np.where(valid, tmask[np.where(mapped >= 0, mapped, 0)].sum(axis=1), 0)
    prec = tp / len(p)
    rec = tp / len(t) if len(t) else np.zeros(len(tp))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * prec * rec / (prec + rec), 0.0)
    f1 = np.where(valid, f1, -1.0)
    best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[0])  # identity is index 0
    faces = np.sort(mapped[best]) if valid[best] else p
    return best, faces, int(valid.sum())


def align_face_values(grid: TetGrid, pred: np.ndarray, target: np.ndarray,
                      values: np.ndarray, *, max_shift: int = 2,
                      body_centred: bool = True) -> np.ndarray:
    """(F,) per-face ``values`` (e.g. a barrier probability) moved into ``target``'s frame
    by the blind-symmetry transform that aligns ``pred`` with ``target`` best (as in
    :func:`best_aligned_scores`); faces mapped off the grid are dropped (0)."""
    p = _faces(pred, grid.n_faces, "pred")
    t = _faces(target, grid.n_faces, "target")
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (grid.n_faces,):
        raise ValueError(f"values must have shape ({grid.n_faces},), got {v.shape}")
    tr = _transforms(grid, max_shift, body_centred)
    best, _, _ = _best_transform(grid, tr, p, t)
    nz = np.flatnonzero(v)
    mapped = _map_face_sets(grid, tr["vmaps"][best][None], nz)[0]
    out = np.zeros(grid.n_faces)
    ok = mapped >= 0
    out[mapped[ok]] = v[nz[ok]]
    return out


def best_aligned_scores(grid: TetGrid, pred: np.ndarray, target: np.ndarray, *,
                        max_shift: int = 2, body_centred: bool = True) -> dict[str, Any]:
    """Scores of ``pred`` at its best alignment with ``target`` among the signal's blind
    symmetries (identity, point reflection, lattice translations up to ±``max_shift``
    steps, see the module docstring).

    The best alignment maximises face F1; ties go to the simplest transform (the shortest
    shift, then no reflection before reflection), so a prediction that is already aligned
    keeps the identity. Returns ``precision_aligned``, ``recall_aligned``, ``f1_aligned``,
    ``chamfer_aligned`` (µm²), ``volume_error_aligned`` (µm³), ``volume_error_rel_aligned``,
    ``alignment`` (a label such as ``"identity"``, ``"reflection"``,
    ``"reflection+shift(+1,+0,-0.5)h"``), ``alignment_reflected`` (bool),
    ``alignment_shift_steps`` and ``alignment_shift_um`` (3 floats) and
    ``n_alignments`` (how many candidate transforms mapped the prediction onto faces)."""
    p = _faces(pred, grid.n_faces, "pred")
    t = _faces(target, grid.n_faces, "target")
    tr = _transforms(grid, max_shift, body_centred)
    best, faces, n_valid = _best_transform(grid, tr, p, t)
    reflect = bool(tr["reflect"][best])
    shift = tr["shift"][best]
    precision, recall, f1_best = face_scores(faces, t, grid.n_faces)
    return {
        "precision_aligned": precision,
        "recall_aligned": recall,
        "f1_aligned": f1_best,
        "chamfer_aligned": chamfer_squared(grid, faces, t),
        "volume_error_aligned": volume_error(grid, faces, t),
        "volume_error_rel_aligned": volume_error(grid, faces, t, relative=True),
        "alignment": _alignment_label(reflect, shift),
        "alignment_reflected": reflect,
        "alignment_shift_steps": [float(s) for s in shift],
        "alignment_shift_um": [float(s) for s in shift * lattice_step(grid)],
        "n_alignments": n_valid,
    }


# ---------------------------------------------------------------- everything
def evaluate(grid: TetGrid, kappa: np.ndarray, target_faces: np.ndarray, *,
             threshold: float = 1e-3) -> dict[str, Any]:
    """All metrics of a κ field (F,) µm/µs against a target barrier (face indices).

    Plain JSON-able values (``chamfer`` may be ``inf`` for an empty prediction):

    * ``threshold``, ``n_pred_faces``, ``n_target_faces``;
    * raw: ``precision``, ``recall``, ``f1``, ``chamfer`` (µm², mean-centred, so already
      translation invariant), ``enclosed_volume`` and ``target_volume`` (µm³),
      ``volume_error`` (µm³, symmetric difference), ``volume_error_rel`` (÷ target volume);
    * structural validity of the prediction (unchanged by the symmetries): ``open_edges``,
      ``branching_edges``, ``bad_edges``, ``n_edges``, ``open_pct``, ``branching_pct``,
      ``bad_pct``;
    * modulo the blind symmetries: the keys of :func:`best_aligned_scores` (``*_aligned``,
      ``alignment``, ...);
    * the same for the closed interface (:func:`closed_surface`) with the prefix
      ``closed_``: ``closed_n_faces``, ``closed_precision``, ``closed_recall``,
      ``closed_f1``, ``closed_chamfer``, the structural keys (``closed_bad_pct``, ...) and
      the aligned ones (``closed_f1_aligned``, ``closed_chamfer_aligned``, ...).
    """
    k = np.asarray(kappa, dtype=np.float64)
    if k.shape != (grid.n_faces,):
        raise ValueError(f"kappa must have shape ({grid.n_faces},), got {k.shape}")
    pred = barrier_from_kappa(k, threshold)
    target = _faces(target_faces, grid.n_faces, "target_faces")
    precision, recall, f1 = face_scores(pred, target, grid.n_faces)
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "n_pred_faces": int(len(pred)),
        "n_target_faces": int(len(target)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "chamfer": chamfer_squared(grid, pred, target),
        "enclosed_volume": enclosed_volume(grid, pred),
        "target_volume": enclosed_volume(grid, target),
        "volume_error": volume_error(grid, pred, target),
        "volume_error_rel": volume_error(grid, pred, target, relative=True),
        **structural_validity(grid, pred),
    }
    out.update(best_aligned_scores(grid, pred, target))
    closed = closed_surface(grid, pred)
    c_precision, c_recall, c_f1 = face_scores(closed, target, grid.n_faces)
    closed_scores: dict[str, Any] = {
        "n_faces": int(len(closed)), "precision": c_precision, "recall": c_recall,
        "f1": c_f1, "chamfer": chamfer_squared(grid, closed, target),
        **structural_validity(grid, closed),
        **{k: v for k, v in best_aligned_scores(grid, closed, target).items()
           if not k.startswith("volume")},
    }
    out.update({f"closed_{k}": v for k, v in closed_scores.items()})
    return out
