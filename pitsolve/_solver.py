"""The windowed parallel-in-time iteration (paper Algorithm 1) and the sequential reference."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from . import _execution, _guard, _tuning
from . import initializers as _initializers
from . import jacobians as _jacobians
from ._acceptance import check_rule
from ._devices import digest, plain_repr
from ._errors import ConvergenceError, InputTypeError, InputValueError, NonFiniteError
from ._execution import Executor
from ._grid import check_positive_int, check_tolerance
from ._guard import Guard
from ._loop import Loop
from ._options import DEFAULT_TOL
from ._solution import Iteration, Solution, Status
from ._system import BandedSystem
from .jacobians._base import JacobianStrategy

__all__ = ["solve", "sequential"]


def solve(
    system: BandedSystem,
    jacobian: Union[str, JacobianStrategy] = "identity",
    *,
    window: Union[None, int, str, "_tuning.AutoWindow"] = None,
    tol: float = DEFAULT_TOL,
    max_iters: Optional[int] = None,
    init=None,
    progress: bool = False,
    throw: bool = True,
    callback: Optional[Callable[[Iteration], None]] = None,
    devices: Optional[Sequence] = None,
    executor: Optional[Executor] = None,
    guard: Union[bool, Guard] = True,
    trajectory: bool = True,
    stopping: str = "error",
) -> Solution:
    r"""Solve the banded system ``X_{n+1} = Φ_n(X_n)`` by parallel quasi-Newton sweeps.

    Algorithm 1 of the paper with a pluggable Jacobian approximation and an
    acceptance rule that bounds the distance from the sequential result.
    Each iteration over the window ``start … start+p``:

    1. evaluates ``Φ_i(X^k_i)`` for all ``p`` window points in **one** batched
       :meth:`~pitsolve.BandedSystem.propagate` call (line 4);
    2. (``stopping="error"``) measures the defects ``X^k_{n+1} − Φ_n(X^k_n)``
       of the iterate and accepts the leading points whose error estimate
       against the sequential result stays within ``tol``, then ``Φ`` of the
       last of them — at least one point, since ``Φ`` of the accepted anchor
       is exact (line 7; :mod:`pitsolve._acceptance`);
    3. computes the next iterate of the other points with the strategy's update
       ``X^{k+1}_{n+1} = Φ_n(X^k_n) + A_n (X^{k+1}_n − X^k_n)`` (lines 5–6);
       with ``stopping="eq14"`` the paper's test
       ``RMS((X^{k+1}_n − X^k_n)/s_n) ≤ tol`` then decides acceptance;
    4. slides the window past the accepted points and fills the points
       entering it with ``init`` from the newest iterate (lines 8–10).

    Because the window advances by at least one point per iteration, the
    solve ends after at most ``N`` iterations (finite termination).  The
    strategy instance is not modified (its per-solve state lives in the
    solve), so one instance may serve concurrent solves.

    Args:
        system: the banded system.
        jacobian, window, tol, max_iters, init, progress, throw, callback, devices, executor, guard,
        trajectory, stopping: the solve's options, each described (with its
            default and how it maps to the steps above) on
            :class:`~pitsolve.SolveOptions`, which holds them as one value for
            :func:`~pitsolve.odeint`, :func:`~pitsolve.sdeint` and their adjoints.

    Returns:
        A :class:`~pitsolve.Solution`.
    """
    started = time.perf_counter()
    checked = _check(system, jacobian, window=window, tol=tol, max_iters=max_iters, init=init, throw=throw,
                     callback=callback, devices=devices, executor=executor, guard=guard, trajectory=trajectory,
                     stopping=stopping)
    executor, N = checked.executor, checked.N
    system = executor.start(system, checked.settings)  # the system the loop runs on (first device)
    try:
        tuning, p = None, checked.p
        if checked.auto:
            model = window if isinstance(window, _tuning.AutoWindow) else _tuning.AutoWindow()
            p, tuning = _tuning.auto_window(system, executor, N, model)
        loop = Loop(system, checked.strategy, checked.initializer, executor, N=N, p=p,
                    window=p if checked.auto else window, tol=checked.tol, max_iters=checked.max_iters,
                    stopping=checked.stopping, guard=checked.guard, trajectory=trajectory, progress=progress,
                    callback=callback, started=started)
        solution = loop.run()
        solution.tuning = tuning
        solution.settings = {**checked.settings, "window_chosen": repr(p)}
        solution = executor.finish(solution)
    finally:
        executor.close()
    if not solution.converged and throw:
        error = NonFiniteError if solution.status is Status.NONFINITE else ConvergenceError
        raise error(solution.message + " (pass throw=False to get the partial Solution)", solution)
    return solution


@dataclass
class _Checked:
    """:func:`solve`'s arguments, checked and resolved (strategies, executor, window), and the settings record."""

    strategy: JacobianStrategy
    initializer: object
    executor: Executor
    guard: object
    stopping: str
    N: int
    p: int
    auto: bool
    tol: float
    max_iters: int
    settings: Dict[str, str]


