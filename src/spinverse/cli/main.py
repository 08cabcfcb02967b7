"""The ``spinverse`` command line (typer). Thin wrappers over library functions.

Heavy modules (scipy solvers, torch, matplotlib) are imported inside the commands that
need them, so ``spinverse --help`` and light commands start fast. Every error on bad
input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="spinverse",
    help="Per-face-permeability Bloch–Torrey simulation and membrane reconstruction.\n\n"
    "Units: µm, µs, diffusivity µm²/µs, permeability κ µm/µs, b in s/mm² (= µs/µm²).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OuterBoundary(StrEnum):
    reflecting = "reflecting"
    robin = "robin"


class Solver(StrEnum):
    mf = "mf"
    timestep = "timestep"


class Propagator(StrEnum):
    auto = "auto"
    eigen = "eigen"
    fullspace = "fullspace"


def fail(message: str) -> None:
    """Print one error line and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def friendly_errors(func: Any) -> Any:
    """Turn spinverse's typed errors into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from spinverse.errors import SpinverseError

        try:
            return func(*args, **kwargs)
        except SpinverseError as exc:
            fail(str(exc))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            fail(f"{exc.filename}: {exc.strerror}")

    return wrapper


def _load_grid_and_kappa(mesh: Path | None, case: str | None, kappa_default: float):
    from spinverse.mesh import benchmark

    if (mesh is None) == (case is None):
        fail("give either a MESH file or --case NAME (see `spinverse cases`)")
    if case is not None:
        name = benchmark.resolve_case(case)
        return benchmark.benchmark_grid(), benchmark.case_kappa(name), name, f"case:{name}"
    from spinverse.mesh.io import load_mesh

    loaded = load_mesh(mesh, kappa_default=kappa_default)  # type: ignore[arg-type]
    return loaded.grid, loaded.kappa, None, str(mesh)


@app.command()
@friendly_errors
def simulate(
    mesh: Annotated[
        Path | None,
        typer.Argument(help="Grid .npz (points (P,3) µm, tets (T,4); optional faces (F,3) "
                       "with kappa (F,) µm/µs) or any meshio tetra mesh."),
    ] = None,
    protocol: Annotated[
        Path | None,
        typer.Option("--protocol", "-p", help="PROTOCOL.yaml: diffusivity µm²/µs, "
                     "length_scale µm, bvalues s/mm², directions, sequences (times in µs). "
                     "Default: the published benchmark protocol."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output SIGNALS.npz.")] = Path(
        "signals.npz"
    ),
    outer_boundary: Annotated[
        OuterBoundary,
        typer.Option(help="Outer faces: reflecting (Neumann) or robin (leak with their κ, "
                     "the published method's convention). Default: reflecting, or robin "
                     "with --case."),
    ] = None,  # type: ignore[assignment]
    solver: Annotated[Solver, typer.Option(help="mf (matrix formalism) or timestep "
                                           "(Crank–Nicolson cross-check).")] = Solver.mf,
    kappa_default: Annotated[
        float, typer.Option(help="κ (µm/µs) of faces the MESH file does not list; inf = "
                            "continuous.")
    ] = float("inf"),
    case: Annotated[
        str | None,
        typer.Option(help="A public benchmark case (name or unique prefix, e.g. 018): "
                     "κ = 1e-5 µm/µs on its barrier, 0.1 elsewhere."),
    ] = None,
    refine: Annotated[
        int,
        typer.Option(min=0, help="Refine the grid this many times first (1:8 per level): "
                     "faces on an original face keep its κ; new faces get 0.1 µm/µs with "
                     "--case, else --kappa-default. Same surfaces, finer discretisation."),
    ] = 0,
    propagator: Annotated[
        Propagator,
        typer.Option(help="mf solver: eigen (modes cut at λ_max), fullspace (no eigenmodes, "
                     "untruncated; every face finite) or auto (eigen up to 8 000 unknowns, "
                     "else the cheaper by a cost model)."),
    ] = Propagator.auto,
) -> None:
    """Simulate the complex signal S (µm³) of a grid with per-face permeability."""
    from spinverse.acquisition.protocol import load_protocol, published_protocol
    from spinverse.errors import PermeabilityError
    from spinverse.forward import simulate_signal
    from spinverse.io.signals import save_signals

    grid, kappa, case_name, source = _load_grid_and_kappa(mesh, case, kappa_default)
    if refine:
        from spinverse.mesh.phantoms import OTHER_KAPPA
        from spinverse.recon.targets import refined_model

        grid, kappa = refined_model(grid, kappa, refine,
                                    new_faces=OTHER_KAPPA if case_name else kappa_default)
    prot = load_protocol(protocol) if protocol is not None else published_protocol()
    boundary = (outer_boundary.value if outer_boundary is not None
                else ("robin" if case_name else "reflecting"))
    try:
        opts = {"propagator": propagator.value} if solver is Solver.mf else {}
        if solver is not Solver.mf and propagator is not Propagator.auto:
            fail("--propagator belongs to the mf solver")
        result = simulate_signal(grid, kappa, prot, outer_boundary=boundary,
                                 solver=solver.value, **opts)
    except PermeabilityError as exc:  # κ comes from the MESH file: name it
        raise PermeabilityError(exc.message, source=exc.source or source,
                                field=exc.field) from None
    save_signals(
        out, result.signal, prot, outer_boundary=boundary, faces=grid.faces, kappa=kappa,
        solver=result.solver, n_dofs=result.n_dofs,
        n_modes=-1 if result.n_modes is None else result.n_modes,
        mesh_source=source, case=case_name or "", refine=refine,
    )
    modes = f", {result.n_modes} modes" if result.n_modes is not None else ""
    if result.info.get("propagator") == "fullspace":
        modes = ", full-space propagator"
    typer.echo(
        f"{out}: signal {result.signal.shape} (sequences, b-values, directions), "
        f"{result.n_dofs} unknowns{modes}, {boundary} outer boundary, "
        f"{result.seconds:.2f} s"
    )


@app.command()
@friendly_errors
def cases() -> None:
    """List the public benchmark cases (16 barrier surfaces on one 576-tet grid)."""
    from spinverse.mesh import benchmark

    grid = benchmark.benchmark_grid()
    typer.echo(f"{'name':<48} {'barrier faces':>13} {'enclosed µm³':>13}")
    for name in benchmark.case_names():
        barrier = benchmark.case_barrier(name)
        inside = benchmark.enclosed_tets(grid, barrier)
        typer.echo(f"{name:<48} {len(barrier):>13d} {grid.volumes[inside].sum():>13.1f}")


@app.command()
@friendly_errors
def info(
    mesh: Annotated[Path, typer.Argument(help="Grid file (.npz or any meshio tetra mesh).")],
    kappa_default: Annotated[float, typer.Option(help="κ of unlisted faces, µm/µs.")] = float(
        "inf"
    ),
) -> None:
    """Summarise a grid: sizes, volume (µm³), faces, κ statistics (µm/µs)."""
    import numpy as np

    from spinverse.mesh.io import load_mesh

    grid, kappa = load_mesh(mesh, kappa_default=kappa_default)
    for key, value in grid.summary().items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        typer.echo(f"{key:<16} {value}")
    finite = kappa[np.isfinite(kappa)]
    typer.echo(f"{'kappa_inf':<16} {int(np.isinf(kappa).sum())} faces (continuous)")
    if len(finite):
        typer.echo(f"{'kappa_finite':<16} {len(finite)} faces, min {finite.min():.3g}, "
                   f"median {np.median(finite):.3g}, max {finite.max():.3g} µm/µs")
        typer.echo(f"{'barrier(<1e-3)':<16} {int((kappa < 1e-3).sum())} faces")


class Noise(StrEnum):
    rician = "rician"
    gaussian = "gaussian"


class Preset(StrEnum):
    search = "search"
    published = "published"


def _method_config(config: Path | None, preset: Preset | None, *, seed: int,
                   iterations: int | None, budget: int | None, snr: float | None,
                   refine: int = 0):
    """The reconstruction method's configuration from --config / --preset and the
    options that tune it (one ``error:`` line when they do not fit the method). With
    ``refine`` > 0 the default search (no --config) gets the coarse-to-fine budget
    (:data:`spinverse.recon.coarse_to_fine.COARSE_BUDGET`) unless --budget says otherwise."""
    from spinverse.recon.config import load_method_config, published_preset
    from spinverse.recon.search.config import SearchConfig

    if config is not None and preset is not None:
        fail("give --config or --preset, not both")
    if config is None and preset is None and iterations is not None:
        preset = Preset.published  # --iterations is the gradient method's knob
    if config is not None:
        cfg = load_method_config(config)
    elif preset is Preset.published:
        cfg = published_preset()
    else:
        cfg = SearchConfig()
    cfg = cfg.model_copy(update={"seed": seed})
    if isinstance(cfg, SearchConfig):
        if iterations is not None:
            fail("--iterations belongs to the gradient method (--preset published); the "
                 "search's cost is --budget")
        if budget is None and refine and config is None:
            from spinverse.recon.coarse_to_fine import COARSE_BUDGET

            budget = COARSE_BUDGET
        if budget is not None:
            cfg = cfg.model_copy(update={"budget": budget})
        if snr is not None:
            cfg = cfg.model_copy(update={"ensemble": cfg.ensemble.model_copy(
                update={"snr": snr})})
        return SearchConfig.model_validate(cfg.model_dump())
    if budget is not None:
        fail("--budget belongs to the search method; the gradient method's cost is "
             "--iterations")
    return cfg.scaled_to(iterations) if iterations is not None else cfg


@app.command()
@friendly_errors
def reconstruct(
    target: Annotated[Path | None, typer.Option(help="SIGNALS.npz (from `spinverse "
                                                "simulate` or measured).")] = None,
    grid: Annotated[Path | None, typer.Option(help="GRID.npz: points (P,3) µm, tets (T,4), "
                                              "optional faces (F,3) fixing the face order.")
                    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("run"),
    config: Annotated[Path | None, typer.Option(
        help="RECON.yaml: method: search (the default; see README) or method: gradient "
             "(the published curriculum + priors and its variants).")] = None,
    preset: Annotated[Preset | None, typer.Option(
        help="search (default: whole-shape search with an ensemble) or published (gradient "
             "descent on per-face κ with the published curriculum and priors).")] = None,
    budget: Annotated[int | None, typer.Option(
        min=10, help="search: distinct shapes simulated in all (default 4000; 1500 with "
                     "--refine, whose fine stage goes on from the coarse answer).")] = None,
    outer_boundary: Annotated[OuterBoundary | None, typer.Option(
        help="Override the target's outer-boundary mode.")] = None,
    protocol: Annotated[Path | None, typer.Option(
        help="PROTOCOL.yaml overriding the one stored in the target.")] = None,
    noise: Annotated[Noise | None, typer.Option(help="Add noise to the target.")] = None,
    snr: Annotated[float | None, typer.Option(
        help="SNR relative to |S(b=0)|: of the noise --noise adds (default 100), or of a "
             "measured target; the search sets its ensemble tolerance from it.")] = None,
    seed: Annotated[int, typer.Option(help="Noise and initialisation seed.")] = 0,
    case: Annotated[str | None, typer.Option(
        help="Reconstruct a public benchmark case (simulated with the published protocol "
             "and the reference-compatible Robin boundary, or --outer-boundary).")] = None,
    refine_target: Annotated[int, typer.Option(
        min=0, help="With --case: simulate the target on the benchmark grid refined this "
                    "many times (1:8 per level, continuous tissue off the barrier), so it "
                    "is not an inverse crime.")] = 0,
    iterations: Annotated[int | None, typer.Option(
        help="Gradient method (implies --preset published without --config): scale every "
             "stage to about this many iterations in all.")] = None,
    refine: Annotated[int, typer.Option(
        min=0, max=2, help="Coarse-to-fine: after the fit, correct the coarse model by the "
                           "grid refined this many times (1:8 each, continuous tissue off "
                           "the membrane; one fine simulation a round) and search again; "
                           "results in OUT/refined, µm surface metrics against the "
                           "reference in OUT/coarse_to_fine.json.")] = 0,
    refine_budget: Annotated[int, typer.Option(
        min=1, help="Coarse shapes the fine stage (--refine) may simulate a round (at "
                    "most 4 rounds).")] = 600,
    bvals: Annotated[Path | None, typer.Option(
        help="FSL bvals (s/mm²) of a NIfTI --target.")] = None,
    bvecs: Annotated[Path | None, typer.Option(help="FSL bvecs of a NIfTI --target.")] = None,
    voxel: Annotated[str | None, typer.Option(
        help="Voxel i,j,k of a NIfTI --target (or --mask).")] = None,
    mask: Annotated[Path | None, typer.Option(
        help="Mask image: fit the mean signal of its voxels (NIfTI --target).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Recover per-face permeability (κ in µm/µs) from a target signal.

    The target is SIGNALS.npz (from `spinverse simulate`), or a 4-D NIfTI image
    (.nii/.nii.gz, needs the `nifti` extra) with --bvals, --bvecs, --voxel or --mask and
    --protocol (its diffusivity, ℓ and sequence; its b-values and directions come from the
    image). A measured signal is rescaled so that its b = 0 mean equals the grid volume
    (µm³, the b = 0 signal of a closed sample) and is fitted with a reflecting outer
    boundary unless --outer-boundary says otherwise.
    """

    from spinverse.recon.targets import Target, case_target, reference_faces

    cfg = _method_config(config, preset, seed=seed, iterations=iterations, budget=budget,
                         snr=snr, refine=refine)
    reference = None
    if case is not None:
        if target is not None or grid is not None:
            fail("--case replaces --target and --grid; give one or the other")
        the_grid, tgt, reference = case_target(
            case, refine=refine_target,
            outer_boundary=outer_boundary.value if outer_boundary else "robin")
    else:
        if target is None or grid is None:
            fail("give --target SIGNALS.npz and --grid GRID.npz (or --case NAME)")
        if refine_target:
            fail("--refine-target needs --case (for a file target, simulate it with "
                 "`spinverse simulate --refine N`)")
        from spinverse.acquisition.protocol import load_protocol
        from spinverse.io.signals import load_signals
        from spinverse.mesh.io import load_mesh

        if _is_nifti(target):
            the_grid = load_mesh(grid).grid
            tgt = _nifti_target(target, bvals, bvecs, voxel, mask, protocol, the_grid)
            from spinverse.recon.config import ReconConfig, no_curriculum

            if config is None and isinstance(cfg, ReconConfig):  # one measured sequence
                cfg = no_curriculum(cfg, sequences="all")
            _run_reconstruction(the_grid, tgt, out, cfg, None, outer_boundary, noise, snr,
                                seed, str(target), quiet, refine=(refine, refine_budget))
            return
        sig = load_signals(target)
        the_grid = load_mesh(grid).grid
        prot = load_protocol(protocol) if protocol is not None else sig.protocol
        if protocol is not None and (prot.n_sequences, prot.n_bvalues, prot.n_directions) \
                != sig.signal.shape:
            fail(f"{protocol}: shape {(prot.n_sequences, prot.n_bvalues, prot.n_directions)}"
                 f" does not match the target signal {sig.signal.shape}")
        tgt = Target(sig.signal, prot, sig.outer_boundary)
        reference = reference_faces(the_grid, sig.faces, sig.kappa, cfg.threshold)
    _run_reconstruction(the_grid, tgt, out, cfg, reference, outer_boundary, noise, snr,
                        seed, case or "", quiet, refine_target,
                        refine=(refine, refine_budget))


