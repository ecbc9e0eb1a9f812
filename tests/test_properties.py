"""Properties of the parallel solve: measured on fixed problems, and on random systems (hypothesis).

Propositions 3 and 4 of the paper (ParaSolver; see README), measured at the end of this file.
Prop. 3: Newton (``A_n = J_n``) is exact in one iteration on an affine Φ and
converges quadratically on a smooth nonlinear problem.  Prop. 4: the identity
update is exact in one iteration when Φ is a translation and superlinear
when ``‖J_n − I‖`` is small.  Errors are the largest deviation from the
sequential trajectory after k iterations (``max_iters=k``, ``tol=0`` so no
early stop).  Measured orders go to the "measured" section of the test report.
Those solves run with ``guard=False``: these are properties of the bare strategies,
which the depth budget of the default guard would otherwise override.

For random banded systems — affine and mildly nonlinear flows built as
:class:`pitsolve.ODESystem` (torchdiffeq fixed-grid methods, increasing and
decreasing grids), small custom :class:`pitsolve.BandedSystem` maps, and
:class:`pitsolve.SDESystem` with random seeds; scalar, vector, matrix and
tuple states — and every Jacobian strategy of :data:`pitsolve.jacobians.REGISTRY`,
every initialiser (constant, coarse, a trajectory), windows ``None``, 1 and
random ``p ≤ N``:

1. a solve with the default ``max_iters`` (N) always ends converged and its
   answer is the sequential one within the bound :func:`error_bound` derives
   from the stopping rule (docs/design.md, "The banded system" facts 1 and 5);
2. the history shows finite termination: at most N sweeps, the accepted front
   advances by at least one point per sweep, window slides included;
3. stopping before the sweeps the solve needs is never reported as
   converged, raises :class:`pitsolve.ConvergenceError` with ``throw=True``,
   and its accepted points are the very ones of the full solve.

The bugs these properties found have their own minimal regression tests after them.

Set ``PITSOLVE_PROPERTY_EXAMPLES=500`` to explore with fresh random examples;
by default a fixed, derandomised set keeps the suite fast and reproducible.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pitsolve
from pitsolve.jacobians import Diagonal

from conftest import DT, linear_system, max_err, vdp_system

_EXPLORE = os.environ.get("PITSOLVE_PROPERTY_EXAMPLES")
SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=_EXPLORE is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


pytestmark = pytest.mark.usefixtures("one_thread")


def examples(default: int) -> int:
    return int(_EXPLORE) if _EXPLORE else default


#: State shapes: a tuple of shapes is a tuple state.
SHAPES = [(), (3,), (2, 3), ((2,), (1, 2))]
#: The divergence guard on (the default) and off: the properties hold either way.
GUARDS = [{"guard": True}, {"guard": False}]


# -- the comparison tolerance ---------------------------------------------------------------------
#
# Write X for the trajectory a converged solve returns and R_n = X_{n+1} − Φ_n(X_n) for its
# residual.  A point accepted as the first of its window is Φ of the accepted anchor: R_n = 0 up
# to round-off.  Any other point n+1 is accepted in a sweep k only behind a predecessor n that
# passed Eq. 14 in the same sweep (the window's first point, accepted unconditionally, is today
# an exception: see FORCED_FIRST_POINT below), and was computed as X_{n+1} = Φ_n(X^k_n) + A_n δ_n
# with δ_n = X_n − X^k_n the predecessor's change in that sweep (Parareal: G_n(X_n) − G_n(X^k_n)), so
#
#     |R_n| ≤ (L + ‖A‖) |δ_n|,     L = Lipschitz constant of Φ_n (2-norm).
#
# Eq. 14 accepted δ_n: RMS(δ_n / s_n) ≤ tol, hence |δ_n|₂ ≤ √D · tol · max s_n.  The error
# e_n = X_n − X*_n obeys |e_{n+1}| ≤ L |e_n| + |R_n|, e_0 = 0, so
#
#     max_n |e_n| ≤ N · Λ · (L + ‖A‖) · √D · tol · s_max,
#
# Λ bounding the Lipschitz constant of any run of consecutive Φ's.  For the strategies,
# ‖A‖ ≤ max(L, 2): 0, I, J_n, diag(J_n) (exact: ≤ L; Hutchinson estimate: clipped at 2) and the
# coarse G of Parareal, whose Lipschitz constant the systems below keep ≤ L.  Anderson reads the
# identity update's residual instead of its own step, and a divergence guard may damp a step;
# a safety factor of 10 covers both.  Round-off adds η = 1e-14·|X| per point (a batched Φ is not
# bit-identical to a one-row Φ; ~50 ulp of float64).  L and Λ are computed for every drawn
# system from how it was built (see the builders).


@dataclass
class Problem:
    system: pitsolve.BandedSystem
    lipschitz: float  # L: bound on the Lipschitz constant of one Φ_n and of one G_n
    chain: float  # Λ: bound on the Lipschitz constant of any run of consecutive Φ's (≥ 1)
    scale: Callable[[float], float]  # s_max as a function of max |X|
    label: str


def error_bound(problem: Problem, tol: float, x_max: float) -> float:
    N, D = problem.system.num_intervals, problem.system.spec.size
    L, chain = problem.lipschitz, problem.chain
    accepted = (L + max(L, 2.0)) * math.sqrt(D) * tol * problem.scale(x_max)
    return 10.0 * N * chain * (accepted + 1e-14 * max(x_max, 1.0))


# -- random systems --------------------------------------------------------------------------------

def spec_of(shape, gen) -> tuple:
    """A random initial state of ``shape`` (a tuple of shapes: a tuple state) and its size D."""
    if shape and isinstance(shape[0], tuple):
        parts = tuple(torch.rand(s, generator=gen, dtype=DT) * 2 - 1 for s in shape)
        return parts, sum(math.prod(s) for s in shape)
    return torch.rand(shape, generator=gen, dtype=DT) * 2 - 1, math.prod(shape)


def random_matrix(D, norm, gen) -> torch.Tensor:
    """A random D×D matrix with spectral norm ``norm``."""
    m = torch.randn(D, D, generator=gen, dtype=DT)
    return m * (norm / float(torch.linalg.matrix_norm(m, ord=2)))


def ode_problem(seed, shape, N, method, substeps, decreasing, eps, norm) -> Problem:
    """``y' = B y + ε sin(y) + c cos(3t)`` on a random grid of total length 1.

    ``f`` is Lipschitz with ℓ = ‖B‖ + ε; an explicit Runge–Kutta step with non-negative
    coefficients (euler, midpoint, heun2, heun3, rk4) then has Lipschitz constant
    ≤ Σ_j (ℓh)^j / j! ≤ e^{ℓh}, so Λ = e^{ℓ·Σ|h|} = e^ℓ, and its coarse step (one step of the
    method over the interval) obeys the same bound.
    """
    gen = torch.Generator().manual_seed(seed)
    y0, D = spec_of(shape, gen)
    spec = pitsolve.StateSpec.of(y0)
    B, c = random_matrix(D, norm, gen), torch.randn(D, generator=gen, dtype=DT)

    def func(t, y):
        flat = spec.flatten(y)
        return spec.unflatten(B @ flat + eps * torch.sin(flat) + c * torch.cos(3 * t))

    steps = 0.5 + torch.rand(N, generator=gen, dtype=DT)
    offset = float(torch.rand(1, generator=gen)) - 0.5
    t = torch.cat([torch.zeros(1, dtype=DT), (steps / steps.sum()).cumsum(0)]) + offset
    if decreasing:
        t = t.flip(0)
    system = pitsolve.ODESystem(func, y0, t, method=method, substeps=substeps)
    ell = norm + eps
    return Problem(system, math.exp(ell * float((t[1:] - t[:-1]).abs().max())), math.exp(ell), lambda x: 1.0 + x,
                   f"ode {method} K={substeps} {'decreasing' if decreasing else 'increasing'}")


class RandomMap(pitsolve.BandedSystem):
    r"""``Φ_n(x) = M_n x + ε tanh(x) + c_n`` on the flat state; the coarse ``G_n`` uses a perturbed ``M̃_n``.

    Lipschitz constants ``‖M_n‖ + ε`` and ``‖M̃_n‖ + ε`` (tanh' ≤ 1).
    """

    def __init__(self, y0, M, M_coarse, c, eps):
        self._y0, self.M, self.M_coarse, self.c, self.eps = y0, M, M_coarse, c, eps

    @property
    def initial_state(self):
        return self._y0

    @property
    def num_intervals(self):
        return self.M.shape[0]

    def _apply(self, M, states, indices):
        x = self.spec.flatten_batch(states)
        y = torch.einsum("bij,bj->bi", M[indices], x) + self.eps * torch.tanh(x) + self.c[indices]
        return self.spec.unflatten_batch(y)

    def propagate(self, states, indices):
        return self._apply(self.M, states, indices)

    def coarse_propagate(self, states, indices):
        return self._apply(self.M_coarse, states, indices)


def map_problem(seed, shape, N, eps, norm) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    y0, D = spec_of(shape, gen)
    M = torch.stack([random_matrix(D, norm, gen) for _ in range(N)])
    # ‖M̃‖ ≤ 0.95 ‖M‖, and M̃ ≠ M even for D = 1 (an exact coarse step is tested on its own below).
    M_coarse = torch.stack([0.85 * m + random_matrix(D, 0.1 * norm, gen) for m in M])
    c = torch.randn(N, D, generator=gen, dtype=DT)
    L = norm + eps
    system = RandomMap(y0, M, M_coarse, c, eps)
    return Problem(system, L, max(1.0, L) ** N, lambda x: 1.0, "custom map")


class NoisyDecay(torch.nn.Module):
    """``dY = (−θ Y + ε sin Y) dt + σ (1 + 0.2 sin Y) dW`` with diagonal noise."""

    noise_type = "diagonal"

    def __init__(self, theta, eps, sigma, sde_type):
        super().__init__()
        self.theta, self.eps, self.sigma, self.sde_type = theta, eps, sigma, sde_type

    def f(self, t, y):
        return -self.theta * y + self.eps * torch.sin(y)

    def g(self, t, y):
        return self.sigma * (1 + 0.2 * torch.sin(y))


#: torchsde's method → the SDE type it integrates.
SDE_TYPES = {"euler": "ito", "milstein": "ito", "heun": "stratonovich", "midpoint": "stratonovich",
             "euler_heun": "stratonovich"}


def sde_problem(seed, N, method, substeps, eps, sigma) -> Problem:
    """A mildly nonlinear SDE with multiplicative noise; random path seed.

    One fine step maps y ↦ y + F(y) (Euler, Milstein) or composes F once more (Heun, midpoint,
    Euler–Heun: Lipschitz ≤ 1 + a + a²/2 ≤ e^a) with F(y) = f(y) h + g(y) ΔW of Lipschitz
    a = ℓh + 0.2σ|ΔW|, ℓ = θ + ε.  Milstein adds ½ g g' (ΔW² − h), of Lipschitz ≤ 0.3σ²(ΔW² + h).
    Λ is the product of e^{a + 0.3σ²(ΔW² + h)} over all fine steps, with the path's largest |ΔW|.
    """
    gen = torch.Generator().manual_seed(seed)
    theta = 0.5 + float(torch.rand(1, generator=gen))
    y0 = torch.rand(2, 2, generator=gen, dtype=DT) * 2 - 1
    t = torch.linspace(0.0, 1.0, N + 1, dtype=DT)
    system = pitsolve.SDESystem(NoisyDecay(theta, eps, sigma, SDE_TYPES[method]), y0, t, method=method,
                                substeps=substeps, seed=seed)
    h = 1.0 / (N * substeps)
    w = float(system.increments(torch.arange(N)).abs().max())
    per_step = (theta + eps) * h + 0.2 * sigma * w + 0.3 * sigma**2 * (w**2 + h)
    return Problem(system, math.exp(per_step * substeps), math.exp(per_step * substeps * N), lambda x: 1.0 + x,
                   f"sde {method} K={substeps} seed={seed}")


@st.composite
def problems(draw) -> Problem:
    kind = draw(st.sampled_from(["ode", "map", "sde"]))
    seed = draw(st.integers(0, 2**31 - 1))
    N = draw(st.integers(1, 9))
    eps = draw(st.sampled_from([0.0, 0.3]))  # affine or mildly nonlinear
    if kind == "ode":
        return ode_problem(seed, draw(st.sampled_from(SHAPES)), N, draw(st.sampled_from(pitsolve.FIXED_GRID_METHODS)),
                           draw(st.integers(1, 3)), draw(st.booleans()), eps, draw(st.sampled_from([0.3, 1.5])))
    if kind == "map":
        return map_problem(seed, draw(st.sampled_from(SHAPES)), N, eps, draw(st.sampled_from([0.5, 1.0, 1.1])))
    return sde_problem(seed, N, draw(st.sampled_from(pitsolve.SDE_METHODS)), draw(st.integers(1, 2)), eps,
                       draw(st.sampled_from([0.2, 0.6])))


@st.composite
def solve_options(draw, problem: Problem, reference) -> dict:
    """Keyword arguments of ``pitsolve.solve``: strategy, initialiser, window, tol, guard."""
    N = problem.system.num_intervals
    name = draw(st.sampled_from(sorted(pitsolve.jacobians.REGISTRY)))
    jacobian = name
    if name == "diagonal" and draw(st.booleans()):  # Hutchinson probes instead of the exact diagonal
        jacobian = Diagonal(exact_below=0, probes=draw(st.integers(1, 3)), seed=draw(st.integers(0, 99)))
    init = draw(st.sampled_from(["constant", "coarse", "trajectory"]))
    if init == "trajectory":  # a warm start: the answer itself, perturbed, or far off
        amplitude = draw(st.sampled_from([0.0, 1e-3, 1.0]))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 99)))
        init = _map(lambda y: y + amplitude * torch.randn(y.shape, generator=gen, dtype=DT), reference)
    window = draw(st.one_of(st.none(), st.just(1), st.integers(1, N)))
    tol = draw(st.sampled_from([0.0, 1e-11, 1e-7]))
    # The bound error_bound derives is Eq. 14's; the error rule has its own property below.
    return dict(jacobian=jacobian, init=init, window=window, tol=tol, stopping="eq14",
                **draw(st.sampled_from(GUARDS)))


def _map(fn, state):
    return tuple(fn(p) for p in state) if isinstance(state, tuple) else fn(state)


def flat(ys) -> torch.Tensor:
    parts = ys if isinstance(ys, tuple) else (ys,)
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


def describe(problem, options) -> str:
    opts = {k: (v if not isinstance(v, (torch.Tensor, tuple)) else "trajectory") for k, v in options.items()}
    return f"{problem.label}, N={problem.system.num_intervals}, D={problem.system.spec.size}, {opts}"


def check_history(sol: pitsolve.Solution, N: int, what: str) -> None:
    """Finite termination as the history records it (docs/design.md, "The banded system" fact 1)."""
    k = sol.iterations
    assert 1 <= k <= N, what
    assert len(sol.accepted) == len(sol.window_starts) == len(sol.residuals) == k, what
    assert sol.window_starts[0] == 0, what
    # The window starts at the accepted front, and the front advances by ≥ 1 point per sweep.
    assert sol.window_starts[1:] == sol.accepted[:-1], what
    fronts = [0] + sol.accepted
    assert all(b >= a + 1 for a, b in zip(fronts, fronts[1:])), (what, sol.accepted)
    assert all(sol.accepted[i] >= i + 1 for i in range(k)), what  # after k sweeps the first k points are exact
    assert sol.accepted[-1] <= N, what


# -- the properties ----------------------------------------------------------------------------------

@settings(max_examples=examples(40), **SETTINGS)
@given(data=st.data())
def test_solve_is_the_sequential_solve(data):
    """Converged within the Eq. 14 bound, in ≤ N sweeps; stopped early, it says so and raises."""
    problem = data.draw(problems(), label="problem")
    system = problem.system
    N = system.num_intervals
    seq = pitsolve.sequential(system)
    options = data.draw(solve_options(problem, seq.ys), label="options")
    what = describe(problem, options)

    sol = pitsolve.solve(system, **options, throw=False)
    # The sequential solve is finite, so the front reaches N within N sweeps: never MAX_ITERS, never NONFINITE.
    assert sol.converged and sol.status is pitsolve.Status.CONVERGED, (what, sol.message)
    check_history(sol, N, what)
    assert sol.accepted[-1] == N, what
    ref = flat(seq.ys)
    x_max = float(ref.abs().max())
    err = float((flat(sol.ys) - ref).abs().max())
    assert err <= error_bound(problem, options["tol"], x_max), (what, err, error_bound(problem, options["tol"], x_max))
    assert torch.equal(flat(sol.ys)[0], ref[0]), what  # X_0 is the given initial state, untouched
    assert torch.equal(flat(_map(lambda p: p.unsqueeze(0), sol.y))[0], flat(sol.ys)[-1]), what
    if options["window"] == 1:  # one point per sweep is the sequential loop itself
        assert sol.iterations == N, what
    if options["guard"] and isinstance(options["init"], str) and options["init"] == "constant":
        # The guard's depth budget: never more sequential waves than the sequential solve (N·K);
        # a model-calling initialiser's own steps are counted in depth but not charged to the budget.
        assert sol.depth <= 2 * N * system.steps_per_interval, (what, sol.depth)  # Guard.depth_factor

    # Fewer sweeps than the solve needed: not converged, never passed off as converged.
    needed = sol.iterations
    if needed > 1:
        m = data.draw(st.integers(1, needed - 1), label="max_iters")
        part = pitsolve.solve(system, **options, max_iters=m, throw=False)
        assert not part.converged and part.status is pitsolve.Status.MAX_ITERS, what
        assert part.iterations == m and f"max_iters={m}" in part.message, what
        check_history(part, N, what)
        assert part.accepted[-1] < N, what
        # Same sweeps as the full solve up to m (deterministic): the same accepted points, bit for bit.
        assert part.accepted == sol.accepted[:m], what
        front = part.accepted[-1]
        assert torch.equal(flat(part.ys)[: front + 1], flat(sol.ys)[: front + 1]), what
        assert bool(torch.isfinite(flat(part.ys)).all()), what
        with pytest.raises(pitsolve.ConvergenceError, match=f"max_iters={m}") as info:
            pitsolve.solve(system, **options, max_iters=m)
        assert type(info.value) is pitsolve.ConvergenceError, what  # not a NonFiniteError: nothing blew up
        assert info.value.solution is not None and not info.value.solution.converged, what
        assert torch.equal(flat(info.value.solution.ys), flat(part.ys)), what


@settings(max_examples=examples(12), **SETTINGS)
@given(problem=problems(), tol=st.sampled_from([0.0, 1e-9]), guard=st.sampled_from(GUARDS))
def test_every_strategy_and_initialiser_on_the_same_system(problem, tol, guard):
    """All strategies × all initialisers on one random system reach one answer, in ≤ N sweeps each."""
    system = problem.system
    N = system.num_intervals
    seq = flat(pitsolve.sequential(system).ys)
    bound = error_bound(problem, tol, float(seq.abs().max()))
    answers = []
    for name in sorted(pitsolve.jacobians.REGISTRY):
        for init in ("constant", "coarse"):
            what = f"{problem.label}, N={N}, {name}, {init}, tol={tol}, {guard}"
            sol = pitsolve.solve(system, name, init=init, tol=tol, throw=False, stopping="eq14", **guard)
            assert sol.converged, (what, sol.message)
            check_history(sol, N, what)
            answers.append(flat(sol.ys))
            assert float((answers[-1] - seq).abs().max()) <= bound, what
    # Two parallel answers differ by at most twice the bound.
    spread = max(float((a - answers[0]).abs().max()) for a in answers)
    assert spread <= 2 * bound


@settings(max_examples=examples(20), **SETTINGS)
@given(problem=problems(), name=st.sampled_from(sorted(pitsolve.jacobians.REGISTRY)),
       tol=st.sampled_from([1e-3, 1e-6, 1e-9]), guard=st.sampled_from(GUARDS))
def test_error_rule_is_within_tol_or_says_so(problem, name, tol, guard):
    """The default rule: converged means the estimate, and the measured error in the system's own
    measure, are within tol (3·tol allowed for the measured one: the gain is estimated); otherwise
    the status says it could not certify tol, with an estimate above it."""
    system = problem.system
    N = system.num_intervals
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, name, tol=tol, throw=False, **guard)
    what = f"{problem.label}, N={N}, {name}, tol={tol}, {guard}"
    check_history(sol, N, what)
    assert sol.status in (pitsolve.Status.CONVERGED, pitsolve.Status.UNCERTIFIED), (what, sol.message)
    idx = torch.arange(N + 1)
    measured = float(system.error_ratio(flat(sol.ys), flat(seq), idx).max())
    if sol.converged:
        assert sol.error_estimate <= tol and measured <= 3 * tol, (what, sol.error_estimate, measured)
    else:
        assert sol.error_estimate > tol, what


@settings(max_examples=examples(15), **SETTINGS)
@given(problem=problems(), name=st.sampled_from(sorted(pitsolve.jacobians.REGISTRY)), guard=st.sampled_from(GUARDS))
def test_tol_zero_accepts_only_exact_points(problem, name, guard):
    """With tol = 0 a point passes Eq. 14 only when it did not move at all, so only the first point of a
    window (exact: Φ of the accepted anchor) and points with a zero residual are accepted.

    After sweep k the accepted front is at least k (fact 1), the solve ends within N sweeps however
    slowly the strategy converges, and the answer is the sequential one to round-off.
    """
    system = problem.system
    N = system.num_intervals
    seq = flat(pitsolve.sequential(system).ys)
    sol = pitsolve.solve(system, name, tol=0.0, throw=False, stopping="eq14", **guard)
    what = f"{problem.label}, N={N}, {name}, {guard}"
    assert sol.converged, (what, sol.message)
    check_history(sol, N, what)
    assert float((flat(sol.ys) - seq).abs().max()) <= error_bound(problem, 0.0, float(seq.abs().max())), what
    if guard["guard"]:
        assert sol.depth <= 2 * N * system.steps_per_interval, (what, sol.depth)  # Guard.depth_factor


@settings(max_examples=examples(10), **SETTINGS)
@given(problem=problems(), data=st.data())
def test_max_iters_below_what_is_needed_raises(problem, data):
    """``max_iters`` smaller than the sweeps a converging solve takes: status MAX_ITERS and a ConvergenceError."""
    system = problem.system
    N = system.num_intervals
    assume(N > 1)
    name = data.draw(st.sampled_from(sorted(pitsolve.jacobians.REGISTRY)), label="jacobian")
    full = pitsolve.solve(system, name, tol=0.0, throw=False)  # tol = 0: needs ≥ 2 sweeps unless Φ is exact at once
    assume(full.iterations > 1)
    m = data.draw(st.integers(1, full.iterations - 1), label="max_iters")
    with pytest.raises(pitsolve.ConvergenceError) as info:
        pitsolve.solve(system, name, tol=0.0, max_iters=m)
    partial = info.value.solution
    assert partial.status is pitsolve.Status.MAX_ITERS and not partial.converged
    assert partial.iterations == m and partial.accepted == full.accepted[:m]
    assert "not converged" in str(info.value) and "throw=False" in str(info.value)


def consistent_guess(system: pitsolve.BandedSystem, reference, amplitude: float, seed: int):
    """A trajectory with a wrong ``X_1`` and every later point ``Φ`` of its predecessor.

    What a warm start from the solve of a nearby problem looks like (e.g. the same flow from a
    perturbed initial state): the residual of Eq. 8 is zero at every point but the first.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = [flat(reference)[0], flat(reference)[1] + amplitude * torch.randn(system.spec.size, generator=gen, dtype=DT)]
    for n in range(1, system.num_intervals):
        rows.append(system.propagate_flat(rows[-1].unsqueeze(0), torch.tensor([n]))[0])
    return system.spec.trajectory(torch.stack(rows))


@settings(max_examples=examples(10), **SETTINGS)
@given(problem=problems(), name=st.sampled_from(sorted(set(pitsolve.jacobians.REGISTRY) - {"zero"})),
       amplitude=st.sampled_from([1e-3, 0.3]), seed=st.integers(0, 99))
def test_warm_start_consistent_but_for_the_first_point(problem, name, amplitude, seed):
    """Only the first point is wrong: the points behind it must not be accepted on their zero residual."""
    system = problem.system
    assume(system.num_intervals > 1)
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, name, init=consistent_guess(system, seq, amplitude, seed), tol=1e-11, throw=False)
    assert sol.converged
    ref = flat(seq)
    err = float((flat(sol.ys) - ref).abs().max())
    assert err <= error_bound(problem, 1e-11, float(ref.abs().max())), (problem.label, name, err)


