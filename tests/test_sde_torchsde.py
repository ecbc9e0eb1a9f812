"""pitsolve's SDE path against torchsde.sdeint on the same Brownian motion (issue 15, item 6).

For every method and noise type pitsolve integrates, with a user's torchsde
Brownian motion: ``sequential`` equals ``solve`` (two strategies, one of them
Parareal, which runs the coarse step on the joined increments and Lévy areas)
equals ``torchsde.sdeint(sde, y0, ts, bm=bm, dt=h/K, method=...)``.  The grid
is dyadic, so pitsolve's step times ``t_n + kδ`` and torchsde's accumulated
``t += dt`` are the same floats and the only differences are rounding in the
rescaled time (``δ·f`` for ``dt·f``): 1e-10 in float64 is ~10⁵ ulps of
headroom.  Then ``logqp``, ``names``, ``method=None``, parameter gradients,
the seeded path's space-time Lévy area, and every refusal, typed.
"""

from __future__ import annotations

import pytest
import torch
import torchsde
from torch import nn

import pitsolve
from pitsolve import InputTypeError, InputValueError, SDESystem
from pitsolve._brownian import Noise, aggregate

F64 = torch.float64
N, K = 8, 2
BATCH, D, M = 2, 3, 2
DT = 1.0 / (N * K)
TOL = 1e-10


def grid() -> torch.Tensor:
    return torch.linspace(0.0, 1.0, N + 1, dtype=F64)


class Toy(nn.Module):
    """A nonlinear SDE of any noise and SDE type, with parameters θ, σ and a prior drift h."""

    def __init__(self, noise_type: str = "diagonal", sde_type: str = "ito"):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.theta = nn.Parameter(torch.tensor(0.7, dtype=F64))
        self.sigma = nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.register_buffer("mix", torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.2, 0.4]], dtype=F64))

    def f(self, t, y):
        return -self.theta * y + 0.5 * torch.sin(y) + torch.cos(t)

    def g(self, t, y):
        bump = 1 + 0.2 * torch.sin(y)
        if self.noise_type == "diagonal":
            return self.sigma * bump
        if self.noise_type == "scalar":
            return (self.sigma * bump).unsqueeze(-1)
        if self.noise_type == "additive":
            return (self.sigma * (1 + t) * self.mix).expand(y.shape[0], D, M)
        return self.sigma * self.mix * bump.unsqueeze(-1)

    def h(self, t, y):
        return -y


class Renamed(Toy):
    """``Toy`` with its drift, diffusion and prior drift under other names (no ``f``, ``g``, ``h``)."""

    def __getattribute__(self, name):
        if name in ("f", "g", "h"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    def drift(self, t, y):
        return Toy.f(self, t, y)

    def diffusion(self, t, y):
        return Toy.g(self, t, y)

    def prior(self, t, y):
        return Toy.h(self, t, y)


NAMES = {"drift": "drift", "diffusion": "diffusion", "prior_drift": "prior"}


def channels(noise_type: str, logqp: bool = False) -> int:
    # torchsde's logqp with diagonal noise gives the log-ratio its own (zero-weighted) noise channel.
    return {"diagonal": D + int(logqp), "scalar": 1}.get(noise_type, M)


def interval(noise_type: str, levy: str = "space-time", logqp: bool = False, entropy: int = 7):
    return torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, channels(noise_type, logqp)), dtype=F64,
                                     levy_area_approximation=levy, entropy=entropy)


def y0() -> torch.Tensor:
    return torch.tensor([[0.5, -0.2, 0.1], [1.0, 0.3, -0.7]], dtype=F64)


#: (method, SDE type, noise types torchsde allows) for every method pitsolve integrates.
METHODS = [
    ("euler", "ito", ("diagonal", "scalar", "additive", "general")),
    ("milstein", "ito", ("diagonal", "scalar", "additive")),
    ("srk", "ito", ("diagonal", "scalar", "additive")),
    ("heun", "stratonovich", ("diagonal", "scalar", "additive", "general")),
    ("midpoint", "stratonovich", ("diagonal", "scalar", "additive", "general")),
    ("euler_heun", "stratonovich", ("diagonal", "scalar", "additive", "general")),
    ("milstein", "stratonovich", ("diagonal", "scalar", "additive")),
    ("reversible_heun", "stratonovich", ("diagonal", "scalar", "additive", "general")),
    ("log_ode", "stratonovich", ("diagonal", "scalar", "additive", "general")),
]
CASES = [(m, s, n) for m, s, noises in METHODS for n in noises]


