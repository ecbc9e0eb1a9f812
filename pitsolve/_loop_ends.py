"""How a :class:`~pitsolve._loop.Loop` ends: the guard's sequential rung, and the :class:`~pitsolve.Solution` it returns."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from ._solution import Solution, Status
from .jacobians._base import Cost

if TYPE_CHECKING:
    from ._loop import Loop

__all__ = ["finish_sequentially", "result"]


def finish_sequentially(loop: "Loop") -> None:
    """The guard's last rung: ``X_{n+1} = Φ_n(X_n)`` point by point, as lean as :func:`~pitsolve.sequential`.

    The points are exact continuations of the accepted front, but the
    front's own error estimate ``ê`` still follows the flow: while it is
    non-zero, each call carries the error bound's twin row ``X_n − ê``,
    whose image gives ``J_n ê`` (docs/design.md, "The error bound"), at
    no extra depth.
    """
    f, spec, bound = loop.front, loop.spec, loop.bound
    loop.bar.set_description("pitsolve[sequential]")
    x = f.x[:1]
    while f.start < loop.N and f.iterations < loop.max_iters:
        f.iterations += 1
        n = f.start
        idx = torch.tensor([n], device=spec.device)
        twin = bound.twin(x[0]) if bound is not None else None
        f.history["twin_rows"].append(int(twin is not None))
        if twin is not None:
            out = loop.executor.propagate(torch.cat([x, twin]), idx.repeat(2))
            depth, nfe = loop.system.call_cost(idx.repeat(2))
            anchor, x = x[0], out[:1]
            bound.advance_exact(x[0], out[1], n + 1, anchor)
        else:
            x = loop.executor.propagate(x, idx)
            depth, nfe = loop.system.call_cost(idx)
        loop.cost.nfe += nfe
        loop.cost.depth += depth
        if not bool(torch.isfinite(x).all()):
            f.status = Status.NONFINITE
            break
        f.history["window_starts"].append(n)
        f.start += 1
        loop.ys[f.start if loop.trajectory else 1] = x[0]
        f.history["residuals"].append(0.0)
        f.history["accepted"].append(f.start)
        loop.bar.update(1)
    f.x = x
    if f.start >= loop.N:
        f.status = Status.CONVERGED

def result(loop: "Loop") -> Solution:
    """The :class:`~pitsolve.Solution` of the loop's state: status (certified or not), best iterate, records."""
    f, N = loop.front, loop.N
    if f.status is Status.CONVERGED and loop.bound is not None and not loop.bound.estimate <= loop.floor:
        f.status = Status.UNCERTIFIED
    if f.status not in (Status.CONVERGED, Status.UNCERTIFIED):
        # Best iterate: accepted points, the window's iterate, initial guesses beyond it.
        x, s = f.x, f.start
        end = s + x.shape[0] - 1
        rest = loop.initializer.initialize(loop.system, x[-1], end, N - end, Cost()) if end < N else x[-1:]
        if loop.trajectory:
            loop.ys[s + 1 : end + 1] = x[1:]
            if end < N:
                loop.ys[end + 1 :] = rest
        else:
            loop.ys[1] = rest[-1]
    bound = loop.bound
    estimate = None if bound is None else bound.estimate
    message = f.status.value.format(N=N, iterations=f.iterations, accepted=f.start, tol=loop.tol,
                                    estimate=estimate if estimate is not None else math.nan,
                                    gain=bound.gain_total if bound is not None else math.nan)
    return Solution(
        ys=loop.spec.trajectory(loop.ys),
        converged=f.status is Status.CONVERGED,
        status=f.status,
        message=message,
        iterations=f.iterations,
        nfe=loop.cost.nfe,
        depth=loop.cost.depth,
        num_intervals=N,
        resets=f.resets,
        fallbacks=loop.ladder.fallbacks,
        budget_sweeps=loop.ladder.budget_sweeps,
        jacobian=loop.strategy.name,
        window=loop.window,
        tol=loop.tol,
        stopping=loop.stopping,
        error_estimate=estimate,
        wall_time=time.perf_counter() - loop.started,
        **f.history,
    )
