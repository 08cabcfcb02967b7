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
) -> None:
    """Simulate the complex signal S (µm³) of a grid with per-face permeability."""
    from spinverse.acquisition.protocol import load_protocol, published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.io.signals import save_signals

    grid, kappa, case_name, source = _load_grid_and_kappa(mesh, case, kappa_default)
    prot = load_protocol(protocol) if protocol is not None else published_protocol()
    boundary = (outer_boundary.value if outer_boundary is not None
                else ("robin" if case_name else "reflecting"))
    result = simulate_signal(grid, kappa, prot, outer_boundary=boundary, solver=solver.value)
    save_signals(
        out, result.signal, prot, outer_boundary=boundary, faces=grid.faces, kappa=kappa,
        solver=result.solver, n_dofs=result.n_dofs,
        n_modes=-1 if result.n_modes is None else result.n_modes,
        mesh_source=source, case=case_name or "",
    )
    modes = f", {result.n_modes} modes" if result.n_modes is not None else ""
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


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "spinverse-demo"
    ),
    case: Annotated[str, typer.Option(help="Benchmark case to show.")] = "018",
) -> None:
    """Simulate a built-in benchmark case (the sphere) and plot its signal."""
    from spinverse.acquisition.protocol import published_protocol
    from spinverse.forward import simulate_signal
    from spinverse.io.signals import save_signals
    from spinverse.mesh import benchmark
    from spinverse.viz.signals import plot_signals

    name = benchmark.resolve_case(case)
    grid, kappa = benchmark.benchmark_grid(), benchmark.case_kappa(name)
    prot = published_protocol()
    typer.echo(f"simulating {name} on the benchmark grid ({grid.n_tets} tets) ...")
    res = simulate_signal(grid, kappa, prot, outer_boundary="robin")
    refl = simulate_signal(grid, kappa, prot, outer_boundary="reflecting")
    out.mkdir(parents=True, exist_ok=True)
    save_signals(out / "signals.npz", res.signal, prot, outer_boundary="robin",
                 faces=grid.faces, kappa=kappa, case=name)
    png = plot_signals(out / "signals.png", prot,
                       {"robin (reference)": res.signal, "reflecting": refl.signal},
                       title=f"{name}: {res.n_modes} / {refl.n_modes} modes")
    typer.echo(f"{res.n_modes} modes, {res.seconds:.2f} s; wrote {out / 'signals.npz'}")
    typer.echo(f"picture: {png}")


@app.command()
def version() -> None:
    """Print the package version."""
    from spinverse import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
