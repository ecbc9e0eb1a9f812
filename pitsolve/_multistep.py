r"""Adams multistep methods on a fixed grid, their history carried in the state.

torchdiffeq's ``explicit_adams`` (Adams–Bashforth) and ``implicit_adams`` /
``fixed_adams`` (Adams–Bashforth predictor, Adams–Moulton corrector by
functional iteration) keep the last ``f`` evaluations in a buffer.  Here
that buffer is part of the banded system's state, as the diffusion
adapter's multistep rules carry past model outputs
(``adapters/diffusion/rules/dpmsolver.py``): a state is

.. code-block:: text

    X = (y, F, L)     y: the solution;  F = [f_{k−1}, f_{k−2}, …, f_{k−P}]: past derivatives,
                      most recent first;  L: how many of them are valid (the slots beyond
                      hold the oldest valid one, or f_0 at the start, and are never read)

with ``P = max_order − 2``, ``f_j = func(t_j, y_j)`` at fine step ``j``.
So ``Φ_n`` is a function of ``X_n`` alone, and ``N`` intervals of ``K``
fine steps are the ``N·K`` steps of ``torchdiffeq.odeint`` on the refined
grid: the history runs across interval boundaries.

One fine step ``t_k → t_{k+1}``, ``h = t_{k+1} − t_k`` (notation of Hairer,
Nørsett & Wanner, *Solving ODEs I*, §III.1):

1. ``f_k = func(t_k, y_k)`` joins the history: ``m = min(L + 1, max_order − 1)``
   derivatives ``f_k … f_{k−m+1}`` are known.
2. ``m < 3`` (start-up): one Runge–Kutta step, Kutta's 3/8 rule (torchdiffeq's ``rk4``).
3. ``m ≥ 3``: the ``m``-step Adams–Bashforth predictor
   ``y^{(0)} = y_k + h Σ_{j<m} β_{m,j} f_{k−j}`` (order ``m``).
   ``implicit_adams`` then iterates the ``(m+1)``-node Adams–Moulton corrector
   ``y^{(i+1)} = y_k + h γ_{m,0} func(t_{k+1}, y^{(i)}) + h Σ_{j<m} γ_{m,j+1} f_{k−j}``
   (order ``m + 1``) at most ``max_iters`` times, until the increments of two
   iterates agree: ``max |Δ^{(i+1)} − Δ^{(i)}| / (atol + rtol·max(|Δ^{(i)}|, |Δ^{(i+1)}|)) < 1``
   with ``Δ = y − y_k``.  A row that does not converge keeps its last iterate
   and forgets its oldest derivative (``L`` one lower), as torchdiffeq does
   (which warns "Functional iteration did not converge"; here the count is
   returned, see ``ODESystem.corrector_failures``).
4. ``F ← [f_k, f_{k−1}, …]``, ``L ← min(m − [not converged], P)``.

``β`` and ``γ`` are the integrals over ``[0, 1]`` of the Lagrange basis
polynomials on the nodes ``0, −1, …, −(m−1)`` and ``1, 0, …, −(m−1)``
(in units of ``h``), computed exactly in rational arithmetic and rounded
once to float64.  Like torchdiffeq, the coefficients assume equal steps; on
an uneven grid the method is the same (inexact) formula.

``L`` is an integer carried as a float, read rounded and clamped to
``0…P`` (its Jacobian column is zero).  ``ODESystem`` declares only ``y``
:attr:`~pitsolve.BandedSystem.monitored`, so the strategies extrapolate
``y`` and take ``F`` and ``L`` from ``Φ`` (a history's Jacobian in itself
is a shift, far from ``I``), and measures all three in its stopping rule.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from typing import Callable, Optional, Tuple

import torch

from ._errors import InputTypeError, InputValueError
from ._grid import as_integer, check_tolerances
from ._state import State, StateSpec

__all__ = [
    "MULTISTEP_METHODS", "MULTISTEP_OPTIONS", "Adams", "MultistepSpec", "bashforth", "moulton", "rk4_38", "coarse_history",
]

#: torchdiffeq's fixed-grid multistep methods (``fixed_adams`` is ``implicit_adams``'s old name).
MULTISTEP_METHODS = ("explicit_adams", "fixed_adams", "implicit_adams")
#: The ``options`` each method takes (besides ``odeint``'s ``step_size``).
MULTISTEP_OPTIONS = {
    "explicit_adams": ("max_order",),
    "implicit_adams": ("max_order", "max_iters"),
    "fixed_adams": ("max_order", "max_iters"),
}
#: ``max_order`` of torchdiffeq (12) is its largest; below 4 torchdiffeq is ``rk4`` throughout.
MIN_ORDER, MAX_ORDER = 4, 12
DEFAULT_MAX_ITERS = 4
#: torchdiffeq.odeint's default tolerances, which its corrector reads.
DEFAULT_RTOL, DEFAULT_ATOL = 1e-7, 1e-9
#: The first multistep order: fewer known derivatives take a Runge–Kutta step.
_FIRST_ADAMS = 3

Func = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- coefficients
def _lagrange_integrals(nodes: Tuple[int, ...]) -> Tuple[Fraction, ...]:
    """``∫_0^1 ℓ_j(s) ds`` for the Lagrange basis ``ℓ_j`` on ``nodes``, exactly."""
    out = []
    for j, xj in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients of s^0, s^1, …
        for m, xm in enumerate(nodes):
            if m == j:
                continue
            scale = Fraction(1, xj - xm)
            shifted = [Fraction(0)] + poly  # s·poly
            poly = [(a - xm * b) * scale for a, b in zip(shifted, poly + [Fraction(0)])]
        out.append(sum(c / (p + 1) for p, c in enumerate(poly)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def bashforth(steps: int) -> Tuple[Fraction, ...]:
    """``β_{steps,j}``: the ``steps``-step Adams–Bashforth weights of ``f_k, f_{k−1}, …`` (order ``steps``)."""
    return _lagrange_integrals(tuple(-j for j in range(steps)))


@functools.lru_cache(maxsize=None)
def moulton(steps: int) -> Tuple[Fraction, ...]:
    """``γ_{steps,j}``: the Adams–Moulton weights of ``f_{k+1}, f_k, …, f_{k−steps+1}`` (order ``steps + 1``)."""
    return _lagrange_integrals(tuple(1 - j for j in range(steps + 1)))


# ----------------------------------------------------------------------------- the state
@dataclasses.dataclass(frozen=True)
class MultistepSpec(StateSpec):
    """The spec of the state ``(y…, F, L)``; :meth:`trajectory` gives the user's ``y`` alone.

    ``visible`` is the number of leading parts that are ``y`` and
    ``visible_tuple`` whether ``y`` is a tuple, so that ``Solution.ys`` (and
    ``odeint``'s result) has the shape of ``y0``, as for one-step methods.
    """

    visible: int
    visible_tuple: bool

    def trajectory(self, flat: torch.Tensor) -> State:
        """``[N+1, D]`` → the trajectory of ``y`` ``[N+1, *y0.shape]`` (a tuple for tuple ``y0``)."""
        parts = self.unflatten_batch(flat)[: self.visible]
        return parts if self.visible_tuple else parts[0]


def rk4_38(f: Func, t0: torch.Tensor, h: torch.Tensor, y: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """The increment of one step of Kutta's 3/8 rule (torchdiffeq's ``rk4``) for rows ``y [B, D]``, ``h [B]``.

    .. code-block:: text

        k1 = f0 = f(t0, y)          k2 = f(t0 + h/3, y + h k1/3)
        k3 = f(t0 + 2h/3, y + h (k2 − k1/3))          k4 = f(t0 + h, y + h (k1 − k2 + k3))
        Δy = h (k1 + 3 k2 + 3 k3 + k4) / 8
    """
    third = 1.0 / 3.0
    hc = h.view(-1, 1)
    k2 = f(t0 + h * third, y + hc * f0 * third)
    k3 = f(t0 + h * (2.0 * third), y + hc * (k2 - f0 * third))
    k4 = f(t0 + h, y + hc * (f0 - k2 + k3))
    return (f0 + 3.0 * (k2 + k3) + k4) * hc * 0.125


# ----------------------------------------------------------------------------- the method
@dataclasses.dataclass(frozen=True)
class Adams:
    """An Adams method of torchdiffeq's (``explicit_adams`` or ``implicit_adams``) and its settings.

    Attributes:
        implicit: iterate the Adams–Moulton corrector (``implicit_adams``).
        max_order: at most ``max_order − 1`` past derivatives are used (torchdiffeq's option).
        max_iters: corrector iterations per step (``implicit_adams``).
        rtol, atol: the corrector's convergence test (``implicit_adams``; torchdiffeq's ``odeint`` tolerances).
    """

    implicit: bool
    max_order: int = MAX_ORDER
    max_iters: int = DEFAULT_MAX_ITERS
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @classmethod
    def from_options(
        cls, method: str, options: Optional[dict], rtol: Optional[float], atol: Optional[float]
    ) -> "Adams":
        """The method ``method`` with torchdiffeq's ``options`` (``max_order``, ``max_iters``), checked."""
        if options is not None and not isinstance(options, dict):
            raise InputTypeError(f"options={options!r} is not a dict; pass e.g. options=dict(max_order=4) or None.")
        options = dict(options or {})
        allowed = MULTISTEP_OPTIONS[method]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise InputValueError(
                f"options {unknown} are not supported for the multistep method {method!r}; supported: "
                f"{list(allowed)} (the step: substeps=K, or odeint's options=dict(step_size=h); "
                "torchdiffeq's grid_constructor, perturb and interp have no counterpart on pitsolve's grid)."
            )
        max_order = _check_int(options.get("max_order", MAX_ORDER), "options['max_order']")
        if not MIN_ORDER <= max_order <= MAX_ORDER:
            raise InputValueError(
                f"options['max_order']={max_order} is outside {MIN_ORDER}..{MAX_ORDER}: torchdiffeq's Adams "
                f"methods use at most {MAX_ORDER}, and below {MIN_ORDER} they are rk4 throughout; pass "
                f"{MIN_ORDER} <= max_order <= {MAX_ORDER}, or method='rk4'."
            )
        implicit = method != "explicit_adams"
        max_iters = _check_int(options.get("max_iters", DEFAULT_MAX_ITERS), "options['max_iters']")
        if max_iters < 1:
            raise InputValueError(
                f"options['max_iters']={max_iters} must be >= 1 (the corrector's iterations per step); "
                f"torchdiffeq's default is {DEFAULT_MAX_ITERS}."
            )
        if implicit:
            atol, rtol = check_tolerances(
                DEFAULT_ATOL if atol is None else atol, DEFAULT_RTOL if rtol is None else rtol
            )
        else:
            rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL  # not read: explicit_adams has no corrector
        return cls(implicit=implicit, max_order=max_order, max_iters=max_iters, rtol=rtol, atol=atol)

    @property
    def history_size(self) -> int:
        """``P``: the past derivatives a state carries (``max_order − 2``)."""
        return self.max_order - 2

    def initial_history(self, f0: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(F, L)`` of the initial state: no past derivatives (``L = 0``), the slots filled with ``f0 [D]``.

        ``f0 = func(t_0, y_0)``: unused slots hold the oldest known derivative
        (here the first), never read, but consistent with ``y`` for the strategies.
        """
        return f0.unsqueeze(0).expand(self.history_size, -1).clone(), f0.new_zeros(1)

    def _weights(self, implicit: bool, m: torch.Tensor) -> torch.Tensor:
        """The float64 weights ``[B, max_order]`` (``β``, or ``γ``) for the rows' ``m [B]`` known derivatives."""
        return _table(self.max_order, implicit, m.device)[m]

    # -- Φ -----------------------------------------------------------------------------------------
    def advance(
        self, f: Func, y: torch.Tensor, history: torch.Tensor, length: torch.Tensor, times: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fine steps ``times[:, 0] → … → times[:, -1]`` of each row: ``(y, F, L)`` at the end.

        ``y [B, D]``, ``history [B, P, D]``, ``length [B]`` (float), ``times [B, K+1]``;
        ``f(t [b], y [b, D]) → [b, D]`` evaluates any subset of rows.  Also
        returns each row's number of steps whose corrector did not converge ``[B]``.
        """
        failures = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        for j in range(times.shape[1] - 1):
            y, history, length, failed = self.step(f, times[:, j], times[:, j + 1], y, history, length)
            failures = failures + failed
        return y, history, length, failures

    def step(
        self, f: Func, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor, history: torch.Tensor, length: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fine step of every row (steps 1–4 of the module docstring); also which rows' corrector failed."""
        P = self.history_size
        h = t1 - t0
        f0 = f(t0, y)
        known = torch.cat([f0.unsqueeze(1), history], dim=1)  # [B, P+1, D]: f_k, f_{k−1}, …
        m = (length.detach().round().clamp(0, P).long() + 1).clamp(max=P + 1)  # derivatives known
        start_up = m < _FIRST_ADAMS
        dy = torch.zeros_like(y)
        rows = torch.nonzero(start_up).flatten()
        if rows.numel():
            dy = dy.index_copy(0, rows, rk4_38(f, t0[rows], h[rows], y[rows], f0[rows]))
        failed = torch.zeros_like(m)
        rows = torch.nonzero(~start_up).flatten()
        if rows.numel():
            sub, failures = self._adams(f, t1[rows], h[rows], y[rows], known[rows], m[rows])
            dy = dy.index_copy(0, rows, sub)
            if failures is not None and failures.numel():
                failed = failed.index_fill(0, rows[failures], 1)
        stored = (m - failed).clamp(max=P)  # a failed corrector forgets the oldest derivative
        return y + dy, _fill(known[:, :P], stored), stored.to(y.dtype), failed

    def _adams(
        self, f: Func, t1: torch.Tensor, h: torch.Tensor, y: torch.Tensor, known: torch.Tensor, m: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The Adams increment of rows with ``m ≥ 3`` known derivatives; the rows whose corrector did not converge."""
        h64 = h.to(torch.float64).view(-1, 1)
        beta = (h64 * self._weights(False, m)).to(y.dtype)  # h·β, rounded once to the state's dtype
        dy = _combine(beta, known)
        if not self.implicit:
            return dy, None
        gamma = (h64 * self._weights(True, m)).to(y.dtype)  # h·γ
        past = _combine(gamma[:, 1:], known)
        g0 = gamma[:, :1]
        active = torch.arange(y.shape[0], device=y.device)
        atol = torch.as_tensor(self.atol, dtype=y.dtype, device=y.device)
        rtol = torch.as_tensor(self.rtol, dtype=y.dtype, device=y.device)
        for _ in range(self.max_iters):
            old = dy[active]
            new = g0[active] * f(t1[active], y[active] + old) + past[active]
            scale = atol + rtol * torch.maximum(old.abs(), new.abs())
            converged = ((old - new).abs() / scale).amax(dim=1) < 1
            dy = dy.index_copy(0, active, new)
            active = active[~converged]
            if active.numel() == 0:
                break
        return dy, active


@functools.lru_cache(maxsize=None)
def _table(max_order: int, implicit: bool, device: torch.device) -> torch.Tensor:
    """``[max_order, max_order]``: row ``m`` holds ``β_m`` (or ``γ_m``) for ``m ≥ 3``, zeros elsewhere (float64)."""
    table = torch.zeros(max_order, max_order, dtype=torch.float64)
    for m in range(_FIRST_ADAMS, max_order):
        weights = moulton(m) if implicit else bashforth(m)
        table[m, : len(weights)] = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    return table.to(device)


def _combine(weights: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``Σ_j weights[:, j] · known[:, j]``, accumulated in order (zero weights add exact zeros)."""
    out = weights[:, :1] * known[:, 0]
    for j in range(1, min(weights.shape[1], known.shape[1])):
        out = out + weights[:, j : j + 1] * known[:, j]
    return out


def _check_int(value, name: str) -> int:
    """An integer option as an int (numpy and 0-dim integer tensors accepted), or a typed error naming it."""
    value = as_integer(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name}={value!r} is not an integer ({type(value).__name__}); pass an int.")
    return value


def coarse_history(
    f0: torch.Tensor, f1: torch.Tensor, history: torch.Tensor, length: torch.Tensor, K: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A cheap guess of ``(F, L)`` after ``K`` fine steps, for the coarse propagator.

    The ``K`` derivatives inside the interval are interpolated linearly in
    time between ``f0`` (at its start) and ``f1`` (near its end); older
    slots are the incoming history shifted by ``K``.
    """
    B, P, D = history.shape
    slot = torch.arange(P, device=f0.device, dtype=f0.dtype)
    frac = ((K - 1 - slot) / K).view(1, P, 1)  # fine step K−1−i of the interval, as a fraction of it
    inside = (1 - frac) * f0.unsqueeze(1) + frac * f1.unsqueeze(1)
    shifted = torch.cat([history.new_zeros(B, min(K, P), D), history], dim=1)[:, :P]
    guess = torch.where((slot < K).view(1, P, 1), inside, shifted)
    stored = (length.detach().round().clamp(0, P).long() + K).clamp(max=P)
    return _fill(guess, stored), stored.to(length.dtype)


def _fill(history: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """``history [B, P, D]`` with the slots from ``stored [B]`` (long, ``≥ 1``) on set to its oldest valid entry.

    The unused slots are never read; filling them with a derivative (rather
    than zeros) keeps ``F`` close to ``f`` along the trajectory, so that
    ``Φ_n(X) − X`` varies slowly with ``n``, as the identity and
    Anderson updates assume.
    """
    B, P, D = history.shape
    oldest = history.gather(1, (stored - 1).clamp(0, P - 1).view(B, 1, 1).expand(B, 1, D))
    valid = torch.arange(P, device=history.device).view(1, P, 1) < stored.view(B, 1, 1)
    return torch.where(valid, history, oldest)


