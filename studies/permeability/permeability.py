"""Membrane permeability with the geometry given: accuracy, noise, a reconstructed geometry,
and the Kärger exchange model on the same signals.

Parts (``--parts``, default all), each a table printed and merged into ``permeability.json``
next to this file:

* ``accuracy``: noise-free targets of the published protocol (Robin outer faces, the
  benchmark's convention) for the cases' true membranes with κ_true on them (0.1 µm/µs
  elsewhere); ``spinverse.recon.permeability.fit_permeability``: relative error of κ, the
  CRLB at SNR 50 (Rician), the fit's cost.
* ``noise``: Rician SNR 50, ``--draws`` noise draws per (case, κ): the empirical std and bias
  of the fitted log10 κ against the CRLB.
* ``geometry``: κ fitted on the membrane of a finished reconstruction (``--runs DIR``, the
  ``kappa.npz`` of ``benchmarks/search.py``'s run folders) to the target simulated with the
  true membrane: the κ error a reconstructed geometry brings.
* ``karger``: reflecting outer faces (a sample with no leaky box, which the Kärger model
  assumes), the direction-averaged signal of the three sequences fitted by the two-site
  Kärger exchange model (narrow pulses, Gaussian phase in each compartment: fractions,
  two diffusivities, residence time τ_in, diffusion time Δ − δ/3); κ from τ_in = V/(κA)
  with the true V and A. Three set-ups (``KARGER_FITS``): the classical one D pair at
  b ≤ 2000 and at b ≤ 5000 s/mm², and one apparent D pair per diffusion time at b ≤ 5000
  (restricted compartments have time-dependent diffusivities); beside the simulator-based
  fit on the same signals.

    python studies/permeability/permeability.py [--parts accuracy noise geometry karger]
        [--cases 018 016 000 007] [--draws 50] [--runs /tmp/spinverse-search]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KAPPAS = (3e-6, 1e-5, 3e-5, 1e-4, 3e-4)
KARGER_KAPPAS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


def case_setup(case: str, kappa: float, boundary: str = "robin"):
    """(grid, target, membrane faces, V µm³, A µm²) for a case's membrane at κ."""
    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.mesh.benchmark import benchmark_grid, case_barrier, enclosed_tets
    from spinverse.recon.targets import Target

    grid = benchmark_grid()
    mem = case_barrier(case)
    k = np.full(grid.n_faces, 0.1)
    k[mem] = kappa
    prot = published_protocol()
    sim = simulate_signal(grid, k, prot, outer_boundary=boundary)
    inside = enclosed_tets(grid, mem)
    return (grid, Target(sim.signal, prot, boundary), mem, float(grid.volumes[inside].sum()),
            float(grid.face_areas[mem].sum()))


def accuracy(cases: list[str]) -> list[dict]:
    from spinverse.recon.permeability import fit_permeability

    rows = []
    for case in cases:
        for kt in KAPPAS:
            grid, target, mem, v, a = case_setup(case, kt)
            fit = fit_permeability(grid, target, mem, snr=50.0)
            rows.append({"case": case, "kappa_true": kt, "kappa": float(fit.kappa[0]),
                         "rel_error": float(fit.kappa[0] / kt - 1),
                         "crlb_rel_std_snr50": float(fit.kappa_std[0] / fit.kappa[0]),
                         "tau_true_ms": v / (kt * a) / 1000,
                         "tau_ms": float(fit.exchange_time_ms[0]),
                         "simulations": fit.simulations, "seconds": fit.seconds})
            r = rows[-1]
            print(f"{case} κ {kt:.0e}: fitted {r['kappa']:.5g} (error {r['rel_error']:+.1e}), "
                  f"CRLB SNR 50 ±{100 * r['crlb_rel_std_snr50']:.2g} %, τ {r['tau_ms']:.4g} ms, "
                  f"{r['seconds']:.1f} s", flush=True)
    return rows


