"""The membrane's permeability κ (µm/µs) with the geometry given, and its uncertainty.

The membrane is a set of grid faces; every other face keeps ``other_kappa`` (0.1 µm/µs in
the benchmark's convention). The fitted parameters are θ = log10 κ, one shared by all
membrane faces or one per enclosed region (the faces that bound it), within 1e-7…1e-2
µm/µs. The data term is the published one over every sequence (residuals of |S| / S0 of
the target). A coarse scan over θ gives the start; then bounded Gauss–Newton
(``scipy.optimize.least_squares``, trust region) with the Jacobian ∂(|S|/S0)/∂θ by central
differences of the matrix-formalism forward model (step 1e-4 decades; checked against the
exact adjoint gradient of :func:`spinverse.simulate` in the tests).

Uncertainty: the Cramér–Rao bound at a given SNR (noise σ = |S(b = 0)| / SNR per sequence
and direction, as :func:`~spinverse.recon.noise.add_noise` draws it), for Gaussian noise on
the magnitude or for Rician magnitudes (whose Fisher information per measurement is lower
at low signal-to-noise, :func:`rician_fisher_factor`). The exchange time of a region is
τ = V / (κ A): its volume over κ times the area of its membrane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np

from spinverse.errors import ConfigError, MeshError
from spinverse.mesh.grid import TetGrid
from spinverse.recon.targets import Target

__all__ = ["MembraneModel", "PermeabilityFit", "fit_permeability", "rician_fisher_factor",
           "crlb", "LOG10_BOUNDS"]

#: Bounds of log10 κ (κ in µm/µs).
LOG10_BOUNDS = (-7.0, -2.0)
#: Central-difference step of the Jacobian in log10 κ (decades).
FD_STEP = 1e-4


@cache
def _rician_table() -> tuple[np.ndarray, np.ndarray]:
    """Fisher factor of a Rician magnitude on a grid of amplitude/σ (see below)."""
    from scipy.special import i0e, i1e

    nus = np.concatenate([np.linspace(0.0, 10.0, 201), np.linspace(10.5, 60.0, 100)])
    x = np.linspace(0.0, 80.0, 16001)
    dx = x[1] - x[0]
    out = []
    for nu in nus:
        # p(x) = x exp(−(x² + ν²)/2) I0(xν) (σ = 1); score ∂ν log p = x I1/I0 − ν.
        logp = np.log(np.maximum(x, 1e-300)) - 0.5 * (x - nu) ** 2 + np.log(i0e(x * nu))
        p = np.exp(logp)
        ratio = np.where(x * nu > 0, i1e(x * nu) / i0e(x * nu), 0.0)
        score = x * ratio - nu
        out.append(float(np.sum(p * score**2) * dx))
    return nus, np.array(out)


def rician_fisher_factor(amplitude_over_sigma: np.ndarray) -> np.ndarray:
    """Fisher information on a Rician magnitude's amplitude ν, × σ²: 1 for a Gaussian; below
    1 at low ν/σ (0 at ν = 0), → 1 for ν/σ ≫ 1."""
    nus, table = _rician_table()
    a = np.asarray(amplitude_over_sigma, dtype=float)
    return np.where(a >= nus[-1], 1.0, np.interp(a, nus, table))


@dataclass(frozen=True, eq=False)
class MembraneModel:
    """κ (F,) from θ = log10 κ per group of membrane faces, and the normalised signal.

    ``membrane`` (B,) face indices, ``groups`` (B,) group of each (0 … n − 1)."""

    grid: TetGrid
    target: Target
    membrane: np.ndarray
    groups: np.ndarray
    other_kappa: float = 0.1

    @property
    def n_params(self) -> int:
        return int(self.groups.max()) + 1

    def kappa(self, theta: np.ndarray) -> np.ndarray:
        k = np.full(self.grid.n_faces, float(self.other_kappa))
        k[self.membrane] = 10.0 ** np.asarray(theta, float)[self.groups]
        return k

    def signal(self, theta: np.ndarray) -> np.ndarray:
        """(n_seq · n_b · n_dir,) |S| / S0_target."""
        from spinverse.forward import simulate_signal

        t = self.target
        s = simulate_signal(self.grid, self.kappa(theta), t.protocol,
                            outer_boundary=t.outer_boundary).signal
        return (np.abs(s) / t.s0[:, None, :]).ravel()

    @property
    def normalised_target(self) -> np.ndarray:
        t = self.target
        return (np.abs(t.signal) / t.s0[:, None, :]).ravel()

    def jacobian(self, theta: np.ndarray, step: float = FD_STEP) -> np.ndarray:
        """(n_meas, n_params) ∂(|S|/S0)/∂θ by central differences."""
        theta = np.asarray(theta, float)
        cols = []
        for j in range(self.n_params):
            e = np.zeros_like(theta)
            e[j] = step
            cols.append((self.signal(theta + e) - self.signal(theta - e)) / (2 * step))
        return np.stack(cols, axis=1)


def crlb(jac: np.ndarray, signal: np.ndarray, s0_ratio: np.ndarray, snr: float,
         noise: Literal["rician", "gaussian"] = "rician") -> np.ndarray:
    """Covariance bound (n_params, n_params) of θ from the Jacobian (n_meas, n_params) of
    the normalised magnitudes ``signal`` (n_meas,) = |S| / S0_target, at noise σ = S0/SNR
    per measurement; ``s0_ratio`` (n_meas,) is each measurement's own |S(b=0)| over the
    target's (1 for a noise-free target; the noise σ in normalised units is
    s0_ratio / SNR)."""
    sigma = np.asarray(s0_ratio, float) / snr
    weight = 1.0 / sigma**2
    if noise == "rician":
        weight = weight * rician_fisher_factor(np.abs(signal) / sigma)
    elif noise != "gaussian":
        raise ConfigError(f"unknown noise model {noise!r}; use rician or gaussian",
                          field="noise")
    fisher = jac.T @ (weight[:, None] * jac)
    return np.linalg.pinv(fisher)


@dataclass
class PermeabilityFit:
    """κ per group (µm/µs) with its CRLB standard deviation (None without an SNR), the
    exchange time τ = V/(κA) of each enclosed region (ms), the data loss and the scan."""

    kappa: np.ndarray
    kappa_std: np.ndarray | None
    log10_kappa: np.ndarray
    log10_kappa_std: np.ndarray | None
    exchange_time_ms: np.ndarray
    region_volume: np.ndarray
    region_area: np.ndarray
    data_loss: float
    fitted_signal: np.ndarray
    scan: dict[str, list[float]]
    simulations: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def membrane_groups(grid: TetGrid, membrane: np.ndarray, *, per_region: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Groups of the membrane faces and the enclosed regions: (groups (B,), group of each
    enclosed region (R,), volume (R,) µm³, membrane area around each region (R,) µm²). One
    group for all faces unless ``per_region`` (then one per enclosed region, a face between
    two regions going to the first; faces that bound none in a last group)."""
    import scipy.sparse as sp

    is_mem = np.zeros(grid.n_faces, dtype=bool)
    is_mem[membrane] = True
    ft = grid.face_tets
    link = (ft[:, 1] >= 0) & ~is_mem
    g = sp.coo_matrix((np.ones(link.sum()), (ft[link, 0], ft[link, 1])),
                      shape=(grid.n_tets, grid.n_tets))
    _, label = sp.csgraph.connected_components(g, directed=False)
    leak = np.zeros(label.max() + 1, dtype=bool)
    unlinked = ~link & ~is_mem  # outer faces off the membrane: that component leaks
    leak[label[ft[unlinked, 0]]] = True
    enclosed = np.flatnonzero(~leak)
    region_of = -np.ones(grid.n_tets, dtype=np.int64)
    for r, comp in enumerate(enclosed):
        region_of[label == comp] = r
    n_r = len(enclosed)
    volume = np.array([grid.volumes[region_of == r].sum() for r in range(n_r)])
    # A membrane face belongs to the enclosed region on either side (the first found).
    side = np.where(ft[membrane] >= 0, region_of[np.maximum(ft[membrane], 0)], -1)
    owner = np.where(side[:, 0] >= 0, side[:, 0], side[:, 1])
    bounds = (side[:, :, None] == np.arange(n_r)[None, None, :]).any(axis=1)  # (B, R)
    area = grid.face_areas[membrane] @ bounds
    if per_region:
        groups = np.where(owner >= 0, owner, n_r)
        groups = np.searchsorted(np.unique(groups), groups)
    else:
        groups = np.zeros(len(membrane), dtype=np.int64)
    region_group = np.array([groups[np.flatnonzero(bounds[:, r])[0]] for r in range(n_r)],
                            dtype=np.int64)
    return groups, region_group, volume, area


