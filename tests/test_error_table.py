"""Every row of docs/errors.md, one test each: the typed error, the value it names and the fix it gives.

The table and this file cannot drift: :func:`test_table_and_cases_agree`
parses docs/errors.md and requires one registered case per row id (and one
row per case), with the same place (core / adapter / CLI) and exception.

Each case must raise its exception type (exactly the user's own type for a
user's ``func`` or model that raises), and the message, notes included,
must match the case's pattern, which names the offending value and the fix.
Every test runs under a deadline (a hang fails it) and must leave the
process as it found it: grad mode, default dtype, no open progress bar.
CLI cases exit with status 2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverSDEScheduler
from tqdm.std import tqdm as std_tqdm

import pitsolve
from pitsolve import (
    BandedSystem,
    ConvergenceError,
    InputTypeError,
    InputValueError,
    NonFiniteError,
    ODESystem,
    PitsolveError,
    SDESystem,
)
from pitsolve.adapters.cli import main as cli_main
from pitsolve.adapters.diffusers import ParallelDiffusionPipeline, SolveOptions, parallel_sample, sequential_sample
from pitsolve.adapters.diffusion import GaussianMixtureDenoiser

from conftest import NoisyMap, gen
from diffusion_models import tiny_unet

TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
DEADLINE_S = 30

F64 = torch.float64
N = 8  # intervals of the core problems
T = 8  # sampling steps of the adapter problems
SHAPE = (2, 1, 8, 8)


# ----------------------------------------------------------------------------- registry
class CliExit(Exception):
    """What a CLI run ended with: its exit status and its stderr."""

    def __init__(self, code, stderr: str):
        super().__init__(stderr.strip())
        self.code, self.lines = code, stderr.strip().splitlines()


@dataclass(frozen=True)
class Case:
    where: str  # "core", "adapter" or "CLI", as in the table
    kind: type  # the exception, or CliExit for a CLI run
    match: str  # regex over the message and its notes: the value and the fix
    run: Callable[[Path], object]
    exact: bool = False  # the user's own exception: exactly this type, not a pitsolve wrapper
    after: Optional[Callable[[], None]] = None  # run after the error: the process must still work


CASES: Dict[str, Case] = {}


def case(row: str, where: str, kind: type, match: str, **options):
    def register(run):
        assert row not in CASES, f"duplicate case {row}"
        CASES[row] = Case(where, kind, match, run, **options)
        return run

    return register


# ----------------------------------------------------------------------------- problems

def decay(t, y):
    return -y


def grid(n=N, dtype=F64):
    return torch.linspace(0.0, 1.0, n + 1, dtype=dtype)


def ones(*shape):
    return torch.ones(shape or (3,), dtype=F64)


def brownian(size, dtype=F64):
    """A torchsde BrownianInterval on [0, 1] without Lévy area."""
    import torchsde

    return torchsde.BrownianInterval(0.0, 1.0, size=size, dtype=dtype)


def good_system():
    return ODESystem(decay, ones(), grid())


class OU:
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return 0.3 * torch.ones_like(y)


class Halving(BandedSystem):
    """A custom system without a coarse propagator: Φ_n(x) = x / 2 (or ``out(x)``)."""

    def __init__(self, D=2, out=None):
        self.D, self.out = D, out

    @property
    def initial_state(self):
        return torch.ones(self.D, dtype=F64)

    @property
    def num_intervals(self):
        return N

    def propagate(self, states, indices):
        return 0.5 * states if self.out is None else self.out(states)


class FailAfter:
    """``func(t, y) = -y`` that raises ``error`` from its ``calls``-th call on (the first one is the shape check)."""

    def __init__(self, calls: int, error: BaseException):
        self.calls, self.error, self.seen = calls, error, 0

    def __call__(self, t, y):
        self.seen += 1
        if self.seen >= self.calls:
            raise self.error
        return -y


class ShapeAfter:
    """A batched ``func(t, y) = -y`` that returns only the first column from its ``calls``-th call on."""

    def __init__(self, calls: int):
        self.calls, self.seen = calls, 0

    def __call__(self, t, y):
        self.seen += 1
        return -y if self.seen < self.calls else -y[:, :1]


class BadRatio(Halving):
    """A custom system whose stopping measure has the shape ``[B, 1, 1]`` instead of ``[B]``."""

    def error_ratio(self, new, old, indices):
        return super().error_ratio(new, old, indices).view(-1, 1, 1)


class BadScale(Halving):
    """A custom system whose error scale has twice the rows of the batch."""

    def error_scale(self, states, indices):
        return torch.ones((2 * states.shape[0], 1), dtype=states.dtype)


class NoSteps(Halving):
    steps_per_interval = 0


class CudaGenerator(torch.Generator):
    """A CPU generator that reports cuda:0, as a CUDA generator would (none can be made on a CPU-only machine)."""

    @property
    def device(self):
        return torch.device("cuda", 0)


def ratio_of(system):
    x = torch.ones(N, system.D, dtype=F64)
    return system.checked_error_ratio(x, 0.5 * x, torch.arange(1, N + 1))


def deep_unet():
    """A UNet2DModel with 3 down blocks: H and W must be multiples of 4."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8, 16),
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4,
    ).eval()


def gmm():
    abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    return GaussianMixtureDenoiser.random(SHAPE[1:], components=2, alphas_cumprod=abar)


def sample(model=None, scheduler=None, **kwargs):
    options = dict(num_inference_steps=T, shape=SHAPE, generator=gen())
    options.update(kwargs)
    if options.get("latents") is not None:
        options.pop("shape")
    return parallel_sample(gmm() if model is None else model, scheduler or DDIMScheduler(), **options)


