"""The interface every Jacobian strategy implements (docs/design.md, "The banded system")."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from .._system import BandedSystem

__all__ = ["JacobianStrategy", "Sweep", "Cost"]


@dataclass
class Cost:
    """Work and critical-path length in fine steps (docs/design.md, "Measures")."""

    nfe: int = 0
    depth: int = 0


@dataclass
class Sweep:
    r"""Everything a strategy sees in one iteration over the window.

    The window holds the points ``start … start+p``; ``x[0]`` is the anchor
    ``X_start`` (accepted, fixed) and ``x[i]`` the iterate ``X^k_{start+i}``.
    ``fx[i] = Φ_{start+i}(x[i])`` for ``i = 0 … p−1`` were evaluated in one
    batched call.  A strategy returns ``X^{k+1}_{start+1 … start+p}`` from

    .. math:: X^{k+1}_{n+1} = Φ_n(X^k_n) + A_n (X^{k+1}_n − X^k_n),

    i.e. ``x[1:] + δ`` with ``δ_{i+1} = b_i + A_i δ_i``, ``δ_0 = 0`` and
    ``b_i = fx[i] − x[i+1]``; extra evaluations are added to ``cost``.
    ``state`` is the strategy's per-solve state, as returned by
    :meth:`JacobianStrategy.init` (history of past sweeps, a random
    generator): the solve owns it, so one strategy instance can serve
    several solves at once.
    """

    system: BandedSystem
    start: int
    indices: torch.Tensor
    x: torch.Tensor
    fx: torch.Tensor
    cost: Cost
    state: Any = None
    jacobian: Optional[torch.Tensor] = None

    # ``jacobian``: ``J_i`` of the rows ``[p, D, D]`` when the loop evaluated them in the same
    # batched wave as ``Φ`` (:meth:`JacobianStrategy.wave_tangents`); row 0 is not used.

    @property
    def b(self) -> torch.Tensor:
        """``b_i = Φ_i(X^k_i) − X^k_{i+1}``: the residual of Eq. 8 on the window."""
        return self.fx - self.x[1:]

    @property
    def size(self) -> int:
        return self.fx.shape[0]


class JacobianStrategy(abc.ABC):
    """An approximation ``A_n ≈ J_n = ∂Φ_n/∂X_n`` and the solve of its recurrence.

    A strategy instance holds only its settings.  Everything that changes
    during a solve (the history of past sweeps, a generator) lives in the
    object :meth:`init` returns, which the solve owns and hands back in
    every :class:`Sweep` as ``sweep.state`` (the ``init``/``step`` split of
    diffrax's solvers).  So :func:`~pitsolve.solve` never mutates the
    instance a user passed, and one instance can serve concurrent solves.
    """

    #: The registry name.
    name: ClassVar[str]

    def init(self, system: BandedSystem) -> Any:
        """Check the strategy against ``system`` and return its per-solve state (default ``None``).

        Called once at the start of every solve (and when the divergence
        guard enters this strategy's rung).
        """
        return None

    def wave_tangents(self, system: BandedSystem) -> Optional[torch.Tensor]:
        """Tangents ``[m, D]`` whose JVPs the update needs at every window point, or ``None``.

        A strategy that returns them (Dense and the exact diagonal: the ``D``
        basis vectors) gets ``Φ`` and ``J_n v`` of every point from **one**
        batched forward-mode call — one wave of depth ``K`` instead of two —
        as ``sweep.fx`` and ``sweep.jacobian``.
        """
        return None

    def extra_depth(self, system: BandedSystem, p: int) -> int:
        """Depth (fine steps on the critical path) a sweep over ``p`` points adds to the ``Φ`` wave.

        ``0`` for updates computed from ``Φ`` alone; a batched JVP wave adds
        ``K``, a sequential sweep more.  The divergence guard's depth budget
        reads it (:class:`~pitsolve.Guard`).
        """
        return 0

    @abc.abstractmethod
    def update(self, sweep: Sweep) -> torch.Tensor:
        """Return the new iterate ``[p, D]`` for the window's points ``start+1 … start+p``."""

    def change(self, sweep: Sweep, new: torch.Tensor) -> torch.Tensor:
        """The per-point change ``[p, D]`` the stopping rule (Eq. 14) reads; default ``X^{k+1} − X^k``."""
        return new - sweep.x[1:]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
