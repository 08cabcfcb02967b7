"""Data-informed start states for the κ field (µm/µs).

A uniform start keeps no magnetisation under the reference-compatible (Robin) boundary,
and its first gradient carries no information on where the membrane is
(``studies/gradient_method/start_gradient.py``). Two cheap facts of the target signal do:

* the apparent diffusion tensor of one sequence at low b (µm²/µs): its principal axes give
  the orientation and elongation of the compartment that holds the magnetisation;
* |S(b = 0)| of that sequence (µm³): how much magnetisation a closed compartment of the
  start state must keep.

:func:`adc_start_kappa` voxelises an ellipsoid (axes ∝ √eigenvalues of the tensor) or a
straight tube (along the principal axis) centred in the grid, and picks its size so that the
simulated |S(b = 0)| matches the target's best. Faces of its surface start as barriers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spinverse.acquisition.protocol import Protocol
from spinverse.errors import ConfigError
from spinverse.mesh.grid import TetGrid
from spinverse.mesh.phantoms import barrier_faces

__all__ = ["StartState", "adc_start_kappa", "apparent_diffusion_tensor"]

StartShape = Literal["adc_ellipsoid", "adc_tube"]


def apparent_diffusion_tensor(signal: np.ndarray, protocol: Protocol, *, sequence: int,
                              bvalue: float = 1000.0) -> np.ndarray:
    """(3, 3) tensor D (µm²/µs) fitted by least squares to the apparent diffusivities
    −ln(|S_b| / |S_0|) / b = ĝᵀ D ĝ of every direction ĝ, for one sequence.

    ``signal`` (n_sequences, n_bvalues, n_directions); ``bvalue`` in s/mm² must be in the
    protocol together with b = 0.
    """
    b = np.asarray(protocol.bvalues, dtype=float)
    zero = np.flatnonzero(b == 0)
    hit = np.flatnonzero(np.isclose(b, bvalue, rtol=1e-9, atol=0))
    if len(zero) == 0 or len(hit) == 0:
        raise ConfigError(f"the ADC tensor needs b = 0 and b = {bvalue:g} s/mm² in the "
                          "protocol", field="bvalues")
    s = np.abs(np.asarray(signal))
    ratio = s[sequence, hit[0]] / s[sequence, zero[0]]
    if np.any(ratio <= 0) or not np.all(np.isfinite(ratio)):
        raise ConfigError("the signal must be positive and finite at b = 0 and at "
                          f"b = {bvalue:g} s/mm² for the ADC tensor", field="signal")
    adc = -np.log(ratio) / bvalue  # s/mm² = µs/µm² → µm²/µs
    g = np.asarray(protocol.directions, dtype=float)
    design = np.stack([g[:, 0] ** 2, g[:, 1] ** 2, g[:, 2] ** 2, 2 * g[:, 0] * g[:, 1],
                       2 * g[:, 0] * g[:, 2], 2 * g[:, 1] * g[:, 2]], axis=1)
    if np.linalg.matrix_rank(design) < 6:
        raise ConfigError("the ADC tensor needs at least 6 non-degenerate directions",
                          field="directions")
    d = np.linalg.lstsq(design, adc, rcond=None)[0]
    return np.array([[d[0], d[3], d[4]], [d[3], d[1], d[5]], [d[4], d[5], d[2]]])


@dataclass(frozen=True)
class StartState:
    """A start κ (F,) µm/µs with how it was chosen."""

    kappa: np.ndarray
    inside: np.ndarray  # (T,) bool: tets of the start compartment
    size: float  # ellipsoid scale or tube radius, µm
    s0: float  # its simulated |S(b = 0)|, µm³
    s0_target: float
    tensor: np.ndarray  # (3, 3) µm²/µs


def _shape_metric(grid: TetGrid, tensor: np.ndarray, shape: StartShape) -> np.ndarray:
    """Per tet, a 'radius' (µm) in the shape's metric: the region is ``metric < size``."""
    values, vectors = np.linalg.eigh(0.5 * (tensor + tensor.T))
    rel = grid.tet_centroids - 0.5 * (grid.points.min(0) + grid.points.max(0))
    if shape == "adc_tube":
        axis = vectors[:, -1]
        return np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    axes = np.sqrt(np.maximum(values, 1e-12 * max(values.max(), 1e-30)))
    return np.linalg.norm((rel @ vectors) / (axes / axes.max()), axis=1)


def adc_start_kappa(
    grid: TetGrid,
    signal: np.ndarray,
    protocol: Protocol,
    *,
    outer_boundary: str = "robin",
    shape: StartShape = "adc_ellipsoid",
    sequence: int | None = None,
    bvalue: float = 1000.0,
    kappa_barrier: float = 2e-5,
    kappa_open: float = 3e-2,
    sizing_kappa: tuple[float, float] = (1e-5, 0.1),
) -> StartState:
    """Start κ from the target's ADC tensor and |S(b = 0)| (see the module docstring).

    ``sequence`` defaults to the one with the longest echo time (the least magnetisation
    left outside the compartment). The size is found by bisection over the nested regions;
    each costs one forward simulation of that sequence at b = 0 only (one direction), with
    ``sizing_kappa`` (membrane, elsewhere) µm/µs: the leak through the membrane over a long
    sequence depends strongly on its κ. The start itself uses the softer ``kappa_barrier``
    / ``kappa_open``, away from the flat ends of the parameterisation.
    """
    from spinverse.forward import simulate_signal

    if shape not in ("adc_ellipsoid", "adc_tube"):
        raise ConfigError(f"unknown start shape {shape!r}", field="start")
    if sequence is None:
        sequence = int(np.argmax([s.echo_time for s in protocol.sequences]))
    tensor = apparent_diffusion_tensor(signal, protocol, sequence=sequence, bvalue=bvalue)
    zero = int(np.flatnonzero(np.asarray(protocol.bvalues) == 0)[0])
    s0_target = float(np.abs(signal[sequence, zero]).mean())
    metric = _shape_metric(grid, tensor, shape)
    sub = protocol.replace(sequences=(protocol.sequences[sequence],),
                           bvalues=np.zeros(1), directions=protocol.directions[:1])
    # Candidate regions: every distinct nested set {metric ≤ size}. |S0| grows with the
    # region, so bisect for the crossing, then take the best of its neighbours.
    # Sizes closer than 1 % of an edge are one candidate: a nearly isotropic tensor must
    # not split the shells of a symmetric grid tet by tet.
    tol = 1e-2 * grid.mean_edge_length
    metric = tol * np.round(metric / tol)
    sizes = np.unique(metric)
    cache: dict[int, StartState] = {}

    def state(i: int) -> StartState:
        if i not in cache:
            inside = metric <= sizes[i] + 0.5 * tol
            surface = barrier_faces(grid, inside)
            ideal = np.full(grid.n_faces, sizing_kappa[1])
            ideal[surface] = sizing_kappa[0]
            s0 = float(np.abs(simulate_signal(grid, ideal, sub, outer_boundary=outer_boundary)
                              .signal[0, 0, 0]))
            kappa = np.full(grid.n_faces, kappa_open)
            kappa[surface] = kappa_barrier
            cache[i] = StartState(kappa, inside, float(sizes[i]), s0, s0_target, tensor)
        return cache[i]

    lo, hi = 0, len(sizes) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if state(mid).s0 < s0_target:
            lo = mid
        else:
            hi = mid
    near = range(max(lo - 2, 0), min(hi + 3, len(sizes)))
    best = min((state(i) for i in near), key=lambda st: abs(st.s0 - s0_target))
    return best