def cli(*argv):
    """Run the command line; always raises :class:`CliExit` with its status and stderr."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli_main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    raise CliExit(code, err.getvalue())


def fresh_solve_works():
    system = good_system()
    sol = pitsolve.solve(system, "identity", tol=1e-10, progress=True)
    assert sol.converged
    torch.testing.assert_close(sol.ys, pitsolve.sequential(system).ys, atol=1e-9, rtol=0)


def fresh_sample_works():
    x, sol = sample(num_inference_steps=4)
    ref, _ = sequential_sample(gmm(), DDIMScheduler(), num_inference_steps=4, shape=SHAPE, generator=gen())
    assert sol.converged and torch.isfinite(x).all() and x.shape == ref.shape


# ===================================================================== core: time grid
case("t-not-1d", "core", InputValueError, r"t has shape \(3, 3\); pass a 1-D tensor of the N\+1 interval boundaries")(
    lambda tmp: ODESystem(decay, ones(), torch.zeros(3, 3, dtype=F64)))
case("t-empty", "core", InputValueError, r"t has 0 point\(s\); pass at least two boundaries \(N >= 1 interval\)")(
    lambda tmp: ODESystem(decay, ones(), torch.empty(0, dtype=F64)))
case("t-one-point", "core", InputValueError, r"t has 1 point\(s\); pass at least two boundaries")(
    lambda tmp: ODESystem(decay, ones(), torch.zeros(1, dtype=F64)))
case("t-non-monotone", "core", InputValueError,
     r"t is not strictly monotone \(steps \[0\.5, -0\.2.*\]\); pass strictly increasing or strictly decreasing")(
    lambda tmp: ODESystem(decay, ones(), torch.tensor([0.0, 0.5, 0.3, 1.0], dtype=F64)))
case("t-inf", "core", InputValueError, r"t contains NaN or Inf; pass finite interval boundaries")(
    lambda tmp: ODESystem(decay, ones(), torch.tensor([0.0, 1.0, float("inf")], dtype=F64)))
case("t-int-dtype", "core", InputTypeError,
     r"t has dtype torch\.int64; pass floating-point times, e\.g\. t\.to\(torch\.float64\)")(
    lambda tmp: ODESystem(decay, ones(), torch.arange(5)))
case("t-dtype-mismatch", "core", InputTypeError,
     r"t has dtype torch\.float32 but the state has dtype torch\.float64; cast one of them, "
     r"e\.g\. t = t\.to\(torch\.float64\)")(
    lambda tmp: ODESystem(decay, ones(), grid(dtype=torch.float32)))
case("t-device-mismatch", "core", InputTypeError, r"t lies on meta but the state on cpu; move them to one device")(
    lambda tmp: ODESystem(decay, ones(), grid().to("meta")))

# ===================================================================== core: initial state
case("y0-meta", "core", InputTypeError,
     r"y0 lies on the meta device, which holds no values; .*e\.g\. y0\.to\('cpu'\)")(
    lambda tmp: ODESystem(decay, ones().to("meta"), grid()))
case("y0-int-dtype", "core", InputTypeError,
     r"y0 has dtype torch\.int64; pass a floating-point tensor, e\.g\. y0\.double\(\)")(
    lambda tmp: ODESystem(decay, torch.tensor([1, 2]), grid()))
case("y0-complex", "core", InputTypeError,
     r"y0 has complex dtype torch\.complex128; .*real tensor, e\.g\. torch\.view_as_real\(y0\)")(
    lambda tmp: ODESystem(decay, torch.ones(3, dtype=torch.complex128), grid()))
case("y0-nan", "core", InputValueError, r"y0 contains NaN or Inf; pass a finite initial state")(
    lambda tmp: ODESystem(decay, torch.tensor([1.0, float("nan")], dtype=F64), grid()))
case("y0-empty", "core", InputValueError, r"y0 has no elements \(shape \(0,\)\); pass a state with at least one value")(
    lambda tmp: ODESystem(decay, torch.ones(0, dtype=F64), grid()))
case("y0-not-a-tensor", "core", InputTypeError, r"y0 is a list, not a torch\.Tensor; wrap it with torch\.as_tensor")(
    lambda tmp: ODESystem(decay, [1.0, 2.0], grid()))
case("sde-y0-not-2d", "core", InputValueError, r"y0 has shape \(3,\); torchsde states are 2-D.*reshape")(
    lambda tmp: SDESystem(OU(), ones(3), grid()))
case("sde-t-decreasing", "core", InputValueError,
     r"t is decreasing \(t\[0\]=1\.0 > t\[1\]=0\.875\); torchsde\.sdeint refuses decreasing times as well.*"
     r"Pass increasing times")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid().flip(0)))
case("sdeint-adaptive", "core", InputValueError,
     r"adaptive=True is not supported: .*queries the Brownian path at times that depend on the solution.*"
     r"pass a fixed dt")(
    lambda tmp: pitsolve.sdeint(OU(), ones(2, 3), grid(), dt=0.0625, adaptive=True))
case("sde-bm-not-brownian", "core", InputTypeError,
     r"bm is a object; pass a torchsde Brownian motion \(BrownianInterval.*or None for the seeded path")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), bm=object()))
case("sde-bm-shape", "core", InputValueError,
     r"bm has shape \(2, 5\), expected \(batch, noise channels\) = \(2, 3\); create it with size=\(2, 3\)")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), bm=brownian((2, 5))))
case("sde-bm-dtype", "core", InputTypeError,
     r"bm has dtype torch\.float32 on cpu but y0 has dtype torch\.float64 on cpu; create it with dtype=y0\.dtype")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), bm=brownian((2, 3), dtype=torch.float32)))
case("sde-bm-no-levy-area", "core", InputValueError,
     r"method='srk' needs bm\.levy_area_approximation in \['space-time', 'davie', 'foster'\], but bm has 'none'; "
     r"create it with levy_area_approximation='space-time'.*Or pass bm=None")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), method="srk", bm=brownian((2, 3))))
case("sde-log-ode-without-bm", "core", InputValueError,
     r"method='log_ode' needs a Lévy-area approximation, which pitsolve's seeded path does not draw; "
     r"pass bm=torchsde\.BrownianInterval\(.*levy_area_approximation='davie'\)")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), method="log_ode"))
case("sde-method-adjoint", "core", InputValueError,
     r"method='adjoint_reversible_heun' is not supported \(it serves sdeint_adjoint only, as in torchsde\); "
     r"choose one of \[.*'reversible_heun'")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), method="adjoint_reversible_heun"))
case("sde-logqp-no-prior-drift", "core", InputTypeError,
     r"logqp=True needs the drift f, the diffusion g and the prior drift h .*the sde lacks \['h'\].*names=")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), logqp=True))
case("sde-names-unknown-key", "core", InputValueError,
     r"names has unknown keys \['drfit'\]; the keys are \['diffusion', 'drift', 'drift_and_diffusion', 'prior_drift'\]")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), names={"drfit": "f"}))
case("sde-names-missing-method", "core", InputValueError,
     r"names\['drift'\]='nope' is not a method of the sde \(OU\); name one it defines")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), names={"drift": "nope"}))
case("sde-names-product", "core", InputValueError,
     r"names gives \['diffusion_prod'\]: pitsolve integrates with the diffusion matrix g itself.*"
     r"names=\{'diffusion': \.\.\.\}")(
    lambda tmp: SDESystem(OU(), ones(2, 3), grid(), names={"diffusion_prod": "g"}))

# ===================================================================== core: func / system
case("func-wrong-shape", "core", InputValueError,
     r"func returned shape \(1, 6\), expected \(1, 3\).*return the shape of its input")(
    lambda tmp: ODESystem(lambda t, y: torch.cat([y, y]), ones(), grid()))
case("func-wrong-dtype", "core", InputTypeError,
     r"func returned dtype torch\.float32 but y0 has dtype torch\.float64; return the dtype of y")(
    lambda tmp: ODESystem(lambda t, y: (-y).float(), ones(), grid()))
case("func-not-callable", "core", InputTypeError, r"func is a int, not callable; pass func\(t, y\)")(
    lambda tmp: ODESystem(3, ones(), grid()))
case("func-not-vmappable", "core", InputTypeError,
     r"calling func under torch\.func\.vmap failed.*\.item\(\).*batched_func=True")(
    lambda tmp: ODESystem(lambda t, y: -y * t.item(), ones(), grid()))
case("func-nan-mid-solve", "core", NonFiniteError,
     r"NaN or Inf appeared in the propagated states in iteration \d+ \(\d+ of 8 points accepted\); "
     r"check the system for blow-up or lower the step size \(pass throw=False")(
    lambda tmp: pitsolve.solve(ODESystem(
        lambda t, y: torch.where(t > 0.5, torch.full_like(y, float("nan")), -y), ones(), grid())))
case("func-raises-mid-solve", "core", ZeroDivisionError,
     r"user func failed.*pitsolve: raised in ODESystem\.propagate on intervals? \d+(\.\.\d+)? of N=8; "
     r"the solve was abandoned .*fix the cause and solve again",
     exact=True, after=fresh_solve_works)(
    lambda tmp: pitsolve.solve(ODESystem(FailAfter(12, ZeroDivisionError("user func failed")), ones(), grid()),
                               progress=True))
case("func-raises-sequential", "core", ZeroDivisionError,
     r"user func failed.*pitsolve: raised in ODESystem\.propagate on interval \d of N=8",
     exact=True, after=fresh_solve_works)(
    lambda tmp: pitsolve.sequential(ODESystem(FailAfter(12, ZeroDivisionError("user func failed")), ones(), grid()),
                                    progress=True))
case("propagate-wrong-shape", "core", InputValueError,
     r"Halving\.propagate returned shape \(8, 1\), expected \(8, 2\).*return the shape of its input")(
    lambda tmp: pitsolve.solve(Halving(out=lambda s: s[:, :1])))
case("propagate-wrong-dtype", "core", InputTypeError,
     r"Halving\.propagate returned dtype torch\.float32 but the state has dtype torch\.float64; "
     r"return the dtype of its input")(
    lambda tmp: pitsolve.solve(Halving(out=lambda s: (0.5 * s).float())))
case("propagate-in-place", "core", InputValueError,
     r"Halving\.propagate modified its input states in place.*return a new tensor instead of modifying the state "
     r"in place")(
    lambda tmp: pitsolve.solve(Halving(out=lambda s: s.mul_(0.5))))
case("func-in-place", "core", InputValueError,
     r"func modified its input y in place.*return a new tensor instead of modifying the state in place")(
    lambda tmp: pitsolve.solve(ODESystem(lambda t, y: y.mul_(2), ones(), grid(), batched_func=True)))
case("func-wrong-shape-later", "core", InputValueError,
     r"func returned shape \(\d+, 1\), expected \(\d+, 2\).*make it return the shape of its input")(
    lambda tmp: pitsolve.solve(ODESystem(ShapeAfter(3), ones(2), grid(), batched_func=True)))
case("error-ratio-wrong-shape", "core", InputValueError,
     r"BadRatio\.error_ratio returned shape \(8, 1, 1\), expected \(8,\) \(one measure per point of a batch of 8\); "
     r"return a 1-D tensor of length B")(
    lambda tmp: ratio_of(BadRatio()))
case("error-scale-wrong-shape", "core", InputValueError,
     r"BadScale\.error_scale returned shape \((\d+), 1\), which does not broadcast to the monitored states' shape "
     r"\(\d+, 2\); return shape \(\d+, 1\) \(one scale per point\)")(
    lambda tmp: pitsolve.solve(BadScale()))
case("system-steps-nonpositive", "core", InputValueError,
     r"NoSteps\.steps_per_interval=0 must be >= 1 \(the fine steps one Φ_n costs.*set it to a positive int")(
    lambda tmp: pitsolve.solve(NoSteps()))
case("not-a-system", "core", InputTypeError, r"system is a str; pass a pitsolve\.BandedSystem such as ODESystem")(
    lambda tmp: pitsolve.solve("abc"))
case("ode-method-unknown", "core", InputValueError,
     r"method='scipy_solver' is not a method pitsolve integrates per interval; choose a fixed-grid .*'rk4'.*"
     r"a multistep one \['explicit_adams'.* or an adaptive one \[.*'dopri5'.*'dopri8'")(
    lambda tmp: ODESystem(decay, ones(), grid(), method="scipy_solver"))
case("adams-max-order", "core", InputValueError,
     r"options\['max_order'\]=13 is outside 4\.\.12: .*pass 4 <= max_order <= 12, or method='rk4'")(
    lambda tmp: ODESystem(decay, ones(), grid(), method="explicit_adams", options=dict(max_order=13)))
case("adams-max-order-float", "core", InputTypeError,
     r"options\['max_order'\]=4\.0 is not an integer \(float\); pass an int")(
    lambda tmp: ODESystem(decay, ones(), grid(), method="implicit_adams", options=dict(max_order=4.0)))
case("adams-option-unknown", "core", InputValueError,
     r"options \['perturb'\] are not supported for the multistep method 'implicit_adams'; supported: "
     r"\['max_order', 'max_iters'\] \(the step: substeps=K")(
    lambda tmp: ODESystem(decay, ones(), grid(), method="implicit_adams", options=dict(perturb=True)))
case("adams-max-iters-zero", "core", InputValueError,
     r"options\['max_iters'\]=0 must be >= 1 \(the corrector's iterations per step\)")(
    lambda tmp: ODESystem(decay, ones(), grid(), method="implicit_adams", options=dict(max_iters=0)))
case("substeps-zero", "core", InputValueError, r"substeps=0 must be >= 1")(
    lambda tmp: ODESystem(decay, ones(), grid(), substeps=0))
case("tolerances-zero", "core", InputValueError,
     r"atol=0\.0, rtol=0\.0: both are 0; make at least one of them positive")(
    lambda tmp: ODESystem(decay, ones(), grid(), atol=0.0, rtol=0.0))
case("sdeint-dt-not-dividing", "core", InputValueError,
     r"dt=0\.03 does not divide every interval of ts.*pass a dt that does, or substeps=K")(
    lambda tmp: pitsolve.sdeint(OU(), ones(2, 3), grid(), dt=0.03))

# ===================================================================== core: solve options
case("jacobian-unknown", "core", InputValueError,
     r"unknown jacobian 'newtown'; choose one of \[.*'newton'.*\] or pass a pitsolve\.jacobians\.JacobianStrategy")(
    lambda tmp: pitsolve.solve(good_system(), "newtown"))
case("jacobian-abstract-class", "core", InputTypeError,
     r"jacobian is the abstract class JacobianStrategy \(it does not implement update\); pass a name from \[.*\], "
     r"a concrete strategy such as pitsolve\.jacobians\.Identity\(\)")(
    lambda tmp: pitsolve.solve(good_system(), jacobian=pitsolve.jacobians.JacobianStrategy))
case("init-unknown", "core", InputValueError,
     r"unknown init 'zeros'; choose one of \['coarse', 'constant'\], pass a trajectory tensor")(
    lambda tmp: pitsolve.solve(good_system(), init="zeros"))
case("parareal-no-coarse", "core", InputTypeError,
     r"Halving defines no coarse propagator; pass one as Parareal\(coarse=lambda states, indices: \.\.\.\) "
     r"or choose another jacobian")(
    lambda tmp: pitsolve.solve(Halving(), "parareal"))
case("window-zero", "core", InputValueError, r"window=0 must be >= 1")(
    lambda tmp: pitsolve.solve(good_system(), window=0))
case("window-larger-than-n", "core", InputValueError,
     r"window=9 is larger than the number of intervals N=8; pass window <= N or None")(
    lambda tmp: pitsolve.solve(good_system(), window=N + 1))
case("window-bool", "core", InputTypeError, r"window=True is not an integer; pass an int >= 1")(
    lambda tmp: pitsolve.solve(good_system(), window=True))
case("window-float", "core", InputTypeError, r"window=2\.0 is not an integer \(float\); pass an int >= 1")(
    lambda tmp: pitsolve.solve(good_system(), window=2.0))
case("tol-negative", "core", InputValueError, r"tol=-0\.001 must be a finite number >= 0 \(e\.g\. 1e-6\)")(
    lambda tmp: pitsolve.solve(good_system(), tol=-1e-3))
case("tol-nan", "core", InputValueError, r"tol=nan must be a finite number >= 0 \(e\.g\. 1e-6\)")(
    lambda tmp: pitsolve.solve(good_system(), tol=float("nan")))
case("identity-rest-unknown", "core", InputValueError,
     r"rest='zero' must be 'phi' \(A_n = 0 off the monitored part\) or 'identity'")(
    lambda tmp: pitsolve.jacobians.Identity(rest="zero"))
case("secant-history-negative", "core", InputValueError, r"history=-1 must be an int >= 0 \(0: the base alone\)")(
    lambda tmp: pitsolve.jacobians.Secant(history=-1))
case("secant-base-unknown", "core", InputValueError, r"base='ones' is not one of \('identity', 'zero'\)")(
    lambda tmp: pitsolve.jacobians.Secant(base="ones"))
case("anderson-regularization", "core", InputTypeError,
     r"regularization='x' is not a number \(str\); pass a finite float >= 0, e\.g\. 1e-8")(
    lambda tmp: pitsolve.jacobians.Anderson(regularization="x"))
case("secant-regularization", "core", InputTypeError,
     r"regularization='x' is not a number \(str\); pass a finite float >= 0, e\.g\. 1e-6")(
    lambda tmp: pitsolve.jacobians.Secant(regularization="x"))
case("solve-stopping-unknown", "core", InputValueError,
     r"stopping='change' is not an acceptance rule; pass 'error' .* or 'eq14'")(
    lambda tmp: pitsolve.solve(good_system(), stopping="change"))
case("guard-depth-factor", "core", InputValueError,
     r"Guard\(depth_factor=0\.5\) must be a finite number >= 1")(
    lambda tmp: pitsolve.Guard(depth_factor=0.5))
case("phi-not-deterministic", "core", InputValueError,
     r"propagate is not deterministic: interval 0 evaluated twice at the same state")(
    lambda tmp: pitsolve.solve(NoisyMap(), "identity", tol=1e-6))
case("diagonal-seed-range", "core", InputValueError,
     r"seed=1180591620717411303424 is outside \[0, 2\*\*63 - 1\]; pass a seed in that range, e\.g\. seed=0")(
    lambda tmp: pitsolve.jacobians.Diagonal(seed=2**70))
case("parareal-cost-negative", "core", InputValueError,
     r"cost=-5 must be an int >= 0 \(the fine steps one coarse call costs\), or None")(
    lambda tmp: pitsolve.jacobians.Parareal(cost=-5))
case("max-iters-zero", "core", InputValueError, r"max_iters=0 must be >= 1")(
    lambda tmp: pitsolve.solve(good_system(), max_iters=0))
case("max-iters-too-small", "core", ConvergenceError,
     r"stopped after max_iters=2 iterations with \d of 8 points accepted; raise max_iters \(at most N=8.*loosen tol")(
    lambda tmp: pitsolve.solve(good_system(), tol=1e-12, max_iters=2))
case("init-wrong-length", "core", InputValueError,
     r"init trajectory does not fit the system \(.*shape \(6, 3\), expected \(9, 3\).*\); pass N\+1=9 states")(
    lambda tmp: pitsolve.solve(good_system(), init=torch.zeros(N - 2, 3, dtype=F64)))
case("init-int-dtype", "core", InputTypeError,
     r"init trajectory has dtype torch\.int64; pass a floating-point warm start "
     r".*e\.g\. init=ys\.to\(torch\.float64\)")(
    lambda tmp: pitsolve.solve(good_system(), init=torch.zeros(N + 1, 3, dtype=torch.int64)))
case("init-meta", "core", InputTypeError,
     r"init trajectory lies on the meta device, which holds no values; pass it on the state's device, "
     r"e\.g\. init=ys\.to\('cpu'\)")(
    lambda tmp: pitsolve.solve(good_system(), init=torch.zeros(N + 1, 3, dtype=F64, device="meta")))
case("devices-unavailable", "core", InputValueError,
     r"device cuda:99 is not available \(this process sees \d+ CUDA device\(s\)\); pass devices from .*devices=None")(
    lambda tmp: pitsolve.solve(good_system(), devices=["cuda:99"]))
case("devices-meta", "core", InputValueError,
     r"device meta in devices=\['cpu', 'meta'\] holds no values.*pass real devices such as 'cpu' or 'cuda:0', "
     r"or devices=None")(
    lambda tmp: pitsolve.solve(good_system(), devices=["cpu", "meta"]))
case("callback-not-callable", "core", InputTypeError, r"callback=3 is not callable; pass a function of one Iteration")(
    lambda tmp: pitsolve.solve(good_system(), callback=3))


# ===================================================================== core: the parallel adjoint
def adjoint(**kwargs):
    W = torch.ones(3, 3, dtype=F64, requires_grad=True)
    options = dict(method="rk4", adjoint_params=(W,))
    options.update(kwargs)
    return pitsolve.odeint_adjoint(lambda t, y: -y @ W, ones(), options.pop("t", grid()), **options)


case("adjoint-params-not-tensors", "core", InputTypeError,
     r"adjoint_params\[1\] is a int, not a torch\.Tensor; pass only the tensors func uses, "
     r"e\.g\. adjoint_params=tuple\(model\.parameters\(\)\)")(
    lambda tmp: adjoint(adjoint_params=(torch.ones(3, dtype=F64, requires_grad=True), 3)))
case("adjoint-params-a-tensor", "core", InputTypeError,
     r"adjoint_params is a Tensor; pass a tuple or list of tensors, e\.g\. adjoint_params=\(W,\)")(
    lambda tmp: adjoint(adjoint_params=torch.ones(3, dtype=F64, requires_grad=True)))
case("adjoint-func-not-module", "core", InputTypeError,
     r"func is a function, not an nn\.Module, so its parameters are unknown; pass adjoint_params=\(tensor, \.\.\.\)")(
    lambda tmp: adjoint(adjoint_params=None))
case("adjoint-t-requires-grad", "core", InputValueError,
     r"t requires grad, but the parallel adjoint gives gradients for y0 and adjoint_params only; pass t\.detach\(\)")(
    lambda tmp: adjoint(t=grid().requires_grad_(True)))
case("adjoint-window-larger-than-n", "core", InputValueError,
     r"adjoint_window=99 is larger than N=8 intervals; pass at most N or None")(
    lambda tmp: adjoint(adjoint_window=99))

case("solve-options-unknown-keyword", "core", InputTypeError,
     r"odeint\(\) got unknown keyword arguments \['windwo'\]; its solve options are \[.*'window'.*\] "
     r"\(pitsolve\.SolveOptions' fields\); check the spelling")(
    lambda tmp: pitsolve.odeint(decay, ones(), grid(), windwo=4))
case("solve-options-not-options", "core", InputTypeError,
     r"solve_options is a dict; pass a pitsolve\.SolveOptions\(\.\.\.\) or None")(
    lambda tmp: pitsolve.odeint(decay, ones(), grid(), solve_options=dict(window=4)))
case("solve-options-twice", "core", InputValueError,
     r"\['window'\] given both as keywords and in solve_options; give each option once")(
    lambda tmp: pitsolve.odeint(decay, ones(), grid(), solve_options=pitsolve.SolveOptions(window=4), window=2))
case("adjoint-solve-option-refused", "core", InputValueError,
     r"odeint_adjoint\(\) does not take trajectory=False: the backward pass needs every point X_0 … X_N; "
     r"drop trajectory")(
    lambda tmp: adjoint(trajectory=False))


def sde_call(**kwargs):
    options = dict(dt=0.0625)
    options.update(kwargs)
    return pitsolve.sdeint(options.pop("sde", OU()), ones(2, 3), grid(), **options)


def strat():
    sde = OU()
    sde.sde_type = "stratonovich"
    return sde


case("sdeint-dt-min", "core", InputValueError,
     r"dt_min=1e-05 bounds the steps of adaptive stepping, which pitsolve does not do: every step is dt.*drop dt_min")(
    lambda tmp: sde_call(dt_min=1e-5))
case("sdeint-extra-not-bool", "core", InputTypeError, r"extra=1 must be True or False")(
    lambda tmp: sde_call(extra=1))
case("sdeint-adjoint-not-bool", "core", InputTypeError, r"adjoint='yes' must be True or False")(
    lambda tmp: sde_call(adjoint="yes"))
case("sde-options-not-dict", "core", InputTypeError,
     r"options=\['grad_free'\] is not a dict; pass e\.g\. options=dict\(grad_free=True\) or None")(
    lambda tmp: sde_call(options=["grad_free"]))
case("sde-options-unknown", "core", InputValueError,
     r"options \['trapezoidal'\] are not torchsde method options pitsolve knows; the one torchsde defines is "
     r"'grad_free'.*Drop the others")(
    lambda tmp: sde_call(options=dict(trapezoidal=True)))
case("sde-options-method", "core", InputValueError,
     r"options\['grad_free'\] applies to method='milstein' only, not method='euler'; drop it or pass "
     r"method='milstein'")(
    lambda tmp: sde_call(options=dict(grad_free=True)))
case("sde-options-value", "core", InputTypeError, r"options\['grad_free'\]=1 must be True or False")(
    lambda tmp: sde_call(method="milstein", options=dict(grad_free=1)))
case("sde-extra-state-type", "core", InputTypeError,
     r"extra_solver_state is a Tensor; pass the tuple that sdeint\(\.\.\., extra=True\) returned")(
    lambda tmp: sde_call(extra_solver_state=torch.zeros(3)))
case("sde-extra-state-not-empty", "core", InputValueError,
     r"extra_solver_state has 1 entries, but method='euler' carries no state from step to step.*pass \(\) or None")(
    lambda tmp: sde_call(extra_solver_state=(torch.zeros(3),)))
case("sde-extra-state-entries", "core", InputValueError,
     r"extra_solver_state has 2 entries; reversible_heun's is the tuple \(f, g, z\)")(
    lambda tmp: sde_call(sde=strat(), method="reversible_heun", extra_solver_state=(ones(2, 3), ones(2, 3))))
case("sde-extra-state-z", "core", InputValueError,
     r"extra_solver_state's z has shape \(2, 2\), dtype torch\.float64 on cpu; reversible_heun needs shape \(2, 3\)")(
    lambda tmp: sde_call(sde=strat(), method="reversible_heun",
                         extra_solver_state=(ones(2, 3), ones(2, 3), ones(2, 2))))
case("sde-extra-state-inconsistent", "core", InputValueError,
     r"extra_solver_state's \(f, g\) differ from sde\.f_and_g\(ts\[0\], z\) by .*\(relative\); pitsolve recomputes "
     r"f and g from z.*sdeint\(\.\.\., extra=True\)")(
    lambda tmp: sde_call(sde=strat(), method="reversible_heun",
                         extra_solver_state=(ones(2, 3), ones(2, 3), ones(2, 3))))
case("sde-adjoint-torchsde-options", "core", InputValueError,
     r"adjoint_method='euler': these set torchsde's solver of the continuous adjoint SDE.*adjoint_jacobian, "
     r"adjoint_window and adjoint_tol")(
    lambda tmp: pitsolve.sdeint_adjoint(OU(), ones(2, 3), grid(), dt=0.0625, adjoint_method="euler"))
case("sde-adjoint-not-module", "core", InputTypeError,
     r"sde is a OU, not an nn\.Module, so its parameters are unknown; pass adjoint_params=\(tensor, \.\.\.\) with the "
     r"tensors sde uses")(
    lambda tmp: pitsolve.sdeint_adjoint(OU(), ones(2, 3), grid(), dt=0.0625))
case("sde-adjoint-ts-requires-grad", "core", InputValueError,
     r"ts requires grad, but the parallel adjoint gives gradients for y0 and adjoint_params only; pass ts\.detach\(\)")(
    lambda tmp: pitsolve.sdeint_adjoint(OU(), ones(2, 3), grid().requires_grad_(True), dt=0.0625, adjoint_params=()))

# ===================================================================== diffusion adapter
def nan_model(x, t, **kwargs):
    return torch.full_like(x, float("nan"))


def failing_model():
    inner, calls = gmm(), [0]

    def model(x, t):
        calls[0] += 1
        if calls[0] > 3:
            raise KeyError("user model failed")
        return inner(x, t)

    return model


case("latents-shape-vs-unet", "adapter", InputValueError,
     r"latents has shape \(1, 4, 8, 8\) but the UNet takes \[batch, 1, H, W\] \(in_channels=1\); "
     r"pass latents or shape")(
    lambda tmp: sample(tiny_unet(dtype=torch.float32), latents=torch.randn(1, 4, 8, 8)))
case("unet-size-not-multiple", "adapter", InputValueError,
     r"shape has shape \(1, 1, 10, 10\) but the UNet's 3 down blocks take H and W that are multiples of 4 "
     r"\(2\*\*2\); pass e\.g\. \(1, 1, 8, 8\) or \(1, 1, 12, 12\)")(
    lambda tmp: sample(deep_unet(), shape=(1, 1, 10, 10)))
case("class-labels-unconditional", "adapter", InputValueError,
     r"class_labels were given but the UNet has no class embedding \(num_class_embeds=None, class_embed_type=None\)"
     r".*drop class_labels or use a class-conditional UNet")(
    lambda tmp: sample(tiny_unet(dtype=torch.float32), shape=(1, 1, 8, 8), class_labels=torch.tensor([3])))
case("encoder-states-unconditional", "adapter", InputValueError,
     r"encoder_hidden_states were given but the UNet \(UNet2DModel\) has no cross-attention.*"
     r"drop encoder_hidden_states \(and guidance_scale\), or use a UNet2DConditionModel")(
    lambda tmp: sample(tiny_unet(dtype=torch.float32), shape=(1, 1, 8, 8),
                       encoder_hidden_states=torch.randn(1, 3, 16)))
case("latents-int-dtype", "adapter", InputTypeError,
     r"latents have dtype torch\.int64; pass floating-point latents")(
    lambda tmp: sample(latents=torch.zeros(SHAPE, dtype=torch.int64)))
case("latents-nan", "adapter", InputValueError, r"latents contain NaN or Inf; pass finite initial noise")(
    lambda tmp: sample(latents=torch.full(SHAPE, float("nan"))))
case("latents-device", "adapter", InputTypeError,
     r"latents lie on meta but the unet on cpu; move them there, e\.g\. latents\.to\('cpu'\)")(
    lambda tmp: sample(tiny_unet(dtype=torch.float32), latents=torch.zeros(1, 1, 8, 8, device="meta")))
case("unet-meta", "adapter", InputTypeError,
     r"the unet lies on the meta device \(its weights are not loaded\); .*e\.g\. unet\.to\('cpu'\)")(
    lambda tmp: sample(tiny_unet(dtype=torch.float32).to("meta"), shape=(1, 1, 8, 8)))
case("generator-type", "adapter", InputTypeError,
     r"generator is a int; pass a torch\.Generator .*generator=torch\.Generator\(\)\.manual_seed\(0\)")(
    lambda tmp: sample(scheduler=DDPMScheduler(), generator=0))
case("generator-not-cpu", "adapter", InputTypeError,
     r"generator lies on cuda:0; pitsolve draws all noise on the CPU.*pass a CPU generator, "
     r"e\.g\. generator=torch\.Generator\(\)\.manual_seed\(0\)")(
    lambda tmp: sample(scheduler=DDPMScheduler(), generator=CudaGenerator()))
case("option-unknown", "adapter", InputTypeError,
     r"parallel_sample got an unexpected option 'windw'; its options are: latents, generator")(
    lambda tmp: sample(windw=2))
case("option-twice", "adapter", InputTypeError,
     r"parallel_sample got window= and a SolveOptions object; pass window in the object or flat, not both")(
    lambda tmp: sample(options=SolveOptions(), window=2))
case("option-group-type", "adapter", InputTypeError, r"options is a dict; pass a SolveOptions\(\.\.\.\) or None")(
    lambda tmp: sample(options={"window": 2}))
case("pipeline-sets-shape", "adapter", InputTypeError,
     r"the pipeline sets shape itself; pass batch_size, height and width instead")(
    lambda tmp: ParallelDiffusionPipeline(unet=tiny_unet(), scheduler=DDIMScheduler())(
        num_inference_steps=2, shape=(1, 1, 8, 8), output_type="latent"))
case("auto-window-bad", "core", InputValueError, r"AutoWindow\(latency=-1\); pass a finite number >= 0, e\.g\. latency=4")(
    lambda tmp: pitsolve.AutoWindow(latency=-1))
case("steps-zero", "adapter", InputValueError, r"num_inference_steps must be an int >= 1, got 0")(
    lambda tmp: sample(num_inference_steps=0))
case("steps-above-training", "adapter", InputValueError,
     r"num_inference_steps=200 is larger than the scheduler's num_train_timesteps=100; "
     r"pass num_inference_steps <= 100")(
    lambda tmp: sample(scheduler=DDPMScheduler(num_train_timesteps=100), num_inference_steps=200))
case("intervals-above-steps", "adapter", InputValueError,
     r"intervals=9 is outside 1\.\.8 \(the number of sampling steps\); pass N between 1 \(sequential\) and 8")(
    lambda tmp: sample(intervals=T + 1))
case("window-above-intervals", "adapter", InputValueError,
     r"window=6 is larger than the number of intervals N=4; pass window <= N or None")(
    lambda tmp: sample(intervals=4, window=6))
case("scale-floor-nonpositive", "adapter", InputValueError,
     r"scale_floor=0 must be a finite number > 0 \(e\.g\. 1\.0, the data scale\) or None")(
    lambda tmp: sample(scale_floor=0))
case("preconditioning-above-steps", "adapter", InputValueError,
     r"preconditioning_steps=9 is larger than the number of sampling steps T=8; pass 0 <= preconditioning_steps <= 8")(
    lambda tmp: sample(preconditioning_steps=T + 1))
case("scheduler-unsupported", "adapter", InputValueError,
     r"DPMSolverSDEScheduler cannot be served by the generic bridge: its state attribute 'noise_sampler' .*"
     r"nearest deterministic choices are EulerDiscreteScheduler")(
    lambda tmp: sample(scheduler=DPMSolverSDEScheduler()))
case("scheduler-not-a-scheduler", "adapter", InputTypeError,
     r"rule_from_scheduler needs a Diffusers scheduler \(a diffusers.SchedulerMixin\), got str; pass one")(
    lambda tmp: sample(scheduler="ddim"))
case("eta-not-ddim", "adapter", InputValueError,
     r"eta=0\.5 applies to DDIM only .*; DDPMScheduler takes eta=0")(
    lambda tmp: sample(scheduler=DDPMScheduler(), eta=0.5))
case("guidance-without-embeddings", "adapter", InputValueError,
     r"guidance_scale=3\.0 needs encoder_hidden_states \(the prompt embeddings\); pass them")(
    lambda tmp: sample(guidance_scale=3.0))
case("model-wrong-shape", "adapter", InputValueError,
     r"the model returned \(2, 1, 8, 4\) for input \(2, 1, 8, 8\); it must return the input's shape")(
    lambda tmp: sample(lambda x, t: x[..., :4]))
case("model-nan", "adapter", NonFiniteError,
     r"NaN or Inf appeared in the propagated states in iteration \d+.*check the system for blow-up")(
    lambda tmp: sample(nan_model, DDPMScheduler()))
case("model-raises-mid-solve", "adapter", KeyError,
     r"user model failed.*pitsolve: raised in DiffusionSystem\.propagate on intervals? \d+(\.\.\d+)? of N=8; "
     r"the solve was abandoned",
     exact=True, after=fresh_sample_works)(
    lambda tmp: sample(failing_model(), progress=True))


# ===================================================================== command line
def broken_model_folder(tmp: Path) -> Path:
    folder = tmp / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


def a_file(tmp: Path) -> Path:
    path = tmp / "a_file.txt"
    path.write_text("not a folder")
    return path


case("cli-unknown-model", "CLI", CliExit,
     r"pitsolve sample: error: --model /nonexistent/model: no Diffusers pipeline \(model_index\.json\) or UNet "
     r"\(config\.json\) there; pass a folder written by save_pretrained")(
    lambda tmp: cli("sample", "--model", "/nonexistent/model", "--output", tmp / "out"))
case("cli-broken-model", "CLI", CliExit,
     r"--model .*broken: the folder could not be loaded \(OSError: .*\); pass a DDPMPipeline or UNet2DModel folder")(
    lambda tmp: cli("sample", "--model", broken_model_folder(tmp), "--output", tmp / "out"))
case("cli-unknown-scheduler", "CLI", CliExit,
     r"pitsolve sample: error: argument --scheduler: invalid choice: 'eulr' \(choose from .*'ddim'.*\) "
     r"\(see pitsolve sample -h\)")(
    lambda tmp: cli("sample", "--scheduler", "eulr"))
case("cli-unknown-jacobian", "CLI", CliExit,
     r"argument --jacobian: invalid choice: 'newtown' \(choose from .*'newton'.*\) \(see pitsolve sample -h\)")(
    lambda tmp: cli("sample", "--jacobian", "newtown"))
case("cli-unknown-option", "CLI", CliExit, r"pitsolve: error: unrecognized arguments: --bogus \(see pitsolve -h\)")(
    lambda tmp: cli("solve", "--bogus"))
case("cli-steps-not-int", "CLI", CliExit, r"argument --steps: invalid int value: 'abc' \(see pitsolve sample -h\)")(
    lambda tmp: cli("sample", "--steps", "abc"))
case("cli-steps-zero", "CLI", CliExit, r"pitsolve sample: error: --steps=0 must be >= 1")(
    lambda tmp: cli("sample", "--steps", "0"))
case("cli-intervals-above-steps", "CLI", CliExit, r"--intervals=9 is larger than --steps=4; pass 1 <= N <= 4")(
    lambda tmp: cli("sample", "--steps", "4", "--intervals", "9", "--output", tmp / "out"))
case("cli-window-negative", "CLI", CliExit, r"--window=-2 must be >= 0 \(0 = all N\)")(
    lambda tmp: cli("sample", "--window", "-2"))
case("cli-tol-nan", "CLI", CliExit, r"--tol=nan must be a finite number >= 0, e\.g\. --tol 1e-3")(
    lambda tmp: cli("sample", "--tol", "nan"))
case("cli-scale-floor-negative", "CLI", CliExit, r"--scale-floor=-1\.0 must be a finite number > 0, e\.g\. 1")(
    lambda tmp: cli("sample", "--scale-floor", "-1"))
case("cli-seed-too-large", "CLI", CliExit,
     r"pitsolve sample: error: --seed=18446744073709551616 is outside 0\.\.18446744073709551615 \(2\*\*64 - 1\), "
     r"the seeds a torch\.Generator takes; pass a seed in that range, e\.g\. --seed 0")(
    lambda tmp: cli("sample", "--seed", str(2**64)))
case("cli-device-unavailable", "CLI", CliExit, r"--device cuda:99: .*; use cpu or an available cuda:K")(
    lambda tmp: cli("sample", "--device", "cuda:99"))
case("cli-device-meta", "CLI", CliExit, r"--device meta: the meta device holds no values; use cpu or cuda:K")(
    lambda tmp: cli("sample", "--device", "meta"))
case("cli-output-is-file", "CLI", CliExit,
     r"--output .*a_file\.txt: a file is in the way; pass a folder to write the results to")(
    lambda tmp: cli("sample", "--output", a_file(tmp)))
case("cli-output-unwritable", "CLI", CliExit,
     r"--output .*a_file\.txt/out: .*a_file\.txt is a file, so the folder cannot be created; pass another folder")(
    lambda tmp: cli("sample", "--output", a_file(tmp) / "out"))
case("cli-solve-output-unwritable", "CLI", CliExit,
     r"pitsolve solve: error: --output .*a_file\.txt/x: .*is a file, so the folder cannot be created")(
    lambda tmp: cli("solve", "--output", a_file(tmp) / "x"))
case("cli-solve-t-end", "CLI", CliExit,
     r"pitsolve solve: error: --t-end=0\.0 equals --t0=0\.0: an empty time span; "
     r"pass another --t-end, e\.g\. --t-end 2")(
    lambda tmp: cli("solve", "--t-end", "0", "--output", tmp / "out"))
case("cli-solve-window", "CLI", CliExit, r"--window=-1 must be >= 0 \(0 = all N\), or 'auto'")(
    lambda tmp: cli("solve", "--window", "-1", "--intervals", "4", "--output", tmp / "out"))


def user_ode(tmp: Path, name: str = "ode.py", body: str = "") -> Path:
    """A file with the user's ODE ``f`` (a 2×2 linear system), a float ``RATE`` and whatever ``body`` adds."""
    path = tmp / name
    path.write_text("import torch\nRATE = 0.5\nA = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=torch.float64)\n"
                    "def f(t, y):\n    return A @ y\n" + body)
    return path


