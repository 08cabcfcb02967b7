"""Coarse-to-fine reconstruction against targets from finer physics (issue: scale).

Per case: the public case's true surface simulated on the benchmark grid refined
``--refine-target`` times (continuous tissue off the barrier; published protocol), fitted
by ``spinverse reconstruct``'s default search on the benchmark grid (coarse only), then
corrected with the grid refined ``--refine`` times (:mod:`spinverse.recon.coarse_to_fine`).
Columns, for the coarse answer and the fine one: face F1 (modulo translations and point
reflection, on the benchmark grid's faces), Chamfer and Hausdorff distance (µm) to the true
surface, enclosed-volume error; the data losses of the answer and of the truth on each
model (an answer below the truth's loss: the model cannot prefer the truth); wall time.

    python benchmarks/coarse_to_fine.py --cases 018 016 007 000 [--refine-target 2]
        [--budget 1500] [--refine 1] [--refine-budget 600] [--outer-boundary reflecting]
        [--out DIR]
    python benchmarks/coarse_to_fine.py --markdown     # the README table from the JSON
    python benchmarks/coarse_to_fine.py --model-error 018 [--outer-boundary robin]

``--model-error CASE``: the truth simulated on the grid refined 0, 1 and 2 times, with
κ = 0.1 µm/µs (the benchmark convention) or ∞ (continuous tissue) off the barrier; each
row's data loss against the refine-2 continuous signal (the target above) and its time.

Each case's run folder goes to ``DIR/<case>`` (finished cases are read, not rerun); rows are
merged into ``--json`` (default ``benchmarks/coarse_to_fine.json``) by case and coarse
search budget (``case@budget``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run_case(case: str, out: Path, *, refine_target: int, refine: int, budget: int,
             refine_budget: int, outer_boundary: str) -> None:
    """``spinverse reconstruct --case CASE --refine-target N --outer-boundary B --budget S
    --refine M --refine-budget K --out OUT`` (the CLI's defaults otherwise)."""
    from spinverse.recon.search import SearchConfig
    from spinverse.recon.targets import case_target
    from spinverse.recon.workflow import reconstruct

    grid, target, barrier = case_target(case, refine=refine_target,
                                        outer_boundary=outer_boundary)
    reconstruct(grid, target, out, config=SearchConfig(budget=budget), reference_faces=barrier,
                progress=False, refine=refine, refine_budget=refine_budget,
                extra={"case": case, "target_refine": refine_target})


def row(case: str, out: Path) -> dict[str, Any]:
    """The table row of a finished run folder."""
    coarse = json.loads((out / "metrics.json").read_text())
    fine = json.loads((out / "refined" / "metrics.json").read_text())
    c2f = json.loads((out / "coarse_to_fine.json").read_text())
    surf = c2f["surface_um"]
    budget = None
    if (out / "config.yaml").exists():
        import yaml

        budget = yaml.safe_load((out / "config.yaml").read_text()).get("budget")
    return {
        "case": case, "outer_boundary": coarse["outer_boundary"], "budget": budget,
        "target_refine": coarse.get("target_refine"), "levels": c2f["levels"],
        "coarse_f1": coarse["f1_aligned"], "fine_f1": fine["f1_aligned"],
        "coarse_chamfer_um": surf["coarse"]["chamfer_um"],
        "fine_chamfer_um": surf["fine"]["chamfer_um"],
        "coarse_hausdorff_um": surf["coarse"]["hausdorff_um"],
        "fine_hausdorff_um": surf["fine"]["hausdorff_um"],
        "coarse_volume_error_rel": surf["coarse"]["volume_error_rel"],
        "fine_volume_error_rel": surf["fine"]["volume_error_rel"],
        "coarse_answer_loss": coarse["answer_loss"], "coarse_truth_loss": coarse["truth_loss"],
        "fine_answer_loss": c2f["fine_data_loss"], "fine_truth_loss": c2f["truth_fine_loss"],
        "coarse_answer_fine_loss": c2f["coarse_answer_fine_loss"],
        "rounds": len(c2f["rounds"]),
        "coarse_seconds": coarse["seconds"], "fine_seconds": c2f["seconds"],
        "fine_stage_coarse_simulations": c2f["coarse_simulations"],
        "fine_stage_fine_simulations": c2f["fine_simulations"],
        "peak_rss_mb": max(coarse.get("peak_rss_mb", 0), fine.get("peak_rss_mb", 0)),
        "peak_rss_workers_mb": coarse.get("peak_rss_workers_mb"),
    }


def model_error(case: str, outer_boundary: str) -> None:
    """Print the model-error table (see the module docstring)."""
    import numpy as np

    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.mesh import benchmark
    from spinverse.recon.targets import continuous_tissue, refined_model

    name = benchmark.resolve_case(case)
    grid, kappa = benchmark.benchmark_grid(), benchmark.case_kappa(name)
    prot = published_protocol()
    rows = []
    for level, open_faces in ((0, "0.1"), (0, "inf"), (1, "0.1"), (1, "inf"), (2, "inf")):
        g, k = (grid, kappa) if level == 0 else refined_model(grid, kappa, level,
                                                               new_faces=0.1)
        if open_faces == "inf":
            k = continuous_tissue(g, k, 0.1)
        tic = time.perf_counter()
        sig = simulate_signal(g, k, prot, outer_boundary=outer_boundary).signal
        rows.append((level, open_faces, g.n_tets, time.perf_counter() - tic, sig))
    ref = rows[-1][4]
    s0 = np.abs(ref[:, 0, :])[:, None, :]
    print(f"{case}, {outer_boundary} outer faces; loss against refine 2, continuous")
    print("| grid | tets | κ off the barrier | loss | time s |\n|---|---|---|---|---|")
    for level, open_faces, n, sec, sig in rows:
        loss = 100 * np.mean(((np.abs(sig) - np.abs(ref)) / s0) ** 2)
        print(f"| refine {level} | {n} | {open_faces} | {loss:.4f} | {sec:.1f} |")


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| case (budget) | answer | F1 | Chamfer µm | Hausdorff µm | volume error | "
            "answer loss | truth loss | time s |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        for level, label in (("coarse", "coarse search"),
                             ("fine", f"+ fine stage (refine {r['levels']})")):
            lines.append(
                f"| {r['case']} ({r.get('budget') or '?'}) | {label} | "
                f"{r[f'{level}_f1']:.2f} | "
                f"{r[f'{level}_chamfer_um']:.2f} | {r[f'{level}_hausdorff_um']:.1f} | "
                f"{100 * r[f'{level}_volume_error_rel']:+.1f} % | "
                f"{r[f'{level}_answer_loss']:.4f} | {r[f'{level}_truth_loss']:.4f} | "
                f"{r[f'{level}_seconds']:.0f}"
                + (f" (Σ {(r['coarse_seconds'] + r['fine_seconds']) / 60:.0f} min) |"
                   if level == "fine" else " |"))
    return "\n".join(lines)


