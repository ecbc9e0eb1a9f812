"""The one result type of every solve (docs/design.md, "Architecture" and "Measures")."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ._state import State

__all__ = ["Solution", "Status", "Iteration"]


class Status(enum.Enum):
    """How a solve ended; the value is the human message template."""

    CONVERGED = "converged: all {N} points accepted in {iterations} iterations"
    MAX_ITERS = (
        "not converged: stopped after max_iters={iterations} iterations with {accepted} of {N} points "
        "accepted; raise max_iters (at most N={N} are ever needed) or loosen tol"
    )
    NONFINITE = (
        "not converged: NaN or Inf appeared in the propagated states in iteration {iterations} "
        "({accepted} of {N} points accepted); check the system for blow-up or lower the step size"
    )
    UNCERTIFIED = (
        "not certified: all {N} points accepted in {iterations} iterations, but the estimated error against "
        "the sequential solve, {estimate:.3g}, exceeds tol={tol:g}: the flow amplified the accepted defects "
        "(estimated gain {gain:.3g} over the accepted intervals) beyond what the sweeps could certify; solve "
        "sequentially (pitsolve.sequential), shorten the horizon or loosen tol"
    )
    SEQUENTIAL = "sequential solve of {N} intervals"


@dataclass
class Solution:
    """Result of :func:`~pitsolve.solve` or :func:`~pitsolve.sequential`.

    Attributes:
        ys: the N+1 boundary states ``X_0 … X_N`` stacked on a leading axis
            (a tuple of such tensors for tuple states); with
            ``trajectory=False`` only ``X_0`` and ``X_N``.
        converged: whether every point was accepted (and, with
            ``stopping="error"``, the error estimate is within ``tol``).
        status: a :class:`Status`; ``message`` says it in words.
        iterations: parallel sweeps (sequential: N).
        nfe: fine steps evaluated in total, summed over the batch (work).
            A JVP counts as one evaluation.  Sequential: N·K.
        depth: fine steps on the critical path (docs/design.md, "Measures"): the sum over
            iterations of the fine steps of one ``Φ_n`` plus any sequential
            sweeps a strategy or initialiser needs.  Sequential: N·K.
        residuals: per iteration, the largest error ratio
            ``RMS(ΔX_n / s_n)`` over the window (Eq. 14, before dividing by tol).
        point_residuals: per iteration, the error ratio of each window point.
        window_starts: per iteration, the index of the window's first point.
        accepted: per iteration, the number of accepted points after it.
        twin_rows: per iteration, the rows the error bound added to the call (its twin
            row ``X_a − ê``, docs/design.md "The error bound"): 0 or 1, each ``K`` fine
            steps of NFE and no depth.
        resets: sweeps in which non-finite iterates ahead of the front were
            re-initialised from the last finite point (a divergence guard).
        fallbacks: the moves of the divergence guard down its ladder
            (damped, identity, sequential), as :class:`~pitsolve.Fallback`
            records; empty when the strategy ran throughout.
        budget_sweeps: sweeps that used the identity update because the
            strategy's extra depth would have exceeded the sequential
            solve's (:class:`~pitsolve.Guard`, ``budget``).
        wall_time: seconds from the start of the solve to the end.
        error_estimate: the estimated largest distance of an accepted point
            from the sequential result, in the system's measure — of the last
            point only for a system with ``certified = "final"`` (a sampler) —
            (``≤ tol`` when converged; ``stopping="error"`` only, else ``None``).
        stopping: the acceptance rule, ``"error"`` or ``"eq14"``.
        tuning: for ``window="auto"``, the chosen window, the measured
            batch-cost curve ``[(rows, seconds), …]``, the sweep model and the
            seconds the timing took (``0`` when cached); else ``None``.
        settings: every setting of the solve as resolved (strategy, window
            asked and chosen, tol, stopping, init, guard, …; an adapter adds
            its own, e.g. a sampler's defaults and where they come from), so
            that the run can be repeated exactly; ``print(solution)`` shows them.
    """

    ys: State
    converged: bool
    status: Status
    message: str
    iterations: int
    nfe: int
    depth: int
    num_intervals: int
    residuals: List[float] = field(default_factory=list)
    point_residuals: List[torch.Tensor] = field(default_factory=list)
    window_starts: List[int] = field(default_factory=list)
    accepted: List[int] = field(default_factory=list)
    twin_rows: List[int] = field(default_factory=list)
    resets: int = 0
    fallbacks: List[Any] = field(default_factory=list)
    budget_sweeps: int = 0
    wall_time: float = 0.0
    tuning: Optional[dict] = None
    jacobian: Optional[str] = None
    window: Optional[int] = None
    tol: Optional[float] = None
    stopping: Optional[str] = None
    error_estimate: Optional[float] = None
    settings: Dict[str, str] = field(default_factory=dict)

    @property
    def y(self) -> State:
        """The final state ``X_N``."""
        if isinstance(self.ys, tuple):
            return tuple(p[-1] for p in self.ys)
        return self.ys[-1]

    def __str__(self) -> str:
        """The one-line summary, then every resolved setting (``settings``) and the tuner's cost, if any."""
        lines = [repr(self)]
        if self.settings:
            lines.append("  settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        if self.tuning:
            how = "cached" if self.tuning.get("cached") else f"{self.tuning.get('seconds', 0.0):.3g}s timing"
            lines.append(f"  window='auto' chose {self.tuning.get('window')} ({how}, part of wall_time)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        extra = ""
        if self.error_estimate is not None:
            extra += f", error_estimate={self.error_estimate:.3g}"
        if self.fallbacks:
            extra += f", fallbacks={[f.target for f in self.fallbacks]}"
        if self.budget_sweeps:
            extra += f", budget_sweeps={self.budget_sweeps}"
        return (
            f"Solution(status={self.status.name}, iterations={self.iterations}, depth={self.depth}, "
            f"nfe={self.nfe}, N={self.num_intervals}{extra}, wall_time={self.wall_time:.3g}s)"
        )


@dataclass(frozen=True)
class Iteration:
    """What a ``callback`` of :func:`~pitsolve.solve` sees after each sweep.

    Attributes:
        iteration: the sweep's number (1-based).
        start: index of the window's anchor point during the sweep.
        iterate: the new iterate of points ``start+1 … start+p``, flat ``[p, D]``
            (:attr:`states` gives it in the state's own structure).
        ratio: each point's stopping measure (Eq. 14, ≤ tol passes).
        accepted: the number of accepted points after the sweep.
        spec: the state's :class:`~pitsolve.StateSpec`.
    """

    iteration: int
    start: int
    iterate: torch.Tensor
    ratio: torch.Tensor
    accepted: int
    spec: object

    @property
    def states(self) -> State:
        """The iterate as a batch of states ``[p, *shape]`` (a tuple for tuple states)."""
        return self.spec.unflatten_batch(self.iterate)
