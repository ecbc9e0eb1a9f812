r"""Which points of a sweep are final: the error bound (default) and the paper's Eq. 14.

The solve promises the sequential answer to ``tol``.  Two rules decide which
points of a sweep become final (``solve(stopping=...)``); docs/design.md
("The error bound") derives the first and compares the two.

**``"error"`` (default): an estimate of the distance from the sequential result.**
Write ``X`` for the accepted points and ``X*`` for the sequential solve.
The error obeys

.. math:: e_{n+1} = X_{n+1} − X^*_{n+1} = d_{n+1} + \big(Φ_n(X_n) − Φ_n(X^*_n)\big)
          ≈ d_{n+1} + J_n e_n,

with the *defect* ``d_{n+1} = X_{n+1} − Φ_n(X_n)``.  A sweep evaluates
``Φ_n`` at every input point of the window, so the defects of the input
iterate are known exactly, as vectors, at no model cost.  The rule carries
an estimate ``ê`` of the error *vector* of the newest accepted point (the
window's anchor ``a``), per independent part of the state
(:meth:`~pitsolve.BandedSystem.error_parts`: the images of a batch):

* **the twin row**: each sweep's batched call also evaluates
  ``Φ_a(X_a − ê)``, so ``J_a ê ≈ Φ_a(X_a) − Φ_a(X_a − ê)`` — the error's own
  image, exact to first order (one more row, no extra depth).  A part whose
  ``ê`` shrinks keeps its size (in ``J_a ê``'s direction): a contraction
  measured along ``ê`` is never credited to an error whose direction differs;
* **inside a run** ``a+1 … a+j`` of candidate points, ``ê`` is carried by
  scalar gains — the twin's, and for the run's own defects the window's secant
  gains ``‖Φ(X^k) − Φ(X^{k−1})‖ / ‖X^k − X^{k−1}‖`` per interval and part,
  both never below 1 — and the defects are added as vectors, so errors that
  cancel are not counted twice (the next sweep's twin row propagates the sum
  exactly);
* **the rule** accepts the leading candidates whose inherited error plus the
  *sum of the measures* of the run's own defects (no cancellation credited
  before the twin row has seen them), grown by the gains still ahead (the
  window's secants, then the mean twin gain), stays within the budget
  ``κ·tol·(f + (1−f)·n/N)`` (``κ`` = ``SAFETY`` = 1/2, ``f`` = ``SPEND`` =
  1/4); then ``Φ_{a+j}(X^k_{a+j})`` itself as point ``a+j+1`` (zero defect):
  at least one point per sweep, so finite termination holds.  A defect at
  round-off (``10·eps`` in the measure) passes whatever the budget, but
  still enters ``ê``.

``Solution.error_estimate`` is the largest measure of ``ê`` over the accepted
points (or, for a system whose result is its last point —
``BandedSystem.certified = "final"``, a sampler — that of the last point).
When it exceeds ``tol`` (errors the flow amplified after their acceptance:
a chaotic horizon, a late expansion), the solve still finishes but reports
:attr:`~pitsolve.Status.UNCERTIFIED` instead of converged.  ``ê`` is a first-
order model, not a bound; ``python -m benchmarks.error_matrix`` measures how
often it holds.

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

    Every quantity is kept per independent part of the state (the images of a batch:
    :meth:`~pitsolve.BandedSystem.error_parts`), ``[P]``; the measure is their maximum.

    Attributes:
        vec: ``ê``, the estimated error of the newest accepted point (the anchor of the window),
            flat ``[D]`` in the state's own units; ``None`` while it is zero.
        front: the measure of ``ê`` per part, ``[P]``.
        largest: the largest measure over the accepted points and parts.
        gain_total: the product of the gains over the accepted intervals (the largest over parts).
    """

    def __init__(self, system: BandedSystem, tol: float, N: int, spend: float = SPEND):
        self.system, self.tol, self.N, self.spend = system, float(tol), N, spend
        dev = system.spec.device
        ids = system.parts
        self._ids = None if ids is None else ids.to(device=dev, dtype=torch.long)
        P = 1 if ids is None else int(self._ids.max()) + 1
        self.vec: Optional[torch.Tensor] = None
        self.front = torch.zeros(P, dtype=torch.float64)
        self.largest = 0.0
        self._lost = False  # the estimate became non-finite: it stays so (nothing can certify the rest)
        self._gain_total = torch.ones(P, dtype=torch.float64)
        self._median = torch.ones(P, dtype=torch.float64)  # the last median secant gain per part
        self._log_gain = torch.zeros(P, dtype=torch.float64)  # Σ log(twin gain): the mean growth ahead
        self._gains = 0
        self._c = 1.0  # the twin row's scale: X_a − c·ê
        # The newest sweep's input rows and their Φ, for the secants: (start, x [p+1, D], fx [p, D]).
        self._prev: Optional[Tuple[int, torch.Tensor, torch.Tensor]] = None
        eps = torch.finfo(system.spec.dtype).eps
        self._tiny = math.sqrt(eps)  # secants over smaller moves are round-off
        self._roundoff = 10 * eps  # defects below it are round-off of Φ itself, not of the iteration
        self.final_only = getattr(system, "certified", "trajectory") == "final"
        self._active = None
        if system.passive is not None:  # parts Φ does not read: their errors do not propagate
            self._active = torch.ones(system.spec.size, dtype=torch.bool, device=dev)
            self._active[system.passive] = False

    # -- what is reported --------------------------------------------------------------------------
    @property
    def front_max(self) -> float:
        return float(self.front.max())

    @property
    def estimate(self) -> float:
        """The estimate ``tol`` is held to: the largest over the accepted points, or (a system that
        certifies its final point only) that of the newest accepted point."""
        if self._lost:
            return math.inf
        return self.front_max if self.final_only else self.largest

    @property
    def gain_total(self) -> float:
        return float(self._gain_total.max())

    def budget(self, n: int) -> float:
        """The largest estimate point ``n`` may have: ``κ·tol·(f + (1−f)·n/N)``."""
        return SAFETY * self.tol * (self.spend + (1.0 - self.spend) * n / self.N)

    def ahead(self, n: int) -> torch.Tensor:
        """The growth still to come after point ``n`` per part: the mean twin gain, over the intervals left."""
        if self._gains == 0:
            return torch.ones_like(self.front)
        rate = (self._log_gain / self._gains).clamp_min(0.0)
        return torch.exp(((self.N - n) * rate).clamp_max(700.0))

    # -- helpers -------------------------------------------------------------------------------------
    def _measure(self, at: torch.Tensor, vec: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The measure of error vectors ``vec`` at points ``at`` per part, ``[rows, P]`` (float64, CPU)."""
        out = self.system.error_parts(at + vec, at, indices).detach().to("cpu", torch.float64)
        return torch.where(torch.isnan(out), torch.full_like(out, math.inf), out)

    def _spread(self, gains: torch.Tensor, like: torch.Tensor, passive: float = 0.0) -> torch.Tensor:
        """Per-part gains ``[P]`` as a flat ``[D]`` factor; passive parts get ``passive`` (default 0: their
        errors do not propagate)."""
        g = gains.to(like)
        flat = g.expand(like.shape[-1]) if self._ids is None else g[self._ids]
        if self._active is None:
            return flat
        return torch.where(self._active.to(like.device), flat, torch.full_like(flat, passive))

    # -- the twin row: J_a ê at the anchor, in the sweep's own batched call ------------------------
    def twin(self, anchor: torch.Tensor) -> Optional[torch.Tensor]:
        """The row ``X_a − c·ê`` whose image gives ``J_a ê`` (``None`` while ``ê = 0``), ``[1, D]``.

        When ``ê`` is the true error, ``Φ(X_a) − Φ(X_a − ê)`` is the error's exact
        image (the secant to the sequential point); ``c ≥ 1`` keeps the move above round-off.
        """
        size = self.front_max
        if self.vec is None or not size > 0 or not math.isfinite(size):
            return None
        self._c = max(1.0, self._tiny / size)
        return (anchor - self._c * self.vec.to(anchor)).unsqueeze(0)

    def _propagated(self, image: torch.Tensor, twin_image: Optional[torch.Tensor], index: int,
                    anchor: Optional[torch.Tensor] = None):
        """``J_a ê`` from the twin row, and its gain per part (``image`` is point ``index``).

        The gain ``‖J_a ê‖/‖ê‖`` is measured at one scale (that of point ``index``): it multiplies
        error vectors.  Whether the error *shrank* is judged in the system's measure, ``J_a ê`` at
        point ``index`` against ``ê`` at the anchor ``index − 1`` (``anchor``, its own scale): on a
        flow whose states shrink with their scale (a sampler in σ-space, ``x = x_0 + σ ε``) a
        contraction that only follows the scale keeps the error's measure, and is not undone.
        """
        if twin_image is None or self.vec is None:
            return None, torch.ones_like(self.front)
        prop = (image - twin_image.reshape(image.shape)) / self._c
        idx = torch.tensor([index], device=image.device)
        # The gain of the parts Φ reads (a passive part's error is an output, never an input).
        ones = torch.ones_like(self.front)
        size = self._measure(image.unsqueeze(0), prop * self._spread(ones, prop), idx)[0]
        was = self._measure(image.unsqueeze(0), self.vec.to(image) * self._spread(ones, image), idx)[0]
        gain = self._ratio(size, was)
        if anchor is not None:  # the change of the error's measure, each point at its own scale
            shrink = self._ratio(size, self._measure(anchor.unsqueeze(0), self.vec.to(image) * self._spread(
                ones, image), idx - 1)[0])
        else:
            shrink = gain
        self._log_gain += torch.log(gain.clamp_min(1e-300)).nan_to_num(posinf=700.0)
        self._gains += 1
        # A contraction is measured along ê only; the true error's direction may differ (a part of it the
        # flow expands), so a part whose ê shrinks keeps its size, in J ê's direction (the direction
        # follows the flow, as in a power iteration): the estimate never credits contraction.
        boost = torch.where((shrink < 1.0) & (shrink > 0.0), 1.0 / shrink.clamp_min(1e-300), ones)
        prop = prop * self._spread(boost, prop, passive=1.0)
        lost = self._spread((gain == 0.0).to(torch.float64), prop) > 0  # J ê = 0: nothing to follow
        prop = torch.where(lost, self.vec.to(prop), prop)
        return prop, gain

    @staticmethod
    def _ratio(size: torch.Tensor, was: torch.Tensor) -> torch.Tensor:
        """``size / was`` per part; ``inf`` where ``was = 0 < size``, 1 where both are 0."""
        ones = torch.ones_like(size)
        return torch.where(was > 0, size / torch.where(was > 0, was, ones), torch.where(size > 0, math.inf, 1.0))

    def gains(self, start: int, x: torch.Tensor, fx: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The gain of each window interval ``start + m`` per part, ``[p, P]``, from the secants.

        ``‖Φ(X^k) − Φ(X^{k−1})‖ / ‖X^k − X^{k−1}‖`` against the previous sweep, never below 1 (the
        direction the iterates moved in may contract while the error's does not); where a point has no
        usable secant, the part's median over the window (the last one measured, 1 at first).
        """
        p = fx.shape[0]
        out_gains = torch.full((p, self.front.numel()), math.nan, dtype=torch.float64)
        if self._prev is not None:
            s0, xp, fxp = self._prev
            lo, hi = max(start, s0), min(start + p, s0 + fxp.shape[0])
            if hi > lo:
                a, b = slice(lo - start, hi - start), slice(lo - s0, hi - s0)
                idx = indices[a]
                moved = self.system.error_parts(x[a], xp[b], idx).detach().to("cpu", torch.float64)
                out = self.system.error_parts(fx[a], fxp[b], idx + 1).detach().to("cpu", torch.float64)
                # Secants over moves beyond LINEAR (in the measure) see the flow's curvature, not its gain.
                ok = (moved > self._tiny) & (moved <= LINEAR) & torch.isfinite(out) & torch.isfinite(moved)
                ratio = torch.where(ok, out / torch.where(ok, moved, torch.ones_like(moved)), math.nan)
                out_gains[a] = ratio
                med = ratio.nanmedian(dim=0).values
                self._median = torch.where(torch.isnan(med), self._median, med.clamp_min(1.0))
        filled = torch.where(torch.isnan(out_gains), self._median.expand_as(out_gains), out_gains)
        return filled.clamp_min(1.0)

    # -- the rule --------------------------------------------------------------------------------------
    def run(self, start: int, x: torch.Tensor, fx: torch.Tensor, indices: torch.Tensor,
            finite: torch.Tensor, twin_image: Optional[torch.Tensor] = None) -> Tuple[int, torch.Tensor]:
        """How many input points ``x[1…j]`` to accept (``j < p``; ``Φ(x[j])`` follows them), and the defects.

        ``finite[i]`` says whether ``fx[i]`` is finite; ``fx[0]`` must be.
        ``twin_image`` is ``Φ_a`` of :meth:`twin`'s row (``None`` without one).
        Returns ``j`` and the defect measure ``β`` of every input point ``[p]``.
        """
        p = fx.shape[0]
        beta = self.system.checked_error_ratio(x[1:], fx, indices + 1).detach().to("cpu", torch.float64)
        fin = finite.cpu()
        beta = torch.where(fin, beta, torch.full_like(beta, float("inf")))
        beta = torch.where(beta <= self._roundoff, torch.zeros_like(beta), beta)
        prop, g = self._propagated(fx[0], twin_image, start + 1, x[0])
        rho = self.gains(start, x, fx, indices)  # [p, P]
        if twin_image is not None:
            rho[0] = g.clamp_min(1.0)
        self._prev = (start, x.detach(), fx.detach())
        # The growth still ahead of point start+i: the window's gains after it, then the mean twin gain.
        logs = torch.log(rho).flip(0).cumsum(0).flip(0)  # logs[i] = Σ_{m ≥ i} log ρ_m
        beyond = self.ahead(start + p)
        # Defects at round-off still enter ê (over many points they add up); only the rule lets them pass.
        d = (x[1:] - fx).detach()
        m = p - 1  # candidates x[1 … p−1]
        # ê(i) = A_i + D_i: the inherited error, J_a ê exactly over the anchor's interval and then carried
        # with max(g, ρ_i) (the twin's gain along ê, the secants'), and this run's defects, carried with the
        # secant gains ρ_i; never below 1 (a contraction seen along one direction is not credited to others).
        g1 = g.clamp_min(1.0)
        inherited = torch.empty((max(m, 0), d.shape[1]), dtype=d.dtype, device=d.device)
        own = torch.empty_like(inherited)
        for i in range(m):
            if i == 0:
                inherited[0] = prop.detach() if prop is not None else torch.zeros_like(d[0])
                own[0] = d[0]
            else:
                inherited[i] = self._spread(torch.maximum(rho[i], g1), d) * inherited[i - 1]
                own[i] = self._spread(rho[i], d) * own[i - 1] + d[i]
        errs = inherited + own
        j, largest = 0, self.front_max
        if m > 0:
            # The rule reads the triangle inequality over this run's defects (their measures summed,
            # no cancellation credited until the twin row has propagated them): headroom for growth
            # the gains do not foresee.  The estimate reported is the vector's own measure.
            dparts = self._measure(fx[:m], d[:m], indices[1:p])  # [m, P]
            tri = torch.empty_like(dparts)
            for i in range(m):
                tri[i] = dparts[i] if i == 0 else rho[i] * tri[i - 1] + dparts[i]
            sizes = self._measure(x[1:p], inherited, indices[1:p]) + tri
            exact = self._measure(x[1:p], errs, indices[1:p])
            grown = (sizes * beyond * torch.exp(logs[1:p].clamp_max(700.0))).amax(dim=1).tolist()
            top = exact.amax(dim=1).tolist()
            betas, fin = beta.tolist(), fin.tolist()
            while j < m:
                # A point with no defect (round-off) adds nothing: accept it even when the error inherited
                # from earlier points already fills the budget (nothing can shrink that any more).
                if not (grown[j] <= self.budget(start + j + 1) or betas[j] == 0.0) or not fin[j + 1]:
                    break
                largest, j = max(largest, top[j]), j + 1
        # Φ of the last accepted point is exact (zero defect): the point after the run.
        if j == 0:
            vec = prop
        else:
            vec = self._spread(torch.maximum(rho[j], g1), d) * inherited[j - 1] + self._spread(rho[j], d) * own[j - 1]
        self._set_front(vec, fx[j], start + j + 1)
        self.largest = max(self.largest, largest, self.front_max)
        self._gain_total *= g1 ** (j + 1) if j > 0 else g
        return j, beta.to(x.dtype)

    def _set_front(self, vec: Optional[torch.Tensor], at: torch.Tensor, index: int) -> None:
        if vec is None:
            self.vec, self.front = None, torch.zeros_like(self.front)
            return
        self.vec = vec.detach()
        self.front = self._measure(at.unsqueeze(0), self.vec.unsqueeze(0), torch.tensor([index], device=at.device))[0]
        if not bool(torch.isfinite(self.front).all()):
            self._lost = True
            self.largest = math.inf

    def advance_exact(self, image: torch.Tensor, twin_image: Optional[torch.Tensor], index: int,
                      anchor: Optional[torch.Tensor] = None) -> None:
        """The anchor ``index − 1`` accepted as ``Φ`` of its predecessor (the sequential rung): ``ê ← J ê``.

        ``image`` is the new point ``[D]``, ``twin_image`` the image of :meth:`twin`'s row and
        ``anchor`` the point it started from.
        """
        prop, g = self._propagated(image, twin_image, index, anchor)
        self._set_front(prop, image, index)
        self._gain_total *= g
        self.largest = max(self.largest, self.front_max)
