"""The divergence guards of ``solve`` (pitsolve/_guard.py): each fires, is recorded, and the answer stays right.

Every guarded solve is compared with :func:`pitsolve.sequential` on the same
system.  After a fall to the sequential rung the remaining points are
computed exactly as the sequential solve computes them, so the comparison
tolerance is the one of the stopping rule; the depth budget is checked
against the sequential depth ``N·K`` exactly (integers).
"""

from __future__ import annotations

import time

import pytest
import torch

import pitsolve
from pitsolve import BandedSystem, Guard, InputTypeError, InputValueError
from pitsolve._guard import Damped
from pitsolve.jacobians import Sweep, Cost

F64 = torch.float64


def lorenz(t, y):
    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([10 * (v - x), x * (28 - z) - v, x * v - 8 / 3 * z], -1)


def lorenz_system(T=12.0, N=240):
    """Chaotic over this horizon: errors grow ~e^{0.9 t}, so far-ahead iterates blow up."""
    return pitsolve.ODESystem(lorenz, torch.tensor([1.0, 1.0, 1.0], dtype=F64),
                              torch.linspace(0, T, N + 1, dtype=F64), method="rk4", substeps=2,
                              atol=1e-6, rtol=1e-6)


class NonNormal(BandedSystem):
    """``Φ_n(x) = M x`` with a contractive but non-normal ``M`` whose diagonal exceeds 1.

    ``M = [[1.5, -1], [1, -0.5]]`` has the double eigenvalue 0.5 (the sequential
    solve decays), but ``diag(M) = (1.5, -0.5)``: the quasi-DEER scan
    multiplies errors by 1.5 per point, a finite but enormous growth over a
    long window — the "residual growth" guard, not the non-finite one.
    """

    def __init__(self, n=60, M=((1.5, -1.0), (1.0, -0.5))):
        self.n = n
        self.M = torch.tensor(M, dtype=F64)

    @property
    def initial_state(self):
        return torch.tensor([1.0, 0.3], dtype=F64)

    @property
    def num_intervals(self):
        return self.n

    def propagate(self, states, indices):
        return states @ self.M.T

    def jvp_flat(self, states, indices, tangents):
        return self.propagate_flat(states, indices), tangents @ self.M.T