# Regression tests: the window's first point is exact (Φ of the accepted anchor) but must not pass the
# stopping rule by fiat — the points after it were computed from its old value.  With A = 0
# (jacobian='zero') their change Φ_n(X^k_n) − X^k_{n+1} is blind to how far the first point just moved.


class TwoMaps(pitsolve.BandedSystem):
    """``Φ_0(x) = x + 1``, ``Φ_1(x) = 2x`` from ``X_0 = 0``: the solution is ``(0, 1, 2)``."""

    initial_state = torch.zeros(1, dtype=DT)
    num_intervals = 2

    def propagate(self, states, indices):
        return torch.where((indices == 0).unsqueeze(1), states + 1, 2 * states)


def test_jacobi_does_not_accept_behind_a_moving_first_point():
    system = TwoMaps()
    # Constant start (0, 0, 0): the sweep gives X_1 = Φ_0(0) = 1 (exact, change 1) and X_2 = Φ_1(0) = 0 with
    # change 0, so X_2 passes Eq. 14 even at tol = 0, though its predecessor moved by 1.
    sol = pitsolve.solve(system, "zero", tol=0.0, throw=False)
    assert torch.equal(sol.ys, pitsolve.sequential(system).ys), sol.ys.flatten().tolist()


def test_jacobi_warm_start_from_a_nearby_initial_state():
    t = torch.linspace(0.0, 2.0, 9, dtype=DT)
    system = pitsolve.ODESystem(lambda t, y: -y + torch.sin(t), torch.tensor([1.0], dtype=DT), t)
    nearby = pitsolve.ODESystem(lambda t, y: -y + torch.sin(t), torch.tensor([1.2], dtype=DT), t)
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, "zero", init=pitsolve.sequential(nearby).ys, tol=1e-10)
    # Accepted in one sweep with the nearby solution's points 2 … N: error ~0.2·e^{-t}, not ~1e-10.
    assert float((sol.ys - seq).abs().max()) < 1e-8, (sol.iterations, float((sol.ys - seq).abs().max()))


