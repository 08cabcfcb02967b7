"""The optimisation loop: fit per-face κ (µm/µs) to a target signal.

``Reconstructor(grid, target, config).fit(run_dir)`` runs the staged curriculum with Adam
on the face logits, writes a JSONL log per iteration and atomic checkpoints, resumes
exactly from the last checkpoint, rolls back and halves the step on a non-finite loss or
gradient, stops a stage on a loss plateau, and keeps the best of several random restarts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinverse.errors import ConfigError, SolverError
from spinverse.mesh.grid import TetGrid
from spinverse.recon import priors as P
from spinverse.recon.config import ReconConfig, dump_config
from spinverse.recon.curriculum import learning_rate, locate, prior_weights, stage_start
from spinverse.recon.optim import make_optimizer
from spinverse.recon.parameterisation import LogSigmoidKappa
from spinverse.recon.targets import Target

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


@dataclass
class Reconstruction:
    """Result of a fit: κ (F,) µm/µs in grid face order, the barrier faces (κ below the
    threshold), the per-iteration history and run facts."""

    kappa: np.ndarray
    barrier: np.ndarray
    history: list[dict[str, Any]]
    data_loss: float
    seconds: float
    restart: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _stage_views(target: Target, config: ReconConfig) -> list[dict[str, Any]]:
    """Per stage: the sub-protocol, target |S| and S0 tensors, sequence/b indices."""
    views = []
    prot = target.protocol
    for st in config.stages:
        seqs = list(range(prot.n_sequences)) if st.sequences == "all" else list(st.sequences)
        bad = [i for i in seqs if not 0 <= i < prot.n_sequences]
        if bad:
            raise ConfigError(f"stage {st.name!r} names sequence {bad[0]} but the protocol "
                              f"has {prot.n_sequences}", field="stages.sequences")
        if st.bvalues is None:
            bidx = list(range(prot.n_bvalues))
        else:
            bidx = [int(np.argmin(np.abs(prot.bvalues - b))) for b in st.bvalues]
            missing = [b for b, i in zip(st.bvalues, bidx, strict=True)
                       if abs(prot.bvalues[i] - b) > 1e-9 * max(b, 1)]
            if missing:
                raise ConfigError(f"stage {st.name!r}: b = {missing[0]} s/mm² is not in the "
                                  "protocol", field="stages.bvalues")
        sub = prot.replace(sequences=tuple(prot.sequences[i] for i in seqs),
                           bvalues=prot.bvalues[bidx])
        s0 = target.s0[seqs]
        tgt = np.abs(target.signal[np.ix_(seqs, bidx)])
        zero = [k for k, i in enumerate(bidx) if prot.bvalues[i] == 0]
        if config.data_normalise == "own" and not zero:
            raise ConfigError(f"stage {st.name!r}: data_normalise: own needs the b = 0 row "
                              "among the stage's b-values", field="data_normalise")
        views.append({"protocol": sub, "target": torch.from_numpy(tgt),
                      "s0": torch.from_numpy(s0), "sequences": seqs, "bvalues": bidx,
                      "b0_row": zero[0] if zero else None})
    return views


class Reconstructor:
    """Fits per-face κ of ``grid`` to ``target`` with the staged curriculum of ``config``.

    ``simulate`` defaults to :func:`spinverse.autodiff.simulate` (the differentiable
    forward model); it is called as ``simulate(grid, kappa, protocol, outer_boundary=...,
    cache=...)`` with a :class:`~spinverse.autodiff.SimulationCache` reused across
    iterations.
    """

    def __init__(
        self,
        grid: TetGrid,
        target: Target,
        config: ReconConfig,
        *,
        simulate: Any = None,
        progress: bool = True,
        reference_faces: np.ndarray | None = None,
    ) -> None:
        self.grid = grid
        self.reference_faces = (None if reference_faces is None
                                else np.asarray(reference_faces, dtype=np.int64))
        self.target = target
        self.config = config
        self.progress = progress
        from spinverse.autodiff import SimulationCache

        if simulate is None:
            from spinverse.autodiff import simulate as simulate_fn

            simulate = simulate_fn
        self._simulate = simulate
        self.cache = SimulationCache()
        pc = config.parameterisation
        self.param = LogSigmoidKappa(kappa_min=pc.kappa_min, kappa_max=pc.kappa_max,
                                     temperature=pc.temperature)
        self.topology = P.PriorTopology.from_grid(grid)
        self.views = _stage_views(target, config)
        self._start: np.ndarray | None = None

    # ----------------------------------------------------------------- losses
    def data_loss(self, kappa: torch.Tensor, stage_index: int,
                  basis: np.ndarray | None = None) -> torch.Tensor:
        """100 × mean over (sequence, b, direction) of (|S|/S0_target − |T|/S0_target)²
        (``data_normalise: own``: of (|S|/|S(b=0)| − |T|/|T(b=0)|)²); with ``basis``, on
        that frozen eigenbasis (see ``optimizer.eigen_refresh``)."""
        from spinverse.autodiff.losses import signal_loss

        view = self.views[stage_index]
        extra = {} if basis is None else {"basis": basis}
        s = self._simulate(self.grid, kappa, view["protocol"],
                           outer_boundary=self.target.outer_boundary, cache=self.cache,
                           **extra)
        if self.config.data_normalise == "own":
            z = view["b0_row"]
            mag, tgt = s.abs(), view["target"]
            return signal_loss(mag / mag[:, z:z + 1, :], tgt / tgt[:, z:z + 1, :], 1.0,
                               scale=self.config.data_scale)
        return signal_loss(s, view["target"], view["s0"], scale=self.config.data_scale)

    def prior_terms(self, v: torch.Tensor, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """Weighted prior terms (only those with non-zero weight)."""
        if not any(weights.values()):
            return {}
        logk = self.param.log10_kappa(v)
        p = P.barrier_indicator(logk)
        terms = {}
        for name, w in weights.items():
            if w == 0:
                continue
            if name == "continuity":
                val = P.continuity_prior(logk, p, self.topology)
            elif name == "manifold":
                val = P.manifold_prior(p, self.topology)
            elif name == "coherence":
                val = P.edge_coherence_prior(p, self.topology)
            else:
                val = P.binarisation_prior(p)
            terms[name] = w * val
        return terms

    def _reference_scores(self, kappa: np.ndarray) -> dict[str, float]:
        from spinverse.recon.metrics import face_scores, structural_validity

        pred = np.flatnonzero(kappa < self.config.threshold)
        _, _, f1 = face_scores(pred, self.reference_faces, self.grid.n_faces)
        bad = structural_validity(self.grid, pred)["bad_pct"]
        return {"f1": float(f1), "bad_edges_pct": float(bad)}

    # ------------------------------------------------------------------- fit
    def fit(self, run_dir: str | os.PathLike[str] | None = None) -> Reconstruction:
        """Run every restart (resuming from checkpoints in ``run_dir``) and return the
        one with the lowest final data loss."""
        best: Reconstruction | None = None
        for r in range(self.config.restarts):
            sub = None
            if run_dir is not None:
                sub = Path(run_dir) if self.config.restarts == 1 else Path(run_dir) / f"restart{r}"
            rec = self._fit_one(r, sub)
            if best is None or rec.data_loss < best.data_loss:
                best = rec
        assert best is not None
        return best

    def _initial_logits(self, restart: int) -> torch.Tensor:
        pc = self.config.parameterisation
        gen = torch.Generator().manual_seed(self.config.seed + 7919 * restart)
        v0 = self.param.logits_for_kappa(torch.from_numpy(self.start_kappa()))
        noise = pc.init_noise if restart == 0 else max(pc.init_noise, 0.1)
        if noise:
            v0 = v0 + noise * torch.randn(self.grid.n_faces, generator=gen,
                                          dtype=torch.float64)
        return v0

    def start_kappa(self) -> np.ndarray:
        """The start κ (F,) µm/µs before restart noise (``parameterisation.start``); a
        data-informed start is kept 1 % of the log range inside (κ_min, κ_max)."""
        pc = self.config.parameterisation
        if self._start is None:
            if pc.start == "uniform":
                kappa = np.full(self.grid.n_faces, pc.start_kappa)
            elif pc.start == "file":
                kappa = self._kappa_from_file(pc.start_file)
            else:
                from spinverse.recon.initial import adc_start_kappa

                state = adc_start_kappa(self.grid, self.target.signal, self.target.protocol,
                                        outer_boundary=self.target.outer_boundary,
                                        shape=pc.start,
                                        sizing_kappa=(pc.kappa_min, pc.kappa_max))
                log.info("start: %s of size %.3g µm, %d tets, |S0| %.4g (target %.4g) µm³",
                         pc.start, state.size, int(state.inside.sum()), state.s0,
                         state.s0_target)
                kappa = state.kappa
            if pc.start != "uniform":
                lo, hi = np.log10(pc.kappa_min), np.log10(pc.kappa_max)
                margin = 1e-2 * (hi - lo)  # off the flat ends of the sigmoid
                kappa = 10.0 ** np.clip(np.log10(kappa), lo + margin, hi - margin)
            self._start = kappa
        return self._start

    def _kappa_from_file(self, path: str | None) -> np.ndarray:
        """κ (F,) µm/µs from an .npz with 'kappa' (and optionally 'faces', checked)."""
        field = "parameterisation.start_file"
        try:
            with np.load(str(path)) as z:
                arrays = {k: np.asarray(z[k]) for k in ("kappa", "faces") if k in z}
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the start κ from {path}: {e}", field=field) from e
        if "kappa" not in arrays:
            raise ConfigError(f"{path} has no 'kappa' array", field=field)
        kappa = arrays["kappa"].astype(np.float64)
        faces = arrays.get("faces")
        if kappa.shape != (self.grid.n_faces,):
            raise ConfigError(f"{path}: kappa has shape {kappa.shape}, the grid has "
                              f"{self.grid.n_faces} faces", field=field)
        if faces is not None and not np.array_equal(np.sort(faces, axis=1), self.grid.faces):
            raise ConfigError(f"{path}: its faces are not the grid's (order or vertices)",
                              field=field)
        if not (np.all(np.isfinite(kappa)) and np.all(kappa > 0)):
            raise ConfigError(f"{path}: kappa must be finite and > 0 µm/µs", field=field)
        log.info("start: κ from %s (%d faces below the threshold)", path,
                 int((kappa < self.config.threshold).sum()))
        return kappa

    def _fit_one(self, restart: int, run_dir: Path | None) -> Reconstruction:
        cfg = self.config
        # The start (a data-informed one costs forward solves) only when not resuming.
        v = torch.nn.Parameter(torch.zeros(self.grid.n_faces, dtype=torch.float64))
        resumed = False
        opt = make_optimizer(cfg.optimizer.name, [v], lr=cfg.optimizer.lr,
                             betas=cfg.optimizer.betas)
        start, history = 0, []
        lr_factor = 1.0
        stage_best: dict[int, tuple[float, int]] = {}
        skip_to: int | None = None
        elapsed = 0.0
        # Frozen eigenbasis (optimizer.eigen_refresh > 1): the κ of the last eigen-solve
        # and its kept modes; a checkpoint stores the κ, resume recomputes the modes.
        basis_kappa: np.ndarray | None = None
        basis: np.ndarray | None = None
        force_refresh = False
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_config(cfg))
            ck = run_dir / CHECKPOINT
            if ck.is_file():
                state = torch.load(ck, weights_only=False)
                if not _same_config(state["config"], cfg):
                    raise ConfigError(f"{ck} was written with another configuration; "
                                      "use a new run folder", field="config")
                with torch.no_grad():
                    v.copy_(state["v"])
                opt.load_state_dict(state["optimizer"])
                start, history = state["iteration"], state["history"]
                lr_factor, stage_best = state["lr_factor"], state["stage_best"]
                skip_to, elapsed = state["skip_to"], state["seconds"]
                basis_kappa = state.get("basis_kappa")
                _truncate_log(run_dir / LOG, start)
                resumed = True
        if not resumed:
            with torch.no_grad():
                v.copy_(self._initial_logits(restart))
        if basis_kappa is not None:
            with torch.no_grad():
                self.data_loss(torch.from_numpy(basis_kappa), locate(cfg, start).stage_index)
            basis = self.cache.vectors
        good = (v.detach().clone(), _opt_state(opt))
        bar = _progress(cfg.total_iterations, start, self.progress)
        t0 = time.perf_counter()
        it = start
        rollbacks = 0
        while it < cfg.total_iterations:
            if skip_to is not None and it < skip_to:
                it = skip_to
                skip_to = None
                continue
            step = locate(cfg, it)
            lr = learning_rate(cfg, step) * lr_factor
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad()
            kappa = self.param.kappa(v)
            refresh = cfg.optimizer.eigen_refresh
            frozen = (refresh > 1 and basis is not None and not force_refresh
                      and (it - stage_start(cfg, step.stage_index)) % refresh != 0)
            data = self.data_loss(kappa, step.stage_index, basis if frozen else None)
            if refresh > 1 and not frozen:
                basis, force_refresh = self.cache.vectors, False
                basis_kappa = kappa.detach().numpy().copy()
            terms = self.prior_terms(v, prior_weights(step))
            loss = data + sum(terms.values(), torch.zeros((), dtype=torch.float64))
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                ok = bool(torch.isfinite(v.grad).all())
            if not ok:
                rollbacks += 1
                if rollbacks > 8:
                    raise SolverError(f"non-finite loss or gradient at iteration {it} after "
                                      "8 rollbacks")
                with torch.no_grad():
                    v.copy_(good[0])
                opt.load_state_dict(good[1])
                lr_factor *= 0.5
                force_refresh = True
                log.warning("non-finite loss/gradient at iteration %d: rolled back, lr × %g",
                            it, lr_factor)
                continue
            gnorm = float(torch.nn.utils.clip_grad_norm_([v], cfg.optimizer.clip_norm))
            good = (v.detach().clone(), _opt_state(opt))
            opt.step()
            with torch.no_grad():
                n_barrier = int((kappa < cfg.threshold).sum())
            rec = {
                "iteration": it, "stage": step.stage.name, "lr": lr,
                "loss": float(loss.detach()), "data": float(data.detach()),
                **{f"prior_{k}": float(t.detach()) for k, t in terms.items()},
                "grad_norm": gnorm, "barrier_faces": n_barrier,
                "modes": self.cache.last.n_modes if self.cache.last else None,
                "seconds": elapsed + time.perf_counter() - t0,
            }
            if self.reference_faces is not None:
                rec.update(self._reference_scores(kappa.detach().numpy()))
            history.append(rec)
            if run_dir is not None:
                with open(run_dir / LOG, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3g}", barrier=n_barrier, modes=rec["modes"],
                            refresh=False)
            # plateau stopping within a stage
            best_loss, best_it = stage_best.get(step.stage_index, (np.inf, it))
            if rec["loss"] < best_loss * (1 - cfg.stopping.min_rel_improvement):
                stage_best[step.stage_index] = (rec["loss"], it)
            elif cfg.stopping.patience and it - best_it >= cfg.stopping.patience:
                nxt = stage_start(cfg, step.stage_index + 1)
                log.info("stage %s: loss plateau at iteration %d, moving on", step.stage.name,
                         it)
                bar.update(nxt - it - 1)
                skip_to = nxt
            it += 1
            if run_dir is not None and (it % cfg.checkpoint_every == 0
                                        or it == cfg.total_iterations):
                _save_checkpoint(run_dir / CHECKPOINT, {
                    "v": v.detach().clone(), "optimizer": opt.state_dict(), "iteration": it,
                    "history": history, "lr_factor": lr_factor, "stage_best": stage_best,
                    "skip_to": skip_to, "config": dump_config(cfg),
                    "basis_kappa": basis_kappa,
                    "seconds": elapsed + time.perf_counter() - t0,
                })
        bar.close()
        with torch.no_grad():
            kappa = self.param.kappa(v).numpy().copy()
            last = len(cfg.stages) - 1
            final = float(self.data_loss(torch.from_numpy(kappa), last))
        return Reconstruction(
            kappa=kappa,
            barrier=np.flatnonzero(kappa < cfg.threshold),
            history=history,
            data_loss=final,
            seconds=elapsed + time.perf_counter() - t0,
            restart=restart,
            info={"rollbacks": rollbacks},
        )


def _same_config(text: str, config: ReconConfig) -> bool:
    """Whether a checkpoint's config text resolves to ``config`` (fields added to the
    schema since then take their defaults)."""
    import yaml

    try:
        return ReconConfig.model_validate(yaml.safe_load(text)) == config
    except (ValueError, yaml.YAMLError):
        return False


def _opt_state(opt: torch.optim.Optimizer) -> dict:
    import copy

    return copy.deepcopy(opt.state_dict())


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a temporary file in the same folder, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _truncate_log(path: Path, n_iterations: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["iteration"] < n_iterations]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in kept))
    os.replace(tmp, path)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="reconstruct", unit="it", leave=False)
