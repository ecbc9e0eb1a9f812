"""torchdiffeq's Adams methods (explicit_adams, implicit_adams, fixed_adams) with their history in the state.

The sequential solve must be torchdiffeq's ``odeint`` on the refined grid
(the N·K fine steps, start-up and corrector included) to round-off, the
parallel solves the sequential one to ``tol``, and gradients through a
parallel solve torchdiffeq's (float64).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchdiffeq

import pitsolve
from pitsolve import InputTypeError, InputValueError, MULTISTEP_METHODS

from conftest import max_err

F64 = torch.float64
#: torchdiffeq's explicit_adams at its default max_order (12: Adams–Bashforth with 11 steps) is stable
#: only for |h·λ| below about 0.003; the parallel tests use max_order=5 there (stable at these steps).
STABLE = {"explicit_adams": {"max_order": 5}, "implicit_adams": None, "fixed_adams": None}


def fine_grid(t: torch.Tensor, K: int) -> torch.Tensor:
    frac = torch.arange(K, dtype=t.dtype) / K
    inner = (t[:-1, None] + frac * (t[1:] - t[:-1])[:, None]).reshape(-1)
    return torch.cat([inner, t[-1:]])


def problem(requires_grad: bool = False):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, dtype=F64, generator=g).requires_grad_(requires_grad)
    y0 = torch.randn(3, dtype=F64, generator=g).requires_grad_(requires_grad)

    def f(t, y):
        return torch.tanh(y @ W.T) - 0.1 * y + 0.2 * torch.sin(3 * t)

    return f, W, y0


def reference(f, y0, t, K, method, options=None, **kwargs):
    """torchdiffeq on the refined grid, at the boundaries ``t``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Functional iteration did not converge", where it happens
        out = torchdiffeq.odeint(f, y0, fine_grid(t, K), method=method, options=options, **kwargs)
    return tuple(o[::K] for o in out) if isinstance(out, tuple) else out[::K]


# ----------------------------------------------------------------------------- sequential == torchdiffeq
@pytest.mark.parametrize("method", MULTISTEP_METHODS)
@pytest.mark.parametrize(
    "K, options, decreasing",
    [(1, None, False), (3, None, True), (4, {"max_order": 5}, False), (2, {"max_order": 4}, True)],
)
def test_sequential_equals_torchdiffeq_on_the_fine_grid(method, K, options, decreasing):
    f, _, y0 = problem()
    t = torch.linspace(0, 0.8, 9, dtype=F64)
    if decreasing:
        t = t.flip(0)
    system = pitsolve.ODESystem(f, y0, t, method=method, substeps=K, options=options)
    ys = pitsolve.sequential(system).ys
    assert ys.shape == (9, 3)  # y alone, not the carried history
    assert max_err(ys, reference(f, y0, t, K, method, options)) < 1e-12


def test_history_runs_across_intervals():
    """N intervals of K steps are the N·K steps of one run: start-up only at t[0], whatever K."""
    f, _, y0 = problem()
    t = torch.linspace(0, 0.8, 3, dtype=F64)
    fine = pitsolve.ODESystem(f, y0, fine_grid(t, 4), method="implicit_adams")
    coarse = pitsolve.ODESystem(f, y0, t, method="implicit_adams", substeps=4)
    assert max_err(pitsolve.sequential(coarse).ys, pitsolve.sequential(fine).ys[::4]) < 1e-14


def test_tuple_state_equals_torchdiffeq():
    def oscillator(t, y):
        pos, vel = y
        return vel, -pos - 0.1 * vel * pos**2

    y0 = (torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([0.0, -0.2], dtype=F64))
    t = torch.linspace(0, 1.5, 7, dtype=F64)
    system = pitsolve.ODESystem(oscillator, y0, t, method="implicit_adams", substeps=3)
    seq = pitsolve.sequential(system)
    assert isinstance(seq.ys, tuple) and [p.shape for p in seq.ys] == [(7, 2), (7, 2)]
    assert max_err(seq.ys, reference(oscillator, y0, t, 3, "implicit_adams")) < 1e-12
    par = pitsolve.solve(system, "identity", tol=1e-12)
    assert isinstance(par.ys, tuple) and max_err(par.ys, seq.ys) < 1e-10