@pytest.mark.parametrize("method", pitsolve.SDE_METHODS)
def test_solutions_carry_no_autograd_graph(method):
    # Milstein differentiates g internally; SDESystem detaches its result unless the states or the sde's
    # parameters need grad.
    problem = sde_problem(5, 4, method, 2, 0.3, 0.6)
    for sol in (pitsolve.sequential(problem.system), pitsolve.solve(problem.system, "identity", tol=1e-9)):
        assert not sol.ys.requires_grad and sol.ys.grad_fn is None


# -- Propositions 3 and 4 of the paper, measured on fixed problems ----------------------------------


def errors_per_iteration(system, jacobian, k_max, **kw):
    seq = pitsolve.sequential(system).ys
    out = []
    for k in range(1, k_max + 1):
        # The update's convergence, read off the newest iterate (Eq. 14's rule returns it).
        sol = pitsolve.solve(system, jacobian, tol=0.0, max_iters=k, throw=False, guard=False, stopping="eq14", **kw)
        out.append(max_err(sol.ys, seq))
    return out


def orders(errors, floor):
    """q_k = log(e_{k+1}/e_k) / log(e_k/e_{k-1}) while errors stay above round-off."""
    e = [x for x in errors if x > floor]
    return [math.log(e[i + 1] / e[i]) / math.log(e[i] / e[i - 1]) for i in range(1, len(e) - 1)]


