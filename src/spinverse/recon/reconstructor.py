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
            if w != 0:
                terms[name] = w * P.PRIORS[name](logk, p, self.topology)
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
        st = _LoopState.new(self.grid.n_faces, cfg)
        # The start (a data-informed one costs forward solves) only when not resuming.
        if not self._resume(st, run_dir):
            with torch.no_grad():
                st.v.copy_(self._initial_logits(restart))
        if st.basis_kappa is not None:  # recompute the frozen basis of the checkpoint
            with torch.no_grad():
                self.data_loss(torch.from_numpy(st.basis_kappa),
                               locate(cfg, st.iteration).stage_index)
            st.basis = self.cache.vectors
        st.good = (st.v.detach().clone(), _opt_state(st.opt))
        bar = _progress(cfg.total_iterations, st.iteration, self.progress)
        st.t0 = time.perf_counter()
        while st.iteration < cfg.total_iterations:
            if st.skip_to is not None and st.iteration < st.skip_to:
                st.iteration, st.skip_to = st.skip_to, None
                continue
            rec = self._step(st)
            if rec is None:  # rolled back: retry this iteration with a smaller step
                continue
            self._record(st, rec, run_dir, bar)
            self._stop_on_plateau(st, rec, bar)
            st.iteration += 1
            if run_dir is not None and (st.iteration % cfg.checkpoint_every == 0
                                        or st.iteration == cfg.total_iterations):
                _save_checkpoint(run_dir / CHECKPOINT, st.checkpoint(cfg))
        bar.close()
        with torch.no_grad():
            kappa = self.param.kappa(st.v).numpy().copy()
            final = float(self.data_loss(torch.from_numpy(kappa), len(cfg.stages) - 1))
        return Reconstruction(
            kappa=kappa, barrier=np.flatnonzero(kappa < cfg.threshold), history=st.history,
            data_loss=final, seconds=st.seconds(), restart=restart,
            info={"rollbacks": st.rollbacks},
        )

    def _resume(self, st: _LoopState, run_dir: Path | None) -> bool:
        """Write the run's config; load its checkpoint into ``st`` if there is one."""
        if run_dir is None:
            return False
        cfg = self.config
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        ck = run_dir / CHECKPOINT
        if not ck.is_file():
            return False
        state = torch.load(ck, weights_only=False)
        if not _same_config(state["config"], cfg):
            raise ConfigError(f"{ck} was written with another configuration; "
                              "use a new run folder", field="config")
        with torch.no_grad():
            st.v.copy_(state["v"])
        st.opt.load_state_dict(state["optimizer"])
        st.iteration, st.history = state["iteration"], state["history"]
        st.lr_factor, st.stage_best = state["lr_factor"], state["stage_best"]
        st.skip_to, st.elapsed = state["skip_to"], state["seconds"]
        st.basis_kappa = state.get("basis_kappa")
        _truncate_log(run_dir / LOG, st.iteration)
        return True

    def _step(self, st: _LoopState) -> dict[str, Any] | None:
        """One optimiser step at ``st.iteration``: its record, or None after a rollback
        (non-finite loss or gradient: back to the last good state, step halved)."""
        cfg, it, v, opt = self.config, st.iteration, st.v, st.opt
        step = locate(cfg, it)
        lr = learning_rate(cfg, step) * st.lr_factor
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        kappa = self.param.kappa(v)
        refresh = cfg.optimizer.eigen_refresh
        frozen = (refresh > 1 and st.basis is not None and not st.force_refresh
                  and (it - stage_start(cfg, step.stage_index)) % refresh != 0)
        data = self.data_loss(kappa, step.stage_index, st.basis if frozen else None)
        if refresh > 1 and not frozen:
            st.basis, st.force_refresh = self.cache.vectors, False
            st.basis_kappa = kappa.detach().numpy().copy()
        terms = self.prior_terms(v, prior_weights(step))
        loss = data + sum(terms.values(), torch.zeros((), dtype=torch.float64))
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            ok = bool(torch.isfinite(v.grad).all())
        if not ok:
            st.rollbacks += 1
            if st.rollbacks > 8:
                raise SolverError(f"non-finite loss or gradient at iteration {it} after "
                                  "8 rollbacks")
            with torch.no_grad():
                v.copy_(st.good[0])
            opt.load_state_dict(st.good[1])
            st.lr_factor *= 0.5
            st.force_refresh = True
            log.warning("non-finite loss/gradient at iteration %d: rolled back, lr × %g",
                        it, st.lr_factor)
            return None
        gnorm = float(torch.nn.utils.clip_grad_norm_([v], cfg.optimizer.clip_norm))
        st.good = (v.detach().clone(), _opt_state(opt))
        opt.step()
        with torch.no_grad():
            n_barrier = int((kappa < cfg.threshold).sum())
        rec = {
            "iteration": it, "stage": step.stage.name, "lr": lr,
            "loss": float(loss.detach()), "data": float(data.detach()),
            **{f"prior_{k}": float(t.detach()) for k, t in terms.items()},
            "grad_norm": gnorm, "barrier_faces": n_barrier,
            "modes": self.cache.last.n_modes if self.cache.last else None,
            "seconds": st.seconds(),
        }
        if self.reference_faces is not None:
            rec.update(self._reference_scores(kappa.detach().numpy()))
        return rec

    def _record(self, st: _LoopState, rec: dict[str, Any], run_dir: Path | None,
                bar: Any) -> None:
        """History, JSONL log line and progress bar of one iteration."""
        st.history.append(rec)
        if run_dir is not None:
            with open(run_dir / LOG, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3g}", barrier=rec["barrier_faces"],
                        modes=rec["modes"], refresh=False)

    def _stop_on_plateau(self, st: _LoopState, rec: dict[str, Any], bar: Any) -> None:
        """Skip to the next stage when the loss has not improved for ``patience`` steps."""
        cfg, it = self.config, st.iteration
        step = locate(cfg, it)
        best_loss, best_it = st.stage_best.get(step.stage_index, (np.inf, it))
        if rec["loss"] < best_loss * (1 - cfg.stopping.min_rel_improvement):
            st.stage_best[step.stage_index] = (rec["loss"], it)
        elif cfg.stopping.patience and it - best_it >= cfg.stopping.patience:
            nxt = stage_start(cfg, step.stage_index + 1)
            log.info("stage %s: loss plateau at iteration %d, moving on", step.stage.name, it)
            bar.update(nxt - it - 1)
            st.skip_to = nxt


