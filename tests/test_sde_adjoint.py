"""``pitsolve.sdeint_adjoint`` / ``sdeint(..., adjoint=True)``: the parallel discrete adjoint of an SDE.

The Brownian increments are fixed before the solve, so the adjoint of the discretised SDE is the exact
transpose of its steps (discretise-then-optimise): on the same grid and ``bm`` its gradients equal
backprop through :func:`pitsolve.sequential` and through ``torchsde.sdeint``.  Both solves run at
``tol=1e-12``; the gradients (entries of order 1–10) must agree to 1e-8 in float64 (measured: ~4e-12).
torchsde's ``sdeint_adjoint`` integrates the continuous adjoint SDE instead and agrees only to its
discretisation error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchsde
from torch import nn

import pitsolve

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.suites.adjoint import SavedBytes  # noqa: E402

F64 = torch.float64
BATCH, D = 2, 3
TS = torch.linspace(0.0, 1.0, 17, dtype=F64)
DT = 1.0 / 32  # two steps per interval, dyadic: torchsde's accumulated times are pitsolve's
EXACT = 1e-8


class Field(nn.Module):
    """``dY = (tanh(W Y) − 0.2 Y) dt + s ∘ cos(Y) dW``, diagonal noise, parameters W and s."""

    noise_type = "diagonal"

    def __init__(self, sde_type: str = "ito"):
        super().__init__()
        self.sde_type = sde_type
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(0.5 * torch.randn(D, D, dtype=F64, generator=g))
        self.s = nn.Parameter(0.3 + 0.1 * torch.rand(D, dtype=F64, generator=g))

    def f(self, t, y):
        return torch.tanh(y @ self.W.T) - 0.2 * y

    def g(self, t, y):
        return self.s * torch.cos(y)

    def h(self, t, y):
        return -y


def y0() -> torch.Tensor:
    return torch.randn(BATCH, D, dtype=F64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)


def bm(channels: int = D) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, channels), dtype=F64, entropy=3,
                                     levy_area_approximation="space-time")


def loss(ys):
    """A cotangent on every point, the last one more."""
    return ys.pow(2).sum() + 3 * ys[-1].sum()


def grads(value, sde, x0):
    return torch.autograd.grad(value, (x0, *sde.parameters()))


def assert_close(ours, theirs, atol=EXACT, rtol=0.0):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("method, sde_type", [("euler", "ito"), ("milstein", "ito"), ("srk", "ito"),
                                              ("reversible_heun", "stratonovich")])
def test_gradient_equals_backprop_through_sequential_and_torchsde(method, sde_type):
    sde, x0, path = Field(sde_type), y0(), bm()
    stats = pitsolve.AdjointStats()
    ours = grads(loss(pitsolve.sdeint_adjoint(sde, x0, TS, path, method, dt=DT, tol=1e-12, stats=stats)), sde, x0)
    system = pitsolve.SDESystem(sde, x0, TS, method=method, substeps=2, bm=path)
    seq = grads(loss(system.outputs(pitsolve.sequential(system).ys)), sde, x0)
    theirs = grads(loss(torchsde.sdeint(sde, x0, TS, bm=path, method=method, dt=DT)), sde, x0)
    assert_close(ours, seq)
    assert_close(ours, theirs)
    assert stats.backward.converged and stats.backward.jacobian == "dense"  # D·batch = 6 <= DENSE_MAX


@pytest.mark.parametrize("strategy, window", [("identity", None), ("secant", 5), ("dense", 5)])
def test_every_strategy_and_a_window_smaller_than_n(strategy, window):
    sde, x0 = Field(), y0()
    stats = pitsolve.AdjointStats()
    ys = pitsolve.sdeint_adjoint(sde, x0, TS, dt=DT, seed=4, tol=1e-12, adjoint_jacobian=strategy,
                                 adjoint_window=window, stats=stats)
    system = pitsolve.SDESystem(sde, x0, TS, substeps=2, seed=4)
    assert_close(grads(loss(ys), sde, x0), grads(loss(pitsolve.sequential(system).ys), sde, x0))
    assert stats.parameter_calls == (1 if window is None else 4)  # ⌈16 / 5⌉


def test_logqp_extra_and_the_adjoint_flag_of_sdeint():
    """``sdeint(..., adjoint=True)`` is ``sdeint_adjoint``; the log-ratio and extra state are differentiable."""
    sde, x0, path = Field("stratonovich"), y0(), bm(D + 1)
    kwargs = dict(bm=path, method="reversible_heun", dt=DT, logqp=True, extra=True)

    def value(out):
        ys, log_ratio, (f, g, z) = out
        return loss(ys) + log_ratio.sum() + f.sum() + z.pow(2).sum()

    ours = grads(value(pitsolve.sdeint(sde, x0, TS, adjoint=True, tol=1e-12, **kwargs)), sde, x0)
    theirs = grads(value(torchsde.sdeint(sde, x0, TS, **kwargs)), sde, x0)
    assert_close(ours, theirs, rtol=1e-10)  # 1/g in the log-ratio makes entries of 1e4: measured 8e-13 relative


def test_forward_equals_sdeint_and_no_grad_inputs_give_no_graph():
    sde, x0 = Field(), y0()
    ys = pitsolve.sdeint_adjoint(sde, x0, TS, dt=DT, tol=1e-12)
    torch.testing.assert_close(ys, pitsolve.sdeint(sde, x0, TS, dt=DT, tol=1e-12), rtol=0, atol=1e-12)
    frozen = pitsolve.sdeint_adjoint(sde, x0.detach(), TS, dt=DT, adjoint_params=())
    assert not frozen.requires_grad


def test_graph_memory_is_bounded_by_the_window():
    """At a fixed window the saved bytes do not grow with N (the trajectory aside); backprop's do."""
    sde = Field()

    def peak(N, adjoint):
        x0, ts = y0(), torch.linspace(0.0, 1.0, N + 1, dtype=F64)
        meter = SavedBytes()
        with meter.hooks():
            if adjoint:
                ys = pitsolve.sdeint_adjoint(sde, x0, ts, window=4, tol=1e-10, adjoint_jacobian="identity")
            else:
                ys = pitsolve.sequential(pitsolve.SDESystem(sde, x0, ts)).ys
            grads(loss(ys), sde, x0)
        return meter.peak - (N + 1) * BATCH * D * 8  # less the trajectory kept for the backward

    assert peak(64, True) == peak(16, True)
    assert peak(64, False) > 3 * peak(16, False)
    assert peak(64, True) < peak(64, False) / 4


