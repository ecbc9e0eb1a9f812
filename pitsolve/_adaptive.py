r"""Adaptive embedded Runge–Kutta inside each interval, one step size per row (lock-step with masks).

``ODESystem(method="dopri5")`` (and ``dopri8``, ``bosh3``, ``fehlberg2``,
``adaptive_heun``) integrates each interval ``[t_n, t_{n+1}]`` with an
embedded pair and torchdiffeq's step control: the error of a step is
``RMS(err / (atol + rtol·max(|y_0|, |y_1|)))``, a step is accepted when it
is ``≤ 1``, and the next step is ``dt·min(ifactor, max(dfactor, safety·r^{−1/q}))``
(``dfactor = 1`` after an accepted step; ``q`` the method's order).  The
first step is Hairer's selection (Hairer, Nørsett & Wanner, *Solving ODEs I*,
§II.4), as torchdiffeq's ``_select_initial_step``.

A batched call propagates rows that sit in different intervals.  Each row
keeps its own position, step size and accept/reject decisions; all rows
step together, and a finished row drops out of the stage evaluations (the
mask), so ``Φ_n(X_n)`` depends on its row alone: a row gives the same result
whichever other rows share its call, and the parallel solve equals
:func:`~pitsolve.sequential` of the same system.  The last step of a row is
shortened to land on the interval's end exactly (torchdiffeq instead steps
past an output time and interpolates); the accuracy per ``rtol``/``atol`` is
the same (tests/test_adaptive.py compares both against a tight reference).

The cost of lock-stepping: a call takes as many waves as its slowest row
needs steps; :class:`AdaptiveStats` reports both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ._errors import InputTypeError, InputValueError

__all__ = ["Tableau", "TABLEAUX", "ADAPTIVE_METHODS", "AdaptiveOptions", "AdaptiveStats", "integrate"]


@dataclass(frozen=True)
class Tableau:
    """An embedded explicit Runge–Kutta pair: nodes ``c``, matrix ``a``, weights ``b`` and ``b − b̂``.

    ``order`` is the order the step control uses (torchdiffeq's ``order``);
    ``fsal``: the last stage is ``f`` at the new point (first same as last).
    """

    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    error: Tuple[float, ...]
    order: int
    fsal: bool


#: Dormand & Prince (1980), RK5(4)7FM; Bogacki & Shampine (1989), RK3(2); Fehlberg (1969), RK2(1);
#: Heun–Euler, RK2(1).  Coefficients as published.  (torchdiffeq's fehlberg2 takes ``f`` of its last
#: stage, at the first-order point, as the next step's first stage; here ``f`` is evaluated at the
#: solution, one call more per step.)
TABLEAUX: Dict[str, Tableau] = {
    "dopri5": Tableau(
        c=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        error=(
            35 / 384 - 5179 / 57600,
            0.0,
            500 / 1113 - 7571 / 16695,
            125 / 192 - 393 / 640,
            -2187 / 6784 + 92097 / 339200,
            11 / 84 - 187 / 2100,
            -1 / 40,
        ),
        order=5,
        fsal=True,
    ),
    "bosh3": Tableau(
        c=(1 / 2, 3 / 4, 1.0),
        a=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
        order=3,
        fsal=True,
    ),
    "fehlberg2": Tableau(
        c=(1 / 2, 1.0),
        a=((1 / 2,), (1 / 256, 255 / 256)),
        b=(1 / 512, 255 / 256, 1 / 512),
        error=(-1 / 512, 0.0, 1 / 512),
        order=2,
        fsal=False,  # its last stage sits at the first-order point, not at the solution
    ),
    "adaptive_heun": Tableau(
        c=(1.0,),
        a=((1.0,),),
        b=(1 / 2, 1 / 2),
        error=(-1 / 2, 1 / 2),
        order=2,
        fsal=False,
    ),
}



def _pair(b: Tuple[float, ...], b_hat: Tuple[float, ...]) -> Tuple[float, ...]:
    """The error weights ``b − b̂`` of an embedded pair (``b̂`` padded with zeros)."""
    b_hat = b_hat + (0.0,) * (len(b) - len(b_hat))
    return tuple(x - y for x, y in zip(b, b_hat))


#: Prince & Dormand (1981), RK8(7)13M: 13 stages, the eighth-order solution and a seventh-order embedded
#: one; the last stage is ``f`` at the solution (FSAL).  The coefficients are the published rational
#: approximations (the same as torchdiffeq's ``dopri8``).  Stage ``i`` sits at ``c[i−1]``, ``a[i−1]`` its row.
_DOPRI8_B = (14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825, 181606767 / 758867731,
             561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087,
             -528747749 / 2220607170, 1 / 4)
TABLEAUX["dopri8"] = Tableau(
    c=(1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821, 13 / 20,
       1201146811 / 1299019798, 1.0, 1.0, 1.0),
    a=(
        (1 / 18,),
        (1 / 48, 1 / 16),
        (1 / 32, 0.0, 3 / 32),
        (5 / 16, 0.0, -75 / 64, 75 / 64),
        (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
        (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000, 23124283 / 1800000000),
        (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777, 545815736 / 2771057229,
         -180193667 / 1043307555),
        (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301, 100302831 / 723423059,
         790204164 / 839813087, 800635310 / 3783071287),
        (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246, -309121744 / 1061227803,
         -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457, 123872331 / 1001029789),
        (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
         -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
         -45442868181 / 3398467696, 3065993473 / 597172653),
        (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
         -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563, -4093664535 / 808688257,
         3962137247 / 1805957418, 65686358 / 487910083),
        (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805, 652783627 / 914296604,
         11173962825 / 925320556, -13158990841 / 6184727034, 3936647629 / 1978049680, -160528059 / 685178525,
         248638103 / 1413531060, 0.0),
        _DOPRI8_B,
    ),
    b=_DOPRI8_B + (0.0,),
    error=_pair(_DOPRI8_B + (0.0,), (13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145,
                                     1757004468 / 5645159321, 656045339 / 265891186, -3867574721 / 1518517206,
                                     465885868 / 322736535, 53011238 / 667516719, 2 / 45)),
    order=8,
    fsal=True,
)

#: The adaptive methods an :class:`~pitsolve.ODESystem` integrates per interval.
ADAPTIVE_METHODS = tuple(TABLEAUX)

#: torchdiffeq's adaptive-solver options that mean the same here.
_KNOWN = ("first_step", "safety", "ifactor", "dfactor", "max_num_steps")


@dataclass(frozen=True)
class AdaptiveOptions:
    """Step control, as torchdiffeq's ``options`` of its adaptive solvers.

    ``first_step`` is a time step (it is rescaled per interval); ``None``:
    Hairer's selection per row.  ``max_num_steps`` is per interval and row
    (torchdiffeq: per solve, default ``2**31 − 1``): a row out of steps ends as
    NaN, which a parallel sweep treats as a wild iterate far from the front;
    4096 keeps such rows from stalling a sweep for long.
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    first_step: Optional[float] = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    max_num_steps: int = 4096

    @classmethod
    def from_options(cls, rtol: float, atol: float, options: Optional[dict]) -> "AdaptiveOptions":
        options = dict(options or {})
        unknown = sorted(set(options) - set(_KNOWN))
        if unknown:
            raise InputValueError(
                f"options {unknown} are not step-control options of an adaptive method here; "
                f"supported: {list(_KNOWN)} (step_t, jump_t and norm are not: each interval's end is a "
                "step boundary already, and the norm is the RMS)."
            )
        out = cls(rtol=rtol, atol=atol, **options)
        for name in ("rtol", "atol", "safety", "ifactor", "dfactor"):
            value = getattr(out, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputValueError(f"{name}={value!r} must be a finite number >= 0.")
        if out.rtol == 0 and out.atol == 0:
            raise InputValueError("rtol=0 and atol=0 leave no error to allow; pass rtol or atol > 0 (e.g. 1e-7, 1e-9).")
        if not 0 < out.safety <= 1 or out.ifactor < 1 or not 0 < out.dfactor <= 1:
            raise InputValueError(
                f"safety={out.safety}, ifactor={out.ifactor}, dfactor={out.dfactor}: need 0 < safety <= 1, "
                "ifactor >= 1 and 0 < dfactor <= 1 (torchdiffeq's defaults are 0.9, 10, 0.2)."
            )
        if out.first_step is not None and not (
            isinstance(out.first_step, (int, float)) and not isinstance(out.first_step, bool)
            and math.isfinite(out.first_step) and out.first_step > 0
        ):
            raise InputValueError(f"first_step={out.first_step!r} must be a positive finite time step or None.")
        if isinstance(out.max_num_steps, bool) or not isinstance(out.max_num_steps, int) or out.max_num_steps < 1:
            raise InputValueError(f"max_num_steps={out.max_num_steps!r} must be an int >= 1.")
        return out


@dataclass
class AdaptiveStats:
    """What the calls of one system cost.

    ``waves``: lock-step steps of the last call (its depth, in steps);
    ``row_steps``: step attempts of each row of the last call (its NFE, in steps);
    ``accepted`` / ``rejected``: totals over all calls; ``exhausted``: rows that ran out of
    ``max_num_steps`` (and ended as NaN).
    """

    waves: int = 0
    row_steps: List[int] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    exhausted: int = 0

    @property
    def lockstep_overhead(self) -> float:
        """Steps the last call's slowest row forced on the others: ``waves·B / Σ steps`` (1 = none)."""
        total = sum(self.row_steps)
        return self.waves * len(self.row_steps) / total if total else 1.0


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=1).sqrt()


def integrate(f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], y0: torch.Tensor, h: torch.Tensor,
              tableau: Tableau, opts: AdaptiveOptions, stats: AdaptiveStats) -> torch.Tensor:
    """Integrate ``dy/ds = f(rows, s, y)`` (rows ``[B, D]``, each with its own ``s``) from ``s = 0`` to ``1``.

    ``f(rows, s, y)`` is the interval-rescaled derivative (``h_n·func``) of the
    call's rows ``rows`` (indices into the batch) at ``s`` and ``y``; ``h [B]`` the
    interval lengths (to rescale ``first_step``).
    """
    B = y0.shape[0]
    dt = y0.dtype
    s = torch.zeros(B, dtype=dt, device=y0.device)
    y = y0
    every = torch.arange(B, device=y0.device)
    f0 = f(every, s, y)
    if opts.first_step is not None:
        ds = (opts.first_step / h.abs()).to(dt)
    else:
        ds = _initial_step(lambda si, yi: f(every, si, yi), s, y, f0, tableau.order - 1, opts)
    steps = torch.zeros(B, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool, device=y0.device)
    waves, accepted, rejected = 1, 0, 0  # the first evaluation (and the step selection) count as one wave
    steps += 1
    while not bool(done.all()):
        act = (~done).nonzero().flatten()
        over = steps[act.cpu()] > opts.max_num_steps
        if bool(over.any()):
            # A row out of steps ends as NaN: deterministic (Φ depends on the row alone), so the solve
            # treats it as any non-finite point (a wild iterate far from the front), and a sequential
            # solve stops with a NonFiniteError.
            bad = act[over.to(act.device)]
            y = y.index_put((bad,), torch.full_like(y[bad], math.nan))
            done = done.index_put((bad,), torch.ones_like(bad, dtype=torch.bool))
            stats.exhausted += int(bad.numel())
            continue
        sa, ya, fa = s[act], y[act], f0[act]
        step = torch.minimum(ds[act], 1 - sa)
        last = step >= 1 - sa
        k = [fa]
        for i, (ci, ai) in enumerate(zip(tableau.c, tableau.a)):
            yi = ya + step.view(-1, 1) * sum(a * kj for a, kj in zip(ai, k) if a != 0)
            if tableau.fsal and i == len(tableau.c) - 1:  # the last stage is f at the solution y1
                k.append(f(act, torch.where(last, torch.ones_like(sa), sa + step), yi))
                y1 = yi
            else:
                k.append(f(act, sa + ci * step, yi))
        if not tableau.fsal:
            y1 = ya + step.view(-1, 1) * sum(b * kj for b, kj in zip(tableau.b, k) if b != 0)
        # The new point's f is computed below only for accepted rows that are not FSAL.
        err = step.view(-1, 1) * sum(e * kj for e, kj in zip(tableau.error, k) if e != 0)
        tol = opts.atol + opts.rtol * torch.maximum(ya.abs(), y1.abs())
        ratio = _rms(err / tol).detach()
        # A non-finite error (the flow blows up from this row's state) is rejected like any large one:
        # the step shrinks until the row runs out of steps and ends as NaN.
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.full_like(ratio, math.inf))
        ok = ratio <= 1
        f1 = k[-1] if tableau.fsal else f(act, torch.where(last, torch.ones_like(sa), sa + step), y1)
        factor = _factor(ratio, ok, tableau.order, opts).to(dt)
        okc = ok.view(-1, 1)
        new_y = torch.where(okc, y1, ya)
        new_f = torch.where(okc, f1, fa)
        new_s = torch.where(ok, torch.where(last, torch.ones_like(sa), sa + step), sa)
        # Out of place (index_put, not y[act] = …): autograd may run through the solve.
        y = y.index_put((act,), new_y)
        f0 = f0.index_put((act,), new_f)
        s = s.index_put((act,), new_s.detach())
        ds = ds.index_put((act,), (step * factor).detach())
        done = done.index_put((act,), (ok & last))
        steps[act.cpu()] += 1
        waves += 1
        accepted += int(ok.sum())
        rejected += int((~ok).sum())
    stats.waves = waves
    stats.row_steps = steps.tolist()
    stats.accepted += accepted
    stats.rejected += rejected
    return y


