"""Run a sweep on Dask: one task per run, each writing its own run folder.

A run whose folder already holds ``metrics.json`` is skipped, so rerunning the same
command resumes a killed sweep; a failing run writes ``error.json`` and does not stop the
others. Default: a ``distributed.LocalCluster`` of single-threaded process workers (BLAS
limited to one thread per worker with threadpoolctl); ``scheduler`` connects to an
existing Dask scheduler (e.g. started by dask-jobqueue on SLURM/PBS); ``"synchronous"``
runs in-process (tests, debugging).
"""

from __future__ import annotations

import json
import os
import resource
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spinverse.sweep.spec import MeshCase, PhantomCase, RunSpec, SweepConfig, expand

METRICS = "metrics.json"
ERROR = "error.json"


def run_folder(out: Path, spec: RunSpec) -> Path:
    return out / spec.run_id


def _config(spec: RunSpec):
    import yaml

    from spinverse.recon.config import ablation_arm, config_from_dict, dump_config

    if spec.arm.preset == "search":
        import copy

        from spinverse.recon.config import method_config_from_dict

        # One process per sweep worker: the sweep spreads runs over the cores.
        data = {"method": "search", "workers": 1, **copy.deepcopy(spec.arm.config),
                "seed": spec.seed}
        if spec.noise.kind != "none":
            data.setdefault("ensemble", {}).setdefault("snr", spec.noise.snr or 100.0)
        return method_config_from_dict(data, source=f"arm {spec.arm_name}")
    cfg = ablation_arm(spec.arm.preset)
    if spec.arm.config:
        merged = {**yaml.safe_load(dump_config(cfg)), **spec.arm.config}
        cfg = config_from_dict(merged, source=f"arm {spec.arm_name}")
    if spec.arm.iterations:
        cfg = cfg.scaled_to(spec.arm.iterations)
    return cfg.model_copy(update={"seed": spec.seed})


def _target(spec: RunSpec):
    """(grid, Target, reference barrier faces or None) of a run's case."""
    from spinverse.recon.targets import Target, reference_faces

    case = spec.case
    if isinstance(case, str):
        from spinverse.recon.targets import case_target

        return case_target(case, protocol=_protocol(spec))
    if isinstance(case, MeshCase):
        from spinverse.io.signals import load_signals
        from spinverse.mesh.io import load_mesh

        base = Path(spec.base_dir)
        grid = load_mesh(base / case.mesh).grid
        sig = load_signals(base / case.target)
        reference = reference_faces(grid, sig.faces, sig.kappa)
        return grid, Target(sig.signal, sig.protocol, sig.outer_boundary), reference
    return _phantom_target(case, _protocol(spec))


def _protocol(spec: RunSpec):
    """The published protocol, with the arm's eigen truncation length ℓ (µm) if set."""
    from spinverse.acquisition.protocol import published_protocol

    prot = published_protocol()
    if spec.arm.length_scale is not None:
        prot = prot.replace(length_scale=spec.arm.length_scale)
    return prot


def _phantom_target(case: PhantomCase, prot):
    from spinverse.forward import simulate_signal
    from spinverse.mesh.generators import bcc_grid
    from spinverse.mesh.phantoms import (
        Sphere,
        barrier_faces,
        phantom_kappa,
        random_bent_axon,
        voxelise,
    )
    from spinverse.recon.targets import Target

    grid = bcc_grid(case.bcc)
    if case.phantom == "sphere":
        shape: Any = Sphere([0.0, 0.0, 0.0], case.radius)
    else:
        lo, hi = grid.bounding_box
        shape = random_bent_axon(case.seed, radius=case.radius, box=(lo, hi))
    barrier = barrier_faces(grid, voxelise(grid, shape))
    kappa = phantom_kappa(grid, barrier)
    sim = simulate_signal(grid, kappa, prot, outer_boundary="robin")
    return grid, Target(sim.signal, prot, "robin"), barrier


def run_one(spec: RunSpec, out: str, *, figures: bool = True) -> dict[str, Any]:
    """Run (or skip, when finished) one reconstruction; never raises: failures are
    returned and written to ``error.json``."""
    from threadpoolctl import threadpool_limits

    folder = run_folder(Path(out), spec)
    done = folder / METRICS
    base = {"run_id": spec.run_id, "case": spec.case_label, "arm": spec.arm_name,
            "seed": spec.seed, "noise": spec.noise.label}
    if done.is_file():
        return {**json.loads(done.read_text()), **base, "status": "done", "skipped": True}
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        from spinverse.recon.targets import with_noise
        from spinverse.recon.workflow import reconstruct

        cfg = _config(spec)
        grid, target, reference = _target(spec)
        if spec.noise.kind != "none":
            target = with_noise(target, kind=spec.noise.kind, snr=spec.noise.snr or 100.0,
                                seed=spec.seed)
        from spinverse.solvers.mf import thread_limit

        # one core per worker: BLAS and the propagators' worker threads both
        with threadpool_limits(limits=1, user_api="blas"), thread_limit(1):
            _, metrics = reconstruct(grid, target, folder, config=cfg,
                                     reference_faces=reference, progress=False,
                                     figures=figures, extra=base)
    except Exception as exc:  # a failed run is recorded, the sweep goes on
        err = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(), "wall_seconds": time.perf_counter() - t0}
        (folder / ERROR).write_text(json.dumps(err, indent=1))
        return err
    metrics.update(base)
    metrics["status"] = "done"
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (folder / ERROR).unlink(missing_ok=True)
    tmp = folder / (METRICS + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, done)
    return metrics


def run_sweep(
    sweep: SweepConfig,
    out: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] = ".",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    run: Callable[..., dict[str, Any]] = run_one,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every missing run of ``sweep`` into ``out``; returns one record per run.

    ``scheduler``: None (a new LocalCluster with ``workers`` processes), an address
    (``tcp://host:8786``) of a running scheduler, or ``"synchronous"``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = expand(sweep, base_dir)
    todo = [s for s in specs if not (run_folder(out, s) / METRICS).is_file()]
    echo(f"sweep: {len(specs)} runs, {len(specs) - len(todo)} already complete, "
         f"{len(todo)} to run")
    records = [run(s, str(out)) for s in specs if s not in todo]
    if not todo:
        return records
    if scheduler == "synchronous":
        import dask

        tasks = [dask.delayed(run)(s, str(out)) for s in todo]
        records += list(dask.compute(*tasks, scheduler="synchronous"))
        return records
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        n = workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        if client.dashboard_link:
            echo(f"Dask dashboard: {client.dashboard_link}")
        futures = client.map(run, todo, out=str(out), pure=False)
        bar = _bar(len(todo), progress)
        for fut in as_completed(futures):
            rec = fut.result()
            records.append(rec)
            bar.update(1)
            bar.set_postfix(last=rec["run_id"][-30:], status=rec["status"], refresh=False)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return records


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="run", disable=not enabled)
