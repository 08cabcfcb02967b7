"""Every bad input gives one clear line: exit code 2 from the CLI, a typed error from the API.

Each case below builds one bad input in its own folder, runs it through the command line
(typer's CliRunner on :data:`spinverse.cli.main.app`) and, where a library entry point
exists, through the API. The CLI must exit with code 2 and print exactly one line,
``error: <file>: <field>: <problem>``, naming the file (where there is one) and the field,
with no traceback; the API must raise the documented subclass of
:class:`~spinverse.errors.SpinverseError`.

The cases are rendered as a table in ``docs/bad_inputs.md``. With ``SPINVERSE_WRITE_DOCS=1``
the test (re)writes that file; otherwise it checks that the committed file is exactly what
it would write, so the table never goes stale. The folder of each case is shown as
``<tmp>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from spinverse.acquisition.protocol import load_protocol
from spinverse.cli.main import app
from spinverse.errors import (
    ConfigError,
    InputFileError,
    MeshError,
    PermeabilityError,
    ProtocolError,
    SpinverseError,
)
from spinverse.io.signals import load_signals, save_signals
from spinverse.mesh.generators import uniform_box_grid
from spinverse.mesh.io import KappaFileError, load_mesh

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
runner = CliRunner()

# A valid 12-tet box grid [0, 4] × [0, 2] × [0, 2] µm and a valid small protocol: each case
# breaks exactly one thing.
GRID = uniform_box_grid([0, 0, 0], [4.0, 2.0, 2.0], [2, 1, 1])
PROTOCOL: dict[str, Any] = {
    "diffusivity": 2e-3,
    "length_scale": 1.0,
    "bvalues": [0, 1000, 3000],
    "directions": [[1, 0, 0], [0, 1, 0]],
    "sequences": [{"type": "pgse", "delta": 5000, "Delta": 10000}],
}
BENCH = Path("voxel_meshes.npz")  # the shipped benchmark (cases)
RECON_STAGE = {"name": "s", "sequences": [0], "iterations": 5}


@dataclass
class Built:
    """One bad input, ready to run.

    ``argv``: the CLI arguments; ``api``: a call of the library entry point (or None when
    the input only exists on the command line) that must raise ``error``; ``file``: the
    path the message must name (None when no file is involved); ``field``: the field or
    key the message must name (None when the whole file is wrong); ``needle``: other text
    the message must contain.
    """

    argv: list[str]
    api: Callable[[], Any] | None
    api_name: str | None
    error: type[SpinverseError] | None
    file: Path | None
    field: str | None
    needle: str | None = None


@dataclass(frozen=True)
class Case:
    key: str
    description: str
    build: Callable[[Path], Built]


CASES: list[Case] = []


def case(key: str, description: str) -> Callable[[Callable[[Path], Built]], Callable]:
    """Register a builder ``build(folder) -> Built`` under ``key``."""

    def register(build: Callable[[Path], Built]) -> Callable[[Path], Built]:
        CASES.append(Case(key, description, build))
        return build

    return register


# ---------------------------------------------------------------------------- file makers
def write_mesh(d: Path, name: str = "mesh.npz", **arrays: Any) -> Path:
    """An .npz grid: the valid box grid with ``arrays`` replacing (None: removing) keys."""
    data: dict[str, Any] = {"points": GRID.points, "tets": GRID.tets}
    data.update(arrays)
    path = d / name
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def write_protocol(d: Path, name: str = "protocol.yaml", text: str | None = None,
                   **changes: Any) -> Path:
    """The valid protocol with ``changes`` (None removes a key), or ``text`` verbatim."""
    path = d / name
    if text is None:
        data = {**PROTOCOL, **changes}
        text = yaml.safe_dump({k: v for k, v in data.items() if v is not None},
                              sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def write_signals(d: Path, name: str = "signals.npz", *, signal: Any = None,
                  **extra: Any) -> Path:
    """A SIGNALS.npz for the valid protocol (optionally with a bad ``signal``/metadata)."""
    prot = load_protocol(write_protocol(d, "target_protocol.yaml"))
    if signal is None:
        signal = np.ones((prot.n_sequences, prot.n_bvalues, prot.n_directions), complex)
    return save_signals(d / name, signal, prot, outer_boundary="reflecting", **extra)


def rewrite(path: Path, **arrays: Any) -> Path:
    """Replace (None: remove) arrays of an existing .npz."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def write_config(d: Path, text: str, name: str = "recon.yaml") -> Path:
    path = d / name
    path.write_text(text, encoding="utf-8")
    return path