def _run_reconstruction(the_grid, tgt, out: Path, cfg, reference, outer_boundary,
                        noise, snr: float | None, seed: int, label: str, quiet: bool,
                        refine_target: int = 0, refine: tuple[int, int] = (0, 600)) -> None:
    from spinverse.recon.targets import Target, with_noise
    from spinverse.recon.workflow import reconstruct as run_reconstruction

    if outer_boundary is not None:
        tgt = Target(tgt.signal, tgt.protocol, outer_boundary.value)
    if noise is not None:
        snr = 100.0 if snr is None else snr
        tgt = with_noise(tgt, kind=noise.value, snr=snr, seed=seed)
        if hasattr(cfg, "ensemble") and cfg.ensemble.snr is None:
            cfg = cfg.model_copy(update={"ensemble": cfg.ensemble.model_copy(
                update={"snr": snr})})
    extra = {"case": label, "noise": noise.value if noise else "none",
             "snr": snr, "seed": seed, "target_refine": refine_target}
    rec, metrics = run_reconstruction(the_grid, tgt, out, config=cfg,
                                      reference_faces=reference, progress=not quiet,
                                      extra=extra, refine=refine[0],
                                      refine_budget=refine[1])
    typer.echo(_summary(out / "refined" if refine[0] else out, rec, metrics))


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nifti_target(image: Path, bvals: Path | None, bvecs: Path | None, voxel: str | None,
                  mask: Path | None, protocol: Path | None, grid):
    """The NIfTI options checked and parsed, then :func:`spinverse.recon.targets.nifti_target`."""
    from spinverse.recon.targets import nifti_target

    missing = [flag for flag, v in (("--bvals", bvals), ("--bvecs", bvecs),
                                    ("--protocol", protocol)) if v is None]
    if missing:
        fail(f"{image}: a NIfTI target needs {', '.join(missing)} (the protocol gives the "
             "diffusivity, ℓ and the sequence)")
    if (voxel is None) == (mask is None):
        fail(f"{image}: give exactly one of --voxel i,j,k and --mask MASK")
    ijk = None
    if voxel is not None:
        try:
            ijk = tuple(int(x) for x in voxel.split(","))
        except ValueError:
            ijk = ()
        if len(ijk) != 3:
            fail(f"--voxel: expected three integers i,j,k, got {voxel!r}")
    return nifti_target(image, bvals, bvecs, protocol, grid, voxel=ijk,  # type: ignore[arg-type]
                        mask=mask)


