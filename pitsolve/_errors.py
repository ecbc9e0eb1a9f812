"""Typed errors raised by pitsolve.

Every error a user can trigger derives from :class:`PitsolveError`, and also
from the built-in type a caller would catch for it (``ValueError`` for a bad
value, ``TypeError`` for a bad type, ``RuntimeError`` for a failed run), so
``except ValueError`` keeps working.  Messages name the offending value and
the fix.
"""

from __future__ import annotations

__all__ = [
    "PitsolveError",
    "InputValueError",
    "InputTypeError",
    "ConvergenceError",
    "NonFiniteError",
    "DistributedError",
    "RankMismatchError",
]


class PitsolveError(Exception):
    """Base class of every error raised by pitsolve."""


class InputValueError(PitsolveError, ValueError):
    """A user-supplied value is out of range or inconsistent."""


class InputTypeError(PitsolveError, TypeError):
    """A user-supplied value has the wrong type, dtype or device."""


class ConvergenceError(PitsolveError, RuntimeError):
    """A parallel solve stopped before every point was accepted.

    The partial :class:`~pitsolve.Solution` (best iterate, status, residual
    history) is attached as ``error.solution`` so no work is lost.
    """

    def __init__(self, message: str, solution=None):
        super().__init__(message)
        self.solution = solution


class NonFiniteError(ConvergenceError, FloatingPointError):
    """NaN or Inf appeared in a propagated state (a non-finite initial state is an InputValueError)."""


class DistributedError(PitsolveError, RuntimeError):
    """A solve spread over ranks or devices failed: a rank died, timed out, raised, or fell out of step.

    ``ranks`` holds the ranks found at fault (empty when none could be named).
    The same error type is raised on every surviving rank.
    """

    def __init__(self, message: str, ranks=()):
        super().__init__(message)
        self.ranks = tuple(ranks)


class RankMismatchError(DistributedError, ValueError):
    """The ranks of a distributed solve were given different systems or settings (checked at the start)."""
