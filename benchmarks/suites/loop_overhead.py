"""What the sequential loop costs beyond its model calls: pitsolve's sequential sampler against
Diffusers' own ``DDPMPipeline`` loop and against the bare UNet calls alone.

``python -m benchmarks.loop_overhead`` runs DDPM-1000 on the bundled digits model (one image, seed 0)
three ways, alternating over several rounds in one process:

* ``unet only`` — the 1000 UNet calls at batch 1 and nothing else (the floor of any sequential loop);
* ``diffusers`` — ``DDPMPipeline.__call__(output_type="np")``: UNet call and ``scheduler.step`` per step;
* ``pitsolve`` — :func:`pitsolve.adapters.diffusers.sequential_sample` (``pitsolve.sequential`` over the
  adapter's ``DiffusionSystem``; the baseline every wall-time speed-up in the diffusion suite divides).

Reported as seconds per step (median over rounds) and as ratios to the UNet-only loop, so the
per-step bookkeeping of each loop is visible.  Writes ``benchmarks/results/loop_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from . import _record

OUT = Path(__file__).resolve().parent / "results"
COMMAND = "python -m benchmarks.loop_overhead"


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="DDPM steps (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: 3)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        raise SystemExit(f"--steps={args.steps} and --rounds={args.rounds} must both be >= 1.")
    command = COMMAND + ("" if (args.steps, args.rounds) == (1000, 3) else f" --steps {args.steps} --rounds {args.rounds}")
    h = _record.header("loop_overhead", command, "cpu", False, vars(args))
    started = time.time()
    result = measure(args.steps, args.rounds)
    h["elapsed_s"] = time.time() - started
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "loop_overhead.json").write_text(json.dumps({"header": h, **result}, indent=2))
    lines = ["# The sequential loop's cost beyond its model calls", "", *_record.header_lines(h), "",
             f"DDPM-{args.steps}, bundled digits UNet, one image; median of {args.rounds} alternating rounds.", "",
             "| loop | seconds | worst round | ms per step | × UNet-only | overhead ms per step |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['loop']} | {r['seconds']:.2f} | {r['worst_seconds']:.2f} | {r['ms_per_step']:.2f} | "
                     f"{r['ratio_to_unet_only']:.3f} | {r['overhead_ms_per_step']:.2f} |")
    (OUT / "loop_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
