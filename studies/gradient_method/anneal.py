"""Simulated annealing over tet regions, started from a finished reconstruction.

A diagnostic of the *search*, not of the method: can a global move set (single-tet flips
and volume-preserving swaps, Metropolis acceptance, geometric cooling) lower the data loss
of a gradient-descent result and, doing so, find the target's shape? The state is a set of
tets with the ground-truth κ convention (1e-5 µm/µs on its surface, 0.1 elsewhere, see
``landscape.py``); it starts from the region enclosed by the barrier of a finished run
(``RUN/both/CASE*/seed0-none/kappa.npz``, by default the committed ADC-start sweep). The
temperature falls geometrically from ``t0 × L0`` to ``t1 × L0`` (L0: the start loss). The
best state seen is scored with :func:`spinverse.recon.metrics.evaluate`.

Usage: ``python studies/gradient_method/anneal.py [--cases 000 001] [--loss published|log|balanced]
[--steps 2500] [--seed 0] [--workers 2] [--out anneal.json]``; prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from landscape import KINDS

HERE = Path(__file__).resolve().parent
DEFAULT_RUNS = HERE / "results" / "adc_all"


def start_region(runs: Path, case: str, grid) -> np.ndarray:
    from spinverse.recon.metrics import barrier_from_kappa, enclosed_tets

    files = sorted(runs.glob(f"both/{case}*/seed0-none/kappa.npz"))
    if not files:
        raise FileNotFoundError(f"no run of case {case} under {runs}")
    return enclosed_tets(grid, barrier_from_kappa(np.load(files[0])["kappa"]))


def anneal(case: str, loss: str, steps: int, seed: int, t0: float, t1: float,
           runs: Path, weights: tuple[float, ...] | None = None) -> dict:
    from landscape import RegionLoss, _flip
    from threadpoolctl import threadpool_limits

    from spinverse.mesh.phantoms import barrier_faces, phantom_kappa
    from spinverse.recon.metrics import evaluate

    with threadpool_limits(1):
        f = RegionLoss(case, loss, weights)
        grid = f.grid
        inside = start_region(runs, case, grid)
        rng = np.random.default_rng(seed)
        start = current = best = f(inside)
        best_inside, accepted, tic = inside.copy(), 0, time.perf_counter()
        for it in range(steps):
            temperature = start * t0 * (t1 / t0) ** (it / max(steps - 1, 1))
            edge = f.boundary_tets(inside)
            ins, outs = edge[inside[edge]], edge[~inside[edge]]
            new = inside.copy()
            if rng.random() < 0.5 and len(ins) and len(outs):  # swap: volume kept
                new[rng.choice(ins)], new[rng.choice(outs)] = False, True
            else:
                t = rng.choice(edge)
                new[t] = ~new[t]
            if not new.any():
                continue
            trial = f(new)
            if trial < current or rng.random() < np.exp(-(trial - current) / temperature):
                inside, current, accepted = new, trial, accepted + 1
                if trial < best:
                    best, best_inside = trial, new.copy()
        seconds = time.perf_counter() - tic

        def scores(region: np.ndarray) -> dict:
            m = evaluate(grid, phantom_kappa(grid, barrier_faces(grid, region)), f.truth)
            keys = ("f1", "f1_aligned", "chamfer_aligned", "bad_pct", "alignment")
            return {k: m[k] for k in keys}

        published = RegionLoss(case, "published")
        first = start_region(runs, case, grid)
        near = np.array([f.per_sequence(_flip(f.inside, t)) for t in f.boundary_tets(f.inside)])
    return {"case": f.name, "loss": loss,
            "weights": None if weights is None else list(weights),
            "steps": steps, "seed": seed, "t0": t0, "t1": t1,
            "start_loss": start, "end_loss": best, "accepted": accepted,
            "start_published_loss": published(first),
            "end_published_loss": published(best_inside),
            "start_per_sequence": f.per_sequence(first).tolist(),
            "end_per_sequence": f.per_sequence(best_inside).tolist(),
            "truth_flip_median_per_sequence": np.median(near, axis=0).tolist(),
            "start": scores(first), "end": scores(best_inside),
            "tets_off_truth": int((best_inside != f.inside).sum()),
            "n_inside": int(best_inside.sum()), "n_truth": int(f.inside.sum()),
            "seconds": seconds}


def _run(task: tuple) -> dict:
    return anneal(*task)


def label(row: dict) -> str:
    """The loss of a row, with its per-sequence weights if any."""
    w = row.get("weights")
    return row["loss"] if not w else f"{row['loss']} w={','.join(f'{x:g}' for x in w)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=["000", "001"])
    ap.add_argument("--loss", choices=KINDS, default="published")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t0", type=float, default=0.1, help="start temperature ÷ start loss")
    ap.add_argument("--t1", type=float, default=3e-4, help="end temperature ÷ start loss")
    ap.add_argument("--weights", type=float, nargs="*", default=None,
                    help="per-sequence weights of the published term (short middle long)")
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "anneal.json")
    args = ap.parse_args()
    weights = tuple(args.weights) if args.weights else None
    tasks = [(c, args.loss, args.steps, args.seed, args.t0, args.t1, args.runs, weights)
             for c in args.cases]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(_run, tasks))
    old = json.loads(args.out.read_text()) if args.out.exists() else []
    def key(r: dict) -> tuple:
        return r["case"][:3], label(r), r["seed"]

    keep = [r for r in old if key(r) not in {key(r2) for r2 in rows}]
    args.out.write_text(json.dumps(keep + rows, indent=1))
    print("| case | loss | steps | published loss start → end | F1 aligned start → end | "
          "Chamfer² aligned µm² | bad edges | tets off | s |")
    print("|---" * 9 + "|")
    for r in rows:
        print(f"| {r['case'][:3]} | {label(r)} | {r['steps']} | {r['start_published_loss']:.4f} → "
              f"{r['end_published_loss']:.4f} | {r['start']['f1_aligned']:.2f} → "
              f"{r['end']['f1_aligned']:.2f} | {r['end']['chamfer_aligned']:.2f} | "
              f"{r['end']['bad_pct']:.1f} % | {r['tets_off_truth']} | {r['seconds']:.0f} |")
    print("\nPublished data term per sequence (short, middle, long): start → end, and the median"
          " over single-tet flips of the truth")
    for r in rows:
        fmt = " / ".join
        print(f"{r['case'][:3]} {label(r)}: "
              f"{fmt(f'{v:.4f}' for v in r['start_per_sequence'])} → "
              f"{fmt(f'{v:.4f}' for v in r['end_per_sequence'])}; truth flips "
              f"{fmt(f'{v:.4f}' for v in r['truth_flip_median_per_sequence'])}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
