"""The windowed parallel-in-time iteration (paper Algorithm 1) and the sequential reference."""

from __future__ import annotations

import math
import numbers
import time
from typing import Callable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from . import _execution, _guard, _tuning
from . import initializers as _initializers
from . import jacobians as _jacobians
from ._devices import digest, plain_repr
from ._errors import ConvergenceError, InputTypeError, InputValueError, NonFiniteError
from ._execution import Executor
from ._grid import check_positive_int
from ._guard import Guard, Ladder
from ._solution import Iteration, Solution, Status
from ._system import BandedSystem
from .jacobians._base import Cost, JacobianStrategy, Sweep

__all__ = ["solve", "sequential"]

DEFAULT_TOL = 1e-6


def solve(
    system: BandedSystem,
    jacobian: Union[str, JacobianStrategy] = "identity",
    *,
    window: Union[None, int, str] = None,
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
) -> Solution:
    r"""Solve the banded system ``X_{n+1} = Φ_n(X_n)`` by parallel quasi-Newton sweeps.

    Algorithm 1 of the paper with a pluggable Jacobian approximation.  Each
    iteration over the window ``start … start+p``:

    1. evaluates ``Φ_i(X^k_i)`` for all ``p`` window points in **one** batched
       :meth:`~pitsolve.BandedSystem.propagate` call (line 4);
    2. computes ``X^{k+1}`` with the strategy's update
       ``X^{k+1}_{n+1} = Φ_n(X^k_n) + A_n (X^{k+1}_n − X^k_n)`` (lines 5–6);
    3. tests each point with Eq. 14, ``RMS((X^{k+1}_n − X^k_n)/s_n) ≤ tol``
       (``s_n`` from :meth:`~pitsolve.BandedSystem.error_scale`), and accepts
       the leading run of passing points — at least one, since the first
       point depends only on the fixed anchor and is exact (line 7);
    4. slides the window past the accepted points and fills the points
       entering it with ``init`` from the newest iterate (lines 8–10).

    Because the window advances by at least one point per iteration, the
    solve ends after at most ``N`` iterations (finite termination).

    Args:
        system: the banded system.
        jacobian: a strategy from :mod:`pitsolve.jacobians`, or its name.
        window: ``p``, the number of points iterated at once (``None``: all N;
            ``"auto"``: the power of two ``≤ N`` (or N) of least predicted
            solve time ``c(p)·min(N, 4 + N/p)`` on the batch-cost curve ``c(p)``,
            measured once per process on this system and device, see
            :mod:`pitsolve._tuning`;
            ``Solution.tuning`` holds the measured curve).
        tol: ``δ`` of Eq. 14 (``≥ 0``).
        max_iters: stop after this many iterations (``None``: N, which always
            suffices).
        init: initial guesses (:mod:`pitsolve.initializers`): ``"constant"``
            (default), ``"coarse"``, a trajectory ``[N+1, *shape]`` or an
            :class:`~pitsolve.initializers.Initializer`.
        progress: show a tqdm bar of accepted points, iteration and residual.
        throw: raise :class:`~pitsolve.ConvergenceError` when the solve does not
            converge; with ``False`` return the best iterate with its status.
        callback: called after every sweep with an :class:`~pitsolve.Iteration`
            (e.g. to record iterates for convergence plots).
        devices: spread each sweep over these devices of this process, e.g.
            ``["cuda:0", "cuda:1"]`` (:class:`~pitsolve.MultiDeviceExecutor`):
            the system is replicated once per device with
            :meth:`~pitsolve.BandedSystem.to`, each sweep's window is split
            over the replicas and evaluated concurrently, and the loop state,
            the result included, stays on the first device.  ``None``: one
            batched call where the system lives.
        executor: where the batched calls run, as an
            :class:`~pitsolve.Executor` (e.g.
            :class:`pitsolve.distributed.DistributedExecutor`; its ``stats``
            hold the time in model calls and in communication); not together
            with ``devices``.
        guard: the divergence guards (:class:`~pitsolve.Guard`): on a blow-up
            or a growing residual the sweep is damped, then replaced by the
            identity update, then by the sequential sweep (recorded in
            ``Solution.fallbacks``), and a strategy's extra sequential depth
            is spent only while the sweeps stay within the sequential solve's
            depth ``N·K`` (``Solution.budget_sweeps``).  ``True``: the default
            :class:`~pitsolve.Guard`; ``False``: the bare strategy, e.g. to
            study its convergence.
        trajectory: keep every accepted point in ``Solution.ys`` (``N+1``
            rows).  ``False`` keeps only ``X_0`` and ``X_N`` (two rows) and
            no per-point residual history, so that memory is bounded by the
            window rather than by ``N``.

    Returns:
        A :class:`~pitsolve.Solution`.
    """
    started = time.perf_counter()
    if not isinstance(system, BandedSystem):
        raise InputTypeError(
            f"system is a {type(system).__name__}; pass a pitsolve.BandedSystem such as ODESystem or SDESystem."
        )
    strategy = _jacobians.get(jacobian)
    initializer = _initializers.get(init)
    N = check_positive_int(system.num_intervals, "system.num_intervals")
    auto = isinstance(window, str) and window == "auto"
    if isinstance(window, str) and not auto:
        raise InputValueError(f"window={window!r} is not a window; pass an int >= 1, None (all N) or 'auto'.")
    p = N if window is None or auto else check_positive_int(window, "window")
    if p > N:
        raise InputValueError(f"window={p} is larger than the number of intervals N={N}; pass window <= N or None.")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise InputValueError(f"tol={tol!r} must be a finite number >= 0 (e.g. 1e-6).")
    max_iters = N if max_iters is None else check_positive_int(max_iters, "max_iters")
    if callback is not None and not callable(callback):
        raise InputTypeError(f"callback={callback!r} is not callable; pass a function of one Iteration, or None.")
    guard = _guard.resolve(guard)
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
    }
    if auto and not isinstance(executor, (_execution.LocalExecutor, _execution.MultiDeviceExecutor)):
        raise InputValueError(
            f"window='auto' times the model on this process's devices, which ranks of a {type(executor).__name__} "
            "would measure differently; pass the same integer window on every rank."
        )
    system = executor.start(system, settings)  # the system the loop runs on (first device)
    try:
        tuning = None
        if auto:
            p, tuning = _tuning.auto_window(system, executor, N)
        solution = _iterate(system, strategy, initializer, executor, N, p, p if auto else window, tol, max_iters,
                            progress, callback, started, guard, trajectory)
        solution.tuning = tuning
        solution = executor.finish(solution)
    finally:
        executor.close()
    if not solution.converged and throw:
        error = NonFiniteError if solution.status is Status.NONFINITE else ConvergenceError
        raise error(solution.message + " (pass throw=False to get the partial Solution)", solution)
    return solution


