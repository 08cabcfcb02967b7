"""The default reconstruction (whole-shape search) on the public cases and on phantoms.

Per row: a target simulated with the published protocol and Robin outer faces (the public
case's truth, or a phantom voxelised on the benchmark grid), optionally with Rician noise,
reconstructed by ``spinverse.recon.workflow.reconstruct`` with the default
:class:`~spinverse.recon.search.SearchConfig` (the CLI's ``spinverse reconstruct`` without
a config). Columns: face F1 modulo translations and point reflection, bad edges of the raw
κ < 1e-3 surface, the answer's data loss, the truth's one-tet level (median loss of 12
random one-tet moves of the truth; with noise, the truth's own loss is added), the answer's
best overlap with the truth's symmetry images under lattice shifts (twin), the ensemble's
size, the mean barrier probability on the true faces, and the wall time. A calibration
table pools the barrier probability of every face over the rows.

    python benchmarks/search.py [--cases all | 000 001 ...] [--phantoms]
        [--noise rician --snr 50 --seeds 0 1 2] [--budget N] [--out DIR] [--json FILE]
    python benchmarks/search.py --markdown     # the README tables from the JSON, no run

Each row's run folder (kappa.npz, metrics.json, figures) goes to ``DIR/<row>``; the rows are
merged into ``--json`` (default ``benchmarks/search.json``) by row name, so a table can be
built up over several invocations. Finished rows are skipped (delete the folder to redo).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BINS = (0.0, 1e-9, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 + 1e-9)


def phantom_shapes() -> dict[str, object]:
    """Four shapes that are not single tubes (µm, on the benchmark box ±13.3 µm); a tet is
    inside when its centroid is (then repaired to a closed 2-manifold surface)."""
    from spinverse.mesh.phantoms import Ellipsoid, Sphere, Torus, Tube, Union

    tilt = np.linalg.qr(np.array([[1.0, 0.4, 0.2], [0.3, 1.0, -0.5], [0.1, 0.6, 1.0]]))[0]
    return {
        "p1_two_spheres": Union((Sphere([-6.5, -6.0, -5.0], 6.2), Sphere([6.0, 6.5, 5.5], 5.5))),
        "p2_oblique_ellipsoid": Ellipsoid([0.5, -0.5, 0.0], [12.0, 7.5, 5.5], tilt),
        "p3_tilted_torus": Torus([0.0, 0.0, 0.0], [0.3, 0.2, 1.0], 8.0, 4.0),
        "p4_branching_axon": Union((
            Tube(np.array([[-16.0, -3.0, 0.0], [0.0, 0.0, 1.0], [16.0, -5.0, 2.0]]), 5.0),
            Tube(np.array([[0.0, 0.0, 1.0], [4.0, 16.0, -3.0]]), 4.6))),
    }


def row_target(name: str, noise: str | None, snr: float, seed: int):
    """(grid, target, truth faces) of a public case or a phantom, noise added."""
    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.mesh.benchmark import benchmark_grid
    from spinverse.mesh.phantoms import phantom_kappa
    from spinverse.recon.noise import add_noise
    from spinverse.recon.search import RegionSpace
    from spinverse.recon.targets import Target, case_target

    shapes = phantom_shapes()
    if name in shapes:
        grid = benchmark_grid()
        space = RegionSpace(grid)  # voxelised by tet centroid, made a closed 2-manifold
        truth = space.faces(space.repair(shapes[name].contains(grid.tet_centroids)))
        prot = published_protocol()
        sim = simulate_signal(grid, phantom_kappa(grid, truth), prot, outer_boundary="robin")
        target = Target(sim.signal, prot, "robin")
    else:
        grid, target, truth = case_target(name)
    if noise:
        target = Target(add_noise(target.signal, snr=snr, kind=noise, seed=seed),
                        target.protocol, target.outer_boundary)
    return grid, target, truth


def run_row(name: str, out: Path, noise: str | None, snr: float, seed: int,
            budget: int | None) -> dict:
    from spinverse.recon.search import SearchConfig
    from spinverse.recon.workflow import reconstruct

    grid, target, truth = row_target(name, noise, snr, seed)
    cfg = SearchConfig()
    if budget is not None:
        cfg = cfg.model_copy(update={"budget": budget})
    if noise:
        cfg = cfg.model_copy(update={"ensemble": cfg.ensemble.model_copy(update={"snr": snr}),
                                     "seed": seed})
    tic = time.perf_counter()
    _, m = reconstruct(grid, target, out, config=cfg, reference_faces=truth, progress=False)
    row = {k: m.get(k) for k in (
        "f1", "f1_aligned", "bad_pct", "answer_loss", "truth_loss", "truth_one_tet_level",
        "truth_one_tet_increase", "twin_overlap", "answer_tet_dice", "truth_in_ensemble",
        "ensemble_best_tet_dice", "ensemble_size", "ensemble_tolerance",
        "barrier_probability_on_truth_mean", "neighbour_loss_increase_median",
        "simulations", "peak_rss_mb", "peak_rss_workers_mb", "chamfer_aligned")}
    row.update(name=name, noise=noise or "none", snr=snr if noise else None, seed=seed,
               budget=cfg.budget, seconds=time.perf_counter() - tic)
    level = row["truth_one_tet_increase"] + (row["truth_loss"] if noise else 0.0)
    row["loss_at_or_below_one_tet_level"] = bool(row["answer_loss"] <= level)
    return row


def calibration(rows: list[dict], out: Path) -> list[dict]:
    """Reliability of barrier_probability pooled over the rows: per bin of predicted p,
    the faces and the observed frequency of true barrier faces (the probability map is
    moved into the truth's frame by the alignment that scores the answer best)."""
    from spinverse.recon.metrics import align_face_values

    pred, hit = [], []
    for row in rows:
        folder = out / row["key"]
        grid, _, truth = row_target(row["name"], None, 0.0, 0)
        with np.load(folder / "kappa.npz") as k:
            p = align_face_values(grid, k["barrier"], truth, k["barrier_probability"])
        is_true = np.zeros(grid.n_faces, dtype=bool)
        is_true[truth] = True
        pred.append(p)
        hit.append(is_true)
    p, h = np.concatenate(pred), np.concatenate(hit)
    table = []
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        sel = (p >= lo) & (p < hi)
        table.append({"bin": f"[{lo:.2g}, {min(hi, 1):.2g}{']' if hi > 1 else ')'}",
                      "faces": int(sel.sum()),
                      "mean_predicted": float(p[sel].mean()) if sel.any() else None,
                      "observed": float(h[sel].mean()) if sel.any() else None})
    return table


def markdown(data: dict) -> str:
    """The benchmarks/README tables of the rows and calibrations in ``data``."""
    def f(x, fmt):
        return "—" if x is None else format(x, fmt)

    out = []
    groups = {"public cases, noise-free": lambda k: k[:1].isdigit() and "_" not in k,
              "Rician noise": lambda k: "_rician" in k or "_gaussian" in k,
              "phantoms": lambda k: k.startswith("p")}
    for title, sel in groups.items():
        rows = [r for k, r in sorted(data["rows"].items()) if sel(k)]
        if not rows:
            continue
        noisy = title == "Rician noise"
        out += [f"**{title}**", "",
                "| row | F1 | bad % | answer loss | " + ("truth loss + level" if noisy else
                                                         "one-tet level")
                + " | ≤ level | twin | ensemble | truth in it | p on truth | time s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            level = r["truth_one_tet_increase"] + (r["truth_loss"] if noisy else 0.0)
            out.append(
                f"| {r['key']} | {f(r['f1_aligned'], '.2f')} | {f(r['bad_pct'], '.1f')} | "
                f"{f(r['answer_loss'], '.4f')} | {level:.4f} | "
                f"{'yes' if r['loss_at_or_below_one_tet_level'] else '**no**'} | "
                f"{f(r['twin_overlap'], '.2f')} | {r['ensemble_size']} | "
                f"{'yes' if r['truth_in_ensemble'] else 'no'} | "
                f"{f(r['barrier_probability_on_truth_mean'], '.2f')} | {r['seconds']:.0f} |")
        out.append("")
    for key in ("calibration_cases", "calibration_phantoms"):
        if key in data:
            out += [f"**barrier_probability reliability ({key.split('_')[1]}, pooled faces)**",
                    "", "| predicted p | faces | mean predicted | observed frequency |",
                    "|---|---|---|---|"]
            out += [f"| {c['bin']} | {c['faces']} | {f(c['mean_predicted'], '.3f')} | "
                    f"{f(c['observed'], '.3f')} |" for c in data[key]]
            out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=["all"])
    ap.add_argument("--phantoms", action="store_true", help="the four phantom rows instead")
    ap.add_argument("--noise", choices=("rician", "gaussian"), default=None)
    ap.add_argument("--snr", type=float, default=50.0)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/spinverse-search"))
    ap.add_argument("--json", type=Path, default=HERE / "search.json")
    ap.add_argument("--markdown", action="store_true",
                    help="print the README tables of --json and stop")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.json.read_text())))
        return
    from spinverse.mesh.benchmark import case_names

    if args.phantoms:
        names = list(phantom_shapes())
    elif args.cases == ["all"]:
        names = [n[:3] for n in case_names()]
    else:
        names = args.cases
    seeds = args.seeds if args.noise else [0]
    data = json.loads(args.json.read_text()) if args.json.exists() else {"rows": {}}
    rows = []
    for name in names:
        for seed in seeds:
            key = name + (f"_{args.noise}{args.snr:g}_s{seed}" if args.noise else "")
            folder = args.out / key
            if key in data["rows"] and (folder / "metrics.json").exists():
                row = data["rows"][key]
            else:
                row = run_row(name, folder, args.noise, args.snr, seed, args.budget)
                row["key"] = key
                data["rows"][key] = row
                args.json.write_text(json.dumps(data, indent=1))
            rows.append(row)
            print(f"{key:<28} F1 {row['f1_aligned']:.2f}  bad {row['bad_pct']:.1f} %  "
                  f"loss {row['answer_loss']:.4f}  level {row['truth_one_tet_level']:.4f}  "
                  f"twin {row['twin_overlap']:.2f}  ens {row['ensemble_size']}  "
                  f"p(true) {row['barrier_probability_on_truth_mean']:.2f}  "
                  f"{row['seconds']:.0f} s", flush=True)
    if not args.noise:
        cal = calibration(rows, args.out)
        data["calibration_" + ("phantoms" if args.phantoms else "cases")] = cal
        args.json.write_text(json.dumps(data, indent=1))
        print("\nbarrier_probability reliability (pooled faces):")
        for c in cal:
            obs = "—" if c["observed"] is None else f"{c['observed']:.3f}"
            print(f"  {c['bin']:<14} faces {c['faces']:>6}  observed {obs}")
    passed = sum(r["loss_at_or_below_one_tet_level"] for r in rows)
    print(f"\nanswer loss at or below the truth's one-tet level: {passed} of {len(rows)}; "
          f"0 % bad edges: {sum(r['bad_pct'] == 0 for r in rows)} of {len(rows)}; "
          f"median time {np.median([r['seconds'] for r in rows]):.0f} s")


if __name__ == "__main__":
    main()
