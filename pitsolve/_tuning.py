"""``window="auto"``: pick the window from the device's batch-cost curve.

A sweep over ``p`` points costs one batched call of ``p`` rows, ``c(p)``.
The rows a device evaluates per unit time, ``e(p) = p·c(1)/c(p)`` (the
batching efficiency), grow with ``p`` while the device has idle capacity
and level off once it is saturated: on a GPU ``c(p)`` is nearly flat up to
hundreds of rows, on a 2-core CPU ``e(p)`` stops growing at a few dozen
(benchmarks/results/diffusion.md).  Past that knee a wider window buys its
extra rows at their full price, and it pays only if they cut the number of
sweeps proportionally, which the measurements do not show (the lowest-depth
window was slower than the knee in most CPU settings).  So the tuner
measures ``c(p)`` on the system itself for ``p = 1, 2, 4, …`` up to ``N``
or the first doubling that gains less than 5 % in rows per second, and picks
the smallest window whose efficiency reaches ``saturation`` (default 0.9)
of the best measured: the knee of the curve, and ``N`` (or close) where the
curve stays flat.

The timing calls are made once per (system type, state size, device, N)
and cached for the process; they are not part of the solve's NFE or depth
(they change no iterate) and are reported in :attr:`Solution.tuning`.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import torch

__all__ = ["auto_window", "batch_cost_curve", "knee"]

_CACHE: Dict[Tuple, Tuple[int, Dict]] = {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_cost_curve(system, executor, N: int, repeats: int = 3) -> List[Tuple[int, float]]:
    """Seconds per batched ``Φ`` call of ``p = 1, 2, 4, … ≤ N`` rows (the fastest of ``repeats``:
    other work on the machine only ever adds time), up to the first doubling that no longer
    raises the rows per second by 5 % (past the knee)."""
    spec = system.spec
    x0 = spec.flatten(system.initial_state)
    curve = []
    p = 1
    while True:
        states = x0.unsqueeze(0).expand(p, -1).contiguous()
        indices = torch.arange(p, device=spec.device)
        executor.propagate(states, indices)  # warm-up (allocations, kernel selection)
        times = []
        for _ in range(repeats):
            _synchronize(spec.device)
            started = time.perf_counter()
            executor.propagate(states, indices)
            _synchronize(spec.device)
            times.append(time.perf_counter() - started)
        curve.append((p, min(times)))
        if p >= N or _saturated(curve):
            break
        p = min(2 * p, N)
    return curve


def _saturated(curve: List[Tuple[int, float]], gain: float = 1.05) -> bool:
    """Doubling the rows raised the rows per second by less than ``gain``: the device is saturated,
    and wider calls (which on a busy device cost ever more time and memory) are not timed."""
    if len(curve) < 2:
        return False
    (p0, t0), (p1, t1) = curve[-2], curve[-1]
    return (p1 / t1) < gain * (p0 / t0)


def auto_window(system, executor, N: int, saturation: float = 0.9) -> Tuple[int, Dict]:
    """The smallest measured window whose batching efficiency ``p·c(1)/c(p)`` reaches ``saturation``
    of the best measured one (the knee of the batch-cost curve)."""
    spec = system.spec
    key = (type(system).__qualname__, spec.size, str(spec.dtype), str(spec.device), N,
           system.steps_per_interval, saturation)
    if key not in _CACHE:
        with torch.no_grad():
            curve = batch_cost_curve(system, executor, N)
        window = knee(curve, saturation)
        _CACHE[key] = (window, {"window": window, "saturation": saturation, "curve": curve,
                                "calls": sum(4 * p for p, _ in curve)})
    return _CACHE[key]


def knee(curve: List[Tuple[int, float]], saturation: float = 0.9) -> int:
    """The smallest ``p`` of ``curve`` (``(p, seconds)`` from ``p = 1``) with
    ``p·c(1)/c(p) ≥ saturation · max_q q·c(1)/c(q)``."""
    single = curve[0][1]
    efficiency = [(p, p * single / t) for p, t in curve]
    best = max(e for _, e in efficiency)
    return min(p for p, e in efficiency if e >= saturation * best)
