"""Measurement noise for synthetic targets, at a stated SNR relative to |S(b=0)|."""

from __future__ import annotations

import numpy as np

from spinverse.errors import ConfigError

NOISE_KINDS = ("rician", "gaussian")


def add_noise(
    signal: np.ndarray, *, snr: float, kind: str = "rician", seed: int = 0,
    b0_index: int = 0,
) -> np.ndarray:
    """Noisy copy of ``signal`` (n_seq, n_b, n_dir), µm³.

    σ = |S(b=0)| / SNR per sequence and direction. ``"rician"``: the magnitude of the
    signal plus complex Gaussian noise (real and imaginary parts of std σ), returned as a
    real, non-negative array; ``"gaussian"``: |S| plus real Gaussian noise of std σ.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise {kind!r}; choose one of {NOISE_KINDS}", field="noise")
    if not np.isfinite(snr) or snr <= 0:
        raise ConfigError(f"SNR must be positive and finite, got {snr}", field="snr")
    rng = np.random.default_rng(seed)
    sigma = np.abs(signal[:, b0_index : b0_index + 1, :]) / snr
    mag = np.abs(signal)
    if kind == "rician":
        noisy = np.abs(mag + sigma * (rng.standard_normal(mag.shape)
                                      + 1j * rng.standard_normal(mag.shape)))
    else:
        noisy = mag + sigma * rng.standard_normal(mag.shape)
    return noisy.astype(np.complex128)