def max_err(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("jacobian", ["anderson", "diagonal", "newton", "dense", "parareal"])
def test_lorenz_blow_up_falls_back_and_stays_within_sequential_depth(jacobian):
    system = lorenz_system()
    seq = pitsolve.sequential(system)
    sol = pitsolve.solve(system, jacobian, tol=1e-9, throw=False)
    # Chaotic: the error bound may decline to certify 1e-9 (UNCERTIFIED), but says so; the answer stays close.
    assert sol.status in (pitsolve.Status.CONVERGED, pitsolve.Status.UNCERTIFIED)
    assert sol.converged or sol.error_estimate > 1e-9
    assert max_err(sol.ys, seq.ys) < 1e-6 * float(seq.ys.abs().max())
    assert sol.depth <= 2 * seq.depth  # the budget: at most twice the sequential solve's depth
    if sol.fallbacks:  # the blow-ups moved the solve down the ladder, in order
        first = sol.fallbacks[0]
        assert first.source == "strategy" and first.target == "damped" and first.reason == "non-finite iterates"
        assert [f.target for f in sol.fallbacks] == ["damped", "identity", "sequential"][: len(sol.fallbacks)]
    else:  # or the strategy kept advancing the front faster than the sequential sweep: left alone
        assert jacobian == "dense" and sol.iterations < system.num_intervals
    assert sol.iterations <= system.num_intervals


def test_lorenz_without_guard_spends_more_depth_than_sequential():
    """The guard is what keeps the depth bound: bare Newton (a sequential JVP sweep per sweep) overshoots it."""
    system = lorenz_system(T=2.0, N=40)
    seq = pitsolve.sequential(system)
    bare = pitsolve.solve(system, "newton", tol=1e-9, guard=False, throw=False)
    guarded = pitsolve.solve(system, "newton", tol=1e-9, throw=False)
    assert bare.depth > 2 * seq.depth and not bare.fallbacks
    assert guarded.depth <= 2 * seq.depth


def test_residual_growth_guard_fires_on_finite_divergence():
    system = NonNormal()
    seq = pitsolve.sequential(system)
    bare = pitsolve.solve(system, "diagonal", tol=1e-10, guard=False, max_iters=6, throw=False)
    assert min(bare.residuals[1:]) > 1e9 and bare.resets == 0  # it really diverges, finitely (after its first sweep)
    sol = pitsolve.solve(system, "diagonal", tol=1e-10, guard=Guard(budget=False))
    assert sol.converged and max_err(sol.ys, seq.ys) < 1e-9
    assert sol.fallbacks and sol.fallbacks[0].reason == "step growth" and sol.fallbacks[0].iteration == 1
    assert sol.depth <= 2 * seq.depth  # budget off: the JVP waves may cost, but the fall stops the growth


def test_residual_growth_guard_sends_identity_to_the_sequential_sweep():
    """Φ(x) = diag(1.3, 0.5) x: the identity update under-corrects an expanding map and
    its window residual grows ~1e8-fold; the guard cuts the wasted work."""
    system = NonNormal(M=((1.3, 0.0), (0.0, 0.5)))
    seq = pitsolve.sequential(system)
    bare = pitsolve.solve(system, "identity", tol=1e-10, guard=False)
    assert max(bare.residuals) > 1e7 * bare.residuals[0]
    sol = pitsolve.solve(system, "identity", tol=1e-10)
    assert [(f.source, f.target, f.reason) for f in sol.fallbacks] == [("strategy", "sequential", "residual growth")]
    assert sol.fallbacks[0].iteration <= 8
    assert max_err(sol.ys, seq.ys) < 1e-9 * float(seq.ys.abs().max())
    assert sol.nfe < bare.nfe / 3 and sol.depth <= 2 * seq.depth


def test_depth_budget_replaces_expensive_sweeps_and_bounds_depth():
    """Newton's JVP sweep is as deep as the window; the budget swaps in identity sweeps."""
    vdp = pitsolve.ODESystem(lambda t, y: torch.stack([y[..., 1], 2 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1),
                             torch.tensor([2.0, 0.0], dtype=F64), torch.linspace(0, 4, 41, dtype=F64))
    seq = pitsolve.sequential(vdp)
    # The oscillator amplifies accepted errors ~4x after acceptance: at tol 1e-10 the bound may end
    # UNCERTIFIED (honestly: its estimate tracks the error); this test is about the depth budget.
    bare = pitsolve.solve(vdp, "newton", tol=1e-10, guard=False, throw=False)
    guarded = pitsolve.solve(vdp, "newton", tol=1e-10, throw=False)
    assert guarded.status in (pitsolve.Status.CONVERGED, pitsolve.Status.UNCERTIFIED)
    assert bare.depth > seq.depth
    assert guarded.depth <= 2 * seq.depth and guarded.budget_sweeps > 0
    assert max_err(guarded.ys, seq.ys) < 1e-8


def test_budget_off_keeps_the_bare_strategy():
    system = lorenz_system(T=2.0, N=40)
    bare = pitsolve.solve(system, "diagonal", tol=1e-10, guard=False)
    off = pitsolve.solve(system, "diagonal", tol=1e-10, guard=Guard(budget=False, growth=1e300))
    assert off.budget_sweeps == 0 and off.iterations == bare.iterations and torch.equal(off.ys, bare.ys)


def test_benign_solve_never_falls_back():
    vdp = pitsolve.ODESystem(lambda t, y: torch.stack([y[..., 1], (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1),
                             torch.tensor([2.0, 0.0], dtype=F64), torch.linspace(0, 5, 101, dtype=F64))
    for jacobian in ["identity", "anderson", "zero"]:
        sol = pitsolve.solve(vdp, jacobian, tol=1e-8, window=16, throw=False)
        # The error bound may decline to certify 1e-8 here (the oscillator's estimated gain); the guard stays out.
        assert sol.status in (pitsolve.Status.CONVERGED, pitsolve.Status.UNCERTIFIED), jacobian
        assert not sol.fallbacks and sol.budget_sweeps == 0, jacobian


def test_damped_is_the_convex_blend_of_identity_and_strategy():
    system = NonNormal(n=5)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(5)
    fx = system.propagate_flat(x[:-1], idx)
    sweep = Sweep(system=system, start=0, indices=idx, x=x, fx=fx, cost=Cost())
    inner = pitsolve.jacobians.Dense()
    a = pitsolve.jacobians.Identity().update(sweep)
    b = inner.update(Sweep(system=system, start=0, indices=idx, x=x, fx=fx, cost=Cost()))
    d = Damped(inner, 0.25).update(sweep)
    assert torch.allclose(d, a + 0.25 * (b - a), atol=1e-14)
    assert torch.allclose(d[0], fx[0], atol=1e-14)  # the first point stays exact


@pytest.mark.parametrize("kwargs, match", [
    (dict(growth=1.0), r"growth=1\.0.*> 1"),
    (dict(growth=float("nan")), r"growth=nan"),
    (dict(patience=0), r"patience=0.*int >= 1"),
    (dict(damping=1.5), r"damping=1\.5.*\(0, 1\)"),
])
def test_guard_settings_are_validated(kwargs, match):
    with pytest.raises(InputValueError, match=match):
        Guard(**kwargs)


def test_guard_argument_is_validated():
    system = NonNormal(n=4)
    with pytest.raises(InputTypeError, match=r"guard is a str; pass True, False or a pitsolve.Guard"):
        pitsolve.solve(system, guard="yes")
    with pytest.raises(InputTypeError, match=r"Guard\(budget=1\)"):
        Guard(budget=1)


def test_trajectory_false_keeps_first_and_last_point_only():
    system = lorenz_system(T=1.0, N=50)
    full = pitsolve.solve(system, "identity", tol=1e-10, window=8)
    light = pitsolve.solve(system, "identity", tol=1e-10, window=8, trajectory=False)
    assert light.ys.shape == (2, 3)
    assert torch.equal(light.ys[0], full.ys[0]) and torch.equal(light.y, full.y)
    assert light.point_residuals == [] and light.residuals == full.residuals
    seq = pitsolve.sequential(system, trajectory=False)
    assert seq.ys.shape == (2, 3) and torch.equal(seq.y, pitsolve.sequential(system).y)
    # A non-converged light solve returns its best final iterate too.
    part = pitsolve.solve(system, "identity", tol=1e-10, window=8, max_iters=2, throw=False, trajectory=False)
    part_full = pitsolve.solve(system, "identity", tol=1e-10, window=8, max_iters=2, throw=False)
    assert not part.converged and torch.equal(part.y, part_full.y)


def test_best_window_of_the_batch_cost_curve():
    """The window of least predicted solve time c(p)·min(N, 4 + N/p)."""
    from pitsolve._tuning import best_window, predicted_cost

    cpu = [(1, 9.1), (2, 13.5), (4, 14.9), (8, 18.8), (16, 25.4), (32, 39.7), (64, 80.2)]  # digits UNet, 2 cores
    assert best_window(cpu, N=1000) == 32  # 64 doubles the call's cost to save 16 of 35 sweeps
    assert best_window(cpu, N=50) == 16  # a short horizon: a wider window cannot cut the sweeps below 4
    flat = [(1, 1.0), (2, 1.0), (4, 1.01), (8, 1.02), (16, 1.05), (32, 1.1), (64, 1.2)]  # an idle GPU
    assert best_window(flat, N=64) == 64
    linear = [(p, float(p)) for p in (1, 2, 4, 8)]  # no gain from batching: one point per sweep
    assert best_window(linear, N=8) == 1
    assert predicted_cost(1, 2.0, N=50) == 100.0  # p = 1 is the sequential solve: N sweeps, not 4 + N
    # Equal predicted cost: the narrower window (less memory, less work) wins.
    assert best_window([(1, 1.0), (2, 1.0)], N=4, latency=2.0) == 1  # both predict 4 sweeps


def test_batch_cost_curve_stops_past_the_best_width():
    """A saturated device is not asked for ever wider calls (a batch of images × N rows can exhaust memory):
    timing stops two doublings past the best width (from width 8 on), and every width is timed again in
    interleaved rounds."""
    from pitsolve._tuning import batch_cost_curve

    calls = []

    class Linear:
        def propagate(self, states, indices):
            calls.append(states.shape[0])
            time.sleep(1e-3 * states.shape[0])  # cost linear in the rows: no gain from batching
            return states

    system = lorenz_system(T=1.0, N=64)
    curve = batch_cost_curve(system, Linear(), 64, repeats=1)
    assert [p for p, _ in curve] == [1, 2, 4, 8]  # widths below 8 are always timed
    assert max(calls) == 8
    assert calls == [1, 1, 2, 2, 4, 4, 8, 8, 1, 2, 4, 8]  # warm-up + one timing per width, then one round


def test_window_auto_picks_a_measured_window_and_gives_the_same_answer():
    system = lorenz_system(T=1.0, N=64)
    sol = pitsolve.solve(system, "identity", tol=1e-10, window="auto")
    curve = sol.tuning["curve"]
    ps = [p for p, _ in curve]
    assert ps == [2 ** i for i in range(len(ps))] and ps[-1] <= 64  # doubling, up to N or past the best
    # The rule: the measured window of least predicted cost c(p)·min(N, a + N/p).
    a = sol.tuning["latency_sweeps"]
    cost = {p: t * min(64, a + 64 / p) for p, t in curve}
    assert sol.window == min(cost, key=cost.get) == sol.tuning["window"]
    assert max_err(sol.ys, pitsolve.sequential(system).ys) < 1e-8
    again = pitsolve.solve(system, "identity", tol=1e-10, window="auto")
    # measured once per process: the second solve reuses the curve and spends no time timing
    assert again.tuning["curve"] == sol.tuning["curve"] and again.tuning["window"] == sol.tuning["window"]
    assert again.tuning["cached"] and again.tuning["seconds"] == 0.0 and again.tuning["calls"] == 0
    assert not sol.tuning["cached"] and sol.tuning["seconds"] > 0 and sol.tuning["calls"] > 0
    with pytest.raises(InputValueError, match=r"window='big' is not a window; pass an int >= 1, None .*'auto'"):
        pitsolve.solve(system, window="big")
