"""``window="auto"``: pick the window from the device's batch-cost curve.

A sweep over ``p`` points costs one batched call of ``p`` rows, ``c(p)``; it
pays when it accepts more points than ``c(p)/c(1)`` sequential steps would
have computed in the same time.  How many points a sweep accepts depends on
the problem, but how fast ``c(p)`` grows depends only on the device and the
model: on a GPU ``c(p)`` is nearly flat up to hundreds of rows, on a 2-core
CPU it grows almost linearly past a dozen (benchmarks/results/diffusion.md).
The tuner measures ``c(p)`` on the system itself for ``p = 1, 2, 4, …`` and
picks the largest window whose call costs at most ``ratio`` (default 2)
single-row calls: then any sweep accepting ``ratio`` points or more is ahead
of the sequential solve in wall time, and the window is as large as the
device lets it be at that price.

The timing calls are made once per (system type, state size, device, N)
and cached for the process; they are not part of the solve's NFE or depth
(they change no iterate) and are reported in :attr:`Solution.tuning`.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import torch

__all__ = ["auto_window", "batch_cost_curve"]

_CACHE: Dict[Tuple, Tuple[int, Dict]] = {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_cost_curve(system, executor, N: int, repeats: int = 3) -> List[Tuple[int, float]]:
    """Seconds per batched ``Φ`` call of ``p = 1, 2, 4, … ≤ N`` rows (the fastest of ``repeats``:
    other work on the machine only ever adds time)."""
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
        if p >= N:
            break
        p = min(2 * p, N)
    return curve


def auto_window(system, executor, N: int, ratio: float = 2.0) -> Tuple[int, Dict]:
    """The largest measured window whose batched call costs at most ``ratio`` single-row calls."""
    spec = system.spec
    key = (type(system).__qualname__, spec.size, str(spec.dtype), str(spec.device), N,
           system.steps_per_interval, ratio)
    if key not in _CACHE:
        with torch.no_grad():
            curve = batch_cost_curve(system, executor, N)
        single = curve[0][1]
        window = max(p for p, t in curve if t <= ratio * single)
        _CACHE[key] = (window, {"window": window, "ratio": ratio, "curve": curve,
                                "calls": sum(4 * p for p, _ in curve)})
    return _CACHE[key]