def mesh_case(d: Path, path: Path, error: type[SpinverseError], field: str | None,
              command: str = "info", needle: str | None = None, **kw: Any) -> Built:
    """Run a bad MESH through ``spinverse info`` (or ``simulate``) and ``load_mesh``."""
    argv = [command, str(path)]
    if command == "simulate":
        argv += ["-p", str(write_protocol(d)), "-o", str(d / "out.npz")]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    return Built(argv, lambda: load_mesh(path, **kw), "load_mesh", error, path, field, needle)


def protocol_case(d: Path, path: Path, error: type[SpinverseError], field: str | None,
                  file: Path | None = None, needle: str | None = None) -> Built:
    """Run a bad PROTOCOL.yaml through ``spinverse simulate`` and ``load_protocol``."""
    argv = ["simulate", str(write_mesh(d)), "-p", str(path), "-o", str(d / "out.npz")]
    return Built(argv, lambda: load_protocol(path), "load_protocol", error, file or path,
                 field, needle)


def target_case(d: Path, path: Path, error: type[SpinverseError], field: str | None,
                needle: str | None = None) -> Built:
    """Run a bad SIGNALS.npz through ``spinverse reconstruct --target`` and
    ``load_signals``."""
    argv = ["reconstruct", "--target", str(path), "--grid", str(write_mesh(d, "grid.npz")),
            "--out", str(d / "run"), "--quiet"]
    return Built(argv, lambda: load_signals(path), "load_signals", error, path, field,
                 needle)


def config_case(d: Path, path: Path, error: type[SpinverseError], field: str | None,
                needle: str | None = None) -> Built:
    """Run a bad RECON.yaml through ``spinverse reconstruct --config`` and
    ``load_config``."""
    from spinverse.recon.config import load_config

    argv = ["reconstruct", "--config", str(path), "--target", str(write_signals(d)),
            "--grid", str(write_mesh(d, "grid.npz")), "--out", str(d / "run"), "--quiet"]
    return Built(argv, lambda: load_config(path), "load_config", error, path, field,
                 needle)


# ---------------------------------------------------------------------------- meshes
@case("mesh-inverted", "inverted tets (two tets overlap across their shared face)")
def _(d: Path) -> Built:
    pts = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [1.2, 1.1, 0.8], [1, 1, 1]], float)
    path = write_mesh(d, points=pts, tets=np.array([[0, 1, 2, 4], [0, 1, 2, 3]]))
    return mesh_case(d, path, MeshError, "tets", "simulate")


@case("mesh-zero-volume", "a zero-volume tet (four coplanar vertices)")
def _(d: Path) -> Built:
    pts = np.vstack([GRID.points, [[1, 1, 0]]])
    tets = np.vstack([GRID.tets, [[0, 2, 4, 12]]])  # all in the plane z = 0
    return mesh_case(d, write_mesh(d, points=pts, tets=tets), MeshError, "tets")


@case("mesh-duplicate", "duplicate tets (the same four vertices twice)")
def _(d: Path) -> Built:
    tets = np.vstack([GRID.tets, GRID.tets[3, ::-1]])
    return mesh_case(d, write_mesh(d, tets=tets), MeshError, "tets", "simulate")


@case("mesh-nan", "a NaN vertex coordinate")
def _(d: Path) -> Built:
    pts = GRID.points.copy()
    pts[5, 1] = np.nan
    return mesh_case(d, write_mesh(d, points=pts), MeshError, "points", "simulate")


@case("mesh-inf", "an infinite vertex coordinate")
def _(d: Path) -> Built:
    pts = GRID.points.copy()
    pts[2, 0] = np.inf
    return mesh_case(d, write_mesh(d, points=pts), MeshError, "points")


@case("mesh-float-ids", "non-integer vertex ids in `tets`")
def _(d: Path) -> Built:
    tets = GRID.tets.astype(float)
    tets[0, 1] = 1.5
    return mesh_case(d, write_mesh(d, tets=tets), InputFileError, "tets")


@case("mesh-id-too-large", "a vertex id past the last point")
def _(d: Path) -> Built:
    tets = GRID.tets.copy()
    tets[4, 3] = GRID.n_points
    return mesh_case(d, write_mesh(d, tets=tets), MeshError, "tets", "simulate")


