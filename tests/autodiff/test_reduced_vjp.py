"""Reduced-level VJPs against torch autograd of a dense matrix-exponential reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinverse.autodiff.vjp import (
    ReducedCotangents,
    exp_divided_differences,
    pgse_vjp,
    segments_vjp,
)
from spinverse.solvers.reduced import ReducedModel


def _problem(seed: int = 1, n: int = 10, n_pts: int = 40):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-3.0, 3.0, (n_pts, 3))  # µm
    basis = np.linalg.qr(rng.standard_normal((n_pts, n)))[0]
    # W_d = Bᵀ diag(x_d) B: field of values inside the range of x_d over the points.
    w = np.stack([basis.T @ (pts[:, d:d + 1] * basis) for d in range(3)])
    lam = np.sort(rng.uniform(0.0, 5e-3, n))
    lam[2] = lam[1]  # an exactly degenerate pair
    nu0 = rng.standard_normal(n)
    dirs = rng.standard_normal((4, 3))
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    return pts, w, lam, nu0, dirs, rng


def _reference(lam, w, nu0, dirs, q, segments):
    """S (nb, G) by dense matrix exponentials; Λ a full symmetric input."""
    lt = torch.tensor(np.diag(lam), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    nt = torch.tensor(nu0, requires_grad=True)
    rows = []
    for qk in q:
        row = []
        for g in dirs:
            wg = sum(float(g[d]) * wt[d] for d in range(3)).to(torch.complex128)
            nu = nt.to(torch.complex128)
            for dur, f in segments:
                x = lt.to(torch.complex128) + 1j * qk * f * wg
                nu = torch.linalg.matrix_exp(-dur * x) @ nu
            row.append(nt.to(torch.complex128) @ nu)
        rows.append(torch.stack(row))
    return torch.stack(rows), lt, wt, nt


def _grads(red, kind, q, dirs, segs, sbar, delta, big_delta):
    acc = ReducedCotangents.zeros(red.n)
    if kind == "pgse":
        _, tape = red.pgse_forward(delta, big_delta, q, dirs, keep=True)
        pgse_vjp(red, delta, big_delta, q, dirs, tape, sbar, acc)
    else:
        segments_vjp(red, segs, q, dirs, sbar, acc)
    return acc.symmetric()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["pgse", "segments"])
@pytest.mark.parametrize("q_max", [5e-5, 1e-3])  # 1e-3: the plan uses several substeps
def test_reduced_vjp_matches_dense_autograd(kind: str, q_max: float, workers: int) -> None:
    pts, w, lam, nu0, dirs, rng = _problem()
    delta, big_delta = 5000.0, 12_000.0
    segs = ((delta, 1.0), (big_delta - delta, 0.0), (delta, -1.0))
    q = np.array([0.0, 2e-5, q_max])
    # chunk_bytes=0: one direction per chunk, so that the workers share the directions.
    red = ReducedModel(lam, w, nu0, pts, tol=1e-14, workers=workers, chunk_bytes=0)
    if kind == "pgse":
        s, _ = red.pgse_forward(delta, big_delta, q, dirs, keep=False)
    else:
        s = red.segments_forward(segs, q, dirs)
    ref, lt, wt, nt = _reference(lam, w, nu0, dirs, q, segs)
    np.testing.assert_allclose(s, ref.detach().numpy(), rtol=1e-12, atol=1e-12 * abs(s).max())
    sbar = rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)
    (torch.conj(torch.tensor(sbar)) * ref).real.sum().backward()
    gl = lt.grad.numpy()
    gw = wt.grad.numpy()
    gl, gw = 0.5 * (gl + gl.T), 0.5 * (gw + gw.transpose(0, 2, 1))
    lb, wb, nb = _grads(red, kind, q, dirs, segs, sbar, delta, big_delta)
    assert np.abs(lb - gl).max() <= 1e-12 * np.abs(gl).max()
    assert np.abs(wb - gw).max() <= 1e-12 * np.abs(gw).max()
    assert np.abs(nb - nt.grad.numpy()).max() <= 1e-12 * np.abs(nt.grad.numpy()).max()


def test_pgse_tape_and_recompute_agree() -> None:
    pts, w, lam, nu0, dirs, rng = _problem(seed=3)
    q = np.array([0.0, 3e-5, 6e-5])
    sbar = rng.standard_normal((3, 4)) + 0j
    out = []
    for budget in (1e9, 0.0):  # keep the Chebyshev tapes / recompute them
        red = ReducedModel(lam, w, nu0, pts, tol=1e-13, tape_bytes=budget)
        acc = ReducedCotangents.zeros(red.n)
        _, tape = red.pgse_forward(4000.0, 9000.0, q, dirs, keep=True)
        pgse_vjp(red, 4000.0, 9000.0, q, dirs, tape, sbar, acc)
        out.append((acc.lam, np.stack(acc.w), acc.nu0))
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.abs(a).max())


def test_exp_divided_differences() -> None:
    lam = np.array([0.0, 1e-3, 1e-3 + 1e-15, 4e-3])
    tau = 2e4
    phi = exp_divided_differences(lam, tau)
    f = np.exp(-tau * lam)
    assert phi[0, 3] == pytest.approx((f[0] - f[3]) / (lam[0] - lam[3]), rel=1e-13)
    assert phi[1, 1] == pytest.approx(-tau * f[1], rel=1e-15)
    assert phi[1, 2] == pytest.approx(-tau * f[1], rel=1e-10)
    np.testing.assert_array_equal(phi, phi.T)