def close(a, b, atol=TOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


# ----------------------------------------------------------------------------- every method × noise type
@pytest.mark.parametrize("method, sde_type, noise_type", CASES, ids=[f"{m}-{s[:5]}-{n}" for m, s, n in CASES])
def test_sequential_and_solve_equal_torchsde_on_the_same_bm(method, sde_type, noise_type):
    sde = Toy(noise_type, sde_type)
    bm = interval(noise_type, "foster" if method == "log_ode" else "space-time")
    system = SDESystem(sde, y0(), grid(), method=method, substeps=K, bm=bm)
    with torch.no_grad():
        ref = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method)
        seq = system.outputs(pitsolve.sequential(system).ys)
        close(seq, ref)
        # Parareal runs the coarse step on the joined path; Newton's JVPs go through every method
        # (diagonal noise: Newton's Jacobians cost a forward-mode pass each, the suite's time is bounded).
        for strategy in ("parareal", "newton" if noise_type == "diagonal" else "identity"):
            close(system.outputs(pitsolve.solve(system, strategy, tol=1e-12).ys), ref)


@pytest.mark.parametrize("method, sde_type, noise_type", [
    ("milstein", "ito", "general"), ("srk", "ito", "general"), ("heun", "ito", "diagonal"),
    ("reversible_heun", "ito", "diagonal"), ("srk", "stratonovich", "diagonal"),
])
def test_where_torchsde_refuses_pitsolve_refuses_typed(method, sde_type, noise_type):
    sde, bm = Toy(noise_type, sde_type), interval(noise_type)
    with pytest.raises(ValueError):
        torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method)
    with pytest.raises(InputValueError, match=r"torchsde rejected the SDE: SDE (is of type|has noise type)"):
        SDESystem(sde, y0(), grid(), method=method, substeps=K, bm=bm)


@pytest.mark.parametrize("make_bm", [
    lambda: torchsde.BrownianTree(0.0, torch.zeros(BATCH, D, dtype=F64), t1=1.0, entropy=3),
    lambda: torchsde.BrownianPath(0.0, torch.zeros(BATCH, D, dtype=F64)),
], ids=["BrownianTree", "BrownianPath"])
def test_other_torchsde_brownian_motions(make_bm):
    bm, sde = make_bm(), Toy()
    system = SDESystem(sde, y0(), grid(), method="milstein", substeps=K, bm=bm)
    with torch.no_grad():
        ref = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="milstein")
        close(pitsolve.sequential(system).ys, ref)
        close(pitsolve.solve(system, "newton", tol=1e-12).ys, ref)


def test_the_path_is_queried_once_and_each_interval_is_deterministic():
    class Counting(torchsde.BrownianInterval):
        calls = 0

        def __call__(self, *args, **kwargs):
            Counting.calls += 1
            return super().__call__(*args, **kwargs)

    bm = Counting(0.0, 1.0, size=(BATCH, D), dtype=F64, levy_area_approximation="space-time", entropy=1)
    system = SDESystem(Toy(), y0(), grid(), method="srk", substeps=K, bm=bm)
    assert Counting.calls == N * K  # one query per step, at construction
    states = pitsolve.sequential(system).ys[:-1].detach()
    with torch.no_grad():
        together = system.propagate(states, torch.arange(N))
        order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
        shuffled = system.propagate(states[order], order)
    close(shuffled, together[order], atol=1e-14)
    assert Counting.calls == N * K


