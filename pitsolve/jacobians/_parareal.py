"""``A_n δ ≈ G_n(X + δ) − G_n(X)``: Parareal with a coarse propagator (SRDS)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .._errors import InputTypeError, InputValueError
from .._grid import as_integer
from .._system import BandedSystem
from ._base import JacobianStrategy, Sweep

__all__ = ["Parareal"]


class Parareal(JacobianStrategy):
    r"""Parareal: the Jacobian's action replaced by a coarse propagator ``G_n``.

    .. math:: X^{k+1}_{n+1} = Φ_n(X^k_n) + G_n(X^{k+1}_n) − G_n(X^k_n)

    ``G_n(X^k_n)`` runs in one batched call; the correction
    ``G_n(X^{k+1}_n)`` is a sequential sweep of the cheap ``G`` over the window
    (``p`` coarse steps of depth in all).  Exact in one iteration when ``G = Φ``.

    Args:
        coarse: ``coarse(states, indices)`` with the call shape of
            :meth:`~pitsolve.BandedSystem.propagate`; ``None`` uses the system's
            :meth:`~pitsolve.BandedSystem.coarse_propagate` (for ODE and SDE
            systems, one step of the fine method per interval).
        cost: fine steps one coarse call costs (default: the system's
            ``coarse_steps``).
    """

    name = "parareal"

    def __init__(self, coarse: Optional[Callable] = None, cost: Optional[int] = None):
        if coarse is not None and not callable(coarse):
            raise InputTypeError(f"coarse is a {type(coarse).__name__}; pass coarse(states, indices) or None.")
        if cost is not None:
            cost = as_integer(cost)
            if isinstance(cost, bool) or not isinstance(cost, int):
                raise InputTypeError(
                    f"cost={cost!r} is not an integer ({type(cost).__name__}); pass the fine steps one coarse "
                    "call costs as an int >= 0, or None (the system's coarse_steps)."
                )
            if cost < 0:
                raise InputValueError(
                    f"cost={cost} must be an int >= 0 (the fine steps one coarse call costs), or None "
                    "(the system's coarse_steps)."
                )
        self.coarse, self.cost = coarse, cost

    def init(self, system: BandedSystem) -> None:
        if self.coarse is None and type(system).coarse_propagate is BandedSystem.coarse_propagate:
            raise InputTypeError(
                f"{type(system).__name__} defines no coarse propagator; pass one as "
                "Parareal(coarse=lambda states, indices: ...) or choose another jacobian."
            )

    def _g(self, system: BandedSystem, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.coarse is None:
            return system.coarse_flat(x, idx)
        spec = system.spec
        out = self.coarse(spec.unflatten_batch(x), idx)
        spec.check_batch(out, x.shape[0], "Parareal coarse")
        return spec.flatten_batch(out)

    def extra_depth(self, system: BandedSystem, p: int) -> int:
        step_cost = self.cost if self.cost is not None else system.coarse_steps
        return p * step_cost if p > 1 else 0

    def update(self, sweep: Sweep) -> torch.Tensor:
        system, x, idx, p = sweep.system, sweep.x, sweep.indices, sweep.size
        step_cost = self.cost if self.cost is not None else system.coarse_steps
        new = [sweep.fx[0]]  # Φ of the fixed anchor; row 0 needs no correction
        if p > 1:
            # G_i(X^k_i) for rows 1 … p−1 in one batched call: one more coarse wave.
            g_old = self._g(system, x[1:-1], idx[1:])
            for i in range(1, p):
                g_new = self._g(system, new[-1].unsqueeze(0), idx[i : i + 1])[0]
                new.append(sweep.fx[i] + g_new - g_old[i - 1])
            sweep.cost.nfe += 2 * (p - 1) * step_cost
            sweep.cost.depth += p * step_cost
        return torch.stack(new)

    def __repr__(self) -> str:
        return f"Parareal(coarse={'system default' if self.coarse is None else self.coarse!r})"
