"""How rugged is the data loss over closed regions?  (A diagnostic, not a timing.)

A *region* is a set of tets of the benchmark grid; its κ field is the benchmark's ground-
truth convention (1e-5 µm/µs on the region's surface, outer faces of its tets included,
0.1 elsewhere). Its loss is the published data term (100 × mean squared residual of
|S|/S0_target) over all three sequences of the published protocol, Robin outer faces,
ℓ = 2 µm; the noise-free target is the case's own truth, so the truth has loss 0.

Per case:

1. **single flips of the truth**: the loss after adding or removing one tet that shares a
   face with the truth's surface (min / median / max over all of them);
2. **greedy descent from a perturbed truth**: k random boundary-tet flips, then the best
   single flip per step until no flip lowers the loss; reported: the loss and face F1 at
   the start and the end, the steps, and whether the descent returned to the truth.

If greedy descent from a few flips away does not return to the truth, no local method
over regions (nor gradient descent over κ, which moves through the same landscape) can
be expected to find it from far away.

Usage: ``python studies/gradient_method/landscape.py [--cases 000 018] [--flips 2 4 8] [--seeds 0 1]
[--workers 2]``; prints a table and writes ``landscape.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@cache
def _problem(name: str):
    from spinverse.mesh.benchmark import resolve_case
    from spinverse.recon.metrics import enclosed_tets
    from spinverse.recon.targets import case_target

    grid, target, truth = case_target(name)
    ft = grid.face_tets
    pairs = ft[ft[:, 1] >= 0]
    return resolve_case(name), grid, target, truth, enclosed_tets(grid, truth), pairs


KINDS = ("published", "log", "balanced")


class RegionLoss:
    """Memoised data loss of a region (T,) bool.

    ``kind="published"``: 100 × mean squared residual of |S|/S0_target over all sequences;
    ``kind="log"``: mean squared residual of log(|S|/S0_target), which weighs the small
    high-b signals (where the shape is) as much as the large ones;
    ``kind="balanced"``: per sequence, the mean squared residual divided by the variance
    of the target's |S|/S0 over (b, direction), averaged over the sequences (a sequence
    whose signal varies little counts more; on the public cases the three variances are
    within 1.3× of each other, so this is close to the published term).
    ``weights`` (n_seq,), only with ``kind="published"``: the per-sequence terms are
    averaged with these weights instead of equally (e.g. (5, 1, 1): the short one 5×).
    ``target``: fit this Target instead of the case's own benchmark-grid signal.
    """

    def __init__(self, name: str, kind: str = "published",
                 weights: tuple[float, ...] | None = None, target=None):
        if kind not in KINDS:
            raise ValueError(f"unknown loss kind {kind!r}")
        if weights is not None and kind != "published":
            raise ValueError("per-sequence weights go with kind='published' only")
        self.weights = None if weights is None else np.asarray(weights, dtype=float)
        self.name, self.grid, self.target, self.truth, self.inside, self.pairs = _problem(name)
        if target is not None:  # another target for the same case (e.g. a refined grid's)
            self.target = target
        s0 = self.target.s0[:, None, :]
        self.kind = kind
        self._s0, self._t = s0, np.abs(self.target.signal) / s0
        self._memo: dict[bytes, float] = {}

    def _residual(self, s: np.ndarray) -> float:
        """The loss of a normalised signal |S|/S0_target."""
        if self.kind == "log":
            floor = 1e-6
            return float(np.mean((np.log(np.maximum(s, floor))
                                  - np.log(np.maximum(self._t, floor))) ** 2))
        r2 = (s - self._t) ** 2
        if self.kind == "balanced":
            return float(np.mean(r2.mean(axis=(1, 2)) / self._t.var(axis=(1, 2))))
        if self.weights is not None:
            per = r2.mean(axis=(1, 2))
            return float(100 * np.sum(self.weights * per) / self.weights.sum())
        return float(100 * np.mean(r2))

    def signal(self, inside: np.ndarray) -> np.ndarray:
        """The simulated |S|/S0_target of a region, (n_seq, n_b, n_dir)."""
        from spinverse.forward import simulate_signal
        from spinverse.mesh.phantoms import barrier_faces, phantom_kappa

        kappa = phantom_kappa(self.grid, barrier_faces(self.grid, inside))
        s = simulate_signal(self.grid, kappa, self.target.protocol, outer_boundary="robin").signal
        return np.abs(s) / self._s0

    def __call__(self, inside: np.ndarray) -> float:
        key = inside.tobytes()
        if key not in self._memo:
            self._memo[key] = self._residual(self.signal(inside))
        return self._memo[key]

    def per_sequence(self, inside: np.ndarray) -> np.ndarray:
        """The published data term (100 × mean squared residual) per sequence, (n_seq,)."""
        return 100 * np.mean((self.signal(inside) - self._t) ** 2, axis=(1, 2))

    def boundary_tets(self, inside: np.ndarray) -> np.ndarray:
        cut = inside[self.pairs[:, 0]] != inside[self.pairs[:, 1]]
        return np.unique(self.pairs[cut].reshape(-1))

    def f1(self, inside: np.ndarray) -> float:
        from spinverse.mesh.phantoms import barrier_faces
        from spinverse.recon.metrics import face_scores

        return face_scores(barrier_faces(self.grid, inside), self.truth, self.grid.n_faces)[2]


def _flip(inside: np.ndarray, t: int) -> np.ndarray:
    out = inside.copy()
    out[t] = ~out[t]
    return out


def single_flips(name: str) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        f = RegionLoss(name)
        t0 = time.perf_counter()
        losses = np.array([f(_flip(f.inside, t)) for t in f.boundary_tets(f.inside)])
    return {"case": f.name, "kind": "single_flips", "n": len(losses),
            "truth_loss": f(f.inside), "min": float(losses.min()),
            "median": float(np.median(losses)), "max": float(losses.max()),
            "seconds": time.perf_counter() - t0}


def descend(f: RegionLoss, inside: np.ndarray, max_steps: int = 60, on_step=None
            ) -> tuple[np.ndarray, float, int]:
    """Greedy descent: the best single-tet flip per step until none lowers ``f``.
    ``on_step(region)`` is called after every step. Returns the region where it stops, its
    loss and the number of steps."""
    current, steps = f(inside), 0
    while steps < max_steps:
        best, t = min((f(_flip(inside, t)), t) for t in f.boundary_tets(inside))
        if best >= current:
            break
        inside, current, steps = _flip(inside, t), best, steps + 1
        if on_step is not None:
            on_step(inside)
    return inside, current, steps


def perturb(f: RegionLoss, k: int, seed: int) -> np.ndarray:
    """The truth region with ``k`` random boundary-tet flips (generator seeded by ``seed``)."""
    rng = np.random.default_rng(seed)
    inside = f.inside.copy()
    for _ in range(k):
        inside = _flip(inside, int(rng.choice(f.boundary_tets(inside))))
    return inside


def greedy(name: str, k: int, seed: int, max_steps: int = 60) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        f = RegionLoss(name)
        inside = perturb(f, k, seed)
        start_loss, start_f1 = f(inside), f.f1(inside)
        t0 = time.perf_counter()
        inside, current, steps = descend(f, inside, max_steps)
    return {"case": f.name, "kind": "greedy", "flips": k, "seed": seed,
            "start_loss": start_loss, "start_f1": start_f1, "end_loss": current,
            "end_f1": f.f1(inside), "steps": steps,
            "returned_to_truth": bool(np.array_equal(inside, f.inside)),
            "tets_off": int((inside != f.inside).sum()), "seconds": time.perf_counter() - t0}


def _run(task: tuple) -> dict:
    return single_flips(task[1]) if task[0] == "single" else greedy(*task[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=["000", "018"])
    ap.add_argument("--flips", type=int, nargs="*", default=[2, 4, 8])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "landscape.json")
    args = ap.parse_args()
    tasks = [("single", c) for c in args.cases]
    tasks += [("greedy", c, k, s) for c in args.cases for k in args.flips for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(_run, tasks))
    args.out.write_text(json.dumps(rows, indent=1))
    print("| case | single flips of the truth: loss min / median / max |\n|---|---|")
    for r in rows:
        if r["kind"] == "single_flips":
            print(f"| {r['case'][:3]} | {r['min']:.4f} / {r['median']:.4f} / {r['max']:.4f}"
                  f" ({r['n']} flips) |")
    print("\n| case | flips | seed | start loss | start F1 | end loss | end F1 | steps | "
          "back to truth | tets off | s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "greedy":
            print(f"| {r['case'][:3]} | {r['flips']} | {r['seed']} | {r['start_loss']:.4f} | "
                  f"{r['start_f1']:.3f} | {r['end_loss']:.5f} | {r['end_f1']:.3f} | "
                  f"{r['steps']} | {'yes' if r['returned_to_truth'] else 'no'} | "
                  f"{r['tets_off']} | {r['seconds']:.0f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
