"""Optimisers for the face logits.

``torch.optim.Adam`` normalises every face's step by that face's own gradient history, so
a weak but consistent gradient on every face (e.g. "retain more magnetisation") moves all
faces at full speed at once. :class:`GlobalAdam` keeps Adam's momentum and bias correction
but divides by one running RMS of the whole gradient vector: faces then move in proportion
to their gradient, the step's overall size still adapts to the loss scale, and a per-face
cap bounds the largest move.
"""

from __future__ import annotations

import math

import torch

__all__ = ["GlobalAdam", "make_optimizer"]


class GlobalAdam(torch.optim.Optimizer):
    """Adam with a scalar second moment: ``step = lr · m̂ / (√ŝ + eps)``, with ``ŝ`` the
    bias-corrected running mean of ``mean(g²)`` over all entries; each entry's step is then
    clipped to ``± max_step_ratio · lr``."""

    def __init__(self, params, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-12, max_step_ratio: float = 3.0) -> None:
        if lr <= 0 or max_step_ratio <= 0:
            raise ValueError("lr and max_step_ratio must be positive")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      max_step_ratio=max_step_ratio))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch API
        loss = None if closure is None else closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros((), dtype=p.dtype)
                st["step"] += 1
                t = float(st["step"])
                g = p.grad
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).add_(g.pow(2).mean(), alpha=1 - b2)
                m_hat = st["exp_avg"] / (1 - b1**t)
                rms = math.sqrt(float(st["exp_avg_sq"]) / (1 - b2**t))
                cap = group["max_step_ratio"] * group["lr"]
                p.add_((group["lr"] * m_hat / (rms + group["eps"])).clamp_(-cap, cap),
                       alpha=-1.0)
        return loss


def make_optimizer(name: str, params, *, lr: float,
                   betas: tuple[float, float]) -> torch.optim.Optimizer:
    """``"adam"`` (per-face normalisation, the published choice) or ``"global_adam"``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "global_adam":
        return GlobalAdam(params, lr=lr, betas=betas)
    raise ValueError(f"unknown optimiser {name!r}")
