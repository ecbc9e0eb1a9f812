"""The sequential reference equals torchdiffeq's and torchsde's own integrators on the same grid.

Every fixed-grid ODE method (increasing and decreasing times, tuple states) against
``torchdiffeq.odeint``; Itô and Stratonovich SDEs (diagonal and general noise) against
``torchsde.sdeint`` driven by the system's own Brownian path.
"""

from __future__ import annotations

import pytest
import torch
import torchdiffeq
import torchsde

import pitsolve

from conftest import DT, OrnsteinUhlenbeck, linear_func, max_err, ou_system, van_der_pol


def fine_grid(t, K):
    frac = torch.arange(K, dtype=t.dtype) / K
    inner = (t[:-1, None] + frac * (t[1:] - t[:-1])[:, None]).reshape(-1)
    return torch.cat([inner, t[-1:]])


@pytest.mark.parametrize("method", pitsolve.FIXED_GRID_METHODS)
@pytest.mark.parametrize("decreasing", [False, True])
def test_ode_sequential_matches_torchdiffeq(method, decreasing):
    K = 3
    t = torch.linspace(0, 2, 11, dtype=DT)
    if decreasing:
        t = t.flip(0)
    y0 = torch.tensor([2.0, 0.0], dtype=DT)
    system = pitsolve.ODESystem(van_der_pol, y0, t, method=method, substeps=K)
    ref = torchdiffeq.odeint(van_der_pol, y0, fine_grid(t, K), method=method)[::K]
    assert max_err(pitsolve.sequential(system).ys, ref) < 1e-12


def test_ode_tuple_state_matches_torchdiffeq():
    def oscillator(t, y):
        pos, vel = y
        return vel, -pos - 0.1 * vel * pos**2

    y0 = (torch.tensor([1.0, 0.5], dtype=DT), torch.tensor([0.0, -0.2], dtype=DT))
    t = torch.linspace(0, 3, 13, dtype=DT)
    system = pitsolve.ODESystem(oscillator, y0, t, substeps=2)
    seq = pitsolve.sequential(system)
    ref = torchdiffeq.odeint(oscillator, y0, fine_grid(t, 2), method="rk4")
    assert max_err(seq.ys, tuple(r[::2] for r in ref)) < 1e-12
    par = pitsolve.solve(system, "dense", tol=1e-13)
    assert isinstance(par.ys, tuple) and max_err(par.ys, seq.ys) < 1e-10


def test_ode_batched_func_equals_vmapped():
    t = torch.linspace(0, 3, 9, dtype=DT)
    y0 = torch.tensor([1.0, -0.5, 0.3, 0.2], dtype=DT)
    vm = pitsolve.ODESystem(linear_func, y0, t)
    batched = pitsolve.ODESystem(lambda tt, y: y @ vm.func.__globals__["A_LINEAR"].T, y0, t, batched_func=True)
    assert max_err(pitsolve.sequential(vm).ys, pitsolve.sequential(batched).ys) < 1e-14


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_sde_sequential_matches_torchsde(method):
    K = 4
    system = ou_system(n=10, substeps=K, method=method)
    dt = float(system.t[1] - system.t[0]) / K
    ref = torchsde.sdeint(OrnsteinUhlenbeck(), system.initial_state, system.t, bm=system.brownian_motion(), dt=dt,
                          method=method)
    assert max_err(pitsolve.sequential(system).ys, ref) < 1e-12


@pytest.mark.parametrize("method", ["heun", "midpoint"])
def test_stratonovich_sde_sequential_matches_torchsde(method):
    class Geometric(torch.nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return 0.2 * y * torch.cos(t)

        def g(self, t, y):
            return 0.3 * y

    y0 = torch.tensor([[1.0, 2.0]], dtype=DT)
    t = torch.linspace(0, 1, 9, dtype=DT)
    system = pitsolve.SDESystem(Geometric(), y0, t, method=method, substeps=2, seed=11)
    ref = torchsde.sdeint(Geometric(), y0, t, bm=system.brownian_motion(), dt=1 / 16, method=method)
    seq = pitsolve.sequential(system)
    assert max_err(seq.ys, ref) < 1e-12
    assert max_err(pitsolve.solve(system, "newton", tol=1e-13).ys, seq.ys) < 1e-10


def test_sde_path_is_fixed_by_seed_and_interval():
    a, b, c = ou_system(seed=1), ou_system(seed=1), ou_system(seed=2)
    idx = torch.arange(a.num_intervals)
    assert torch.equal(a.increments(idx), b.increments(idx))
    assert not torch.allclose(a.increments(idx), c.increments(idx))
    # Each interval's increments depend on the interval only, not on the batch it is drawn in.
    assert torch.equal(a.increments(idx)[:, 5], a.increments(idx[5:6])[:, 0])
    # Variance h/K: the sample variance of many increments is close to it.
    many = ou_system(n=400, substeps=8).increments(torch.arange(400))
    h = 2.0 / 400
    assert abs(float(many.var()) / (h / 8) - 1) < 0.05


def test_general_noise_sde():
    class General(torch.nn.Module):
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.stack([0.1 * y, 0.2 * torch.ones_like(y), 0.05 * y**2], dim=-1)

    y0 = torch.tensor([[1.0, -1.0, 0.5]], dtype=DT)
    t = torch.linspace(0, 1, 9, dtype=DT)
    system = pitsolve.SDESystem(General(), y0, t, substeps=2, seed=5)
    assert system.increments(torch.arange(2)).shape == (2, 2, 1, 3)
    ref = torchsde.sdeint(General(), y0, t, bm=system.brownian_motion(), dt=1 / 16)
    seq = pitsolve.sequential(system)
    assert max_err(seq.ys, ref) < 1e-12
    assert max_err(pitsolve.solve(system, "anderson", tol=1e-13).ys, seq.ys) < 1e-10


def test_convenience_call_shapes():
    t = torch.linspace(0, 1, 9, dtype=DT)
    y0 = torch.tensor([2.0, 0.0], dtype=DT)
    ys = pitsolve.odeint(van_der_pol, y0, t, method="rk4", tol=1e-12)
    ref = torchdiffeq.odeint(van_der_pol, y0, t, method="rk4")
    assert ys.shape == ref.shape and max_err(ys, ref) < 1e-10

    sde_y0 = torch.tensor([[1.0, -1.0]], dtype=DT)
    ys = pitsolve.sdeint(OrnsteinUhlenbeck(), sde_y0, t, dt=1 / 32, seed=4, tol=1e-12)
    system = pitsolve.SDESystem(OrnsteinUhlenbeck(), sde_y0, t, substeps=4, seed=4)
    ref = torchsde.sdeint(OrnsteinUhlenbeck(), sde_y0, t, bm=system.brownian_motion(), dt=1 / 32, method="euler")
    assert ys.shape == ref.shape == (9, 1, 2) and max_err(ys, ref) < 1e-10
