"""Forward-model benchmark: time and peak memory of the full benchmark protocol.

Protocol: the published one (3 PGSE sequences × 6 b-values × 30 directions, ℓ = 2 µm).
Cases:
  * the benchmark grid at the ground truth of cases 017/018/019 (per-face model, κ = 1e-5
    barrier / 0.1 elsewhere, Robin outer faces: the reference-compatible setting);
  * BCC grids of n = 4, 8, 12, 16 cubes per axis over the same box with a voxelised sphere
    of radius 10 µm, as a known geometry (κ = 1e-5 on the sphere, ∞ elsewhere, reflecting
    outer faces: unknowns ≈ vertices) and, for n ≤ 8, as the per-face model (every face
    finite, Robin outer faces).
Each case runs in its own process (so peak RSS is per case, baseline interpreter
included). Usage:

    python benchmarks/forward.py            # all cases, table + benchmarks/forward.json
    python benchmarks/forward.py --quick    # the benchmark grid only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(spec: dict) -> dict:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.mesh import benchmark
    from spinverse.mesh.generators import bcc_grid
    from spinverse.mesh.phantoms import Sphere, barrier_faces, voxelise

    protocol = published_protocol()
    if spec["grid"] == "benchmark":
        grid = benchmark.benchmark_grid()
        kappa = benchmark.case_kappa(benchmark.resolve_case(spec["case"]))
        boundary = "robin"
    else:
        grid = bcc_grid(spec["n"])
        barrier = barrier_faces(grid, voxelise(grid, Sphere([0, 0, 0], 10.0)))
        if spec["model"] == "known":
            kappa = np.full(grid.n_faces, np.inf)
            boundary = "reflecting"
        else:
            kappa = np.full(grid.n_faces, 0.1)
            boundary = "robin"
        kappa[barrier] = 1e-5
    with threadpool_limits(limits=spec.get("threads", 2)):
        t0 = time.perf_counter()
        res = simulate_signal(grid, kappa, protocol, outer_boundary=boundary)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        **spec,
        "tets": grid.n_tets,
        "dofs": res.n_dofs,
        "modes": res.n_modes,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "s_b0_um3": [round(float(abs(s)), 3) for s in res.signal[:, 0, 0]],
    }


def cases(quick: bool) -> list[dict]:
    out = [{"name": f"benchmark {c}", "grid": "benchmark", "case": c, "model": "per-face"}
           for c in ("017", "018", "019")]
    if quick:
        return out
    for n in (4, 8, 12, 16):
        out.append({"name": f"bcc{n} sphere known", "grid": "bcc", "n": n, "model": "known"})
    for n in (4, 6, 8):
        out.append({"name": f"bcc{n} sphere per-face", "grid": "bcc", "n": n,
                    "model": "per-face"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="benchmark grid only")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (min is kept)")
    ap.add_argument("--out", type=Path, default=HERE / "forward.json")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    rows = []
    header = f"{'case':<26}{'tets':>7}{'dofs':>8}{'modes':>7}{'time s':>9}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    for spec in cases(args.quick):
        repeat = args.repeat if spec.get("n", 0) <= 8 else 1
        best = None
        for _ in range(repeat):
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                best = {**spec, "error": proc.stderr.strip().splitlines()[-1]}
                break
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if best is None or row["seconds"] < best["seconds"]:
                best = row
        rows.append(best)
        if "error" in best:
            print(f"{spec['name']:<26} failed: {best['error']}")
        else:
            print(f"{best['name']:<26}{best['tets']:>7}{best['dofs']:>8}{best['modes']:>7}"
                  f"{best['seconds']:>9.3f}{best['peak_rss_mb']:>9.0f}")
    args.out.write_text(json.dumps({"protocol": "published (3 seq x 6 b x 30 dirs)",
                                    "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
