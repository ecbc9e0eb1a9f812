"""``odeint`` / ``sdeint`` with the call shapes of torchdiffeq and torchsde, solved in parallel."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._errors import InputTypeError, InputValueError
from ._ode import ODESystem
from ._sde import SDESystem
from ._options import SolveOptions
from ._solver import solve
from ._state import State

__all__ = ["odeint", "sdeint", "sde_system", "sde_returns"]


#: torchdiffeq's fixed-grid ``options`` and what pitsolve does with them.
_FIXED_OPTIONS = ("step_size",)


def odeint(
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
    solve_options: Optional[SolveOptions] = None,
    **parallel,
) -> State:
    """``torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)``, in parallel.

    The call shape is torchdiffeq's, default method included (``dopri5``):

    * adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``)
      integrate each interval ``[t[n], t[n+1]]`` with their own step control
      per point; ``rtol``/``atol`` are the integration tolerances and
      ``options`` takes ``first_step``, ``safety``, ``ifactor``, ``dfactor``
      and ``max_num_steps`` (per interval here);
    * fixed-grid methods (``euler``, ``midpoint``, ``heun2``, ``heun3``,
      ``rk4``, and the multistep ``explicit_adams``, ``implicit_adams``,
      ``fixed_adams``) take ``options=dict(step_size=h)`` (``h`` must divide
      every interval of ``t`` the same number of times) or ``substeps=K``;
      the multistep ones also ``max_order`` and (implicit) ``max_iters``.
      ``rtol``/``atol`` are the corrector's tolerances of ``implicit_adams``
      and ignored by the others, as in torchdiffeq.

    ``tol`` is the parallel solve's own stopping rule (the result is within
    ``tol`` of :func:`~pitsolve.sequential` of the same system, see
    :func:`~pitsolve.solve`), independent of the integration accuracy.  The
    parallel options (``jacobian``, ``window``, ``tol``, ``max_iters``,
    ``init``, ``guard``, ``stopping``, ``devices``, ``executor``,
    ``progress`` …: the fields of :class:`~pitsolve.SolveOptions`) are
    :func:`~pitsolve.solve`'s, given as ``solve_options=SolveOptions(...)``
    or as flat keywords (an unknown one raises
    :class:`~pitsolve.InputTypeError`), and ``batched_func``, ``func_dtype``
    :class:`~pitsolve.ODESystem`'s.  Returns the solution at
    ``t``, ``[len(t), *y0.shape]`` (a tuple for tuple states).  Raises
    :class:`~pitsolve.ConvergenceError` if the solve does not converge; build
    an :class:`~pitsolve.ODESystem` and call :func:`~pitsolve.solve` for the
    full :class:`~pitsolve.Solution`.
    """
    system = ode_system(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, substeps=substeps,
                        batched_func=batched_func, func_dtype=func_dtype)
    return solve(system, **SolveOptions.of(solve_options, parallel, "odeint").kwargs()).ys


def ode_system(func: Callable, y0: State, t: torch.Tensor, *, rtol: float, atol: float, method: Optional[str],
               options: Optional[dict], substeps: Optional[int], batched_func: bool,
               func_dtype: Optional[torch.dtype]) -> ODESystem:
    """The :class:`~pitsolve.ODESystem` of :func:`odeint`'s arguments (torchdiffeq's ``method``/``options``)."""
    from ._adaptive import ADAPTIVE_METHODS
    from ._multistep import MULTISTEP_METHODS, MULTISTEP_OPTIONS

    method = "dopri5" if method is None else method
    if options is not None and not isinstance(options, dict):
        raise InputTypeError(f"options={options!r} is not a dict; pass e.g. options=dict(step_size=0.01) or None.")
    if method in ADAPTIVE_METHODS:
        if substeps is not None:
            raise InputValueError(
                f"substeps={substeps} with the adaptive method {method!r}: its step control picks the steps; "
                "pass rtol/atol (or options=dict(first_step=...)), or a fixed-grid method such as 'rk4'."
            )
        kwargs = dict(rtol=rtol, atol=atol, options=options)
    else:
        options = dict(options or {})
        supported = _FIXED_OPTIONS + MULTISTEP_OPTIONS.get(method, ())
        unknown = sorted(set(options) - set(supported))
        if unknown:
            raise InputValueError(
                f"options {unknown} are not supported for the fixed-grid method {method!r}; supported: "
                f"{list(supported)} (grid_constructor: pitsolve's grid is t refined by substeps, the "
                "same in every interval; perturb: only for event handling, which pitsolve does not do)."
            )
        step = options.pop("step_size", None)
        if step is not None:
            substeps = _substeps_from_dt(t, step, substeps, name="options['step_size']")
        kwargs = dict(substeps=1 if substeps is None else substeps)
        if method in MULTISTEP_METHODS:
            kwargs["options"] = options or None
            if method != "explicit_adams":  # the corrector reads them, as torchdiffeq's does
                kwargs.update(rtol=rtol, atol=atol)
    return ODESystem(func, y0, t, method=method, batched_func=batched_func, func_dtype=func_dtype, **kwargs)


def sdeint(
    sde,
    y0: torch.Tensor,
    ts,
    bm=None,
    method: Optional[str] = "euler",
    dt: Optional[float] = None,
    adaptive: bool = False,
    rtol: float = 1.0,
    atol: float = 1.0,
    dt_min: Optional[float] = None,
    options: Optional[dict] = None,
    names: Optional[dict] = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Optional[tuple] = None,
    *,
    adjoint: bool = False,
    substeps: Optional[int] = None,
    seed: int = 0,
    solve_options: Optional[SolveOptions] = None,
    **parallel,
):
    """``torchsde.sdeint(sde, y0, ts, bm, method, dt, ...)`` with torchsde's arguments, solved in parallel.

    * ``bm``: a torchsde Brownian motion (``BrownianInterval``,
      ``BrownianTree``, ``BrownianPath``…); its increments on the steps of
      ``dt`` drive the solve, so the result equals torchsde's with the same
      ``bm`` and ``dt`` (see :class:`~pitsolve.SDESystem`).  ``None``: a path
      fixed per interval by ``seed`` (``SDESystem(...).brownian_motion()``
      gives torchsde that path).
    * ``method``: any of :data:`~pitsolve.SDE_ALL_METHODS`; ``None`` picks
      torchsde's default (``srk`` for Itô SDEs but general noise, ``euler``
      there, ``midpoint`` for Stratonovich).  pitsolve's default stays ``"euler"``.
    * ``dt`` must divide every interval of ``ts`` (it sets ``substeps``);
      give ``substeps`` instead for a fixed number of steps per interval.
    * ``adaptive=True`` and ``dt_min`` (which only bounds adaptive steps) are
      refused with typed errors that say why; ``ts`` must increase, as
      torchsde requires; a list of floats is accepted.
    * ``rtol``/``atol``: the scale of the parallel solve's stopping rule
      (:class:`~pitsolve.SDESystem`; torchsde reads them only with
      ``adaptive=True``).
    * ``options``: torchsde's method options; ``grad_free`` (``milstein``).
    * ``names``, ``logqp`` as in torchsde: with ``logqp=True`` the return is
      ``(ys, log_ratio)``, ``log_ratio`` of shape ``[len(ts) − 1, batch]``.
    * ``extra=True`` appends torchsde's solver state at ``ts[-1]`` to the
      return (``()``, or ``(f, g, z)`` for ``reversible_heun``), and
      ``extra_solver_state`` starts from one (:class:`~pitsolve.SDESystem`).
    * ``adjoint=True``: :func:`~pitsolve.sdeint_adjoint` with its defaults
      (the parallel discrete adjoint; gradients for ``y0`` and the sde's parameters).
    * ``solve_options`` and the flat keywords ``jacobian``, ``window``,
      ``tol``, ``max_iters``, ``init``, ``progress`` … (the fields of
      :class:`~pitsolve.SolveOptions`): :func:`~pitsolve.solve`'s options.

    Returns ``[len(ts), batch, d]`` (tuples as described).  Gradients flow to
    the sde's parameters as through ``torchsde.sdeint``.
    """
    if adjoint is not False:
        if adjoint is not True:
            raise InputTypeError(f"adjoint={adjoint!r} must be True or False.")
        from ._sde_adjoint import sdeint_adjoint

        return sdeint_adjoint(sde, y0, ts, bm, method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol,
                              dt_min=dt_min, options=options, names=names, logqp=logqp, extra=extra,
                              extra_solver_state=extra_solver_state, substeps=substeps, seed=seed,
                              solve_options=solve_options, **parallel)
    system = sde_system(sde, y0, ts, bm=bm, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol,
                        dt_min=dt_min, options=options, names=names, logqp=logqp, extra=extra,
                        extra_solver_state=extra_solver_state, substeps=substeps, seed=seed)
    ys = solve(system, **SolveOptions.of(solve_options, parallel, "sdeint").kwargs()).ys
    return sde_returns(system, ys, extra)


def sde_system(sde, y0: torch.Tensor, ts, *, bm, method: Optional[str], dt: Optional[float], adaptive: bool,
               rtol: float, atol: float, dt_min: Optional[float], options: Optional[dict], names: Optional[dict],
               logqp: bool, extra: bool, extra_solver_state: Optional[tuple], substeps: Optional[int],
               seed: int) -> SDESystem:
    """The :class:`~pitsolve.SDESystem` of :func:`sdeint`'s arguments, with torchsde's refusals typed."""
    if adaptive is not False:
        if adaptive is True:
            raise InputValueError(
                "adaptive=True is not supported: torchsde's adaptive stepping carries its step size and error "
                "history from one output time to the next and queries the Brownian path at times that depend on "
                "the solution, so a point's map Φ_n would depend on the path of the iterate, not on X_n alone, and "
                "would not reproduce torchsde's; pass a fixed dt that divides the intervals of ts (adaptive=False)."
            )
        raise InputTypeError(f"adaptive={adaptive!r} must be False (adaptive SDE stepping is not supported).")
    if dt_min is not None:
        raise InputValueError(
            f"dt_min={dt_min!r} bounds the steps of adaptive stepping, which pitsolve does not do: every step is dt "
            "(torchsde ignores dt_min without adaptive=True too); drop dt_min."
        )
    if not isinstance(extra, bool):
        raise InputTypeError(f"extra={extra!r} must be True or False.")
    if isinstance(ts, (list, tuple)) and isinstance(y0, torch.Tensor):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts):
            raise InputTypeError(f"ts={ts!r} must be a 1-D tensor or a list of floats, as torchsde takes.")
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    substeps = _substeps_from_dt(ts, dt, substeps)
    return SDESystem(
        sde, y0, ts, method=method, substeps=substeps, seed=seed, bm=bm, logqp=logqp, names=names, atol=atol,
        rtol=rtol, options=options, extra_solver_state=extra_solver_state,
    )


def sde_returns(system: SDESystem, ys: torch.Tensor, extra: bool):
    """What ``torchsde.sdeint`` returns for ``ys``: ``ys`` (``, log_ratio``) (``, extra_solver_state``)."""
    out = system.outputs(ys)
    if not extra:
        return out
    state = system.extra_state(ys)
    return (*out, state) if isinstance(out, tuple) else (out, state)


def _substeps_from_dt(ts, dt, substeps, name: str = "dt") -> int:
    if dt is None:
        return 1 if substeps is None else substeps
    if substeps is not None:
        raise InputValueError(f"{name}={dt} and substeps={substeps} both given; pass one of them.")
    if not isinstance(ts, torch.Tensor) or ts.dim() != 1 or ts.numel() < 2:
        raise InputValueError("ts must be a 1-D tensor of at least two times.")
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        raise InputValueError(f"{name}={dt!r} must be a positive finite number.")
    ratios = (ts[1:] - ts[:-1]).abs() / dt
    k = ratios.round()
    if not torch.allclose(ratios, k, rtol=1e-9, atol=1e-9) or (k < 1).any():
        raise InputValueError(
            f"{name}={dt} does not divide every interval of ts (intervals/dt = {ratios.tolist()[:6]}...); "
            "pass a dt that does, or substeps=K for K steps per interval."
        )
    if (k != k[0]).any():
        raise InputValueError(
            f"{name}={dt} gives different step counts per interval ({sorted(set(k.long().tolist()))}); "
            "pitsolve runs the same number of steps in every interval: use a uniform ts or substeps=K."
        )
    return int(k[0])
