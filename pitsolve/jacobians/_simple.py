"""``A_n = 0`` (Jacobi) and ``A_n = I`` (ParaSolver Eq. 12–13, ParaDiGMS' Picard)."""

from __future__ import annotations

import torch

from .._errors import InputValueError
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

    The sum runs over the part of the state the stopping rule reads
    (:attr:`~pitsolve.BandedSystem.monitored`; all of it for ODEs and SDEs).
    Parts outside it are extras a system carries between intervals, such as
    a multistep sampler's history of clean-sample predictions, which ``Φ_n``
    overwrites from the sample alone: their Jacobian with respect to
    themselves is 0, not I, so by default they are taken from ``Φ_n``
    (``A_n = I`` on the monitored part, ``0`` on the rest).  Summing their
    drifts as well (``rest="identity"``) lets an error in the history
    compound along the window; on DPM-Solver++(2M) it diverges.

    Args:
        rest: ``"phi"`` (default) or ``"identity"``: ``A_n`` on the parts
            outside :attr:`~pitsolve.BandedSystem.monitored`.
    """

    name = "identity"

    def __init__(self, rest: str = "phi"):
        if rest not in ("phi", "identity"):
            raise InputValueError(f"rest={rest!r} must be 'phi' (A_n = 0 off the monitored part) or 'identity'.")
        self.rest = rest

    def update(self, sweep: Sweep) -> torch.Tensor:
        mon = sweep.system.monitored
        if self.rest == "identity" or mon == slice(None):
            drifts = sweep.fx - sweep.x[:-1]
            return sweep.x[0] + torch.cumsum(drifts, dim=0)
        out = sweep.fx.clone()
        drifts = sweep.fx[:, mon] - sweep.x[:-1, mon]
        out[:, mon] = sweep.x[0, mon] + torch.cumsum(drifts, dim=0)
        return out

    def __repr__(self) -> str:
        return "Identity()" if self.rest == "phi" else f"Identity(rest={self.rest!r})"