def noise(cases: list[str], draws: int) -> list[dict]:
    from spinverse.recon.noise import add_noise
    from spinverse.recon.permeability import fit_permeability
    from spinverse.recon.targets import Target

    rows = []
    for case, kt in cases:
        grid, target, mem, _, _ = case_setup(case, kt)
        bound = fit_permeability(grid, target, mem, snr=50.0)
        fits, secs = [], []
        for seed in range(draws):
            noisy = Target(add_noise(target.signal, snr=50.0, kind="rician", seed=seed),
                           target.protocol, target.outer_boundary)
            f = fit_permeability(grid, noisy, mem)
            fits.append(float(f.log10_kappa[0]))
            secs.append(f.seconds)
        fits_a = np.array(fits)
        std = float(fits_a.std(ddof=1))
        crlb = float(bound.log10_kappa_std[0])
        rows.append({"case": case, "kappa_true": kt, "draws": draws,
                     "log10_std": std, "log10_crlb": crlb, "std_over_crlb": std / crlb,
                     "bias_log10": float(fits_a.mean() - np.log10(kt)),
                     "bias_over_std": float((fits_a.mean() - np.log10(kt)) / std),
                     "seconds_median": float(np.median(secs))})
        r = rows[-1]
        print(f"{case} κ {kt:.0e}, {draws} draws: std/CRLB {r['std_over_crlb']:.2f}, "
              f"bias/std {r['bias_over_std']:+.2f}", flush=True)
    return rows


def geometry(cases: list[str], runs: Path) -> list[dict]:
    from spinverse.mesh.benchmark import benchmark_grid
    from spinverse.recon.permeability import fit_permeability

    rows = []
    grid = benchmark_grid()
    for case in cases:
        files = sorted(runs.glob(f"{case}*/kappa.npz"))
        if not files:
            print(f"{case}: no run under {runs}")
            continue
        with np.load(files[0]) as k:
            answer = np.asarray(k["barrier"])
        for kt in (1e-5, 1e-4):
            _, target, mem, v, a = case_setup(case, kt)
            fit = fit_permeability(grid, target, answer)
            rows.append({"case": case, "kappa_true": kt, "kappa": float(fit.kappa[0]),
                         "rel_error": float(fit.kappa[0] / kt - 1),
                         "answer_faces": int(len(answer)), "true_faces": int(len(mem)),
                         "shared_faces": int(len(np.intersect1d(answer, mem))),
                         "data_loss": fit.data_loss, "run": str(files[0].parent)})
            r = rows[-1]
            print(f"{case} κ {kt:.0e} on the reconstructed membrane ({r['shared_faces']} of "
                  f"{r['true_faces']} true faces): κ {r['kappa']:.4g} "
                  f"({100 * r['rel_error']:+.1f} %)", flush=True)
    return rows


def karger_signal(params: np.ndarray, b: np.ndarray, t_d: np.ndarray) -> np.ndarray:
    """Direction-averaged E(b, t_d) of the two-site Kärger model: (n_seq, n_b). ``params``:
    intra fraction f, log10 τ_in (µs), then D_in and D_out (µm²/µs): one pair (the
    classical model) or one pair per diffusion time (restricted compartments have
    time-dependent apparent diffusivities); b in µs/µm², t_d in µs. 1ᵀ exp(t M) p0 of the 2×2
    rate matrix M in closed form (real eigenvalues m ± s/2: detailed balance)."""
    f, log_tau = params[:2]
    d = np.asarray(params[2:]).reshape(-1, 2)
    k_in = 1.0 / 10.0**log_tau  # in → out rate, 1/µs
    k_out = k_in * f / max(1.0 - f, 1e-12)  # detailed balance
    t = np.asarray(t_d, dtype=float)[:, None]
    q2 = np.asarray(b, dtype=float)[None, :] / t
    m11, m22 = -q2 * d[:, :1] - k_in, -q2 * d[:, 1:] - k_out
    m, half = 0.5 * (m11 + m22), 0.5 * np.sqrt((m11 - m22) ** 2 + 4.0 * k_in * k_out)
    hi, lo = np.exp(t * (m + half)), np.exp(t * (m - half))
    x = t * half
    shc = np.where(x > 1e-8, (hi - lo) / (2.0 * np.maximum(x, 1e-300)), np.exp(t * m))
    # 1ᵀ (M − m I) p0 with p0 = (f, 1 − f)
    lin = (m11 - m + k_in) * f + (k_out + m22 - m) * (1.0 - f)
    return 0.5 * (hi + lo) + t * shc * lin