def _factor(ratio: torch.Tensor, ok: torch.Tensor, order: int, opts: AdaptiveOptions) -> torch.Tensor:
    """torchdiffeq's ``_optimal_step_size``: no shrinking after an accepted step, ``ifactor`` at zero error."""
    dfactor = torch.where(ok, torch.ones_like(ratio), torch.full_like(ratio, opts.dfactor))
    grow = opts.safety / ratio.clamp_min(torch.finfo(ratio.dtype).tiny) ** (1.0 / order)
    factor = torch.minimum(torch.full_like(ratio, opts.ifactor), torch.maximum(grow, dfactor))
    return torch.where(ratio == 0, torch.full_like(ratio, opts.ifactor), factor)


def _initial_step(f, s, y0, f0, order: int, opts: AdaptiveOptions) -> torch.Tensor:
    """Hairer's first step per row (torchdiffeq's ``_select_initial_step``), in the rescaled ``s``."""
    scale = opts.atol + y0.abs() * opts.rtol
    d0, d1 = _rms(y0 / scale).detach(), _rms(f0 / scale).detach()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    y1 = y0 + h0.view(-1, 1) * f0
    f1 = f(s + h0, y1)
    d2 = (_rms((f1 - f0) / scale) / h0).detach()
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / big.clamp_min(1e-300)) ** (1.0 / (order + 1)))
    return torch.minimum(100 * h0, h1).detach()
