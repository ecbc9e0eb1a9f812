"""The secant strategy, Identity on carried extras, and the stopping rule's scale floor."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

import pitsolve
from pitsolve.adapters.diffusers import build_system, parallel_sample, sequential_sample
from pitsolve.jacobians import Cost, Identity, Secant, Sweep

from conftest import gen, linear_system, max_err, vdp_system
from diffusion_models import tiny_unet

DT = torch.float64


def rel_err(a, b):
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


# ----------------------------------------------------------------------------- Secant
@pytest.mark.parametrize("history", [0, 1, 3])
@pytest.mark.parametrize("window", [None, 4])
def test_secant_converges_to_sequential(history, window):
    system = vdp_system(n=16)
    seq = pitsolve.sequential(system)
    sol = pitsolve.solve(system, Secant(history), window=window, tol=1e-12, guard=False)
    assert sol.converged and max_err(sol.ys, seq.ys) < 1e-10
    assert sol.iterations <= system.num_intervals


def test_secant_without_history_is_its_base():
    """``m = 0`` is ``B_0`` alone: Identity's sweeps for ``"identity"``, Jacobi's for ``"zero"``."""
    system = vdp_system(n=12)
    for base, other in (("identity", "identity"), ("zero", "zero")):
        a = pitsolve.solve(system, Secant(0, base=base), tol=1e-10, guard=False)
        b = pitsolve.solve(system, other, tol=1e-10, guard=False)
        assert a.iterations == b.iterations
        assert max_err(a.ys, b.ys) < 1e-12


def test_secant_learns_a_linear_jacobian():
    """On a linear ODE ``J_n`` is one constant D×D matrix: with D secant pairs per point the
    update is Newton's on the directions seen, so it needs fewer sweeps than ``A = I``."""
    system = linear_system(n=24)
    D = system.spec.size
    seq = pitsolve.sequential(system)
    ident = pitsolve.solve(system, "identity", tol=1e-10, guard=False)
    secant = pitsolve.solve(system, Secant(D), tol=1e-10, guard=False)
    assert max_err(secant.ys, seq.ys) < 1e-8
    assert secant.iterations < ident.iterations


def test_secant_satisfies_the_secant_equation():
    """After two sweeps, point 1's ``A`` maps the pair's ``ΔX`` to ``ΔΦ`` and is ``I`` across it."""
    system = linear_system(n=3)
    D, idx = system.spec.size, torch.arange(3)
    g = torch.Generator().manual_seed(0)
    x_old = torch.randn(4, D, dtype=DT, generator=g)
    x_new = x_old + torch.randn(4, D, dtype=DT, generator=g)
    x_new[0] = x_old[0]  # the anchor is fixed

    strategy = Secant(1)
    state = strategy.init(system)  # the per-solve state the solve would own

    def sweep(x):
        return Sweep(system=system, start=0, indices=idx, x=x, fx=system.propagate_flat(x[:-1], idx), cost=Cost(),
                     state=state)

    strategy.update(sweep(x_old))
    s = sweep(x_new)
    out = strategy.update(s)
    phi = lambda v: system.propagate_flat(v.unsqueeze(0), idx[1:2])[0]  # noqa: E731  (linear: Φ(v) = P v)
    dX = x_new[1] - x_old[1]
    delta = out[0] - x_new[1]
    along = (delta @ dX) / (dX @ dX) * dX
    expected = s.fx[1] + (phi(along) - phi(torch.zeros_like(along))) + (delta - along)
    assert torch.allclose(out[1], expected, atol=1e-6 * float(delta.norm()))


# ----------------------------------------------------------------------------- Identity, rest
def dpm_system():
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2, algorithm_type="dpmsolver++")
    return build_system(tiny_unet(), scheduler, num_inference_steps=12, shape=(1, 1, 8, 8), generator=gen(4))


def test_identity_takes_carried_history_from_phi():
    """``A_n = I`` on the monitored sample, ``0`` on the multistep history: the history rows are Φ's."""
    system = dpm_system()
    assert system.monitored != slice(None)
    p, D = 4, system.spec.size
    x = torch.randn(p + 1, D, dtype=DT)
    fx = torch.randn(p, D, dtype=DT)
    sweep = Sweep(system=system, start=0, indices=torch.arange(p), x=x, fx=fx, cost=Cost())
    out = Identity().update(sweep)
    rest = torch.ones(D, dtype=torch.bool)
    rest[system.monitored] = False
    assert torch.equal(out[:, rest], fx[:, rest])
    whole = Identity(rest="identity").update(sweep)
    assert torch.allclose(out[:, system.monitored], whole[:, system.monitored])
    assert not torch.allclose(out[:, rest], whole[:, rest])


@pytest.mark.slow
@pytest.mark.parametrize("rest", ["phi", "identity"])
def test_identity_rest_matches_sequential_on_a_multistep_sampler(rest):
    system = dpm_system()
    with torch.no_grad():
        seq = pitsolve.sequential(system)
        sol = pitsolve.solve(system, Identity(rest=rest), tol=1e-10, guard=False)
    assert sol.converged and rel_err(sol.y[0], seq.y[0]) < 1e-8


# ----------------------------------------------------------------------------- scale floor
def test_scale_floor_sets_the_stopping_scale():
    """``error_ratio`` divides by ``max(σ_{t_n}, c)``: a constant change δ reads δ / max(σ_n, c)."""
    kw = dict(num_inference_steps=10, shape=(1, 1, 8, 8), generator=gen(1))
    plain = build_system(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), scale_floor=None, **kw)
    floored = build_system(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), scale_floor=1.0,
                           **{**kw, "generator": gen(1)})
    N, D = plain.num_intervals, plain.spec.size
    idx = torch.arange(N + 1)
    old = torch.zeros(N + 1, D, dtype=DT)
    new = old + 1e-3
    r_plain, r_floor = plain.error_ratio(new, old, idx), floored.error_ratio(new, old, idx)
    sigma = 1e-3 / r_plain
    assert torch.allclose(r_floor, 1e-3 / sigma.clamp_min(1.0))
    assert bool((sigma < 1.0).any()) and bool((r_floor < r_plain).any())


def test_scale_floor_stops_sooner_and_stays_within_its_bound():
    """A floor stops the last (low-σ) points sooner; the sample moves by at most about ``tol · c``."""
    unet, scheduler = tiny_unet(), DDIMScheduler(num_train_timesteps=1000)
    kw = dict(num_inference_steps=20, shape=(2, 1, 8, 8))
    seq, _ = sequential_sample(unet, scheduler, generator=gen(5), **kw)
    tol = 1e-3
    plain, s_plain = parallel_sample(unet, scheduler, generator=gen(5), tol=tol, **kw)
    floored, s_floor = parallel_sample(unet, scheduler, generator=gen(5), tol=tol, scale_floor=1.0, **kw)
    assert s_floor.converged and s_floor.depth <= s_plain.depth
    rms = float((floored - seq).pow(2).mean().sqrt())
    # Eq. 14 bounds each accepted change by tol · s_n; the accepted run's errors add up over the window at
    # most once per point (tests/test_properties.py derives the same bound for the ODE case).
    assert rms <= 20 * tol * 1.0
