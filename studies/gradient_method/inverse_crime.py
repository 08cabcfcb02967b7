"""Targets that are not an inverse crime: the benchmark cases simulated on a refined grid.

The published setting simulates each target on the same 576-tet grid, with the same
solver, that the reconstruction fits it with (an "inverse crime"). Here the target is the
same barrier surface simulated on the grid refined 1:8 per level (``spinverse.mesh.refine``;
κ 1e-5 µm/µs on the surface, 0.1 on every other face, Robin outer faces, the published
protocol and ℓ = 2 µm), and the fit still runs on the benchmark grid. Per case:

1. **model error**: the published data term (100 × mean squared residual of |S|/S0_target,
   per sequence and the mean of the three) of the *exact* answer, the truth on the
   benchmark grid, against the refined target; beside it the truth's median single-tet
   flip on the benchmark grid (``near_symmetry.json``): how much the shape can be resolved;
2. ``--greedy CASES``: greedy single-tet descent from the truth under the refined target
   (does the fit stay at the truth once it is there?), by default on the loss of the
   middle and long sequences (those the published curriculum fits): where it stops;
3. ``--recon CASES``: the published preset with the ADC start (the setting of
   ``results/adc_all/``) fitted to the refined target; its metrics against the truth.

    python studies/gradient_method/inverse_crime.py [--cases ...] [--refine 1] [--greedy 000 ...]
        [--greedy-weights 0 1 1] [--recon 018 016 007] [--workers 2] [--out /tmp/inverse_crime]

(rows with other ``--greedy-weights`` are kept beside the default ones, as part
``gap_weights_…``).

Writes ``inverse_crime.json`` next to this file (rows merged by case and part) and prints
a table. Refined targets are cached in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
JSON = HERE / "inverse_crime.json"
#: Greedy descent's per-sequence weights: the middle and long sequences (the curriculum's).
DEFAULT_WEIGHTS = (0.0, 1.0, 1.0)


def refined_target(case: str, levels: int, out: Path):
    """The case's Target simulated on the refined grid (cached as SIGNALS.npz)."""
    from spinverse.acquisition.protocol import published_protocol
    from spinverse.io.signals import load_signals, save_signals
    from spinverse.recon.reconstructor import Target
    from spinverse.recon.targets import case_target

    path = out / f"target_{case[:3]}_refine{levels}.npz"
    if path.is_file():
        sig = load_signals(path)
        return Target(sig.signal, sig.protocol, sig.outer_boundary), 0.0
    tic = time.perf_counter()
    _, target, _ = case_target(case, protocol=published_protocol(), refine=levels)
    seconds = time.perf_counter() - tic
    save_signals(path, target.signal, target.protocol, outer_boundary=target.outer_boundary,
                 refine=levels, case=case)
    return target, seconds


def flip_margin(case: str) -> dict:
    path = HERE / "near_symmetry.json"
    if not path.is_file():
        return {}
    for row in json.loads(path.read_text())["cases"]:
        if row["case"] == case:
            return {"truth_flip_min": row["truth_flip_min"],
                    "truth_flip_median": row["truth_flip_median"]}
    return {}


def gap_row(case: str, levels: int, out: Path, greedy: bool,
            weights: tuple[float, ...] = DEFAULT_WEIGHTS) -> dict:
    from landscape import RegionLoss, _flip, descend
    from threadpoolctl import threadpool_limits

    from spinverse.mesh.phantoms import barrier_faces
    from spinverse.recon.metrics import best_aligned_scores

    with threadpool_limits(1):
        target, sim_s = refined_target(case, levels, out)
        f = RegionLoss(case, target=target)
        per = f.per_sequence(f.inside)
        part = "gap" if not greedy or weights == DEFAULT_WEIGHTS else (
            "gap_weights_" + "_".join(f"{w:g}" for w in weights))
        row = {"case": case, "part": part, "refine": levels,
               "truth_per_sequence": per.tolist(), "truth_loss": float(per.mean()),
               "target_seconds": sim_s, **flip_margin(case)}
        # How much one tet changes the signal, per sequence: every single-tet flip of the
        # truth against the truth's own (benchmark-grid) signal.
        own = RegionLoss(case)
        flips = [own.per_sequence(_flip(own.inside, t)) for t in own.boundary_tets(own.inside)]
        row["flip_per_sequence_median"] = np.median(flips, axis=0).tolist()
        row["flip_per_sequence_min"] = np.min(flips, axis=0).tolist()
        if greedy:
            tic = time.perf_counter()
            g = RegionLoss(case, weights=weights, target=target)
            state, current, steps = descend(g, g.inside.copy())
            pred = barrier_faces(f.grid, state)
            row.update({
                "greedy_weights": list(weights), "greedy_start_loss": g(g.inside),
                "greedy_loss": current, "greedy_steps": steps,
                "greedy_tets_off": int(np.sum(state != f.inside)),
                "greedy_f1": f.f1(state),
                "greedy_f1_aligned": best_aligned_scores(f.grid, pred, f.truth)["f1_aligned"],
                "greedy_per_sequence": f.per_sequence(state).tolist(),
                "greedy_seconds": time.perf_counter() - tic,
            })
    return row


