"""The user's ``func`` of an :class:`~pitsolve.ODESystem`, called on a batch and checked (torchsde's check_contract)."""

from __future__ import annotations

import torch

from ._errors import InputTypeError, InputValueError, PitsolveError
from ._state import State, _map

__all__ = ["FuncCalls"]


class FuncCalls:
    """Calls of ``func(t, y)`` for a batch of rows, each checked: shapes, dtype, device, no in-place change.

    The host class sets ``func``, ``batched_func``, ``func_dtype``, ``t``,
    ``_y0`` and ``_spec`` (``y0``'s :class:`~pitsolve.StateSpec`).
    """

    def _batched(self, tt: torch.Tensor, y: State) -> State:
        """``func`` on a batch ``y [B, *shape]`` with times ``tt [B]``, its output checked on every call."""
        low, given = self.func_dtype, y
        versions = _versions(given)
        if low is not None:
            tt, y = tt.to(low), _map(lambda p: p.to(low), y)
        out = self.func(tt, y) if self.batched_func else torch.func.vmap(self.func, in_dims=(0, 0))(tt, y)
        if versions is not None and _versions(given) != versions:
            raise InputValueError(
                "func modified its input y in place (e.g. with y.mul_(...) or y += ...), which corrupts the "
                "solver's state; return a new tensor instead of modifying the state in place (e.g. return 2 * y)."
            )
        if low is not None:
            out = _map(lambda d: d.to(self._spec.dtype) if isinstance(d, torch.Tensor) else d, out)
        self._check_output(out, (given[0] if isinstance(given, tuple) else given).shape[0])
        return out

    def _check_output(self, out: State, batch: int) -> None:
        """Raise unless ``out`` is a batch of ``batch`` derivatives of the state's shapes, dtype and device."""
        self._spec.check_batch(out, batch, "func")
        for part in out if isinstance(out, tuple) else (out,):
            if part.dtype != self._spec.dtype:
                raise InputTypeError(
                    f"func returned dtype {part.dtype} but y0 has dtype {self._spec.dtype}; "
                    "return the dtype of y (e.g. create constants with .to(y))."
                )
            if part.device != self._spec.device:
                raise InputTypeError(
                    f"func returned a tensor on {part.device} but y0 lies on {self._spec.device}; "
                    "return it on y's device (e.g. create constants with .to(y))."
                )

    def _check_func(self) -> None:
        """Call ``func`` once (batched) and compare its output with ``y0`` (torchsde's check_contract)."""
        batch = _map(lambda p: p.unsqueeze(0), self._y0)
        try:
            self._batched(self.t[:1], batch)  # checks the output's shape, dtype and device
        except PitsolveError:
            raise
        except Exception as err:
            if self.batched_func:
                raise
            raise InputTypeError(
                f"calling func under torch.func.vmap failed ({type(err).__name__}: {err}); "
                "make func vmap-compatible (no .item(), in-place ops on inputs or data-dependent "
                "control flow), or write it for a batch and pass batched_func=True "
                "(then t has shape [B] and y shape [B, *y0.shape])."
            ) from err


def _versions(y: State):
    """The version counters of the parts of ``y`` (bumped by in-place changes); ``None`` if untracked."""
    try:
        return tuple(p._version for p in (y if isinstance(y, tuple) else (y,)))
    except RuntimeError:  # inference tensors track no versions
        return None