def _iterate(system, strategy, initializer, executor, N, p, window, tol, max_iters, progress, callback, started,
             guard, trajectory):
    """Algorithm 1 on the executor's system: the loop of :func:`solve`, after its checks."""
    spec = system.spec
    strategy.reset(system)
    initializer.reset(system)
    routed = executor.route(system)
    ladder = Ladder(guard, strategy, system)
    floor = max(tol, 10 * torch.finfo(spec.dtype).eps)  # stopping measures below it are round-off

    K = system.steps_per_interval
    cost = Cost()
    x0 = spec.flatten(system.initial_state)
    # The accepted points: all of them, or (trajectory=False) the newest one only, so that
    # memory is bounded by the window rather than by N.
    ys = torch.empty((N + 1 if trajectory else 2, spec.size), dtype=spec.dtype, device=spec.device)
    ys[0] = x0
    x = torch.cat([x0.unsqueeze(0), initializer.initialize(system, x0, 0, p, cost)])
    start, x_start, iterations, resets = 0, 0, 0, 0
    status = Status.MAX_ITERS
    history = dict(residuals=[], point_residuals=[], window_starts=[], accepted=[])
    bar = tqdm(total=N, disable=not (progress and executor.leader), desc=f"pitsolve[{strategy.name}]",
               unit="pt", leave=False)
    try:
        while True:
            iterations += 1
            current = ladder.choose(start, p)
            indices = torch.arange(start, start + p, device=spec.device)
            fx = executor.propagate(x[:-1], indices)  # line 4: the parallel part
            cost.nfe += system.interval_cost(indices)
            before = cost.depth
            cost.depth += K
            finite = torch.isfinite(fx).all(dim=1)
            if not finite[0]:  # Φ of the accepted anchor itself: the system blows up
                status = Status.NONFINITE
                break
            new, valid, change = _update(current, routed, system, initializer, start, indices, x, fx, finite, cost)
            ladder.charge(cost.depth - before)
            reset = valid < p
            resets += reset

            # Eq. 14 per point, and the leading run of accepted points (line 7).
            ratio = system.error_ratio(x[1:] + change, x[1:], indices + 1)
            passed = ratio <= tol
            passed[valid:] = False  # re-initialised rows are fresh guesses, never accepted as converged
            # The leading run of passing points, and one more: the point after the run is Φ of a
            # point that passed, so it is as accurate as the run itself (ParaDiGMS' rule); with an
            # empty run that is the first point, Φ of the accepted anchor, exact.  The first point
            # does not pass by fiat: if it moved, the points after it were computed from its old
            # value and must be swept again.
            run = int(torch.cumprod(passed.to(torch.int64), 0).sum())
            shift = run
            if run < valid:  # never a re-initialised row
                if run > 0:
                    new = _after_run(new, fx, x, run, system.passive)
                shift = run + 1
            residual = float(ratio.max())
            steps = None
            if ladder.compares_steps and valid == p:
                # The sweep's step against the identity update's (free: a cumulative sum of drifts).
                drift_sum = x[0] + torch.cumsum(fx - x[:-1], dim=0)
                steps = (float(system.error_ratio(new, x[1:], indices + 1).max()),
                         max(float(system.error_ratio(drift_sum, x[1:], indices + 1).max()), floor))
            history["residuals"].append(residual)
            if trajectory:
                history["point_residuals"].append(ratio.detach().cpu())
            history["window_starts"].append(start)

            if trajectory:
                ys[start + 1 : start + 1 + shift] = new[:shift]
            else:
                ys[1] = new[shift - 1]
            old_end = start + p
            x = torch.cat([x[:1], new])
            start += shift
            history["accepted"].append(start)
            if callback is not None:
                callback(Iteration(iterations, start - shift, new, ratio, start, spec))
            bar.update(shift)
            bar.set_postfix(iteration=iterations, residual=f"{residual:.2e}")
            if start >= N:
                status = Status.CONVERGED
                break
            if iterations >= max_iters:
                break
            # Slide the window (line 10) and fill the points entering it (lines 8–9).
            p = min(p, N - start)
            x = x[shift : shift + p + 1]
            x_start = start
            if ladder.watch(iterations, start, start - shift, ratio, bool(reset), floor, steps):
                # Down a rung: discard the unaccepted iterates, restart them from the front.
                if ladder.sequential:
                    p, initializer = 1, _initializers.Constant()
                x = torch.cat([x[:1], initializer.initialize(system, x[0], start, p, cost)])
                bar.set_description(f"pitsolve[{ladder.strategy.name}]")
            else:
                need = start + p - old_end
                if need > 0:
                    fresh = initializer.initialize(system, x[-1], old_end, need, cost)
                    x = torch.cat([x, fresh])
            current.slide(shift)
            if current is not ladder.strategy:
                ladder.strategy.slide(shift)
    finally:
        bar.close()

    converged = status is Status.CONVERGED
    if not converged:
        # Best iterate: accepted points, the window's iterate, initial guesses beyond it.
        end = x_start + x.shape[0] - 1
        rest = initializer.initialize(system, x[-1], end, N - end, Cost()) if end < N else x[-1:]
        if trajectory:
            ys[x_start + 1 : end + 1] = x[1:]
            if end < N:
                ys[end + 1 :] = rest
        else:
            ys[1] = rest[-1]
    solution = Solution(
        ys=spec.trajectory(ys),
        converged=converged,
        status=status,
        message=status.value.format(N=N, iterations=iterations, accepted=start),
        iterations=iterations,
        nfe=cost.nfe,
        depth=cost.depth,
        num_intervals=N,
        resets=resets,
        fallbacks=ladder.fallbacks,
        budget_sweeps=ladder.budget_sweeps,
        jacobian=strategy.name,
        window=window,
        tol=tol,
        wall_time=time.perf_counter() - started,
        **history,
    )
    return solution


