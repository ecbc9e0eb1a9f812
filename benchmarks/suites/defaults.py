"""The evidence for the samplers' defaults: a grid per sampler, the sweep model fitted to it, the defaults timed.

For each sampler of the bundled models (one image, seed 0, ``tol`` = the
default 1e-2 under the error bound), every configuration of the grid —
strategy (:data:`JACOBIANS`) × ``M`` (:data:`MS`) × window (:data:`WINDOWS`) —
is solved once with :func:`~pitsolve.adapters.diffusers.parallel_sample`
and compared with :func:`~pitsolve.adapters.diffusers.sequential_sample`
(same noise): sweeps, depth, NFE, and the final sample's relative RMS error.

From the grid, per (strategy, M), the sweep model ``S(p) ≈ a + b·N/p`` is
fitted by least squares over the windows below N, and the batch-cost curve
``c(p)`` of this machine is timed (:func:`pitsolve.extend.batch_cost_curve`, what
``window="auto"`` times); the (strategy, M) of least predicted time
``min_p c(p)·S(p)`` is the recommended default.  The registry's declared
defaults (``SamplerEntry.defaults``) are then checked against it, and timed:
``parallel_sample`` with **no** solve options against the sequential sampler
and against the grid's fastest configurations, alternating in one process.

    python -m benchmarks.run --suite defaults
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Dict, List, Sequence, Tuple

import torch

from . import alternate, relative_rms, repeats

TITLE = "Defaults from evidence: the samplers' grid, the fitted sweep model, the defaults timed"
JACOBIANS = ("identity", "secant", "anderson")
MS = (0, 1)
#: Windows of the grid (capped at N); the full window only where N ≤ 128 (a 1000-row sweep costs 10 T NFE).
WINDOWS = (8, 16, 32, 64, 128)
ERROR_TARGET = 1e-2
#: (label, model, sampler name of the registry, T) — the samplers issue targets name.
FULL = (("DDPM-1000", "digits", "ddpm", 1000), ("DDIM-50", "digits", "ddim", 50),
        ("DPM++-25", "digits", "dpmsolver++", 25), ("Euler-50", "digits", "euler", 50),
        ("UniPC-25", "digits", "unipc", 25), ("FlowMatch-28", "flow", "flowmatch", 28))
QUICK = (("DDPM-64", "digits", "ddpm", 64), ("DDIM-16", "digits", "ddim", 16))
HEADERS = {"sampler": "sampler", "jacobian": "strategy", "M": "M", "window": "window", "status": "status",
           "sweeps": "sweeps", "depth": "depth", "nfe_per_T": "NFE/T", "error": "error vs seq",
           "estimate": "estimate", "a": "a", "b": "b", "predicted_ms": "predicted (ms)", "best_p": "best p",
           "config": "configuration", "speedup": "speed-up vs seq", "worst": "worst repeat",
           "wall_ms": "wall (ms)", "seq_ms": "seq (ms)", "settings": "resolved settings",
           "registry": "registry default", "agrees": "agrees", "depth_ratio": "depth / best depth",
           "best_depth": "best depth (config)"}
HIDDEN = ("table",)


def add_arguments(group) -> None:
    group.add_argument("--defaults-samplers", nargs="*", default=None,
                       help="labels of the samplers to run (default: all of the full list)")


def _models(device: str):
    from pitsolve.adapters.digits import load_flow, load_pipeline

    pipe = load_pipeline(device)
    flow_unet, flow_scheduler = load_flow(device)
    return {"digits": (pipe.unet.eval(), dict(pipe.scheduler.config)), "flow": (flow_unet, flow_scheduler)}


def _scheduler(models, model: str, name: str):
    import diffusers

    from pitsolve.adapters.diffusion.rules.registry import sampler

    unet, config = models[model]
    if model == "flow":
        return unet, config  # the flow model's own FlowMatchEulerDiscreteScheduler
    entry = sampler(name)
    return unet, getattr(diffusers, entry.scheduler).from_config(config, **entry.config)


def fit_sweeps(points: Sequence[Tuple[float, float]]) -> Tuple[float, float]:
    """Least-squares ``(a, b)`` of ``sweeps ≈ a + b·x`` over ``(x = N/p, sweeps)`` points, with ``b ≥ 1``.

    ``b < 1`` would predict that narrower windows than any measured cost no extra sweeps, though the
    front advances at most ``p`` points a sweep; there the fit keeps ``b = 1`` and fits ``a`` alone.
    """
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else 1.0
    b = max(b, 1.0)
    return max(0.0, my - b * mx), b


def run(args) -> List[Dict]:
    samplers = QUICK if args.quick else FULL
    chosen = getattr(args, "defaults_samplers", None)
    if chosen:
        samplers = [s for s in samplers if s[0] in chosen]
    models = _models(args.device)
    records: List[Dict] = []
    for label, model, name, T in samplers:
        unet, scheduler = _scheduler(models, model, name)
        case = _Case(label, unet, scheduler, T, args.seed)
        grid = _grid(case)
        records.extend(grid.values())
        fits = _fits(case, grid)
        records.extend(fits)
        records.extend(_timed(case, grid, fits, repeats(args, full=3, quick=1), args.device))
    return records


class _Case:
    """One sampler of one model: its sequential reference and a ``parallel_sample`` with given options."""

    def __init__(self, label: str, unet, scheduler, T: int, seed: int):
        from pitsolve.adapters.diffusers import sequential_sample

        self.label, self.unet, self.scheduler, self.T, self.seed = label, unet, scheduler, T, seed
        self.kw = dict(num_inference_steps=T, shape=(1, 1, 16, 16))
        self.ref, _ = sequential_sample(unet, scheduler, generator=self.gen(), **self.kw)

    def gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def parallel(self, **options):
        from pitsolve.adapters.diffusers import parallel_sample

        return parallel_sample(self.unet, self.scheduler, generator=self.gen(), throw=False, **self.kw, **options)

    def sequential(self):
        from pitsolve.adapters.diffusers import sequential_sample

        return sequential_sample(self.unet, self.scheduler, generator=self.gen(), **self.kw)

    def row(self, table: str, x, sol, **fields) -> Dict:
        return {"table": table, "sampler": self.label, **fields, "status": sol.status.name,
                "sweeps": sol.iterations, "depth": sol.depth, "nfe_per_T": round(sol.nfe / self.T, 2),
                "error": relative_rms(x, self.ref), "estimate": sol.error_estimate}


def _usable(row: Dict) -> bool:
    return row["status"] == "CONVERGED" and row["error"] <= ERROR_TARGET


def _grid(case: _Case) -> Dict[Tuple[str, int, int], Dict]:
    """Every (strategy, M, window) of the grid, solved once."""
    T, grid = case.T, {}
    windows = sorted({min(w, T) for w in WINDOWS} | ({T} if T <= 128 else set()))
    for jac, M, p in itertools.product(JACOBIANS, MS, windows):
        x, sol = case.parallel(jacobian=jac, preconditioning_steps=M, window=p)
        row = grid[(jac, M, p)] = case.row("grid", x, sol, jacobian=jac, M=M, window=p)
        print(f"defaults: {case.label} {jac} M={M} p={p}: {row['status']} {row['sweeps']} sweeps, "
              f"error {row['error']:.1e}", file=sys.stderr, flush=True)
    return grid


def _fits(case: _Case, grid) -> List[Dict]:
    """Per (strategy, M): the sweep model fitted to its usable grid rows, and its best window on this machine."""
    import pitsolve
    from pitsolve.adapters.diffusers import build_system
    from pitsolve.extend import batch_cost_curve, predicted_cost

    T = case.T
    system = build_system(case.unet, case.scheduler, generator=case.gen(), **case.kw)
    executor = pitsolve.LocalExecutor()
    executor.start(system, {})
    with torch.no_grad():  # the batch-cost curve of one image, what window="auto" times
        case.curve = dict(batch_cost_curve(system, executor, T, latency=0.0))
    fits = []
    for jac, M in itertools.product(JACOBIANS, MS):
        ok = [r for (j, m, _), r in grid.items() if (j, m) == (jac, M) and _usable(r)]
        pts = [(T / r["window"], r["sweeps"]) for r in ok if r["window"] < T] or [
            (T / r["window"], r["sweeps"]) for r in ok]
        if not pts:
            continue
        a, b = fit_sweeps(pts)
        best_p, cost = min(((p, predicted_cost(p, c, T, a, b)) for p, c in case.curve.items()),
                           key=lambda pc: pc[1])
        fits.append({"table": "fits", "sampler": case.label, "jacobian": jac, "M": M, "a": round(a, 2),
                     "b": round(b, 3), "best_p": best_p, "predicted_ms": round(1e3 * cost, 1)})
    return fits


def _timed(case: _Case, grid, fits, rounds: int, device: str) -> List[Dict]:
    """The registry's defaults (no solve options) and the grid's two cheapest configurations, timed."""
    from pitsolve.adapters.diffusion.rules.registry import defaults_for

    entry, declared = defaults_for(case.scheduler)
    best_fit = min(fits, key=lambda f: f["predicted_ms"]) if fits else None
    agrees = best_fit is not None and (declared.jacobian, declared.preconditioning_steps) == (
        best_fit["jacobian"], best_fit["M"])
    usable = [r for r in grid.values() if _usable(r)]
    best_depth = min(usable, key=lambda r: (r["depth"], r["nfe_per_T"])) if usable else None
    ranked = sorted(usable, key=lambda r: case.curve.get(r["window"], math.inf) * r["sweeps"])[:2]
    contenders = {"defaults": {}}
    for r in ranked:
        contenders[f"{r['jacobian']} M={r['M']} p={r['window']}"] = dict(
            jacobian=r["jacobian"], preconditioning_steps=r["M"], window=r["window"])
    runs = {key: case.parallel(**opts) for key, opts in contenders.items()}  # warm-up; tunes "auto" once
    timing = alternate(case.sequential, {k: (lambda o=o: case.parallel(**o)) for k, o in contenders.items()},
                       rounds, device)
    rows = []
    for key, t in timing.items():
        x, sol = runs[key]
        row = case.row("timed", x, sol, config=key)
        row.update(wall_ms=round(1e3 * t.median, 1), seq_ms=round(1e3 * t.baseline_median, 1),
                   speedup=round(t.speedup, 2), worst=round(t.worst_speedup, 2),
                   best_depth="—" if best_depth is None else
                   f"{best_depth['depth']} ({best_depth['jacobian']} M={best_depth['M']} p={best_depth['window']})",
                   depth_ratio=None if best_depth is None else round(sol.depth / best_depth["depth"], 2))
        if key == "defaults":
            row.update(settings="; ".join(f"{k}={v}" for k, v in sol.settings.items() if k in (
                           "jacobian", "window", "window_chosen", "preconditioning_steps")),
                       registry=f"{entry}: {declared.jacobian}, M={declared.preconditioning_steps}, {declared.window}",
                       agrees="no usable configuration" if best_fit is None else "yes" if agrees else
                       f"no (fit prefers {best_fit['jacobian']} M={best_fit['M']})")
        rows.append(row)
    return rows


def sections(records, args):
    return [("", "Tables: `grid` (every configuration), `fits` (the sweep model per strategy and M, and the "
                 "predicted best window on this machine's batch-cost curve), `timed` (the registry's defaults, "
                 "i.e. `parallel_sample` with no solve options, and the grid's two cheapest configurations, "
                 "each alternated with the sequential sampler in one process).  The error is the final "
                 "sample's relative RMS against the sequential sample; the target is 1e-2.")]