def fit_karger(e: np.ndarray, b: np.ndarray, t_d: np.ndarray,
               per_time: bool) -> tuple[np.ndarray, float]:
    """Best Kärger parameters (f, log10 τ_in, D_in/D_out: one pair, or one per diffusion
    time) for E (n_seq, n_b), from starts over τ_in = 1 ms … 10 s and two fractions;
    returns them and the rms residual."""
    from scipy.optimize import least_squares

    def residual(x: np.ndarray) -> np.ndarray:
        return (karger_signal(x, b, t_d) - e).ravel()

    n = len(t_d) if per_time else 1
    lo = np.r_[0.0, 1.0, np.zeros(2 * n)]
    hi = np.r_[1.0, 9.0, np.full(2 * n, 3e-3)]
    scale = np.r_[0.1, 0.5, np.full(2 * n, 1e-4)]
    best = None
    for log_tau0 in (3.0, 4.0, 5.0, 6.0, 7.0):
        for f0 in (0.1, 0.5):
            x0 = np.r_[f0, log_tau0, np.tile([3e-4, 1.5e-3], n)]
            sol = least_squares(residual, x0, bounds=(lo, hi), x_scale=scale)
            if best is None or sol.cost < best.cost:
                best = sol
    return best.x, float(np.sqrt(np.mean(best.fun**2)))


KARGER_FITS = (("one D pair, b ≤ 2000", 2000.0, False), ("one D pair, b ≤ 5000", 5000.0, False),
               ("D pair per time, b ≤ 5000", 5000.0, True))


def karger(cases: list[str]) -> list[dict]:
    from spinverse.recon.permeability import fit_permeability

    rows = []
    for case in cases:
        for kt in KARGER_KAPPAS:
            grid, target, mem, v, a = case_setup(case, kt, boundary="reflecting")
            tau_true = v / (kt * a)
            sim = fit_permeability(grid, target, mem)
            sim_err = float(sim.exchange_time_ms[0] * 1000 / tau_true - 1)
            prot = target.protocol
            t_d = np.array([s.Delta - s.delta / 3 for s in prot.sequences])
            for label, b_max, per_time in KARGER_FITS:
                keep = np.asarray(prot.bvalues) <= b_max
                e = (np.abs(target.signal) / target.s0[:, None, :]).mean(axis=2)[:, keep]
                b = np.asarray(prot.bvalues)[keep]
                tic = time.perf_counter()
                x, rms = fit_karger(e, b, t_d, per_time)
                tau_k = 10.0 ** x[1]
                rows.append({
                    "case": case, "kappa_true": kt, "fit": label, "b_max": b_max,
                    "tau_true_ms": tau_true / 1000, "karger_tau_ms": tau_k / 1000,
                    "karger_kappa": v / (a * tau_k),
                    "karger_tau_rel_error": float(tau_k / tau_true - 1),
                    "karger_tau_at_bound": bool(x[1] <= 1.0 + 1e-6 or x[1] >= 9.0 - 1e-6),
                    "karger_fraction": float(x[0]), "karger_d_in": x[2::2].tolist(),
                    "karger_d_out": x[3::2].tolist(), "karger_rms": rms,
                    "karger_seconds": time.perf_counter() - tic,
                    "simulator_kappa": float(sim.kappa[0]), "simulator_tau_rel_error": sim_err,
                    "simulator_seconds": sim.seconds})
                r = rows[-1]
                print(f"{case} κ {kt:.0e} (τ {r['tau_true_ms']:.3g} ms), {label}: Kärger τ "
                      f"{r['karger_tau_ms']:.3g} ms ({100 * r['karger_tau_rel_error']:+.0f} %, "
                      f"f {x[0]:.2f}, rms {rms:.1e}); simulator {100 * sim_err:+.1e} %",
                      flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", default=["accuracy", "noise", "geometry", "karger"])
    ap.add_argument("--cases", nargs="*", default=["018", "016", "000", "007"])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--runs", type=Path, default=Path("/tmp/spinverse-search"),
                    help="run folders of benchmarks/search.py (its --out)")
    ap.add_argument("--out", type=Path, default=HERE / "permeability.json")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    with threadpool_limits(limits=1, user_api="blas"):
        for part in args.parts:
            print(f"== {part}", flush=True)
            if part == "accuracy":
                data[part] = accuracy(args.cases)
            elif part == "noise":
                data[part] = noise([("018", 3e-5), ("000", 1e-4)], args.draws)
            elif part == "geometry":
                data[part] = geometry([c for c in args.cases if c not in ("016", "018")]
                                      or args.cases, args.runs)
            elif part == "karger":
                data[part] = karger(args.cases)
            else:
                raise SystemExit(f"unknown part {part!r}")
            args.out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
