"""spinverse: per-face-permeability Bloch-Torrey simulation and membrane reconstruction.

Units: µm, µs, µm²/µs, κ in µm/µs, b in s/mm² (= µs/µm²).

Top-level re-exports are lazy (``import spinverse`` does not import torch):
``simulate`` (differentiable forward model, :mod:`spinverse.autodiff.functions`),
``load_mesh`` (:mod:`spinverse.mesh.io`) and ``load_protocol``
(:mod:`spinverse.acquisition.protocol`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "simulate": ("spinverse.autodiff.functions", "simulate"),
    "load_mesh": ("spinverse.mesh.io", "load_mesh"),
    "load_protocol": ("spinverse.acquisition.protocol", "load_protocol"),
}

__all__ = ["__version__", "load_mesh", "load_protocol", "simulate"]

if TYPE_CHECKING:  # pragma: no cover
    from spinverse.acquisition.protocol import load_protocol
    from spinverse.autodiff.functions import simulate
    from spinverse.mesh.io import load_mesh


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'spinverse' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
