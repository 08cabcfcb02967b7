"""Does the first gradient point at the membrane?  (A diagnostic, not a timing.)

For each public case, the data loss of the published protocol's long sequence (δ/Δ =
10/60 ms, Robin outer faces, ℓ = 2 µm) is differentiated at a uniform start state
(κ = START µm/µs on every face). A positive ∂loss/∂v_f means "lower κ_f". The table
reports, per case: the retained magnetisation |S(b=0)| of the start state against the
target's (µm³), the fraction of faces whose gradient asks to close, how many of the true
barrier faces are among the top-ranked faces (as many as there are true ones), and the
ROC AUC of the gradient as a score for "is a true barrier face" (0.5 = no information).

Usage: ``python studies/gradient_method/start_gradient.py [--start 1e-2 1e-3] [--cases 000 018]``;
prints a table and writes ``start_gradient.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(score)
    n1, n0 = int(label.sum()), int((~label).sum())
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def run_case(name: str, start: float) -> dict:
    import torch

    from spinverse.recon.config import published_preset
    from spinverse.recon.reconstructor import Reconstructor
    from spinverse.recon.targets import case_target

    grid, target, truth = case_target(name)
    rec = Reconstructor(grid, target, published_preset(), progress=False)
    v = torch.nn.Parameter(rec.param.logits_for_kappa(
        torch.full((grid.n_faces,), start, dtype=torch.float64)))
    t0 = time.perf_counter()
    loss = rec.data_loss(rec.param.kappa(v), 0)  # stage 0 of the preset: the long sequence
    loss.backward()
    seconds = time.perf_counter() - t0
    g = v.grad.numpy()
    label = np.zeros(grid.n_faces, bool)
    label[truth] = True
    top = np.argsort(-g)[: len(truth)]
    return {
        "case": name, "start_kappa": start, "loss": float(loss.detach()),
        "modes": rec.cache.last.n_modes, "s0_target": float(target.s0[2, 0]),
        "frac_close": float((g > 0).mean()),
        "true_in_top": int(label[top].sum()), "n_true": int(label.sum()),
        "auc": _auc(g, label), "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, nargs="*", default=[1e-2, 1e-3],
                    help="uniform start κ values, µm/µs")
    ap.add_argument("--cases", nargs="*", default=None, help="names or prefixes (default all)")
    args = ap.parse_args()
    from spinverse.forward import simulate_signal
    from spinverse.mesh import benchmark
    from spinverse.recon.targets import case_target

    names = [benchmark.resolve_case(c) for c in (args.cases or benchmark.case_names())]
    rows = []
    print("| case | start κ | modes | loss | S0 target / start µm³ | faces asking to close "
          "| true faces in top n | AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        grid, target, _ = case_target(name)
        for start in args.start:
            row = run_case(name, start)
            sim = simulate_signal(grid, np.full(grid.n_faces, start), target.protocol,
                                  outer_boundary=target.outer_boundary).signal
            row["s0_start"] = float(np.abs(sim[2, 0, 0]))
            rows.append(row)
            print(f"| {name[:14]} | {start:g} | {row['modes']} | {row['loss']:.1f} | "
                  f"{row['s0_target']:.0f} / {row['s0_start']:.1f} | "
                  f"{100 * row['frac_close']:.0f} % | {row['true_in_top']} / {row['n_true']} | "
                  f"{row['auc']:.2f} |", flush=True)
    (HERE / "start_gradient.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
