"""The windowed iteration of :func:`~pitsolve.solve` (paper Algorithm 1) as a small loop over named state.

One sweep is five phases, each a method of :class:`Loop`:

1. :meth:`~Loop.propagate` — ``Φ`` of every window point in one batched call
   (Algorithm 1, line 4), plus one re-evaluation of a known point in the
   second sweep to diagnose a ``Φ`` that is not deterministic;
2. :meth:`~Loop.accept` (rule ``"error"``) — the defects of the input
   iterate and the error bound decide which points become final
   (:mod:`pitsolve._acceptance`);
3. :meth:`~Loop.update` — the strategy's quasi-Newton update on the points
   not yet final (lines 5–6), guarded against non-finite rows; under the
   ``"eq14"`` rule the change test then decides acceptance (line 7);
4. :meth:`~Loop.record` — history, callback, progress bar;
5. :meth:`~Loop.slide` — move the window past the accepted points and fill
   the points entering it (lines 8–10), or move down the guard's ladder.

The per-solve state of the strategy and the guard lives here (the
strategy instance is never modified), so concurrent solves may share one
strategy object.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from tqdm.auto import tqdm

from ._acceptance import ErrorBound
from ._errors import InputValueError
from ._guard import Guard, Ladder
from ._loop_ends import finish_sequentially, result
from ._solution import Iteration, Solution, Status
from ._system import BandedSystem
from .jacobians._base import Cost, JacobianStrategy, Sweep

__all__ = ["Loop"]


@dataclass
class Front:
    """The named state of a solve between sweeps.

    Attributes:
        start: the number of accepted points (the anchor's index).
        x: ``[p+1, D]``: the anchor ``X_start`` and the iterate of the window's points.
        p: the window's size.
        iterations: sweeps done.
        resets: sweeps that re-initialised non-finite rows.
        status: how the solve stands.
    """

    start: int
    x: torch.Tensor
    p: int
    iterations: int = 0
    resets: int = 0
    status: Status = Status.MAX_ITERS
    history: Dict[str, List] = field(
        default_factory=lambda: dict(residuals=[], point_residuals=[], window_starts=[], accepted=[], twin_rows=[])
    )


class Loop:
    """One solve's loop: the state of :class:`Front` and the phases that change it."""

    def __init__(self, system: BandedSystem, strategy: JacobianStrategy, initializer, executor, *, N: int, p: int,
                 window, tol: float, max_iters: int, stopping: str, guard: Optional[Guard], trajectory: bool,
                 progress: bool, callback: Optional[Callable[[Iteration], None]], started: float):
        self.system, self.executor, self.N, self.tol = system, executor, N, tol
        self.window, self.max_iters, self.stopping = window, max_iters, stopping
        self.trajectory, self.callback, self.started = trajectory, callback, started
        self.spec = spec = system.spec
        self.strategy = strategy
        self.initializer = copy.copy(initializer)  # an initialiser's reset may keep per-solve data
        self.initializer.reset(system)
        self.routed = executor.route(system)
        self.ladder = Ladder(guard, strategy, system)
        self.bound = ErrorBound(system, tol, N) if stopping == "error" else None
        self.floor = max(tol, 10 * torch.finfo(spec.dtype).eps)  # stopping measures below it are round-off
        self.cost = Cost()
        x0 = spec.flatten(system.initial_state)
        # The accepted points: all of them, or (trajectory=False) the newest one only, so that
        # memory is bounded by the window rather than by N.
        self.ys = torch.empty((N + 1 if trajectory else 2, spec.size), dtype=spec.dtype, device=spec.device)
        self.ys[0] = x0
        x = torch.cat([x0.unsqueeze(0), self.initializer.initialize(system, x0, 0, p, self.cost)])
        self.front = Front(start=0, x=x, p=p)
        self._probe = None  # (index, state, Φ) of a point to evaluate again (determinism check)
        self.bar = tqdm(total=N, disable=not (progress and executor.leader), desc=f"pitsolve[{strategy.name}]",
                        unit="pt", leave=False)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> Solution:
        f = self.front
        try:
            while True:
                if self.ladder.sequential:
                    finish_sequentially(self)
                    break
                f.iterations += 1
                fx, finite = self.propagate()
                if not finite[0]:  # Φ of the accepted anchor itself: the system blows up
                    f.status = Status.NONFINITE
                    break
                j = self.accept(fx, finite) if self.bound is not None else 0
                new, shift, ratio, valid, steps = self.update(fx, finite, j)
                self.record(new, shift, ratio, steps[2])
                if f.start >= self.N:
                    f.status = Status.CONVERGED
                    break
                if f.iterations >= self.max_iters:
                    f.x = self._rows(new, shift, steps)  # the best iterate, anchored at the front
                    break
                self.slide(new, shift, ratio, valid, steps)
        finally:
            self.bar.close()
        return result(self)

    # -- 1. propagate -----------------------------------------------------------------------------
    def propagate(self):
        """``Φ`` of the window's points in one batched call; the second sweep re-evaluates one known point."""
        f, spec = self.front, self.spec
        indices = torch.arange(f.start, f.start + f.p, device=spec.device)
        rows, ids = f.x[:-1], indices
        probe = self._probe if f.iterations == 2 else None
        if probe is not None:
            rows = torch.cat([rows, probe[1].unsqueeze(0)])
            ids = torch.cat([indices, probe[0].view(1)])
        # The error bound's twin row X_a − c·ê: J_a ê at no extra depth (one more row in the batch).
        twin = self.bound.twin(f.x[0]) if self.bound is not None else None
        if twin is not None:
            rows = torch.cat([rows, twin])
            ids = torch.cat([ids, indices[:1]])
        tangents = self.ladder.strategy.wave_tangents(self.system) if f.p > 1 else None
        self._jacobian = None
        if tangents is None:
            out = self.executor.propagate(rows, ids)
            depth, nfe = self.system.call_cost(ids)
        else:
            out, self._jacobian = self._propagate_with_jacobian(rows, ids, f.p, tangents)
            depth, nfe = self.system.call_cost(self._wave_ids)
        self.cost.nfe += nfe
        self.cost.depth += depth
        self._charged = depth
        fx = out[: f.p]
        self._twin_image = out[-1] if twin is not None else None
        f.history["twin_rows"].append(int(twin is not None))
        if f.iterations == 1:
            self._probe = (indices[0], f.x[0].clone(), fx[0].clone())
        if probe is not None:
            self._check_deterministic(probe, out[f.p])
        return fx, torch.isfinite(fx).all(dim=1)

    def _propagate_with_jacobian(self, rows: torch.Tensor, ids: torch.Tensor, p: int, tangents: torch.Tensor):
        """``Φ`` of every row and ``J_i v`` of rows ``1 … p−1`` for each tangent ``v``, in one batched JVP call.

        Row 0 (the anchor: its Jacobian multiplies ``δ_0 = 0``) and rows past
        ``p`` (the determinism probe) get one zero tangent; the others one copy
        per tangent.  Returns the ``Φ`` rows and ``J`` ``[p, D, m]`` (row 0 zero).
        """
        m, D = tangents.shape
        counts = torch.ones(rows.shape[0], dtype=torch.long)
        counts[1:p] = m
        first = torch.cumsum(counts, 0) - counts  # the first copy of each row
        xs = rows.repeat_interleave(counts.to(rows.device), dim=0)
        xi = ids.repeat_interleave(counts.to(ids.device))
        tv = torch.zeros_like(xs)
        if p > 1:
            tv[int(first[1]) : int(first[1]) + (p - 1) * m] = tangents.to(xs).repeat(p - 1, 1)
        y, jv = self.executor.jvp(xs, xi, tv)
        self._wave_ids = xi
        jac = torch.zeros((p, D, m), dtype=y.dtype, device=y.device)
        if p > 1:
            block = jv[int(first[1]) : int(first[1]) + (p - 1) * m]
            jac[1:] = block.view(p - 1, m, D).transpose(1, 2)
        return y[first.to(y.device)], jac

    def _check_deterministic(self, probe, again: torch.Tensor) -> None:
        index, _, first = probe
        idx = index.view(1)
        gap = float(self.system.checked_error_ratio(again.unsqueeze(0), first.unsqueeze(0), idx + 1)[0].detach())
        limit = max(1e4 * torch.finfo(self.spec.dtype).eps, 1e-2 * self.tol)
        if not (gap <= limit) and bool(torch.isfinite(first).all()):
            raise InputValueError(
                f"{type(self.system).__name__}.propagate is not deterministic: interval {int(index)} evaluated "
                f"twice at the same state gave results {gap:.3g} apart (in the stopping rule's measure; "
                f"round-off allows {limit:.2g}), so no solve can match the sequential one.  Fix the randomness "
                "inside Φ (draw noise up front from a seeded generator, e.g. SDESystem's Brownian path) "
                "or make the model deterministic (eval mode, no dropout)."
            )

    # -- 2. accept (rule "error") -----------------------------------------------------------------
    def accept(self, fx: torch.Tensor, finite: torch.Tensor) -> int:
        """Accept the leading input points the error bound allows, then ``Φ`` of the last (see :class:`ErrorBound`).

        Returns ``j``: input points ``x[1…j]`` are final and ``fx[j]`` is the point after them.
        """
        f = self.front
        indices = torch.arange(f.start, f.start + f.p, device=self.spec.device)
        j, beta = self.bound.run(f.start, f.x, fx, indices, finite, self._twin_image)
        self._beta = beta
        return j

    # -- 3. update --------------------------------------------------------------------------------
    def update(self, fx: torch.Tensor, finite: torch.Tensor, j: int):
        """The strategy's update of the points after row ``j``; under ``"eq14"`` also the acceptance.

        Returns the new rows ``[p−j, D]`` for the points ``start+j+1 …`` (row 0
        final), the number of points accepted in all (``shift``), the sweep's
        stopping measure of the window's points, the rows that came from the
        update, and the step sizes for the guard.
        """
        f, system = self.front, self.system
        start, x = f.start + j, f.x[j:]
        indices = torch.arange(start, f.start + f.p, device=self.spec.device)
        strategy = self.ladder.choose(start, indices.numel(), self.cost.depth, self.N)
        before = self.cost.depth
        jac = self._jacobian[j:] if self._jacobian is not None else None
        sweep = Sweep(system=self.routed, start=start, indices=indices, x=x, fx=fx[j:], cost=self.cost,
                      state=self.ladder.state_of(strategy), jacobian=jac)
        new, valid, change = _update(strategy, sweep, system, self.initializer, finite[j:])
        self.ladder.charge(self._charged + self.cost.depth - before)
        p = new.shape[0]
        f.resets += valid < p
        steps = None
        if self.ladder.compares_steps and valid == p and p > 1:
            # The sweep's step against the identity update's (free: a cumulative sum of drifts).
            drift_sum = x[0] + torch.cumsum(fx[j:] - x[:-1], dim=0)
            steps = (float(system.checked_error_ratio(new, x[1:], indices + 1).max().detach()),
                     max(float(system.checked_error_ratio(drift_sum, x[1:], indices + 1).max().detach()), self.floor))
        if self.bound is not None:
            accepted = torch.cat([f.x[1 : j + 1], new[:1]])
            return accepted, j + 1, self._beta, valid + j, (steps, new, torch.cat([f.x[1 : j + 1], new]))
        ratio = system.checked_error_ratio(x[1:] + change, x[1:], indices + 1)  # Eq. 14 per point
        passed = ratio <= self.tol
        passed[valid:] = False  # re-initialised rows are fresh guesses, never accepted as converged
        # The leading run of passing points, and one more: the point after the run is Φ of a point
        # that passed, so it is as accurate as the run itself (ParaDiGMS' rule); with an empty run
        # that is the first point, Φ of the accepted anchor, exact.
        run = int(torch.cumprod(passed.to(torch.int64), 0).sum())
        shift = run
        if run < valid:  # never a re-initialised row
            if run > 0:
                new = _after_run(new, fx, x, run, system.passive)
            shift = run + 1
        return new[:shift], shift, ratio, valid, (steps, new, new)

    # -- 4. record --------------------------------------------------------------------------------
    def record(self, accepted: torch.Tensor, shift: int, ratio: torch.Tensor, iterate: torch.Tensor) -> None:
        """Store the accepted points and the sweep's history; call the callback; move the bar."""
        f = self.front
        h = f.history
        h["residuals"].append(float(ratio.max().detach()) if ratio.numel() else 0.0)
        if self.trajectory:
            h["point_residuals"].append(ratio.detach().cpu())
            self.ys[f.start + 1 : f.start + 1 + shift] = accepted
        else:
            self.ys[1] = accepted[-1]
        h["window_starts"].append(f.start)
        old = f.start
        f.start += shift
        h["accepted"].append(f.start)
        if self.callback is not None:
            self.callback(Iteration(f.iterations, old, iterate, ratio, f.start, self.spec))
        self.bar.update(shift)
        self.bar.set_postfix(iteration=f.iterations, residual=f"{h['residuals'][-1]:.2e}")

    # -- 5. slide ---------------------------------------------------------------------------------
    def slide(self, accepted_new, shift: int, ratio: torch.Tensor, valid: int, extra) -> None:
        """Move the window past the accepted points and fill the points entering it (lines 8–10)."""
        f = self.front
        steps = extra[0]
        old_start = f.start - shift
        old_end = old_start + f.p
        rows = self._rows(accepted_new, shift, extra)
        f.p = min(f.p, self.N - f.start)
        x = rows[: f.p + 1]
        if self.ladder.watch(f.iterations, f.start, old_start, ratio, valid < ratio.numel(), self.floor, steps):
            # Down a rung: discard the unaccepted iterates, restart them from the front.
            if self.ladder.sequential:
                f.x = x[:1]
                return
            x = torch.cat([x[:1], self.initializer.initialize(self.system, x[0], f.start, f.p, self.cost)])
            self.bar.set_description(f"pitsolve[{self.ladder.strategy.name}]")
        else:
            need = f.start + f.p - old_end
            if need > 0:
                fresh = self.initializer.initialize(self.system, x[-1], old_end, need, self.cost)
                x = torch.cat([x, fresh])
        f.x = x

    def _rows(self, accepted_new, shift: int, extra) -> torch.Tensor:
        """The newest iterate from the new front on: the front (row 0) and the unaccepted points after it."""
        new = extra[1]
        if self.bound is not None:
            return new  # points start+j+1 … of the sub-window's update, row 0 final
        return torch.cat([accepted_new[-1:], new[shift:]])


def _update(strategy: JacobianStrategy, sweep: Sweep, system: BandedSystem, initializer, finite: torch.Tensor):
    """The strategy's update on the window, guarded against non-finite iterates.

    Iterates far ahead of the accepted front can diverge (Newton or Anderson
    on a long horizon).  If ``Φ`` or the update is non-finite from row ``j``
    on, the update is kept up to ``j`` and the rest of the window is filled
    afresh by the initialiser from the last finite point.  The leading row
    is ``Φ`` of the fixed anchor: exact, whatever the strategy did.
    ``sweep.system`` is the system as the strategies see it (batched calls
    through the executor), ``system`` the loop's own.
    Returns the new iterate, the number of its leading rows that came from
    the update (``p`` when nothing was reset; the re-initialised rows after
    them must not pass the stopping rule in this sweep) and the change the
    stopping rule reads (:meth:`~pitsolve.jacobians.JacobianStrategy.change`).
    """
    fx, x, cost = sweep.fx, sweep.x, sweep.cost
    p = fx.shape[0]
    j = p if bool(finite.all()) else int(torch.nonzero(~finite)[0])
    if j < p:
        jac = sweep.jacobian[:j] if sweep.jacobian is not None else None
        sweep = Sweep(system=sweep.system, start=sweep.start, indices=sweep.indices[:j], x=x[: j + 1], fx=fx[:j],
                      cost=cost, state=sweep.state, jacobian=jac)
    new = fx[:1] if j == 1 else torch.cat([fx[:1], strategy.update(sweep)[1:]])
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
    fresh = initializer.initialize(system, new[-1], sweep.start + new.shape[0], p - new.shape[0], cost)
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
