"""Physical constants and unit conversions.

spinverse works in micrometres (µm), microseconds (µs), diffusivity in µm²/µs,
permeability κ in µm/µs and b-values in s/mm², which is numerically equal to µs/µm²
(so b·D is dimensionless). q = γG is in 1/(µm·µs).
"""

from __future__ import annotations

import numpy as np

#: Proton gyromagnetic ratio in rad/(µs·mT) (= 2.675222005e8 rad/(s·T)).
GAMMA_RAD_PER_US_MT = 0.2675222005

#: Free water diffusivity used by the published benchmark, µm²/µs (= 2e-3 mm²/s).
D_BENCHMARK_UM2_PER_US = 2.0e-3


def q_from_gradient(g_mT_per_m: float | np.ndarray) -> float | np.ndarray:
    """q = γ·G in 1/(µm·µs) for a gradient amplitude G in mT/m."""
    return GAMMA_RAD_PER_US_MT * np.asarray(g_mT_per_m, dtype=float) * 1e-6


def ms_to_us(t_ms: float | np.ndarray) -> float | np.ndarray:
    """Convert milliseconds to microseconds."""
    return np.asarray(t_ms, dtype=float) * 1e3
