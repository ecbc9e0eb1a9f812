"""``A_n = diag(J_n)``: quasi-DEER / quasi-ELK."""

from __future__ import annotations

import torch

from .._errors import InputTypeError, InputValueError
from .._grid import as_integer, as_real
from .._scan import linear_scan
from .._system import BandedSystem
from ._base import JacobianStrategy, Sweep
from ._jac import jacobian_columns, probe_diagonal

__all__ = ["Diagonal"]

#: The largest seed of the probes (torch generators take 64-bit seeds; kept to the signed range).
MAX_SEED = 2**63 - 1


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
        exact_below, probes, seed = as_integer(exact_below), as_integer(probes), as_integer(seed)
        for name, value, low in (("exact_below", exact_below, 0), ("probes", probes, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputTypeError(f"{name}={value!r} is not an integer ({type(value).__name__}); pass an int >= {low}.")
            if value < low:
                raise InputValueError(f"{name}={value} must be an int >= {low}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputTypeError(
                f"seed={seed!r} is not an integer ({type(seed).__name__}); pass an int in [0, 2**63 - 1], e.g. seed=0."
            )
        if not 0 <= seed <= MAX_SEED:
            raise InputValueError(f"seed={seed} is outside [0, 2**63 - 1]; pass a seed in that range, e.g. seed=0.")
        if clip is not None:
            value = as_real(clip)
            if not isinstance(value, float):
                raise InputTypeError(
                    f"clip={clip!r} is not a number ({type(clip).__name__}); pass a number > 0, e.g. 2.0, "
                    "or None (no clipping)."
                )
            if not value > 0:
                raise InputValueError(f"clip={clip!r} must be a number > 0, e.g. 2.0, or None (no clipping).")
            clip = value
        self.exact_below, self.probes, self.seed, self.clip = exact_below, probes, seed, clip

    def init(self, system: BandedSystem) -> torch.Generator:
        """The per-solve state: the probes' generator, seeded with ``seed``."""
        return torch.Generator().manual_seed(self.seed)

    def wave_tangents(self, system: BandedSystem):
        """The exact diagonal's ``D`` basis vectors, evaluated with ``Φ`` in one wave (``None`` for probes)."""
        D = system.spec.size
        if D > self.exact_below:
            return None
        return torch.eye(D, dtype=system.spec.dtype, device=system.spec.device)

    def extra_depth(self, system: BandedSystem, p: int) -> int:
        if system.spec.size <= self.exact_below:
            return 0  # the exact diagonal comes with Φ, in the same wave (wave_tangents)
        return system.steps_per_interval if p > 1 else 0

    def update(self, sweep: Sweep) -> torch.Tensor:
        D = sweep.x.shape[1]
        if D <= self.exact_below:
            jac = sweep.jacobian if sweep.jacobian is not None else jacobian_columns(sweep)
            diag = torch.diagonal(jac, dim1=1, dim2=2)
        else:
            gen = sweep.state if sweep.state is not None else self.init(sweep.system)
            diag = probe_diagonal(sweep, self.probes, gen)
            if self.clip is not None:
                diag = diag.clamp(-self.clip, self.clip)
        delta = linear_scan(diag, sweep.b, dense=False)
        return sweep.x[1:] + delta

    def __repr__(self) -> str:
        return f"Diagonal(exact_below={self.exact_below}, probes={self.probes}, seed={self.seed})"
