"""``A_n = B_0 + `` a per-point multi-secant correction from past sweeps (generalised Broyden)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Tuple

import torch

from .._errors import InputValueError
from .._grid import check_nonnegative
from .._system import BandedSystem
from ._base import JacobianStrategy, Sweep

__all__ = ["Secant"]

BASES = ("identity", "zero")


@dataclass
class _Memory:
    """Secant's per-solve state: the last ``m`` ``(X^k_n, Φ_n(X^k_n))`` of each window point, and ``B_0``."""

    pairs: Dict[int, Deque[Tuple[torch.Tensor, torch.Tensor]]]
    active: torch.Tensor  # the flat columns fitted (all but the passive part)
    b0: torch.Tensor  # the diagonal of B_0 on those columns


class Secant(JacobianStrategy):
    r"""Quasi-Newton with a per-point multi-secant Jacobian, learnt from the sweeps themselves.

    Every sweep evaluates ``Φ_n`` at the iterate ``X^k_n``; two sweeps give the
    secant pair ``(ΔX, ΔF) = (X^k_n − X^{k−1}_n, Φ_n(X^k_n) − Φ_n(X^{k−1}_n))``
    with ``ΔF ≈ J_n ΔX`` — at no model cost.  With the last ``m`` such pairs of
    point ``n`` as rows of ``ΔX_n, ΔF_n ∈ R^{m×D}``, the approximation is the
    base ``B_0`` corrected to satisfy every secant equation (the multi-secant
    "bad Broyden" / type-I update of one point's Jacobian):

    .. math:: A_n = B_0 + (ΔF_n − ΔX_n B_0^T)^T (ΔX_n ΔX_n^T + λ)^{-1} ΔX_n,

    so ``A_n = J_n`` on the directions the iterates have moved in, and ``B_0``
    on the rest.  The recurrence ``δ_{i+1} = A_i δ_i + b_i`` is swept
    point by point with rank-``m`` products (no model calls, no extra depth).

    This targets Jacobians that are far from the identity on a few
    directions only, e.g. the last steps of a diffusion sampler, where the
    denoiser's Jacobian is close to a projection onto the data manifold
    (``tr J / D ≈ 0.2`` on the digits model) while ``J ≈ I`` elsewhere.

    Args:
        history: ``m``, the secant pairs kept per point (the newest ones).
        base: ``B_0``: ``"identity"``, :class:`Identity`'s ``A_n`` (``I`` on
            the part the stopping rule reads, ``0`` on carried extras such as a
            multistep sampler's history); ``"zero"`` (Jacobi).
        regularization: ``λ`` relative to the trace of ``ΔX ΔX^T``.

    Parts the system declares :attr:`~pitsolve.BandedSystem.passive` are
    left out of the fit (``Φ`` does not read them).
    """

    name = "secant"

    def __init__(self, history: int = 2, base: str = "identity", regularization: float = 1e-6):
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise InputValueError(f"history={history!r} must be an int >= 0 (0: the base alone).")
        if base not in BASES:
            raise InputValueError(f"base={base!r} is not one of {BASES}.")
        regularization = check_nonnegative(regularization, "regularization", "1e-6")
        self.history, self.base, self.regularization = history, base, regularization

    def init(self, system: BandedSystem) -> _Memory:
        D = system.spec.size
        active = torch.ones(D, dtype=torch.bool)
        if system.passive is not None:
            active[system.passive] = False
        b0 = torch.zeros(D, dtype=system.spec.dtype)
        if self.base == "identity":
            b0[system.monitored] = 1.0
        return _Memory({}, torch.nonzero(active).flatten().to(system.spec.device), b0[active].to(system.spec.device))

    def update(self, sweep: Sweep) -> torch.Tensor:
        memory = sweep.state if sweep.state is not None else self.init(sweep.system)
        cols, b0 = memory.active, memory.b0
        x, fx = sweep.x[:, cols], sweep.fx[:, cols]
        p = fx.shape[0]
        start = sweep.start
        # Drop the memory of points behind the window: they are accepted.
        for n in [n for n in memory.pairs if n < start]:
            del memory.pairs[n]
        # Per point: secant pairs (newest minus each older iterate, up to m), then the rank-m factors.
        corr_u, corr_w = [None] * p, [None] * p
        for i in range(1, p):
            n = start + i
            mem = memory.pairs.get(n) if self.history else None
            if mem:
                xs = torch.stack([m[0] for m in mem])
                fs = torch.stack([m[1] for m in mem])
                dX = x[i].unsqueeze(0) - xs  # [m, Da]
                dF = fx[i].unsqueeze(0) - fs
                gram = dX @ dX.T
                lam = self.regularization * torch.diagonal(gram).sum() + torch.finfo(x.dtype).tiny
                W = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=x.dtype, device=x.device), dX)
                corr_u[i] = dF - dX * b0  # [m, Da]
                corr_w[i] = W  # [m, Da]
        for i in range(p if self.history else 0):
            n = start + i
            mem = memory.pairs.setdefault(n, deque(maxlen=self.history))
            mem.append((x[i].clone(), fx[i].clone()))
        # Sweep the recurrence: new_{i+1} = fx_i + A_i (new_i − x_i), row 0 exact.
        out = sweep.fx.clone()
        delta = out[0, cols] - x[1]
        for i in range(1, p):
            a_delta = b0 * delta
            if corr_u[i] is not None:
                a_delta = a_delta + corr_u[i].T @ (corr_w[i] @ delta)
            new_i = fx[i] + a_delta
            out[i, cols] = new_i
            delta = new_i - x[i + 1]
        return out

    def __repr__(self) -> str:
        return f"Secant(history={self.history}, base={self.base!r}, regularization={self.regularization})"
