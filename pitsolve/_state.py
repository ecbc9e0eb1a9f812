"""States as flat vectors.

A state of a :class:`~pitsolve.BandedSystem` is a tensor of any shape or a
tuple of tensors (docs/design.md, "Architecture": e.g. a sample plus a multistep solver's
previous model outputs).  The solver and the Jacobian strategies work on the
flattened state ``x ∈ R^D``; :class:`StateSpec` converts between the two.
A *batch* of states is a tensor ``[B, *shape]`` (or a tuple of them); its flat
form is ``[B, D]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple, Union

import torch

from ._errors import InputTypeError, InputValueError

State = Union[torch.Tensor, Tuple[torch.Tensor, ...]]

__all__ = ["State", "StateSpec"]


@dataclass(frozen=True)
class StateSpec:
    """Shapes of the parts of one state, their common dtype and device."""

    shapes: Tuple[Tuple[int, ...], ...]
    is_tuple: bool
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, state: State, name: str = "y0") -> "StateSpec":
        """Describe ``state``; reject non-tensors, mixed dtypes/devices and non-finite values."""
        parts = state if isinstance(state, tuple) else (state,)
        if len(parts) == 0:
            raise InputValueError(f"{name} is an empty tuple; pass a tensor or a tuple of tensors.")
        for i, p in enumerate(parts):
            if not isinstance(p, torch.Tensor):
                raise InputTypeError(
                    f"{name}{f'[{i}]' if isinstance(state, tuple) else ''} is a {type(p).__name__}, "
                    "not a torch.Tensor; wrap it with torch.as_tensor(...)."
                )
            if p.is_complex():
                raise InputTypeError(
                    f"{name} has complex dtype {p.dtype}; pitsolve solves real states: pass the real and "
                    f"imaginary parts as a real tensor, e.g. torch.view_as_real({name}), and do the same in func."
                )
            if not p.is_floating_point():
                raise InputTypeError(
                    f"{name} has dtype {p.dtype}; pass a floating-point tensor, e.g. {name}.double()."
                )
        dtypes = {p.dtype for p in parts}
        devices = {p.device for p in parts}
        if len(dtypes) > 1:
            raise InputTypeError(
                f"the parts of {name} have mixed dtypes {sorted(map(str, dtypes))}; cast them to one dtype."
            )
        if len(devices) > 1:
            raise InputTypeError(
                f"the parts of {name} lie on mixed devices {sorted(map(str, devices))}; move them to one device."
            )
        device = parts[0].device
        if device.type == "meta":
            raise InputTypeError(
                f"{name} lies on the meta device, which holds no values; create it on a real device "
                f"(cpu or cuda) or move it there, e.g. {name}.to('cpu')."
            )
        if sum(p.numel() for p in parts) == 0:
            raise InputValueError(
                f"{name} has no elements (shape {_describe(state)}); pass a state with at least one value."
            )
        for i, p in enumerate(parts):
            if not torch.isfinite(p).all():
                raise InputValueError(
                    f"{name}{f'[{i}]' if isinstance(state, tuple) else ''} contains NaN or Inf; "
                    "pass a finite initial state."
                )
        return cls(
            shapes=tuple(tuple(p.shape) for p in parts),
            is_tuple=isinstance(state, tuple),
            dtype=parts[0].dtype,
            device=parts[0].device,
        )

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        """D, the length of the flat state."""
        return sum(self.sizes)

    # -- single states -----------------------------------------------------
    def flatten(self, state: State) -> torch.Tensor:
        """State → ``[D]``."""
        return self.flatten_batch(_map(lambda p: p.unsqueeze(0), state))[0]

    def unflatten(self, flat: torch.Tensor) -> State:
        """``[D]`` → state."""
        return _map(lambda p: p[0], self.unflatten_batch(flat.unsqueeze(0)))

    # -- batches -----------------------------------------------------------
    def flatten_batch(self, states: State) -> torch.Tensor:
        """Batch of states → ``[B, D]``."""
        parts = states if isinstance(states, tuple) else (states,)
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def unflatten_batch(self, flat: torch.Tensor) -> State:
        """``[B, D]`` → batch of states."""
        batch = flat.shape[0]
        chunks = torch.split(flat, list(self.sizes), dim=1)
        parts = tuple(c.reshape(batch, *s) for c, s in zip(chunks, self.shapes))
        return parts if self.is_tuple else parts[0]

    def trajectory(self, flat: torch.Tensor) -> State:
        """``[N+1, D]`` → the trajectory ``[N+1, *shape]`` (a tuple for tuple states)."""
        return self.unflatten_batch(flat)

    def check_batch(self, states: State, batch: int, what: str) -> None:
        """Raise if ``states`` is not a batch of ``batch`` states of this spec."""
        parts = states if isinstance(states, tuple) else (states,)
        if isinstance(states, tuple) != self.is_tuple or len(parts) != len(self.shapes):
            raise InputValueError(
                f"{what} returned {_describe(states)}, but the state is {self.describe()}; "
                "return a state of the same structure."
            )
        for p, s in zip(parts, self.shapes):
            if not isinstance(p, torch.Tensor) or tuple(p.shape) != (batch, *s):
                raise InputValueError(
                    f"{what} returned shape {_describe(states)}, expected {(batch, *s)} "
                    f"(a batch of {batch} states of shape {s}); make it return the shape of its input."
                )

    def check_kind(self, states: State, what: str) -> None:
        """Raise if a part of ``states`` (a batch of the right shapes) has another dtype or device than the state."""
        for p in states if isinstance(states, tuple) else (states,):
            if p.dtype != self.dtype:
                raise InputTypeError(
                    f"{what} returned dtype {p.dtype} but the state has dtype {self.dtype}; return the dtype "
                    "of its input (e.g. create constants with .to(states))."
                )
            if p.device != self.device:
                raise InputTypeError(
                    f"{what} returned a tensor on {p.device} but the state lies on {self.device}; return it "
                    "on its input's device (e.g. create constants with .to(states))."
                )

    def describe(self) -> str:
        if self.is_tuple:
            return "a tuple of tensors of shapes " + ", ".join(str(s) for s in self.shapes)
        return f"a tensor of shape {self.shapes[0]}"


def _map(fn, state):
    return tuple(fn(p) for p in state) if isinstance(state, tuple) else fn(state)


def _describe(states) -> str:
    if isinstance(states, tuple):
        return "(" + ", ".join(_describe(p) for p in states) + ")"
    if isinstance(states, torch.Tensor):
        return str(tuple(states.shape))
    return type(states).__name__
