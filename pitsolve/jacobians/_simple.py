"""``A_n = 0`` (Jacobi) and ``A_n = I`` (ParaSolver Eq. 12–13, ParaDiGMS' Picard)."""

from __future__ import annotations

import torch

from ._base import JacobianStrategy, Sweep

__all__ = ["Zero", "Identity"]


class Zero(JacobianStrategy):
    """Nonlinear block Jacobi: ``X^{k+1}_{n+1} = Φ_n(X^k_n)``."""

    name = "zero"

    def update(self, sweep: Sweep) -> torch.Tensor:
        return sweep.fx.clone()


class Identity(JacobianStrategy):
    r"""ParaSolver's update (Eq. 12–13): ``A_n = I``.

    .. math:: X^{k+1}_{n+1} = X_{start} + \sum_{i=start}^{n} \big(Φ_i(X^k_i) − X^k_i\big)

    a cumulative sum of the drifts ``Δ_i = Φ_i(X^k_i) − X^k_i`` (Algorithm 1,
    lines 5–6).  Exact in one iteration when every ``Φ_n`` is a translation
    (Prop. 4); superlinear when ``‖J_n − I‖`` is small.
    """

    name = "identity"

    def update(self, sweep: Sweep) -> torch.Tensor:
        drifts = sweep.fx - sweep.x[:-1]
        return sweep.x[0] + torch.cumsum(drifts, dim=0)