# ----------------------------------------------------------------------------- the seeded path and its Lévy area
def test_seeded_srk_path_carries_space_time_levy_area():
    sde = Toy()
    system = SDESystem(sde, y0(), grid(), method="srk", substeps=K, seed=5)
    bm = system.brownian_motion()
    assert bm.levy_area_approximation == "space-time"
    with torch.no_grad():
        ref = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="srk")
        close(pitsolve.sequential(system).ys, ref)
        close(pitsolve.solve(system, "parareal", tol=1e-12).ys, ref)
    # H ~ N(0, δ/12) independent of W (the law of Brownian motion's space-time Lévy area).
    big = SDESystem(sde, torch.zeros(500, D, dtype=F64), grid(), method="srk", substeps=K, seed=1)
    noise = big.noise(torch.arange(N))
    delta = 1.0 / (N * K)
    H, W = noise.H.reshape(-1) / delta**0.5, noise.W.reshape(-1) / delta**0.5
    assert abs(float(H.var()) * 12 - 1) < 0.05 and abs(float((H * W).mean())) < 0.02


def test_joined_steps_equal_the_brownian_interval_over_the_whole_interval():
    # Parareal's coarse step needs W, H over [t_n, t_{n+1}] from the K steps': aggregate() must agree
    # with torchsde's own answer for the union (BrownianInterval joins (W, H) exactly).
    bm = interval("diagonal")
    steps = torch.linspace(0.25, 0.5, 5, dtype=F64)
    parts = [bm(a, b, return_U=True) for a, b in zip(steps[:-1], steps[1:])]
    lengths = steps[1:] - steps[:-1]
    W = torch.stack([p[0] for p in parts])
    H = torch.stack([p[1] for p in parts]) / lengths.view(-1, 1, 1) - 0.5 * W
    joined = aggregate(Noise(W, H), lengths)
    W_all, U_all = bm(steps[0], steps[-1], return_U=True)
    close(joined.W[0], W_all, atol=1e-14)
    close(0.25 * (0.5 * joined.W[0] + joined.H[0]), U_all, atol=1e-14)


# ----------------------------------------------------------------------------- logqp, names, method=None, ts as a list
@pytest.mark.parametrize("method, sde_type, noise_type", [
    ("euler", "ito", "diagonal"), ("srk", "ito", "diagonal"), ("euler", "ito", "general"),
    ("reversible_heun", "stratonovich", "general"), ("midpoint", "stratonovich", "scalar"),
])
def test_logqp_returns_what_torchsde_returns(method, sde_type, noise_type):
    sde = Toy(noise_type, sde_type)
    bm = interval(noise_type, logqp=True)
    with torch.no_grad():
        ys, log_ratio = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method, logqp=True)
        ours, ours_ratio = pitsolve.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method, logqp=True, tol=1e-12)
    assert ours_ratio.shape == log_ratio.shape == (N, BATCH)
    close(ours, ys)
    close(ours_ratio, log_ratio)


def test_names_map_torchsde_roles_to_methods():
    sde, bm = Renamed(), interval("diagonal", logqp=True)
    with torch.no_grad():
        ys, ratio = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="srk", names=NAMES, logqp=True)
        ours, ours_ratio = pitsolve.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="srk", names=NAMES, logqp=True,
                                           jacobian="newton", tol=1e-12)
    close(ours, ys)
    close(ours_ratio, ratio)


@pytest.mark.parametrize("sde_type, noise_type", [("ito", "diagonal"), ("ito", "general"), ("stratonovich", "additive")])
def test_method_none_is_torchsdes_default_and_ts_may_be_a_list(sde_type, noise_type):
    sde, bm = Toy(noise_type, sde_type), interval(noise_type)
    ts = grid().tolist()
    with torch.no_grad():
        ref = torchsde.sdeint(sde, y0(), ts, bm=bm, dt=DT)  # method=None
        close(pitsolve.sdeint(sde, y0(), ts, bm=bm, method=None, dt=DT, tol=1e-12), ref)


# ----------------------------------------------------------------------------- parameter gradients
@pytest.mark.parametrize("method, sde_type", [("euler", "ito"), ("milstein", "ito"), ("srk", "ito"),
                                              ("reversible_heun", "stratonovich")])