def solve_func(tmp: Path, func: str, *extra):
    """``pitsolve solve --func func`` on tiny settings, writing below ``tmp``."""
    return cli("solve", "--func", func, "--intervals", "2", "--repeats", "1", "--jacobian", "identity",
               "--output", tmp / "out", *extra)


case("cli-func-format", "CLI", CliExit,
     r"--func 'mymodel': expected MODULE:FUNCTION or path/to/file\.py:FUNCTION, e\.g\. --func mymodel:f")(
    lambda tmp: solve_func(tmp, "mymodel", "--y0", "1,0"))
case("cli-func-no-module", "CLI", CliExit,
     r"--func no_such_module_xyz:f: no module named 'no_such_module_xyz' on the Python path or in the current "
     r"folder .*; pass an importable module, or a file as --func path/to/no_such_module_xyz\.py:f")(
    lambda tmp: solve_func(tmp, "no_such_module_xyz:f", "--y0", "1,0"))
case("cli-func-no-file", "CLI", CliExit,
     r"--func .*missing\.py:f: there is no file .*missing\.py; pass an existing Python file")(
    lambda tmp: solve_func(tmp, f"{tmp / 'missing.py'}:f", "--y0", "1,0"))
case("cli-func-import-fails", "CLI", CliExit,
     r"--func .*broken\.py:f: importing .*broken\.py raised ZeroDivisionError: division by zero; fix that module")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp, 'broken.py', '1 / 0')}:f", "--y0", "1,0"))
