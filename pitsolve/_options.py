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

    Each field has :func:`~pitsolve.solve`'s meaning and default (see its
    docstring for the equations): ``jacobian`` the strategy of ``A_n`` in
    ``X^{k+1}_{n+1} = Φ_n(X^k_n) + A_n (X^{k+1}_n − X^k_n)``; ``window`` the
    points ``p`` iterated at once; ``tol`` the bound on
    ``RMS((X_n − X*_n)/s_n)`` against the sequential result; ``max_iters``,
    ``init``, ``guard``, ``stopping``, ``progress``, ``throw``,
    ``trajectory``, ``callback``, ``devices``, ``executor``.  Values are
    checked by :func:`~pitsolve.solve`.  (The diffusion adapter's
    ``pitsolve.adapters.diffusers.SolveOptions`` adds the sampler's own.)

    Pass one as ``solve_options=`` to :func:`~pitsolve.odeint`,
    :func:`~pitsolve.sdeint`, :func:`~pitsolve.odeint_adjoint` or
    :func:`~pitsolve.sdeint_adjoint`, or give the fields as flat keywords.
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