@pytest.mark.parametrize("jacobian", ["newton", "dense"])
def test_prop3_newton_exact_in_one_iteration_on_affine(jacobian):
    # y' = A y + c(t) with RK4: every Φ_n is affine, Φ_n(x) = M_n x + c_n.
    system = linear_system(n=32)
    sol = pitsolve.solve(system, jacobian, tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(sol.ys, pitsolve.sequential(system).ys) < 1e-12
    # Identity, by contrast, is far from exact after one iteration on the same problem.
    ident = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(ident.ys, pitsolve.sequential(system).ys) > 1e-2


@pytest.mark.parametrize("jacobian", [pytest.param("newton", marks=pytest.mark.slow), "dense"])
def test_prop3_newton_converges_quadratically(jacobian, report):
    system = vdp_system(n=16, t_end=2.0)
    e = errors_per_iteration(system, jacobian, 6)
    floor = 1e-13
    big = [x for x in e if x > floor]
    assert len(big) >= 4, e  # enough iterations above round-off to measure
    ratios = [big[i + 1] / big[i] ** 2 for i in range(len(big) - 1)]
    q = orders(e, floor)
    report(f"Prop. 3, {jacobian} on Van der Pol: errors {['%.1e' % x for x in e]}, "
           f"e_(k+1)/e_k^2 {['%.2g' % r for r in ratios]}, orders {['%.2f' % x for x in q]}")
    assert max(ratios) < 1.0  # e_{k+1} <= C e_k^2 with a bounded C
    assert q[-1] > 1.8  # quadratic once in the basin


def test_prop4_identity_exact_in_one_iteration_on_translation():
    # Φ_n(x) = x + ∫ c(t) dt: a pure translation, J_n = I.
    drift = lambda t, y: torch.stack([torch.cos(3 * t), torch.exp(-t), t**2])  # noqa: E731
    system = pitsolve.ODESystem(drift, torch.zeros(3, dtype=DT), torch.linspace(0, 2, 41, dtype=DT), substeps=3)
    sol = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(sol.ys, pitsolve.sequential(system).ys) < 1e-13
    zero = pitsolve.solve(system, "zero", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(zero.ys, pitsolve.sequential(system).ys) > 1e-1


def test_prop4_identity_superlinear_near_identity(report):
    # y' = 1 + ε sin(y): J_n − I = O(ε h), small.
    eps = 0.3
    system = pitsolve.ODESystem(lambda t, y: 1.0 + eps * torch.sin(y), torch.tensor([0.1, 1.0, 2.0], dtype=DT),
                                torch.linspace(0, 2, 33, dtype=DT))
    e = errors_per_iteration(system, "identity", 12)
    big = [x for x in e if x > 1e-13]
    ratios = [big[i + 1] / big[i] for i in range(len(big) - 1)]
    q = orders(e, 1e-13)
    report(f"Prop. 4, identity near identity: errors {['%.1e' % x for x in e]}, "
           f"e_(k+1)/e_k {['%.3f' % r for r in ratios]}, orders {['%.2f' % x for x in q]}")
    # Superlinear: the contraction factor itself shrinks to zero ...
    assert all(b <= a * 1.05 for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[-1] < 0.5 * ratios[0]
    # ... but not quadratically: the measured order lies between 1 and 2.
    assert all(0.9 < x < 2.0 for x in q), q


def test_identity_error_recurrence():
    """One identity sweep obeys e^{k+1}_n = e^{k+1}_{n-1} + (Φ_{n-1}(X^k) − Φ_{n-1}(X*)) − e^k_{n-1}.

    The exact form of docs/design.md, "The banded system" fact 3 (its linearisation is
    ``e^{k+1}_n = e^{k+1}_{n-1} + (J − I) e^k_{n-1}``), checked to round-off.
    """
    system = vdp_system(n=10, t_end=2.0)
    star = pitsolve.sequential(system).ys
    one = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False).ys
    two = pitsolve.solve(system, "identity", tol=0.0, max_iters=2, throw=False, guard=False).ys
    # The iterate of iteration 1 beyond the accepted front is the window iterate; recompute Φ on it.
    idx = torch.arange(10)
    phi_k = system.propagate_flat(one[:-1], idx)
    phi_star = system.propagate_flat(star[:-1], idx)
    e1, e2 = one - star, two - star
    lhs = e2[2:]
    rhs = e2[1:-1] + (phi_k[1:] - phi_star[1:]) - e1[1:-1]
    assert float((lhs - rhs).abs().max()) < 1e-12
