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
    """Least-squares ``(a, b)`` of ``sweeps ≈ a + b·x`` over ``(x = N/p, sweeps)`` points (``a, b ≥ 0``)."""
    n = len(points)
    if n == 1:
        return 0.0, points[0][1] / points[0][0]
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else 0.0
    b = max(b, 1e-3)
    return max(0.0, my - b * mx), b


def run(args) -> List[Dict]:
    from pitsolve import AutoWindow
    from pitsolve.adapters.diffusers import build_system, parallel_sample, sequential_sample
    from pitsolve.adapters.diffusion.rules.registry import defaults_for
    from pitsolve.extend import batch_cost_curve, predicted_cost
    import pitsolve

    samplers = QUICK if args.quick else FULL
    chosen = getattr(args, "defaults_samplers", None)
    if chosen:
        samplers = [s for s in samplers if s[0] in chosen]
    models = _models(args.device)
    rounds = repeats(args, full=3, quick=1)
    records: List[Dict] = []
    for label, model, name, T in samplers:
        unet, scheduler = _scheduler(models, model, name)
        kw = dict(num_inference_steps=T, shape=(1, 1, 16, 16))

        def gen():
            return torch.Generator().manual_seed(args.seed)

        ref, _ = sequential_sample(unet, scheduler, generator=gen(), **kw)
        grid: Dict[Tuple[str, int, int], Dict] = {}
        windows = sorted({min(w, T) for w in WINDOWS} | ({T} if T <= 128 else set()))
        for jac, M, p in itertools.product(JACOBIANS, MS, windows):
            x, sol = parallel_sample(unet, scheduler, generator=gen(), jacobian=jac, preconditioning_steps=M,
                                     window=p, throw=False, **kw)
            row = {"table": "grid", "sampler": label, "jacobian": jac, "M": M, "window": p,
                   "status": sol.status.name, "sweeps": sol.iterations, "depth": sol.depth,
                   "nfe_per_T": round(sol.nfe / T, 2), "error": relative_rms(x, ref),
                   "estimate": sol.error_estimate}
            grid[(jac, M, p)] = row
            records.append(row)
        # The batch-cost curve of this machine, one image (what window="auto" times).
        system = build_system(unet, scheduler, generator=gen(), **kw)
        executor = pitsolve.LocalExecutor()
        executor.start(system, {})
        with torch.no_grad():
            curve = dict(batch_cost_curve(system, executor, T, latency=0.0))
        fits = []
        for jac, M in itertools.product(JACOBIANS, MS):
            ok = [grid[(jac, M, p)] for p in windows if grid[(jac, M, p)]["status"] == "CONVERGED"
                  and grid[(jac, M, p)]["error"] <= ERROR_TARGET]
            pts = [(T / r["window"], r["sweeps"]) for r in ok if r["window"] < T] or [
                (T / r["window"], r["sweeps"]) for r in ok]
            if not pts:
                continue
            a, b = fit_sweeps(pts)
            best_p, cost = min(((p, predicted_cost(p, c, T, a, b)) for p, c in curve.items()), key=lambda pc: pc[1])
            fits.append({"table": "fits", "sampler": label, "jacobian": jac, "M": M, "a": round(a, 2),
                         "b": round(b, 3), "best_p": best_p, "predicted_ms": round(1e3 * cost, 1)})
        records.extend(fits)
        best_fit = min(fits, key=lambda f: f["predicted_ms"])
        entry, declared = defaults_for(scheduler)
        agrees = (declared.jacobian == best_fit["jacobian"] and declared.preconditioning_steps == best_fit["M"])
        converged = [r for r in grid.values() if r["status"] == "CONVERGED" and r["error"] <= ERROR_TARGET]
        best_depth = min(converged, key=lambda r: (r["depth"], r["nfe_per_T"]))
        # Time the defaults (no solve options at all) and the grid's two cheapest predicted configurations.
        ranked = sorted(converged, key=lambda r: curve.get(r["window"], math.inf) * r["sweeps"])[:2]
        contenders = {"defaults": {}}
        for r in ranked:
            contenders[f"{r['jacobian']} M={r['M']} p={r['window']}"] = dict(
                jacobian=r["jacobian"], preconditioning_steps=r["M"], window=r["window"])
        runs = {}
        for key, opts in contenders.items():
            x, sol = parallel_sample(unet, scheduler, generator=gen(), **kw, **opts)  # warm-up, tunes "auto"
            runs[key] = (x, sol)
        timing = alternate(lambda: sequential_sample(unet, scheduler, generator=gen(), **kw),
                           {k: (lambda o=o: parallel_sample(unet, scheduler, generator=gen(), **kw, **o))
                            for k, o in contenders.items()}, rounds, args.device)
        for key, t in timing.items():
            x, sol = runs[key]
            records.append({
                "table": "timed", "sampler": label, "config": key, "status": sol.status.name,
                "sweeps": sol.iterations, "depth": sol.depth, "nfe_per_T": round(sol.nfe / T, 2),
                "error": relative_rms(x, ref), "wall_ms": round(1e3 * t.median, 1),
                "seq_ms": round(1e3 * t.baseline_median, 1), "speedup": round(t.speedup, 2),
                "worst": round(t.worst_speedup, 2),
                "best_depth": f"{best_depth['depth']} ({best_depth['jacobian']} M={best_depth['M']} "
                              f"p={best_depth['window']})",
                "depth_ratio": round(sol.depth / best_depth["depth"], 2),
                "settings": "; ".join(f"{k}={v}" for k, v in sol.settings.items()
                                      if k in ("jacobian", "window", "window_chosen", "preconditioning_steps"))
                if key == "defaults" else "",
                "registry": f"{entry}: {declared.jacobian}, M={declared.preconditioning_steps}, {declared.window}"
                if key == "defaults" else "",
                "agrees": ("yes" if agrees else f"no (fit prefers {best_fit['jacobian']} M={best_fit['M']})")
                if key == "defaults" else "",
            })
    return records


def sections(records, args):
    return [("", "Tables: `grid` (every configuration), `fits` (the sweep model per strategy and M, and the "
                 "predicted best window on this machine's batch-cost curve), `timed` (the registry's defaults, "
                 "i.e. `parallel_sample` with no solve options, and the grid's two cheapest configurations, "
                 "each alternated with the sequential sampler in one process).  The error is the final "
                 "sample's relative RMS against the sequential sample; the target is 1e-2.")]
