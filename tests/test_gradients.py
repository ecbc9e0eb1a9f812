"""Backpropagation through ``sequential`` and ``solve`` (discretise-then-optimise), for every strategy."""

from __future__ import annotations

import pytest
import torch
import torchdiffeq

import pitsolve
from pitsolve.jacobians import REGISTRY

F64 = torch.float64


def problem():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, dtype=F64, generator=g).requires_grad_(True)
    y0 = torch.randn(3, dtype=F64, generator=g).requires_grad_(True)

    def f(t, y):
        return torch.tanh(y @ W.T) - 0.1 * y

    return f, W, y0


T = torch.linspace(0, 2, 11, dtype=F64)


def torchdiffeq_gradient():
    f, W, y0 = problem()
    ys = torchdiffeq.odeint(f, y0, torch.linspace(0, 2, 21, dtype=F64), method="rk4")[::2]  # the same fine grid
    return torch.autograd.grad(ys.pow(2).sum(), (W, y0))


def test_backprop_through_sequential_equals_torchdiffeq():
    f, W, y0 = problem()
    ys = pitsolve.sequential(pitsolve.ODESystem(f, y0, T, method="rk4", substeps=2)).ys
    for ours, theirs in zip(torch.autograd.grad(ys.pow(2).sum(), (W, y0)), torchdiffeq_gradient()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", sorted(REGISTRY))
def test_backprop_through_solve_equals_the_sequential_gradient(strategy):
    f, W, y0 = problem()
    ys = pitsolve.solve(pitsolve.ODESystem(f, y0, T, method="rk4", substeps=2), strategy, tol=1e-12).ys
    for ours, theirs in zip(torch.autograd.grad(ys.pow(2).sum(), (W, y0)), torchdiffeq_gradient()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_backprop_through_an_adaptive_solve():
    f, W, y0 = problem()
    system = pitsolve.ODESystem(f, y0, T, method="dopri5", rtol=1e-8, atol=1e-10)
    seq = torch.autograd.grad(pitsolve.sequential(system).ys.pow(2).sum(), (W, y0))
    par = torch.autograd.grad(pitsolve.odeint(f, y0, T, rtol=1e-8, atol=1e-10, tol=1e-12).pow(2).sum(), (W, y0))
    for a, b in zip(par, seq):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