case("cli-func-no-function", "CLI", CliExit,
     r"--func .*ode\.py:g: module '.*ode\.py' has no attribute 'g'; pass one of its functions \(f\)")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:g", "--y0", "1,0"))
case("cli-func-not-callable", "CLI", CliExit,
     r"--func .*ode\.py:RATE: RATE in .*ode\.py is a float, not callable; pass a function f\(t, y\)")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:RATE", "--y0", "1,0"))
case("cli-func-without-y0", "CLI", CliExit, r"--func .*ode\.py:f needs --y0, its initial state; pass e\.g\. --y0 1,0")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:f"))
case("cli-func-and-example", "CLI", CliExit,
     r"argument --func: not allowed with argument --example \(see pitsolve solve -h\)")(
    lambda tmp: cli("solve", "--example", "vanderpol", "--func", "m:f"))
case("cli-func-raises", "CLI", CliExit,
     r"--func .*: f\(t0, y0\) with y0 of shape \(3,\) raised RuntimeError: .*; f must take \(t, y\) with y shaped "
     r"like --y0, as for torchdiffeq\.odeint, so pass a --y0 of the shape f expects or fix f")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:f", "--y0", "1,0,0"))
case("cli-func-wrong-shape", "CLI", CliExit,
     r"--func .*: f\(t, y\) returned shape \(1,\) for --y0 of shape \(2,\); pass a --y0 of the shape f works on, "
     r"or make f return dy/dt shaped like y")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp, body='def g(t, y):  return y[:1]')}:g", "--y0", "1,0"))
