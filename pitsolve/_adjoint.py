r"""``odeint_adjoint``: the parallel forward solve and a parallel discrete adjoint (docs/odes.md, "The parallel adjoint").

Forward: ``X_{n+1} = Φ_n(X_n)`` solved by :func:`~pitsolve.solve` without a
graph (``torch.no_grad``); only the trajectory ``X_0 … X_N`` is kept.
Backward: the adjoint chain ``λ_n = J_n^T λ_{n+1} + G_n`` (the exact transpose
of the discrete forward, so the gradient is backprop's through
:func:`~pitsolve.sequential`, not torchdiffeq's optimise-then-discretise one)
solved as the banded system :class:`~pitsolve._adjoint_system.AdjointSystem`
by :func:`~pitsolve.solve` with any strategy, then the parameter gradient
``Σ_n (∂Φ_n/∂θ)^T λ_{n+1}`` in batched calls of at most ``adjoint_window``
intervals.  Each call recomputes its ``Φ_n`` and frees the graph, so the
graph memory is bounded by the window, not by N or the sweeps.

:func:`make_plan` and :func:`parallel_adjoint` do this for any banded
system; :func:`~pitsolve.sdeint_adjoint` (``pitsolve/_sde_adjoint.py``) uses
them for SDEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable

from . import jacobians as _jacobians
from ._adjoint_system import AdjointSystem, vjp
from ._convenience import ode_system
from ._errors import ConvergenceError, InputTypeError, InputValueError
from ._grid import check_positive_int, check_tolerance
from ._system import BandedSystem
from ._solution import Solution
from ._options import SolveOptions
from ._solver import solve
from ._state import State, _map

__all__ = ["odeint_adjoint", "AdjointStats", "make_plan", "parallel_adjoint", "REFUSED", "refuse_time_grad"]

#: The largest state size for which the adjoint solve defaults to the exact scan (``"dense"``).
DENSE_MAX = 16

#: The solve options the adjoints cannot honour, and why (:meth:`SolveOptions.of`'s ``refused``).
REFUSED = {
    "trajectory": "the backward pass needs every point X_0 … X_N; drop trajectory",
    "devices": "the adjoint's solves run where the system lives; use odeint/sdeint with devices and "
               "backpropagate through the solve",
    "executor": "the adjoint's solves run where the system lives; use odeint/sdeint with an executor and "
                "backpropagate through the solve",
}


@dataclass
class AdjointStats:
    """What one :func:`odeint_adjoint` call and its backward pass did; pass one as ``stats=`` to have it filled.

    Attributes:
        forward: the forward solve's :class:`~pitsolve.Solution` (its ``ys`` released after the
            forward pass: the trajectory is kept once, by autograd).
        backward: the adjoint solve's :class:`~pitsolve.Solution` (``ys`` released likewise),
            ``None`` until the backward pass ran.
        adjoint_calls: the adjoint solve's batched vector–Jacobian-product calls, each one
            sequential wave (its sweeps, plus a strategy's JVP waves).
        parameter_calls: the batched calls of the parameter gradient (``⌈N / window⌉``;
            independent of each other, 0 without parameters).
    """

    forward: Optional[Solution] = None
    backward: Optional[Solution] = None
    adjoint_calls: int = 0
    parameter_calls: int = 0

    @property
    def backward_waves(self) -> int:
        """Sequential waves of vector–Jacobian products in the backward pass (plain backprop: N)."""
        return self.adjoint_calls + self.parameter_calls


def odeint_adjoint(
    func: Callable,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: Optional[str] = None,
    options: Optional[dict] = None,
    substeps: Optional[int] = None,
    batched_func: bool = False,
    func_dtype: Optional[torch.dtype] = None,
    adjoint_params: Optional[Sequence[torch.Tensor]] = None,
    adjoint_jacobian=None,
    adjoint_window: Optional[int] = None,
    adjoint_tol: Optional[float] = None,
    stats: Optional[AdjointStats] = None,
    solve_options: Optional[SolveOptions] = None,
    **parallel,
) -> State:
    r"""``torchdiffeq.odeint_adjoint(func, y0, t, ...)`` with a parallel forward solve and a parallel adjoint.

    The forward pass is :func:`~pitsolve.odeint` (same arguments, same
    result) run without a graph.  The backward pass solves the discrete
    adjoint ``λ_n = J_n^T λ_{n+1} + ∂L/∂X_n`` backwards over the same grid by
    parallel sweeps of batched vector–Jacobian products through ``Φ_n``
    (recomputed per call from the stored trajectory), then sums the parameter
    gradient ``Σ_n (∂Φ_n/∂θ)^T λ_{n+1}``.  The gradients are those of backprop
    through :func:`~pitsolve.sequential` on the same grid (to ``tol`` and
    ``adjoint_tol``), for every method, adaptive ones included (their steps
    are recomputed from the same states).  torchdiffeq's ``odeint_adjoint``
    instead integrates the continuous adjoint ODE and agrees only to its
    discretisation error.

    Args:
        func, y0, t, rtol, atol, method, options, substeps, batched_func, func_dtype:
            as for :func:`~pitsolve.odeint`.
        solve_options, **parallel: the forward solve's options, as for
            :func:`~pitsolve.odeint` (:class:`~pitsolve.SolveOptions`; ``guard``,
            ``stopping`` and ``progress`` serve the adjoint solve too).  The
            adjoint needs every point and runs where the system lives, so
            ``trajectory=False``, ``devices`` and ``executor`` are refused.
        adjoint_params: the tensors to differentiate besides ``y0`` (those that
            require grad are used); ``None``: ``func.parameters()``, which needs
            ``func`` to be an ``nn.Module`` (as torchdiffeq).  Tensors ``func``
            uses but that are not listed get no gradient.
        adjoint_jacobian: the strategy of the adjoint solve (a name of
            :data:`pitsolve.jacobians.REGISTRY` or an instance).  ``None``:
            ``"dense"`` (the exact ``J_n^T`` of the window in one wave, then an
            associative scan: two sweeps per window) for states of at most
            ``DENSE_MAX`` = 16 entries, else ``"identity"``.  Dense recomputes
            ``Φ_n`` for ``2D`` rows per point, so its graph memory is about
            ``2D`` times the identity's (benchmarks/results/adjoint.md).
        adjoint_window: the adjoint solve's window, also the largest batch of
            the parameter gradient; ``None``: ``window``.  It bounds the graph
            memory of the backward pass.
        adjoint_tol: the adjoint solve's tolerance in the measure
            ``RMS((λ_n − λ*_n) / (g + |λ_n|))``, ``g = max_d Σ_n |G_n[d]|``; ``None``: ``tol``.
        stats: an :class:`AdjointStats` to fill with both solves' records.

    Returns:
        The solution at ``t``, ``[len(t), *y0.shape]`` (a tuple for tuple
        states), differentiable with respect to ``y0`` and ``adjoint_params``
        (not ``t``).
    """
    refuse_time_grad(t, "t", "odeint")
    params = _adjoint_params(func, adjoint_params)
    detached = _map(lambda p: p.detach() if isinstance(p, torch.Tensor) else p, y0)
    with torch.no_grad():
        system = ode_system(func, detached, t, rtol=rtol, atol=atol, method=method, options=options,
                            substeps=substeps, batched_func=batched_func, func_dtype=func_dtype)
    forward = SolveOptions.of(solve_options, parallel, "odeint_adjoint", refused=REFUSED)
    plan = make_plan(system, "odeint_adjoint", params, stats, forward=forward.kwargs(),
                     adjoint_jacobian=adjoint_jacobian, adjoint_window=adjoint_window, adjoint_tol=adjoint_tol)
    return system.spec.trajectory(parallel_adjoint(plan, y0))


@dataclass
class _Plan:
    system: BandedSystem
    name: str  # the public function, for messages
    forward: dict
    backward: dict
    params: Tuple[torch.Tensor, ...]
    stats: AdjointStats


def make_plan(system: BandedSystem, name: str, params: Tuple[torch.Tensor, ...], stats: Optional[AdjointStats], *,
              forward: dict, adjoint_jacobian, adjoint_window: Optional[int], adjoint_tol: Optional[float]) -> _Plan:
    """Both solves' options, checked now (not in the backward pass); ``forward`` holds :func:`~pitsolve.solve`'s."""
    if stats is not None and not isinstance(stats, AdjointStats):
        raise InputTypeError(f"stats is a {type(stats).__name__}; pass a pitsolve.AdjointStats() or None.")
    N = system.num_intervals
    window = forward["window"]
    window_b = window if adjoint_window is None else check_positive_int(adjoint_window, "adjoint_window")
    if isinstance(window_b, int) and window_b > N:
        raise InputValueError(f"adjoint_window={window_b} is larger than N={N} intervals; pass at most N or None.")
    if adjoint_jacobian is None:
        adjoint_jacobian = "dense" if system.spec.size <= DENSE_MAX else "identity"
    adjoint_jacobian = _jacobians.get(adjoint_jacobian)
    adjoint_tol = forward["tol"] if adjoint_tol is None else check_tolerance(adjoint_tol, "adjoint_tol")
    backward = dict(jacobian=adjoint_jacobian, window=window_b, tol=adjoint_tol, guard=forward.get("guard", True),
                    stopping=forward.get("stopping", "error"), progress=forward.get("progress", False))
    return _Plan(system=system, name=name, forward=forward, backward=backward, params=params,
                 stats=stats if stats is not None else AdjointStats())


def parallel_adjoint(plan: _Plan, x0: State) -> torch.Tensor:
    """The flat trajectory ``[N+1, D]`` of ``plan.system``, differentiable in ``x0`` and ``plan.params``.

    ``x0`` is the system's initial state (its values), carrying the graph
    to the user's inputs; the backward pass returns ``∂L/∂X_0 = λ_0`` for it.
    """
    parts = x0 if isinstance(x0, tuple) else (x0,)
    return _ParallelAdjoint.apply(plan, *parts, *plan.params)


class _ParallelAdjoint(torch.autograd.Function):
    """Forward: the parallel solve, no graph.  Backward: the parallel adjoint solve and the parameter sum."""

    @staticmethod
    def forward(ctx, plan: _Plan, *inputs: torch.Tensor) -> torch.Tensor:
        system = plan.system
        solution = solve(system, **plan.forward)
        xs = system.spec.flatten_batch(solution.ys)
        solution.ys = None
        plan.stats.forward = solution
        ctx.plan = plan
        ctx.save_for_backward(xs)
        return xs

    @staticmethod
    @once_differentiable
    def backward(ctx, grads: torch.Tensor):
        plan = ctx.plan
        (xs,) = ctx.saved_tensors
        system, stats, N = plan.system, plan.stats, plan.system.num_intervals
        adjoint = AdjointSystem(system, xs, grads)
        try:
            solution = solve(adjoint, **plan.backward)
        except ConvergenceError as err:
            reason = str(err).replace(" (pass throw=False to get the partial Solution)", "")
            raise type(err)(
                f"the adjoint solve of {plan.name}'s backward pass failed: {reason}.  For the adjoint: "
                "adjoint_jacobian='dense' is exact (two sweeps per window, certified) for states of up to a few "
                "dozen entries; otherwise loosen adjoint_tol or shrink adjoint_window.", err.solution) from None
        lam = solution.ys.flip(0)  # λ_0 … λ_N (the adjoint solve runs from λ_N)
        solution.ys = None
        stats.backward, stats.adjoint_calls, stats.parameter_calls = solution, adjoint.calls, 0
        param_grads: List[torch.Tensor] = [torch.zeros_like(p) for p in plan.params]
        if plan.params:
            window = plan.backward["window"]
            chunk = window if isinstance(window, int) else N  # None (all N) or "auto"
            for a in range(0, N, chunk):
                n = torch.arange(a, min(a + chunk, N), device=xs.device)
                _, part = vjp(lambda x: system.propagate_flat(x, n), xs[n], lam[n + 1], plan.params)
                param_grads = [g + q for g, q in zip(param_grads, part)]
                stats.parameter_calls += 1
        y0_grads = system.spec.unflatten(lam[0])
        y0_grads = y0_grads if isinstance(y0_grads, tuple) else (y0_grads,)
        return (None, *y0_grads, *param_grads)


def refuse_time_grad(t, name: str, forward: str) -> None:
    """Refuse times that require grad: the parallel adjoint differentiates ``y0`` and the parameters only."""
    if isinstance(t, torch.Tensor) and t.requires_grad:
        raise InputValueError(
            f"{name} requires grad, but the parallel adjoint gives gradients for y0 and adjoint_params only; pass "
            f"{name}.detach(), or use pitsolve.{forward} and backpropagate through the solve."
        )


def _adjoint_params(func: Callable, adjoint_params, name: str = "func") -> Tuple[torch.Tensor, ...]:
    """The tensors to differentiate: ``adjoint_params`` (checked) or ``func.parameters()``; those requiring grad, once each."""
    if adjoint_params is None:
        if not isinstance(func, torch.nn.Module):
            raise InputTypeError(
                f"{name} is a {type(func).__name__}, not an nn.Module, so its parameters are unknown; pass "
                f"adjoint_params=(tensor, ...) with the tensors {name} uses, or make {name} an nn.Module."
            )
        candidates = tuple(func.parameters())
    else:
        if isinstance(adjoint_params, torch.Tensor) or not isinstance(adjoint_params, (list, tuple)):
            raise InputTypeError(
                f"adjoint_params is a {type(adjoint_params).__name__}; pass a tuple or list of tensors, e.g. "
                "adjoint_params=(W,) or tuple(model.parameters())."
            )
        candidates = tuple(adjoint_params)
        for i, p in enumerate(candidates):
            if not isinstance(p, torch.Tensor):
                raise InputTypeError(
                    f"adjoint_params[{i}] is a {type(p).__name__}, not a torch.Tensor; pass only the tensors "
                    f"{name} uses, e.g. adjoint_params=tuple(model.parameters())."
                )
    seen, out = set(), []
    for p in candidates:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return tuple(out)