def _summary(out: Path, rec, metrics: dict) -> str:
    surf = metrics.get("surface_um") or {}
    if surf:  # coarse-to-fine run
        coarse = metrics.get("coarse_data_loss", float("nan"))
        lines = [f"{out}: {len(rec.barrier)} barrier faces on the refined grid, data loss "
                 f"{rec.data_loss:.3g} (coarse {coarse:.3g})"]
        for k in ("coarse", "fine"):
            m = surf[k]
            lines.append(f"  {k:6s}: Chamfer {m['chamfer_um']:.2f} µm, Hausdorff "
                         f"{m['hausdorff_um']:.2f} µm, volume error "
                         f"{100 * m['volume_error_rel']:+.1f} %")
        return "\n".join(lines)
    search = metrics.get("method") == "search"
    what = f"{metrics.get('simulations', 0)} shapes simulated" if search else "gradient fit"
    lines = [f"{out}: {len(rec.barrier)} barrier faces, data loss {rec.data_loss:.3g}, "
             f"{rec.seconds:.0f} s ({what})"]
    if search:
        rise = metrics.get("neighbour_loss_increase_median")
        lines.append(
            f"  single-tet neighbours: median loss increase {rise:.3g}"
            if rise is not None else "  single-tet neighbours: not scanned")
        lines.append(f"  ensemble: {metrics['ensemble_size']} shapes within "
                     f"{metrics['ensemble_tolerance']:.3g} of the answer's loss, "
                     f"{metrics['ensemble_uncertain_faces']} faces uncertain")
        if "truth_one_tet_level" in metrics:
            lines.append(f"  truth: one-tet level {metrics['truth_one_tet_level']:.3g}, "
                         f"answer's twin overlap {metrics['twin_overlap']:.2f}, truth in "
                         f"ensemble: {'yes' if metrics['truth_in_ensemble'] else 'no'}")
    if "f1" in metrics:
        lines.append(
            f"  face F1 {metrics['f1']:.3f} (best alignment {metrics.get('f1_aligned', 0):.3f}),"
            f" Chamfer² {metrics.get('chamfer', float('nan')):.3g} µm², bad edges "
            f"{metrics.get('bad_pct', float('nan')):.1f} %")
        if not search:
            lines.append(
                f"  closed interface: F1 {metrics.get('closed_f1', 0):.3f} (best alignment "
                f"{metrics.get('closed_f1_aligned', 0):.3f}), Chamfer² "
                f"{metrics.get('closed_chamfer', float('nan')):.3g} µm², bad edges "
                f"{metrics.get('closed_bad_pct', float('nan')):.1f} %")
    pics = ["surface.png", "loss.png", "signals.png"] + (["probability.png"] if search else [])
    lines.append("  pictures: " + ", ".join(str(out / p) for p in pics))
    return "\n".join(lines)