@case("mesh-id-negative", "a negative vertex id")
def _(d: Path) -> Built:
    tets = GRID.tets.copy()
    tets[0, 0] = -1
    return mesh_case(d, write_mesh(d, tets=tets), MeshError, "tets")


@case("mesh-points-shape", "`points` of shape (P, 2)")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d, points=GRID.points[:, :2]), InputFileError, "points")


@case("mesh-tets-shape", "`tets` of shape (T, 3)")
def _(d: Path) -> Built:
    path = write_mesh(d, tets=GRID.tets[:, :3])
    return mesh_case(d, path, InputFileError, "tets", "simulate")


@case("mesh-points-text", "`points` holding strings")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d, points=GRID.points.astype(str)), InputFileError, "points")


@case("mesh-complex", "complex vertex coordinates")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d, points=GRID.points + 0.5j), MeshError, "points")


@case("mesh-non-manifold", "a face shared by 3 tets (non-manifold)")
def _(d: Path) -> Built:
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1], [1, 1, 1]], float)
    tets = np.array([[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 5]])
    return mesh_case(d, write_mesh(d, points=pts, tets=tets), MeshError, "tets", "simulate")


@case("mesh-faces-not-faces", "`faces` rows that are not faces of the grid")
def _(d: Path) -> Built:
    faces = np.array([[0, 1, 3], [0, 1, 11]])
    path = write_mesh(d, faces=faces, kappa=np.array([1e-3, 1e-3]))
    return mesh_case(d, path, MeshError, "faces", "simulate")


@case("mesh-faces-huge-id", "a `faces` row with a vertex id far past the last point")
def _(d: Path) -> Built:
    faces = np.array([[0, 1, 3], [1, 3, 2**40]])
    path = write_mesh(d, faces=faces, kappa=np.array([1e-3, 1e-3]))
    return mesh_case(d, path, MeshError, "faces")


@case("mesh-faces-float-id", "a `faces` row with a float id too large to be an integer")
def _(d: Path) -> Built:
    faces = np.array([[1e30, 1, 3]])
    return mesh_case(d, write_mesh(d, faces=faces, kappa=np.array([1e-3])), InputFileError,
                     "faces")


@case("mesh-faces-twice", "a face listed twice in `faces`")
def _(d: Path) -> Built:
    faces = np.array([[0, 1, 3], [3, 1, 0]])
    return mesh_case(d, write_mesh(d, faces=faces, kappa=np.array([1e-3, 1e-2])), MeshError,
                     "faces")


@case("mesh-faces-shape", "`faces` of shape (F, 4)")
def _(d: Path) -> Built:
    path = write_mesh(d, faces=GRID.tets[:2], kappa=np.array([1e-3, 1e-3]))
    return mesh_case(d, path, InputFileError, "faces")


@case("kappa-negative", "κ < 0 on a face")
def _(d: Path) -> Built:
    path = write_mesh(d, faces=GRID.faces[:3], kappa=np.array([1e-3, -1e-4, 1e-3]))
    return mesh_case(d, path, KappaFileError, "kappa", "simulate")


@case("kappa-nan", "κ = NaN on a face")
def _(d: Path) -> Built:
    path = write_mesh(d, faces=GRID.faces[:3], kappa=np.array([1e-3, 1e-3, np.nan]))
    return mesh_case(d, path, KappaFileError, "kappa", "simulate")


@case("kappa-length", "κ length ≠ number of `faces` rows")
def _(d: Path) -> Built:
    path = write_mesh(d, faces=GRID.faces[:3], kappa=np.array([1e-3, 1e-3]))
    return mesh_case(d, path, KappaFileError, "kappa")


@case("kappa-length-no-faces", "κ without `faces` and not one value per grid face")
def _(d: Path) -> Built:
    path = write_mesh(d, kappa=np.full(GRID.n_faces - 1, 1e-3))
    return mesh_case(d, path, KappaFileError, "kappa", "simulate")


@case("kappa-text", "κ holding strings")
def _(d: Path) -> Built:
    path = write_mesh(d, faces=GRID.faces[:2], kappa=np.array(["low", "high"]))
    return mesh_case(d, path, KappaFileError, "kappa")


@case("kappa-default-negative", "`--kappa-default` < 0")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d), KappaFileError, "kappa", kappa_default=-1.0)