def recon_row(case: str, levels: int, out: Path) -> dict:
    from threadpoolctl import threadpool_limits

    from spinverse.mesh.benchmark import benchmark_grid, case_barrier
    from spinverse.recon.config import published_preset
    from spinverse.recon.metrics import best_aligned_scores, closed_surface
    from spinverse.recon.workflow import reconstruct

    with threadpool_limits(1):
        target, _ = refined_target(case, levels, out)
        cfg = published_preset()
        cfg = cfg.model_copy(update={"parameterisation": cfg.parameterisation.model_copy(
            update={"start": "adc_ellipsoid"})})
        run = out / f"run_{case[:3]}_refine{levels}"
        tic = time.perf_counter()
        grid, truth = benchmark_grid(), case_barrier(case)
        rec, metrics = reconstruct(grid, target, run, config=cfg, reference_faces=truth,
                                   progress=False, extra={"case": case, "target_refine": levels})
        keep = ("f1", "f1_aligned", "chamfer", "chamfer_aligned", "bad_pct",
                "data_loss_per_sequence")
        closed = closed_surface(grid, rec.barrier)
        return {"case": case, "part": "recon", "refine": levels, "run": str(run),
                "seconds": time.perf_counter() - tic,
                **{k: metrics.get(k) for k in keep},
                "closed_f1_aligned": best_aligned_scores(grid, closed, truth)["f1_aligned"]}


def merge(rows: list[dict]) -> list[dict]:
    old = json.loads(JSON.read_text()) if JSON.is_file() else []
    key = {(r["case"], r["part"], r["refine"]): r for r in old}
    for r in rows:
        key[(r["case"], r["part"], r["refine"])] = r
    merged = sorted(key.values(), key=lambda r: (r["part"], r["refine"], r["case"]))
    JSON.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def print_table(rows: list[dict]) -> None:
    gaps = [r for r in rows if r["part"].startswith("gap")]
    if gaps:
        print("| case | refine | truth vs refined target: short / middle / long (mean) "
              "| one-tet flips of the truth, median: short / middle / long (mean) "
              "| greedy from the truth: loss, F1 aligned, tets off |")
        print("|---|---|---|---|---|")
        for r in gaps:
            per = " / ".join(f"{v:.4f}" for v in r["truth_per_sequence"])
            med = r["flip_per_sequence_median"]
            flips = " / ".join(f"{v:.4f}" for v in med) + (
                f" ({r['truth_flip_median']:.4f})" if "truth_flip_median" in r else "")
            greedy = (f"weights {r['greedy_weights']}: {r['greedy_start_loss']:.4f} → "
                      f"{r['greedy_loss']:.4f}, F1 aligned {r['greedy_f1_aligned']:.2f}, "
                      f"{r['greedy_tets_off']} tets off" if "greedy_loss" in r else "—")
            print(f"| {r['case'][:3]} | {r['refine']} | {per} ({r['truth_loss']:.4f}) "
                  f"| {flips} | {greedy} |")
    recs = [r for r in rows if r["part"] == "recon"]
    if recs:
        print("\n| case | refine | F1 | F1 aligned | Chamfer² µm² | bad edges % "
              "| closed F1 aligned | data short / middle / long | time s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in recs:
            per = " / ".join(f"{v:.3f}" for v in (r.get("data_loss_per_sequence") or []))
            print(f"| {r['case'][:3]} | {r['refine']} | {r['f1']:.2f} | {r['f1_aligned']:.2f} "
                  f"| {r['chamfer']:.2f} | {r['bad_pct']:.1f} "
                  f"| {r.get('closed_f1_aligned') or float('nan'):.2f} | {per} "
                  f"| {r['seconds']:.0f} |")


def main() -> None:
    from spinverse.mesh.benchmark import case_names, resolve_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", help="cases for the model error (default: all 16)")
    ap.add_argument("--refine", type=int, default=1, help="1:8 refinement levels of the target")
    ap.add_argument("--greedy", nargs="*", default=[],
                    help="cases for greedy descent from the truth (slow: minutes per step)")
    ap.add_argument("--greedy-weights", type=float, nargs="*", default=list(DEFAULT_WEIGHTS),
                    help="per-sequence weights of the descent's loss (default: the middle "
                         "and long sequences, which the published curriculum fits)")
    ap.add_argument("--recon", nargs="*", default=[], help="cases to reconstruct")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/inverse_crime"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [resolve_case(c) for c in args.cases] if args.cases is not None else case_names()
    recon = [resolve_case(c) for c in args.recon]
    greedy = {resolve_case(c) for c in args.greedy}
    cases += sorted(greedy - set(cases))
    weights = tuple(args.greedy_weights)
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        futs = [pool.submit(gap_row, c, args.refine, args.out, c in greedy, weights)
                for c in cases]
        futs += [pool.submit(recon_row, c, args.refine, args.out) for c in recon]
        for fut in futs:
            rows.append(fut.result())
            merge([rows[-1]])
            print(f"done {rows[-1]['case'][:3]} {rows[-1]['part']}", flush=True)
    print_table(merge([]))


if __name__ == "__main__":
    main()
