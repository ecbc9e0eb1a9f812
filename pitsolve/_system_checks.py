"""The checks of what a :class:`~pitsolve.BandedSystem` subclass returns and declares (typed errors naming the fix)."""

from __future__ import annotations

from typing import Tuple

import torch

from ._errors import InputTypeError, InputValueError
from ._grid import as_integer

__all__ = ["checked_ratio", "checked_costs"]


def checked_ratio(system, ratio, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``ratio``, what ``system.error_ratio(new, old, ·)`` returned, checked (:meth:`~pitsolve.BandedSystem.checked_error_ratio`)."""
    name, B = f"{type(system).__name__}.error_ratio", new.shape[0]
    if not isinstance(ratio, torch.Tensor):
        raise InputTypeError(
            f"{name} returned a {type(ratio).__name__}; return a 1-D floating-point tensor of shape ({B},), "
            "one measure per point."
        )
    if tuple(ratio.shape) != (B,):
        raise InputValueError(
            f"{name} returned shape {tuple(ratio.shape)}, expected ({B},) (one measure per point of a batch "
            f"of {B}); return a 1-D tensor of length B, e.g. diff.pow(2).mean(dim=1).sqrt()."
        )
    if not ratio.is_floating_point():
        raise InputTypeError(f"{name} returned dtype {ratio.dtype}; return a floating-point tensor, e.g. of the states' dtype.")
    if ratio.device != new.device:
        raise InputTypeError(
            f"{name} returned a tensor on {ratio.device} but the states lie on {new.device}; return it on the states' device."
        )
    if bool(torch.isnan(ratio).any()) and bool(torch.isfinite(new).all()) and bool(torch.isfinite(old).all()):
        bad = torch.nonzero(torch.isnan(ratio)).flatten().tolist()
        raise InputValueError(
            f"{name} returned NaN for finite states (rows {bad[:8]}{'...' if len(bad) > 8 else ''} of {B}); "
            "make it finite there, e.g. guard divisions by zero with clamp_min."
        )
    return ratio


def checked_costs(system) -> Tuple[int, int]:
    """``(steps_per_interval, coarse_steps)`` of ``system`` checked (:meth:`~pitsolve.BandedSystem.checked_costs`)."""
    out = []
    for attr, what in (("steps_per_interval", "one Φ_n"), ("coarse_steps", "one coarse G_n")):
        raw = getattr(system, attr)
        value = as_integer(raw)
        name = f"{type(system).__name__}.{attr}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputTypeError(
                f"{name}={raw!r} is not an integer ({type(raw).__name__}); set it to the fine steps "
                f"{what} costs, an int >= 1."
            )
        if value < 1:
            raise InputValueError(
                f"{name}={value} must be >= 1 (the fine steps {what} costs, for depth and NFE); "
                "set it to a positive int."
            )
        out.append(value)
    return out[0], out[1]