@case("kappa-default-nan", "`--kappa-default` NaN")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d), KappaFileError, "kappa", "simulate",
                     kappa_default=float("nan"))


@case("robin-inf", "robin outer boundary with κ = ∞ on outer faces")
def _(d: Path) -> Built:
    from spinverse.forward import simulate_signal

    mesh, prot = write_mesh(d), write_protocol(d)
    argv = ["simulate", str(mesh), "-p", str(prot), "-o", str(d / "out.npz"),
            "--outer-boundary", "robin"]

    def api() -> Any:
        grid, kappa = load_mesh(mesh)
        return simulate_signal(grid, kappa, load_protocol(prot), outer_boundary="robin")

    return Built(argv, api, "simulate_signal", PermeabilityError, mesh, "kappa")


@case("mesh-missing", "MESH file does not exist")
def _(d: Path) -> Built:
    return mesh_case(d, d / "mesh.npz", InputFileError, None, "simulate", "not found")


@case("mesh-directory", "MESH is a folder")
def _(d: Path) -> Built:
    path = d / "mesh.npz"
    path.mkdir()
    return mesh_case(d, path, InputFileError, None, needle="regular file")


@case("mesh-truncated", "truncated .npz (first half of a valid file)")
def _(d: Path) -> Built:
    path = write_mesh(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return mesh_case(d, path, InputFileError, None, "simulate", "truncated")


@case("mesh-text-npz", "a text file named .npz")
def _(d: Path) -> Built:
    path = d / "mesh.npz"
    path.write_text("points, tets\n0 0 0\n", encoding="utf-8")
    return mesh_case(d, path, InputFileError, None, needle="no zip signature")


@case("mesh-npy-npz", "a single .npy array named .npz")
def _(d: Path) -> Built:
    path = d / "mesh.npz"
    with path.open("wb") as fh:
        np.save(fh, GRID.points)
    return mesh_case(d, path, InputFileError, None, needle=".npy")


@case("mesh-no-points", "an .npz missing `points`")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d, points=None), InputFileError, "points", "simulate")


@case("mesh-no-tets", "an .npz missing `tets`")
def _(d: Path) -> Built:
    return mesh_case(d, write_mesh(d, tets=None), InputFileError, "tets")


@case("mesh-bad-vtu", "a .vtu that is not XML")
def _(d: Path) -> Built:
    path = d / "mesh.vtu"
    path.write_text("this is not a VTK file\n", encoding="utf-8")
    return mesh_case(d, path, InputFileError, None, needle="cannot read as a mesh")


@case("mesh-surface-only", "a triangle surface (.obj) given as a tet MESH")
def _(d: Path) -> Built:
    path = d / "mesh.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\n"
                    "f 2 3 4\n", encoding="utf-8")
    return mesh_case(d, path, InputFileError, "tetra")


# ---------------------------------------------------------------------------- protocols
def _seq(**kw: Any) -> list[dict[str, Any]]:
    return [{"type": "pgse", "delta": 5000, "Delta": 10000, **kw}]


@case("proto-delta-gt-Delta", "δ > Δ")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=_seq(delta=12000))
    return protocol_case(d, path, ProtocolError, "sequences[0].delta")


@case("proto-delta-zero", "δ = 0")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=_seq(delta=0))
    return protocol_case(d, path, ProtocolError, "sequences[0].delta")


@case("proto-delta-negative", "δ < 0 (double PGSE)")
def _(d: Path) -> Built:
    seqs = [{"type": "double_pgse", "delta": -5, "Delta": 10000, "mixing": 0}]
    return protocol_case(d, write_protocol(d, sequences=seqs), ProtocolError,
                         "sequences[0].delta")


@case("proto-Delta-zero", "Δ = 0")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=_seq(Delta=0))
    return protocol_case(d, path, ProtocolError, "sequences[0].Delta")


@case("proto-b-negative", "a negative b-value")
def _(d: Path) -> Built:
    return protocol_case(d, write_protocol(d, bvalues=[0, -1000]), ProtocolError, "bvalues")


@case("proto-b-nan", "a NaN b-value (`.nan`)")
def _(d: Path) -> Built:
    path = write_protocol(d, text=yaml.safe_dump(PROTOCOL).replace("- 3000", "- .nan"))
    return protocol_case(d, path, ProtocolError, "bvalues[2]")


