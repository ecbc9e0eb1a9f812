"""Triangular Anderson acceleration (ParaTAA) of the identity update."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional, Tuple

import torch

from .._errors import InputValueError
from .._grid import as_integer, check_nonnegative
from .._system import BandedSystem
from ._base import JacobianStrategy, Sweep
from ._simple import Identity

__all__ = ["Anderson"]


@dataclass
class _History:
    """Anderson's per-solve state: past ``(start, iterate x[1:], residual r)`` of the window, newest last."""

    past: Deque[Tuple[int, torch.Tensor, torch.Tensor]]
    residual: Optional[torch.Tensor] = None


class Anderson(JacobianStrategy):
    r"""Triangular Anderson acceleration of the identity update, as in ParaTAA.

    Let ``G`` be the identity update (Eq. 13) and ``r^k = G(X^k) − X^k`` its
    fixed-point residual.  With the last ``m`` differences of iterates
    ``ΔX`` and residuals ``ΔR`` (columns ``j``), the type-II Anderson step is

    .. math:: X^{k+1}_n = G(X^k)_n − (ΔX + ΔR)_n\, γ_n,

    where, unlike plain Anderson, each point ``n`` gets its own coefficients
    fitted only on the points up to it (the *triangular* structure: the
    solution at ``n`` depends only on earlier points):

    .. math:: γ_n = \arg\min_γ \sum_{l \le n} ‖r^k_l − ΔR_l γ‖^2 + λ ‖γ‖^2.

    The normal equations for all ``n`` come from cumulative sums of the
    ``m×m`` Gram blocks, solved in one batched call.  The first point of the
    window takes the plain update, so it stays exact (finite termination).

    Args:
        history: ``m``, the number of past differences used.
        regularization: ``λ`` relative to the Gram matrix's trace.
    """

    name = "anderson"

    def __init__(self, history: int = 4, regularization: float = 1e-8):
        history = as_integer(history)
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise InputValueError(f"history={history!r} must be an int >= 1.")
        regularization = check_nonnegative(regularization, "regularization", "1e-8")
        self.history, self.regularization = history, regularization
        self._base = Identity()

    def init(self, system: BandedSystem) -> _History:
        return _History(deque(maxlen=self.history + 1))

    def update(self, sweep: Sweep) -> torch.Tensor:
        state = sweep.state if sweep.state is not None else self.init(sweep.system)
        g = self._base.update(sweep)
        x = sweep.x[1:]
        r = g - x
        state.residual = r
        state.past.append((sweep.start, x, r))
        if len(state.past) < 2:
            return g
        xs, rs, mask = _aligned(state.past, sweep.start, x.shape[0])
        both = (mask[1:] & mask[:-1]).unsqueeze(-1).to(x.dtype)  # [m, p, 1]
        dx = (xs[1:] - xs[:-1]) * both  # [m, p, D]
        dr = (rs[1:] - rs[:-1]) * both
        # Cumulative normal equations over the points up to n (triangular), fitted on
        # the part of the state the stopping rule reads (e.g. not a carried prediction).
        mon = sweep.system.monitored
        gram = torch.einsum("apd,bpd->pab", dr[..., mon], dr[..., mon]).cumsum(0)  # [p, m, m]
        rhs = torch.einsum("apd,pd->pa", dr[..., mon], r[..., mon]).cumsum(0)  # [p, m]
        m = gram.shape[-1]
        eye = torch.eye(m, dtype=x.dtype, device=x.device)
        scale = torch.diagonal(gram, dim1=1, dim2=2).sum(-1).clamp_min(torch.finfo(x.dtype).tiny)
        lam = self.regularization * scale / m + torch.finfo(x.dtype).tiny
        gamma = torch.linalg.solve(gram + lam.view(-1, 1, 1) * eye, rhs.unsqueeze(-1)).squeeze(-1)
        gamma = torch.cat([torch.zeros_like(gamma[:1]), gamma[1:]])  # out of place: autograd runs through it
        correction = torch.einsum("apd,pa->pd", dx + dr, gamma)
        return g - correction

    def change(self, sweep: Sweep, new: torch.Tensor) -> torch.Tensor:
        """The identity update's change ``r^k = G(X^k) − X^k``: the fixed-point residual.

        The accelerated step itself can be small far from the solution (the
        history damps it), so the stopping rule reads the residual, as ParaTAA does.
        """
        if sweep.state is None or sweep.state.residual is None or sweep.state.residual.shape != new.shape:
            return new - sweep.x[1:]
        r = sweep.state.residual.clone()
        r[0] = new[0] - sweep.x[1]
        return r

    def __repr__(self) -> str:
        return f"Anderson(history={self.history}, regularization={self.regularization})"


def _aligned(past, start: int, p: int):
    """Past iterates and residuals on the current window's points (aligned by point index), with a mask."""
    xs, rs, masks = [], [], []
    for s0, xp, rp in past:
        x_al = torch.zeros((p, xp.shape[1]), dtype=xp.dtype, device=xp.device)
        r_al = torch.zeros_like(x_al)
        mask = torch.zeros(p, dtype=torch.bool, device=xp.device)
        lo = max(start, s0)
        hi = min(start + p, s0 + xp.shape[0])
        if hi > lo:
            x_al[lo - start : hi - start] = xp[lo - s0 : hi - s0]
            r_al[lo - start : hi - start] = rp[lo - s0 : hi - s0]
            mask[lo - start : hi - start] = True
        xs.append(x_al)
        rs.append(r_al)
        masks.append(mask)
    return torch.stack(xs), torch.stack(rs), torch.stack(masks)
