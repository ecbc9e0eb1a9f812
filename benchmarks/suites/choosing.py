"""Measurements behind docs/choosing.md: how N, window, tol and M change a parallel sample.

On the bundled digits DDPM (4 images, seed 0, this machine's CPU), each setting
is solved by ``pitsolve`` and compared with the sequential sample drawn from
the same noise; one knob varies at a time from the base setting.  Writes
``benchmarks/results/choosing.{json,md}``.

    python -m benchmarks.choosing
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMPipeline

import pitsolve
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample
from pitsolve.adapters.digits import MODEL_DIR

OUT = Path(__file__).parent / "results"


def run(unet, scheduler, steps, base, variations):
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
            rows.append({"knob": knob, "value": value, **opts, "converged": sol.converged, "iterations": sol.iterations,
                         "depth": sol.depth, "nfe": sol.nfe, "nfe_over_T": sol.nfe / steps, "error": err,
                         "fallbacks": [f.target for f in sol.fallbacks], "budget_sweeps": sol.budget_sweeps,
                         "wall": wall, "seq_wall": seq_time})
            print(f"{steps:5d} {knob:>22}={value!s:<6} iters {sol.iterations:4d} depth {sol.depth:4d} "
                  f"NFE/T {sol.nfe / steps:5.2f} err {err:.1e} wall {wall:.2f}s (seq {seq_time:.2f}s)")
    return rows


def main():
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    pipe = DDPMPipeline.from_pretrained(MODEL_DIR, low_cpu_mem_usage=False)
    unet = pipe.unet.eval()
    records = {}
    ddpm = pipe.scheduler
    records["DDPM-200"] = run(unet, ddpm, 200, dict(intervals=200, window=32, tol=1e-2, preconditioning_steps=1),
                              {"window": [8, 16, 32, 64], "tol": [1e-1, 1e-2, 1e-3], "preconditioning_steps": [0, 1, 4],
                               "intervals": [200, 100, 40]})
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    records["DDIM-50"] = run(unet, ddim, 50, dict(intervals=50, window=50, tol=1e-2, preconditioning_steps=1),
                             {"window": [10, 25, 50], "tol": [1e-1, 1e-2, 1e-3], "preconditioning_steps": [0, 1, 4],
                              "intervals": [50, 25, 10]})
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m benchmarks.choosing", "machine": platform.platform(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "pitsolve": pitsolve.__version__,
            # 1-minute load average (runnable processes) at the start and the end: above the
            # number of cores, other jobs shared the CPU and the wall times are not comparable.
            "cpus": os.cpu_count(), "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    (OUT / "choosing.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    lines = [f"# Choosing N, window, tol and M — `{meta['command']}`", "",
             f"{meta['machine']}, torch {meta['torch']}, {meta['threads']} threads; bundled digits DDPM, 4 images, "
             "seed 0; error = relative RMS vs the sequential sample (same noise).", "",
             f"Load average (1 min) at the start / end: {meta['load_average_1min'][0]} / "
             f"{meta['load_average_1min'][1]} on {meta['cpus']} CPUs. Iterations, depth, NFE and error are "
             "deterministic; the wall times depend on what else ran on the machine.", ""]
    for name, rows in records.items():
        lines += [f"## {name}", "", "| varied | value | converged | iterations | depth | NFE/T | error vs seq | "
                  "fallbacks | budget sweeps | wall [s] | sequential [s] |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['knob']} | {r['value']} | {'yes' if r['converged'] else '**no**'} | {r['iterations']} | "
                         f"{r['depth']} | {r['nfe_over_T']:.2f} | {r['error']:.1e} | "
                         f"{', '.join(r['fallbacks']) or '—'} | {r['budget_sweeps']} | {r['wall']:.2f} | "
                         f"{r['seq_wall']:.2f} |")
        lines.append("")
    (OUT / "choosing.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
