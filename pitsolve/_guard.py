"""Divergence guards of the solve loop: damp, fall back, and never out-spend the sequential solve.

A quasi-Newton sweep with ``A_n ≠ I`` (Anderson, diagonal, Newton, dense,
Parareal) can blow up on stiff or chaotic problems far ahead of the
accepted front: ``diag(J)`` of a contractive non-normal map can exceed 1,
Newton's linearisation of a chaotic flow amplifies errors, Anderson's
least-squares fit can extrapolate wildly.  Finite termination (Algorithm 1
accepts at least one point per sweep) still bounds the number of sweeps by
``N``, but not the work, and not the *depth* a sweep spends on the
critical path.  :class:`Guard` adds two safeguards to
:func:`~pitsolve.solve`:

**The fallback ladder.**  Non-finite iterates ahead of the front are
re-initialised from the last finite point (``Solution.resets``).  The guard
acts only on a sweep that is no better than the sequential sweep — it
advanced the accepted front by at most one point — and shows divergence:
``blowups`` such sweeps have blown up, or the sweep's step is ``growth``
times larger than the identity update's step on the same sweep (an
extrapolation, e.g. the diagonal scan of a non-normal map), or in
``patience`` consecutive such sweeps a window point's stopping measure rises
``growth`` times above its value when it entered the window while the
window's largest measure is ``growth`` times its value in the rung's first
sweep (the iteration makes the guess worse, not better).  Then the solve
moves one rung down, discards the window's unaccepted iterates and
re-initialises them from the accepted front:

1. the strategy as given;
2. the strategy damped towards the identity update,
   ``X^{k+1} = G_I(X^k) + β (G_A(X^k) − G_I(X^k))`` (:class:`Damped`);
3. the identity update (ParaSolver Eq. 13);
4. the sequential sweep: ``X_{n+1} = Φ_n(X_n)`` point by point, in a loop
   as lean as :func:`~pitsolve.sequential`'s.

Rungs that coincide with the strategy (damping the identity) are skipped.
Every move is recorded in ``Solution.fallbacks`` as a :class:`Fallback`.
A strategy that converges — the front advances by more than one point per
sweep — is never moved, so the guard does not change its sweeps or depth.

**The depth budget.**  A sweep costs ``K`` (one wave of ``Φ``) plus the
strategy's extra sequential depth (:meth:`JacobianStrategy.extra_depth
<pitsolve.jacobians.JacobianStrategy.extra_depth>`: a JVP wave, a coarse
sweep, Newton's JVP sweep) and accepts at least one point.  The guard runs
the strategy's update only while, after it, the remaining points could
still be finished by sequential sweeps within ``depth_factor·N·K``:
``spent + K + extra + K·(N − a − 1) ≤ depth_factor·N·K`` for a sweep whose
first unaccepted point is ``a``; otherwise that sweep uses the identity
update, which costs no extra depth and so keeps the invariant.  By
induction the sweeps' depth never exceeds ``depth_factor`` (default 2)
times the depth ``N·K`` of :func:`~pitsolve.sequential`, and a strategy
that needs its extra depth only in its first sweeps (Newton or dense on an
affine system: exact after one sweep, Prop. 3) is not taxed.  (An
initialiser's own model steps, e.g. the preconditioning steps of Eq. 17,
are counted in ``Solution.depth`` but not charged to this budget.)  Budget
sweeps are counted in ``Solution.budget_sweeps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Union

import torch

from ._errors import InputTypeError, InputValueError
from ._system import BandedSystem
from .jacobians._base import JacobianStrategy, Sweep
from .jacobians._simple import Identity, Zero

__all__ = ["Guard", "Fallback", "Damped"]

#: The rung names, in the order the ladder descends.
RUNGS = ("strategy", "damped", "identity", "sequential")


@dataclass(frozen=True)
class Guard:
    """Settings of the divergence guards of :func:`~pitsolve.solve` (see the module docs).

    Args:
        growth: a point whose stopping measure rises this many times above
            its value when it entered the window is diverging (so is a step
            this many times larger than the identity update's).
        patience: consecutive diverging sweeps before moving down a rung.
        blowups: sweeps with non-finite iterates, counted while no sweep
            advances the front by more than one point (no better than the
            sequential sweep), before moving down a rung.  Each such sweep re-initialises the rows
            from the last finite point; a solve from a poor start often blows
            up far ahead for a few sweeps and then converges fast.
        damping: ``β`` of the damped rung, in ``(0, 1)``.
        budget: keep the sweeps' depth within ``depth_factor`` times the
            sequential solve's (``N·K``).
        depth_factor: the depth budget's multiple of ``N·K`` (``≥ 1``).
    """

    growth: float = 1e3
    patience: int = 2
    blowups: int = 8
    damping: float = 0.5
    budget: bool = True
    depth_factor: float = 2.0

    def __post_init__(self):
        if isinstance(self.growth, bool) or not isinstance(self.growth, (int, float)) or not self.growth > 1 \
                or not math.isfinite(self.growth):
            raise InputValueError(f"Guard(growth={self.growth!r}) must be a finite number > 1 (e.g. 1e3).")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise InputValueError(f"Guard(patience={self.patience!r}) must be an int >= 1 (e.g. 2).")
        if isinstance(self.blowups, bool) or not isinstance(self.blowups, int) or self.blowups < 1:
            raise InputValueError(f"Guard(blowups={self.blowups!r}) must be an int >= 1 (e.g. 8).")
        if isinstance(self.damping, bool) or not isinstance(self.damping, (int, float)) \
                or not 0 < self.damping < 1:
            raise InputValueError(f"Guard(damping={self.damping!r}) must be a number in (0, 1) (e.g. 0.5).")
        if not isinstance(self.budget, bool):
            raise InputTypeError(f"Guard(budget={self.budget!r}) must be True or False.")
        if isinstance(self.depth_factor, bool) or not isinstance(self.depth_factor, (int, float)) \
                or not 1 <= self.depth_factor < math.inf:
            raise InputValueError(
                f"Guard(depth_factor={self.depth_factor!r}) must be a finite number >= 1 (e.g. 2: at most twice "
                "the sequential depth)."
            )


@dataclass(frozen=True)
class Fallback:
    """One move down the guard's ladder, as recorded in ``Solution.fallbacks``.

    Attributes:
        iteration: the sweep after which the move was made.
        accepted: points accepted at that moment.
        source: the rung left (``"strategy"``, ``"damped"``, ``"identity"``).
        target: the rung entered (``"damped"``, ``"identity"``, ``"sequential"``).
        reason: ``"non-finite iterates"``, ``"residual growth"`` or ``"step growth"``.
    """

    iteration: int
    accepted: int
    source: str
    target: str
    reason: str


def resolve(guard: Union[None, bool, Guard]) -> Optional[Guard]:
    """``solve(guard=...)``: ``True`` → default :class:`Guard`, ``False``/``None`` → off."""
    if guard is True:
        return Guard()
    if guard is False or guard is None:
        return None
    if isinstance(guard, Guard):
        return guard
    raise InputTypeError(f"guard is a {type(guard).__name__}; pass True, False or a pitsolve.Guard(...).")


class Damped(JacobianStrategy):
    r"""A strategy's update damped towards the identity update.

    .. math:: X^{k+1} = G_I(X^k) + β\,\big(G_A(X^k) − G_I(X^k)\big)

    With ``β = 1`` it is the strategy, with ``β = 0`` ParaSolver's Eq. 13.
    The first point stays exact (both updates give ``Φ`` of the anchor).
    """

    def __init__(self, inner: JacobianStrategy, beta: float = 0.5):
        self.inner, self.beta = inner, float(beta)
        self._identity = Identity()
        self.name = f"damped-{inner.name}"

    def init(self, system: BandedSystem):
        return self.inner.init(system)

    def wave_tangents(self, system: BandedSystem):
        return self.inner.wave_tangents(system)

    def extra_depth(self, system: BandedSystem, p: int) -> int:
        return self.inner.extra_depth(system, p)

    def update(self, sweep: Sweep) -> torch.Tensor:
        base = self._identity.update(sweep)
        return base + self.beta * (self.inner.update(sweep) - base)

    def change(self, sweep: Sweep, new: torch.Tensor) -> torch.Tensor:
        return self.inner.change(sweep, new)

    def __repr__(self) -> str:
        return f"Damped({self.inner!r}, beta={self.beta})"


class Ladder:
    """The guard's state during one solve: the current rung and its divergence watch."""

    def __init__(self, guard: Optional[Guard], strategy: JacobianStrategy, system: BandedSystem):
        self.guard, self.system = guard, system
        self.rungs: List[tuple] = [("strategy", strategy)]
        if guard is not None:
            if not isinstance(strategy, (Identity, Zero)):
                self.rungs.append(("damped", Damped(strategy, guard.damping)))
            if not isinstance(strategy, Identity):
                self.rungs.append(("identity", Identity()))
            self.rungs.append(("sequential", Zero()))
        self.level = 0
        self.identity = Identity()
        self._states = {id(strategy): strategy.init(system)}  # per-solve state of each rung's strategy
        self.fallbacks: List[Fallback] = []
        self.budget_sweeps = 0
        self.sweep_depth = 0  # depth charged to the budget: Φ waves and strategy extras
        self._ref: Optional[torch.Tensor] = None  # each window point's first stopping measure
        self._ref_start = 0
        self._top: Optional[float] = None  # the largest measure of the rung's first sweep
        self._strikes = 0
        self._blowups = 0

    @property
    def rung(self) -> str:
        return self.rungs[self.level][0]

    @property
    def strategy(self) -> JacobianStrategy:
        return self.rungs[self.level][1]

    @property
    def sequential(self) -> bool:
        return self.rung == "sequential"

    def state_of(self, strategy: JacobianStrategy):
        """The per-solve state of ``strategy`` (made by its :meth:`~JacobianStrategy.init` on first use)."""
        key = id(strategy)
        if key not in self._states:
            self._states[key] = strategy.init(self.system)
        return self._states[key]

    def choose(self, start: int, p: int, depth: int, N: int) -> JacobianStrategy:
        """The strategy for this sweep's update of ``p`` points from ``start`` (the depth budget).

        Called after the sweep's ``Φ`` wave, which :meth:`charge` has not yet counted.
        """
        strategy = self.strategy
        K = self.system.steps_per_interval
        if self.guard is None or not self.guard.budget or self.sequential:
            return strategy
        extra = strategy.extra_depth(self.system, p)
        if extra > 0 and self.sweep_depth + K + extra + K * (N - start - 1) > self.guard.depth_factor * N * K:
            self.budget_sweeps += 1
            return self.identity
        return strategy

    def charge(self, depth: int) -> None:
        """Add a sweep's depth (its Φ wave and the strategy's extra waves) to the budget."""
        self.sweep_depth += depth

    @property
    def compares_steps(self) -> bool:
        """Whether the loop should pass the step sizes to :meth:`watch`."""
        return self.guard is not None and self.rung in ("strategy", "damped") and \
            not isinstance(self.strategy, (Identity, Zero))

    def watch(self, iteration: int, accepted: int, window_start: int, ratio: torch.Tensor, reset: bool,
              floor: float, steps: Optional[tuple] = None) -> bool:
        """Record a sweep; move down a rung if it diverged.  Returns whether it moved.

        ``ratio`` holds the sweep's stopping measure of the points
        ``window_start+1 …``; the sweep diverges when a point's measure rises
        ``growth`` times above the one it had when it entered the window (at
        least ``floor``) and the window's largest measure is ``growth`` times
        that of the rung's first sweep.  (Measures of different points are not compared: their
        error scales differ, e.g. ``σ_t`` along a diffusion.)  ``steps`` is the
        same measure of the sweep's step ``X^{k+1} − X^k`` and of the identity
        update's step (at least ``floor``), against which a step ``growth``
        times larger is an extrapolation, not a correction.
        """
        if self.guard is None or self.level == len(self.rungs) - 1:
            return False
        if accepted - window_start > 1:
            # The sweep beat the sequential sweep: whatever its measures did, it is converging.
            self._blowups, self._strikes = 0, 0
            return False
        reason = None
        ratio = ratio.detach().to("cpu", torch.float64)
        blowup = reset or not bool(torch.isfinite(ratio).all())
        # Blow-ups since the front last advanced by more than one point in a sweep (a solve that
        # blows up far ahead but advances faster than the sequential sweep is paying its way).
        if accepted - window_start > 1:
            self._blowups = 0
        elif blowup:
            self._blowups += 1
        if self._blowups >= self.guard.blowups:
            reason = "non-finite iterates"
        elif blowup:
            pass  # the re-initialised rows are fresh guesses; judge the next sweep
        elif steps is not None and steps[0] > self.guard.growth * steps[1]:
            reason = "step growth"
        else:
            grew = False
            ref = ratio.clamp_min(floor)
            if self._ref is not None:
                lo = max(window_start, self._ref_start)
                hi = min(window_start + ratio.numel(), self._ref_start + self._ref.numel())
                if hi > lo:
                    old = self._ref[lo - self._ref_start : hi - self._ref_start]
                    grew = bool((ratio[lo - window_start : hi - window_start] > self.guard.growth * old).any())
                    ref[lo - window_start : hi - window_start] = old
            self._ref, self._ref_start = ref, window_start
            # ... and the window as a whole is worse than the rung's first sweep: a point whose
            # first measure was tiny by chance may rise while the iteration converges.
            top = float(ratio.max().detach())
            if self._top is None:
                self._top = max(top, floor)
            grew = grew and top > self.guard.growth * self._top
            self._strikes = self._strikes + 1 if grew else 0
            if self._strikes >= self.guard.patience:
                reason = "residual growth"
        if reason is None:
            return False
        source = self.rung
        self.level += 1
        self.fallbacks.append(Fallback(iteration, accepted, source, self.rung, reason))
        self._states.pop(id(self.strategy), None)  # a fresh history for the new rung
        self._ref, self._top, self._strikes, self._blowups = None, None, 0, 0
        return True
