"""Thread oversubscription: P processes sharing the cores, each with T threads.

What a sweep on a small machine does: P reconstruction workers run at once. Each process
makes ``--calls`` forward + backward evaluations of ``spinverse.simulate`` (the exact κ
gradient) on the benchmark grid at ``--state``: ``start`` (κ = 1e-3 µm/µs on every face,
the published start: ~900 modes, like the fit's transient) or ``noisy`` (case 000's truth
with every κ multiplied by exp(0.5 N(0,1)), fixed seed: ~80 modes), for one PGSE
sequence (δ = 10 ms, Δ = 60 ms), 6 b-values × 30 directions, ℓ = 2 µm, robin outer
boundary. The P processes start together; the wall time of the slowest one is reported
for each T, with its ratio to the T = 1 row. Prints a table and writes ``threads.json``
next to this file.

Usage: ``python benchmarks/threads.py [--processes 2] [--threads 2,1] [--calls 3]
[--state start|noisy]``
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


def _worker(threads: int, calls: int, state: str) -> None:
    import numpy as np
    import torch

    from spinverse.acquisition.directions import fibonacci_directions
    from spinverse.acquisition.protocol import Protocol
    from spinverse.acquisition.sequences import PGSE
    from spinverse.autodiff import SimulationCache, simulate
    from spinverse.mesh.benchmark import benchmark_grid, case_kappa

    grid = benchmark_grid()
    prot = Protocol(2e-3, 2.0, np.arange(0.0, 5001.0, 1000.0), fibonacci_directions(30),
                    (PGSE(10_000.0, 60_000.0),))
    if state == "start":
        kappa = np.full(grid.n_faces, 1e-3)
    else:
        rng = np.random.default_rng(0)
        kappa = np.clip(case_kappa("000") * np.exp(0.5 * rng.standard_normal(grid.n_faces)),
                        1e-5, 0.1)
    cache = SimulationCache()
    t0 = time.perf_counter()
    for _ in range(calls):
        k = torch.tensor(kappa, requires_grad=True)
        s = simulate(grid, k, prot, outer_boundary="robin", cache=cache, n_threads=threads)
        (s.abs() ** 2).sum().backward()
    print(json.dumps({"seconds": time.perf_counter() - t0, "modes": cache.last.n_modes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", default="2,1", help="comma-separated threads per process")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--state", choices=["start", "noisy"], default="start")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        _worker(args.worker, args.calls, args.state)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    rows = []
    for t in (int(x) for x in args.threads.split(",")):
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(t),
                                   "--calls", str(args.calls), "--state", args.state],
                                  stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(args.processes)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        rows.append({"threads_per_process": t, "processes": args.processes,
                     "state": args.state,
                     "calls": args.calls, "modes": outs[0]["modes"],
                     "seconds_slowest": max(o["seconds"] for o in outs),
                     "seconds_each": [o["seconds"] for o in outs]})
    base = next((r["seconds_slowest"] for r in rows if r["threads_per_process"] == 1), None)
    print(f"{'threads/proc':>12} {'procs':>5} {'modes':>5} {'s/call (slowest)':>16} "
          f"{'vs T=1':>7}")
    for r in rows:
        ratio = r["seconds_slowest"] / base if base else float("nan")
        r["ratio_to_one_thread"] = ratio
        print(f"{r['threads_per_process']:>12} {r['processes']:>5} {r['modes']:>5} "
              f"{r['seconds_slowest'] / r['calls']:>16.2f} {ratio:>7.2f}")
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "rows": rows}
    (HERE / "threads.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