case("cli-func-not-a-tensor", "CLI", CliExit,
     r"--func .*: f\(t, y\) returned a list, not a tensor; return dy/dt as a tensor shaped like y")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp, body='def g(t, y):  return [y]')}:g", "--y0", "1,0"))
case("cli-y0-not-a-number", "CLI", CliExit,
     r"--y0 '1,a': 'a' is not a number; pass comma-separated numbers, e\.g\. --y0 2,0, or a \.pt/\.pth/\.npy file")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:f", "--y0", "1,a"))
case("cli-y0-no-file", "CLI", CliExit,
     r"--y0 .*missing\.pt: there is no such file; pass an existing \.pt/\.pth/\.npy file or comma-separated numbers")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:f", "--y0", tmp / "missing.pt"))


def dict_file(tmp: Path) -> Path:
    path = tmp / "state.pt"
    torch.save({"y0": torch.ones(2)}, path)
    return path


case("cli-y0-not-a-tensor", "CLI", CliExit,
     r"--y0 .*state\.pt: the file holds a dict, not a tensor; save the initial state itself, e\.g\. torch\.save")(
    lambda tmp: solve_func(tmp, f"{user_ode(tmp)}:f", "--y0", dict_file(tmp)))
case("cli-method-unknown", "CLI", CliExit,
     r"argument --method: invalid choice: 'rk5' \(choose from .*'rk4'.*'dopri5'.*\) \(see pitsolve solve -h\)")(
    lambda tmp: cli("solve", "--method", "rk5"))
