"""Typed exceptions raised by spinverse.

Every error raised on bad input derives from :class:`SpinverseError` and carries the
file (``source``) and field it concerns, so the CLI can answer with one line.
"""

from __future__ import annotations


class SpinverseError(Exception):
    """Base class of every error spinverse raises on purpose."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ": ".join(str(p) for p in (self.source, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class InputFileError(SpinverseError, ValueError):
    """A file is missing, truncated or not of the expected kind."""


class MeshError(SpinverseError, ValueError):
    """A mesh is invalid (degenerate, overlapping or duplicate tets, NaN coordinates...)."""


class ProtocolError(SpinverseError, ValueError):
    """An acquisition protocol is invalid (delta > Delta, negative b, zero direction...)."""


class ConfigError(SpinverseError, ValueError):
    """A configuration file has unknown keys or invalid values."""


class PermeabilityError(SpinverseError, ValueError):
    """A per-face permeability field is invalid (negative, NaN, wrong length)."""


class SolverError(SpinverseError, RuntimeError):
    """A numerical solver failed (no convergence, non-finite result)."""
