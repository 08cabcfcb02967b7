"""Cost of one shape in the search: forward model on one thread, benchmark grid.

``python benchmarks/shape_cost.py [--shapes 20] [--case 007]``: the case's truth with 3
barrier faces opened (κ 0.1 µm/µs), ``--shapes`` random such states, published protocol,
Robin outer faces; prints seconds per shape and writes ``shape_cost.json``. Run it with
another checkout on ``PYTHONPATH`` to compare versions (alternate the runs: the machine is
shared).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=20)
    ap.add_argument("--case", default="007")
    ap.add_argument("--out", type=Path, default=HERE / "shape_cost.json")
    args = ap.parse_args()

    import numpy as np
    from threadpoolctl import threadpool_limits

    import spinverse
    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.mesh.benchmark import benchmark_grid, case_kappa, resolve_case

    grid, prot = benchmark_grid(), published_protocol()
    truth = case_kappa(resolve_case(args.case))
    rng = np.random.default_rng(0)
    states = []
    for _ in range(args.shapes):
        k = truth.copy()
        k[rng.choice(np.flatnonzero(truth < 1e-3), 3, replace=False)] = 0.1
        states.append(k)
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for k in states:
            try:
                simulate_signal(grid, k, prot, outer_boundary="robin", n_threads=1)
            except TypeError:  # versions before the solver options
                simulate_signal(grid, k, prot, outer_boundary="robin")
        per = (time.perf_counter() - t0) / args.shapes
    row = {"case": args.case, "shapes": args.shapes, "seconds_per_shape": round(per, 4),
           "spinverse": str(Path(spinverse.__file__).parent)}
    print(f"{'case':<6}{'shapes':>8}{'s / shape':>11}\n{args.case:<6}{args.shapes:>8}{per:>11.3f}")
    args.out.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
