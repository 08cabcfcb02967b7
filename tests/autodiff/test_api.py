"""Public API: lazy re-exports, agreement with the NumPy forward model, batching,
determinism and finiteness over the κ range."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import spinverse
from spinverse.acquisition.protocol import published_protocol
from spinverse.autodiff import SimulationCache, simulate
from spinverse.forward import simulate_signal

from .conftest import bench_state


def test_import_spinverse_is_light() -> None:
    code = ("import sys, spinverse; assert 'torch' not in sys.modules; "
            "spinverse.load_mesh; spinverse.load_protocol; assert 'torch' not in sys.modules; "
            "spinverse.simulate; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reexports() -> None:
    from spinverse.acquisition.protocol import load_protocol
    from spinverse.autodiff.functions import simulate as sim
    from spinverse.mesh.io import load_mesh

    assert spinverse.simulate is sim
    assert spinverse.load_mesh is load_mesh
    assert spinverse.load_protocol is load_protocol
    with pytest.raises(AttributeError):
        spinverse.no_such_thing  # noqa: B018


@pytest.mark.parametrize("outer", ["robin", "reflecting"])
def test_matches_numpy_forward(bench, outer: str) -> None:
    k = bench_state("truth", bench)
    prot = published_protocol()
    s = simulate(bench, torch.tensor(k), prot, outer_boundary=outer, n_threads=1)
    assert s.dtype == torch.complex128 and s.shape == (3, 6, 30)
    ref = simulate_signal(bench, k, prot, outer_boundary=outer).signal
    np.testing.assert_allclose(s.numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def _grad(grid, k, prot, weights, **kw):
    kt = torch.tensor(k, requires_grad=True)
    s = simulate(grid, kt, prot, n_threads=1, **kw)
    (weights * s.real).sum().backward()
    return kt.grad.numpy().copy()


def test_batched_sequences_and_determinism(bench) -> None:
    k = bench_state("noisy", bench)
    prot = published_protocol()
    rng = np.random.default_rng(5)
    w = torch.tensor(rng.standard_normal((3, 6, 30)))
    g_all = _grad(bench, k, prot, w, outer_boundary="robin")
    assert np.array_equal(g_all, _grad(bench, k, prot, w, outer_boundary="robin"))
    cache = SimulationCache()  # a reused cache changes nothing
    _grad(bench, k, prot, w, outer_boundary="robin", cache=cache)
    np.testing.assert_array_equal(
        g_all, _grad(bench, k, prot, w, outer_boundary="robin", cache=cache))
    parts = []
    for i in range(3):
        one = prot.replace(sequences=(prot.sequences[i],))
        parts.append(_grad(bench, k, one, w[i:i + 1], outer_boundary="robin"))
    total = np.sum(parts, axis=0)
    np.testing.assert_allclose(g_all, total, rtol=0, atol=1e-11 * np.abs(g_all).max())
    # Only one sequence in the loss: the same gradient as that sequence alone.
    w1 = torch.zeros_like(w)
    w1[1] = w[1]
    np.testing.assert_allclose(_grad(bench, k, prot, w1, outer_boundary="robin"), parts[1],
                               rtol=0, atol=1e-12 * np.abs(parts[1]).max())


def test_log_kappa_composition(bench) -> None:
    k = bench_state("truth", bench)
    prot = published_protocol().replace(sequences=(published_protocol().sequences[2],))
    x = torch.tensor(np.log(k), requires_grad=True)
    s = simulate(bench, torch.exp(x), prot, outer_boundary="robin", n_threads=1)
    s.abs().sum().backward()
    kt = torch.tensor(k, requires_grad=True)
    simulate(bench, kt, prot, outer_boundary="robin", n_threads=1).abs().sum().backward()
    ref = kt.grad.numpy() * k  # exp(log κ) differs from κ by an ulp: round-off only
    np.testing.assert_allclose(x.grad.numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_extreme_kappa_small_grid(small_grid, small_protocol) -> None:
    # ℓ = 0.03 µm: a cut-off above the lowest mode even for leaky κ = 10 (robin).
    small_protocol = small_protocol.replace(length_scale=0.03)
    rng = np.random.default_rng(2)
    for k in (np.full(small_grid.n_faces, 1e-7), np.full(small_grid.n_faces, 10.0),
              10 ** rng.uniform(-7, 1, small_grid.n_faces)):
        for outer in ("robin", "reflecting"):
            kt = torch.tensor(k, requires_grad=True)
            s = simulate(small_grid, kt, small_protocol, outer_boundary=outer)
            (s.abs() ** 2).sum().backward()
            assert torch.isfinite(s).all() and torch.isfinite(kt.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize("outer", ["robin", "reflecting"])
def test_extreme_kappa_benchmark(bench, outer: str) -> None:
    rng = np.random.default_rng(1)
    prot = published_protocol()
    for k in (np.full(bench.n_faces, 1e-7), np.full(bench.n_faces, 10.0),
              10 ** rng.uniform(-7, 1, bench.n_faces)):
        kt = torch.tensor(k, requires_grad=True)
        s = simulate(bench, kt, prot, outer_boundary=outer, n_threads=1)
        (s.abs() ** 2).sum().backward()
        assert torch.isfinite(s).all() and torch.isfinite(kt.grad).all()


def test_infinite_kappa_faces_get_zero_gradient(bench) -> None:
    k = bench_state("truth", bench).copy()
    inner = np.flatnonzero(~bench.is_outer)[:40]
    k[inner] = np.inf
    prot = published_protocol().replace(sequences=(published_protocol().sequences[0],))
    kt = torch.tensor(k, requires_grad=True)
    simulate(bench, kt, prot, outer_boundary="robin", n_threads=1).real.sum().backward()
    g = kt.grad.numpy()
    assert np.all(g[inner] == 0.0) and np.isfinite(g).all() and np.any(g != 0)


def test_rejects_bad_input(bench) -> None:
    prot = published_protocol()
    with pytest.raises(TypeError):
        simulate(bench, torch.ones(bench.n_faces, dtype=torch.float32), prot)
    with pytest.raises(ValueError):
        simulate(bench, torch.full((bench.n_faces,), -1.0, dtype=torch.float64), prot)


def test_worker_threads_agree(bench) -> None:
    """n_threads=2 (worker threads over directions, threaded dense BLAS) gives the same
    gradient as one thread up to round-off, and is itself deterministic."""
    k = bench_state("noisy", bench)
    prot = published_protocol().replace(sequences=(published_protocol().sequences[1],))
    w = torch.tensor(np.random.default_rng(3).standard_normal((1, 6, 30)))

    def grad(nthr: int) -> np.ndarray:
        kt = torch.tensor(k, requires_grad=True)
        s = simulate(bench, kt, prot, outer_boundary="reflecting", n_threads=nthr)
        (w * s.real).sum().backward()
        return kt.grad.numpy().copy()

    g1, g2 = grad(1), grad(2)
    np.testing.assert_allclose(g2, g1, rtol=0, atol=1e-10 * np.abs(g1).max())
    np.testing.assert_array_equal(g2, grad(2))


def test_thread_limit_and_environment(monkeypatch) -> None:
    from spinverse.errors import SolverError
    from spinverse.solvers.mf import resolve_threads, thread_limit

    monkeypatch.delenv("SPINVERSE_NUM_THREADS", raising=False)
    assert resolve_threads(3) == 3
    with thread_limit(1):
        assert resolve_threads(None) == 1
        assert resolve_threads(2) == 2  # an explicit argument wins
        with thread_limit(None):
            assert resolve_threads(None) >= 1
    monkeypatch.setenv("SPINVERSE_NUM_THREADS", "5")
    assert resolve_threads(None) == 5
    with thread_limit(2):
        assert resolve_threads(None) == 2
    monkeypatch.setenv("SPINVERSE_NUM_THREADS", "many")
    with pytest.raises(SolverError, match="SPINVERSE_NUM_THREADS"):
        resolve_threads(None)
