"""``odeint`` / ``sdeint`` with the call shapes of torchdiffeq and torchsde, solved in parallel."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._errors import InputTypeError, InputValueError
from ._ode import ODESystem
from ._sde import SDESystem
from ._solver import DEFAULT_TOL, solve
from ._state import State

__all__ = ["odeint", "sdeint"]


def odeint(
    func: Callable,
    y0: State,
    t: torch.Tensor,
    *,
    method: str = "rk4",
    substeps: int = 1,
    jacobian="identity",
    window: Optional[int] = None,
    tol: float = DEFAULT_TOL,
    max_iters: Optional[int] = None,
    init=None,
    atol: float = 1.0,
    rtol: float = 1.0,
    progress: bool = False,
) -> State:
    """Like ``torchdiffeq.odeint(func, y0, t, method=method)`` on a fixed grid, solved in parallel.

    Each interval ``[t[n], t[n+1]]`` is one ``Φ_n`` of ``substeps`` steps of
    ``method``.  Returns the solution at ``t``, shape ``[len(t), *y0.shape]``
    (a tuple for tuple states), equal to the sequential solve within ``tol``.
    Raises :class:`~pitsolve.ConvergenceError` if the solve does not converge;
    build an :class:`~pitsolve.ODESystem` and call :func:`~pitsolve.solve` for
    the full :class:`~pitsolve.Solution`.
    """
    system = ODESystem(func, y0, t, method=method, substeps=substeps, atol=atol, rtol=rtol)
    return solve(
        system, jacobian, window=window, tol=tol, max_iters=max_iters, init=init, progress=progress
    ).ys


def sdeint(
    sde,
    y0: torch.Tensor,
    ts: torch.Tensor,
    bm=None,
    method: str = "euler",
    dt: Optional[float] = None,
    *,
    substeps: Optional[int] = None,
    seed: int = 0,
    jacobian="identity",
    window: Optional[int] = None,
    tol: float = DEFAULT_TOL,
    max_iters: Optional[int] = None,
    init=None,
    atol: float = 1.0,
    rtol: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """Like ``torchsde.sdeint(sde, y0, ts, method=method, dt=dt)``, solved in parallel.

    The Brownian path is fixed per interval by ``seed`` (see
    :class:`~pitsolve.SDESystem`); a ``bm`` cannot be passed — use
    ``SDESystem(...).brownian_motion()`` to give torchsde the same path.
    ``dt`` must divide every interval of ``ts`` (it sets ``substeps``);
    give ``substeps`` instead for a fixed number of steps per interval.
    Returns ``[len(ts), batch, d]``.
    """
    if bm is not None:
        raise InputTypeError(
            "bm is not accepted: pitsolve fixes the Brownian path per interval from `seed` so the "
            "parallel and sequential solves agree; pass seed=... (SDESystem.brownian_motion() gives that path)."
        )
    substeps = _substeps_from_dt(ts, dt, substeps)
    system = SDESystem(sde, y0, ts, method=method, substeps=substeps, seed=seed, atol=atol, rtol=rtol)
    return solve(
        system, jacobian, window=window, tol=tol, max_iters=max_iters, init=init, progress=progress
    ).ys


def _substeps_from_dt(ts, dt, substeps) -> int:
    if dt is None:
        return 1 if substeps is None else substeps
    if substeps is not None:
        raise InputValueError(f"dt={dt} and substeps={substeps} both given; pass one of them.")
    if not isinstance(ts, torch.Tensor) or ts.dim() != 1 or ts.numel() < 2:
        raise InputValueError("ts must be a 1-D tensor of at least two times.")
    if not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        raise InputValueError(f"dt={dt!r} must be a positive finite number.")
    ratios = (ts[1:] - ts[:-1]).abs() / dt
    k = ratios.round()
    if not torch.allclose(ratios, k, rtol=1e-9, atol=1e-9) or (k < 1).any():
        raise InputValueError(
            f"dt={dt} does not divide every interval of ts (intervals/dt = {ratios.tolist()[:6]}...); "
            "pass a dt that does, or substeps=K for K steps per interval."
        )
    if (k != k[0]).any():
        raise InputValueError(
            f"dt={dt} gives different step counts per interval ({sorted(set(k.long().tolist()))}); "
            "pitsolve runs the same number of steps in every interval: use a uniform ts or substeps=K."
        )
    return int(k[0])
