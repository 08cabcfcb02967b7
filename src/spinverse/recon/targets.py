"""What a reconstruction fits, and how targets are made: a benchmark case simulated (on
the benchmark grid or a refined one), noise added, or one voxel of a measured NIfTI image
rescaled to the grid (signals in µm³, κ in µm/µs)."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from spinverse.acquisition.protocol import Protocol, published_protocol
from spinverse.errors import ConfigError, InputFileError

if TYPE_CHECKING:
    from spinverse.mesh.grid import TetGrid

__all__ = ["Target", "case_target", "continuous_tissue", "nifti_target", "reference_faces",
           "refined_model", "with_noise"]


@dataclass(frozen=True)
class Target:
    """What is fitted: ``signal`` (n_seq, n_b, n_dir) complex µm³ for ``protocol``, with
    the outer-boundary mode of the model used to fit it."""

    signal: np.ndarray
    protocol: Protocol
    outer_boundary: str = "reflecting"

    @property
    def s0(self) -> np.ndarray:
        """|S(b=0)| (n_seq, n_dir), µm³: the normaliser of the data term."""
        zero = np.flatnonzero(self.protocol.bvalues == 0)
        if len(zero) == 0:
            raise ConfigError("the target protocol needs a b = 0 row for normalisation",
                              field="bvalues")
        return np.abs(self.signal[:, zero[0], :])


def with_noise(target: Target, *, kind: str, snr: float, seed: int) -> Target:
    """The target with Rician or Gaussian noise of SNR ``snr`` (relative to |S(b=0)|)."""
    from spinverse.recon.noise import add_noise

    return Target(add_noise(target.signal, snr=snr, kind=kind, seed=seed), target.protocol,
                  target.outer_boundary)


def refined_model(grid: TetGrid, kappa: np.ndarray, levels: int, *,
                  new_faces: float) -> tuple[TetGrid, np.ndarray]:
    """The grid refined ``levels`` times (1:8 each) and its κ (µm/µs): faces on an original
    face keep its κ, new faces get ``new_faces``. The same surfaces, finer."""
    from spinverse.mesh.refine import refine, refine_kappa

    fine = refine(grid, levels)
    return fine.grid, refine_kappa(fine, grid, kappa, new_faces=new_faces)


def continuous_tissue(grid: TetGrid, kappa: np.ndarray, open_kappa: float) -> np.ndarray:
    """κ (µm/µs) with every inner face at ``open_kappa`` or above set to ∞: the tissue is
    continuous off the membranes (the P1 nodes merge there, so a sharp shape costs only
    the nodes it needs). Outer faces keep their κ (the Robin leak)."""
    k = np.array(kappa, dtype=np.float64)
    k[(~grid.is_outer) & (k >= open_kappa)] = np.inf
    return k


def case_target(name: str, *, protocol: Protocol | None = None,
                outer_boundary: str = "robin",
                refine: int = 0, continuous: bool = True) -> tuple[TetGrid, Target, np.ndarray]:
    """A public benchmark case's target: its signal simulated with the published protocol
    and, by default, the reference-compatible (Robin) boundary. Returns (grid, target,
    barrier faces).

    ``refine`` > 0 simulates the signal on the benchmark grid refined that many times (1:8
    per level; the same barrier surface, κ 1e-5 µm/µs on it), so that the target is not an
    inverse crime; the grid returned is still the benchmark grid, on which the
    reconstruction runs. Off the barrier the refined tissue is ``continuous`` (κ = ∞ on
    inner faces: the physical limit; at refine 2 it takes 19 s instead of 52 min with the
    benchmark's κ = 0.1 on every face, which ``continuous=False`` keeps); outer faces keep
    κ = 0.1."""
    from spinverse.forward import simulate_signal
    from spinverse.mesh import benchmark
    from spinverse.mesh.phantoms import OTHER_KAPPA

    full = benchmark.resolve_case(name)
    grid = benchmark.benchmark_grid()
    kappa = benchmark.case_kappa(full)
    prot = protocol or published_protocol()
    sim_grid = grid
    if refine:
        sim_grid, kappa = refined_model(grid, kappa, refine, new_faces=OTHER_KAPPA)
        if continuous:
            kappa = continuous_tissue(sim_grid, kappa, OTHER_KAPPA)
    sim = simulate_signal(sim_grid, kappa, prot, outer_boundary=outer_boundary)
    return grid, Target(sim.signal, prot, outer_boundary), benchmark.case_barrier(full)


def nifti_target(image: str | PathLike[str], bvals: str | PathLike[str],
                 bvecs: str | PathLike[str], protocol: str | PathLike[str], grid: TetGrid, *,
                 voxel: tuple[int, int, int] | None = None,
                 mask: str | PathLike[str] | None = None) -> Target:
    """The target of one voxel (``voxel`` i, j, k) or of a mask's mean of a 4-D NIfTI image
    with FSL ``bvals``/``bvecs``; ``protocol`` gives D, ℓ and the one sequence. Rescaled so
    that its b = 0 mean equals the grid volume (µm³, the b = 0 signal of a closed sample),
    reflecting outer boundary. Needs the ``nifti`` extra."""
    from spinverse.acquisition.protocol import load_protocol
    from spinverse.io.nifti import read_voxel_signal

    if (voxel is None) == (mask is None):
        raise ConfigError("give exactly one of a voxel (i, j, k) and a mask",
                          source=str(image))
    template = load_protocol(protocol)
    if template.n_sequences != 1:
        raise ConfigError(f"a NIfTI target has one sequence; the protocol has "
                          f"{template.n_sequences}", source=str(protocol))
    signal, prot = read_voxel_signal(image, bvals, bvecs, voxel, mask,
                                     protocol_template=template)
    zero = np.flatnonzero(prot.bvalues == 0)
    if len(zero) == 0:
        raise InputFileError("a NIfTI target needs b = 0 volumes (the signal's scale)",
                             source=str(bvals))
    s0 = float(np.abs(signal[:, zero[0], :]).mean())
    if not np.isfinite(s0) or s0 <= 0:
        raise InputFileError(f"the b = 0 signal is {s0:g}; cannot normalise",
                             source=str(image))
    return Target(signal * (grid.volume / s0), prot, "reflecting")


def reference_faces(grid: TetGrid, faces: np.ndarray | None, kappa: np.ndarray | None,
                    threshold: float = 1e-3) -> np.ndarray | None:
    """The true barrier faces (κ below ``threshold`` µm/µs) that a signal file records with
    its model's ``faces``/``kappa``, in ``grid``'s face order; None when the file has no
    model or its faces are not exactly the grid's."""
    if kappa is None or faces is None:
        return None
    idx = grid.face_index(faces)
    if len(idx) != grid.n_faces or not np.all(idx >= 0):
        return None
    truth = np.empty(grid.n_faces)
    truth[idx] = kappa
    return np.flatnonzero(truth < threshold)
