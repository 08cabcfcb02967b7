"""The README's examples are true: every CLI example names a real subcommand and real
options, its YAML blocks validate, the cheap commands and the Python API block run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from spinverse.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _text(), flags=re.S)


def _yaml_after(marker: str) -> str:
    """The first ```yaml block after the line containing ``marker``."""
    text = _text()
    start = text.index(marker)
    return re.search(r"```yaml\n(.*?)```", text[start:], flags=re.S).group(1)  # type: ignore[union-attr]


def _cli_examples() -> list[str]:
    """Every ``spinverse ...`` command of the README's bash blocks, continuation lines
    joined and comments dropped."""
    out = []
    for block in _blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" # ")[0].strip()
            m = re.search(r"\bspinverse\s+\S.*", line)
            if m:
                out.append(m.group(0))
    return out


def test_readme_has_cli_examples():
    subcommands = {cmd.split()[1] for cmd in _cli_examples()}
    assert {"simulate", "reconstruct", "permeability", "demo", "sweep"} <= subcommands


@pytest.mark.parametrize("example", _cli_examples())
def test_cli_example_uses_real_subcommand_and_options(example: str):
    group = typer.main.get_command(app)
    words = example.split()
    name = words[1]
    assert name in group.commands, f"README example uses unknown subcommand {name!r}"  # type: ignore[attr-defined]
    command = group.commands[name]  # type: ignore[attr-defined]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", example):
        assert flag in known, f"{flag} is not an option of 'spinverse {name}'"


def test_protocol_yaml_example_loads_and_simulates():
    from spinverse.acquisition.protocol import protocol_from_dict
    from spinverse.forward import simulate_signal
    from spinverse.mesh.generators import box_grid

    prot = protocol_from_dict(yaml.safe_load(_yaml_after("**PROTOCOL.yaml**")))
    assert [s.kind for s in prot.sequences] == ["pgse", "double_pgse", "cos_ogse", "piecewise"]
    assert prot.n_directions == 30 and prot.n_bvalues == 6
    grid = box_grid(np.linspace(0, 6, 3), np.linspace(0, 6, 3), [0, 6])
    s = simulate_signal(grid, np.full(grid.n_faces, np.inf), prot).signal
    e = np.abs(s) / np.abs(s[:, :1])
    assert np.all(np.isfinite(e)) and np.all(e[:, 1:] < 1.0)


def test_recon_yaml_examples_validate():
    from spinverse.recon.config import ReconConfig, method_config_from_dict
    from spinverse.recon.search.config import SearchConfig

    search = method_config_from_dict(yaml.safe_load(_yaml_after("**RECON.yaml** of the search")))
    assert isinstance(search, SearchConfig) and search == SearchConfig()  # it shows defaults
    gradient = method_config_from_dict(
        yaml.safe_load(_yaml_after("**RECON.yaml** of the gradient method")))
    assert isinstance(gradient, ReconConfig) and len(gradient.stages) == 2


def test_sweep_yaml_example_validates(tmp_path):
    from spinverse.sweep.spec import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(_yaml_after("**SWEEP.yaml**"))
    sweep = load_sweep(path)
    assert len(sweep.arms) == 6


def test_cheap_cli_examples_run(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["cases"])
    assert res.exit_code == 0 and "018" in res.output
    out = tmp_path / "signals.npz"
    res = runner.invoke(app, ["simulate", "--case", "018", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["signal"].shape == (3, 6, 30)


def test_python_api_example_runs(tmp_path, monkeypatch):
    """The first Python block, with a benchmark case's mesh and the README's protocol
    (its piecewise-constant sequences: the cosine OGSE one alone takes a minute)."""
    from spinverse.mesh.benchmark import benchmark_grid, case_kappa, resolve_case
    from spinverse.mesh.io import save_mesh_npz

    monkeypatch.chdir(tmp_path)
    save_mesh_npz("mesh.npz", benchmark_grid(), case_kappa(resolve_case("018")))
    prot = yaml.safe_load(_yaml_after("**PROTOCOL.yaml**"))
    prot["sequences"] = [s for s in prot["sequences"] if s["type"] != "cos_ogse"]
    Path("protocol.yaml").write_text(yaml.safe_dump(prot))
    code = _blocks("python")[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    k = scope["k"]
    assert k.grad is not None and k.grad.shape == (benchmark_grid().n_faces,)
    assert bool(np.isfinite(k.grad.numpy()).all()) and float(k.grad.abs().sum()) > 0
