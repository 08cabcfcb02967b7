"""Aggregate a sweep folder into one table and a markdown report with figures.

``collect(out)`` reads every run folder's ``metrics.json`` / ``error.json``;
``write_report(out)`` writes ``results.csv``, ``results.json`` (and ``results.parquet``
when pyarrow is installed), ``report.md`` (per-arm mean ± std, per-case tables), and
``boxplots.png`` / ``surfaces.png``. ``spinverse report SWEEP_DIR`` rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.sweep.runner import ERROR, METRICS

#: Columns reported per run (those present).
COLUMNS = ["run_id", "arm", "case", "seed", "noise", "status", "chamfer", "chamfer_aligned",
           "f1", "f1_aligned", "precision", "recall", "bad_pct", "open_edges",
           "branching_edges", "volume_error", "data_loss_final_stage", "seconds",
           "wall_seconds", "peak_rss_mb", "barrier_faces", "alignment", "closed_f1",
           "closed_f1_aligned", "closed_chamfer", "closed_bad_pct", "error"]
#: Columns that hold text; in the others a string is a number (``"inf"``).
TEXT_COLUMNS = {"run_id", "arm", "case", "noise", "status", "alignment", "error"}
SCORES = [("f1_aligned", "F1 (aligned)"), ("chamfer_aligned", "Chamfer² µm² (aligned)"),
          ("bad_pct", "bad edges %")]


def collect(out: str | Path) -> list[dict[str, Any]]:
    """One record per run folder found under ``out`` (finished or failed)."""
    rows = []
    for path in sorted(Path(out).rglob(METRICS)) + sorted(Path(out).rglob(ERROR)):
        rec = json.loads(path.read_text())
        rec.setdefault("status", "done" if path.name == METRICS else "failed")
        rec.setdefault("run_id", str(path.parent.relative_to(out)))
        rows.append({k: rec.get(k) for k in COLUMNS} | {"_folder": str(path.parent)})
    done_ids = {r["run_id"] for r in rows if r["status"] == "done"}
    return [r for r in rows if r["status"] == "done" or r["run_id"] not in done_ids]


def rescore(out: str | Path) -> int:
    """Recompute the accuracy metrics of every finished benchmark-case run under ``out``
    from its ``kappa.npz`` with the current :func:`spinverse.recon.metrics.evaluate`
    (e.g. after a metric was added); other keys are kept. Returns the runs updated."""
    from spinverse.mesh.benchmark import benchmark_grid, case_barrier, case_names
    from spinverse.recon.metrics import evaluate
    from spinverse.recon.outputs import to_jsonable

    names = set(case_names())
    grid = None
    n = 0
    for path in sorted(Path(out).rglob(METRICS)):
        rec = json.loads(path.read_text())
        kfile = path.parent / "kappa.npz"
        if rec.get("case") not in names or not kfile.is_file():
            continue
        if grid is None:
            grid = benchmark_grid()
        with np.load(kfile) as z:
            kappa = z["kappa"]
            threshold = float(z["threshold"]) if "threshold" in z else 1e-3
        rec.update(evaluate(grid, kappa, case_barrier(rec["case"]), threshold=threshold))
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(to_jsonable(rec), indent=1))
        tmp.replace(path)
        n += 1
    return n


def _mean_std(values: list[float]) -> str:
    v = np.array([x for x in map(_num, values) if x is not None and np.isfinite(x)],
                 dtype=float)
    if len(v) == 0:
        return "–"
    return f"{v.mean():.3g} ± {v.std():.2g}"


def write_report(out: str | Path, *, figures: bool = True) -> Path:
    """Write the tables, the markdown report and the figures; returns report.md."""
    import pandas as pd

    out = Path(out)
    rows = collect(out)
    df = pd.DataFrame([{k: _num(r[k]) if k not in TEXT_COLUMNS and isinstance(r[k], str)
                        else r[k] for k in COLUMNS} for r in rows], columns=COLUMNS)
    df.to_csv(out / "results.csv", index=False)
    (out / "results.json").write_text(json.dumps([{k: r[k] for k in COLUMNS} for r in rows],
                                                 indent=1, default=str))
    try:
        df.astype({"alignment": str, "error": str}).to_parquet(out / "results.parquet")
    except ImportError:
        pass
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] != "done"]
    arms = sorted({r["arm"] for r in done})
    lines = [f"# Sweep report: {out.name}", "",
             f"{len(done)} runs finished, {len(failed)} failed.", "",
             "## Per arm (mean ± std over cases, seeds and noise levels)", "",
             "| arm | runs | F1 ≥ 0.9 & 0 % bad edges | F1 | F1 aligned | Chamfer² µm² | "
             "Chamfer² aligned | bad edges % | closed: F1 ≥ 0.9 & 0 % bad | closed F1 aligned "
             "| closed Chamfer² | closed bad edges % | time s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        rs = [r for r in done if r["arm"] == arm]
        good = sum(1 for r in rs if (r["f1_aligned"] or 0) >= 0.9 and r["bad_pct"] == 0)
        good_c = sum(1 for r in rs
                     if (r["closed_f1_aligned"] or 0) >= 0.9 and r["closed_bad_pct"] == 0)
        lines.append(
            f"| {arm} | {len(rs)} | {good} | {_mean_std([r['f1'] for r in rs])} | "
            f"{_mean_std([r['f1_aligned'] for r in rs])} | "
            f"{_mean_std([r['chamfer'] for r in rs])} | "
            f"{_mean_std([r['chamfer_aligned'] for r in rs])} | "
            f"{_mean_std([r['bad_pct'] for r in rs])} | "
            f"{good_c if any(r['closed_f1'] is not None for r in rs) else '–'} | "
            f"{_mean_std([r['closed_f1_aligned'] for r in rs])} | "
            f"{_mean_std([r['closed_chamfer'] for r in rs])} | "
            f"{_mean_std([r['closed_bad_pct'] for r in rs])} | "
            f"{_mean_std([r['seconds'] for r in rs])} |")
    lines += ["", "## Per case", "",
              "| case | arm | seed | noise | F1 | F1 aligned | Chamfer² | bad edges % | "
              "open | branching | closed F1 aligned | closed Chamfer² | closed bad % | time s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(done, key=lambda r: (r["case"], r["arm"], r["seed"], r["noise"])):
        lines.append(
            f"| {r['case']} | {r['arm']} | {r['seed']} | {r['noise']} | {_f(r['f1'])} | "
            f"{_f(r['f1_aligned'])} | {_f(r['chamfer'])} | {_f(r['bad_pct'], 1)} | "
            f"{r['open_edges']} | {r['branching_edges']} | {_f(r['closed_f1_aligned'])} | "
            f"{_f(r['closed_chamfer'])} | {_f(r['closed_bad_pct'], 1)} | "
            f"{_f(r['seconds'], 0)} |")
    if failed:
        lines += ["", "## Failed runs", "", "| run | error |", "|---|---|"]
        lines += [f"| {r['run_id']} | {str(r['error'])[:200]} |" for r in failed]
    if figures and done:
        _boxplots(out / "boxplots.png", done, arms)
        _surface_grid(out / "surfaces.png", done)
        lines += ["", "![scores per arm](boxplots.png)", "",
                  "![recovered surfaces](surfaces.png)"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _num(x: Any) -> float | None:
    """A metric as a float (``metrics.json`` writes inf as the string "inf")."""
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _f(x: Any, digits: int = 3) -> str:
    v = _num(x)
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if digits else f"{v:.0f}"


def _boxplots(path: Path, rows: list[dict], arms: list[str]) -> None:
    from spinverse.viz.signals import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4.5 * len(SCORES), 3.6))
    for ax, (key, label) in zip(axes, SCORES, strict=True):
        data = [[r[key] for r in rows if r["arm"] == a and r[key] is not None] for a in arms]
        ax.boxplot(data, tick_labels=arms)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _surface_grid(path: Path, rows: list[dict], max_runs: int = 48) -> None:
    """Thumbnails of the recovered surfaces (barrier faces) of up to ``max_runs`` runs."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from spinverse.viz.signals import pyplot

    plt = pyplot()
    rows = sorted(rows, key=lambda r: (r["case"], r["arm"]))[:max_runs]
    ncol = min(8, len(rows))
    nrow = int(np.ceil(len(rows) / ncol))
    fig = plt.figure(figsize=(2.2 * ncol, 2.4 * nrow))
    for i, r in enumerate(rows):
        ax = fig.add_subplot(nrow, ncol, i + 1, projection="3d")
        try:
            import meshio

            surf = meshio.read(Path(r["_folder"]) / "surface.vtu")
            tri = surf.points[surf.cells_dict["triangle"]]
            ax.add_collection3d(Poly3DCollection(tri, facecolor=(0.2, 0.45, 0.8, 0.7),
                                                 edgecolor="k", linewidths=0.1))
            lo, hi = surf.points.min(0), surf.points.max(0)
            c, h = (lo + hi) / 2, (hi - lo).max() / 2 + 1e-9
            ax.set_xlim(c[0] - h, c[0] + h)
            ax.set_ylim(c[1] - h, c[1] + h)
            ax.set_zlim(c[2] - h, c[2] + h)
        except Exception:  # no surface (no barrier faces): leave the panel empty
            pass
        ax.set_axis_off()
        ax.set_title(f"{r['case'][:12]}\n{r['arm']} F1 {_f(r['f1_aligned'], 2)}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