@case("proto-b-text", "a non-numeric b-value")
def _(d: Path) -> Built:
    path = write_protocol(d, bvalues=[0, "high"])
    return protocol_case(d, path, ProtocolError, "bvalues[1]")


@case("proto-dir-zero", "a zero-length direction")
def _(d: Path) -> Built:
    path = write_protocol(d, directions=[[1, 0, 0], [0, 0, 0]])
    return protocol_case(d, path, ProtocolError, "directions")


@case("proto-dir-non-unit", "a non-unit direction")
def _(d: Path) -> Built:
    path = write_protocol(d, directions=[[1, 1, 0]])
    return protocol_case(d, path, ProtocolError, "directions")


@case("proto-dir-shape", "a direction with 2 components")
def _(d: Path) -> Built:
    path = write_protocol(d, directions=[[1, 0]])
    return protocol_case(d, path, ProtocolError, "directions")


@case("proto-fibonacci-zero", "`directions: {fibonacci: 0}`")
def _(d: Path) -> Built:
    path = write_protocol(d, directions={"fibonacci": 0})
    return protocol_case(d, path, ProtocolError, "directions.fibonacci")


@case("proto-fsl-mismatch", "bvals and bvecs files of different lengths")
def _(d: Path) -> Built:
    (d / "dwi.bval").write_text("0 1000 1000 1000\n", encoding="utf-8")
    (d / "dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n", encoding="utf-8")
    path = write_protocol(d, bvalues=None, directions=None, bvals="dwi.bval",
                          bvecs="dwi.bvec")
    return protocol_case(d, path, ProtocolError, "bvecs", file=d / "dwi.bvec")


@case("proto-fsl-text", "non-numeric bvals file")
def _(d: Path) -> Built:
    (d / "dwi.bval").write_text("0 1000 lots\n", encoding="utf-8")
    path = write_protocol(d, bvalues=None, bvals="dwi.bval")
    return protocol_case(d, path, InputFileError, None, file=d / "dwi.bval",
                         needle="line 1")


@case("proto-fsl-negative", "a negative b-value in the bvals file")
def _(d: Path) -> Built:
    (d / "dwi.bval").write_text("0\n-1000\n", encoding="utf-8")
    path = write_protocol(d, bvalues=None, bvals="dwi.bval")
    return protocol_case(d, path, ProtocolError, "bvals", file=d / "dwi.bval")


@case("proto-fsl-missing", "the bvecs file named in the protocol does not exist")
def _(d: Path) -> Built:
    path = write_protocol(d, directions=None, bvecs="missing.bvec")
    return protocol_case(d, path, InputFileError, None, file=d / "missing.bvec",
                         needle="not found")


@case("proto-unknown-key", "unknown key (a typo: did you mean)")
def _(d: Path) -> Built:
    path = write_protocol(d, length_scale=None, lenght_scale=1.0)
    return protocol_case(d, path, ConfigError, "lenght_scale",
                         needle="did you mean 'length_scale'")


@case("proto-unknown-seq-key", "unknown key in a sequence (a typo: did you mean)")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=[{"type": "pgse", "delta": 5000, "Delat": 10000}])
    return protocol_case(d, path, ConfigError, "sequences[0].Delat",
                         needle="did you mean 'Delta'")


@case("proto-missing-key", "missing required key (`diffusivity`)")
def _(d: Path) -> Built:
    return protocol_case(d, write_protocol(d, diffusivity=None), ProtocolError, "diffusivity")


@case("proto-missing-seq-key", "missing required key in a sequence (`Delta`)")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=[{"type": "pgse", "delta": 5000}])
    return protocol_case(d, path, ProtocolError, "sequences[0].Delta")


@case("proto-both-b", "both `bvalues` and `bvals` given")
def _(d: Path) -> Built:
    (d / "dwi.bval").write_text("0 1000\n", encoding="utf-8")
    return protocol_case(d, write_protocol(d, bvals="dwi.bval"), ConfigError, "bvals")


@case("proto-diffusivity-text", "a non-numeric diffusivity")
def _(d: Path) -> Built:
    path = write_protocol(d, diffusivity="fast")
    return protocol_case(d, path, ProtocolError, "diffusivity")


@case("proto-diffusivity-zero", "diffusivity = 0")
def _(d: Path) -> Built:
    return protocol_case(d, write_protocol(d, diffusivity=0), ProtocolError, "diffusivity")


