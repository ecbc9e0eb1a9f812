"""``pitsolve.odeint_adjoint``: the parallel discrete adjoint against backprop through the sequential solve.

The adjoint is the exact transpose of the discrete forward (discretise-then-optimise), so on the same
grid it equals backprop through :func:`pitsolve.sequential` up to the two solves' tolerances and
round-off: both run at ``tol=1e-12`` here, and the gradients (entries of order 1–10) must agree to 1e-8
in float64.  torchdiffeq's ``odeint_adjoint`` integrates the continuous adjoint ODE instead and agrees
only to its discretisation error, O(h⁴) for rk4: 1e-6 on a grid of step 0.025 (measured 5e-9 at
0.0125, 1.5e-6 at 0.05).
"""

from __future__ import annotations


import pytest
import torch
import torchdiffeq

import pitsolve

# benchmarks/ is a folder of the repository, not of the installed package: tests/conftest.py puts the
# repository on sys.path.

from benchmarks.suites.adjoint import SavedBytes

F64 = torch.float64
T = torch.linspace(0, 2, 17, dtype=F64)
EXACT = 1e-8


def problem():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, dtype=F64, generator=g).requires_grad_(True)
    b = (0.1 * torch.randn(3, dtype=F64, generator=g)).requires_grad_(True)
    y0 = torch.randn(3, dtype=F64, generator=g).requires_grad_(True)

    def f(t, y):
        return torch.tanh(y @ W.T + b * t) - 0.1 * y

    return f, (W, b), y0


def loss(ys):
    """Every point counts (a cotangent on each X_n) and the last one more."""
    return ys.pow(2).sum() + ys[-1].sum() * 3


def reference(method="rk4", **options):
    f, params, y0 = problem()
    ys = pitsolve.sequential(pitsolve.ODESystem(f, y0, T, method=method, **options)).ys
    return torch.autograd.grad(loss(ys), (y0, *params))


def adjoint(method="rk4", **kwargs):
    f, params, y0 = problem()
    stats = pitsolve.AdjointStats()
    ys = pitsolve.odeint_adjoint(f, y0, T, method=method, adjoint_params=params, tol=1e-12, stats=stats, **kwargs)
    return torch.autograd.grad(loss(ys), (y0, *params)), stats


def assert_close(ours, theirs, atol=EXACT):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("strategy", ["identity", "zero", "dense", "secant"])
def test_gradient_equals_backprop_through_sequential(strategy, window):
    grads, stats = adjoint(substeps=2, adjoint_jacobian=strategy, adjoint_window=window)
    assert_close(grads, reference(substeps=2))
    assert stats.backward.converged and stats.backward.num_intervals == 16
    assert stats.parameter_calls == (1 if window is None else 4)  # ⌈16 / 5⌉


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_other_fixed_grid_methods(method):
    grads, _ = adjoint(method, substeps=3)
    assert_close(grads, reference(method, substeps=3))


@pytest.mark.parametrize("strategy", ["identity", "dense"])
def test_adaptive_dopri5_recomputes_the_same_steps(strategy):
    grads, stats = adjoint("dopri5", rtol=1e-8, atol=1e-10, adjoint_jacobian=strategy, window=8)
    assert_close(grads, reference("dopri5", rtol=1e-8, atol=1e-10))
    assert stats.forward.converged and stats.backward.converged


def test_dense_scan_is_exact_in_one_sweep():
    """The adjoint is affine: the exact scan solves the window at once; a second sweep certifies it."""
    _, stats = adjoint(adjoint_jacobian="dense")
    assert stats.backward.iterations == 2 and stats.adjoint_calls == 2
    assert stats.backward_waves == 3  # + one call for the parameter gradient (window None: all N)


def test_default_strategy_and_module_parameters():
    """``func`` an ``nn.Module``: its parameters are differentiated; D = 3 <= DENSE_MAX picks the dense scan."""
    field = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    y0 = torch.tensor([0.5, -1.0, 0.3], dtype=F64, requires_grad=True)
    module = lambda t, y: field(y)  # noqa: E731
    ys = pitsolve.sequential(pitsolve.ODESystem(module, y0, T, method="rk4")).ys
    ref = torch.autograd.grad(loss(ys), (y0, *field.parameters()))

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = field

        def forward(self, t, y):
            return self.net(y)

    stats = pitsolve.AdjointStats()
    ys = pitsolve.odeint_adjoint(Field(), y0, T, method="rk4", tol=1e-12, stats=stats)
    assert_close(torch.autograd.grad(loss(ys), (y0, *field.parameters())), ref)
    assert stats.backward.jacobian == "dense"