case("cli-substeps-adaptive", "CLI", CliExit,
     r"--substeps=3 with --method dopri5: an adaptive method chooses its own steps; leave --substeps out")(
    lambda tmp: cli("solve", "--method", "dopri5", "--substeps", "3", "--output", tmp / "out"))


# ----------------------------------------------------------------------------- the table
ROW = re.compile(r"^\|\s*`(?P<id>[a-z0-9-]+)`\s*\|\s*(?P<where>[^|]+?)\s*\|[^|]*\|\s*(?P<raises>[^|]+?)\s*\|")


def table_rows() -> Dict[str, Dict[str, str]]:
    rows: Dict[str, Dict[str, str]] = {}
    for line in TABLE.read_text().splitlines():
        m = ROW.match(line)
        if m:
            assert m["id"] not in rows, f"row {m['id']} appears twice in {TABLE.name}"
            rows[m["id"]] = {"where": m["where"], "raises": m["raises"]}
    return rows


def test_table_and_cases_agree():
    rows = table_rows()
    assert len(rows) >= 25
    assert set(rows) - set(CASES) == set(), "rows of docs/errors.md without a test case"
    assert set(CASES) - set(rows) == set(), "test cases without a row in docs/errors.md"
    for row, c in CASES.items():
        assert rows[row]["where"] == c.where, row
        label = "exit 2" if c.kind is CliExit else c.kind.__name__
        assert label in rows[row]["raises"], f"{row}: the table says {rows[row]['raises']!r}, the case {label}"


