"""Per-face κ parameterisation: κ_f = 10^(a + (b − a)·σ(v_f/τ)), κ in µm/µs.

One free logit v_f per face; a = log10 κ_min, b = log10 κ_max (defaults κ ∈ [1e-5, 0.1]
µm/µs, τ = 1), so κ is bounded and uniform in log10 κ for uniform σ. With the defaults the
start value κ = 1e-3 µm/µs (the barrier threshold) is v = 0. Optionally a set of faces is
held at given κ values (a "fixed-face mask"); their logits are ignored and receive exactly
zero gradient. Everything is float64 torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LogSigmoidKappa"]

#: Default bounds (µm/µs), temperature and start value of the published method.
KAPPA_MIN = 1e-5
KAPPA_MAX = 0.1
START_KAPPA = 1e-3


def _as_tensor(x: torch.Tensor | np.ndarray | float, name: str) -> torch.Tensor:
    # Python and NumPy floats go through float64 NumPy (torch would make them float32).
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.is_complex():
        raise ValueError(f"{name} must be real")
    return t.to(torch.float64)


class LogSigmoidKappa:
    """Maps free logits v (F,) to κ ∈ [κ_min, κ_max] (µm/µs) on a log scale.

    Parameters
    ----------
    kappa_min, kappa_max : bounds of κ in µm/µs (0 < κ_min < κ_max).
    temperature : logit temperature τ > 0.
    start_kappa : initial κ (µm/µs) of :meth:`start_logits`, strictly inside the bounds;
        default the log-midpoint 10^((a + b)/2), i.e. v = 0 (1e-3 for the default bounds).
    fixed_mask : optional (F,) bool, faces whose κ is held fixed (no gradient).
    fixed_values : κ (µm/µs, > 0, finite) of the fixed faces: a scalar or an (F,) array
        (only the masked entries are used). May lie outside [κ_min, κ_max].
    """

    def __init__(
        self,
        *,
        kappa_min: float = KAPPA_MIN,
        kappa_max: float = KAPPA_MAX,
        temperature: float = 1.0,
        start_kappa: float | None = None,
        fixed_mask: torch.Tensor | np.ndarray | None = None,
        fixed_values: torch.Tensor | np.ndarray | float | None = None,
    ) -> None:
        for name, val in (("kappa_min", kappa_min), ("kappa_max", kappa_max),
                          ("temperature", temperature)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        if not kappa_min < kappa_max:
            raise ValueError(f"need kappa_min < kappa_max, got {kappa_min}, {kappa_max}")
        if start_kappa is None:
            start_kappa = 10.0 ** (0.5 * (math.log10(kappa_min) + math.log10(kappa_max)))
        if not (math.isfinite(start_kappa) and kappa_min < start_kappa < kappa_max):
            raise ValueError(
                f"need kappa_min < start_kappa < kappa_max, got {kappa_min}, {start_kappa}, "
                f"{kappa_max}")
        self.kappa_min = float(kappa_min)
        self.kappa_max = float(kappa_max)
        self.a = math.log10(kappa_min)
        self.b = math.log10(kappa_max)
        self.temperature = float(temperature)
        self.start_kappa = float(start_kappa)
        self.fixed_mask: torch.Tensor | None = None
        self._fixed_log10: torch.Tensor | None = None
        if fixed_mask is not None:
            mask = torch.as_tensor(fixed_mask)
            if mask.dtype != torch.bool or mask.ndim != 1:
                raise ValueError("fixed_mask must be a 1-D bool array (one entry per face)")
            if fixed_values is None:
                raise ValueError("fixed_values is required with fixed_mask")
            vals = _as_tensor(fixed_values, "fixed_values")
            if vals.ndim > 1 or (vals.ndim == 1 and vals.shape != mask.shape):
                raise ValueError(f"fixed_values must be a scalar or shape {tuple(mask.shape)}, "
                                 f"got {tuple(vals.shape)}")
            used = vals.expand(mask.shape)[mask]
            if not bool(torch.all(torch.isfinite(used) & (used > 0))):
                raise ValueError("fixed_values must be positive and finite on the fixed faces")
            # Unused entries are set to 1 so that log10 stays finite everywhere.
            safe = torch.where(mask, vals.expand(mask.shape), torch.ones((), dtype=vals.dtype))
            self.fixed_mask = mask
            self._fixed_log10 = torch.log10(safe)
        elif fixed_values is not None:
            raise ValueError("fixed_values given without fixed_mask")

    def __repr__(self) -> str:
        n_fixed = 0 if self.fixed_mask is None else int(self.fixed_mask.sum())
        return (f"LogSigmoidKappa(kappa_min={self.kappa_min:g}, kappa_max={self.kappa_max:g}, "
                f"temperature={self.temperature:g}, start_kappa={self.start_kappa:g}, "
                f"fixed_faces={n_fixed})")

    # --------------------------------------------------------------- forward
    def log10_kappa(self, v: torch.Tensor) -> torch.Tensor:
        """log10 κ (κ in µm/µs) of logits ``v`` (F,); differentiable, fixed faces
        replaced by their fixed values (zero gradient to their logits)."""
        logk = self.a + (self.b - self.a) * torch.sigmoid(v / self.temperature)
        if self.fixed_mask is not None:
            if logk.shape[-1:] != self.fixed_mask.shape:
                raise ValueError(f"expected {self.fixed_mask.shape[0]} logits, "
                                 f"got shape {tuple(v.shape)}")
            mask = self.fixed_mask.to(logk.device)
            fixed = self._fixed_log10.to(device=logk.device, dtype=logk.dtype)
            logk = torch.where(mask, fixed, logk)
        return logk

    def kappa(self, v: torch.Tensor) -> torch.Tensor:
        """κ (µm/µs) of logits ``v`` (F,)."""
        return torch.pow(10.0, self.log10_kappa(v))

    __call__ = kappa

    # --------------------------------------------------------------- inverse
    def logits_for_kappa(self, kappa: torch.Tensor | np.ndarray | float,
                         *, eps: float = 1e-12) -> torch.Tensor:
        """Inverse map: float64 logits v with κ(v) = κ. κ is clipped into the open
        interval (the normalised log value to [eps, 1 − eps]), so κ ≤ κ_min, κ ≥ κ_max and
        κ = 0 give finite logits (±τ·27.6 for eps = 1e-12). NaN raises ``ValueError``.
        Fixed faces get the logit of their given κ clipped likewise (it is ignored)."""
        k = _as_tensor(kappa, "kappa")
        if bool(torch.isnan(k).any()):
            raise ValueError("kappa contains NaN")
        with torch.no_grad():
            logk = torch.log10(k.clamp_min(0.0))  # 0 -> -inf, clipped below
            x = ((logk - self.a) / (self.b - self.a)).clamp(eps, 1.0 - eps)
            return self.temperature * (torch.log(x) - torch.log1p(-x))

    def start_logits(self, n_faces: int, *, device: torch.device | str | None = None
                     ) -> torch.Tensor:
        """(n_faces,) float64 logits of the start value κ = ``start_kappa`` everywhere
        (v = 0 for the defaults)."""
        v = self.logits_for_kappa(torch.full((int(n_faces),), self.start_kappa,
                                             dtype=torch.float64))
        return v if device is None else v.to(device)
