"""Fine grids: forward + gradient cost of the eigen and full-space propagators vs grid size.

One PGSE sequence (δ = 10 ms, Δ = 60 ms), 6 b-values (0…5000 s/mm²) × 30 Fibonacci
directions, D = 2e-3 µm²/µs, ℓ = 2 µm, Robin outer faces; loss = ``signal_loss`` against
a fixed target. Grids ``bcc_grid(n)`` (n = 4 is the benchmark grid) over the benchmark
box; states ``truth`` (a voxelised sphere of radius 10 µm: κ = 1e-5 on its faces, 0.1
elsewhere; on ``r1``, the benchmark grid refined 1:8, case 018 carried over) and
``uniform`` (κ = 1e-3 µm/µs on every face: every tet nearly its own
compartment, the eigen path's worst case). Each (grid, state, propagator) runs in its own
subprocess (peak RSS = its ``ru_maxrss``), on 2 threads. A row whose cost-model estimate
exceeds ``--budget`` seconds is not run (its estimate is printed). ``--fd`` adds a
central finite-difference check of the full-space gradient (ρ held fixed) along a random
direction on the given grids.

Usage: ``python benchmarks/fine_grid.py [--grids 4,6,8,12,r1] [--budget 900] [--fd 4,6]``
(a grid ``rN``: the benchmark grid refined N times);
writes ``fine_grid.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _setup(n: int | str, state: str):
    import numpy as np

    from spinverse.acquisition.directions import fibonacci_directions
    from spinverse.acquisition.protocol import Protocol
    from spinverse.acquisition.sequences import PGSE
    from spinverse.mesh.generators import bcc_grid
    from spinverse.mesh.phantoms import Sphere, barrier_faces, phantom_kappa, voxelise

    prot = Protocol(2e-3, 2.0, np.arange(0.0, 5001.0, 1000.0), fibonacci_directions(30),
                    (PGSE(10_000.0, 60_000.0),))
    if str(n).startswith("r"):  # the benchmark grid refined: case 018 carried over
        from spinverse.mesh.benchmark import benchmark_grid, case_kappa
        from spinverse.mesh.phantoms import OTHER_KAPPA
        from spinverse.recon.targets import refined_model

        grid, kappa = refined_model(benchmark_grid(), case_kappa("018"), int(str(n)[1:]),
                                    new_faces=OTHER_KAPPA)
        return grid, (np.full(grid.n_faces, 1e-3) if state == "uniform" else kappa), prot
    grid = bcc_grid(int(n))
    if state == "uniform":
        kappa = np.full(grid.n_faces, 1e-3)
    else:
        kappa = phantom_kappa(grid, barrier_faces(grid, voxelise(grid, Sphere(np.zeros(3),
                                                                              10.0))))
    return grid, kappa, prot


def estimate(n: int | str, state: str) -> dict:
    """The cost model's estimates (s, forward + gradient) for both propagators."""
    from spinverse.solvers import mf
    from spinverse.solvers.mf import SimulationCache, choose_propagator

    grid, kappa, prot = _setup(n, state)
    model = SimulationCache().model(grid, kappa, prot.diffusivity, "robin")
    old, mf.AUTO_MIN_DOFS = mf.AUTO_MIN_DOFS, 0
    try:
        choice, _, est = choose_propagator(model.fe, model.linv, kappa,
                                           model.fe.operator(kappa), prot, keep=True)
    finally:
        mf.AUTO_MIN_DOFS = old
    return {"choice": choice, **est}


def run(n: int | str, state: str, propagator: str) -> dict:
    """Forward + backward in this process; peak RSS."""
    import resource

    import numpy as np
    import torch

    from spinverse.autodiff import SimulationCache, b0_magnitude, signal_loss, simulate

    grid, kappa, prot = _setup(n, state)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cache = SimulationCache()
    kt = torch.tensor(kappa, requires_grad=True)
    t0 = time.perf_counter()
    s = simulate(grid, kt, prot, outer_boundary="robin", cache=cache, n_threads=2,
                 propagator=propagator)
    t1 = time.perf_counter()
    noise = torch.tensor(1.0 + 0.01 * np.random.default_rng(0).standard_normal(tuple(s.shape)))
    target = (s.detach().abs() * noise).to(torch.complex128)
    loss = signal_loss(s, target, b0_magnitude(target))
    loss.backward()
    t2 = time.perf_counter()
    info = cache.last
    assert info is not None
    return {"n_cubes": _label(n), "state": state, "propagator": propagator,
            "n_tets": grid.n_tets,
            "n_dofs": info.n_dofs, "n_modes": info.n_modes, "details": info.details,
            "eig_method": info.eig_method, "forward_s": t1 - t0, "backward_s": t2 - t1,
            "total_s": t2 - t0, "backward": {k: v for k, v in info.backward.items()
                                             if isinstance(v, (int, float))},
            "grad_finite": bool(torch.isfinite(kt.grad).all()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "baseline_rss_mb": base}


def fd(n: int | str, state: str) -> dict:
    """Central FD of the full-space signal along a random κ direction (ρ fixed)."""
    import numpy as np

    from spinverse.autodiff.fullspace import fullspace_backward
    from spinverse.solvers.fullspace import fullspace_signal
    from spinverse.solvers.mf import SimulationCache

    grid, kappa, prot = _setup(n, state)
    m = SimulationCache().model(grid, kappa, prot.diffusivity, "robin")
    s, st = fullspace_signal(m.fe, m.linv, kappa, prot, keep=True, n_threads=2)
    rng = np.random.default_rng(0)
    sbar = rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)
    grad, info = fullspace_backward(st, sbar)
    d = rng.standard_normal(grid.n_faces) * kappa
    rows = []
    for eps in (1e-5, 1e-6):
        sp_, _ = fullspace_signal(m.fe, m.linv, kappa + eps * d, prot, rho=st.model.rho,
                                  n_threads=2)
        sm_, _ = fullspace_signal(m.fe, m.linv, kappa - eps * d, prot, rho=st.model.rho,
                                  n_threads=2)
        f = float(np.real(np.sum(np.conj(sbar) * (sp_ - sm_))) / (2 * eps))
        rows.append({"eps": eps, "fd": f, "rel_error": abs(f - grad @ d) / abs(f)})
    return {"n_cubes": _label(n), "state": state, "analytic": float(grad @ d), "fd": rows,
            "drift": info["drift"], "best_rel_error": min(r["rel_error"] for r in rows)}


