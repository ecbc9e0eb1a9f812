"""One (model, sampler) case: its sequential reference, measuring runs and the bisection of the tolerance."""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .. import error_text, relative_rms
from .methods import Method, config_text, grid_points, solver_options
from .models import Model, Sampler

ERROR_TARGET = 1e-2
TOLS = (1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3)  # δ of Eq. 14, loosest first, bisected
QUICK_TOLS = (1e-2,)
TIME_CAP = 120.0  # seconds a measuring solve may take before it is stopped and reported as skipped
QUICK_TIME_CAP = 20.0


# -- one case: a model and a sampler ---------------------------------------------------------------------
class Case:
    """A (model, sampler) pair with its sequential reference and a cache of measuring runs."""

    def __init__(self, model: Model, sampler: Sampler, device: str, seed: int, cap: float):
        self.model, self.sampler, self.device, self.seed, self.cap = model, sampler, device, seed, cap
        self.scheduler = sampler.scheduler(model.config)
        self.T = sampler.steps
        self.runs: Dict[str, Dict] = {}
        self.reference = self.sequential()[0]  # also the warm-up

    def kwargs(self, images: int = 1) -> Dict:
        return dict(num_inference_steps=self.T, generator=torch.Generator().manual_seed(self.seed),
                    shape=(images, *self.model.shape[1:]))

    def sequential(self, images: int = 1):
        from pitsolve.adapters.diffusers import sequential_sample

        return sequential_sample(self.model.unet, self.scheduler, **self.kwargs(images))

    def parallel(self, method: Method, point: Mapping, tol: float, images: int = 1):
        from pitsolve.adapters.diffusers import parallel_sample

        return parallel_sample(self.model.unet, self.scheduler, throw=False,
                               **solver_options(method, point, tol), **self.kwargs(images))

    @staticmethod
    def key(method: Method, point: Mapping, tol: float) -> str:
        return f"{method.jacobian}|{method.init}|{sorted(point.items())}|{tol}"

    def measure(self, method: Method, point: Mapping, tol: float) -> Dict:
        """One measuring run (cached): status, iterations, depth, NFE/T, error, single-run wall."""
        import pitsolve
        from pitsolve.adapters.diffusers import build_system

        key = self.key(method, point, tol)
        if key in self.runs:
            return self.runs[key]
        options = solver_options(method, point, tol)
        started = time.perf_counter()
        deadline = started + self.cap

        def stop_late(_):
            if time.perf_counter() > deadline:
                raise _Deadline

        try:  # what parallel_sample does, with a deadline callback
            kw = self.kwargs()
            system = build_system(self.model.unet, self.scheduler, num_inference_steps=self.T,
                                  generator=kw["generator"], shape=kw["shape"], intervals=options.pop("intervals"),
                                  scale_floor=options.pop("scale_floor"))
            with torch.no_grad():
                sol = pitsolve.solve(system, options.pop("jacobian"), throw=False, callback=stop_late, **options)
            wall = time.perf_counter() - started
            sample = sol.y[0]
            run = {"status": sol.status.name, "iterations": sol.iterations, "depth": sol.depth,
                   "nfe_over_T": sol.nfe / self.T, "error": relative_rms(sample, self.reference), "wall_s": wall,
                   "fallbacks": ">".join(f.target for f in getattr(sol, "fallbacks", [])) or None}
        except _Deadline:
            run = {"status": f"skipped: over the {self.cap:g} s cap"}
        except Exception as err:
            run = {"status": error_text(err)}
        self.runs[key] = run
        return run


class _Deadline(Exception):
    pass


def meets(run: Mapping) -> bool:
    return run.get("status") == "CONVERGED" and run.get("error", math.inf) <= ERROR_TARGET


def loosest_passing(measure: Callable[[float], Mapping], tols: Sequence[float]) -> Tuple[float, Mapping]:
    """Bisect ``tols`` (loosest first) for the loosest one whose run meets the error target.

    The error falls as ``tol`` tightens, so about log₂(len(tols)) runs are made.  Returns
    that tol and its run, or, if none meets the target, the tightest tol tried and its run.
    """
    lo, hi = 0, len(tols) - 1  # the answer lies in tols[lo..hi], if anywhere
    best = None
    tried = {}
    while lo <= hi:
        mid = (lo + hi) // 2
        tried[mid] = measure(tols[mid])
        if meets(tried[mid]):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return tols[best], tried[best]
    tightest = max(tried)
    return tols[tightest], tried[tightest]


def search(case: Case, method: Method, quick: bool) -> List[Dict]:
    """Every grid point of ``method`` at its loosest passing tolerance: the search records."""
    tols = QUICK_TOLS if quick else TOLS
    rows = []
    for point in grid_points(method, case.T, quick):
        runs_before = len(case.runs)
        tol, run = loosest_passing(lambda t: case.measure(method, point, t), tols)
        cached = len(case.runs) == runs_before
        rows.append({"table": f"search: {case.model.label}", "model": case.model.key, "sampler": case.sampler.key,
                     "method": method.key, "config": config_text(point), "tol": tol, **run,
                     "meets_error_target": meets(run), "_point": point, "_key": case.key(method, point, tol)})
        if cached:  # a method sharing the grid of one searched before
            continue
        print(f"  {case.model.key:6} {case.sampler.key:9} {method.key:18} {config_text(point):32} tol {tol:.0e} "
              f"{run.get('status'):9} depth {run.get('depth', '—')!s:>5} "
              f"NFE/T {run.get('nfe_over_T', math.nan):5.2f} err {run.get('error', math.nan):.1e} "
              f"wall {run.get('wall_s', math.nan):.2f}s", flush=True)
    return rows


def choose(rows: Sequence[Dict], pick: str) -> Optional[Dict]:
    """The grid point a method reports: lowest depth (or fastest) among those meeting the error target."""
    ok = [r for r in rows if r["meets_error_target"]]
    if not ok:
        done = [r for r in rows if r.get("status") in ("CONVERGED", "MAX_ITERS")]
        return min(done, key=lambda r: r["error"]) if done else None
    if pick == "wall":
        return min(ok, key=lambda r: r["wall_s"])
    return min(ok, key=lambda r: (r["depth"], r["nfe_over_T"], r["wall_s"]))
