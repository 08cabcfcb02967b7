"""Mesh-based geometric priors on the per-face field (torch, differentiable).

Each prior is a small function of log10 κ (κ in µm/µs) or of the soft barrier indicator
p_f = σ((−3 − log10 κ_f)/0.5) and of the grid topology (:class:`PriorTopology`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spinverse.mesh.grid import TetGrid


@dataclass(frozen=True)
class PriorTopology:
    """Index arrays the priors need: face pairs sharing an edge (K, 2), edge–face incidence
    entries (``inc_edge``, ``inc_face``) and the number of faces at each edge (E,)."""

    pairs: torch.Tensor
    inc_edge: torch.Tensor
    inc_face: torch.Tensor
    faces_per_edge: torch.Tensor
    n_edges: int

    @classmethod
    def from_grid(cls, grid: TetGrid) -> PriorTopology:
        inc = grid.edge_face_incidence.tocoo()
        counts = np.bincount(inc.row, minlength=grid.n_edges)
        return cls(
            pairs=torch.from_numpy(np.ascontiguousarray(grid.face_pairs_sharing_edge)),
            inc_edge=torch.from_numpy(inc.row.astype(np.int64)),
            inc_face=torch.from_numpy(inc.col.astype(np.int64)),
            faces_per_edge=torch.from_numpy(counts.astype(np.float64)),
            n_edges=grid.n_edges,
        )


def barrier_indicator(log10_kappa: torch.Tensor, threshold_log10: float = -3.0,
                      width: float = 0.5) -> torch.Tensor:
    """Soft barrier indicator p_f = σ((threshold − log10 κ_f)/width) ∈ (0, 1)."""
    return torch.sigmoid((threshold_log10 - log10_kappa) / width)


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    ax = x.abs()
    return torch.where(ax <= delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def continuity_prior(log10_kappa: torch.Tensor, p: torch.Tensor, topo: PriorTopology,
                     delta: float = 5.0) -> torch.Tensor:
    """Mean over edge-sharing face pairs of Huber_δ(log10 κ_i − log10 κ_j) (δ in decades),
    gated by (1 − |p_i − p_j|), detached, so sharp barrier boundaries cost nothing."""
    i, j = topo.pairs[:, 0], topo.pairs[:, 1]
    gate = (1.0 - (p[i] - p[j]).abs()).detach()
    return (gate * _huber(log10_kappa[i] - log10_kappa[j], delta)).mean()


def edge_counts(p: torch.Tensor, topo: PriorTopology) -> torch.Tensor:
    """k_e = Σ_{f ∋ e} p_f for every edge (E,)."""
    k = torch.zeros(topo.n_edges, dtype=p.dtype)
    return k.index_add(0, topo.inc_edge, p[topo.inc_face])


def manifold_prior(p: torch.Tensor, topo: PriorTopology,
                   temperature: float = 0.1) -> torch.Tensor:
    """Soft closed-manifold prior: at every edge k_e should be 0 or 2. Mean over edges of
    softmin_T(k², (k − 2)²) / (faces at the edge), softmin_T = −T logsumexp(−x/T)."""
    k = edge_counts(p, topo)
    both = torch.stack([k * k, (k - 2.0) ** 2])
    soft = -temperature * torch.logsumexp(-both / temperature, dim=0)
    return (soft / topo.faces_per_edge).mean()


def edge_coherence_prior(p: torch.Tensor, topo: PriorTopology) -> torch.Tensor:
    """Mean (p_i − p_j)² over edge-sharing face pairs."""
    i, j = topo.pairs[:, 0], topo.pairs[:, 1]
    return ((p[i] - p[j]) ** 2).mean()


def binarisation_prior(p: torch.Tensor) -> torch.Tensor:
    """Mean p (1 − p): pushes the indicator to 0 or 1."""
    return (p * (1.0 - p)).mean()
