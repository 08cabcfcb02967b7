"""Per-face κ parameterisation: κ_f = 10^(a + (b − a)·σ(v_f/τ)), κ in µm/µs."""

from __future__ import annotations

import math

import torch


class LogSigmoidKappa:
    """Maps free logits v (F,) to κ ∈ [κ_min, κ_max] (µm/µs) on a log scale.

    ``fixed_mask`` (F,) bool with ``fixed_values`` (F,) or scalar holds chosen faces at
    given κ (no gradient reaches their logits).
    """

    def __init__(self, *, kappa_min: float = 1e-5, kappa_max: float = 0.1,
                 temperature: float = 1.0, fixed_mask: torch.Tensor | None = None,
                 fixed_values: torch.Tensor | float | None = None) -> None:
        if not 0 < kappa_min < kappa_max:
            raise ValueError(f"need 0 < kappa_min < kappa_max, got {kappa_min}, {kappa_max}")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.a = math.log10(kappa_min)
        self.b = math.log10(kappa_max)
        self.temperature = float(temperature)
        self.fixed_mask = fixed_mask
        self.fixed_values = fixed_values

    def log10_kappa(self, v: torch.Tensor) -> torch.Tensor:
        """log10 κ (κ in µm/µs) of logits ``v``."""
        logk = self.a + (self.b - self.a) * torch.sigmoid(v / self.temperature)
        if self.fixed_mask is not None:
            fixed = torch.log10(torch.as_tensor(self.fixed_values, dtype=logk.dtype))
            logk = torch.where(self.fixed_mask, fixed.expand_as(logk), logk)
        return logk

    def kappa(self, v: torch.Tensor) -> torch.Tensor:
        """κ (µm/µs) of logits ``v``."""
        return torch.pow(10.0, self.log10_kappa(v))

    def logits_for_kappa(self, kappa: torch.Tensor) -> torch.Tensor:
        """Inverse map (κ clipped strictly inside the open interval)."""
        k = torch.as_tensor(kappa, dtype=torch.float64)
        x = (torch.log10(k) - self.a) / (self.b - self.a)
        x = x.clamp(1e-12, 1 - 1e-12)
        return self.temperature * torch.log(x / (1 - x))
