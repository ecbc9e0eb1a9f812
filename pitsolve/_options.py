"""The parallel solve's options, defined once for :func:`~pitsolve.odeint`, :func:`~pitsolve.sdeint` and their adjoints.

:func:`~pitsolve.solve` takes them as keyword arguments; the torchdiffeq- and
torchsde-shaped front ends take them as ``solve_options=SolveOptions(...)``
and/or as the same flat keywords (``odeint(f, y0, t, window=8, tol=1e-8)``),
checked against the fields of :class:`SolveOptions` here.  Adding a solve
option means adding a field (and the keyword of :func:`~pitsolve.solve` that
implements it; ``tests/test_options.py`` checks that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

__all__ = ["SolveOptions", "DEFAULT_TOL"]

#: The default tolerance of the parallel solve (:func:`~pitsolve.solve`'s ``tol``).
DEFAULT_TOL = 1e-6


@dataclass(frozen=True)
class SolveOptions:
    """How the parallel solve runs: the keyword arguments of :func:`~pitsolve.solve`, as one value.

    Pass one as ``solve_options=`` to :func:`~pitsolve.odeint`,
    :func:`~pitsolve.sdeint`, :func:`~pitsolve.odeint_adjoint` or
    :func:`~pitsolve.sdeint_adjoint`, or give the fields as flat keywords;
    :func:`~pitsolve.solve` takes them as its keywords and checks the values.
    (The diffusion adapter's ``pitsolve.adapters.diffusers.SolveOptions``
    adds the sampler's own.)  The steps and lines below are those of
    :func:`~pitsolve.solve`'s Algorithm 1.

    Attributes:
        jacobian: a strategy from :mod:`pitsolve.jacobians`, or its name.
        window: ``p``, the number of points iterated at once (``None``: all N;
            ``"auto"``: the power of two ``≤ N`` (or N) of least predicted
            solve time ``c(p)·min(N, 4 + N/p)`` on the batch-cost curve ``c(p)``,
            measured once per process on this system and device, see
            :mod:`pitsolve._tuning`; a :class:`pitsolve.AutoWindow` sets the
            sweep model ``a + b·N/p`` fitted to a system family;
            ``Solution.tuning`` holds the measured curve and the seconds spent
            timing it).  ``Solution.settings`` records every setting, as resolved.
        tol: the tolerance (``≥ 0``).  With ``stopping="error"``: the
            largest distance of an accepted point from the sequential
            solve's, in the system's measure ``RMS((X_n − X*_n)/s_n)``
            (:meth:`~pitsolve.BandedSystem.error_ratio`), as estimated from
            the defects; ``Solution.error_estimate`` holds the estimate.
            With ``"eq14"``: ``δ`` of Eq. 14, a bound on each point's last change.
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
        stopping: the acceptance rule: ``"error"`` (default) bounds the
            error against the sequential result and reports
            :attr:`~pitsolve.Status.UNCERTIFIED` where the flow amplifies the
            accepted errors beyond ``tol``; ``"eq14"`` is the paper's
            per-point change test (see :mod:`pitsolve._acceptance`).

    """

    jacobian: Any = "identity"
    window: Any = None
    tol: float = DEFAULT_TOL
    max_iters: Optional[int] = None
    init: Any = None
    guard: Any = True
    stopping: str = "error"
    progress: bool = False
    throw: bool = True
    trajectory: bool = True
    callback: Optional[Callable] = None
    devices: Optional[Sequence] = None
    executor: Any = None

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`~pitsolve.solve`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, solve_options: Optional["SolveOptions"], flat: Mapping[str, Any], caller: str,
           refused: Optional[Mapping[str, str]] = None) -> "SolveOptions":
        """``solve_options`` with the flat keywords ``flat`` set, each name checked against the fields.

        ``caller`` names the function in messages; ``refused`` maps fields the
        caller cannot honour to the reason (given with a value other than the
        default, they raise :class:`~pitsolve.InputValueError`).
        """
        from ._errors import InputTypeError, InputValueError

        if solve_options is not None and not isinstance(solve_options, SolveOptions):
            raise InputTypeError(
                f"solve_options is a {type(solve_options).__name__}; pass a pitsolve.SolveOptions(...) or None "
                "(or give its fields as keywords)."
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(flat) - set(names))
        if unknown:
            raise InputTypeError(
                f"{caller}() got unknown keyword arguments {unknown}; its solve options are {names} "
                "(pitsolve.SolveOptions' fields); check the spelling."
            )
        twice = sorted(set(flat) & _set_fields(solve_options))
        if twice:
            raise InputValueError(
                f"{twice} given both as keywords and in solve_options; give each option once."
            )
        options = replace(solve_options or cls(), **flat)
        default = cls()
        for name, reason in (refused or {}).items():
            value, base = getattr(options, name), getattr(default, name)
            if value is not base and not _equal(value, base):
                raise InputValueError(f"{caller}() does not take {name}={value!r}: {reason}.")
        return options


def _set_fields(options: Optional[SolveOptions]) -> set:
    """The fields of ``options`` that differ from the defaults."""
    if options is None:
        return set()
    default = SolveOptions()
    out = set()
    for f in fields(options):
        value, base = getattr(options, f.name), getattr(default, f.name)
        if value is not base and not _equal(value, base):
            out.add(f.name)
    return out


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors (init trajectories) and the like compare elementwise
        return False