def test_parameter_gradients_equal_torchsdes(method, sde_type):
    sde, bm = Toy("diagonal", sde_type), interval("diagonal")
    params = [sde.theta, sde.sigma]
    ref = torch.autograd.grad(torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method).pow(2).sum(), params)
    system = SDESystem(sde, y0(), grid(), method=method, substeps=K, bm=bm)
    seq = torch.autograd.grad(system.outputs(pitsolve.sequential(system).ys).pow(2).sum(), params)
    par = torch.autograd.grad(pitsolve.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method=method, jacobian="newton",
                                              tol=1e-12).pow(2).sum(), params)
    for ours_seq, ours_par, theirs in zip(seq, par, ref):
        close(ours_seq, theirs, atol=1e-12)
        close(ours_par, theirs, atol=1e-8)


# ----------------------------------------------------------------------------- torchsde's remaining options
@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
def test_options_grad_free_milstein_equals_torchsde(noise_type):
    """``options=dict(grad_free=True)``: torchsde's derivative-free Milstein, on the rescaled steps as well."""
    sde, bm = Toy(noise_type), interval(noise_type)
    theirs = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="milstein", options=dict(grad_free=True))
    system = SDESystem(sde, y0(), grid(), method="milstein", substeps=K, bm=bm, options=dict(grad_free=True))
    close(pitsolve.sequential(system).ys, theirs)
    derivative = torchsde.sdeint(sde, y0(), grid(), bm=bm, dt=DT, method="milstein")
    assert float((theirs - derivative).abs().max().detach()) > 1e-6  # the option changes the scheme


