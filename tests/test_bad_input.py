"""Input to the core: bad input gives a typed error that names the value and the fix, never a hang or a
wrong answer; valid input in every accepted form is accepted.

Every error pitsolve raises for user input is a :class:`pitsolve.PitsolveError`
and also the built-in type a caller would catch (``ValueError``, ``TypeError``,
``RuntimeError``).  Each test below checks the library's subclass *and* that
the message names the offending value (and, where there is one, the fix).

Accepted forms: numpy scalars and 0-dim tensors where a count, seed or tolerance is asked for; an
SDE whose ``f``/``g`` call ``float(t)`` (``t`` is a 0-dim tensor, as in torchsde).  Also the public
checks the solve loop reads — :meth:`BandedSystem.checked_error_ratio`,
:meth:`BandedSystem.checked_costs`, :func:`pitsolve.extend.check_tolerance` — directly, and the
per-call checks of ``func``/``sde`` (shape on every call, no in-place change of the state).
The Diffusers bridge has its own file, tests/test_diffusion_bad_input.py.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torchsde

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
    Status,
)
from pitsolve.extend import check_positive_int, check_tolerance
from pitsolve.initializers import Coarse
from pitsolve.jacobians import Anderson, Dense, Diagonal, Parareal

F64 = torch.float64
N = 8


def decay(t, y):
    return -y


def grid(n=N, t1=1.0):
    return torch.linspace(0.0, t1, n + 1, dtype=F64)


def y0(*shape):
    return torch.ones(shape or (3,), dtype=F64)


def good_system():
    return ODESystem(decay, y0(), grid())


def check_kind(err: BaseException, kind: type) -> None:
    """The library's own subclass, which is also the matching built-in type."""
    assert isinstance(err, PitsolveError)
    builtin = {InputValueError: ValueError, InputTypeError: TypeError}.get(kind)
    if builtin is not None:
        assert isinstance(err, builtin)


class OU:
    """A tiny diagonal-noise Itô SDE as torchsde expects it."""

    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return 0.3 * torch.ones_like(y)


class Linear(BandedSystem):
    """A custom system without a coarse propagator: Φ_n(x) = x / 2."""

    def __init__(self, D=2, n=4, out=None):
        self.D, self.n, self.out = D, n, out

    @property
    def initial_state(self):
        return torch.ones(self.D, dtype=F64)

    @property
    def num_intervals(self):
        return self.n

    def propagate(self, states, indices):
        return 0.5 * states if self.out is None else self.out(states)


class Halving(BandedSystem):
    def __init__(self, D=2, ratio=None, steps=1, coarse=1):
        self.D, self.ratio, self.steps_per_interval, self.coarse_steps = D, ratio, steps, coarse

    @property
    def initial_state(self):
        return torch.ones(self.D, dtype=F64)

    @property
    def num_intervals(self):
        return N

    def propagate(self, states, indices):
        return 0.5 * states

    def error_ratio(self, new, old, indices):
        return super().error_ratio(new, old, indices) if self.ratio is None else self.ratio(new, old)


def ratio(system, new=None, old=None):
    new = torch.ones(N, system.D, dtype=F64) if new is None else new
    old = 0.5 * torch.ones_like(new) if old is None else old
    return system.checked_error_ratio(new, old, torch.arange(1, N + 1))


# --------------------------------------------------------------------------- t
@pytest.mark.parametrize(
    "t, kind, match",
    [
        (torch.zeros(3, 3, dtype=F64), InputValueError, r"t has shape \(3, 3\).*1-D"),
        (torch.tensor(1.0, dtype=F64), InputValueError, r"t has shape \(\).*1-D"),
        (torch.zeros(1, dtype=F64), InputValueError, r"t has 1 point.*at least two"),
        (torch.tensor([0.0, 0.5, 0.3, 1.0], dtype=F64), InputValueError, r"not strictly monotone.*-0\.2.*increasing or strictly decreasing"),
        (torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64), InputValueError, r"not strictly monotone.*0\.0.*without repeats"),
        (torch.tensor([0.0, float("nan"), 1.0], dtype=F64), InputValueError, r"t contains NaN or Inf.*finite"),
        (torch.tensor([0.0, 1.0, float("inf")], dtype=F64), InputValueError, r"t contains NaN or Inf.*finite"),
        (torch.arange(5), InputTypeError, r"t has dtype torch\.int64.*floating-point.*t\.to\(torch\.float64\)"),
        ([0.0, 0.5, 1.0], InputTypeError, r"t is a list.*torch\.Tensor.*linspace"),
    ],
    ids=["2d", "0d", "one-point", "non-monotone", "repeated", "nan", "inf", "int-dtype", "list"],
)
def test_bad_time_grid(t, kind, match):
    with pytest.raises(kind, match=match) as info:
        ODESystem(decay, y0(), t)
    check_kind(info.value, kind)


def test_decreasing_time_grid_is_accepted_for_odes():
    system = ODESystem(decay, y0(), grid().flip(0))
    sol = pitsolve.solve(system, tol=1e-10)
    torch.testing.assert_close(sol.ys, pitsolve.sequential(system).ys, atol=1e-9, rtol=0)


