"""Mesh-based geometric priors on the per-face field (torch float64, differentiable).

Each prior is a small pure function of log10 κ (κ in µm/µs) or of the soft barrier
indicator p_f = σ((−3 − log10 κ_f)/0.5) ∈ (0, 1) and of index arrays cached once per grid
in a :class:`PriorTopology`. Every prior returns a scalar tensor and is non-negative (the
manifold prior up to rounding, see :func:`manifold_prior`); all normalisations are means,
so the values do not grow with the grid size.

Normalisations (K = number of unordered pairs of distinct faces that share an edge,
E = number of grid edges, F = number of faces):

* continuity, edge coherence: mean over the K pairs;
* manifold: per-edge value divided by the number of grid faces at that edge, mean over E;
* binarisation: mean over F.

Configs weight priors by name: :data:`PRIORS` maps each name to a term
``(log10_kappa, p, topology) → scalar``; :func:`register_prior` adds one (one declaration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from spinverse.mesh.grid import TetGrid

__all__ = [
    "PriorTopology",
    "barrier_indicator",
    "huber",
    "continuity_prior",
    "edge_counts",
    "manifold_prior",
    "edge_coherence_prior",
    "binarisation_prior",
    "PRIORS",
    "register_prior",
]


@dataclass(frozen=True, eq=False)
class PriorTopology:
    """Index arrays the priors need (int64 / float64 torch tensors).

    Attributes
    ----------
    pairs : (K, 2) faces i < j sharing an edge (every unordered pair at every edge; two
        faces share at most one edge, so no pair is repeated).
    edge_faces : (E, M) faces at each edge, padded with ``n_faces`` (an index one past the
        last face, read as p = 0) to the largest number M of faces at an edge.
    faces_per_edge : (E,) float64 number of grid faces at each edge (≥ 1).
    face_areas : (F,) float64 face areas in µm².
    n_faces, n_edges : sizes.
    """

    pairs: torch.Tensor
    edge_faces: torch.Tensor
    faces_per_edge: torch.Tensor
    face_areas: torch.Tensor
    n_faces: int
    n_edges: int

    @classmethod
    def from_grid(cls, grid: TetGrid) -> PriorTopology:
        """Build the index arrays from a grid's topology (vectorised)."""
        inc = grid.edge_face_incidence.tocsr()
        inc.sort_indices()
        counts = np.diff(inc.indptr)
        width = int(counts.max(initial=0))
        # Position of each incidence entry within its edge's row.
        rows = np.repeat(np.arange(grid.n_edges), counts)
        cols = np.arange(len(inc.indices)) - np.repeat(inc.indptr[:-1], counts)
        padded = np.full((grid.n_edges, width), grid.n_faces, dtype=np.int64)
        padded[rows, cols] = inc.indices
        return cls(
            pairs=torch.from_numpy(np.ascontiguousarray(grid.face_pairs_sharing_edge,
                                                        dtype=np.int64)),
            edge_faces=torch.from_numpy(padded),
            faces_per_edge=torch.from_numpy(counts.astype(np.float64)),
            face_areas=torch.from_numpy(np.array(grid.face_areas, dtype=np.float64)),
            n_faces=grid.n_faces,
            n_edges=grid.n_edges,
        )

    @property
    def n_pairs(self) -> int:
        """Number K of edge-sharing face pairs."""
        return int(self.pairs.shape[0])

    def to(self, device: torch.device | str) -> PriorTopology:
        """A copy with every tensor on ``device``."""
        return PriorTopology(
            pairs=self.pairs.to(device), edge_faces=self.edge_faces.to(device),
            faces_per_edge=self.faces_per_edge.to(device),
            face_areas=self.face_areas.to(device), n_faces=self.n_faces, n_edges=self.n_edges)


def _check_faces(x: torch.Tensor, topo: PriorTopology, name: str) -> None:
    if x.shape != (topo.n_faces,):
        raise ValueError(f"{name} must have shape ({topo.n_faces},), got {tuple(x.shape)}")