def fit_permeability(
    grid: TetGrid,
    target: Target,
    membrane: np.ndarray,
    *,
    per_region: bool = False,
    other_kappa: float = 0.1,
    snr: float | None = None,
    noise: Literal["rician", "gaussian"] = "rician",
    scan_points: int = 11,
) -> PermeabilityFit:
    """Fit κ of the membrane faces ``membrane`` (indices) to ``target``; see the module
    docstring. ``snr`` (relative to |S(b=0)|) gives the Cramér–Rao standard deviations."""
    import time

    from scipy.optimize import least_squares

    tic = time.perf_counter()
    mem = np.unique(np.asarray(membrane, dtype=np.int64))
    if len(mem) == 0:
        raise MeshError("the membrane has no faces", field="faces")
    if mem.min() < 0 or mem.max() >= grid.n_faces:
        raise MeshError(f"face indices must lie in [0, {grid.n_faces - 1}]", field="faces")
    _ = target.s0  # ConfigError without b = 0
    groups, region_group, volume, area = membrane_groups(grid, mem, per_region=per_region)
    model = MembraneModel(grid, target, mem, groups, other_kappa)
    t = model.normalised_target
    n_sim = [0]
    memo: dict[bytes, np.ndarray] = {}

    def signal(theta: np.ndarray) -> np.ndarray:
        key = np.asarray(theta, float).tobytes()
        if key not in memo:
            memo[key] = model.signal(theta)
            n_sim[0] += 1
        return memo[key]

    def residual(theta: np.ndarray) -> np.ndarray:
        return signal(theta) - t

    def jacobian(theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, float)
        cols = []
        for j in range(model.n_params):
            e = np.zeros_like(theta)
            e[j] = FD_STEP
            cols.append((signal(theta + e) - signal(theta - e)) / (2 * FD_STEP))
        return np.stack(cols, axis=1)

    scale = 100.0 / len(t)  # the published data term: 100 · mean squared residual
    lo, hi = LOG10_BOUNDS
    grid_theta = np.linspace(lo, hi, scan_points)
    scan_loss = [scale * float(np.sum(residual(np.full(model.n_params, x)) ** 2))
                 for x in grid_theta]
    x0 = np.full(model.n_params, grid_theta[int(np.argmin(scan_loss))])
    x0 = np.clip(x0, lo + 2 * FD_STEP, hi - 2 * FD_STEP)
    sol = least_squares(residual, x0, jac=jacobian, bounds=(lo + FD_STEP, hi - FD_STEP),
                        method="trf", x_scale=1.0, xtol=1e-12, ftol=1e-14, gtol=1e-14,
                        max_nfev=100)
    theta = sol.x
    fitted = signal(theta)
    kappa = 10.0 ** theta
    std_theta = std_kappa = None
    if snr is not None:
        jac = jacobian(theta)
        cov = crlb(jac, fitted, np.ones_like(t), snr, noise)
        std_theta = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        std_kappa = kappa * np.log(10.0) * std_theta
    # τ = V / (κ A) of each enclosed region (µs → ms), with its faces' κ.
    tau_ms = volume / (kappa[region_group] * area) / 1000.0
    return PermeabilityFit(
        kappa=kappa, kappa_std=std_kappa, log10_kappa=theta, log10_kappa_std=std_theta,
        exchange_time_ms=np.asarray(tau_ms), region_volume=volume, region_area=area,
        data_loss=scale * float(np.sum((fitted - t) ** 2)), fitted_signal=fitted,
        scan={"log10_kappa": grid_theta.tolist(), "data_loss": scan_loss},
        simulations=n_sim[0], seconds=time.perf_counter() - tic,
        info={"optimizer_status": int(sol.status), "optimizer_message": str(sol.message),
              "noise_model": noise, "snr": snr, "per_region": per_region,
              "membrane_faces": int(len(mem)), "jacobian": "central differences, "
              f"{FD_STEP:g} decades"},
    )
