r"""Which points of a sweep are final: the error bound (default) and the paper's Eq. 14.

The solve promises the sequential answer to ``tol``.  Two rules decide which
points of a sweep become final (``solve(stopping=...)``); docs/design.md
("The error bound") derives the first and compares the two.

**``"error"`` (default): a bound on the distance from the sequential result.**
Write ``X`` for the accepted points and ``X*`` for the sequential solve.
The error obeys

.. math:: e_{n+1} = X_{n+1} − X^*_{n+1} = d_{n+1} + \big(Φ_n(X_n) − Φ_n(X^*_n)\big)
          ≈ d_{n+1} + J_n e_n,

with the *defect* ``d_{n+1} = X_{n+1} − Φ_n(X_n)``.  A sweep evaluates
``Φ_n`` at every input point of the window, so the defects of the input
iterate, ``b_n = Φ_n(X^k_n) − X^k_{n+1}``, are known exactly and at no cost.
In the system's own measure (:meth:`~pitsolve.BandedSystem.error_ratio`,
``‖·/s_n‖``) the error estimate of point ``n`` follows the recursion

.. math:: E_{n+1} = ρ_n E_n + β_n, \qquad β_n = ‖b_n / s_{n+1}‖,

where ``ρ_n`` is the gain of interval ``n`` (how much ``Φ_n`` amplifies a
perturbation), estimated for free from the secants of consecutive sweeps,
``ρ_n ≈ ‖Φ_n(X^k_n) − Φ_n(X^{k−1}_n)‖ / ‖X^k_n − X^{k−1}_n‖``, and, where a
point has no secant yet (secants over moves above ``LINEAR`` = 0.1 in the
measure see curvature rather than gain and are left out), by the median gain of the newest sweep that had
secants, never below 1 (a single secant is noisy, and the direction the
iterates moved in may contract while the error's direction does not).
A sweep accepts the leading run of input points ``X^k_{a+1} … X^k_{a+j}``
whose estimates, grown by the gain still ahead (``ρ^{N−n}``), stay within
the budget (or whose defect is round-off: they add no error), and then
``Φ_{a+j}(X^k_{a+j})`` itself as point ``a+j+1`` (defect zero, estimate
``ρ E``): at least one point per sweep, so finite termination holds.  The
budget of point ``n`` is ``κ·tol·(f + (1−f)·n/N)`` (``f`` = ``spend``): a
first run may use the fraction ``f`` of the tolerance, the rest is shared
out along the trajectory, so errors accepted early, propagated and summed,
still end within ``tol``; ``κ = 1/2`` (``SAFETY``) leaves room for the
model's error and for the points accepted as ``Φ`` of their predecessors.

The largest estimate over the accepted points is
``Solution.error_estimate``.  When the front itself exceeds ``tol`` (the
accepted errors, amplified by the flow, outgrow the tolerance: a chaotic
horizon), the solve still finishes but reports
:attr:`~pitsolve.Status.UNCERTIFIED` instead of converged.

**``"eq14"``: the paper's rule.**  Point ``n`` passes when its last change
``‖(X^{k+1}_n − X^k_n)/s_n‖ ≤ tol``; the leading run of passing points and
the point after it are accepted.  It bounds one change per point, not the
sum of the accepted defects, so its result can lie far more than ``tol``
from the sequential one on slow or expanding flows; ``error_estimate`` is
then ``None``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ._errors import InputValueError
from ._system import BandedSystem

__all__ = ["RULES", "ErrorBound", "check_rule"]

#: The acceptance rules ``solve(stopping=...)`` knows.
RULES = ("error", "eq14")

#: The share of the budget a first run of points may spend (``f`` above).
SPEND = 0.25

#: The largest move (in the system's measure) whose secant estimates a gain.
LINEAR = 0.1

#: The budget's part of ``tol`` (``κ``): the estimate is a model, and a point accepted as ``Φ`` of
#: its predecessor (finite termination) may still grow it by the gain of one interval.
SAFETY = 0.5


def check_rule(stopping) -> str:
    if stopping not in RULES:
        raise InputValueError(
            f"stopping={stopping!r} is not an acceptance rule; pass 'error' (the result is within tol of the "
            "sequential one) or 'eq14' (the paper's per-point change test)."
        )
    return stopping


class ErrorBound:
    """The ``"error"`` rule's state during one solve (see the module docs).

    Attributes:
        front: ``E`` of the newest accepted point (the anchor of the window).
        largest: the largest ``E`` over the accepted points.
        gain_total: the product of the gains ``ρ_n`` over the accepted intervals.
    """

    def __init__(self, system: BandedSystem, tol: float, N: int, spend: float = SPEND):
        self.system, self.tol, self.N, self.spend = system, float(tol), N, spend
        self.front = 0.0
        self.largest = 0.0
        self.gain_total = 1.0
        self.rho_ref = 1.0
        # The newest sweep's input rows and their Φ, for the secants: (start, x [p+1, D], fx [p, D]).
        self._prev: Optional[Tuple[int, torch.Tensor, torch.Tensor]] = None
        eps = torch.finfo(system.spec.dtype).eps
        self._tiny = math.sqrt(eps)  # secants over smaller moves are round-off
        self._roundoff = 100 * eps  # defects below it are round-off of Φ itself, not of the iteration

    def budget(self, n: int) -> float:
        """The largest estimate point ``n`` may have: ``κ·tol·(f + (1−f)·n/N)``."""
        return SAFETY * self.tol * (self.spend + (1.0 - self.spend) * n / self.N)

    def gain(self, start: int, x: torch.Tensor, fx: torch.Tensor, indices: torch.Tensor) -> float:
        """``ρ`` of the window's intervals: the median of the secant gains against the previous sweep, at least 1.

        One gain for the window: single secants are noisy, and a direction the iterates happened to
        move in may contract while the error's does not.  Without secants the last value stands.
        """
        if self._prev is not None:
            s0, xp, fxp = self._prev
            p = fx.shape[0]
            lo, hi = max(start, s0), min(start + p, s0 + fxp.shape[0])
            if hi > lo:
                a, b = slice(lo - start, hi - start), slice(lo - s0, hi - s0)
                idx = indices[a]
                moved = self.system.checked_error_ratio(x[a], xp[b], idx).detach().to("cpu", torch.float64)
                out = self.system.checked_error_ratio(fx[a], fxp[b], idx + 1).detach().to("cpu", torch.float64)
                # Secants over moves beyond LINEAR (in the measure) see the flow's curvature, not its gain.
                ok = (moved > self._tiny) & (moved <= LINEAR) & torch.isfinite(out) & torch.isfinite(moved)
                if bool(ok.any()):
                    self.rho_ref = max(1.0, float((out[ok] / moved[ok]).median()))
        return self.rho_ref

    def run(self, start: int, x: torch.Tensor, fx: torch.Tensor, indices: torch.Tensor,
            finite: torch.Tensor) -> Tuple[int, torch.Tensor]:
        """How many input points ``x[1…j]`` to accept (``j < p``; ``Φ(x[j])`` follows them), and the defects.

        ``finite[i]`` says whether ``fx[i]`` is finite; ``fx[0]`` must be.
        Returns ``j`` and the defect measure ``β`` of every input point ``[p]``.
        """
        p = fx.shape[0]
        beta = self.system.checked_error_ratio(x[1:], fx, indices + 1).detach().to("cpu", torch.float64)
        fin = finite.cpu()
        beta = torch.where(fin, beta, torch.full_like(beta, float("inf")))
        beta = torch.where(beta <= self._roundoff, torch.zeros_like(beta), beta)
        rho = self.gain(start, x, fx, indices)
        self._prev = (start, x.detach(), fx.detach())
        e, j, largest = self.front, 0, self.front
        betas, fin = beta.tolist(), fin.tolist()
        while j < p - 1:
            nxt = rho * e + betas[j]  # E of input point start+j+1
            n = start + j + 1
            # The error grows with the gain over the intervals still to come: anticipate it.
            ahead = math.exp(min((self.N - n) * math.log(rho), 700.0))
            # A point with no defect (round-off) adds nothing: accept it even when the error inherited
            # from earlier points already fills the budget (nothing can shrink that any more).
            if not (nxt * ahead <= self.budget(n) or betas[j] == 0.0) or not fin[j + 1]:
                break
            e, largest, j = nxt, max(largest, nxt), j + 1
        # Φ of the last accepted point is exact (zero defect): the point after the run.
        self.front = rho * e
        self.largest = max(self.largest, largest, self.front)
        self.gain_total *= rho ** (j + 1)
        return j, beta.to(x.dtype)

    def advance_exact(self, shift: int, gain: float) -> None:
        """``shift`` points accepted as ``Φ`` of their predecessors (the sequential rung), each of ``gain``.

        ``gain`` is measured along the propagated error direction (a tangent), so it may be below 1.
        """
        factor = gain ** shift
        self.front *= factor
        self.gain_total *= factor
        self.largest = max(self.largest, self.front)
