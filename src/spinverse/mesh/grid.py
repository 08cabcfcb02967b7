"""The fixed tetrahedral grid and its topology (faces, edges and their incidences).

A :class:`TetGrid` is immutable: points (µm), tetrahedra and the ordered list of faces that
indexes every per-face array of the project (permeability κ, barrier masks, gradients).
Topology is derived lazily and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from spinverse.errors import MeshError

#: Local vertex triples of the four faces of a tetrahedron; face ``i`` omits vertex ``i``.
TET_FACE_LOCAL = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], dtype=np.int64)
#: Local vertex pairs of the six edges of a tetrahedron.
TET_EDGE_LOCAL = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=np.int64)


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of an integer array (lexicographic order) and the inverse map."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    uniq, inverse = np.unique(a, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _row_lookup(table: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query row in ``table`` (rows sorted within), -1 where absent."""
    n = int(table.max(initial=0)) + 1
    # Ids outside the table's range cannot match (and would overflow the keys).
    valid = np.all((queries >= 0) & (queries < n), axis=-1)
    queries = np.where(valid[..., None], queries, 0)
    w = table.shape[1]
    scale = n ** np.arange(w - 1, -1, -1, dtype=np.int64)
    keys = table @ scale
    order = np.argsort(keys, kind="stable")
    qk = queries @ scale
    pos = np.searchsorted(keys[order], qk)
    pos = np.clip(pos, 0, len(keys) - 1)
    found = valid & (keys[order][pos] == qk)
    return np.where(found, order[pos], -1)


