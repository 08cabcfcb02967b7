"""Reconstruction benchmark: every public case, the published setting (noise-free,
reference-compatible Robin boundary, the 3-sequence protocol), one or more ablation arms.

Each run writes its own folder under --out (kappa, metrics, figures); a finished run
(metrics.json present) is skipped, so rerunning resumes. The table (markdown + JSON)
reports Chamfer², face F1 (raw and at the best lattice/reflection alignment), bad-edge %,
final data loss and wall time per case and arm.

    python benchmarks/reconstruction.py --arms both                   # the method
    python benchmarks/reconstruction.py --arms curriculum continuity manifold both joint
    python benchmarks/reconstruction.py --cases 017 018 --iterations 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARMS = ("curriculum", "continuity", "manifold", "both", "joint")


def run_case(case: str, arm: str, out: Path, iterations: int | None, noise: str | None,
             snr: float, seed: int) -> dict:
    from threadpoolctl import threadpool_limits

    from spinverse.recon.config import ablation_arm, no_curriculum
    from spinverse.recon.noise import add_noise
    from spinverse.recon.reconstructor import Target
    from spinverse.recon.workflow import case_target, reconstruct

    run_dir = out / arm / case
    done = run_dir / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = no_curriculum() if arm == "joint" else ablation_arm(arm)
    cfg = cfg.model_copy(update={"seed": seed})
    if iterations:
        factor = iterations / cfg.total_iterations
        cfg = cfg.model_copy(update={"stages": [
            s.model_copy(update={"iterations": max(1, round(s.iterations * factor)),
                                 "warmup": round(s.warmup * factor)}) for s in cfg.stages]})
    grid, target, reference = case_target(case)
    if noise:
        target = Target(add_noise(target.signal, snr=snr, kind=noise, seed=seed),
                        target.protocol, target.outer_boundary)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        _, metrics = reconstruct(grid, target, run_dir, config=cfg, reference_faces=reference,
                                 progress=False,
                                 extra={"case": case, "arm": arm, "noise": noise or "none",
                                        "snr": snr if noise else None, "seed": seed})
    metrics["wall_seconds"] = time.perf_counter() - t0
    done.write_text(json.dumps(metrics, indent=1))
    return metrics


def table(rows: list[dict]) -> str:
    head = ("| case | arm | Chamfer² µm² | F1 | F1 aligned | bad edges % | open | branching "
            "| data loss | time s |")
    lines = [head, "|" + "---|" * 10]
    for m in rows:
        lines.append(
            f"| {m['case']} | {m['arm']} | {m.get('chamfer', float('nan')):.3g} | "
            f"{m.get('f1', float('nan')):.3f} | {m.get('f1_aligned', float('nan')):.3f} | "
            f"{m.get('bad_pct', float('nan')):.1f} | {m.get('open_edges', '')} | "
            f"{m.get('branching_edges', '')} | {m.get('data_loss_final_stage', float('nan')):.2e} "
            f"| {m.get('seconds', float('nan')):.0f} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    out = ["| arm | runs | F1 aligned ≥ 0.9 and 0 % bad edges | mean F1 aligned | "
           "mean Chamfer² | mean bad edges % |", "|---|---|---|---|---|---|"]
    for arm in ARMS:
        ms = [m for m in rows if m["arm"] == arm]
        if not ms:
            continue
        good = sum(1 for m in ms if m.get("f1_aligned", 0) >= 0.9 and m.get("bad_pct", 1) == 0)
        mean = (lambda k: sum(m.get(k, 0) for m in ms) / len(ms))  # noqa: E731
        out.append(f"| {arm} | {len(ms)} | {good} | {mean('f1_aligned'):.3f} | "
                   f"{mean('chamfer'):.3g} | {mean('bad_pct'):.2f} |")
    return "\n".join(out)


def main() -> None:
    from spinverse.mesh.benchmark import case_names, resolve_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", help="case names or prefixes (default: all 16)")
    ap.add_argument("--arms", nargs="*", default=["both"], choices=ARMS)
    ap.add_argument("--iterations", type=int, help="total iterations (default 400)")
    ap.add_argument("--noise", choices=["rician", "gaussian"])
    ap.add_argument("--snr", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "reconstruction")
    args = ap.parse_args()
    cases = [resolve_case(c) for c in args.cases] if args.cases else case_names()
    jobs = [(c, a) for a in args.arms for c in cases]
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = {pool.submit(run_case, c, a, args.out, args.iterations, args.noise, args.snr,
                            args.seed): (c, a) for c, a in jobs}
        for fut in as_completed(futs):
            c, a = futs[fut]
            try:
                m = fut.result()
            except Exception as exc:  # keep going; report the failure in the table
                print(f"{a}/{c}: failed: {exc}", file=sys.stderr)
                continue
            m["case"], m["arm"] = c[:3] if c[:3].isdigit() else c, a
            rows.append(m)
            print(f"{a:>11} {c[:24]:<24} F1 {m.get('f1', 0):.3f} aligned "
                  f"{m.get('f1_aligned', 0):.3f} bad {m.get('bad_pct', 0):.1f} % "
                  f"chamfer {m.get('chamfer', 0):.3g} {m.get('seconds', 0):.0f} s", flush=True)
    rows.sort(key=lambda m: (ARMS.index(m["arm"]), m["case"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    md = summary(rows) + "\n\n" + table(rows) + "\n"
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
