"""Near-symmetries of the published protocol on the benchmark grid: the data loss of each
target's images under the 24 rotations of the cube (about the grid's centre).

The signal is blind to point reflection (an exact symmetry: every reflected image has the
same loss as its rotation) and lattice translations. The 30 Fibonacci directions have one
more exact symmetry, the 180° rotation about the horizontal axis at azimuth
(29·π(3 − √5) mod 2π)/2 ≈ 13.86°; that axis is not a symmetry axis of the grid, but the
grid's 180° rotation about x is 13.86° from it. This script measures how close that (and
every other) rotated copy of the truth comes to the truth's own loss, beside the loss of
the truth's single-tet neighbours. A region's κ: 1e-5 µm/µs on its surface, 0.1 elsewhere
(as in ``landscape.py``).

    python studies/gradient_method/near_symmetry.py [--cases 000 001 ...] [--workers 2] [--runs DIR]

``--runs`` (default: the committed ADC-start sweep ``results/adc_all/both``): each case's
finished run is also scored against every rotated copy of the truth, to see whether a
wrong shape is a rotated twin.

Writes ``near_symmetry.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rotations() -> list[np.ndarray]:
    """The 24 proper rotations of the cube (signed permutation matrices, det +1)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return out


def protocol_axis() -> np.ndarray:
    """The axis of the 180° rotation that maps the published direction set onto itself."""
    azimuth = (29 * np.pi * (3 - np.sqrt(5))) % (2 * np.pi) / 2
    return np.array([np.cos(azimuth), np.sin(azimuth), 0.0])


DEFAULT_RUNS = HERE / "results" / "adc_all" / "both"


def run_barrier(runs: Path, case: str) -> np.ndarray | None:
    """The barrier (κ < 1e-3) of the finished run of ``case`` under ``runs``, if any."""
    from spinverse.recon.metrics import barrier_from_kappa

    files = sorted(runs.glob(f"{case[:3]}*/*/kappa.npz"))
    return barrier_from_kappa(np.load(files[0])["kappa"]) if files else None


def case_row(case: str, runs: Path = DEFAULT_RUNS) -> dict:
    from landscape import RegionLoss, _flip
    from threadpoolctl import threadpool_limits

    from spinverse.mesh.phantoms import barrier_faces
    from spinverse.recon.metrics import best_aligned_scores

    with threadpool_limits(1):
        tic = time.perf_counter()
        f = RegionLoss(case)
        grid = f.grid
        centroids = grid.points[grid.tets].mean(axis=1)
        centre = centroids.mean(axis=0)
        rows = []
        pred = run_barrier(runs, case)
        for m in rotations():
            mapped = (centroids - centre) @ m.T + centre
            d = np.linalg.norm(mapped[:, None, :] - centroids[None, :, :], axis=2)
            to = d.argmin(axis=1)
            if d[np.arange(len(to)), to].max() > 1e-6:
                raise RuntimeError("the grid is not symmetric under a cube rotation")
            image = np.zeros_like(f.inside)
            image[to[f.inside]] = True
            image_faces = barrier_faces(grid, image)
            run_f1 = (None if pred is None else
                      float(best_aligned_scores(grid, pred, image_faces)["f1_aligned"]))
            if np.allclose(m, np.eye(3)):
                run_f1_identity = run_f1
                continue
            scores = best_aligned_scores(grid, image_faces, f.truth)
            angle = np.degrees(np.arccos(np.clip((np.trace(m) - 1) / 2, -1, 1)))
            rows.append({"matrix": m.astype(int).tolist(), "angle_deg": float(angle),
                         "loss": f(image), "per_sequence": f.per_sequence(image).tolist(),
                         "f1_aligned": float(scores["f1_aligned"]),
                         "run_f1_aligned": run_f1})
        flips = np.array([f(_flip(f.inside, t)) for t in f.boundary_tets(f.inside)])
    rows.sort(key=lambda r: r["loss"])
    return {"case": f.name, "rotations": rows, "run_f1_aligned": run_f1_identity,
            "truth_flip_min": float(flips.min()), "truth_flip_median": float(np.median(flips)),
            "n_flips": len(flips), "seconds": time.perf_counter() - tic}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=None, help="default: all 16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                    help="finished runs (CASE*/*/kappa.npz) scored against every rotated truth")
    ap.add_argument("--out", type=Path, default=HERE / "near_symmetry.json")
    args = ap.parse_args()
    from spinverse.acquisition import published_protocol
    from spinverse.mesh.benchmark import case_names

    g = published_protocol().directions
    u = protocol_axis()
    r = 2 * np.outer(u, u) - np.eye(3)
    worst = float(np.max(1 - np.abs(g @ r.T @ g.T).max(axis=1)))
    print(f"directions mapped onto themselves (±) by the 180° rotation about "
          f"({u[0]:.4f}, {u[1]:.4f}, 0): max 1 − |cos| = {worst:.1e}")
    cases = args.cases or [n[:3] for n in case_names()]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(case_row, cases, [args.runs] * len(cases)))
    args.out.write_text(json.dumps({"protocol_axis": u.tolist(), "cases": rows}, indent=1))
    print("| case | truth's single-tet flips: min / median loss | lowest rotated copy: "
          "rotation | loss (short / middle / long) | its F1 aligned | next rotation's loss |")
    print("|---" * 6 + "|")
    for row in rows:
        best, nxt = row["rotations"][0], row["rotations"][1]
        axis = "x" if best["matrix"][0][0] == 1 else ("y" if best["matrix"][1][1] == 1
                                                      else "z" if best["matrix"][2][2] == 1
                                                      else "other")
        ps = " / ".join(f"{v:.4f}" for v in best["per_sequence"])
        print(f"| {row['case'][:3]} | {row['truth_flip_min']:.4f} / "
              f"{row['truth_flip_median']:.4f} | {best['angle_deg']:.0f}° about {axis} | "
              f"{best['loss']:.4f} ({ps}) | {best['f1_aligned']:.2f} | {nxt['loss']:.4f} |")
    print(f"\nF1 aligned of the runs under {args.runs} against the truth and against the best"
          " rotated copy of it:")
    for row in rows:
        if row["run_f1_aligned"] is None:
            continue
        best = max(row["rotations"], key=lambda r: r["run_f1_aligned"])
        if best["run_f1_aligned"] <= row["run_f1_aligned"]:
            print(f"  {row['case'][:3]}: {row['run_f1_aligned']:.2f} (no rotation does better)")
        else:
            print(f"  {row['case'][:3]}: {row['run_f1_aligned']:.2f}, best rotated "
                  f"{best['run_f1_aligned']:.2f} ({best['angle_deg']:.0f}°)")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
