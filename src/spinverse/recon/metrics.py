"""Accuracy and structural validity of a recovered interface (NumPy).

The interface is the set of faces with κ below a threshold (1e-3 µm/µs by default).
Distances in µm, squared Chamfer in µm², volumes in µm³.
"""

from __future__ import annotations

from itertools import permutations, product
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from spinverse.mesh.grid import TetGrid

#: The 10 fixed barycentric sample points per face: the centroid, 3 points towards the
#: vertices and the 6 permutations of (0.6, 0.3, 0.1).
SAMPLE_WEIGHTS = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]]
    + [list(p) for p in sorted(set(permutations((0.6, 0.3, 0.1))))]
)


def barrier_from_kappa(kappa: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Indices of faces with κ < threshold (µm/µs)."""
    return np.flatnonzero(np.asarray(kappa) < threshold)


def face_samples(grid: TetGrid, faces: np.ndarray) -> np.ndarray:
    """(10·B, 3) sample points (µm) of the faces, 10 fixed barycentric points each."""
    tri = grid.points[grid.faces[np.asarray(faces, dtype=np.int64)]]  # (B, 3, 3)
    return np.einsum("sk,bkd->bsd", SAMPLE_WEIGHTS, tri).reshape(-1, 3)


def chamfer_squared(grid: TetGrid, pred: np.ndarray, target: np.ndarray, *,
                    centre: bool = True) -> float:
    """Squared Chamfer distance (µm²): mean nearest squared distance pred → target plus
    target → pred, each set sampled at 10 points per face and (by default) mean-centred,
    which makes it translation invariant. ``inf`` when either set is empty."""
    if len(pred) == 0 or len(target) == 0:
        return float("inf")
    a, b = face_samples(grid, pred), face_samples(grid, target)
    if centre:
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float(np.mean(da**2) + np.mean(db**2))


def face_scores(pred: np.ndarray, target: np.ndarray, n_faces: int) -> tuple[float, float, float]:
    """Face-level (precision, recall, F1) of a predicted barrier against the target."""
    p = np.zeros(n_faces, bool)
    t = np.zeros(n_faces, bool)
    p[np.asarray(pred, dtype=np.int64)] = True
    t[np.asarray(target, dtype=np.int64)] = True
    tp = np.count_nonzero(p & t)
    precision = tp / max(np.count_nonzero(p), 1)
    recall = tp / max(np.count_nonzero(t), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return float(precision), float(recall), float(f1)


def structural_validity(grid: TetGrid, faces: np.ndarray) -> dict[str, float]:
    """Barrier faces per edge d(e) over the edges of the surface: open (d = 1), branching
    (d > 2) and bad (d ≠ 2) edges, as counts and % of the surface's edges."""
    mask = np.zeros(grid.n_faces)
    mask[np.asarray(faces, dtype=np.int64)] = 1.0
    d = np.asarray(grid.edge_face_incidence @ mask).round().astype(int)
    d = d[d > 0]
    n = len(d)
    open_, branching = int(np.sum(d == 1)), int(np.sum(d > 2))
    pct = (lambda c: 100.0 * c / n if n else 0.0)  # noqa: E731
    return {"n_edges": n, "open_edges": open_, "branching_edges": branching,
            "bad_edges": open_ + branching, "open_pct": pct(open_),
            "branching_pct": pct(branching), "bad_pct": pct(open_ + branching)}


def enclosed_tets(grid: TetGrid, faces: np.ndarray) -> np.ndarray:
    """(T,) bool: tets enclosed by the barrier. The tets are split into components
    connected through non-barrier interior faces; a component is enclosed when none of
    its outer-boundary faces is a non-barrier face (barrier faces on the grid's wall close
    a surface that runs through it)."""
    barrier = np.zeros(grid.n_faces, bool)
    barrier[np.asarray(faces, dtype=np.int64)] = True
    ft = grid.face_tets
    link = (~barrier) & (ft[:, 1] >= 0)
    g = sp.coo_matrix((np.ones(link.sum()), (ft[link, 0], ft[link, 1])),
                      shape=(grid.n_tets, grid.n_tets))
    _, labels = connected_components(g, directed=False)
    leaky = np.zeros(labels.max() + 1, bool)
    open_outer = grid.is_outer & ~barrier
    leaky[labels[ft[open_outer, 0]]] = True
    return ~leaky[labels]


def enclosed_volume(grid: TetGrid, faces: np.ndarray) -> float:
    """Volume (µm³) of the tets enclosed by the barrier (see :func:`enclosed_tets`)."""
    return float(grid.volumes[enclosed_tets(grid, faces)].sum())


def volume_error(grid: TetGrid, pred: np.ndarray, target: np.ndarray) -> float:
    """Volume (µm³) of the symmetric difference of the enclosed regions."""
    diff = enclosed_tets(grid, pred) ^ enclosed_tets(grid, target)
    return float(grid.volumes[diff].sum())


# ----------------------------------------------------------------- symmetries
def _vertex_map(grid: TetGrid, mapped_points: np.ndarray) -> np.ndarray:
    """Vertex id at each mapped point (-1 where no vertex is there)."""
    scale = float(np.ptp(grid.points, axis=0).max()) or 1.0
    d, idx = cKDTree(grid.points).query(mapped_points)
    return np.where(d <= 1e-7 * scale, idx, -1)


def _map_faces(grid: TetGrid, vmap: np.ndarray, faces: np.ndarray) -> np.ndarray | None:
    tri = vmap[grid.faces[faces]]
    if np.any(tri < 0):
        return None
    idx = grid.face_index(tri)
    return None if np.any(idx < 0) else idx


def lattice_shifts(grid: TetGrid, max_shift: int = 2) -> list[np.ndarray]:
    """Candidate lattice translations (µm): multiples of the edge length along the axes
    and, when the grid has body-centred vertices, the half-diagonal shifts too."""
    e = grid.edges
    lengths = np.linalg.norm(grid.points[e[:, 0]] - grid.points[e[:, 1]], axis=1)
    vec = grid.points[e[:, 1]] - grid.points[e[:, 0]]
    axis = np.abs(vec) > 1e-9 * lengths[:, None]
    axial = lengths[axis.sum(1) == 1]
    h = float(axial.max()) if len(axial) else float(lengths.max())
    r = range(-max_shift, max_shift + 1)
    shifts = [h * np.array(s, float) for s in product(r, r, r)]
    shifts += [h * (np.array(s, float) + 0.5) for s in product(range(-max_shift, max_shift),
                                                                repeat=3)]
    return shifts


def best_aligned_scores(grid: TetGrid, pred: np.ndarray,
                        target: np.ndarray) -> dict[str, Any]:
    """Scores at the best alignment of the prediction with the target among the signal's
    blind symmetries: lattice translations (±2 cells) and point reflection through the
    grid's centre, each kept only if it maps every predicted face onto a face."""
    pred = np.asarray(pred, dtype=np.int64)
    lo, hi = grid.bounding_box
    centre = 0.5 * (lo + hi)
    best = {"f1": -1.0}
    for reflect in (False, True):
        base = 2 * centre - grid.points if reflect else grid.points
        for shift in lattice_shifts(grid):
            vmap = _vertex_map(grid, base + shift)
            mapped = _map_faces(grid, vmap, pred) if len(pred) else pred
            if mapped is None:
                continue
            f1 = face_scores(mapped, target, grid.n_faces)[2]
            if f1 > best["f1"] + 1e-12:
                best = {"f1": f1, "faces": mapped, "reflect": reflect, "shift": shift}
    faces = best.get("faces", pred)
    label = ("reflection + " if best.get("reflect") else "") + (
        "shift " + np.array2string(np.round(best.get("shift", np.zeros(3)), 3), separator=",")
    )
    return {"f1_aligned": float(max(best["f1"], 0.0)),
            "chamfer_aligned": chamfer_squared(grid, faces, target),
            "volume_error_aligned": volume_error(grid, faces, target),
            "alignment": label}


def evaluate(grid: TetGrid, kappa: np.ndarray, target_faces: np.ndarray, *,
             threshold: float = 1e-3) -> dict[str, Any]:
    """All metrics of a κ field against a target barrier (plain JSON-able values)."""
    pred = barrier_from_kappa(kappa, threshold)
    target = np.asarray(target_faces, dtype=np.int64)
    precision, recall, f1 = face_scores(pred, target, grid.n_faces)
    out: dict[str, Any] = {
        "n_pred_faces": int(len(pred)), "n_target_faces": int(len(target)),
        "precision": precision, "recall": recall, "f1": f1,
        "chamfer": chamfer_squared(grid, pred, target),
        **structural_validity(grid, pred),
        "enclosed_volume": enclosed_volume(grid, pred),
        "target_volume": enclosed_volume(grid, target),
        "volume_error": volume_error(grid, pred, target),
    }
    out["volume_error_rel"] = out["volume_error"] / max(out["target_volume"], 1e-300)
    out.update(best_aligned_scores(grid, pred, target))
    return out
