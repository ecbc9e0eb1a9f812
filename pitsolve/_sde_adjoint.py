r"""``sdeint_adjoint``: the parallel forward solve of an SDE and its parallel discrete adjoint (docs/odes.md).

The Brownian increments of every step are fixed before the solve (a
torchsde ``bm`` queried once, or pitsolve's seeded path), so ``Φ_n`` is a
deterministic map of ``X_n`` and the sde's parameters, and the adjoint of
the discretised SDE is the same banded affine system as for an ODE
(:mod:`pitsolve._adjoint_system`): ``λ_n = J_n^T λ_{n+1} + ∂L/∂X_n`` with
``J_n = ∂Φ_n/∂X_n`` at the stored ``X_n`` and the fixed increments
(discretise-then-optimise).  Its gradients are those of backprop through
:func:`~pitsolve.sequential` (and through ``torchsde.sdeint`` with the same
``bm`` and ``dt``).  torchsde's ``sdeint_adjoint`` instead integrates the
continuous adjoint SDE backwards in time through the Brownian path
(optimise-then-discretise) and agrees only to its discretisation error.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._adjoint import REFUSED, AdjointStats, _adjoint_params, make_plan, parallel_adjoint, refuse_time_grad
from ._convenience import sde_returns, sde_system
from ._errors import InputValueError
from ._options import SolveOptions

__all__ = ["sdeint_adjoint"]


def sdeint_adjoint(
    sde,
    y0: torch.Tensor,
    ts,
    bm=None,
    method: Optional[str] = "euler",
    adjoint_method: Optional[str] = None,
    dt: Optional[float] = None,
    adaptive: bool = False,
    adjoint_adaptive: bool = False,
    rtol: float = 1.0,
    adjoint_rtol: Optional[float] = None,
    atol: float = 1.0,
    adjoint_atol: Optional[float] = None,
    dt_min: Optional[float] = None,
    options: Optional[dict] = None,
    adjoint_options: Optional[dict] = None,
    adjoint_params: Optional[Sequence[torch.Tensor]] = None,
    names: Optional[dict] = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Optional[tuple] = None,
    *,
    substeps: Optional[int] = None,
    seed: int = 0,
    adjoint_jacobian=None,
    adjoint_window: Optional[int] = None,
    adjoint_tol: Optional[float] = None,
    stats: Optional[AdjointStats] = None,
    solve_options: Optional[SolveOptions] = None,
    **parallel,
):
    r"""``torchsde.sdeint_adjoint(sde, y0, ts, bm, method, ...)`` with a parallel forward solve and a parallel adjoint.

    The forward pass is :func:`~pitsolve.sdeint` (same arguments, same
    result) run without a graph; only the trajectory ``X_0 … X_N`` is kept.
    The backward pass solves the discrete adjoint ``λ_n = J_n^T λ_{n+1} + ∂L/∂X_n``
    over the same grid with the same Brownian increments by parallel sweeps
    of batched vector–Jacobian products through ``Φ_n`` (recomputed per call
    from the stored ``X_n``), then sums ``∂L/∂θ = Σ_n (∂Φ_n/∂θ)^T λ_{n+1}`` in
    calls of at most ``adjoint_window`` intervals: graph memory bounded by the
    window, as for :func:`~pitsolve.odeint_adjoint`.  The gradients equal
    backprop through :func:`~pitsolve.sequential` of the same system (and
    through ``torchsde.sdeint`` with the same ``bm`` and ``dt``) up to ``tol``
    and ``adjoint_tol``; torchsde's ``sdeint_adjoint`` integrates the
    continuous adjoint SDE instead and agrees only to its discretisation error.

    Args:
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
        extra_solver_state, substeps, seed: as for :func:`~pitsolve.sdeint`.
        adjoint_method, adjoint_adaptive, adjoint_rtol, adjoint_atol, adjoint_options:
            torchsde's settings of the adjoint SDE's solver; there is no adjoint SDE here (the adjoint
            is the exact transpose of the forward steps): any value but the default is refused (typed).
        adjoint_params: the tensors to differentiate besides ``y0`` (those that require grad);
            ``None``: ``sde.parameters()``, which needs ``sde`` to be an ``nn.Module`` (as torchsde).
        adjoint_jacobian, adjoint_window, adjoint_tol, stats, solve_options, **parallel:
            as for :func:`~pitsolve.odeint_adjoint` (the forward solve's options,
            :class:`~pitsolve.SolveOptions`; ``guard``, ``stopping``, ``progress`` for both solves).

    Returns:
        What :func:`~pitsolve.sdeint` returns, differentiable with respect to ``y0``,
        ``adjoint_params`` and a ``reversible_heun`` ``extra_solver_state``'s ``z`` (not ``ts``).
    """
    _refuse_torchsde_adjoint(adjoint_method=adjoint_method, adjoint_adaptive=adjoint_adaptive,
                             adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_options=adjoint_options)
    refuse_time_grad(ts, "ts", "sdeint")
    params = _adjoint_params(sde, adjoint_params, name="sde")
    state, detached_state = _solver_state(extra_solver_state)
    with torch.no_grad():
        system = sde_system(sde, y0.detach() if isinstance(y0, torch.Tensor) else y0, ts, bm=bm, method=method,
                            dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, dt_min=dt_min, options=options,
                            names=names, logqp=logqp, extra=extra, extra_solver_state=detached_state,
                            substeps=substeps, seed=seed)
    forward = SolveOptions.of(solve_options, parallel, "sdeint_adjoint", refused=REFUSED)
    plan = make_plan(system, "sdeint_adjoint", params, stats, forward=forward.kwargs(),
                     adjoint_jacobian=adjoint_jacobian, adjoint_window=adjoint_window, adjoint_tol=adjoint_tol)
    z0 = state[2] if system.method == "reversible_heun" and state else None
    x0 = system.initial_state_of(y0, z0)  # carries the graph back to y0 (and z0)
    ys = system.spec.trajectory(parallel_adjoint(plan, x0))
    return sde_returns(system, ys, extra)


def _refuse_torchsde_adjoint(**settings) -> None:
    """Refuse torchsde's settings of the adjoint SDE's solver (``adjoint_method`` …) unless at their defaults."""
    defaults = dict(adjoint_method=None, adjoint_adaptive=False, adjoint_rtol=None, adjoint_atol=None,
                    adjoint_options=None)
    given = {name: value for name, value in settings.items()
             if value is not defaults[name] and value != defaults[name]}
    if given:
        raise InputValueError(
            f"{', '.join(f'{k}={v!r}' for k, v in given.items())}: these set torchsde's solver of the continuous "
            "adjoint SDE, which pitsolve does not integrate (its adjoint is the exact transpose of the forward "
            "steps, with the same increments); drop them, and tune the adjoint solve with adjoint_jacobian, "
            "adjoint_window and adjoint_tol."
        )


def _solver_state(extra_solver_state):
    """``extra_solver_state`` as a tuple (or as given), and its copy detached from the graph for the forward solve."""
    state = None if extra_solver_state is None else tuple(extra_solver_state) if isinstance(
        extra_solver_state, (tuple, list)) else extra_solver_state
    detached = state if not isinstance(state, tuple) else tuple(
        p.detach() if isinstance(p, torch.Tensor) else p for p in state)
    return state, detached