def test_tuple_state():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(2, 2, dtype=F64, generator=g).requires_grad_(True)
    a = torch.randn(2, dtype=F64, generator=g).requires_grad_(True)
    v = torch.randn(1, dtype=F64, generator=g).requires_grad_(True)

    def f(t, y):
        p, q = y
        return torch.tanh(p @ W) * q, -0.5 * q + p.sum(-1, keepdim=True)

    def tuple_loss(ys):
        return ys[0].pow(2).sum() + ys[1].sum()

    ys = pitsolve.sequential(pitsolve.ODESystem(f, (a, v), T, method="rk4")).ys
    ref = torch.autograd.grad(tuple_loss(ys), (a, v, W))
    ys = pitsolve.odeint_adjoint(f, (a, v), T, method="rk4", tol=1e-12, adjoint_params=[W])
    assert isinstance(ys, tuple) and ys[0].shape == (17, 2) and ys[1].shape == (17, 1)
    assert_close(torch.autograd.grad(tuple_loss(ys), (a, v, W)), ref)


def test_forward_equals_odeint():
    f, params, y0 = problem()
    ys = pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, tol=1e-12)
    torch.testing.assert_close(ys, pitsolve.odeint(f, y0, T, method="rk4", tol=1e-12), rtol=0, atol=1e-12)


def test_agrees_with_torchdiffeq_adjoint_on_a_fine_grid():
    """Optimise-then-discretise vs discretise-then-optimise: equal up to rk4's O(h⁴) error; h = 0.025."""
    f, params, y0 = problem()
    ys = torchdiffeq.odeint_adjoint(f, y0, T, method="rk4", options=dict(step_size=0.025), adjoint_params=params)
    theirs = torch.autograd.grad(loss(ys), (y0, *params))
    ours, _ = adjoint(options=dict(step_size=0.025))
    assert_close(ours, theirs, atol=1e-6)


def test_graph_memory_is_bounded_by_the_window():
    """At a fixed window the saved bytes grow only by the stored trajectory, not by the graph over N."""
    f, params, y0 = problem()

    def peak(N, **kwargs):
        meter = SavedBytes()
        with meter.hooks():
            ys = kwargs.pop("run")(f, y0, torch.linspace(0, 2, N + 1, dtype=F64), **kwargs)
            torch.autograd.grad(loss(ys), (y0, *params))
        return meter.peak - (N + 1) * 3 * 8  # less the trajectory kept for the backward (one per method)

    def ours(*args, **kwargs):
        return pitsolve.odeint_adjoint(*args, method="rk4", adjoint_params=params, window=4, tol=1e-10,
                                       adjoint_jacobian="identity", **kwargs)

    def backprop(f, y0, t):
        return pitsolve.sequential(pitsolve.ODESystem(f, y0, t, method="rk4")).ys

    assert peak(64, run=ours) == peak(16, run=ours)
    assert peak(64, run=backprop) > 3 * peak(16, run=backprop)
    assert peak(64, run=ours) < peak(64, run=backprop) / 4


def test_loss_scale_changes_no_decision():
    """The adjoint's stopping scale is relative to max|G|: a loss times 1e6 takes the same sweeps."""
    f, params, y0 = problem()
    counts = []
    for scale in (1.0, 1e6):
        stats = pitsolve.AdjointStats()
        ys = pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, stats=stats, adjoint_jacobian="identity")
        torch.autograd.grad(scale * loss(ys), params)
        counts.append(stats.backward.iterations)
    assert counts[0] == counts[1]


def test_no_gradient_inputs():
    """y0 without grad and no parameters: a plain forward, no backward."""
    f, _, y0 = problem()
    ys = pitsolve.odeint_adjoint(f, y0.detach(), T, method="rk4", adjoint_params=())
    assert not ys.requires_grad


def test_bad_adjoint_params():
    f, params, y0 = problem()
    with pytest.raises(pitsolve.InputTypeError, match=r"adjoint_params\[0\] is a str"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=["W"])
    with pytest.raises(pitsolve.InputTypeError, match=r"adjoint_params is a Tensor"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params[0])
    with pytest.raises(pitsolve.InputTypeError, match=r"adjoint_params is a dict"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params={"W": params[0]})
    with pytest.raises(pitsolve.InputTypeError, match=r"func is a function, not an nn\.Module"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4")
    with pytest.raises(pitsolve.InputTypeError, match=r"stats is a dict; pass a pitsolve\.AdjointStats\(\)"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, stats={})
    with pytest.raises(pitsolve.InputValueError, match=r"adjoint_window=0 must be"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, adjoint_window=0)
    with pytest.raises(pitsolve.InputValueError, match=r"unknown jacobian 'nope'"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, adjoint_jacobian="nope")
    with pytest.raises(pitsolve.InputValueError, match=r"adjoint_tol=-1.0 must be a finite number >= 0"):
        pitsolve.odeint_adjoint(f, y0, T, method="rk4", adjoint_params=params, adjoint_tol=-1.0)