# -------------------------------------------------------------------------- y0
@pytest.mark.parametrize(
    "state, kind, match",
    [
        (torch.tensor([1.0, float("nan")], dtype=F64), InputValueError, r"y0 contains NaN or Inf.*finite initial state"),
        (torch.tensor([float("inf"), 1.0], dtype=F64), InputValueError, r"y0 contains NaN or Inf.*finite initial state"),
        ((y0(), torch.tensor([float("nan")], dtype=F64)), InputValueError, r"y0\[1\] contains NaN or Inf"),
        (torch.tensor([1, 2]), InputTypeError, r"y0 has dtype torch\.int64.*floating-point.*\.double\(\)"),
        ([1.0, 2.0], InputTypeError, r"y0 is a list.*torch\.as_tensor"),
        ((y0(), [1.0]), InputTypeError, r"y0\[1\] is a list.*torch\.as_tensor"),
        ((), InputValueError, r"y0 is an empty tuple"),
    ],
    ids=["nan", "inf", "tuple-nan", "int-dtype", "list", "tuple-list", "empty-tuple"],
)
def test_bad_initial_state(state, kind, match):
    with pytest.raises(kind, match=match) as info:
        ODESystem(decay, state, grid())
    check_kind(info.value, kind)


# ------------------------------------------------------- mixed dtypes / devices
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ODESystem(decay, y0(), grid().float()),
         r"t has dtype torch\.float32 but the state has dtype torch\.float64.*t\.to\(torch\.float64\)"),
        (lambda: ODESystem(decay, (y0(), y0().float()), grid()),
         r"mixed dtypes \['torch\.float32', 'torch\.float64'\].*one dtype"),
        (lambda: ODESystem(decay, y0(), grid().to("meta")),
         r"t lies on meta but the state on cpu.*one device"),
        (lambda: ODESystem(decay, (y0(), y0().to("meta")), grid()),
         r"mixed devices \['cpu', 'meta'\].*one device"),
        (lambda: ODESystem(lambda t, y: (-y).float(), y0(), grid()),
         r"func returned dtype torch\.float32 but y0 has dtype torch\.float64"),
        (lambda: SDESystem(OU(), y0(2, 3), grid().float()),
         r"t has dtype torch\.float32 but the state has dtype torch\.float64"),
        (lambda: SDESystem(OU(), y0(2, 3), grid().to("meta")),
         r"t lies on meta but the state on cpu"),
    ],
    ids=["t-f32-y0-f64", "tuple-mixed-dtypes", "t-meta-y0-cpu", "tuple-mixed-devices",
         "func-returns-f32", "sde-t-f32", "sde-t-meta"],
)
def test_mixed_dtypes_and_devices(make, match):
    with pytest.raises(InputTypeError, match=match) as info:
        make()
    check_kind(info.value, InputTypeError)