@app.command()
@friendly_errors
def permeability(
    target: Annotated[Path, typer.Option(help="SIGNALS.npz (from `spinverse simulate` or "
                                         "measured), with a b = 0 row.")],
    grid: Annotated[Path, typer.Option(help="GRID.npz: points (P,3) µm, tets (T,4), "
                                       "optional faces (F,3).")],
    membrane: Annotated[Path, typer.Option(help="M.npz with 'faces' (B,3): vertex triples "
                                           "(any order) of the membrane's grid faces.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("perm"),
    outer_boundary: Annotated[OuterBoundary | None, typer.Option(
        help="Override the target's outer-boundary mode.")] = None,
    snr: Annotated[float | None, typer.Option(
        help="SNR relative to |S(b=0)|: report the Cramér–Rao standard deviation of κ.")
    ] = None,
    noise_model: Annotated[Noise, typer.Option(
        help="Noise of the magnitudes for the bound.")] = Noise.rician,
    other_kappa: Annotated[float, typer.Option(
        help="κ (µm/µs) of every face not in the membrane (the benchmark's 0.1).")] = 0.1,
    per_region: Annotated[bool, typer.Option(
        help="One κ per enclosed region instead of one for the whole membrane.")] = False,
) -> None:
    """Fit the membrane's permeability κ (µm/µs) with the geometry given; write
    DIR/permeability.json (κ, its CRLB std at --snr, exchange time τ = V/(κA) in ms of each
    enclosed region, data loss) and DIR/fit.png."""
    import json

    import numpy as np

    from spinverse.io.signals import load_signals
    from spinverse.mesh.io import load_mesh
    from spinverse.recon.outputs import to_jsonable
    from spinverse.recon.permeability import fit_permeability
    from spinverse.recon.targets import Target

    if not np.isfinite(other_kappa) or other_kappa <= 0:
        fail(f"--other-kappa must be a positive number of µm/µs, got {other_kappa:g}")
    if snr is not None and (not np.isfinite(snr) or snr <= 0):
        fail(f"--snr must be positive, got {snr:g}")
    the_grid = load_mesh(grid).grid
    sig = load_signals(target)
    if not np.any(sig.protocol.bvalues == 0):
        fail(f"{target}: bvalues: the target has no b = 0 row (the data term's normaliser)")
    faces = _membrane_faces(membrane, the_grid)
    tgt = Target(sig.signal, sig.protocol,
                 outer_boundary.value if outer_boundary is not None else sig.outer_boundary)
    typer.echo(f"fitting κ of {len(faces)} membrane faces "
               f"({'one per enclosed region' if per_region else 'one shared value'}), "
               f"{tgt.outer_boundary} outer boundary ...")
    fit = fit_permeability(the_grid, tgt, faces, per_region=per_region,
                           other_kappa=other_kappa, snr=snr, noise=noise_model.value)
    out.mkdir(parents=True, exist_ok=True)
    one = not per_region
    result = {
        "kappa": float(fit.kappa[0]) if one else fit.kappa.tolist(),
        "kappa_std": (None if fit.kappa_std is None else
                      float(fit.kappa_std[0]) if one else fit.kappa_std.tolist()),
        "exchange_time_ms": fit.exchange_time_ms.tolist(),
        "data_loss": fit.data_loss,
        "units": {"kappa": "µm/µs", "exchange_time_ms": "ms", "region_volume": "µm³",
                  "region_area": "µm²"},
        "log10_kappa": fit.log10_kappa.tolist(),
        "log10_kappa_std": None if fit.log10_kappa_std is None else fit.log10_kappa_std.tolist(),
        "region_volume": fit.region_volume.tolist(),
        "region_area": fit.region_area.tolist(),
        "outer_boundary": tgt.outer_boundary, "other_kappa": other_kappa,
        "simulations": fit.simulations, "seconds": fit.seconds, "scan": fit.scan,
        **fit.info,
    }
    (out / "permeability.json").write_text(json.dumps(to_jsonable(result), indent=1))
    from spinverse.viz.recon import plot_permeability_fit

    plot_permeability_fit(out / "fit.png", tgt, fit)
    std = ("" if fit.kappa_std is None else
           " ± " + ", ".join(f"{s:.3g}" for s in fit.kappa_std) + f" (CRLB, SNR {snr:g})")
    typer.echo(f"{out / 'permeability.json'}: κ = {', '.join(f'{k:.4g}' for k in fit.kappa)}"
               f"{std} µm/µs; τ = {', '.join(f'{t:.3g}' for t in fit.exchange_time_ms)} ms; "
               f"data loss {fit.data_loss:.3g}; {fit.seconds:.0f} s")


def _membrane_faces(path: Path, grid: Any) -> Any:
    """Face indices of M.npz's 'faces' (B,3) vertex triples; one-line errors otherwise."""
    import numpy as np

    from spinverse.errors import InputFileError, MeshError

    if not Path(path).is_file():
        raise InputFileError("no such file", source=str(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            if "faces" not in data.files:
                raise InputFileError(f"missing key 'faces' (found: {', '.join(data.files)})",
                                     source=str(path), field="faces")
            tri = np.asarray(data["faces"])
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputFileError):
            raise
        raise InputFileError(f"not a readable .npz file ({exc})", source=str(path)) from None
    if tri.ndim != 2 or tri.shape[1] != 3 or not np.issubdtype(tri.dtype, np.integer):
        raise InputFileError(f"expected integer vertex triples (B, 3), got {tri.dtype} "
                             f"{tri.shape}", source=str(path), field="faces")
    if len(tri) == 0:
        raise MeshError("the membrane is empty (no faces)", source=str(path), field="faces")
    idx = grid.face_index(tri)
    bad = np.flatnonzero(idx < 0)
    if len(bad):
        raise MeshError(f"{len(bad)} rows are not faces of the grid (first: row {bad[0]} = "
                        f"{tri[bad[0]].tolist()})", source=str(path), field="faces")
    return np.unique(idx)


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "spinverse-demo"
    ),
    case: Annotated[str, typer.Option(help="Benchmark case to reconstruct.")] = "018",
    budget: Annotated[int, typer.Option(
        min=10, help="Distinct shapes the search may simulate.")] = 600,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Reconstruct the sphere of the public benchmark from its simulated signal (the
    published protocol and conventions, all three sequences) with the whole-shape search,
    and write the pictures (about 1–2 min on 2 cores)."""
    from spinverse.recon.search.config import SearchConfig
    from spinverse.recon.targets import case_target
    from spinverse.recon.workflow import reconstruct as run_reconstruction

    grid, target, reference = case_target(case)
    typer.echo(f"target: benchmark case {case} on a {grid.n_tets}-tet grid, "
               f"{target.protocol.n_sequences} PGSE sequences (published protocol, Robin "
               f"outer faces); searching sharp shapes ({budget} at most) ...")
    cfg = SearchConfig(budget=budget, families={"ellipsoid": min(300, budget // 2)},
                       descents=1)
    rec, metrics = run_reconstruction(grid, target, out, config=cfg,
                                      reference_faces=reference, progress=not quiet,
                                      extra={"case": case})
    typer.echo(_summary(out, rec, metrics))


@app.command()
@friendly_errors
def sweep(
    spec: Annotated[Path, typer.Argument(help="SWEEP.yaml: cases, arms, seeds, noise.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder.")] = Path("sweep"),
    scheduler: Annotated[str | None, typer.Option(
        help="Address of a running Dask scheduler (tcp://host:8786), or 'synchronous'. "
             "Default: a local cluster.")] = None,
    workers: Annotated[int | None, typer.Option(help="Local worker processes.")] = None,
) -> None:
    """Run every (case × arm × seed × noise) reconstruction of SWEEP.yaml on Dask, skipping
    finished runs (rerun the same command to resume), then write the report."""
    from spinverse.sweep.report import write_report
    from spinverse.sweep.runner import run_sweep
    from spinverse.sweep.spec import load_sweep

    cfg = load_sweep(spec)
    records = run_sweep(cfg, out, base_dir=spec.parent, scheduler=scheduler,
                        workers=workers, echo=typer.echo)
    failed = [r for r in records if r.get("status") != "done"]
    report = write_report(out)
    typer.echo(f"{len(records) - len(failed)} runs done, {len(failed)} failed; "
               f"report: {report}")


@app.command()
@friendly_errors
def report(
    folder: Annotated[Path, typer.Argument(help="A sweep folder.")],
    rescore: Annotated[bool, typer.Option(
        help="First recompute every benchmark-case run's metrics from its kappa.npz.")] = False,
) -> None:
    """Rebuild a sweep's tables, report.md and figures from its run folders."""
    from spinverse.sweep.report import rescore as rescore_runs
    from spinverse.sweep.report import write_report

    if not folder.is_dir():
        fail(f"{folder}: no such folder")
    if rescore:
        typer.echo(f"rescored {rescore_runs(folder)} runs")
    typer.echo(f"report: {write_report(folder)}")


@app.command()
def version() -> None:
    """Print the package version."""
    from spinverse import __version__

    typer.echo(__version__)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: like ``app()``, but a command-line usage error (unknown option,
    bad choice, missing argument) is one ``error:`` line with exit code 2 too."""
    try:
        from typer._click import exceptions as cx  # typer vendors click
    except ImportError:  # pragma: no cover - typer on plain click
        from click import exceptions as cx  # type: ignore[no-redef]

    try:
        result = app(args=argv, standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "spinverse --help")
        return 0
    except cx.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        message = " ".join(exc.format_message().split())
        typer.echo(f"error: {message}{where}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
