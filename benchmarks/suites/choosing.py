"""Suite ``choosing``: the measurements behind docs/choosing.md: how N, window, tol and M change a parallel sample.

``python -m benchmarks.run --suite choosing`` (alias ``python -m benchmarks.choosing``): on the bundled digits
DDPM (4 images, seed 0, this machine's CPU), each setting is solved by ``pitsolve`` and compared with the
sequential sample drawn from the same noise; one knob varies at a time from the base setting.  Quick mode:
DDIM-25 with a shorter list of values.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Mapping

import torch

TITLE = "Choosing N, window, tol and M"
HEADERS = {"knob": "varied", "value": "value", "converged": "converged", "nfe_over_T": "NFE/T",
           "error": "error vs seq", "fallbacks": "fallbacks", "budget_sweeps": "budget sweeps", "wall": "wall [s]",
           "seq_wall": "sequential [s]"}
HIDDEN = ("intervals", "window", "tol", "preconditioning_steps", "nfe")

#: name → (scheduler, steps, base setting, {knob: values})
FULL = {
    "DDPM-200": ("ddpm", 200, dict(intervals=200, window=32, tol=1e-2, preconditioning_steps=1),
                 {"window": [8, 16, 32, 64], "tol": [1e-1, 1e-2, 1e-3], "preconditioning_steps": [0, 1, 4],
                  "intervals": [200, 100, 40]}),
    "DDIM-50": ("ddim", 50, dict(intervals=50, window=50, tol=1e-2, preconditioning_steps=1),
                {"window": [10, 25, 50], "tol": [1e-1, 1e-2, 1e-3], "preconditioning_steps": [0, 1, 4],
                 "intervals": [50, 25, 10]}),
}
QUICK = {"DDIM-25": ("ddim", 25, dict(intervals=25, window=25, tol=1e-2, preconditioning_steps=1),
                     {"window": [5, 25], "tol": [1e-1, 1e-2]})}


def measure(unet, scheduler, steps: int, base: Mapping, variations: Mapping, table: str) -> List[dict]:
    """One row per (knob, value): the parallel sample against the sequential one from the same noise."""
    from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

    kw = dict(num_inference_steps=steps, shape=(4, 1, 16, 16))
    t0 = time.perf_counter()
    seq, _ = sequential_sample(unet, scheduler, generator=torch.Generator().manual_seed(0), **kw)
    seq_time = time.perf_counter() - t0
    rows = []
    for knob, values in variations.items():
        for value in values:
            opts = {**base, knob: value}
            opts["window"] = min(opts["window"], opts["intervals"])
            t0 = time.perf_counter()
            par, sol = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(0), throw=False,
                                       **kw, **opts)
            wall = time.perf_counter() - t0
            err = float((par - seq).pow(2).mean().sqrt() / seq.pow(2).mean().sqrt())
            rows.append({"table": table, "knob": knob, "value": value, **opts, "converged": sol.converged,
                         "iterations": sol.iterations, "depth": sol.depth, "nfe": sol.nfe,
                         "nfe_over_T": sol.nfe / steps, "error": err,
                         "fallbacks": [f.target for f in sol.fallbacks] or None, "budget_sweeps": sol.budget_sweeps,
                         "wall": wall, "seq_wall": seq_time})
            print(f"{steps:5d} {knob:>22}={value!s:<6} iters {sol.iterations:4d} depth {sol.depth:4d} "
                  f"NFE/T {sol.nfe / steps:5.2f} err {err:.1e} wall {wall:.2f}s (seq {seq_time:.2f}s)", flush=True)
    return rows


def run(args) -> List[dict]:
    from diffusers import DDIMScheduler

    from pitsolve.adapters.digits import load_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = load_pipeline()
        unet = pipe.unet.eval()
        schedulers = {"ddpm": pipe.scheduler, "ddim": DDIMScheduler.from_config(pipe.scheduler.config)}
        records = []
        for name, (kind, steps, base, variations) in (QUICK if args.quick else FULL).items():
            records += measure(unet, schedulers[kind], steps, base, variations, name)
        return records
    finally:
        torch.set_num_threads(threads)


def sections(records: List[dict], args) -> List[tuple]:
    load_end = round(os.getloadavg()[0], 2)
    return [("", "Bundled digits DDPM, 4 images, seed 0, 2 torch threads; error = relative RMS vs the sequential "
                 "sample (same noise). Iterations, depth, NFE and error are deterministic; the wall times depend "
                 f"on what else ran on the machine (1-minute load average at the end: {load_end}).")]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the tables are the record
