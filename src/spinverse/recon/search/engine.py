"""The whole-shape search: from a target signal to the best sharp shape and its ensemble.

``ShapeSearch(grid, target, config).run(run_dir)`` runs, within one budget of distinct
simulated shapes:

1. **starts**: the closed ellipsoid and the straight tube read off the target's apparent
   diffusion tensor and |S(b=0)| (:mod:`spinverse.recon.initial`);
2. **families**: CMA-ES fits of whole-shape families (tube along a polyline, ellipsoid),
   started from the same tensor (:mod:`~spinverse.recon.search.families`);
3. **descents**: linearised multi-flip descents (:mod:`~spinverse.recon.search.local`)
   from the best distinct shapes so far;
4. **basin hopping** until the budget is spent: each new best shape's images under the
   grid's symmetries and lattice shifts, descents from the best images; otherwise a random
   large move of a kept local minimum (grow, shrink or shift a patch, shift, add or remove
   a compartment; :mod:`~spinverse.recon.search.moves`) and a descent from it;
5. **answer**: the best shape, confirmed by simulating each of its single-tet flips (a
   descent goes on if one is better); **ensemble**: every scored shape within the
   tolerance of the answer, and the per-face barrier probability
   (:mod:`~spinverse.recon.search.ensemble`).

Every shape is sharp (κ ``membrane_kappa`` on its surface, ``other_kappa`` elsewhere) and
its loss exact. A run is deterministic for its seed; its cache of simulated shapes is
checkpointed, and rerunning the same command replays the search from that cache (no
simulation for what was done) and continues, to the same result.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinverse.mesh.grid import TetGrid
from spinverse.recon.search.config import SearchConfig
from spinverse.recon.search.diagnostics import neighbour_summary, truth_diagnostics
from spinverse.recon.search.ensemble import Ensemble, auto_tolerance, build_ensemble
from spinverse.recon.search.families import FAMILIES, BallsFamily, TubeFamily, fit_family
from spinverse.recon.search.local import DescentResult, multiflip_descent
from spinverse.recon.search.moves import random_kick, symmetry_images
from spinverse.recon.search.regions import RegionSpace
from spinverse.recon.search.scoring import Evaluator, RegionModel, default_workers
from spinverse.recon.targets import Target

log = logging.getLogger(__name__)

__all__ = ["ShapeSearch", "SearchResult"]

CACHE_FILE = "search_cache.npz"
CACHE_META = "search_cache.json"
LOG_FILE = "log.jsonl"


@dataclass
class SearchResult:
    """The answer (a region of tets), its κ field (F,) µm/µs and data loss, the ensemble,
    the answer's single-tet neighbours, the history of improvements and run facts."""

    region: np.ndarray
    kappa: np.ndarray
    barrier: np.ndarray
    data_loss: float
    ensemble: Ensemble
    barrier_probability: np.ndarray
    neighbour_tets: np.ndarray
    neighbour_losses: np.ndarray
    history: list[dict[str, Any]]
    seconds: float
    simulations: int
    info: dict[str, Any] = field(default_factory=dict)