def test_corrector_failures_drop_history_as_torchdiffeq():
    """One corrector iteration against tight tolerances never converges: each such step forgets its oldest
    derivative, so the order stays low; torchdiffeq does the same (and warns once per such step)."""
    f, _, y0 = problem()
    t = torch.linspace(0, 0.8, 5, dtype=F64)
    options = {"max_iters": 1}
    system = pitsolve.ODESystem(f, y0, t, method="implicit_adams", substeps=3, options=options, rtol=1e-14,
                                atol=1e-16)
    ys = pitsolve.sequential(system).ys
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = torchdiffeq.odeint(f, y0, fine_grid(t, 3), method="implicit_adams", options=options, rtol=1e-14,
                                 atol=1e-16)[::3]
    assert max_err(ys, ref) < 1e-12
    # Every Adams step failed (the first two are Runge–Kutta start-up steps), as torchdiffeq counted.
    assert system.corrector_failures == {0: 1, 1: 3, 2: 3, 3: 3} and len(caught) == 10
    # The state's count L stays at two derivatives (order 3 throughout); a converging corrector fills all 10.
    converging = system_of("implicit_adams", substeps=3)
    for sys_, count in ((system, 2.0), (converging, 10.0)):
        state = tuple(p.unsqueeze(0) for p in sys_.initial_state)
        for n in range(4):
            state = sys_.propagate(state, torch.tensor([n]))
        assert float(state[-1]) == count
    assert converging.corrector_failures == {}


def test_float32_equals_torchdiffeq():
    f, _, y0 = problem()
    W32 = problem()[1].float()
    f32 = lambda t, y: torch.tanh(y @ W32.T) - 0.1 * y + 0.2 * torch.sin(3 * t)  # noqa: E731
    t = torch.linspace(0, 0.8, 9)
    system = pitsolve.ODESystem(f32, y0.float(), t, method="implicit_adams", substeps=2)
    ref = reference(f32, y0.float(), t, 2, "implicit_adams")
    assert max_err(pitsolve.sequential(system).ys, ref) < 1e-5


# ----------------------------------------------------------------------------- parallel == sequential
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("strategy", ["identity", "zero", "newton", "anderson", "parareal"])
def test_parallel_equals_sequential(method, strategy):
    f, _, y0 = problem()
    t = torch.linspace(0, 2, 11, dtype=F64)
    system = pitsolve.ODESystem(f, y0, t, method=method, substeps=4, options=STABLE[method])
    seq = pitsolve.sequential(system)
    par = pitsolve.solve(system, strategy, tol=1e-10)
    assert par.converged and par.ys.shape == seq.ys.shape
    assert max_err(par.ys, seq.ys) < 1e-8


def test_coarse_init_and_windows():
    f, _, y0 = problem()
    t = torch.linspace(0, 2, 13, dtype=F64)
    system = pitsolve.ODESystem(f, y0, t, method="implicit_adams", substeps=3)
    seq = pitsolve.sequential(system)
    par = pitsolve.solve(system, "newton", tol=1e-10, init="coarse", window=5)
    assert max_err(par.ys, seq.ys) < 1e-8
    assert seq.depth == seq.nfe == 12 * 3  # fine steps, as for one-step methods