@case("proto-unknown-type", "unknown sequence type (a typo: did you mean)")
def _(d: Path) -> Built:
    path = write_protocol(d, sequences=[{"type": "pgsee", "delta": 5000, "Delta": 10000}])
    return protocol_case(d, path, ProtocolError, "sequences[0].type")


@case("proto-not-mapping", "protocol YAML that is a list, not a mapping")
def _(d: Path) -> Built:
    path = write_protocol(d, text="- diffusivity: 2.0e-3\n- length_scale: 1.0\n")
    return protocol_case(d, path, InputFileError, None, needle="mapping")


@case("proto-invalid-yaml", "invalid YAML")
def _(d: Path) -> Built:
    path = write_protocol(d, text="diffusivity: [2.0e-3\nlength_scale: 1.0\n")
    return protocol_case(d, path, InputFileError, None, needle="YAML")


@case("proto-empty", "an empty protocol file")
def _(d: Path) -> Built:
    return protocol_case(d, write_protocol(d, text=""), InputFileError, None, needle="empty")


@case("proto-binary", "a protocol file that is not text (binary bytes)")
def _(d: Path) -> Built:
    path = d / "protocol.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    return protocol_case(d, path, InputFileError, None, needle="text")


@case("proto-missing", "PROTOCOL file does not exist")
def _(d: Path) -> Built:
    return protocol_case(d, d / "protocol.yaml", InputFileError, None, needle="not found")


# ---------------------------------------------------------------------------- options
@case("case-unknown", "unknown benchmark case name")
def _(d: Path) -> Built:
    from spinverse.mesh.benchmark import resolve_case

    return Built(["simulate", "--case", "sphere42", "-o", str(d / "out.npz")],
                 lambda: resolve_case("sphere42"), "resolve_case", InputFileError, BENCH, "case")


@case("case-ambiguous", "ambiguous benchmark case prefix")
def _(d: Path) -> Built:
    from spinverse.mesh.benchmark import resolve_case

    return Built(["simulate", "--case", "01", "-o", str(d / "out.npz")],
                 lambda: resolve_case("01"), "resolve_case", InputFileError, BENCH, "case")


@case("case-and-mesh", "conflicting options: `--case` with a MESH")
def _(d: Path) -> Built:
    argv = ["simulate", str(write_mesh(d)), "--case", "018", "-o", str(d / "out.npz")]
    return Built(argv, None, None, None, None, None, "--case")


@case("no-mesh", "neither a MESH nor `--case`")
def _(d: Path) -> Built:
    argv = ["simulate", "-p", str(write_protocol(d)), "-o", str(d / "out.npz")]
    return Built(argv, None, None, None, None, None, "MESH")


# ---------------------------------------------------------------------------- reconstruct
@case("target-text-npz", "`--target`: a text file named .npz")
def _(d: Path) -> Built:
    path = d / "signals.npz"
    path.write_text("signal\n1 2 3\n", encoding="utf-8")
    return target_case(d, path, InputFileError, None, needle="no zip signature")


@case("target-missing", "`--target` does not exist")
def _(d: Path) -> Built:
    return target_case(d, d / "signals.npz", InputFileError, None, needle="no such file")


@case("target-npy", "`--target`: a single .npy array named .npz")
def _(d: Path) -> Built:
    path = d / "signals.npz"
    with path.open("wb") as fh:
        np.save(fh, np.ones((1, 3, 2), complex))
    return target_case(d, path, InputFileError, None, needle="no zip signature")


@case("target-shape", "SIGNALS.npz whose signal shape mismatches its protocol")
def _(d: Path) -> Built:
    path = write_signals(d, signal=np.ones((1, 3, 5), complex))
    return target_case(d, path, InputFileError, "signal")


@case("target-no-signal", "SIGNALS.npz without `signal`")
def _(d: Path) -> Built:
    return target_case(d, rewrite(write_signals(d), signal=None), InputFileError, "signal")


@case("target-nan", "SIGNALS.npz with a NaN signal value")
def _(d: Path) -> Built:
    sig = np.ones((1, 3, 2), complex)
    sig[0, 1, 1] = np.nan
    return target_case(d, write_signals(d, signal=sig), InputFileError, "signal")


@case("target-text-signal", "SIGNALS.npz whose signal holds strings")
def _(d: Path) -> Built:
    return target_case(d, rewrite(write_signals(d), signal=np.full((1, 3, 2), "one")),
                       InputFileError, "signal")