@pytest.mark.parametrize("logqp", [False, True])
def test_extra_returns_torchsdes_solver_state_and_a_solve_continues_from_it(logqp):
    """``extra=True`` returns torchsde's ``(f, g, z)`` of reversible_heun; ``extra_solver_state`` resumes from it."""
    sde, bm = Toy("diagonal", "stratonovich"), interval("diagonal", logqp=logqp)
    kwargs = dict(bm=bm, dt=DT, method="reversible_heun", logqp=logqp, extra=True)
    theirs = torchsde.sdeint(sde, y0(), grid(), **kwargs)
    ours = pitsolve.sdeint(sde, y0(), grid(), jacobian="newton", tol=1e-12, **kwargs)
    assert len(ours) == len(theirs) == (3 if logqp else 2)
    for a, b in zip([*ours[:-1], *ours[-1]], [*theirs[:-1], *theirs[-1]]):
        close(a, b)
    first, second = grid()[: N // 2 + 1], grid()[N // 2:]
    head = pitsolve.sdeint(sde, y0(), first, **kwargs)
    tail = pitsolve.sdeint(sde, head[0][-1], second, **{**kwargs, "extra_solver_state": head[-1]})
    close(tail[0], ours[0][N // 2:])  # resuming equals the one solve over the whole grid
    euler = pitsolve.sdeint(Toy(), y0(), grid(), dt=DT, extra=True, extra_solver_state=())
    assert euler[1] == () and euler[0].shape == (N + 1, BATCH, D)


# ----------------------------------------------------------------------------- refusals, typed
def test_decreasing_ts_is_refused_as_torchsde_refuses_it():
    sde, ts = Toy(), grid().flip(0)
    with pytest.raises(ValueError, match="strictly increasing"):
        torchsde.sdeint(sde, y0(), ts, dt=DT)
    with pytest.raises(InputValueError, match=r"t is decreasing \(t\[0\]=1\.0 > t\[1\]=0\.875\); torchsde\.sdeint "
                                              r"refuses decreasing times as well.*Pass increasing times"):
        pitsolve.sdeint(sde, y0(), ts, dt=DT)


REFUSALS = {
    "adaptive": (dict(adaptive=True), InputValueError,
                 r"adaptive=True is not supported: .*queries the Brownian path at times that depend on the solution.*"
                 r"pass a fixed dt"),
    "bm-not-brownian": (dict(bm=object()), InputTypeError,
                        r"bm is a object; pass a torchsde Brownian motion \(BrownianInterval.*or None"),
    "bm-shape": (dict(bm=torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, 5), dtype=F64)), InputValueError,
                 r"bm has shape \(2, 5\), expected \(batch, noise channels\) = \(2, 3\); create it with size=\(2, 3\)"),
    "bm-shape-logqp": (dict(bm=torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, D), dtype=F64), logqp=True),
                       InputValueError, r"bm has shape \(2, 3\), expected .* = \(2, 4\) \(logqp=True with diagonal"),
    "bm-dtype": (dict(bm=torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, D))), InputTypeError,
                 r"bm has dtype torch\.float32 on cpu but y0 has dtype torch\.float64.*dtype=y0\.dtype"),
    "srk-bm-without-levy-area": (dict(method="srk", bm=torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, D),
                                                                                 dtype=F64)),
                                 InputValueError, r"method='srk' needs bm\.levy_area_approximation in "
                                 r"\['space-time', 'davie', 'foster'\], but bm has 'none'.*Or pass bm=None"),
    "log_ode-without-bm": (dict(method="log_ode"), InputValueError,
                           r"method='log_ode' needs a Lévy-area approximation.*levy_area_approximation='davie'"),
    "adjoint_reversible_heun": (dict(method="adjoint_reversible_heun"), InputValueError,
                                r"method='adjoint_reversible_heun' is not supported \(it serves sdeint_adjoint only"),
    "names-not-dict": (dict(names=["drift"]), InputTypeError, r"names=\['drift'\] is not a dict"),
    "dt_min": (dict(dt_min=1e-5), InputValueError,
               r"dt_min=1e-05 bounds the steps of adaptive stepping, which pitsolve does not do.*drop dt_min"),
    "options-unknown": (dict(options=dict(trapezoidal=True)), InputValueError,
                        r"options \['trapezoidal'\] are not torchsde method options.*'grad_free'"),
    "options-not-milstein": (dict(options=dict(grad_free=True)), InputValueError,
                             r"options\['grad_free'\] applies to method='milstein' only, not method='euler'"),
    "options-not-dict": (dict(options=["grad_free"]), InputTypeError, r"options=\['grad_free'\] is not a dict"),
    "extra-state-not-empty": (dict(extra_solver_state=(torch.zeros(1),)), InputValueError,
                              r"extra_solver_state has 1 entries, but method='euler' carries no state.*pass \(\)"),
    "extra-state-inconsistent": (dict(method="reversible_heun", extra_solver_state=(
        torch.zeros(BATCH, D, dtype=F64), torch.zeros(BATCH, D, dtype=F64), y0())), InputValueError,
        r"extra_solver_state's \(f, g\) differ from sde\.f_and_g\(ts\[0\], z\) by .*extra=True"),
    "extra-state-shape": (dict(method="reversible_heun", extra_solver_state=(
        torch.zeros(BATCH, D, dtype=F64), torch.zeros(BATCH, D, dtype=F64), torch.zeros(BATCH, 2, dtype=F64))),
        InputValueError, r"extra_solver_state's z has shape \(2, 2\).*needs shape \(2, 3\)"),
    "names-unknown-key": (dict(names={"drfit": "f"}), InputValueError,
                          r"names has unknown keys \['drfit'\]; the keys are \[.*'drift'"),
    "names-missing-method": (dict(names={"drift": "nope"}), InputValueError,
                             r"names\['drift'\]='nope' is not a method of the sde \(Toy\)"),
    "names-product": (dict(names={"diffusion_prod": "g"}), InputValueError,
                      r"names gives \['diffusion_prod'\]: pitsolve integrates with the diffusion matrix g itself"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_typed_and_name_the_fix(name):
    kwargs, kind, match = REFUSALS[name]
    with pytest.raises(kind, match=match):
        pitsolve.sdeint(Toy(), y0(), grid(), **{"dt": DT, **kwargs})


def test_logqp_without_prior_drift_is_refused():
    class NoPrior(Toy):
        def __getattribute__(self, name):
            if name == "h":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(AttributeError):
        torchsde.sdeint(NoPrior(), y0(), grid(), dt=DT, method="euler", logqp=True)
    with pytest.raises(InputTypeError, match=r"logqp=True needs .* prior drift h .* the sde lacks \['h'\]"):
        pitsolve.sdeint(NoPrior(), y0(), grid(), dt=DT, logqp=True)