def _update(strategy, routed, system, initializer, start, indices, x, fx, finite, cost):
    """The strategy's update on the window, guarded against non-finite iterates.

    Iterates far ahead of the accepted front can diverge (Newton or Anderson
    on a long horizon).  If ``Φ`` or the update is non-finite from row ``j``
    on, the update is kept up to ``j`` and the rest of the window is filled
    afresh by the initialiser from the last finite point.  The leading row
    is ``Φ`` of the fixed anchor: exact, whatever the strategy did.
    ``routed`` is the system as the strategies see it (batched calls through
    the executor), ``system`` the loop's own.
    Returns the new iterate, the number of its leading rows that came from
    the update (``p`` when nothing was reset; the re-initialised rows after
    them must not pass the stopping rule in this sweep) and the change the
    stopping rule reads (:meth:`~pitsolve.jacobians.JacobianStrategy.change`).
    """
    p = fx.shape[0]
    j = p if bool(finite.all()) else int(torch.nonzero(~finite)[0])
    sweep = Sweep(system=routed, start=start, indices=indices[:j], x=x[: j + 1], fx=fx[:j], cost=cost)
    new = torch.cat([fx[:1], strategy.update(sweep)[1:]])
    if system.passive is not None:
        # Parts Φ does not read (its Jacobian columns there are zero): take Φ's value (A = 0).
        new = new.clone()
        new[:, system.passive] = fx[: new.shape[0], system.passive]
    change = strategy.change(sweep, new)
    ok = torch.isfinite(new).all(dim=1) & torch.isfinite(change).all(dim=1)
    if not bool(ok.all()):
        j = int(torch.nonzero(~ok)[0])
        new, change = new[:j], change[:j]
    if new.shape[0] == p:
        return new, p, change
    fresh = initializer.initialize(system, new[-1], start + new.shape[0], p - new.shape[0], cost)
    change = torch.cat([change, fresh - x[1 + new.shape[0] :]])
    return torch.cat([new, fresh]), new.shape[0], change


