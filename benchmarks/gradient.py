"""Forward + backward time and peak memory of ``spinverse.simulate`` (exact κ gradients).

One PGSE sequence (δ = 10 ms, Δ = 60 ms), 6 b-values (0…5000 s/mm²) × 30 Fibonacci
directions, D = 2e-3 µm²/µs, ℓ = 2 µm, robin outer boundary, loss = ``signal_loss``
against a fixed target. Cases: the benchmark grid at the start state (κ = 1e-3 µm/µs on
every face) and at the ground truth of case 017 (κ = 1e-5 barrier / 0.1 elsewhere), and
``bcc_grid(6)`` / ``bcc_grid(8)`` at uniform κ = 1e-3 and with a voxelised sphere
(radius 10 µm, 1e-5 / 0.1).

Each (case, BLAS threads) runs in its own subprocess; peak memory is that process's
``ru_maxrss`` (baseline: after imports and grid set-up). "cold" is the first call (builds
the FE model), "warm" a second call reusing the :class:`SimulationCache` (what an
optimisation loop sees). Prints a table and writes ``gradient.json`` next to this file.

Usage: ``python benchmarks/gradient.py [--cases a,b] [--threads 1,2] [--timeout 1800]``
(results of other cases already in the JSON are kept unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ["bench_start", "bench_truth", "bcc6_uniform", "bcc6_sphere", "bcc8_uniform",
         "bcc8_sphere"]
OUTER = "robin"


def _setup(case: str):
    import numpy as np

    from spinverse.acquisition.directions import fibonacci_directions
    from spinverse.acquisition.protocol import Protocol
    from spinverse.acquisition.sequences import PGSE
    from spinverse.mesh.benchmark import benchmark_grid, case_kappa
    from spinverse.mesh.generators import bcc_grid
    from spinverse.mesh.phantoms import Sphere, barrier_faces, phantom_kappa, voxelise

    prot = Protocol(2e-3, 2.0, np.arange(0.0, 5001.0, 1000.0), fibonacci_directions(30),
                    (PGSE(10_000.0, 60_000.0),))
    if case.startswith("bench"):
        grid = benchmark_grid()
        kappa = np.full(grid.n_faces, 1e-3) if case == "bench_start" else case_kappa("017")
    else:
        grid = bcc_grid(int(case[3]))
        if case.endswith("uniform"):
            kappa = np.full(grid.n_faces, 1e-3)
        else:
            inside = voxelise(grid, Sphere(np.zeros(3), 10.0))
            kappa = phantom_kappa(grid, barrier_faces(grid, inside))
    return grid, kappa, prot


def run_case(case: str, threads: int) -> dict:
    """One case in this process: cold and warm forward/backward, peak RSS."""
    import resource

    import numpy as np
    import torch

    from spinverse.autodiff import SimulationCache, b0_magnitude, signal_loss, simulate

    torch.set_num_threads(threads)
    grid, kappa, prot = _setup(case)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rng = np.random.default_rng(0)
    cache = SimulationCache()
    out: dict = {"case": case, "threads": threads, "outer_boundary": OUTER,
                 "n_tets": grid.n_tets, "n_faces": grid.n_faces}
    target = None
    for label in ("cold", "warm"):
        kt = torch.tensor(kappa, requires_grad=True)
        t0 = time.perf_counter()
        s = simulate(grid, kt, prot, outer_boundary=OUTER, cache=cache, n_threads=threads)
        t1 = time.perf_counter()
        if target is None:
            noise = torch.tensor(1.0 + 0.01 * rng.standard_normal(tuple(s.shape)))
            target = (s.detach().abs() * noise).to(torch.complex128)
        loss = signal_loss(s, target, b0_magnitude(target))
        loss.backward()
        t2 = time.perf_counter()
        g = kt.grad.numpy()
        info = cache.last
        out[label] = {"forward_s": t1 - t0, "backward_s": t2 - t1, "total_s": t2 - t0,
                      "timings": info.timings, "backward": {
                          k: v for k, v in info.backward.items() if k != "shifts"}}
        out.update(n_dofs=info.n_dofs, n_modes=info.n_modes, eigen_gap=info.eigen_gap,
                   eig_method=info.eig_method, grad_finite=bool(np.isfinite(g).all()))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["baseline_rss_mb"] = base
    return out


def _machine() -> dict:
    try:
        from threadpoolctl import threadpool_info

        blas = [(i.get("internal_api"), i.get("version")) for i in threadpool_info()]
    except Exception:  # pragma: no cover
        blas = []
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
            "blas": blas}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2", help="BLAS thread counts to run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--out", default=str(HERE / "gradient.json"))
    ap.add_argument("--fresh", action="store_true", help="drop earlier results in --out")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--run-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_case(args.run, args.run_threads)))
        return
    machine = _machine()
    rows: list[dict] = []
    kept: list[dict] = []
    out_path = Path(args.out)
    if out_path.exists() and not args.fresh:  # keep the other cases of an earlier run
        try:
            kept = json.loads(out_path.read_text()).get("results", [])
        except (OSError, ValueError):
            kept = []
    for case in args.cases.split(","):
        for thr in (int(t) for t in args.threads.split(",")):
            cmd = [sys.executable, __file__, "--run", case, "--run-threads", str(thr)]
            t0 = time.perf_counter()
            load0 = os.getloadavg()[0]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                if res.returncode != 0:
                    row = {"case": case, "threads": thr, "error": res.stderr[-2000:]}
                else:
                    row = json.loads(res.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = {"case": case, "threads": thr, "error": f"timeout {args.timeout:.0f} s"}
            row["wall_s"] = time.perf_counter() - t0
            row["loadavg_before"] = load0
            row["machine"] = machine
            rows.append(row)
            _print_row(row)
            done = {(r["case"], r["threads"]) for r in rows}
            merged = [r for r in kept if (r["case"], r["threads"]) not in done] + rows
            out_path.write_text(json.dumps({"results": merged}, indent=1))
    print(f"wrote {args.out}")


def _print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['case']:14s} thr={r['threads']}  ERROR {r['error'].splitlines()[-1]}")
        return
    c, w = r["cold"], r["warm"]
    print(f"{r['case']:14s} thr={r['threads']} N={r['n_dofs']:6d} n={r['n_modes']:5d} "
          f"{r['eig_method']:6s} cold {c['forward_s']:7.2f}+{c['backward_s']:7.2f} s  "
          f"warm {w['forward_s']:7.2f}+{w['backward_s']:7.2f} = {w['total_s']:7.2f} s  "
          f"peak {r['peak_rss_mb']:7.0f} MB (base {r['baseline_rss_mb']:.0f})  "
          f"load {r['loadavg_before']:.1f}", flush=True)


if __name__ == "__main__":
    main()
