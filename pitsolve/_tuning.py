"""``window="auto"``: pick the window from the device's batch-cost curve.

A sweep over ``p`` points costs one batched call of ``p`` rows, ``c(p)``;
a solve of ``N`` intervals costs about ``S(p)·c(p)`` for ``S(p)`` sweeps.
On the digits model (identity update, Eq. 17 start, tol 1e-2) the sweeps
follow ``S(p) ≈ a + N/p`` with ``a`` between 2 and 9: the front advances
about one window per sweep, and the last window needs a few more sweeps
to settle (DDPM-1000: p = 8, 16, 32, 64 took 127, 65, 36, 24 sweeps;
DDIM-50: 11, 9, 9, 10 at p = 8, 16, 32, 50; DDIM-25: 7 at p = 16).  So
the tuner times ``c(p)`` and picks the measured ``p`` that minimises
``c(p)·min(N, a + b·N/p)``, with ``a = LATENCY_SWEEPS = 4`` and ``b = 1``
by default (``p = 1`` is the sequential solve, N sweeps).  A system family
whose sweeps were measured declares its own ``(a, b)`` as an
:class:`AutoWindow` (the diffusion samplers do, in their registry entries,
from the fits in ``benchmarks/results/defaults.md``).  On a device with idle
capacity ``c(p)`` is nearly flat and the rule takes the widest window timed
(up to ``N``); where the cost is linear in the rows it takes 1; a short
horizon (N = 50) gets a narrower window than a long one on the same device,
because past ``p ≈ N/a`` a wider window cannot cut the sweeps below ``a``.

The curve is timed for ``p = 1, 2, 4, …`` up to ``N``, or, from ``p = 8`` on
(narrower calls are cheap to time, and a CPU's curve is irregular there),
until two successive doublings have raised the predicted cost above the best so far
(wider calls on a saturated device only cost time and memory), then every
measured width is timed again in interleaved rounds and the fastest time of
each width is kept: other work on the machine only ever adds time, and
interleaving spreads any drift over all widths alike.

The timing calls are made once per (system type, model, state size, dtype,
device(s), executor, N, sweep model) and cached for the process; they are not
part of the solve's NFE or depth (they change no iterate) and are reported in
:attr:`Solution.tuning`, with the seconds they took (``0`` when the curve came
from the cache: the cost is paid once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

__all__ = ["AutoWindow", "auto_window", "batch_cost_curve", "best_window", "predicted_cost", "LATENCY_SWEEPS"]

#: ``a`` of the sweep model ``S(p) ≈ a + N/p`` (the digits samplers: 2–9, see the module's docstring).
LATENCY_SWEEPS = 4.0
#: Widths below this are always timed before the curve may stop.
MIN_STOP_WIDTH = 8
#: Timings per width while growing the curve, and again in interleaved rounds.
REPEATS = 3

_CACHE: Dict[Tuple, List[Tuple[int, float]]] = {}


@dataclass(frozen=True)
class AutoWindow:
    """``window=AutoWindow(latency, slope)``: the tuned window under the sweep model ``S(p) ≈ a + b·N/p``.

    ``window="auto"`` is ``AutoWindow()``.  ``latency`` is ``a`` (the sweeps
    the last window needs to settle), ``slope`` is ``b`` (``1``: the front
    advances one window per sweep; ``1.2``: 1/1.2 window per sweep).  Both
    are fitted to measured sweep counts; the tuner then times ``c(p)`` and
    picks the ``p`` of least ``c(p)·min(N, a + b·N/p)``.
    """

    latency: float = LATENCY_SWEEPS
    slope: float = 1.0

    def __post_init__(self):
        from ._errors import InputValueError

        for name in ("latency", "slope"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
                raise InputValueError(f"AutoWindow({name}={value!r}); pass a finite number >= 0, e.g. {name}=4.")
        if self.slope == 0:
            raise InputValueError("AutoWindow(slope=0) predicts no sweeps for any window; pass slope > 0, e.g. 1.")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predicted_cost(p: int, seconds: float, N: int, latency: float = LATENCY_SWEEPS, slope: float = 1.0) -> float:
    """Predicted solve time ``c(p)·S(p)`` with ``S(p) = min(N, max(N/p, a + b·N/p))`` sweeps (``p = 1``: ``N``).

    ``N/p`` is a floor whatever the fit says: a window of ``p`` points cannot advance the front by
    more than ``p`` points a sweep.
    """
    return seconds * (N if p == 1 else min(N, max(N / p, latency + slope * N / p)))


def batch_cost_curve(system, executor, N: int, repeats: int = REPEATS,
                     latency: float = LATENCY_SWEEPS, slope: float = 1.0) -> List[Tuple[int, float]]:
    """Seconds per batched ``Φ`` call of ``p = 1, 2, 4, … ≤ N`` rows, the fastest of ``2·repeats``
    timings (``repeats`` while growing, ``repeats`` more in interleaved rounds), up to ``N`` or two
    doublings past the width of least :func:`predicted_cost`."""
    spec = system.spec
    x0 = spec.flatten(system.initial_state)
    times: Dict[int, List[float]] = {}

    def timed(p: int) -> float:
        states = x0.unsqueeze(0).expand(p, -1).contiguous()
        indices = torch.arange(p, device=spec.device)
        _synchronize(spec.device)
        started = time.perf_counter()
        executor.propagate(states, indices)
        _synchronize(spec.device)
        return time.perf_counter() - started

    p = 1
    while True:
        timed(p)  # warm-up (allocations, kernel selection)
        times[p] = [timed(p) for _ in range(repeats)]
        if p >= N or _past_best(times, N, latency, slope):
            break
        p = min(2 * p, N)
    for _ in range(repeats):
        for q in times:
            times[q].append(timed(q))
    return [(q, min(ts)) for q, ts in times.items()]


def _past_best(times: Dict[int, List[float]], N: int, latency: float, slope: float = 1.0) -> bool:
    """The last two widths timed both predict a costlier solve than the best before them."""
    cost = [predicted_cost(p, min(ts), N, latency, slope) for p, ts in times.items()]
    return len(cost) >= 3 and max(times) >= MIN_STOP_WIDTH and min(cost[-2:]) > min(cost[:-2])


def auto_window(system, executor, N: int, model: AutoWindow = AutoWindow()) -> Tuple[int, Dict]:
    """The measured window of least :func:`predicted_cost` under ``model`` (see the module's docstring).

    The curve is cached per process under a key naming the system type, its
    :attr:`~pitsolve.BandedSystem.tuning_key` (e.g. the model), state size,
    dtype, device(s), executor and ``N``; the returned record's ``seconds``
    is the time this call spent timing (``0.0`` on a cache hit).
    """
    spec = system.spec
    key = (type(system).__qualname__, tuple(system.tuning_key), spec.size, str(spec.dtype), str(spec.device),
           repr(executor), N, system.steps_per_interval)
    started = time.perf_counter()
    cached = key in _CACHE
    if not cached:
        with torch.no_grad():
            curve = batch_cost_curve(system, executor, N, latency=model.latency, slope=model.slope)
        _CACHE[key] = curve
    curve = _CACHE[key]
    window = best_window(curve, N, model.latency, model.slope)
    record = {"window": window, "latency_sweeps": model.latency, "slope": model.slope, "curve": curve,
              "calls": 0 if cached else sum(p * (1 + 2 * REPEATS) for p, _ in curve),
              "seconds": 0.0 if cached else time.perf_counter() - started, "cached": cached,
              "executor": repr(executor)}
    return window, record


def best_window(curve: List[Tuple[int, float]], N: int, latency: float = LATENCY_SWEEPS, slope: float = 1.0) -> int:
    """The ``p`` of ``curve`` (``(p, seconds)`` pairs) of least :func:`predicted_cost`, the smallest on ties."""
    return min(curve, key=lambda pc: (predicted_cost(pc[0], pc[1], N, latency, slope), pc[0]))[0]
