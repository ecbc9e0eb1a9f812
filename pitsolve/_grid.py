"""Validation of time grids shared by the ODE and SDE systems."""

from __future__ import annotations

import math
import numbers
import operator

import torch

from ._errors import InputTypeError, InputValueError
from ._state import StateSpec

__all__ = ["check_grid", "check_positive_int", "check_tolerance", "check_tolerances", "as_integer", "as_real"]


def check_grid(t, spec: StateSpec, *, increasing_only: bool = False) -> torch.Tensor:
    """Check the N+1 interval boundaries ``t`` against the state ``spec``."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(
            f"t is a {type(t).__name__}; pass a 1-D torch.Tensor of interval boundaries, "
            "e.g. torch.linspace(0, 1, N + 1)."
        )
    if t.dim() != 1:
        raise InputValueError(
            f"t has shape {tuple(t.shape)}; pass a 1-D tensor of the N+1 interval boundaries."
        )
    if t.numel() < 2:
        raise InputValueError(
            f"t has {t.numel()} point(s); pass at least two boundaries (N >= 1 interval)."
        )
    if not t.is_floating_point():
        raise InputTypeError(f"t has dtype {t.dtype}; pass floating-point times, e.g. t.to({spec.dtype}).")
    if t.dtype != spec.dtype:
        raise InputTypeError(
            f"t has dtype {t.dtype} but the state has dtype {spec.dtype}; cast one of them, "
            f"e.g. t = t.to({spec.dtype})."
        )
    if t.device != spec.device:
        raise InputTypeError(
            f"t lies on {t.device} but the state on {spec.device}; move them to one device."
        )
    if not torch.isfinite(t).all():
        raise InputValueError("t contains NaN or Inf; pass finite interval boundaries.")
    dt = t[1:] - t[:-1]
    increasing = bool((dt > 0).all())
    decreasing = bool((dt < 0).all())
    if increasing_only and not increasing:
        bad = int(torch.nonzero(dt <= 0)[0])
        raise InputValueError(
            f"t must be strictly increasing, but t[{bad}]={t[bad].item()} >= t[{bad + 1}]={t[bad + 1].item()}; "
            "sort the boundaries."
        )
    if not (increasing or decreasing):
        raise InputValueError(
            f"t is not strictly monotone (steps {dt.tolist()[:8]}{'...' if dt.numel() > 8 else ''}); "
            "pass strictly increasing or strictly decreasing boundaries without repeats."
        )
    return t


def as_integer(value):
    """``value`` as a Python ``int`` when it is an integer scalar, else ``value`` unchanged.

    Integer scalars are ints, numpy integers and 0-dim integer tensors (not
    on the meta device); bools, floats and everything else come back as they
    are, for the caller's own check to name.
    """
    if isinstance(value, (bool, int)) or type(value).__name__ == "bool_":
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and value.device.type != "meta" and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        ):
            return int(value)
        return value
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    return value


def as_real(value):
    """``value`` as a Python ``float`` when it is a real scalar (numbers.Real, numpy, a 0-dim real tensor), else unchanged."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and value.device.type != "meta" and not value.is_complex() and value.dtype != torch.bool:
            return float(value)
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", "") in "iuf":
        return float(value)  # a 0-d numpy array
    return value


def check_tolerance(tol, name: str = "tol") -> float:
    """``tol`` as a float: a finite number ``>= 0`` (also numpy or a 0-dim tensor), or a typed error naming it."""
    value = as_real(tol)
    if not isinstance(value, float) or not math.isfinite(value) or value < 0:
        shown = repr(tol)
        if isinstance(tol, torch.Tensor):
            shown = repr(value) if isinstance(value, float) else (
                f"<a tensor of shape {tuple(tol.shape)}, dtype {tol.dtype}, on {tol.device}>"
            )
        raise InputValueError(f"{name}={shown} must be a finite number >= 0 (e.g. 1e-6).")
    return value


def check_positive_int(value, name: str) -> int:
    """``value`` as an int ≥ 1 (also a numpy integer or a 0-dim integer tensor), or a typed error naming it."""
    if isinstance(value, bool):
        raise InputTypeError(f"{name}={value!r} is not an integer; pass an int >= 1.")
    if isinstance(value, torch.Tensor) and value.dim() != 0:
        raise InputTypeError(
            f"{name} is a tensor of shape {tuple(value.shape)}, not an integer; pass an int >= 1."
        )
    try:
        value = operator.index(value)  # int, numpy and 0-d integer torch scalars
    except TypeError:
        raise InputTypeError(
            f"{name}={value!r} is not an integer ({type(value).__name__}); pass an int >= 1."
        ) from None
    if value < 1:
        raise InputValueError(f"{name}={value} must be >= 1.")
    return value


def check_tolerances(atol, rtol) -> tuple:
    """``(atol, rtol)`` as floats: finite, ``>= 0`` and not both 0, or a typed error naming them."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputTypeError(f"{name}={value!r} is not a real number; pass a float >= 0, e.g. {name}=1e-6.")
        if not math.isfinite(value) or value < 0:
            raise InputValueError(
                f"{name}={value!r} must be a finite number >= 0 (an infinite or NaN scale "
                f"would make the stopping rule accept or reject everything); e.g. {name}=1e-6."
            )
    if atol == 0 and rtol == 0:
        raise InputValueError(f"atol={atol}, rtol={rtol}: both are 0; make at least one of them positive.")
    return float(atol), float(rtol)


def check_nonnegative(value, name: str, example: str) -> float:
    """A finite real ``>= 0`` (numpy and 0-dim tensors accepted) as a float, or a typed error naming it."""
    real = as_real(value)
    if isinstance(real, bool) or not isinstance(real, (int, float)):
        raise InputTypeError(
            f"{name}={value!r} is not a number ({type(value).__name__}); pass a finite float >= 0, e.g. {example}."
        )
    real = float(real)
    if not (math.isfinite(real) and real >= 0):
        raise InputValueError(f"{name}={value!r} must be >= 0 and finite, e.g. {example}.")
    return real