# ------------------------------------------------------------------ indicator
def barrier_indicator(log10_kappa: torch.Tensor, threshold_log10: float = -3.0,
                      width: float = 0.5) -> torch.Tensor:
    """Soft barrier indicator p_f = σ((threshold − log10 κ_f)/width) ∈ (0, 1).

    ``threshold_log10`` and ``width`` in decades (κ in µm/µs); p = ½ at κ = 1e-3,
    p = σ(4) ≈ 0.982 at κ = 1e-5 and σ(−4) ≈ 0.018 at κ = 0.1 for the defaults."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return torch.sigmoid((threshold_log10 - log10_kappa) / width)


# ----------------------------------------------------------------- continuity
def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber function: ½x² for |x| ≤ δ, δ(|x| − ½δ) beyond (C¹)."""
    ax = x.abs()
    return torch.where(ax <= delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def continuity_prior(log10_kappa: torch.Tensor, p: torch.Tensor, topo: PriorTopology,
                     delta: float = 5.0) -> torch.Tensor:
    """Gated Huber continuity of log10 κ across edges.

    (1/K) Σ_{(i,j) sharing an edge} (1 − |p_i − p_j|) · Huber_δ(log10 κ_i − log10 κ_j),
    δ in decades (5 by default). The gate is detached, so no gradient reaches ``p`` and a
    sharp barrier/non-barrier boundary (|p_i − p_j| ≈ 1) is almost free; undecided
    neighbours are smoothed. Zero for a constant field."""
    _check_faces(log10_kappa, topo, "log10_kappa")
    _check_faces(p, topo, "p")
    if topo.n_pairs == 0:
        return log10_kappa.sum() * 0.0
    i, j = topo.pairs[:, 0], topo.pairs[:, 1]
    gate = (1.0 - (p[i] - p[j]).abs()).detach()
    return (gate * huber(log10_kappa[i] - log10_kappa[j], delta)).mean()


# ------------------------------------------------------------------- manifold
def edge_counts(p: torch.Tensor, topo: PriorTopology) -> torch.Tensor:
    """Soft number of barrier faces at every edge, k_e = Σ_{f ∋ e} p_f (E,)."""
    _check_faces(p, topo, "p")
    padded = torch.cat([p, p.new_zeros(1)])
    return padded[topo.edge_faces].sum(dim=1)


def manifold_prior(p: torch.Tensor, topo: PriorTopology,
                   temperature: float = 0.1) -> torch.Tensor:
    """Soft closed-manifold prior: at every edge k_e = Σ_{f∋e} p_f should be 0 (no
    surface) or 2 (a closed, non-branching surface).

    (1/E) Σ_e softmin_T(k_e², (k_e − 2)²) / n_e with softmin_T(x, y) =
    −T·logsumexp(−x/T, −y/T), T = ``temperature``, n_e the number of grid faces at e.
    Per edge: ≈ 0 at k ∈ {0, 2}, 1 − T ln 2 ≈ 0.93 at k = 1 (open edge), ≈ 1 at k = 3
    (branching). The global minimum of softmin is −T·ln(1 + e^(−4/T)) (at k = 0, 2),
    which is −4e-19 for T = 0.1 and rounds to 0 in float64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    k = edge_counts(p, topo)
    both = torch.stack([k * k, (k - 2.0) ** 2])
    soft = -temperature * torch.logsumexp(-both / temperature, dim=0)
    return (soft / topo.faces_per_edge.to(soft)).mean()


# ------------------------------------------------------------------ off by default
def edge_coherence_prior(p: torch.Tensor, topo: PriorTopology) -> torch.Tensor:
    """(1/K) Σ_{(i,j) sharing an edge} (p_i − p_j)² (∈ [0, 1])."""
    _check_faces(p, topo, "p")
    if topo.n_pairs == 0:
        return p.sum() * 0.0
    i, j = topo.pairs[:, 0], topo.pairs[:, 1]
    return ((p[i] - p[j]) ** 2).mean()


def binarisation_prior(p: torch.Tensor) -> torch.Tensor:
    """Mean over faces of p (1 − p) (∈ [0, ¼]): pushes the indicator to 0 or 1."""
    return (p * (1.0 - p)).mean()


# ------------------------------------------------------------------ registry
#: A prior term: (log10 κ (F,), barrier indicator p (F,), topology) → scalar tensor.
PriorTerm = Callable[[torch.Tensor, torch.Tensor, PriorTopology], torch.Tensor]

#: Priors by the name configs weight them with, filled by :func:`register_prior`.
PRIORS: dict[str, PriorTerm] = {}


def register_prior(name: str, term: PriorTerm) -> PriorTerm:
    """Make ``term(log10_kappa, p, topology)`` a prior that configs weight by ``name``."""
    if not name.isidentifier():
        raise ValueError(f"a prior name must be an identifier, got {name!r}")
    if PRIORS.get(name, term) is not term:
        raise ValueError(f"prior {name!r} is already registered")
    PRIORS[name] = term
    return term


register_prior("continuity", lambda logk, p, topo: continuity_prior(logk, p, topo))
register_prior("manifold", lambda logk, p, topo: manifold_prior(p, topo))
register_prior("coherence", lambda logk, p, topo: edge_coherence_prior(p, topo))
register_prior("binarisation", lambda logk, p, topo: binarisation_prior(p))
