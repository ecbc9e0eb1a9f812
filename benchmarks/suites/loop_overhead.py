"""Suite ``loop_overhead``: what the sequential loop costs beyond its model calls: pitsolve's sequential
sampler against Diffusers' own ``DDPMPipeline`` loop and against the bare UNet calls alone.

``python -m benchmarks.run --suite loop_overhead`` (alias ``python -m benchmarks.loop_overhead``) runs
DDPM-1000 on the bundled digits model (one image, seed 0) three ways, alternating over several rounds in
one process:

* ``unet only`` — the 1000 UNet calls at batch 1 and nothing else (the floor of any sequential loop);
* ``diffusers`` — ``DDPMPipeline.__call__(output_type="np")``: UNet call and ``scheduler.step`` per step;
* ``pitsolve`` — :func:`pitsolve.adapters.diffusers.sequential_sample` (``pitsolve.sequential`` over the
  adapter's ``DiffusionSystem``; the baseline every wall-time speed-up in the diffusion suite divides).

Reported as seconds per step (median over rounds) and as ratios to the UNet-only loop, so the
per-step bookkeeping of each loop is visible.  ``--repeats`` sets the rounds (default 3; quick 1, with
``--loop-overhead-steps`` 50 instead of 1000).
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import torch

from . import repeats

TITLE = "The sequential loop's cost beyond its model calls"
HEADERS = {"loop": "loop", "seconds": "seconds", "worst_seconds": "worst round", "ms_per_step": "ms per step",
           "ratio_to_unet_only": "× UNet-only", "overhead_ms_per_step": "overhead ms per step"}
HIDDEN = ("steps", "rounds")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(steps: int, rounds: int) -> dict:
    from diffusers import DDPMScheduler

    from pitsolve.adapters.diffusers import sequential_sample
    from pitsolve.adapters.digits import load_pipeline

    pipe = load_pipeline()
    unet = pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.linspace(999, 0, steps).long()

    def unet_only():
        for t in timesteps:
            unet(x, t).sample

    def diffusers_loop():
        pipe(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="np")

    def pitsolve_loop():
        sequential_sample(unet, scheduler, num_inference_steps=steps, shape=shape,
                          generator=torch.Generator().manual_seed(0))

    loops = {"unet only": unet_only, "diffusers": diffusers_loop, "pitsolve": pitsolve_loop}
    times = {name: [] for name in loops}
    with torch.no_grad():
        for fn in loops.values():  # warm-up: allocations, kernel selection
            fn()
        for _ in range(rounds):
            for name, fn in loops.items():
                times[name].append(_timed(fn))
    floor = statistics.median(times["unet only"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"loop": name, "steps": steps, "rounds": rounds, "seconds": med, "worst_seconds": max(ts),
                     "ms_per_step": 1e3 * med / steps, "ratio_to_unet_only": med / floor,
                     "overhead_ms_per_step": 1e3 * (med - floor) / steps})
    return {"rows": rows, "times": times}


def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite loop_overhead")
    group.add_argument("--loop-overhead-steps", type=int, default=None, metavar="T",
                       help="DDPM steps (default 1000; quick 50)")


def run(args) -> List[dict]:
    steps = args.loop_overhead_steps or (50 if args.quick else 1000)
    rounds = repeats(args, full=3, quick=1)
    if steps < 1:
        raise SystemExit(f"--loop-overhead-steps={steps} must be >= 1.")
    return measure(steps, rounds)["rows"]


def sections(records: List[dict], args) -> List[tuple]:
    r = records[0]
    return [("", f"DDPM-{r['steps']}, bundled digits UNet, one image; median of {r['rounds']} alternating rounds.")]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the table is the record
