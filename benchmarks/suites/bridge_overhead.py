"""What the generic scheduler bridge costs per point, against one UNet call of the bundled digits model.

``python -m benchmarks.bridge_overhead`` times, on the same rows (window points × images, 16×16×1):

* ``unet`` — one batched call of the digits ``UNet2DModel`` on all rows;
* ``bridge, one step`` — ``SchedulerBridgeRule.step`` with every row at the same step (one
  ``scheduler.step`` call: the sequential sampler's case);
* ``bridge, P steps`` — every window point at a different step (P restored schedulers, one
  ``scheduler.step`` call each: a parallel sweep's case);
* ``hand-written`` — the batched hand-written rule for DPM-Solver++ on the same rows, for scale.

Reported as milliseconds (median over rounds) and per point, and as a fraction of the UNet call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

COMMAND = "python -m benchmarks.bridge_overhead"
SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
              "UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "PNDMScheduler", "LMSDiscreteScheduler")


def _time(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=16, help="window points P (default 16)")
    parser.add_argument("--images", type=int, default=1, help="images per point (default 1)")
    parser.add_argument("--steps", type=int, default=25, help="inference steps T (default 25)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    import diffusers
    from diffusers.utils import logging

    from pitsolve.adapters.diffusers import rule_from_scheduler
    from pitsolve.adapters.diffusion import SchedulerBridgeRule
    from pitsolve.adapters.digits import load_pipeline

    logging.set_verbosity_error()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = load_pipeline()
    unet, base = pipe.unet.eval(), pipe.scheduler
    P, B = args.window, args.images
    rows = P * B
    g = torch.Generator().manual_seed(0)
    x = torch.randn((rows, 1, 16, 16), generator=g)
    out = torch.randn((rows, 1, 16, 16), generator=g)
    with torch.no_grad():
        t_unet = _time(lambda: unet(x, torch.full((rows,), 500)).sample, args.rounds)
    print(f"{COMMAND} --window {P} --images {B} --steps {args.steps}   (torch threads {torch.get_num_threads()})")
    print(f"unet call on {rows} rows: {1e3 * t_unet:.2f} ms ({1e3 * t_unet / P:.3f} ms per point)")
    print("| scheduler | rule | one step [ms] | P steps [ms] | per point [ms] | of one UNet call |")
    print("|---|---|---|---|---|---|")
    for name in SCHEDULERS:
        scheduler = getattr(diffusers, name).from_config(base.config)
        rules = [rule_from_scheduler(scheduler, args.steps)]
        if not isinstance(rules[0], SchedulerBridgeRule):
            rules.append(SchedulerBridgeRule.from_scheduler(scheduler, args.steps))
        for rule in rules:
            T = rule.num_steps
            hist = tuple(torch.randn_like(x) for _ in range(rule.history_size))
            noise = torch.randn_like(x)
            same = torch.full((rows,), T // 2)
            spread = (torch.arange(P) * T // P).repeat_interleave(B)

            def one():
                rule.step(rule.scale_model_input(x, same), out, same, hist, noise)

            def many():
                rule.step(rule.scale_model_input(x, spread), out, spread, hist, noise)

            with torch.no_grad():
                t1, tp = _time(one, args.rounds), _time(many, args.rounds)
            kind = "bridge" if isinstance(rule, SchedulerBridgeRule) else type(rule).__name__
            print(f"| {name} | {kind} | {1e3 * t1:.2f} | {1e3 * tp:.2f} | {1e3 * tp / P:.3f} | "
                  f"{tp / t_unet:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
