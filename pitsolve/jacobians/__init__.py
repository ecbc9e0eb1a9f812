"""Jacobian strategies: the pluggable ``A_n ≈ J_n`` of the quasi-Newton sweep.

==========================  ===========================  ===============================
strategy (registry name)    published method             recurrence solved by
==========================  ===========================  ===============================
:class:`Zero` ("zero")      nonlinear block Jacobi       nothing: ``X_{n+1} = Φ_n(X_n)``
:class:`Identity`           ParaSolver Eq. 12–13,        cumulative sum of drifts
("identity")                ParaDiGMS' Picard
:class:`Diagonal`           quasi-DEER / quasi-ELK       elementwise associative scan
("diagonal")
:class:`ExactJVP`           Newton, Prop. 3              sequential JVP sweep
("newton")
:class:`Dense` ("dense")    DEER                         associative scan of (J, b)
:class:`Parareal`           Parareal, SRDS               sequential coarse sweep
("parareal")
:class:`Anderson`           triangular Anderson          per-point m×m least squares
("anderson")                (ParaTAA)
:class:`Secant`             multi-secant Broyden         per-point rank-m products
("secant")                  (type I, per point)
==========================  ===========================  ===============================
"""

from __future__ import annotations

import inspect
from typing import Dict, Type, Union

from .._errors import InputTypeError, InputValueError
from ._anderson import Anderson
from ._base import Cost, JacobianStrategy, Sweep
from ._diagonal import Diagonal
from ._newton import Dense, ExactJVP
from ._parareal import Parareal
from ._secant import Secant
from ._simple import Identity, Zero

__all__ = [
    "JacobianStrategy",
    "Sweep",
    "Cost",
    "Zero",
    "Identity",
    "Diagonal",
    "ExactJVP",
    "Dense",
    "Parareal",
    "Anderson",
    "Secant",
    "REGISTRY",
    "get",
]

#: Strategy classes by name; ``solve(jacobian="name")`` builds one with defaults.
REGISTRY: Dict[str, Type[JacobianStrategy]] = {
    cls.name: cls for cls in (Zero, Identity, Diagonal, ExactJVP, Dense, Parareal, Anderson, Secant)
}


def get(jacobian: Union[str, JacobianStrategy, Type[JacobianStrategy]]) -> JacobianStrategy:
    """A strategy from a registered name, a strategy class or an instance."""
    if isinstance(jacobian, JacobianStrategy):
        return jacobian
    if isinstance(jacobian, type) and issubclass(jacobian, JacobianStrategy):
        if inspect.isabstract(jacobian):
            missing = ", ".join(sorted(getattr(jacobian, "__abstractmethods__", ())))
            raise InputTypeError(
                f"jacobian is the abstract class {jacobian.__name__} (it does not implement {missing}); "
                f"pass a name from {sorted(REGISTRY)}, a concrete strategy such as "
                "pitsolve.jacobians.Identity(), or a subclass that implements update."
            )
        return jacobian()
    if isinstance(jacobian, str):
        try:
            return REGISTRY[jacobian]()
        except KeyError:
            raise InputValueError(
                f"unknown jacobian {jacobian!r}; choose one of {sorted(REGISTRY)} "
                "or pass a pitsolve.jacobians.JacobianStrategy instance."
            ) from None
    raise InputTypeError(
        f"jacobian is a {type(jacobian).__name__}; pass a name from {sorted(REGISTRY)} "
        "or a pitsolve.jacobians.JacobianStrategy instance."
    )
