"""Adaptive methods inside each interval (pitsolve/_adaptive.py) and torchdiffeq's ``odeint`` call shape."""

from __future__ import annotations

import pytest
import torch
import torchdiffeq

import pitsolve
from pitsolve.jacobians import REGISTRY

F64 = torch.float64
METHODS = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")


def vdp(t, y):
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def forced(t, y):
    return -0.5 * y + torch.sin(2 * t)


Y0 = torch.tensor([2.0, 0.0], dtype=F64)
T = torch.linspace(0, 10, 21, dtype=F64)


@pytest.fixture(scope="module")
def reference():
    return torchdiffeq.odeint(vdp, Y0, T, method="dopri5", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rtol", [1e-4, 1e-6])
def test_accuracy_per_tolerance_is_torchdiffeqs(report, reference, method, rtol):
    """Error against a 1e-12 reference within 3× torchdiffeq's own at the same rtol/atol."""
    atol = rtol * 1e-2
    ours = pitsolve.sequential(pitsolve.ODESystem(vdp, Y0, T, method=method, rtol=rtol, atol=atol)).ys
    theirs = torchdiffeq.odeint(vdp, Y0, T, method=method, rtol=rtol, atol=atol)
    e_ours, e_theirs = float((ours - reference).abs().max()), float((theirs - reference).abs().max())
    report(f"{method} rtol={rtol:.0e}: error {e_ours:.1e} (torchdiffeq {e_theirs:.1e}, ratio {e_ours / e_theirs:.2f})")
    assert e_ours <= 3 * e_theirs


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_dopri8_is_as_accurate_as_torchdiffeqs_stepping_onto_the_outputs(report, reference, rtol):
    """dopri8 against torchdiffeq's dopri8 forced to step onto ``t`` (``step_t=t``: no interpolation).

    torchdiffeq's default dopri8 steps past an output time and evaluates a lower-order interpolant
    there, whose error dominates (1.7e-5 at rtol=1e-8 here), so the like-for-like comparison is the
    one without interpolation, as pitsolve ends each interval exactly on ``t_{n+1}``.  The 1e-12
    dopri5 reference is 1.1e-11 from SciPy's DOP853 at rtol=1e-13, far below the errors compared.
    """
    atol = rtol * 1e-2
    ours = pitsolve.sequential(pitsolve.ODESystem(vdp, Y0, T, method="dopri8", rtol=rtol, atol=atol)).ys
    theirs = torchdiffeq.odeint(vdp, Y0, T, method="dopri8", rtol=rtol, atol=atol, options=dict(step_t=T))
    e_ours, e_theirs = float((ours - reference).abs().max()), float((theirs - reference).abs().max())
    report(f"dopri8 rtol={rtol:.0e}: error {e_ours:.1e} (torchdiffeq with step_t=t {e_theirs:.1e}, "
           f"ratio {e_ours / e_theirs:.2f})")
    assert e_ours <= 3 * e_theirs


@pytest.mark.parametrize("method, strategy", [("dopri5", name) for name in sorted(REGISTRY)]
                         + [(m, "identity") for m in METHODS[1:]])
def test_parallel_equals_sequential_for_every_strategy(method, strategy):
    t = torch.linspace(0, 4, 13, dtype=F64)
    system = pitsolve.ODESystem(forced, torch.ones(3, dtype=F64), t, method=method, rtol=1e-5, atol=1e-7)
    ref = pitsolve.sequential(system)
    sol = pitsolve.solve(system, strategy, tol=1e-10)
    assert sol.converged
    assert float((sol.ys - ref.ys).abs().max()) < 1e-8


def test_a_row_does_not_depend_on_the_other_rows_of_its_call():
    """Each row keeps its own step size and decisions: alone or in a batch, the same Φ."""
    system = pitsolve.ODESystem(vdp, Y0, T, method="dopri5", rtol=1e-6, atol=1e-8)
    x = torch.stack([Y0, Y0 * 0.5, torch.tensor([0.1, 3.0], dtype=F64), Y0 * -1.5])
    idx = torch.tensor([0, 7, 3, 19])
    together = system.propagate_flat(x, idx)
    waves = system.stats.waves
    alone = torch.cat([system.propagate_flat(x[i : i + 1], idx[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, rtol=0, atol=1e-14)
    assert waves >= max(system.stats.row_steps)


def test_costs_are_what_the_calls_took(report):
    system = pitsolve.ODESystem(vdp, Y0, T, method="dopri5", rtol=1e-6, atol=1e-8)
    seq = pitsolve.sequential(system)
    steps = []
    for n in range(20):
        system.propagate_flat(seq.ys[n : n + 1], torch.tensor([n]))
        steps.append(system.stats.row_steps[0])
    assert seq.nfe == seq.depth == sum(steps) and min(steps) >= 2
    sol = pitsolve.solve(system, "newton", tol=1e-10)
    report(f"dopri5 on Van der Pol, N=20: steps per interval {min(steps)}…{max(steps)}, sequential depth "
           f"{seq.depth}; newton: {sol.iterations} sweeps, depth {sol.depth}, NFE {sol.nfe}")
    assert sol.depth >= sol.iterations * min(steps)


def test_odeint_has_torchdiffeqs_call_shape_and_default_method(reference):
    # tol=1e-8: the error bound's estimate over a data-dependent step control is conservative (at 1e-10 it
    # declines to certify an error of 1e-11); the parallel error stays far below the integration error.
    ys = pitsolve.odeint(vdp, Y0, T, rtol=1e-8, atol=1e-10, jacobian="dense", tol=1e-8)
    theirs = torchdiffeq.odeint(vdp, Y0, T, rtol=1e-8, atol=1e-10)
    assert ys.shape == theirs.shape
    assert float((ys - reference).abs().max()) <= 3 * float((theirs - reference).abs().max())
    fine = pitsolve.odeint(vdp, Y0, T, method="rk4", options=dict(step_size=0.125), jacobian="dense", tol=1e-12)
    tdq = torchdiffeq.odeint(vdp, Y0, T, method="rk4", options=dict(step_size=0.125))
    assert torch.allclose(fine, tdq, rtol=0, atol=1e-9)
    first = pitsolve.odeint(vdp, Y0, T, options=dict(first_step=1e-3, max_num_steps=500), jacobian="dense",
                            tol=1e-8)
    assert float((first - reference).abs().max()) < 1e-4


@pytest.mark.parametrize(
    "kwargs, kind, match",
    [
        (dict(method="dopri5", substeps=4), pitsolve.InputValueError, "substeps=4 with the adaptive method"),
        (dict(options=dict(step_t=[1.0])), pitsolve.InputValueError, r"options \['step_t'\]"),
        (dict(method="rk4", options=dict(first_step=0.1)), pitsolve.InputValueError, r"options \['first_step'\]"),
        (dict(method="rk4", options=dict(step_size=0.3)), pitsolve.InputValueError, "does not divide"),
        (dict(rtol=0.0, atol=0.0), pitsolve.InputValueError, "both are 0"),
        (dict(options=dict(max_num_steps=0)), pitsolve.InputValueError, "max_num_steps=0"),
        (dict(options=[("first_step", 1)]), pitsolve.InputTypeError, "is not a dict"),
        (dict(method="scipy_solver"), pitsolve.InputValueError, "method='scipy_solver'"),
    ],
)
def test_bad_options_are_named(kwargs, kind, match):
    with pytest.raises(kind, match=match):
        pitsolve.odeint(vdp, Y0, T, **kwargs)


def test_an_interval_out_of_steps_stops_a_sequential_solve():
    system = pitsolve.ODESystem(vdp, Y0, T, method="adaptive_heun", rtol=1e-10, atol=1e-12,
                                options=dict(max_num_steps=20))
    with pytest.raises(pitsolve.NonFiniteError, match="interval 0"):
        pitsolve.sequential(system)
    assert system.stats.exhausted == 1
