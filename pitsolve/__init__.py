"""pitsolve: parallel-in-time solution of ODEs, SDEs and diffusion samplers.

A sequential solve ``X_{n+1} = Φ_n(X_n)`` is read as a banded nonlinear system
and solved by quasi-Newton sweeps in which all ``Φ_n`` of a sweep run in one
batched call.  The Jacobian approximation is pluggable
(:mod:`pitsolve.jacobians`); the answer is the sequential one.  The calls of
a sweep can be spread over several devices (``solve(..., devices=[...])``) or
over the ranks of ``torch.distributed`` (:mod:`pitsolve.distributed`).

>>> import torch, pitsolve
>>> system = pitsolve.ODESystem(lambda t, y: -y, torch.ones(3, dtype=torch.float64),
...                             torch.linspace(0, 1, 33, dtype=torch.float64))
>>> sol = pitsolve.solve(system, "identity", tol=1e-10)
>>> bool(torch.allclose(sol.ys, pitsolve.sequential(system).ys, atol=1e-9))
True
"""

from . import distributed, extend, initializers, jacobians
from ._adjoint import AdjointStats, odeint_adjoint
from ._brownian import GridBrownian
from ._convenience import odeint, sdeint
from ._errors import (
    ConvergenceError,
    DistributedError,
    InputTypeError,
    InputValueError,
    NonFiniteError,
    PitsolveError,
    RankMismatchError,
)
from ._execution import ExecutionStats, Executor, LocalExecutor, MultiDeviceExecutor
from ._guard import Fallback, Guard
from ._options import SolveOptions
from ._ode import ADAPTIVE_METHODS, FIXED_GRID_METHODS, MULTISTEP_METHODS, ODESystem
from ._sde import SDE_ALL_METHODS, SDE_METHODS, SDESystem
from ._sde_adjoint import sdeint_adjoint
from ._solution import Iteration, Solution, Status
from ._solver import sequential, solve
from ._tuning import AutoWindow
from ._state import StateSpec
from ._system import BandedSystem

__version__ = "0.1.0"

__all__ = [
    "BandedSystem",
    "ODESystem",
    "SDESystem",
    "GridBrownian",
    "StateSpec",
    "Solution",
    "Status",
    "Iteration",
    "Guard",
    "Fallback",
    "solve",
    "SolveOptions",
    "sequential",
    "AutoWindow",
    "odeint",
    "odeint_adjoint",
    "AdjointStats",
    "sdeint",
    "sdeint_adjoint",
    "jacobians",
    "initializers",
    "distributed",
    "extend",
    "Executor",
    "LocalExecutor",
    "MultiDeviceExecutor",
    "ExecutionStats",
    "FIXED_GRID_METHODS",
    "MULTISTEP_METHODS",
    "ADAPTIVE_METHODS",
    "SDE_METHODS",
    "SDE_ALL_METHODS",
    "PitsolveError",
    "InputValueError",
    "InputTypeError",
    "ConvergenceError",
    "NonFiniteError",
    "DistributedError",
    "RankMismatchError",
]