def test_differs_from_torchsdes_continuous_adjoint_by_its_discretisation_error():
    """torchsde's sdeint_adjoint solves the adjoint SDE backwards: close to ours, not equal, on additive noise."""
    sde, x0, path = Field(), y0(), bm()
    sde.g = lambda t, y: sde.s.expand_as(y)  # additive noise: torchsde's Euler adjoint is consistent
    ours = grads(loss(pitsolve.sdeint_adjoint(sde, x0, TS, path, dt=DT / 4, tol=1e-12)), sde, x0)
    theirs = grads(loss(torchsde.sdeint_adjoint(sde, x0, TS, path, dt=DT / 4, method="euler")), sde, x0)
    gap = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    assert 1e-8 < gap < 0.1


@pytest.mark.parametrize("kwargs, kind, match", [
    (dict(adjoint_method="euler"), pitsolve.InputValueError,
     r"adjoint_method='euler': these set torchsde's solver of the continuous adjoint SDE.*adjoint_jacobian"),
    (dict(adjoint_rtol=1e-5, adjoint_adaptive=True), pitsolve.InputValueError,
     r"adjoint_adaptive=True, adjoint_rtol=1e-05: these set"),
    (dict(adjoint_params=(1.0,)), pitsolve.InputTypeError,
     r"adjoint_params\[0\] is a float, not a torch\.Tensor; pass only the tensors sde uses"),
    (dict(ts=TS.clone().requires_grad_(True)), pitsolve.InputValueError, r"ts requires grad.*ts\.detach\(\)"),
    (dict(sde="plain"), pitsolve.InputTypeError, r"sde is a Plain, not an nn\.Module.*adjoint_params"),
    (dict(adjoint_window=99), pitsolve.InputValueError, r"adjoint_window=99 is larger than N=16 intervals"),
])
def test_bad_input_is_named(kwargs, kind, match):
    class Plain:
        noise_type, sde_type = "diagonal", "ito"
        f, g = Field.f, Field.g
        W, s = Field().W, Field().s

    sde = Plain() if kwargs.pop("sde", None) == "plain" else Field()
    ts = kwargs.pop("ts", TS)
    with pytest.raises(kind, match=match):
        pitsolve.sdeint_adjoint(sde, y0(), ts, dt=DT, **kwargs)


def test_sdeint_adjoint_flag_must_be_a_bool():
    with pytest.raises(pitsolve.InputTypeError, match=r"adjoint='yes' must be True or False"):
        pitsolve.sdeint(Field(), y0(), TS, dt=DT, adjoint="yes")