def _after_run(new, fx, x, run, passive):
    """Row ``run`` of the iterate rebuilt from its accepted predecessor: ``Φ(X^k) + (X^{k+1} − X^k)``.

    Its predecessor (row ``run − 1``) passed Eq. 14, so ``X^k`` and ``X^{k+1}``
    there differ by at most the tolerance and this value is ``Φ`` of the
    accepted point to that order, whatever the strategy's own value for the
    row was (an Anderson extrapolation, say).  Passive parts take ``Φ``'s value.
    """
    row = fx[run] + (new[run - 1] - x[run])
    if passive is not None:
        row[passive] = fx[run, passive]
    new = new.clone()
    new[run] = row
    return new


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
    steps = system.interval_cost(torch.arange(N, device=spec.device))
    if not isinstance(trajectory, bool):
        raise InputTypeError(f"trajectory={trajectory!r} must be True (keep X_0 … X_N) or False (X_0 and X_N only).")
    ys = torch.empty((N + 1 if trajectory else 2, spec.size), dtype=spec.dtype, device=spec.device)
    ys[0] = spec.flatten(system.initial_state)
    for n in tqdm(range(N), disable=not progress, desc="sequential", unit="pt", leave=False):
        idx = torch.tensor([n], device=spec.device)
        i, j = (n, n + 1) if trajectory else (min(n, 1), 1)
        ys[j] = system.propagate_flat(ys[i : i + 1], idx)[0]
        if not torch.isfinite(ys[j]).all():
            raise NonFiniteError(
                f"the sequential solve produced NaN or Inf in interval {n} of {N}; "
                "check the system for blow-up or lower the step size."
            )
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