@dataclass(eq=False)
class _LoopState:
    """Everything one restart's loop carries between iterations (and checkpoints)."""

    v: torch.nn.Parameter
    opt: torch.optim.Optimizer
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    lr_factor: float = 1.0
    stage_best: dict[int, tuple[float, int]] = field(default_factory=dict)
    skip_to: int | None = None
    elapsed: float = 0.0  # seconds spent before the last resume
    t0: float = 0.0
    # Frozen eigenbasis (optimizer.eigen_refresh > 1): the κ of the last eigen-solve and
    # its kept modes; a checkpoint stores the κ, resume recomputes the modes.
    basis_kappa: np.ndarray | None = None
    basis: np.ndarray | None = None
    force_refresh: bool = False
    rollbacks: int = 0
    good: tuple[torch.Tensor, dict] | None = None

    @classmethod
    def new(cls, n_faces: int, cfg: ReconConfig) -> _LoopState:
        v = torch.nn.Parameter(torch.zeros(n_faces, dtype=torch.float64))
        opt = make_optimizer(cfg.optimizer.name, [v], lr=cfg.optimizer.lr,
                             betas=cfg.optimizer.betas)
        return cls(v, opt)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0

    def checkpoint(self, cfg: ReconConfig) -> dict[str, Any]:
        return {
            "v": self.v.detach().clone(), "optimizer": self.opt.state_dict(),
            "iteration": self.iteration, "history": self.history,
            "lr_factor": self.lr_factor, "stage_best": self.stage_best,
            "skip_to": self.skip_to, "config": dump_config(cfg),
            "basis_kappa": self.basis_kappa, "seconds": self.seconds(),
        }


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