class SearchProgress:
    """A tqdm bar over a budget of shapes (when asked), fed by the evaluator."""

    def __init__(self, total: int, enabled: bool, desc: str = "search"):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="shape", desc=desc, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, stage: str, best: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{stage}, best loss {best:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ShapeSearch:
    """Search sharp shapes that fit ``target`` on ``grid`` (see the module docstring)."""

    def __init__(self, grid: TetGrid, target: Target, config: SearchConfig | None = None,
                 *, progress: bool = True, checkpoint_seconds: float = 30.0):
        self.grid = grid
        self.checkpoint_seconds = checkpoint_seconds
        self.target = target
        self.config = config or SearchConfig()
        self.progress = progress
        self.space = RegionSpace(grid, self.config.membrane_kappa, self.config.other_kappa)
        self.model = RegionModel(self.space, target)

    # ------------------------------------------------------------------ run
    def run(self, run_dir: str | Path | None = None, *,
            reference_region: np.ndarray | None = None) -> SearchResult:
        """Search, write ``run_dir``'s log and cache (when given) and return the result.
        ``reference_region`` (T,) bool, a known truth: its diagnostics are added to
        ``result.info["truth"]`` (:func:`~spinverse.recon.search.diagnostics.
        truth_diagnostics`; a few simulations beyond the budget)."""
        cfg = self.config
        run = Path(run_dir) if run_dir is not None else None
        tic = time.perf_counter()
        bar = SearchProgress(cfg.budget, self.progress)
        ev = Evaluator(self.model, workers=cfg.workers or default_workers(),
                       on_new=bar.advance)
        resumed = self._load_cache(ev, run)
        self._run_dir, self._last_save = run, time.perf_counter()
        self._history: list[dict[str, Any]] = []
        self._stages: list[dict[str, Any]] = []
        self._best: tuple[float, np.ndarray] | None = None
        self._bar = bar
        try:
            with ev:
                result = self._search(ev)
                result.info.update(neighbour_summary(result.data_loss, result.neighbour_losses))
                if reference_region is not None:
                    truth = self.space.check(reference_region)
                    result.info["truth"] = truth_diagnostics(
                        ev, self.space, result.region, truth, result.ensemble, seed=cfg.seed)
        finally:
            bar.close()
            self._save_cache(ev, force=True)  # also when interrupted: a rerun resumes
        result.seconds = time.perf_counter() - tic
        result.info.update({"resumed_from_shapes": resumed,
                            "simulated_this_session": ev.simulated})
        return result

    # ------------------------------------------------------------ internals
    def _remaining(self, ev: Evaluator) -> int:
        """Shapes left in the budget (none once a shape fits to ``stop_loss``)."""
        if self._best is not None and self._best[0] <= self.config.stop_loss:
            return 0
        return self.config.budget - ev.n_requested

    def _record(self, ev: Evaluator, stage: str, region: np.ndarray, loss: float) -> None:
        if self._best is None or loss < self._best[0]:
            self._best = (loss, region.copy())
            entry = {"simulations": ev.n_requested, "stage": stage, "loss": loss,
                     "tets": int(region.sum()),
                     "barrier_faces": int(self.space.membrane(region).sum())}
            self._history.append(entry)
            self._bar.show(stage, loss)
            if self._run_dir is not None:
                self._run_dir.mkdir(parents=True, exist_ok=True)
                with open(self._run_dir / LOG_FILE, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")
        self._save_cache(ev)

    def _descend(self, ev: Evaluator, region: np.ndarray, rng: np.random.Generator,
                 stage: str, *, budget: int, parent: DescentResult | None = None,
                 confirm: bool = False) -> DescentResult | None:
        budget = min(budget, self._remaining(ev))
        if budget <= 0:
            return None
        start_loss, before = ev.loss(region), ev.n_requested
        res = multiflip_descent(
            ev, self.space, region, rng, budget=budget, proposals=self.config.proposals,
            delta=None if parent is None else parent.delta,
            changed=None if parent is None else np.flatnonzero(parent.region != region),
            confirm=confirm, on_step=lambda r, lo: self._record(ev, stage, r, lo))
        self._record(ev, stage, res.region, res.loss)
        self._stages.append({"stage": stage, "start_loss": start_loss, "loss": res.loss,
                             "steps": res.steps, "converged": res.converged,
                             "simulations": ev.n_requested - before})
        return res

    def _search(self, ev: Evaluator) -> SearchResult:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        space = self.space
        if self._run_dir is not None and (self._run_dir / LOG_FILE).exists():
            (self._run_dir / LOG_FILE).unlink()  # a replay rewrites the same lines

        # 1. starts read off the signal
        starts, tensor, volume = self._starts()
        losses = ev.losses(starts)
        for r, lo in zip(starts, losses, strict=True):
            self._record(ev, "start", r, float(lo))
        candidates = [(float(lo), r, "start") for lo, r in zip(losses, starts, strict=True)]

        # 2. whole-shape families: a short CMA-ES fit of each
        half = 0.5 * np.ptp(self.grid.points, axis=0).max()
        fam_starts = {}
        for i, (name, budget) in enumerate(cfg.families.items()):
            family = (TubeFamily(cfg.tube_segments) if name == "tube" else
                      BallsFamily(cfg.balls) if name == "balls" else FAMILIES[name]())
            fam_starts[name] = (family, family.starts(tensor, volume / half**3))
            budget = min(budget, self._remaining(ev) - cfg.final_reserve)
            if budget <= 0:
                break
            fit = fit_family(family, space, ev, fam_starts[name][1], budget=budget,
                             seed=cfg.seed + 17 * i)
            self._stages.append({"stage": f"family:{name}", "loss": fit.loss,
                                 "simulations": fit.evaluations, "restarts": fit.restarts})
            if np.isfinite(fit.loss):
                self._record(ev, f"family:{name}", fit.region, fit.loss)
                candidates.append((fit.loss, fit.region, name))
        if self._best is None:
            from spinverse.errors import SolverError

            raise SolverError("the search found no valid shape (every candidate was empty, "
                              "the whole grid, or not a closed surface)")

        # 3. descents from the best distinct candidates (within hop_ratio of the best),
        # then more fits + descents of the family whose descent went lowest (new seeds)
        elites: list[DescentResult] = []
        seen: set[bytes] = set()
        family_best: dict[str, float] = {}
        top = min(c[0] for c in candidates)
        for loss, region, name in sorted(candidates, key=lambda c: c[0]):
            if len(elites) >= cfg.descents or self._remaining(ev) <= cfg.final_reserve:
                break
            key = ev.key(region)
            if key in seen or not space.is_valid(region) or loss > cfg.hop_ratio * top:
                continue
            seen.add(key)
            res = self._descend(ev, region, rng, "descent", budget=cfg.descent_budget)
            if res is not None:
                elites.append(res)
                family_best[name] = min(family_best.get(name, np.inf), res.loss)
        for trial in range(cfg.trials):
            pool = {n: lo for n, lo in family_best.items() if n in fam_starts}
            if not pool or self._remaining(ev) <= cfg.final_reserve + cfg.trial_budget:
                break
            name = min(pool, key=lambda n: pool[n])
            family, starts_x = fam_starts[name]
            fit = fit_family(family, space, ev, starts_x, budget=cfg.trial_budget,
                             seed=cfg.seed + 1000 * (trial + 1))
            self._stages.append({"stage": f"trial:{name}", "loss": fit.loss,
                                 "simulations": fit.evaluations})
            if not np.isfinite(fit.loss):
                continue
            self._record(ev, f"trial:{name}", fit.region, fit.loss)
            res = self._descend(ev, fit.region, rng, "trial descent",
                                budget=cfg.descent_budget)
            if res is not None:
                elites.append(res)
                family_best[name] = min(family_best[name], res.loss)

        # 4. basin hopping: images of each new best, else random kicks of an elite
        orbit: set[bytes] = set()
        failures = 0
        while self._remaining(ev) > cfg.final_reserve and elites and failures < 50:
            elites.sort(key=lambda d: d.loss)
            del elites[cfg.elites:]
            best = elites[0]
            if cfg.hop_descents and ev.key(best.region) not in orbit:
                orbit.add(ev.key(best.region))
                images = symmetry_images(space, best.region)
                images = images[: max(self._remaining(ev) - cfg.final_reserve, 0)]
                orbit.update(ev.key(r) for r in images)
                before = ev.n_requested
                img_loss = ev.losses(images) if images else np.zeros(0)
                self._stages.append({"stage": "hop images", "images": len(images),
                                     "best": float(img_loss.min()) if len(img_loss) else None,
                                     "simulations": ev.n_requested - before})
                for rank, j in enumerate(np.argsort(img_loss, kind="stable")[: cfg.hop_descents]):
                    if rank and img_loss[j] > cfg.hop_ratio * best.loss:
                        break  # far above the best: a descent from it rarely pays
                    self._record(ev, "hop", images[j], float(img_loss[j]))
                    res = self._descend(ev, images[j], rng, "hop descent",
                                        budget=cfg.kick_budget)
                    if res is not None:
                        elites.append(res)
                continue
            parent = best if rng.random() < 0.5 else elites[int(rng.integers(len(elites)))]
            kicked = random_kick(space, parent.region, rng)
            if kicked is None:
                failures += 1
                continue
            kind, region = kicked
            res = self._descend(ev, region, rng, f"kick:{kind}", budget=cfg.kick_budget,
                                parent=parent)
            if res is None:
                break
            failures = 0
            if all(ev.key(res.region) != ev.key(e.region) for e in elites):
                elites.append(res)

        # 5. the answer: the best shape, confirmed by a full scan of its single flips
        answer_loss, answer = self._best
        parent = next((e for e in elites if ev.key(e.region) == ev.key(answer)), None)
        final = multiflip_descent(
            ev, space, answer, rng, budget=max(self._remaining(ev), 0) + cfg.final_reserve,
            proposals=cfg.proposals, delta=None if parent is None else parent.delta,
            changed=np.zeros(0, dtype=np.int64), confirm=True,
            on_step=lambda r, lo: self._record(ev, "final descent", r, lo))
        self._record(ev, "final descent", final.region, final.loss)
        answer_loss, answer = self._best
        # The answer's twins under the grid's symmetries are what the data may not decide:
        # score them (once) so that the ensemble can hold them.
        if cfg.hop_descents and ev.key(answer) not in orbit:
            images = symmetry_images(space, answer)
            ev.losses(images)
            self._stages.append({"stage": "answer images", "images": len(images)})
        if final.converged and np.array_equal(final.region, answer):
            n_tets, n_loss = final.neighbour_tets, final.neighbour_losses
        else:  # the budget ended the confirmation: scan the neighbours of the answer
            n_tets = space.boundary_tets(answer)
            flips = []
            for t in n_tets:
                r = answer.copy()
                r[t] = ~r[t]
                flips.append(r)
            n_loss = ev.losses(flips)
        n_meas = int(np.prod(self.target.signal.shape))
        tol_cfg = cfg.ensemble.tolerance
        tol = (auto_tolerance(answer_loss, n_loss, snr=cfg.ensemble.snr,
                              n_measurements=n_meas) if tol_cfg == "auto" else float(tol_cfg))
        ensemble = build_ensemble(ev, space, answer, tol, max_members=cfg.ensemble.max_members)
        kappa = space.kappa(answer)
        self._history.append({"simulations": ev.n_requested, "stage": "end",
                              "loss": answer_loss, "tets": int(answer.sum()),
                              "barrier_faces": int(space.membrane(answer).sum())})
        return SearchResult(
            region=answer, kappa=kappa, barrier=space.faces(answer), data_loss=answer_loss,
            ensemble=ensemble, barrier_probability=ensemble.barrier_probability(space),
            neighbour_tets=n_tets, neighbour_losses=np.asarray(n_loss),
            history=list(self._history), seconds=0.0, simulations=ev.n_requested,
            info={"stages": list(self._stages)},
        )

    def _starts(self) -> tuple[list[np.ndarray], np.ndarray, float]:
        """The ADC ellipsoid and tube regions (repaired), the tensor (µm²/µs) and the
        volume (µm³) of the compartment (the ellipsoid's, sized to |S(b=0)|). The tensor is
        fitted at the smallest non-zero b; when the protocol cannot give one (fewer than 6
        directions), the start is a ball of a tenth of the grid."""
        from spinverse.errors import ConfigError
        from spinverse.recon.initial import adc_start_kappa

        t = self.target
        b = np.asarray(t.protocol.bvalues, dtype=float)
        kappas = (self.config.membrane_kappa, self.config.other_kappa)
        try:
            ell, tube = (adc_start_kappa(self.grid, t.signal, t.protocol,
                                         outer_boundary=t.outer_boundary, shape=shape,
                                         bvalue=float(b[b > 0].min()), sizing_kappa=kappas)
                         for shape in ("adc_ellipsoid", "adc_tube"))
        except (ConfigError, ValueError) as exc:
            log.info("no ADC start (%s); starting from a centred ball", exc)
            return [], np.eye(3), 0.1 * self.grid.volume
        regions = []
        for st in (ell, tube):
            r = self.space.repair(st.inside)
            if self.space.is_valid(r):
                regions.append(r)
        return regions, ell.tensor, float(self.grid.volumes[ell.inside].sum())

    # ---------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        t = self.target
        return {"config": self.config.model_dump(mode="json"),
                "n_tets": self.grid.n_tets,
                "target_hash": _digest(np.abs(t.signal)),
                "grid_hash": _digest(self.grid.points) + _digest(self.grid.tets)}

    def _load_cache(self, ev: Evaluator, run: Path | None) -> int:
        if run is None or not (run / CACHE_FILE).exists() or not (run / CACHE_META).exists():
            return 0
        try:
            meta = json.loads((run / CACHE_META).read_text())
        except (OSError, ValueError):
            return 0
        if meta != json.loads(json.dumps(self._meta())):
            log.info("%s: the cache belongs to another target or config; starting afresh",
                     run / CACHE_FILE)
            return 0
        return ev.load(run / CACHE_FILE)

    def _save_cache(self, ev: Evaluator, force: bool = False) -> None:
        run = self._run_dir
        if run is None or not ev.cache:
            return
        if not force and time.perf_counter() - self._last_save < self.checkpoint_seconds:
            return
        run.mkdir(parents=True, exist_ok=True)
        ev.save(run / CACHE_FILE)
        (run / CACHE_META).write_text(json.dumps(self._meta()))
        self._last_save = time.perf_counter()


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
