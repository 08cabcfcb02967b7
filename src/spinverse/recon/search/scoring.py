"""Exact data loss of sharp shapes, memoised and evaluated in parallel.

:class:`RegionModel` turns a region (tet set) into its κ field (membrane on the region's
surface, see :class:`~spinverse.recon.search.regions.RegionSpace`), simulates the full
protocol with the matrix formalism and returns |S| / S0_target (the published
normalisation: each signal divided by the target's |S(b=0)| of its sequence and
direction). The data loss is the published term over every sequence,
100 × mean((|S|/S0_t − |T|/S0_t)²).

:class:`Evaluator` caches every simulated region (so a shape is simulated once per run, and
a resumed run replays from its checkpoint without simulating), counts the distinct
regions a run asked for (its budget) and spreads new regions over worker processes, each
on one BLAS thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from spinverse.mesh.grid import TetGrid
from spinverse.mesh.refine import RefinedGrid, coarse_face_of
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.targets import Target, continuous_tissue

__all__ = ["RegionModel", "Evaluator", "default_workers"]


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, eq=False)
class RegionModel:
    """The sharp-shape forward model of a target.

    ``target`` is a :class:`~spinverse.recon.reconstructor.Target` (signal, protocol and
    outer-boundary mode). ``weights`` (n_seq,), optional: per-sequence weights of the data
    term (default equal, the published term).

    ``refined``: simulate each region (a set of the space's tets) on this refinement of the
    grid instead (:func:`spinverse.mesh.refine.refine`; the same surface, finer physics).
    ``continuous``: inner faces off the membrane get κ = ∞ instead of ``other_kappa``
    (continuous tissue: the nodes merge, far fewer unknowns, the physical limit).
    """

    space: RegionSpace
    target: Target
    weights: np.ndarray | None = None
    refined: RefinedGrid | None = None
    continuous: bool = False

    @property
    def grid(self) -> TetGrid:
        """The grid whose tets make the regions."""
        return self.space.grid

    @cached_property
    def _fine_source(self) -> np.ndarray | None:
        if self.refined is None:
            return None
        return coarse_face_of(self.refined, self.grid)

    def simulation(self, inside: np.ndarray) -> tuple[TetGrid, np.ndarray]:
        """The grid a region is simulated on and its κ (µm/µs) there."""
        grid, k = self.grid, self.space.kappa(inside)
        src = self._fine_source
        if self.refined is not None and src is not None:
            grid = self.refined.grid
            fine = np.full(grid.n_faces, self.space.other_kappa)
            fine[src >= 0] = k[src[src >= 0]]
            k = fine
        if self.continuous:
            k = continuous_tissue(grid, k, self.space.other_kappa)
        return grid, k

    @property
    def normalised_target(self) -> np.ndarray:
        """(n_seq · n_b · n_dir,) |T| / S0_target."""
        t = self.target
        return (np.abs(t.signal) / t.s0[:, None, :]).ravel()

    def signal(self, inside: np.ndarray) -> np.ndarray:
        """(n_seq · n_b · n_dir,) |S| / S0_target of a region (one thread)."""
        from spinverse.forward import simulate_signal

        t = self.target
        grid, kappa = self.simulation(inside)
        s = simulate_signal(grid, kappa, t.protocol, outer_boundary=t.outer_boundary,
                            n_threads=1).signal
        return (np.abs(s) / t.s0[:, None, :]).ravel()

    def residual_weights(self) -> np.ndarray:
        """(n_seq · n_b · n_dir,) weights w such that loss = 100 · Σ w r² (Σ w = 1)."""
        shape = self.target.signal.shape
        w = np.ones(shape[0]) if self.weights is None else np.asarray(self.weights, float)
        per = np.broadcast_to((w / w.sum())[:, None, None], shape) / (shape[1] * shape[2])
        return per.ravel().copy()


# Worker processes hold one model each (set by the pool's initializer).
_WORKER_MODEL: RegionModel | None = None


def _init_worker(model: RegionModel) -> None:
    global _WORKER_MODEL
    _WORKER_MODEL = model


def _simulate_packed(packed: bytes) -> np.ndarray:
    model = _WORKER_MODEL
    assert model is not None
    inside = np.unpackbits(np.frombuffer(packed, np.uint8), count=model.grid.n_tets
                           ).astype(bool)
    return model.signal(inside)


@dataclass(eq=False)
class Evaluator:
    """Memoised, parallel data loss of regions.

    ``workers`` processes simulate new regions (1: in this process). ``on_new(n)`` is
    called after each batch with the number of new simulations (progress bars).
    """

    model: RegionModel
    workers: int = 1
    on_new: Callable[[int], None] | None = None
    cache: dict[bytes, np.ndarray] = field(default_factory=dict)
    requested: set[bytes] = field(default_factory=set)
    simulated: int = 0

    def __post_init__(self) -> None:
        self._t = self.model.normalised_target
        self._w = 100.0 * self.model.residual_weights()
        self._pool: ProcessPoolExecutor | None = None

    @property
    def target(self) -> np.ndarray:
        """The normalised target the losses compare with (the model's, less any
        :meth:`correct` offset)."""
        return self._t

    def correct(self, offset: np.ndarray | None) -> None:
        """Score every signal as if ``offset`` (n_seq · n_b · n_dir,) were added to it: a
        defect correction of this model by a better one (the target is shifted by
        −offset; cached signals stay valid). ``None`` removes it."""
        t = self.model.normalised_target
        if offset is None:
            self._t = t
            return
        offset = np.asarray(offset, dtype=float)
        if offset.shape != t.shape:
            raise ValueError(f"offset shape {offset.shape} != signal shape {t.shape}")
        self._t = t - offset

    # -------------------------------------------------------------- plumbing
    @staticmethod
    def key(inside: np.ndarray) -> bytes:
        return np.packbits(np.asarray(inside, dtype=bool)).tobytes()

    def region(self, key: bytes) -> np.ndarray:
        return np.unpackbits(np.frombuffer(key, np.uint8), count=self.model.grid.n_tets
                             ).astype(bool)

    def _map(self, keys: list[bytes]) -> list[np.ndarray]:
        if self.workers <= 1 or len(keys) == 1:
            return [self.model.signal(self.region(k)) for k in keys]
        if self._pool is None:
            # fork: workers start in milliseconds and need no importable __main__.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_init_worker,
                                             initargs=(self.model,))
        chunk = max(1, len(keys) // (4 * self.workers))
        return list(self._pool.map(_simulate_packed, keys, chunksize=chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ evaluation
    @property
    def n_requested(self) -> int:
        """Distinct regions asked for so far in this run (the search budget counts
        these; identical when a run is replayed from a checkpoint)."""
        return len(self.requested)

    def signals(self, regions: Iterable[np.ndarray]) -> list[np.ndarray]:
        """|S| / S0_target of each region (see :meth:`RegionModel.signal`)."""
        keys = [self.key(r) for r in regions]
        new = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if new:
            for k, s in zip(new, self._map(new), strict=True):
                self.cache[k] = s
            self.simulated += len(new)
        fresh = len(set(keys) - self.requested)
        self.requested.update(keys)
        if self.on_new is not None and fresh:
            self.on_new(fresh)
        return [self.cache[k] for k in keys]

    def loss_of(self, signal: np.ndarray) -> float:
        """The data term of a normalised signal."""
        return float(np.dot(self._w, (signal - self._t) ** 2))

    def losses(self, regions: Iterable[np.ndarray]) -> np.ndarray:
        return np.array([self.loss_of(s) for s in self.signals(list(regions))])

    def loss(self, inside: np.ndarray) -> float:
        return self.loss_of(self.signals([inside])[0])

    def known_loss(self, key: bytes) -> float:
        return self.loss_of(self.cache[key])

    # ---------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write the cache (regions and their signals) atomically to ``path`` (.npz)."""
        keys = list(self.cache)
        n = len(np.frombuffer(keys[0], np.uint8)) if keys else 0
        packed = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), n)
        signals = np.array([self.cache[k] for k in keys]).reshape(len(keys), -1)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, regions=packed, signals=signals, n_tets=self.model.grid.n_tets)
        os.replace(tmp, path)

    def load(self, path: Path) -> int:
        """Add the cache saved at ``path``; returns how many regions it held."""
        with np.load(path) as data:
            if int(data["n_tets"]) != self.model.grid.n_tets:
                return 0
            for row, s in zip(data["regions"], data["signals"], strict=True):
                self.cache[row.tobytes()] = s
            return len(data["regions"])
