"""The logit optimisers: GlobalAdam's step rule and its exact resume."""

import copy

import numpy as np
import pytest
import torch

from spinverse.recon.config import OptimizerConfig
from spinverse.recon.optim import GlobalAdam, make_optimizer


def _step(opt: torch.optim.Optimizer, p: torch.Tensor, g: torch.Tensor) -> None:
    opt.zero_grad()
    p.grad = g.clone()
    opt.step()


def test_first_step_is_proportional_to_the_gradient():
    g = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = GlobalAdam([p], lr=0.1, max_step_ratio=10.0)
    _step(opt, p, g)
    rms = float(torch.sqrt((g**2).mean()))
    np.testing.assert_allclose(p.detach().numpy(), (-0.1 * g / rms).numpy(), rtol=1e-10)


def test_largest_moves_are_capped():
    g = torch.tensor([100.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = GlobalAdam([p], lr=0.2, max_step_ratio=1.5)
    _step(opt, p, g)
    assert float(p.detach()[0]) == pytest.approx(-0.3)
    rms = float(torch.sqrt((g**2).mean()))
    assert float(p.detach()[1]) == pytest.approx(-0.2 / rms)


def test_step_is_invariant_to_the_loss_scale():
    g = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    out = []
    for scale in (1.0, 1e-6):
        p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = GlobalAdam([p], lr=0.1)
        for _ in range(3):
            _step(opt, p, scale * g)
        out.append(p.detach().numpy().copy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5)  # eps = 1e-12 sets the floor


def test_state_dict_round_trip_resumes_exactly():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(6)]
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = GlobalAdam([p], lr=0.05)
    for g in grads[:3]:
        _step(opt, p, g)
    saved_p, saved = p.detach().clone(), copy.deepcopy(opt.state_dict())
    for g in grads[3:]:
        _step(opt, p, g)
    q = saved_p.clone().requires_grad_(True)
    opt2 = GlobalAdam([q], lr=0.05)
    opt2.load_state_dict(saved)
    for g in grads[3:]:
        _step(opt2, q, g)
    assert torch.equal(p.detach(), q.detach())


def test_factory_and_config_names():
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    assert isinstance(make_optimizer("adam", [p], lr=0.1, betas=(0.9, 0.999)), torch.optim.Adam)
    assert isinstance(make_optimizer("global_adam", [p], lr=0.1, betas=(0.9, 0.999)),
                      GlobalAdam)
    with pytest.raises(ValueError, match="unknown optimiser"):
        make_optimizer("sgd", [p], lr=0.1, betas=(0.9, 0.999))
    assert OptimizerConfig().name == "adam"
    with pytest.raises(ValueError):
        OptimizerConfig(name="sgd")