def _check(system, jacobian, *, window, tol, max_iters, init, throw, callback, devices, executor, guard,
           trajectory, stopping) -> _Checked:
    """Every argument of :func:`solve` checked before any model call, with a typed error naming the fix."""
    if not isinstance(system, BandedSystem):
        raise InputTypeError(
            f"system is a {type(system).__name__}; pass a pitsolve.BandedSystem such as ODESystem or SDESystem."
        )
    strategy = _jacobians.get(jacobian)
    initializer = _initializers.get(init)
    N = check_positive_int(system.num_intervals, "system.num_intervals")
    auto = isinstance(window, _tuning.AutoWindow) or (isinstance(window, str) and window == "auto")
    if isinstance(window, str) and not auto:
        raise InputValueError(
            f"window={window!r} is not a window; pass an int >= 1, None (all N), 'auto' or a pitsolve.AutoWindow."
        )
    p = N if window is None or auto else check_positive_int(window, "window")
    if p > N:
        raise InputValueError(f"window={p} is larger than the number of intervals N={N}; pass window <= N or None.")
    tol = check_tolerance(tol)
    system.checked_costs()
    max_iters = N if max_iters is None else check_positive_int(max_iters, "max_iters")
    if callback is not None and not callable(callback):
        raise InputTypeError(f"callback={callback!r} is not callable; pass a function of one Iteration, or None.")
    guard = _guard.resolve(guard)
    stopping = check_rule(stopping)
    if not isinstance(trajectory, bool):
        raise InputTypeError(f"trajectory={trajectory!r} must be True (keep X_0 … X_N) or False (X_0 and X_N only).")
    executor = _execution.resolve(devices, executor)
    settings = {
        "jacobian": f"{plain_repr(strategy)} {digest(strategy)}",
        "init": f"{plain_repr(initializer)} {digest(initializer)}",
        "window": repr(window),
        "tol": repr(float(tol)),
        "max_iters": repr(max_iters),
        "throw": repr(bool(throw)),
        "guard": repr(guard),
        "trajectory": repr(trajectory),
        "stopping": repr(stopping),
    }
    if auto and not isinstance(executor, (_execution.LocalExecutor, _execution.MultiDeviceExecutor)):
        raise InputValueError(
            f"window='auto' times the model on this process's devices, which ranks of a {type(executor).__name__} "
            "would measure differently; pass the same integer window on every rank."
        )
    return _Checked(strategy=strategy, initializer=initializer, executor=executor, guard=guard, stopping=stopping,
                    N=N, p=p, auto=auto, tol=float(tol), max_iters=max_iters, settings=settings)


def sequential(system: BandedSystem, *, progress: bool = False, trajectory: bool = True) -> Solution:
    """The reference: ``X_{n+1} = Φ_n(X_n)`` one interval after another (paper Eq. 7).

    ``progress`` shows a tqdm bar over the N intervals; ``trajectory=False``
    keeps only ``X_0`` and ``X_N`` (as in :func:`solve`).
    """
    started = time.perf_counter()
    if not isinstance(system, BandedSystem):
        raise InputTypeError(f"system is a {type(system).__name__}; pass a pitsolve.BandedSystem.")
    spec = system.spec
    N = check_positive_int(system.num_intervals, "system.num_intervals")
    steps = 0
    if not isinstance(trajectory, bool):
        raise InputTypeError(f"trajectory={trajectory!r} must be True (keep X_0 … X_N) or False (X_0 and X_N only).")
    # The points are kept as a list and stacked once (no writes into a shared buffer), so autograd
    # runs through the solve: ``sequential(system).ys.sum().backward()`` is backprop through Eq. 7.
    x = spec.flatten(system.initial_state).unsqueeze(0)
    kept = [x]
    for n in tqdm(range(N), disable=not progress, desc="sequential", unit="pt", leave=False):
        idx = torch.tensor([n], device=spec.device)
        x = system.propagate_flat(x, idx)
        steps += system.call_cost(idx)[1]
        if not torch.isfinite(x).all():
            raise NonFiniteError(
                f"the sequential solve produced NaN or Inf in interval {n} of {N}; "
                "check the system for blow-up or lower the step size."
            )
        if trajectory:
            kept.append(x)
    ys = torch.cat(kept if trajectory else [kept[0], x])
    return Solution(
        ys=spec.trajectory(ys),
        converged=True,
        status=Status.SEQUENTIAL,
        message=Status.SEQUENTIAL.value.format(N=N),
        iterations=N,
        nfe=steps,
        depth=steps,
        num_intervals=N,
        wall_time=time.perf_counter() - started,
    )