@case("target-bad-protocol", "SIGNALS.npz whose stored directions are not unit vectors")
def _(d: Path) -> Built:
    path = rewrite(write_signals(d), directions=2 * np.array(PROTOCOL["directions"], float))
    return target_case(d, path, ProtocolError, "directions")


@case("target-outer-boundary", "SIGNALS.npz with an unknown `outer_boundary`")
def _(d: Path) -> Built:
    path = rewrite(write_signals(d), outer_boundary=np.array("absorbing"))
    return target_case(d, path, InputFileError, "outer_boundary")


@case("grid-nan", "`--grid` with a NaN coordinate")
def _(d: Path) -> Built:
    pts = GRID.points.copy()
    pts[0, 2] = np.nan
    path = write_mesh(d, "grid.npz", points=pts)
    argv = ["reconstruct", "--target", str(write_signals(d)), "--grid", str(path),
            "--out", str(d / "run"), "--quiet"]
    return Built(argv, lambda: load_mesh(path), "load_mesh", MeshError, path, "points")


@case("grid-missing", "`--grid` does not exist")
def _(d: Path) -> Built:
    path = d / "grid.npz"
    argv = ["reconstruct", "--target", str(write_signals(d)), "--grid", str(path),
            "--out", str(d / "run"), "--quiet"]
    return Built(argv, lambda: load_mesh(path), "load_mesh", InputFileError, path, None,
                 "not found")


@case("recon-case-and-target", "conflicting options: `reconstruct --case` with `--target`")
def _(d: Path) -> Built:
    argv = ["reconstruct", "--case", "018", "--target", str(write_signals(d)),
            "--out", str(d / "run"), "--quiet"]
    return Built(argv, None, None, None, None, None, "--case")


@case("config-unknown-key", "RECON.yaml: unknown key (a typo: did you mean)")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "treshold: 1.0e-3\n"), ConfigError, "treshold",
                       "did you mean 'threshold'")


@case("config-unknown-nested", "RECON.yaml: unknown nested key (did you mean)")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "optimizer: {lr: 0.5, clipnorm: 1.0}\n"),
                       ConfigError, "optimizer.clipnorm", "did you mean 'clip_norm'")


@case("config-missing-key", "RECON.yaml: a stage missing `iterations`")
def _(d: Path) -> Built:
    text = yaml.safe_dump({"stages": [{"name": "s", "sequences": [0]}]})
    return config_case(d, write_config(d, text), ConfigError, "stages.0.iterations")


@case("config-bad-value", "RECON.yaml: negative threshold")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "threshold: -1\n"), ConfigError, "threshold")


@case("config-unknown-prior", "RECON.yaml: unknown prior name")
def _(d: Path) -> Built:
    text = yaml.safe_dump({"stages": [{**RECON_STAGE, "priors": {"contiuity": 1.0}}]})
    return config_case(d, write_config(d, text), ConfigError, "stages.0",
                       "did you mean 'continuity'")


@case("config-not-mapping", "RECON.yaml that is a list, not a mapping")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "- stages\n- threshold\n"), ConfigError, None, "mapping")


@case("config-empty-list", "RECON.yaml holding an empty list `[]`")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "[]\n"), ConfigError, None, "mapping")


@case("config-invalid-yaml", "RECON.yaml: invalid YAML")
def _(d: Path) -> Built:
    return config_case(d, write_config(d, "stages: {name: [s\n"), InputFileError, None, "YAML")


@case("config-binary", "RECON.yaml that is not text (binary bytes)")
def _(d: Path) -> Built:
    path = d / "recon.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 stages")
    return config_case(d, path, InputFileError, None, "text")


@case("config-missing", "RECON.yaml does not exist")
def _(d: Path) -> Built:
    return config_case(d, d / "recon.yaml", InputFileError, None, "no such file")


