"""What a reconstruction fits: a target signal with its protocol and boundary mode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinverse.acquisition.protocol import Protocol
from spinverse.errors import ConfigError

__all__ = ["Target"]


@dataclass(frozen=True)
class Target:
    """What is fitted: ``signal`` (n_seq, n_b, n_dir) complex µm³ for ``protocol``, with
    the outer-boundary mode of the model used to fit it."""

    signal: np.ndarray
    protocol: Protocol
    outer_boundary: str = "reflecting"

    @property
    def s0(self) -> np.ndarray:
        """|S(b=0)| (n_seq, n_dir), µm³: the normaliser of the data term."""
        zero = np.flatnonzero(self.protocol.bvalues == 0)
        if len(zero) == 0:
            raise ConfigError("the target protocol needs a b = 0 row for normalisation",
                              field="bvalues")
        return np.abs(self.signal[:, zero[0], :])
