"""Loss building blocks for the membrane reconstruction (torch, differentiable).

Signals are complex (n_sequences, n_bvalues, n_directions) tensors in µm³. The published
method normalises the simulated magnitude by the **target's** |S(b = 0)| per sequence and
direction (``s0``), so the b = 0 row carries information too.
"""

from __future__ import annotations

import torch

__all__ = ["b0_magnitude", "normalised_magnitude", "signal_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _s0_for(s: torch.Tensor, s0: torch.Tensor | float) -> torch.Tensor:
    """``s0`` as a tensor broadcastable against ``s`` (n_seq, n_b, n_dir): a (n_seq, n_dir)
    array gets a b axis inserted; anything else must already broadcast."""
    t = torch.as_tensor(s0, dtype=torch.float64, device=s.device)
    if t.ndim == 2 and s.ndim == 3 and t.shape == (s.shape[0], s.shape[2]):
        t = t[:, None, :]
    return t


def b0_magnitude(signal: torch.Tensor, b_index: int = 0) -> torch.Tensor:
    """|S| at the b-value row ``b_index`` (default the first, b = 0): (n_seq, n_dir), µm³.

    Use it on the *target* to get the ``s0`` of :func:`normalised_magnitude`.
    """
    return signal[:, b_index, :].abs()


def normalised_magnitude(s: torch.Tensor, s0: torch.Tensor | float) -> torch.Tensor:
    """|S| / S0 (dimensionless), same shape as ``s`` (n_seq, n_b, n_dir).

    ``s0`` (µm³): per sequence and direction, shape (n_seq, n_dir) (e.g.
    :func:`b0_magnitude` of the target), or anything broadcastable to ``s``.
    """
    return s.abs() / _s0_for(s, s0)


def signal_loss(
    s: torch.Tensor,
    target: torch.Tensor,
    s0: torch.Tensor | float,
    *,
    weights: torch.Tensor | None = None,
    scale: float = 100.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``scale`` × weighted mean over (sequence, b, direction) of (|S|/S0 − |T|/S0)².

    ``s`` simulated and ``target`` (complex or real magnitudes) signals (n_seq, n_b,
    n_dir) in µm³; ``s0`` as in :func:`normalised_magnitude`; ``weights`` broadcastable to
    the signal shape, e.g. (n_seq, 1, 1) per sequence, (1, n_b, 1) per b-value or
    (1, 1, n_dir) per direction (default 1). ``reduction``: ``"mean"`` (Σ w r² / Σ w),
    ``"sum"`` (Σ w r²) or ``"none"`` (the weighted elements).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    ref = _s0_for(s, s0)
    tgt = torch.as_tensor(target, device=s.device)
    r = s.abs() / ref - tgt.abs().to(torch.float64) / ref
    r2 = r * r
    if weights is None:
        w = torch.ones((), dtype=torch.float64, device=s.device)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64, device=s.device)
    wr2 = w * r2
    if reduction == "none":
        return scale * wr2
    if reduction == "sum":
        return scale * wr2.sum()
    wsum = torch.broadcast_to(w, wr2.shape).sum()
    if float(wsum) <= 0.0:
        raise ValueError("weights must have a positive sum")
    return scale * wr2.sum() / wsum