def _label(n: int | str) -> int | str:
    """The grid's label: n (int) for bcc_grid(n), "rN" for the refined benchmark grid."""
    return int(n) if str(n).isdigit() else str(n)


def _sub(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, __file__, *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": res.stderr[-1500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="4,6,8,12")
    ap.add_argument("--states", default="uniform,truth")
    ap.add_argument("--propagators", default="fullspace,eigen")
    ap.add_argument("--budget", type=float, default=900.0,
                    help="skip rows whose estimate exceeds this (s)")
    ap.add_argument("--fd", default="4,6", help="grids for the FD check ('' for none)")
    ap.add_argument("--out", default=str(HERE / "fine_grid.json"))
    ap.add_argument("--fresh", action="store_true", help="drop earlier rows in --out")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        kind, n, state, *rest = args.job.split(":")
        fn = {"run": lambda: run(n, state, rest[0]), "est": lambda: estimate(n, state),
              "fd": lambda: fd(n, state)}[kind]
        print(json.dumps(fn()))
        return
    rows: list[dict] = []
    out = Path(args.out)
    meta = {"cpus": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg()}
    kept: list[dict] = []
    if out.exists() and not args.fresh:  # keep the rows of an earlier run not redone
        kept = json.loads(out.read_text()).get("results", [])

    def key(r: dict) -> tuple:
        return (str(r.get("n_cubes")), r.get("state"), r.get("propagator"),
                bool(r.get("fd_check")))

    def save() -> None:
        done = {key(r) for r in rows}
        merged = [r for r in kept if key(r) not in done] + rows
        out.write_text(json.dumps({"machine": meta, "results": merged}, indent=1))

    for n in (x for x in args.grids.split(",") if x):
        for state in args.states.split(","):
            est = _sub(["--job", f"est:{n}:{state}"], 1800)
            for prop in args.propagators.split(","):
                guess = est.get(f"{prop}_s")
                if guess is not None and guess > args.budget:
                    row = {"n_cubes": _label(n), "state": state, "propagator": prop,
                           "skipped": f"estimate {guess:.0f} s > budget", "estimate": est}
                else:
                    t0 = time.perf_counter()
                    row = {"n_cubes": _label(n), "state": state, "propagator": prop,
                           **_sub(["--job", f"run:{n}:{state}:{prop}"], 3 * args.budget),
                           "estimate": est, "wall_s": time.perf_counter() - t0,
                           "loadavg": os.getloadavg()[0]}
                rows.append(row)
                _print(row)
                save()
    for n in (x for x in args.fd.split(",") if x):
        for state in args.states.split(","):
            row = {"fd_check": True, **_sub(["--job", f"fd:{n}:{state}"], 3600)}
            rows.append(row)
            print(f"FD BCC {n} {state}: best rel error {row.get('best_rel_error', row)}",
                  flush=True)
            save()
    print(f"wrote {out}")


def _print(r: dict) -> None:
    head = f"grid {str(r['n_cubes']):>3s} {r['state']:7s} {r['propagator']:9s}"
    if "skipped" in r or "error" in r:
        msg = r.get("skipped") or (r["error"].strip().splitlines() or ["failed"])[-1]
        print(f"{head} {msg}", flush=True)
        return
    print(f"{head} N={r['n_dofs']:6d} modes={r['n_modes']:5d} fwd {r['forward_s']:7.1f} s "
          f"bwd {r['backward_s']:7.1f} s total {r['total_s']:7.1f} s peak "
          f"{r['peak_rss_mb']:6.0f} MB (est. {r['estimate'].get(r['propagator'] + '_s', 0):.0f} s)",
          flush=True)


if __name__ == "__main__":
    main()