@dataclass(frozen=True, eq=False)
class TetGrid:
    """A fixed tetrahedral grid.

    Parameters
    ----------
    points : (P, 3) float64 array, vertex coordinates in µm.
    tets : (T, 4) int64 array, vertex ids of each tetrahedron (any orientation).
    faces : optional (F, 3) int64 array fixing the face order of every per-face array. Each
        row is stored with its vertex ids sorted; when omitted the faces are the unique
        faces of the tets, rows in lexicographic order (the benchmark file's order).

    Construction validates the grid and raises :class:`~spinverse.errors.MeshError` on NaN
    or infinite coordinates, out-of-range ids, degenerate, duplicate or overlapping tets,
    faces shared by more than two tets, or a ``faces`` array that does not list exactly the
    faces of the tets.
    """

    points: np.ndarray
    tets: np.ndarray
    faces: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if np.iscomplexobj(self.points):
            raise MeshError("coordinates must be real numbers, got complex", field="points")
        points = np.asarray(self.points, dtype=np.float64)
        tets = np.asarray(self.tets)
        if points.ndim != 2 or points.shape[1] != 3:
            raise MeshError(f"expected shape (P, 3), got {points.shape}", field="points")
        if tets.ndim != 2 or tets.shape[1] != 4 or tets.shape[0] == 0:
            raise MeshError(f"expected shape (T, 4) with T > 0, got {tets.shape}", field="tets")
        if not np.issubdtype(tets.dtype, np.integer):
            if not np.all(np.isfinite(tets)) or np.any(tets != np.round(tets)):
                raise MeshError("vertex ids must be integers", field="tets")
        tets = tets.astype(np.int64)
        bad = ~np.isfinite(points).all(axis=1)
        if bad.any():
            raise MeshError(
                f"{bad.sum()} vertices have NaN or infinite coordinates "
                f"(first: vertex {np.flatnonzero(bad)[0]})",
                field="points",
            )
        if tets.min() < 0 or tets.max() >= len(points):
            raise MeshError(
                f"vertex ids must lie in [0, {len(points) - 1}], got [{tets.min()}, {tets.max()}]",
                field="tets",
            )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "tets", tets)
        points.setflags(write=False)
        tets.setflags(write=False)
        all_faces, _ = self._tet_face_inverse
        if self.faces is None:
            faces = all_faces
        else:
            faces = np.sort(np.asarray(self.faces).astype(np.int64), axis=1)
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise MeshError(f"expected shape (F, 3), got {faces.shape}", field="faces")
            if len(faces) != len(all_faces) or len(unique_rows(faces)[0]) != len(faces):
                raise MeshError(
                    f"must list each of the grid's {len(all_faces)} faces once, "
                    f"got {len(faces)} rows",
                    field="faces",
                )
            if np.any(_row_lookup(all_faces, faces) < 0):
                raise MeshError("lists triangles that are not faces of the tets", field="faces")
        faces.setflags(write=False)
        object.__setattr__(self, "faces", faces)
        self._validate_cells()

    # ------------------------------------------------------------------ sizes
    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def n_tets(self) -> int:
        return len(self.tets)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    # --------------------------------------------------------------- geometry
    @cached_property
    def signed_volumes(self) -> np.ndarray:
        """(T,) signed volume of each tet in µm³ (sign = vertex orientation)."""
        p = self.points[self.tets]
        d = p[:, 1:] - p[:, :1]
        return np.linalg.det(d) / 6.0

    @cached_property
    def volumes(self) -> np.ndarray:
        """(T,) volume of each tet in µm³."""
        return np.abs(self.signed_volumes)

    @property
    def volume(self) -> float:
        """Total volume of the grid in µm³."""
        return float(self.volumes.sum())

    @cached_property
    def face_areas(self) -> np.ndarray:
        """(F,) area of each face in µm²."""
        p = self.points[self.faces]
        return 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)

    @cached_property
    def face_centroids(self) -> np.ndarray:
        """(F, 3) barycentre of each face in µm."""
        return self.points[self.faces].mean(axis=1)

    @cached_property
    def tet_centroids(self) -> np.ndarray:
        """(T, 3) barycentre of each tet in µm."""
        return self.points[self.tets].mean(axis=1)

    @property
    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) corners of the axis-aligned bounding box in µm."""
        return self.points.min(axis=0), self.points.max(axis=0)

    @cached_property
    def mean_edge_length(self) -> float:
        """Mean tet edge length in µm (a mesh size h)."""
        e = self.edges
        return float(np.linalg.norm(self.points[e[:, 0]] - self.points[e[:, 1]], axis=1).mean())

    # --------------------------------------------------------------- topology
    @cached_property
    def _tet_face_inverse(self) -> tuple[np.ndarray, np.ndarray]:
        local = np.sort(self.tets[:, TET_FACE_LOCAL], axis=2).reshape(-1, 3)
        return unique_rows(local)

    @cached_property
    def tet_faces(self) -> np.ndarray:
        """(T, 4) index into :attr:`faces` of face ``i`` of each tet (the face omitting
        local vertex ``i``)."""
        all_faces, inv = self._tet_face_inverse
        to_grid = _row_lookup(self.faces, all_faces)
        return to_grid[inv].reshape(-1, 4)

    @cached_property
    def face_tets(self) -> np.ndarray:
        """(F, 2) tets on either side of each face; second entry -1 on outer faces."""
        tf = self.tet_faces.reshape(-1)
        tet_of = np.repeat(np.arange(self.n_tets), 4)
        order = np.argsort(tf, kind="stable")
        counts = np.bincount(tf, minlength=self.n_faces)
        if counts.max() > 2:
            f = int(np.argmax(counts))
            raise MeshError(
                f"face {f} is shared by {counts[f]} tets (non-manifold grid)", field="tets"
            )
        out = -np.ones((self.n_faces, 2), dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sorted_tets = tet_of[order]
        out[:, 0] = sorted_tets[start]
        two = counts == 2
        out[two, 1] = sorted_tets[start[two] + 1]
        return out

    @cached_property
    def face_local(self) -> np.ndarray:
        """(F, 2) local index (0..3) of the face within each of its tets (-1 if absent)."""
        ft = self.face_tets
        out = -np.ones_like(ft)
        tf = self.tet_faces
        for side in range(2):
            ok = ft[:, side] >= 0
            rows = tf[ft[ok, side]]
            out[ok, side] = np.argmax(rows == np.flatnonzero(ok)[:, None], axis=1)
        return out

    @cached_property
    def is_outer(self) -> np.ndarray:
        """(F,) True for faces on the outer boundary (one tet)."""
        return self.face_tets[:, 1] < 0

    @cached_property
    def interior_faces(self) -> np.ndarray:
        """Indices of interior faces (two tets)."""
        return np.flatnonzero(~self.is_outer)

    @cached_property
    def outer_faces(self) -> np.ndarray:
        """Indices of outer-boundary faces (one tet)."""
        return np.flatnonzero(self.is_outer)

    @cached_property
    def _edges_and_face_edges(self) -> tuple[np.ndarray, np.ndarray]:
        tet_edges = np.sort(self.tets[:, TET_EDGE_LOCAL], axis=2).reshape(-1, 2)
        edges, _ = unique_rows(tet_edges)
        fe_local = np.array([[0, 1], [0, 2], [1, 2]])
        face_edge_pairs = self.faces[:, fe_local].reshape(-1, 2)  # faces are sorted rows
        face_edges = _row_lookup(edges, face_edge_pairs).reshape(-1, 3)
        return edges, face_edges

    @cached_property
    def edges(self) -> np.ndarray:
        """(E, 2) unique edges (sorted vertex pairs, lexicographic rows)."""
        return self._edges_and_face_edges[0]

    @cached_property
    def face_edges(self) -> np.ndarray:
        """(F, 3) edge index of each face's three edges."""
        return self._edges_and_face_edges[1]

    @cached_property
    def edge_face_incidence(self) -> sp.csr_matrix:
        """(E, F) sparse 0/1 matrix: entry (e, f) = 1 when edge e belongs to face f."""
        f = np.repeat(np.arange(self.n_faces), 3)
        e = self.face_edges.reshape(-1)
        return sp.csr_matrix(
            (np.ones(len(e)), (e, f)), shape=(self.n_edges, self.n_faces)
        )

    def edge_faces(self, edge: int) -> np.ndarray:
        """Face indices that contain ``edge``."""
        m = self.edge_face_incidence
        return m.indices[m.indptr[edge] : m.indptr[edge + 1]]

    @cached_property
    def face_pairs_sharing_edge(self) -> np.ndarray:
        """(K, 2) all unordered pairs of distinct faces that share an edge (i < j)."""
        m = self.edge_face_incidence
        counts = np.diff(m.indptr)
        rows = []
        for k in np.unique(counts):
            if k < 2:
                continue
            es = np.flatnonzero(counts == k)
            idx = m.indptr[es][:, None] + np.arange(k)
            fs = m.indices[idx]  # (n_e, k)
            iu, ju = np.triu_indices(k, 1)
            rows.append(np.stack([fs[:, iu].reshape(-1), fs[:, ju].reshape(-1)], axis=1))
        if not rows:
            return np.zeros((0, 2), dtype=np.int64)
        pairs = np.sort(np.concatenate(rows), axis=1)
        return unique_rows(pairs)[0]

    def face_index(self, triangles: np.ndarray) -> np.ndarray:
        """Index into :attr:`faces` of each triangle (any vertex order); -1 where the
        triangle is not a face of the grid."""
        tri = np.sort(np.atleast_2d(np.asarray(triangles, dtype=np.int64)), axis=1)
        return _row_lookup(self.faces, tri)

    # ------------------------------------------------------------- validation
    def _validate_cells(self) -> None:
        scale = float(np.ptp(self.points, axis=0).max()) or 1.0
        vol = self.volumes
        tiny = vol <= 1e-12 * scale**3
        if tiny.any():
            raise MeshError(
                f"{tiny.sum()} tetrahedra have zero volume (first: tet {np.flatnonzero(tiny)[0]})",
                field="tets",
            )
        sorted_tets = np.sort(self.tets, axis=1)
        if len(unique_rows(sorted_tets)[0]) != self.n_tets:
            raise MeshError("duplicate tetrahedra (same four vertices)", field="tets")
        ft = self.face_tets  # raises on non-manifold faces
        inner = np.flatnonzero(ft[:, 1] >= 0)
        if len(inner) == 0:
            return
        # Two tets sharing a face must lie on opposite sides of it (else they overlap:
        # an inverted element).
        p = self.points
        f = self.faces[inner]
        a, b, c = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
        n = np.cross(b - a, c - a)
        loc = self.face_local[inner]
        opp0 = p[self.tets[ft[inner, 0], loc[:, 0]]]
        opp1 = p[self.tets[ft[inner, 1], loc[:, 1]]]
        s0 = np.einsum("ij,ij->i", opp0 - a, n)
        s1 = np.einsum("ij,ij->i", opp1 - a, n)
        overlap = s0 * s1 > 0
        if overlap.any():
            k = inner[np.flatnonzero(overlap)[0]]
            raise MeshError(
                f"{overlap.sum()} pairs of tetrahedra overlap across their shared face "
                f"(inverted elements; first: tets {ft[k, 0]} and {ft[k, 1]} at face {k})",
                field="tets",
            )

    def connected_components(self) -> np.ndarray:
        """(T,) component label of each tet (tets connected through shared faces)."""
        ft = self.face_tets
        inner = ft[:, 1] >= 0
        g = sp.coo_matrix(
            (np.ones(inner.sum()), (ft[inner, 0], ft[inner, 1])),
            shape=(self.n_tets, self.n_tets),
        )
        return sp.csgraph.connected_components(g, directed=False)[1]

    def summary(self) -> dict[str, float | int]:
        """A small dictionary describing the grid (sizes in µm, µm³)."""
        lo, hi = self.bounding_box
        return {
            "points": self.n_points,
            "tets": self.n_tets,
            "faces": self.n_faces,
            "interior_faces": int((~self.is_outer).sum()),
            "outer_faces": int(self.is_outer.sum()),
            "edges": self.n_edges,
            "volume_um3": self.volume,
            "mean_edge_um": self.mean_edge_length,
            "components": int(self.connected_components().max() + 1),
            "bbox_min_um": lo.tolist(),
            "bbox_max_um": hi.tolist(),
        }
