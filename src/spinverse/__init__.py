"""spinverse: per-face-permeability Bloch-Torrey simulation and membrane reconstruction.

Units: µm, µs, µm²/µs, κ in µm/µs, b in s/mm² (= µs/µm²).
"""

from __future__ import annotations

__version__ = "0.1.0"