# ----------------------------------------------------------------------------- the cases
@pytest.fixture(autouse=True)
def deadline_and_clean_process():
    """Fail a test that runs past DEADLINE_S (instead of hanging), and check it left the process usable."""
    def expired(signum, frame):
        raise TimeoutError(f"no answer within {DEADLINE_S} s")

    grad, dtype, bars = torch.is_grad_enabled(), torch.get_default_dtype(), len(std_tqdm._instances)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert torch.is_grad_enabled() == grad, "grad mode changed"
    assert torch.get_default_dtype() == dtype, "default dtype changed"
    assert len(std_tqdm._instances) == bars, "a progress bar was left open"


@pytest.mark.parametrize("row", list(CASES))
def test_row(row, tmp_path):
    c = CASES[row]
    with pytest.raises(BaseException) as info:
        c.run(tmp_path)
    err = info.value
    assert not isinstance(err, TimeoutError), f"{row} hung"
    if c.exact:
        assert type(err) is c.kind, f"{row}: {type(err).__name__} instead of the user's {c.kind.__name__}"
    else:
        assert isinstance(err, c.kind), f"{row}: {type(err).__name__}: {err}"
    if c.kind is CliExit:
        assert err.code == 2, f"{row}: exit status {err.code}"
        assert len(err.lines) == 1 and "Traceback" not in str(err), f"{row}: not one line: {err.lines}"
    elif not c.exact:
        assert isinstance(err, PitsolveError)
        builtin = {InputValueError: ValueError, InputTypeError: TypeError, ConvergenceError: RuntimeError,
                   NonFiniteError: FloatingPointError}[c.kind]
        assert isinstance(err, builtin)
    text = "\n".join([str(err), *getattr(err, "__notes__", ())])
    assert re.search(c.match, text, re.DOTALL), f"{row}: {text!r} does not match {c.match!r}"
    if c.after is not None:
        c.after()
