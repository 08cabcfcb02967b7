"""Batched Chebyshev exponential action against scipy.linalg.expm."""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.solvers.chebyshev import expm_action, plan_expansion


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 12),
    tau=st.floats(10.0, 5e4),
    lam_top=st.floats(1e-5, 1e-2),
    qmax=st.floats(0.0, 3e-4),
)
def test_matches_dense_expm(seed, n, tau, lam_top, qmax):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0, lam_top, n))
    lam[0] = 0.0
    pts = rng.uniform(-10, 10, (50, 3))  # bounds the moment matrices' field of values
    basis = la.orth(rng.standard_normal((50, n)))
    dirs = np.array([[1.0, 0, 0], [0, 0.6, 0.8]])
    w = np.stack([basis.T @ ((pts @ g)[:, None] * basis) for g in dirs])
    centre = 0.5 * ((pts @ dirs.T).max(0) + (pts @ dirs.T).min(0))
    half = 0.5 * np.ptp(pts @ dirs.T, axis=0)
    s = np.array([[0.0, qmax], [-qmax, 0.5 * qmax]])
    v0 = rng.standard_normal((2, n, 2)) + 1j * rng.standard_normal((2, n, 2))
    plan = plan_expansion(lam[0], lam[-1], tau, s, centre, half)
    got = expm_action(lam, w, tau, s, v0, plan)
    for g in range(2):
        for k in range(2):
            ref = la.expm(-tau * (np.diag(lam) + 1j * s[g, k] * w[g])) @ v0[g, :, k]
            assert np.abs(got[g, :, k] - ref).max() <= 1e-10 * max(1.0, np.abs(v0).max())
