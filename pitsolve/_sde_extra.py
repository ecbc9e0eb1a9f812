"""torchsde's ``options`` and ``extra_solver_state`` for :class:`~pitsolve.SDESystem` (docs/odes.md, "torchsde").

torchsde's solvers take ``options`` (``grad_free`` for the derivative-free
Milstein scheme) and carry an *extra solver state* from step to step:
``()`` for every method but ``reversible_heun``, whose state is
``(f, g, z)`` with ``f, g = sde.f_and_g(t, z)``.  pitsolve carries ``z`` in
the banded system's state and recomputes ``f, g`` from it at each
interval's start, so ``Φ_n`` depends on ``(y_n, z_n)`` alone.  An
``extra_solver_state`` given by the user must therefore be consistent:
``(f, g)`` equal to ``sde.f_and_g(t_0, z)`` (as the state returned by a
solve that ended at ``t_0`` is).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._errors import InputTypeError, InputValueError

__all__ = ["check_options", "check_extra_state", "final_extra_state", "f_and_g"]

#: torchsde's method options pitsolve passes on, and the methods that read them.
OPTIONS = {"grad_free": ("milstein",)}


def check_options(options, method: str) -> dict:
    """``options`` as torchsde takes them (a dict of known keys for a method that reads them), copied."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InputTypeError(f"options={options!r} is not a dict; pass e.g. options=dict(grad_free=True) or None.")
    unknown = sorted(set(options) - set(OPTIONS), key=str)
    if unknown:
        raise InputValueError(
            f"options {unknown} are not torchsde method options pitsolve knows; the one torchsde defines is "
            f"'grad_free' (derivative-free Milstein, method='milstein'). Drop the others."
        )
    for key, value in options.items():
        if method not in OPTIONS[key]:
            raise InputValueError(
                f"options[{key!r}] applies to method={OPTIONS[key][0]!r} only, not method={method!r}; drop it "
                f"or pass method={OPTIONS[key][0]!r}."
            )
        if not isinstance(value, bool):
            raise InputTypeError(f"options[{key!r}]={value!r} must be True or False.")
    return dict(options)


def f_and_g(core, t: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``core.f_and_g(t, y)``, or ``(core.f(t, y), core.g(t, y))`` where it has no ``f_and_g`` (torchsde's order)."""
    if hasattr(core, "f_and_g"):
        return core.f_and_g(t, y)
    return core.f(t, y), core.g(t, y)


def check_extra_state(extra_solver_state, method: str, core, t0: torch.Tensor, like: torch.Tensor,
                      width: int) -> Optional[torch.Tensor]:
    """The ``z_0`` of ``reversible_heun``'s ``(f, g, z)`` after checking it; ``None`` for ``None`` or ``()``.

    ``like``: ``y0`` (its batch, dtype and device); ``width``: the columns of
    ``z`` (``d``, plus the log-ratio's with ``logqp``).
    """
    if extra_solver_state is None:
        return None
    if not isinstance(extra_solver_state, (tuple, list)):
        raise InputTypeError(
            f"extra_solver_state is a {type(extra_solver_state).__name__}; pass the tuple that "
            "sdeint(..., extra=True) returned (as torchsde), or None."
        )
    if method != "reversible_heun":
        if len(extra_solver_state) == 0:
            return None
        raise InputValueError(
            f"extra_solver_state has {len(extra_solver_state)} entries, but method={method!r} carries no state "
            "from step to step (torchsde's is ()); pass () or None."
        )
    parts = tuple(extra_solver_state)
    expected = (like.shape[0], width)
    if len(parts) != 3 or not all(isinstance(p, torch.Tensor) for p in parts):
        raise InputValueError(
            f"extra_solver_state has {len(parts)} entries; reversible_heun's is the tuple (f, g, z) of tensors "
            "that sdeint(..., extra=True) returns."
        )
    f0, g0, z0 = parts
    if tuple(z0.shape) != expected or z0.dtype != like.dtype or z0.device != like.device:
        raise InputValueError(
            f"extra_solver_state's z has shape {tuple(z0.shape)}, dtype {z0.dtype} on {z0.device}; reversible_heun "
            f"needs shape {expected}, dtype {like.dtype} on {like.device} (y0's, with the log-ratio column "
            "under logqp=True)."
        )
    with torch.no_grad():
        f, g = f_and_g(core, t0, z0.detach())
        tol = torch.finfo(like.dtype).eps ** 0.5
        worst = max(float(((a.detach() - b) / (1 + b.abs())).abs().max()) if a.shape == b.shape else float("inf")
                    for a, b in ((f0, f), (g0, g)))
    if not worst <= tol:
        raise InputValueError(
            f"extra_solver_state's (f, g) differ from sde.f_and_g(ts[0], z) by {worst:.1e} (relative); pitsolve "
            "recomputes f and g from z at each interval's start, so that each interval depends on (y, z) alone. "
            "Pass the extra_solver_state of a solve that ended at ts[0] (sdeint(..., extra=True)), or "
            "(*sde.f_and_g(ts[0], z), z)."
        )
    return z0


def final_extra_state(method: str, core, t: torch.Tensor, z: torch.Tensor) -> tuple:
    """torchsde's extra solver state at the end: ``(f, g, z)`` with ``f, g = f_and_g(t, z)``, or ``()``."""
    if method != "reversible_heun":
        return ()
    return (*f_and_g(core, t, z), z)