def test_odeint_step_size_and_options():
    f, _, y0 = problem()
    t = torch.linspace(0, 1, 6, dtype=F64)
    ys = pitsolve.odeint(f, y0, t, method="explicit_adams", options=dict(step_size=0.05, max_order=6), tol=1e-12)
    assert max_err(ys, reference(f, y0, t, 4, "explicit_adams", {"max_order": 6})) < 1e-10
    # implicit_adams: rtol/atol are the corrector's tolerances, as in torchdiffeq.
    ys = pitsolve.odeint(f, y0, t, rtol=1e-5, atol=1e-7, method="implicit_adams", options=dict(step_size=0.1),
                         jacobian="newton", tol=1e-12)
    assert max_err(ys, reference(f, y0, t, 2, "implicit_adams", rtol=1e-5, atol=1e-7)) < 1e-10


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("method, strategy", [("explicit_adams", "newton"), ("implicit_adams", "identity")])
def test_gradients_through_a_parallel_solve_equal_torchdiffeq(method, strategy):
    t = torch.linspace(0, 2, 11, dtype=F64)
    options = STABLE[method]
    f, W, y0 = problem(requires_grad=True)
    ys = pitsolve.solve(pitsolve.ODESystem(f, y0, t, method=method, substeps=2, options=options), strategy,
                        tol=1e-12).ys
    ours = torch.autograd.grad(ys.pow(2).sum(), (W, y0))
    f, W, y0 = problem(requires_grad=True)
    theirs = torch.autograd.grad(reference(f, y0, t, 2, method, options).pow(2).sum(), (W, y0))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


# ----------------------------------------------------------------------------- bad input
def system_of(method="explicit_adams", **kwargs):
    f, _, y0 = problem()
    return pitsolve.ODESystem(f, y0, torch.linspace(0, 1, 5, dtype=F64), method=method, **kwargs)


@pytest.mark.parametrize(
    "method, kwargs, kind, match",
    [
        ("explicit_adams", {"options": {"max_order": 13}}, InputValueError,
         r"options\['max_order'\]=13 is outside 4\.\.12.*pass 4 <= max_order <= 12, or method='rk4'"),
        ("implicit_adams", {"options": {"max_order": 3}}, InputValueError, r"options\['max_order'\]=3 is outside"),
        ("explicit_adams", {"options": {"max_order": 4.0}}, InputTypeError,
         r"options\['max_order'\]=4\.0 is not an integer \(float\); pass an int"),
        ("explicit_adams", {"options": {"max_iters": 3}}, InputValueError,
         r"options \['max_iters'\] are not supported for the multistep method 'explicit_adams'; supported: "
         r"\['max_order'\]"),
        ("fixed_adams", {"options": {"perturb": True}}, InputValueError,
         r"options \['perturb'\] are not supported for the multistep method 'fixed_adams'.*substeps=K"),
        ("implicit_adams", {"options": {"max_iters": 0}}, InputValueError,
         r"options\['max_iters'\]=0 must be >= 1 \(the corrector's iterations per step\)"),
        ("implicit_adams", {"options": [("max_order", 4)]}, InputTypeError, r"options=.* is not a dict"),
        ("implicit_adams", {"rtol": 0.0, "atol": 0.0}, InputValueError, r"atol=0\.0, rtol=0\.0: both are 0"),
    ],
)
def test_bad_options(method, kwargs, kind, match):
    with pytest.raises(kind, match=match):
        system_of(method, **kwargs)


def test_odeint_rejects_unknown_options():
    f, _, y0 = problem()
    with pytest.raises(InputValueError, match=r"options \['grid_constructor'\] are not supported for the fixed-grid "
                                              r"method 'implicit_adams'; supported: \['step_size', 'max_order', "
                                              r"'max_iters'\]"):
        pitsolve.odeint(f, y0, torch.linspace(0, 1, 3, dtype=F64), method="implicit_adams",
                        options=dict(grid_constructor=None))


def test_unknown_method_lists_the_multistep_ones():
    with pytest.raises(InputValueError, match=r"method='adams' .* a multistep one \['explicit_adams', "
                                              r"'fixed_adams', 'implicit_adams'\]"):
        system_of("adams")