# ---------------------------------------------------------------------------- running
@dataclass
class Outcome:
    case: Case
    folder: Path
    built: Built
    exit_code: int
    output: str
    exception: BaseException | None
    api_exception: BaseException | None = None

    def normalise(self, text: str) -> str:
        """``text`` with this case's folder shown as ``<tmp>``."""
        return text.replace(str(self.folder), "<tmp>")

    @property
    def command(self) -> str:
        return self.normalise("spinverse " + " ".join(self.built.argv))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run every case once through the CLI and the API."""
    out: dict[str, Outcome] = {}
    for c in CASES:
        d = tmp_path_factory.mktemp(c.key, numbered=True)
        built = c.build(d)
        res = runner.invoke(app, built.argv)
        o = Outcome(c, d, built, res.exit_code, res.output, res.exception)
        if built.api is not None:
            try:
                built.api()
            except Exception as exc:  # noqa: BLE001 - checked in test_api_raises
                o.api_exception = exc
        out[c.key] = o
    return out


KEYS = [c.key for c in CASES]


def test_enough_distinct_cases() -> None:
    assert len(KEYS) == len(set(KEYS)) >= 35
    assert len({c.description for c in CASES}) == len(CASES)


@pytest.mark.parametrize("key", KEYS)
def test_cli_one_line_exit_2(outcomes: dict[str, Outcome], key: str) -> None:
    o = outcomes[key]
    assert o.exit_code == 2, (o.output, o.exception)
    assert isinstance(o.exception, SystemExit | None), repr(o.exception)
    assert "Traceback" not in o.output
    lines = o.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), o.output
    where = [str(o.built.file)] if o.built.file is not None else []
    if o.built.field is not None:
        where.append(o.built.field)
    if where:  # "error: FILE: FIELD: problem"
        assert lines[0].startswith("error: " + ": ".join(where) + ": "), lines[0]
    if o.built.needle is not None:
        assert o.built.needle in lines[0], lines[0]


@pytest.mark.parametrize("key", KEYS)
def test_api_raises_typed_error(outcomes: dict[str, Outcome], key: str) -> None:
    o = outcomes[key]
    if o.built.api is None:
        pytest.skip("command-line only input")
    exc = o.api_exception
    assert exc is not None, "the API accepted the bad input"
    assert o.built.error is not None
    assert isinstance(exc, o.built.error), repr(exc)
    assert "\n" not in str(exc)
    assert exc.field == o.built.field, repr(exc)  # type: ignore[attr-defined]
    if o.built.file is not None and o.built.api_name != "simulate_signal":
        assert exc.source == str(o.built.file), repr(exc)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- the docs table
def _cell(text: str) -> str:
    """A markdown table cell showing ``text`` literally (as code)."""
    text = text.replace("|", "\\|")
    ticks = "``" if "`" in text else "`"
    return f"{ticks} {text} {ticks}" if ticks == "``" else f"`{text}`"


def render_table(outcomes: dict[str, Outcome]) -> str:
    """The markdown page of every case: #, bad input, entry point, error message."""
    lines = [
        "# Bad inputs and their error messages",
        "",
        "Generated by `tests/test_bad_inputs.py`; do not edit by hand. Regenerate with",
        "`SPINVERSE_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py` (the test fails",
        "when this page differs from what it would write).",
        "",
        "Every row is one bad input. On the command line each gives exit code 2 and exactly",
        "the one line shown (on stderr, no traceback), naming the file and the field; where",
        "a library entry point exists it raises the typed exception shown, a subclass of",
        "`spinverse.errors.SpinverseError` whose `source` and `field` are the file and the",
        "field of the message. `<tmp>` stands for the folder holding the input files.",
        "",
        "| # | bad input | entry point | error message |",
        "|---|---|---|---|",
    ]
    for i, key in enumerate(KEYS, start=1):
        o = outcomes[key]
        entry = _cell(o.command)
        if o.built.api_name is not None and o.built.error is not None:
            entry += f"<br>`{o.built.api_name}` → `{o.built.error.__name__}`"
        message = o.normalise(o.output.strip())
        desc = o.case.description.replace("|", "\\|")
        lines.append(f"| {i} | {desc} | {entry} | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_current(outcomes: dict[str, Outcome]) -> None:
    text = render_table(outcomes)
    assert not re.search(r"/tmp|pytest-of", text), "an unnormalised temporary path"
    if os.environ.get("SPINVERSE_WRITE_DOCS") == "1":
        DOCS.write_text(text, encoding="utf-8")
    assert DOCS.is_file(), f"{DOCS} is missing: run with SPINVERSE_WRITE_DOCS=1"
    assert DOCS.read_text(encoding="utf-8") == text, (
        f"{DOCS} is stale: regenerate it with SPINVERSE_WRITE_DOCS=1"
    )