def main() -> None:
    from spinverse.recon.coarse_to_fine import COARSE_BUDGET

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["018", "016", "007", "000"])
    ap.add_argument("--refine-target", type=int, default=2)
    ap.add_argument("--refine", type=int, default=1)
    ap.add_argument("--budget", type=int, default=COARSE_BUDGET,
                    help="coarse search budget (shapes; `reconstruct --refine`'s default)")
    ap.add_argument("--refine-budget", type=int, default=600)
    ap.add_argument("--outer-boundary", default="reflecting",
                    choices=("reflecting", "robin"))
    ap.add_argument("--out", type=Path, default=Path("runs/coarse_to_fine"))
    ap.add_argument("--json", type=Path, default=HERE / "coarse_to_fine.json")
    ap.add_argument("--markdown", action="store_true",
                    help="print the table of --json and exit")
    ap.add_argument("--model-error", metavar="CASE",
                    help="print the model error of the coarser grids for CASE and exit")
    args = ap.parse_args()
    if args.model_error:
        model_error(args.model_error, args.outer_boundary)
        return
    table = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.markdown:
        print(markdown(list(table.values())))
        return
    for case in args.cases:
        out = args.out / case
        if not (out / "coarse_to_fine.json").exists():
            tic = time.perf_counter()
            run_case(case, out, refine_target=args.refine_target, refine=args.refine,
                     budget=args.budget, refine_budget=args.refine_budget,
                     outer_boundary=args.outer_boundary)
            print(f"{case}: {time.perf_counter() - tic:.0f} s", flush=True)
        r = row(case, out)
        key = f"{case}@{r['budget']}"
        table[key] = {**table.get(key, {}), **r}  # keeps a hand-written "note"
        args.json.write_text(json.dumps(table, indent=1), encoding="utf-8")
    print(markdown(list(table.values())))


if __name__ == "__main__":
    main()