# ------------------------------------------------------------------------ func
@pytest.mark.parametrize(
    "func, state, kwargs, kind, match",
    [
        (3, y0(), {}, InputTypeError, r"func is a int, not callable.*func\(t, y\)"),
        (None, y0(), {}, InputTypeError, r"func is a NoneType, not callable"),
        (lambda t, y: y.sum(), y0(), {}, InputValueError,
         r"func returned shape \(1,\), expected \(1, 3\).*return the shape of its input"),
        (lambda t, y: torch.cat([y, y]), y0(), {}, InputValueError,
         r"func returned shape \(1, 6\), expected \(1, 3\)"),
        (lambda t, y: y[:, :2], y0(), {"batched_func": True}, InputValueError,
         r"func returned shape \(1, 2\), expected \(1, 3\)"),
        (lambda t, y: (y, y), y0(), {}, InputValueError,
         r"func returned \(\(1, 3\), \(1, 3\)\), but the state is a tensor of shape \(3,\).*same structure"),
        (lambda t, y: y[0], (y0(), y0(2)), {}, InputValueError,
         r"func returned \(1, 3\), but the state is a tuple of tensors of shapes \(3,\), \(2,\)"),
        (lambda t, y: -y * t.item(), y0(), {}, InputTypeError,
         r"calling func under torch\.func\.vmap failed.*\.item\(\).*batched_func=True"),
        (lambda t, y: None, y0(), {}, InputTypeError, r"vmap failed.*NoneType"),
        (lambda y: -y, y0(), {}, InputTypeError, r"vmap failed.*positional argument"),
    ],
    ids=["int", "none", "scalar-out", "doubled-out", "batched-wrong-shape", "tuple-for-tensor",
         "tensor-for-tuple", "item", "returns-none", "wrong-arity"],
)
def test_bad_func(func, state, kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        ODESystem(func, state, grid(), **kwargs)
    check_kind(info.value, kind)


# ------------------------------------------------------------ ODE method/knobs
@pytest.mark.parametrize(
    "method",
    ["rk45", "adams", "scipy_solver", "nope", None],
)
def test_unsupported_ode_method(method):
    with pytest.raises(InputValueError, match=re.escape(f"method={method!r}") + r".*choose a fixed-grid.*'rk4'.*'dopri5'") as info:
        ODESystem(decay, y0(), grid(), method=method)
    check_kind(info.value, InputValueError)


@pytest.mark.parametrize(
    "kwargs, kind, match",
    [
        ({"substeps": 0}, InputValueError, r"substeps=0 must be >= 1"),
        ({"substeps": -2}, InputValueError, r"substeps=-2 must be >= 1"),
        ({"substeps": 1.5}, InputTypeError, r"substeps=1\.5 is not an integer.*int >= 1"),
        ({"substeps": 2.0}, InputTypeError, r"substeps=2\.0 is not an integer.*int >= 1"),
        ({"substeps": "2"}, InputTypeError, r"substeps='2' is not an integer"),
        ({"substeps": True}, InputTypeError, r"substeps=True is not an integer"),
        ({"atol": -1.0}, InputValueError, r"atol=-1\.0 must be a finite number >= 0"),
        ({"atol": float("nan")}, InputValueError, r"atol=nan must be a finite number >= 0"),
        ({"rtol": float("inf")}, InputValueError, r"rtol=inf must be a finite number >= 0"),
        ({"atol": "1e-6"}, InputTypeError, r"atol='1e-6' is not a real number"),
        ({"atol": 0.0, "rtol": 0.0}, InputValueError, r"atol=0\.0, rtol=0\.0: both are 0.*positive"),
    ],
    ids=["substeps0", "substeps-neg", "substeps-1.5", "substeps-2.0", "substeps-str", "substeps-bool",
         "atol-neg", "atol-nan", "rtol-inf", "atol-str", "tols-zero"],
)
def test_bad_ode_options(kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        ODESystem(decay, y0(), grid(), **kwargs)
    check_kind(info.value, kind)


def test_numpy_and_tensor_numbers_are_accepted():
    """Counts, seeds and tolerances as numpy scalars or 0-dim tensors give the solve of Python numbers."""
    system = ODESystem(decay, y0(), grid(), substeps=np.int64(2))
    assert system.substeps == 2 and type(system.substeps) is int
    sol = pitsolve.solve(system, window=torch.tensor(4), max_iters=np.int32(8), tol=np.float32(1e-8))
    assert sol.converged
    assert pitsolve.solve(good_system(), tol=torch.tensor(1e-8)).converged
    system = good_system()
    sol = pitsolve.solve(system, window=np.int64(4), max_iters=np.int64(8), tol=np.float64(1e-10))
    assert sol.converged
    # Diagonal's options and seed: numpy integers give the solve of Python ints.
    ref = pitsolve.solve(system, Diagonal(exact_below=0, probes=2, seed=3), tol=1e-10)
    got = pitsolve.solve(system, Diagonal(exact_below=np.int64(0), probes=np.int32(2), seed=np.int64(3)), tol=1e-10)
    assert torch.equal(ref.ys, got.ys)
    assert Diagonal(seed=2**63 - 1).seed == 2**63 - 1 and Parareal(cost=np.int64(2)).cost == 2
    # SDESystem's seed.
    sde = OU()
    a = pitsolve.sequential(SDESystem(sde, torch.ones(2, 3, dtype=F64), grid(), seed=3)).ys
    b = pitsolve.sequential(SDESystem(sde, torch.ones(2, 3, dtype=F64), grid(), seed=np.int64(3))).ys
    assert torch.equal(a, b)


# --------------------------------------------------------------- solve options
@pytest.mark.parametrize(
    "kwargs, kind, match",
    [
        ({"jacobian": "newtonn"}, InputValueError, r"unknown jacobian 'newtonn'; choose one of \[.*'newton'.*\]"),
        ({"jacobian": 3}, InputTypeError, r"jacobian is a int; pass a name from"),
        ({"window": 0}, InputValueError, r"window=0 must be >= 1"),
        ({"window": -1}, InputValueError, r"window=-1 must be >= 1"),
        ({"window": N + 1}, InputValueError, rf"window={N + 1} is larger than the number of intervals N={N}.*window <= N or None"),
        ({"window": 2.0}, InputTypeError, r"window=2\.0 is not an integer"),
        ({"tol": -1e-3}, InputValueError, r"tol=-0\.001 must be a finite number >= 0"),
        ({"tol": float("nan")}, InputValueError, r"tol=nan must be a finite number >= 0"),
        ({"tol": float("inf")}, InputValueError, r"tol=inf must be a finite number >= 0"),
        ({"tol": "1e-6"}, InputValueError, r"tol='1e-6' must be a finite number"),
        ({"max_iters": 0}, InputValueError, r"max_iters=0 must be >= 1"),
        ({"max_iters": 1.5}, InputTypeError, r"max_iters=1\.5 is not an integer"),
        ({"init": "zeros"}, InputValueError, r"unknown init 'zeros'; choose one of \['coarse', 'constant'\]"),
        ({"init": 3}, InputTypeError, r"init is a int; pass None, a name"),
        ({"init": torch.zeros(N - 2, 3, dtype=F64)}, InputValueError,
         rf"init trajectory.*shape \({N - 2}, 3\), expected \({N + 1}, 3\).*N\+1={N + 1} states"),
        ({"init": torch.zeros(N + 1, 4, dtype=F64)}, InputValueError,
         rf"init trajectory.*shape \({N + 1}, 4\), expected \({N + 1}, 3\)"),
        ({"init": (torch.zeros(N + 1, 3, dtype=F64),)}, InputValueError, r"init trajectory.*same structure"),
        ({"init": torch.full((N + 1, 3), float("nan"), dtype=F64)}, InputValueError,
         r"init trajectory contains NaN or Inf.*finite warm start"),
        ({"init": ([0.0],)}, InputTypeError, r"init trajectory must be a tensor"),
    ],
    ids=["jacobian-name", "jacobian-type", "window0", "window-neg", "window>N", "window-float",
         "tol-neg", "tol-nan", "tol-inf", "tol-str", "max_iters0", "max_iters-float", "init-name",
         "init-type", "warm-start-rows", "warm-start-cols", "warm-start-tuple", "warm-start-nan",
         "warm-start-list"],
)
def test_bad_solve_options(kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        pitsolve.solve(good_system(), **kwargs)
    check_kind(info.value, kind)


@pytest.mark.parametrize("entry", ["solve", "sequential"])
@pytest.mark.parametrize(
    "thing, name",
    [("abc", "str"), (decay, "function"), (None, "NoneType"), (OU(), "OU")],
    ids=["str", "function", "none", "sde-object"],
)
def test_not_a_banded_system(entry, thing, name):
    fn = getattr(pitsolve, entry)
    with pytest.raises(InputTypeError, match=rf"system is a {name}; pass a pitsolve\.BandedSystem") as info:
        fn(thing)
    check_kind(info.value, InputTypeError)


def test_odeint_validates_like_solve():
    with pytest.raises(InputValueError, match=r"window=0 must be >= 1"):
        pitsolve.odeint(decay, y0(), grid(), window=0)
    with pytest.raises(InputValueError, match=r"method='scipy_solver'"):
        pitsolve.odeint(decay, y0(), grid(), method="scipy_solver")


# ------------------------------------------------- strategies and initialisers
@pytest.mark.parametrize(
    "make, kind, match",
    [
        (lambda: pitsolve.solve(Linear(D=300), "dense"), InputValueError,
         r"state size D=300 > max_size=256.*'newton'.*'diagonal'.*Dense\(max_size=\.\.\.\)"),
        (lambda: pitsolve.solve(ODESystem(decay, y0(4, 4), grid()), Dense(max_size=8)), InputValueError,
         r"state size D=16 > max_size=8"),
        (lambda: pitsolve.solve(Linear(), "parareal"), InputTypeError,
         r"Linear defines no coarse propagator.*Parareal\(coarse="),
        (lambda: pitsolve.solve(Linear(), Parareal()), InputTypeError,
         r"Linear defines no coarse propagator.*Parareal\(coarse="),
        (lambda: pitsolve.solve(Linear(), init="coarse"), InputTypeError,
         r"Linear defines no coarse propagator.*Coarse\(coarse=\.\.\.\).*init='constant'"),
        (lambda: pitsolve.solve(Linear(), init=Coarse()), InputTypeError,
         r"Linear defines no coarse propagator"),
        (lambda: Dense(max_size="big"), InputValueError, r"max_size='big' must be an int >= 1"),
        (lambda: Dense(max_size=0), InputValueError, r"max_size=0 must be an int >= 1"),
        (lambda: Parareal(coarse=3), InputTypeError, r"coarse is a int; pass coarse\(states, indices\)"),
        (lambda: Anderson(history=0), InputValueError, r"history=0 must be an int >= 1"),
        (lambda: Anderson(regularization=-1.0), InputValueError, r"regularization=-1\.0 must be >= 0"),
        (lambda: Diagonal(probes=0), InputValueError, r"probes=0 must be an int >= 1"),
        (lambda: Anderson(regularization=float("nan")), InputValueError, r"regularization=nan must be >= 0 and finite"),
        (lambda: Anderson(regularization="x"), InputTypeError, r"regularization='x' is not a number \(str\)"),
        (lambda: Diagonal(exact_below="x"), InputTypeError, r"exact_below='x' is not an integer \(str\); pass an int >= 0"),
        (lambda: Diagonal(exact_below=-1), InputValueError, r"exact_below=-1 must be an int >= 0"),
        (lambda: Diagonal(probes="x"), InputTypeError, r"probes='x' is not an integer \(str\); pass an int >= 1"),
        (lambda: Diagonal(seed="abc"), InputTypeError, r"seed='abc' is not an integer \(str\); pass an int in \[0, 2\*\*63 - 1\]"),
        (lambda: Diagonal(seed=-1), InputValueError, r"seed=-1 is outside \[0, 2\*\*63 - 1\]"),
        (lambda: Diagonal(seed=2**63), InputValueError, r"seed=9223372036854775808 is outside \[0, 2\*\*63 - 1\]"),
        (lambda: Diagonal(clip=-1), InputValueError, r"clip=-1 must be a number > 0, e\.g\. 2\.0, or None"),
        (lambda: Diagonal(clip="x"), InputTypeError, r"clip='x' is not a number \(str\); pass a number > 0"),
        (lambda: Parareal(cost=1.5), InputTypeError, r"cost=1\.5 is not an integer \(float\)"),
    ],
    ids=["dense-too-large", "dense-max-size", "parareal-name-custom", "parareal-instance-custom",
         "coarse-init-custom", "coarse-instance-custom", "dense-max-size-str", "dense-max-size-0",
         "parareal-coarse-int", "anderson-history", "anderson-reg", "diagonal-probes", "anderson-reg-nan",
         "anderson-reg-str", "diagonal-exact-str", "diagonal-exact-neg", "diagonal-probes-str", "diagonal-seed-str",
         "diagonal-seed-neg", "diagonal-seed-2**63", "diagonal-clip-neg", "diagonal-clip-str", "parareal-cost-float"],
)
def test_strategy_and_initializer_requirements(make, kind, match):
    with pytest.raises(kind, match=match) as info:
        make()
    check_kind(info.value, kind)


def test_parareal_on_custom_system_with_explicit_coarse_works():
    system = Linear()
    sol = pitsolve.solve(system, Parareal(coarse=lambda s, i: 0.5 * s), tol=1e-12)
    torch.testing.assert_close(sol.ys, pitsolve.sequential(system).ys)


@pytest.mark.parametrize(
    "system, match",
    [
        (Linear(out=lambda s: s[:, :1]), r"Linear\.propagate returned shape \(4, 1\), expected \(4, 2\)"),
        (Linear(out=lambda s: s.tolist()), r"Linear\.propagate returned shape list, expected \(4, 2\)"),
        (Linear(out=lambda s: (s, s)), r"Linear\.propagate returned \(\(4, 2\), \(4, 2\)\).*same structure"),
        (Linear(n=0), r"system\.num_intervals=0 must be >= 1"),
    ],
    ids=["wrong-shape", "not-a-tensor", "tuple", "no-intervals"],
)
def test_bad_custom_system(system, match):
    with pytest.raises(InputValueError, match=match):
        pitsolve.solve(system)
    with pytest.raises(InputValueError, match=match.replace(r"\(4,", r"\(1,")):
        pitsolve.sequential(system)


# ------------------------------------------------------------------------ SDEs
class NoNoiseType:
    sde_type = "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return torch.ones_like(y)


class NoSdeType:
    noise_type = "diagonal"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return torch.ones_like(y)


class NoDiffusion:
    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t, y):
        return -y


class WeirdNoise(OU):
    noise_type = "weird"


class WeirdType(OU):
    sde_type = "levy"


class WideDrift(OU):
    def f(self, t, y):
        return torch.cat([y, y], dim=-1)


class WrongDiffusion(OU):
    def g(self, t, y):
        return torch.ones(y.shape[0], 5, dtype=y.dtype)


@pytest.mark.parametrize(
    "sde, state, t, kwargs, kind, match",
    [
        (OU(), y0(2, 3), grid().flip(0), {}, InputValueError,
         r"t is decreasing \(t\[0\]=1\.0 > t\[1\]=0\.875\); torchsde\.sdeint refuses decreasing times as well.*"
         r"Pass increasing times"),
        (OU(), y0(2, 3), torch.tensor([0.0, 0.5, 0.3, 1.0], dtype=F64), {}, InputValueError,
         r"t must be strictly increasing, but t\[1\]=0\.5 >= t\[2\]=0\.3"),
        (OU(), y0(2, 3), torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64), {}, InputValueError,
         r"t must be strictly increasing, but t\[1\]=0\.5 >= t\[2\]=0\.5"),
        (OU(), y0(3), grid(), {}, InputValueError, r"y0 has shape \(3,\); torchsde states are 2-D.*reshape"),
        (OU(), y0(1, 2, 3), grid(), {}, InputValueError, r"y0 has shape \(1, 2, 3\); torchsde states are 2-D"),
        (OU(), (y0(2, 3), y0(2, 3)), grid(), {}, InputValueError, r"y0 has shape tuple; torchsde states are 2-D"),
        (OU(), torch.full((2, 3), float("nan"), dtype=F64), grid(), {}, InputValueError, r"y0 contains NaN or Inf"),
        (NoNoiseType(), y0(2, 3), grid(), {}, InputTypeError, r"sde has no attribute 'noise_type'.*noise_type='diagonal'"),
        (NoSdeType(), y0(2, 3), grid(), {}, InputTypeError, r"sde has no attribute 'sde_type'.*sde_type='ito'"),
        (NoDiffusion(), y0(2, 3), grid(), {}, InputTypeError, r"sde must define f\(t, y\) and g\(t, y\)"),
        (WeirdNoise(), y0(2, 3), grid(), {}, InputValueError, r"sde\.noise_type='weird' is not one of \[.*'diagonal'"),
        (WeirdType(), y0(2, 3), grid(), {}, InputValueError, r"sde\.sde_type='levy' is not one of \['ito', 'stratonovich'\]"),
        (WideDrift(), y0(2, 3), grid(), {}, InputValueError, r"sde\.f returned shape \(2, 6\) for y0 of shape \(2, 3\).*shape \(2, 3\)"),
        (WrongDiffusion(), y0(2, 3), grid(), {}, InputValueError, r"sde\.g returned shape \(2, 5\).*noise_type='diagonal'.*shape \(2, 3\)"),
        (OU(), y0(2, 3), grid(), {"method": "log_ode"}, InputValueError,
         r"method='log_ode' needs a Lévy-area approximation.*levy_area_approximation='davie'"),
        (OU(), y0(2, 3), grid(), {"method": "adjoint_reversible_heun"}, InputValueError,
         r"method='adjoint_reversible_heun' is not supported \(it serves sdeint_adjoint only"),
        (OU(), y0(2, 3), grid(), {"method": "rk4"}, InputValueError, r"method='rk4' is not supported.*'euler'"),
        (OU(), y0(2, 3), grid(), {"method": "heun"}, InputValueError, r"SDE is of type ito but solver is for type stratonovich"),
        (OU(), y0(2, 3), grid(), {"substeps": 0}, InputValueError, r"substeps=0 must be >= 1"),
        (OU(), y0(2, 3), grid(), {"substeps": 1.5}, InputTypeError, r"substeps=1\.5 is not an integer"),
        (OU(), y0(2, 3), grid(), {"seed": -1}, InputValueError, r"seed=-1 must be a non-negative int"),
        (OU(), y0(2, 3), grid(), {"atol": float("inf")}, InputValueError, r"atol=inf must be a finite number"),
    ],
    ids=["decreasing-t", "non-monotone-t", "repeated-t", "y0-1d", "y0-3d", "y0-tuple", "y0-nan",
         "no-noise_type", "no-sde_type", "no-g", "bad-noise_type", "bad-sde_type", "drift-shape",
         "diffusion-shape", "log_ode-without-bm", "adjoint_reversible_heun", "ode-method", "stratonovich-method-on-ito",
         "substeps0", "substeps-float", "seed-neg", "atol-inf"],
)
def test_bad_sde(sde, state, t, kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        SDESystem(sde, state, t, **kwargs)
    check_kind(info.value, kind)


@pytest.mark.parametrize(
    "ts, kwargs, kind, match",
    [
        (grid(), {"bm": object()}, InputTypeError, r"bm is a object; pass a torchsde Brownian motion.*or None"),
        (grid(), {"dt": 0.03}, InputValueError, r"dt=0\.03 does not divide every interval of ts.*substeps=K"),
        (grid(), {"dt": 0.5}, InputValueError, r"dt=0\.5 does not divide every interval"),
        (torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64), {"dt": 0.25}, InputValueError,
         r"dt=0\.25 gives different step counts per interval \(\[1, 2\]\).*substeps=K"),
        (grid(), {"dt": 0.0}, InputValueError, r"dt=0\.0 must be a positive finite number"),
        (grid(), {"dt": -0.125}, InputValueError, r"dt=-0\.125 must be a positive finite number"),
        (grid(), {"dt": float("nan")}, InputValueError, r"dt=nan must be a positive finite number"),
        (grid(), {"dt": 0.0625, "substeps": 2}, InputValueError, r"dt=0\.0625 and substeps=2 both given"),
        (grid().flip(0), {}, InputValueError, r"t is decreasing.*torchsde\.sdeint refuses decreasing times as well"),
        (grid(), {"adaptive": True}, InputValueError, r"adaptive=True is not supported: .*Brownian path.*pass a fixed dt"),
    ],
    ids=["bm", "dt-not-dividing", "dt-too-big", "dt-non-uniform", "dt-zero", "dt-neg", "dt-nan",
         "dt-and-substeps", "decreasing", "adaptive"],
)
def test_bad_sdeint(ts, kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        pitsolve.sdeint(OU(), y0(2, 3), ts, **kwargs)
    check_kind(info.value, kind)


def test_sdeint_dt_that_divides_sets_substeps():
    ys = pitsolve.sdeint(OU(), y0(2, 3), grid(), dt=1.0 / (2 * N), tol=1e-10)
    system = SDESystem(OU(), y0(2, 3), grid(), substeps=2)
    torch.testing.assert_close(ys, pitsolve.sequential(system).ys, atol=1e-8, rtol=0)


# -------------------------------------------------- non-finite during the solve
def blow_up_system():
    """y' = y², y(0) = 1 blows up at t = 1; the grid runs to t = 2."""
    return ODESystem(lambda t, y: y * y, torch.ones(2, dtype=F64), grid(t1=2.0))


def nan_late_system():
    """A finite initial state and a func that returns NaN beyond t = 0.5."""
    return ODESystem(
        lambda t, y: torch.where(t > 0.5, torch.full_like(y, float("nan")), -y), torch.ones(2, dtype=F64), grid()
    )


def nan_sde_system():
    class Exploding(OU):
        def f(self, t, y):
            return torch.where(t > 0.5, y / (1.0 - t.clamp(max=0.5) * 2.0), -y)

    return SDESystem(Exploding(), y0(2, 3), grid())


SYSTEMS = {"blow-up": blow_up_system, "nan-late": nan_late_system, "sde-inf": nan_sde_system}


@pytest.mark.parametrize("jacobian", ["identity", "zero", "diagonal", "newton", "dense", "parareal", "anderson"])
@pytest.mark.parametrize("make", list(SYSTEMS.values()), ids=list(SYSTEMS))
def test_nonfinite_during_iteration(make, jacobian):
    system = make()
    with pytest.raises(NonFiniteError, match=r"NaN or Inf appeared.*iteration \d+.*throw=False") as info:
        pitsolve.solve(system, jacobian, tol=1e-10)
    err = info.value
    assert isinstance(err, ConvergenceError) and isinstance(err, FloatingPointError)
    assert isinstance(err, RuntimeError) and isinstance(err, PitsolveError)
    assert err.solution is not None and err.solution.status is Status.NONFINITE

    sol = pitsolve.solve(system, jacobian, tol=1e-10, throw=False)
    assert sol.converged is False
    assert sol.status is Status.NONFINITE
    assert "NaN or Inf" in sol.message
    accepted = sol.accepted[-1] if sol.accepted else 0
    assert accepted < system.num_intervals
    assert torch.isfinite(sol.ys[: accepted + 1]).all()

    with pytest.raises(NonFiniteError, match=r"sequential solve produced NaN or Inf in interval \d+ of 8"):
        pitsolve.sequential(system)


# ------------------------------------------------------- max_iters too small
@pytest.mark.parametrize("jacobian", ["identity", "zero", "anderson"])
def test_max_iters_too_small_raises_with_partial_solution(jacobian):
    system = good_system()
    with pytest.raises(ConvergenceError, match=r"max_iters=2.*raise max_iters.*loosen tol") as info:
        pitsolve.solve(system, jacobian, tol=1e-12, max_iters=2)
    err = info.value
    assert not isinstance(err, NonFiniteError)
    assert isinstance(err, RuntimeError) and isinstance(err, PitsolveError)
    partial = err.solution
    assert isinstance(partial, pitsolve.Solution)
    assert partial.converged is False and partial.status is Status.MAX_ITERS
    assert partial.iterations == 2
    assert partial.ys.shape == (N + 1, 3) and torch.isfinite(partial.ys).all()
    # Accepted points are the sequential answer (each iteration accepts at least one).
    accepted = partial.accepted[-1]
    assert 2 <= accepted < N
    ref = pitsolve.sequential(system).ys
    torch.testing.assert_close(partial.ys[: accepted + 1], ref[: accepted + 1], atol=1e-10, rtol=0)

    quiet = pitsolve.solve(system, jacobian, tol=1e-12, max_iters=2, throw=False)
    assert quiet.status is Status.MAX_ITERS
    torch.testing.assert_close(quiet.ys, partial.ys)


# ---------------------------------------------------------- state stays usable
def test_process_and_objects_stay_usable_after_errors():
    system = good_system()
    strategy = Anderson()
    grad_mode = torch.is_grad_enabled()
    failing = [
        lambda: pitsolve.solve(system, strategy, window=0),
        lambda: pitsolve.solve(system, strategy, tol=-1.0),
        lambda: pitsolve.solve(system, strategy, init=torch.zeros(2, 3, dtype=F64)),
        lambda: pitsolve.solve(system, strategy, tol=1e-12, max_iters=1),
        lambda: pitsolve.solve(blow_up_system(), strategy),
        lambda: pitsolve.solve(Linear(), "parareal"),
        lambda: ODESystem(decay, y0(), grid().float()),
        lambda: ODESystem(lambda t, y: -y * t.item(), y0(), grid()),
        lambda: SDESystem(OU(), y0(3), grid()),
        lambda: pitsolve.sequential(nan_late_system()),
    ]
    for call in failing:
        with pytest.raises(PitsolveError):
            call()
    # The same system and the same strategy instance still give the sequential answer.
    ref = pitsolve.sequential(system).ys
    for jacobian in (strategy, "identity", "newton"):
        sol = pitsolve.solve(system, jacobian, tol=1e-10)
        assert sol.converged and sol.status is Status.CONVERGED
        torch.testing.assert_close(sol.ys, ref, atol=1e-9, rtol=0)
    assert torch.is_grad_enabled() == grad_mode


# ------------------------------------------------ the checks of tolerances and counts
@pytest.mark.parametrize(
    "tol", [1e-6, 0, np.float32(1e-3), np.float64(1e-6), np.array(2e-3), torch.tensor(1e-6), torch.tensor(1e-6, dtype=F64)],
    ids=["float", "int", "np-float32", "np-float64", "np-0d-array", "tensor-f32", "tensor-f64"],
)
def test_check_tolerance_accepts_real_scalars(tol):
    value = check_tolerance(tol)
    assert type(value) is float and value == pytest.approx(float(tol))


@pytest.mark.parametrize(
    "tol, match",
    [(-1e-3, r"tol=-0\.001 must be a finite number >= 0"), (float("nan"), r"tol=nan must be"),
     (float("inf"), r"tol=inf must be"), ("1e-6", r"tol='1e-6' must be"), (True, r"tol=True must be"),
     (torch.tensor(-1.0), r"tol=-1\.0 must be"), (torch.ones(2), r"tol=<a tensor of shape \(2,\).* must be"),
     (None, r"tol=None must be")],
    ids=["negative", "nan", "inf", "str", "bool", "tensor-negative", "tensor-1d", "none"],
)
def test_check_tolerance_refuses(tol, match):
    with pytest.raises(InputValueError, match=match):
        check_tolerance(tol)
    with pytest.raises(InputValueError, match=match.replace("tol=", "atol_x=")):
        check_tolerance(tol, "atol_x")


def test_check_positive_int_accepts_numpy_and_0dim_tensors():
    for value in (np.int64(4), np.int32(4), torch.tensor(4), 4):
        assert check_positive_int(value, "window") == 4 and type(check_positive_int(value, "window")) is int
    with pytest.raises(InputTypeError, match=r"window is a tensor of shape \(1,\), not an integer"):
        check_positive_int(torch.tensor([4]), "window")
    with pytest.raises(InputTypeError, match=r"window=tensor\(4\.\) is not an integer"):
        check_positive_int(torch.tensor(4.0), "window")


# --------------------------------------------------------- SDEs calling float(t)
class TimeOU:
    """dY = −t Y dt + 0.3 t dW, diagonal Itô noise, written with tensor operations on t."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -t * y

    def g(self, t, y):
        return 0.3 * t * torch.ones_like(y)


class FloatOU(TimeOU):
    """The same SDE written with ``float(t)``, which works in torchsde (t is a 0-dim tensor) but not under vmap."""

    def f(self, t, y):
        return -float(t) * y

    def g(self, t, y):
        return 0.3 * float(t) * torch.ones_like(y)


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_sde_calling_float_t_works_per_interval(method):
    y0, t = torch.ones(2, 3, dtype=F64), grid()
    with pytest.warns(RuntimeWarning, match=r"sde\.[fg] cannot be batched over intervals with torch\.func\.vmap.*float"):
        system = SDESystem(FloatOU(), y0, t, substeps=2, seed=1, method=method)
    reference = SDESystem(TimeOU(), y0, t, substeps=2, seed=1, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at construction
        sol = pitsolve.solve(system, tol=1e-10)
    assert sol.converged
    torch.testing.assert_close(sol.ys, pitsolve.solve(reference, tol=1e-10).ys, rtol=0, atol=1e-12)
    if method == "euler":
        ys = torchsde.sdeint(FloatOU(), y0, t, bm=system.brownian_motion(), dt=1.0 / (2 * N), method=method)
        torch.testing.assert_close(sol.ys, ys, rtol=0, atol=1e-9)


def test_sde_user_errors_are_not_retried_as_vmap_failures():
    class Broken(TimeOU):
        def g(self, t, y):
            raise ZeroDivisionError("user g failed")

    with pytest.raises(ZeroDivisionError, match="user g failed"):
        SDESystem(Broken(), torch.ones(2, 3, dtype=F64), grid())


# -------------------------------------------- checked_error_ratio / checked_costs
def test_checked_error_ratio_returns_the_default_measure():
    system = Halving()
    new, old = torch.randn(N, 2, dtype=F64), torch.randn(N, 2, dtype=F64)
    idx = torch.arange(1, N + 1)
    torch.testing.assert_close(system.checked_error_ratio(new, old, idx), system.error_ratio(new, old, idx))
    ode = ODESystem(decay, torch.ones(3, dtype=F64), grid())
    new3 = torch.randn(N, 3, dtype=F64)
    torch.testing.assert_close(ode.checked_error_ratio(new3, 0 * new3, idx), ode.error_ratio(new3, 0 * new3, idx))


@pytest.mark.parametrize(
    "fn, kind, match",
    [
        (lambda new, old: torch.zeros(2 * new.shape[0], dtype=F64), InputValueError,
         r"Halving\.error_ratio returned shape \(16,\), expected \(8,\) \(one measure per point of a batch of 8\)"),
        (lambda new, old: torch.tensor(0.0, dtype=F64), InputValueError,
         r"Halving\.error_ratio returned shape \(\), expected \(8,\)"),
        (lambda new, old: torch.zeros(new.shape[0], 1, dtype=F64), InputValueError,
         r"returned shape \(8, 1\), expected \(8,\).*return a 1-D tensor of length B"),
        (lambda new, old: 0.5, InputTypeError, r"Halving\.error_ratio returned a float; return a 1-D floating-point"),
        (lambda new, old: torch.zeros(new.shape[0], dtype=torch.long), InputTypeError,
         r"Halving\.error_ratio returned dtype torch\.int64; return a floating-point tensor"),
        (lambda new, old: torch.full((new.shape[0],), float("nan"), dtype=F64), InputValueError,
         r"Halving\.error_ratio returned NaN for finite states \(rows \[0, 1, .*\] of 8\); make it finite there"),
    ],
    ids=["2B", "scalar", "B1", "float", "int-dtype", "nan"],
)
def test_checked_error_ratio_refuses(fn, kind, match):
    with pytest.raises(kind, match=match):
        ratio(Halving(ratio=fn))


def test_checked_error_ratio_lets_nan_of_nonfinite_states_through():
    new = torch.ones(N, 2, dtype=F64)
    new[3, 0] = float("nan")
    out = ratio(Halving(), new=new)
    assert torch.isnan(out[3]) and torch.isfinite(out[:3]).all()


def test_solve_checks_error_ratio():
    with pytest.raises(InputValueError, match=r"error_ratio returned shape \(\d+, 1\)"):
        pitsolve.solve(Halving(ratio=lambda new, old: (new - old).abs().amax(1, keepdim=True)))


def test_checked_costs():
    assert ODESystem(decay, torch.ones(3, dtype=F64), grid(), substeps=3).checked_costs() == (3, 1)
    costs = Halving(steps=np.int64(2), coarse=torch.tensor(1)).checked_costs()
    assert costs == (2, 1) and all(type(c) is int for c in costs)
    with pytest.raises(InputTypeError, match=r"Halving\.steps_per_interval=1\.5 is not an integer \(float\)"):
        Halving(steps=1.5).checked_costs()
    with pytest.raises(InputValueError, match=r"Halving\.coarse_steps=-1 must be >= 1 \(the fine steps one coarse G_n"):
        Halving(coarse=-1).checked_costs()


# ------------------------------------------------------- per-call checks of Φ
def test_sde_outputs_are_checked_on_every_call():
    class Later(TimeOU):
        calls = 0

        def g(self, t, y):
            Later.calls += 1
            return 0.3 * torch.ones_like(y) if Later.calls < 4 else 0.3 * torch.ones_like(y[..., :1])

    with pytest.raises(InputValueError, match=r"sde\.g returned shape \(2, 1\) for y of shape \(2, 3\).*"
                                              r"make it return shape \(2, 3\)"):
        pitsolve.solve(SDESystem(Later(), torch.ones(2, 3, dtype=F64), grid()))


def test_func_returning_another_dtype_later_is_refused():
    calls = [0]

    def func(t, y):
        calls[0] += 1
        return -y if calls[0] < 3 else (-y).float()

    with pytest.raises(InputTypeError, match=r"func returned dtype torch\.float32 but y0 has dtype torch\.float64"):
        pitsolve.solve(ODESystem(func, torch.ones(2, dtype=F64), grid(), batched_func=True))


def test_in_place_func_under_vmap_is_refused_and_leaves_y0_alone():
    y0 = torch.ones(3, dtype=F64)
    with pytest.raises(InputValueError, match=r"func modified its input y in place"):
        ODESystem(lambda t, y: y.mul_(2), y0, grid())
    with pytest.raises(InputValueError, match=r"Halving2\.propagate modified its input states in place"):
        pitsolve.solve(Halving2(), "newton")


class Halving2(Halving):
    def propagate(self, states, indices):
        states += 0  # in place, even if it changes nothing
        return 0.5 * states


@pytest.mark.parametrize("jacobian", ["identity", "newton", "diagonal", "parareal"])
def test_valid_systems_pass_the_per_call_checks(jacobian):
    system = ODESystem(lambda t, y: (-y[0], y[0][:2] - y[1]), (torch.ones(3, dtype=F64), torch.zeros(2, dtype=F64)),
                       grid(), func_dtype=torch.float32)
    sol = pitsolve.solve(system, jacobian, tol=1e-6)
    assert sol.converged
    with torch.inference_mode():  # inference tensors track no versions: the in-place check steps aside
        assert pitsolve.solve(ODESystem(decay, torch.ones(3, dtype=F64), grid()), jacobian, tol=1e-6).converged
