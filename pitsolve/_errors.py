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
    """NaN or Inf appeared in the initial state or in a propagated state."""
