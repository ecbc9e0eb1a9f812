"""``window="auto"``: pick the window from the device's batch-cost curve.

A sweep over ``p`` points costs one batched call of ``p`` rows, ``c(p)``;
a solve of ``N`` intervals costs about ``S(p)·c(p)`` for ``S(p)`` sweeps.
On the digits model (identity update, Eq. 17 start, tol 1e-2) the sweeps
follow ``S(p) ≈ a + N/p`` with ``a`` between 2 and 9: the front advances
about one window per sweep, and the last window needs a few more sweeps
to settle (DDPM-1000: p = 8, 16, 32, 64 took 127, 65, 36, 24 sweeps;
DDIM-50: 11, 9, 9, 10 at p = 8, 16, 32, 50; DDIM-25: 7 at p = 16).  So
the tuner times ``c(p)`` and picks the measured ``p`` that minimises
``c(p)·min(N, a + N/p)``, with ``a = LATENCY_SWEEPS = 4`` (``p = 1`` is the
sequential solve, N sweeps).  On a device with idle
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

The timing calls are made once per (system type, state size, device, N)
and cached for the process; they are not part of the solve's NFE or depth
(they change no iterate) and are reported in :attr:`Solution.tuning`.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import torch

__all__ = ["auto_window", "batch_cost_curve", "best_window", "predicted_cost", "LATENCY_SWEEPS"]

#: ``a`` of the sweep model ``S(p) ≈ a + N/p`` (the digits samplers: 2–9, see the module's docstring).
LATENCY_SWEEPS = 4.0
#: Widths below this are always timed before the curve may stop.
MIN_STOP_WIDTH = 8
#: Timings per width while growing the curve, and again in interleaved rounds.
REPEATS = 3

_CACHE: Dict[Tuple, Tuple[int, Dict]] = {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predicted_cost(p: int, seconds: float, N: int, latency: float = LATENCY_SWEEPS) -> float:
    """Predicted solve time ``c(p)·S(p)`` with ``S(p) = min(N, a + N/p)`` sweeps."""
    return seconds * min(N, latency + N / p)


def batch_cost_curve(system, executor, N: int, repeats: int = REPEATS,
                     latency: float = LATENCY_SWEEPS) -> List[Tuple[int, float]]:
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
        if p >= N or _past_best(times, N, latency):
            break
        p = min(2 * p, N)
    for _ in range(repeats):
        for q in times:
            times[q].append(timed(q))
    return [(q, min(ts)) for q, ts in times.items()]


def _past_best(times: Dict[int, List[float]], N: int, latency: float) -> bool:
    """The last two widths timed both predict a costlier solve than the best before them."""
    cost = [predicted_cost(p, min(ts), N, latency) for p, ts in times.items()]
    return len(cost) >= 3 and max(times) >= MIN_STOP_WIDTH and min(cost[-2:]) > min(cost[:-2])


def auto_window(system, executor, N: int, latency: float = LATENCY_SWEEPS) -> Tuple[int, Dict]:
    """The measured window of least :func:`predicted_cost` (see the module's docstring)."""
    spec = system.spec
    key = (type(system).__qualname__, spec.size, str(spec.dtype), str(spec.device), N,
           system.steps_per_interval, latency)
    if key not in _CACHE:
        with torch.no_grad():
            curve = batch_cost_curve(system, executor, N, latency=latency)
        window = best_window(curve, N, latency)
        _CACHE[key] = (window, {"window": window, "latency_sweeps": latency, "curve": curve,
                                "calls": sum(p * (1 + 2 * REPEATS) for p, _ in curve)})
    return _CACHE[key]


def best_window(curve: List[Tuple[int, float]], N: int, latency: float = LATENCY_SWEEPS) -> int:
    """The ``p`` of ``curve`` (``(p, seconds)`` pairs) of least :func:`predicted_cost`, the smallest on ties."""
    return min(curve, key=lambda pc: (predicted_cost(pc[0], pc[1], N, latency), pc[0]))[0]
