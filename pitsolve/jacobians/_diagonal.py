"""``A_n = diag(J_n)``: quasi-DEER / quasi-ELK."""

from __future__ import annotations

import torch

from .._errors import InputValueError
from .._scan import linear_scan
from .._system import BandedSystem
from ._base import JacobianStrategy, Sweep
from ._jac import jacobian_columns, probe_diagonal

__all__ = ["Diagonal"]


class Diagonal(JacobianStrategy):
    r"""Quasi-Newton with the diagonal of the Jacobian, ``A_n = diag(J_n)``.

    The recurrence ``δ_{i+1} = diag(J_i) δ_i + b_i`` is an elementwise linear
    scan (:func:`~pitsolve._scan.linear_scan`, depth O(log p)).  For states of
    at most ``exact_below`` entries the diagonal is exact (``D`` JVPs per point,
    one batched call); above it, a stochastic estimate ``E[v ⊙ J v]`` over
    ``probes`` Rademacher vectors ``v`` (Hutchinson's diagonal estimator),
    seeded by ``seed`` so a solve is reproducible.

    Args:
        exact_below: largest state size D for the exact diagonal.
        probes: Rademacher probes per point for larger states.
        seed: seed of the probes.
        clip: estimates are clipped to ``[-clip, clip]`` (the noisy estimate of
            a large state can otherwise amplify errors); ``None`` disables it.
    """

    name = "diagonal"

    def __init__(self, exact_below: int = 64, probes: int = 4, seed: int = 0, clip: float | None = 2.0):
        if exact_below < 0 or probes < 1:
            raise InputValueError(f"exact_below={exact_below} must be >= 0 and probes={probes} >= 1.")
        self.exact_below, self.probes, self.seed, self.clip = exact_below, probes, seed, clip

    def init(self, system: BandedSystem) -> torch.Generator:
        """The per-solve state: the probes' generator, seeded with ``seed``."""
        return torch.Generator().manual_seed(self.seed)

    def extra_depth(self, system: BandedSystem, p: int) -> int:
        return system.steps_per_interval if p > 1 else 0

    def update(self, sweep: Sweep) -> torch.Tensor:
        D = sweep.x.shape[1]
        if D <= self.exact_below:
            diag = torch.diagonal(jacobian_columns(sweep), dim1=1, dim2=2)
        else:
            gen = sweep.state if sweep.state is not None else self.init(sweep.system)
            diag = probe_diagonal(sweep, self.probes, gen)
            if self.clip is not None:
                diag = diag.clamp(-self.clip, self.clip)
        delta = linear_scan(diag, sweep.b, dense=False)
        return sweep.x[1:] + delta

    def __repr__(self) -> str:
        return f"Diagonal(exact_below={self.exact_below}, probes={self.probes}, seed={self.seed})"
