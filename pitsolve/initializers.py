"""Initial guesses for the points entering the window (paper Eq. 15–17, Algorithm 1 lines 8–9).

=======================  ================================================
initialiser (name)       the guess for points ``a+1 … a+c`` from anchor ``X_a``
=======================  ================================================
:class:`Constant`        ``X_a`` copied forward (ParaDiGMS)
("constant")
:class:`Coarse`          ``c`` sequential coarse steps ``G`` from ``X_a``
("coarse")
:class:`Trajectory`      rows of a user-given trajectory (warm start)
=======================  ================================================
"""

from __future__ import annotations

import abc
from typing import Callable, Optional, Union

import torch

from ._errors import InputTypeError, InputValueError
from ._state import State
from ._system import BandedSystem
from .jacobians._base import Cost

__all__ = ["Initializer", "Constant", "Coarse", "Trajectory", "REGISTRY", "get"]


class Initializer(abc.ABC):
    """Fills points entering the window from the newest iterate before them."""

    #: The registry name.
    name: str = ""

    def reset(self, system: BandedSystem) -> None:
        """Called once at the start of every solve (validate against the system)."""

    @abc.abstractmethod
    def initialize(
        self, system: BandedSystem, anchor: torch.Tensor, anchor_index: int, count: int, cost: Cost
    ) -> torch.Tensor:
        """Guesses ``[count, D]`` for the points ``anchor_index+1 … anchor_index+count``.

        ``anchor`` is the flat state ``[D]`` of point ``anchor_index``, the newest
        iterate before the new points; model calls are added to ``cost``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Constant(Initializer):
    """Copy forward: every new point starts at the anchor (ParaDiGMS' initialisation)."""

    name = "constant"

    def initialize(self, system, anchor, anchor_index, count, cost):
        return anchor.unsqueeze(0).expand(count, -1).clone()


class Coarse(Initializer):
    """One coarse step per interval from the anchor, sequentially (Parareal's start).

    Args:
        coarse: ``coarse(states, indices)`` as :meth:`~pitsolve.BandedSystem.propagate`;
            ``None`` uses the system's :meth:`~pitsolve.BandedSystem.coarse_propagate`.
    """

    name = "coarse"

    def __init__(self, coarse: Optional[Callable] = None):
        self.coarse = coarse

    def reset(self, system):
        if self.coarse is None and type(system).coarse_propagate is BandedSystem.coarse_propagate:
            raise InputTypeError(
                f"{type(system).__name__} defines no coarse propagator; pass Coarse(coarse=...) "
                "or use init='constant'."
            )

    def initialize(self, system, anchor, anchor_index, count, cost):
        out = []
        x = anchor.unsqueeze(0)
        for j in range(count):
            idx = torch.tensor([anchor_index + j], device=anchor.device)
            if self.coarse is None:
                x = system.coarse_flat(x, idx)
            else:
                spec = system.spec
                y = self.coarse(spec.unflatten_batch(x), idx)
                spec.check_batch(y, 1, "Coarse initialiser")
                x = spec.flatten_batch(y)
            out.append(x[0])
        cost.nfe += count * system.coarse_steps
        cost.depth += count * system.coarse_steps
        return torch.stack(out)


class Trajectory(Initializer):
    """A given trajectory ``[N+1, *shape]`` (a tuple for tuple states): a warm start."""

    name = "trajectory"

    def __init__(self, ys: State):
        parts = ys if isinstance(ys, tuple) else (ys,)
        if not all(isinstance(p, torch.Tensor) for p in parts):
            raise InputTypeError("init trajectory must be a tensor (or tuple of tensors) [N+1, *shape].")
        for p in parts:
            if not p.is_floating_point():
                raise InputTypeError(
                    f"init trajectory has dtype {p.dtype}; pass a floating-point warm start of the "
                    "state's dtype, e.g. init=ys.to(torch.float64)."
                )
            if p.device.type == "meta":
                raise InputTypeError(
                    "init trajectory lies on the meta device, which holds no values; pass it on the "
                    "state's device, e.g. init=ys.to('cpu')."
                )
        self.ys = ys
        self._flat: Optional[torch.Tensor] = None

    def reset(self, system):
        spec, N = system.spec, system.num_intervals
        try:
            spec.check_batch(self.ys, N + 1, "init trajectory")
        except InputValueError as err:
            raise InputValueError(
                f"init trajectory does not fit the system ({err}); pass N+1={N + 1} states stacked on axis 0."
            ) from None
        flat = spec.flatten_batch(self.ys).to(dtype=spec.dtype, device=spec.device)
        if not torch.isfinite(flat).all():
            raise InputValueError("init trajectory contains NaN or Inf; pass a finite warm start.")
        self._flat = flat

    def initialize(self, system, anchor, anchor_index, count, cost):
        return self._flat[anchor_index + 1 : anchor_index + 1 + count].clone()


REGISTRY = {cls.name: cls for cls in (Constant, Coarse)}


def get(init: Union[None, str, Initializer, torch.Tensor, tuple]) -> Initializer:
    """An initialiser from ``None`` (constant), a name, an instance or a trajectory."""
    if init is None:
        return Constant()
    if isinstance(init, Initializer):
        return init
    if isinstance(init, (torch.Tensor, tuple)):
        return Trajectory(init)
    if isinstance(init, str):
        try:
            return REGISTRY[init]()
        except KeyError:
            raise InputValueError(
                f"unknown init {init!r}; choose one of {sorted(REGISTRY)}, pass a trajectory tensor "
                "[N+1, *shape] for a warm start, or a pitsolve.initializers.Initializer."
            ) from None
    raise InputTypeError(
        f"init is a {type(init).__name__}; pass None, a name from {sorted(REGISTRY)}, a trajectory "
        "tensor or a pitsolve.initializers.Initializer."
    )
