"""Reconstruction benchmark on the public cases, through the sweep machinery.

The published setting: noise-free targets simulated with the published 3-sequence
protocol and the reference-compatible Robin boundary, 400 iterations. Each run writes its
own folder; finished runs are skipped, so rerunning resumes. Ends with report.md
(per-arm mean ± std, per-case Chamfer², F1 raw and at the best lattice/reflection
alignment, bad-edge %, time) and figures.

    cd studies/gradient_method
    python reconstruction.py                      # the method ("both"), 16 cases
    python reconstruction.py --arms curriculum continuity manifold both joint
    python reconstruction.py --cases 017 018 --iterations 100
    python reconstruction.py --noise rician --snr 50
    python reconstruction.py --length-scale 4 --start-kappa 1e-2 --iterations 80
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    from spinverse.sweep.report import write_report
    from spinverse.sweep.runner import run_sweep
    from spinverse.sweep.spec import PRESETS, Arm, Noise, SweepConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", help="names or prefixes (default: all 16)")
    ap.add_argument("--arms", nargs="*", default=["both"], choices=PRESETS)
    ap.add_argument("--iterations", type=int, help="total iterations (default 400)")
    ap.add_argument("--noise", choices=["rician", "gaussian"])
    ap.add_argument("--snr", type=float, default=100.0)
    ap.add_argument("--length-scale", type=float,
                    help="eigen truncation length ℓ in µm (default: the published 2 µm)")
    ap.add_argument("--start-kappa", type=float,
                    help="initial κ on every face in µm/µs (default: the preset's 1e-3)")
    ap.add_argument("--start", choices=["uniform", "adc_ellipsoid", "adc_tube"],
                    help="start state (default: the preset's uniform κ)")
    ap.add_argument("--joint-sequences", nargs="*",
                    help="sequences of the 'joint' arm's single stage: 'all' or indices "
                         "(default: the preset's long and middle ones, 1 2)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", help="Dask scheduler address or 'synchronous'")
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "reconstruction")
    args = ap.parse_args()
    param = {k: v for k, v in (("start_kappa", args.start_kappa), ("start", args.start))
             if v is not None}
    overrides = {"parameterisation": param} if param else {}
    noise = [Noise(kind=args.noise, snr=args.snr)] if args.noise else ["none"]

    def arm_overrides(arm: str) -> dict:
        if arm != "joint" or not args.joint_sequences:
            return overrides
        from spinverse.recon.config import no_curriculum

        seqs = ("all" if args.joint_sequences == ["all"]
                else [int(i) for i in args.joint_sequences])
        stage = no_curriculum(sequences=seqs).stages[0].model_dump()
        return {**overrides, "stages": [stage]}

    sweep = SweepConfig(
        cases=args.cases or "all",
        arms={a: Arm(preset=a, iterations=args.iterations, length_scale=args.length_scale,
                     config=arm_overrides(a)) for a in args.arms},
        seeds=args.seeds,
        noise=noise,
    )
    run_sweep(sweep, args.out, scheduler=args.scheduler, workers=args.workers)
    print((write_report(args.out)).read_text())


if __name__ == "__main__":
    main()
