"""Suite ``bridge_overhead``: what the generic scheduler bridge costs per point, against one UNet call of the
bundled digits model.

``python -m benchmarks.run --suite bridge_overhead`` (alias ``python -m benchmarks.bridge_overhead``) times,
on the same rows (window points × images, 16×16×1):

* ``unet`` — one batched call of the digits ``UNet2DModel`` on all rows;
* ``bridge, one step`` — ``SchedulerBridgeRule.step`` with every row at the same step (one
  ``scheduler.step`` call: the sequential sampler's case);
* ``bridge, P steps`` — every window point at a different step (P restored schedulers, one
  ``scheduler.step`` call each: a parallel sweep's case);
* ``hand-written`` — the batched hand-written rule for DPM-Solver++ on the same rows, for scale.

Reported as milliseconds (median over ``--repeats`` rounds, default 20, quick 3) and per point, and as a
fraction of the UNet call.
"""

from __future__ import annotations

from typing import Dict, List

import torch

from . import median_time, repeats

TITLE = "The scheduler bridge's cost per point, against one UNet call"
HEADERS = {"scheduler": "scheduler", "rule": "rule", "one_step_ms": "one step [ms]", "p_steps_ms": "P steps [ms]",
           "per_point_ms": "per point [ms]", "of_unet_call": "of one UNet call", "unet_ms": "UNet call [ms]"}
SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
              "UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "PNDMScheduler", "LMSDiscreteScheduler")


def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite bridge_overhead")
    group.add_argument("--bridge-overhead-window", type=int, default=16, metavar="P",
                       help="window points P (default 16)")
    group.add_argument("--bridge-overhead-images", type=int, default=1, help="images per point (default 1)")
    group.add_argument("--bridge-overhead-steps", type=int, default=25, metavar="T",
                       help="inference steps T (default 25)")


def _rules(scheduler, steps: int) -> list:
    """The rule ``rule_from_scheduler`` picks, and the generic bridge beside it when that pick is hand-written."""
    from pitsolve.adapters.diffusers import rule_from_scheduler
    from pitsolve.adapters.diffusion import SchedulerBridgeRule

    rules = [rule_from_scheduler(scheduler, steps)]
    if not isinstance(rules[0], SchedulerBridgeRule):
        rules.append(SchedulerBridgeRule.from_scheduler(scheduler, steps))
    return rules


def run(args) -> List[dict]:
    import diffusers
    from diffusers.utils import logging

    from pitsolve.adapters.diffusion import SchedulerBridgeRule
    from pitsolve.adapters.digits import load_pipeline

    logging.set_verbosity_error()
    rounds = repeats(args, full=20, quick=3)
    pipe = load_pipeline()
    unet, base = pipe.unet.eval(), pipe.scheduler
    P, B, steps = args.bridge_overhead_window, args.bridge_overhead_images, args.bridge_overhead_steps
    rows = P * B
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn((rows, 1, 16, 16), generator=g)
    out = torch.randn((rows, 1, 16, 16), generator=g)
    with torch.no_grad():
        t_unet = median_time(lambda: unet(x, torch.full((rows,), 500)).sample, rounds)
    print(f"unet call on {rows} rows: {1e3 * t_unet:.2f} ms ({1e3 * t_unet / P:.3f} ms per point)", flush=True)
    records = []
    for name in SCHEDULERS:
        for rule in _rules(getattr(diffusers, name).from_config(base.config), steps):
            T = rule.num_steps
            hist = tuple(torch.randn_like(x) for _ in range(rule.history_size))
            noise = torch.randn_like(x)
            same = torch.full((rows,), T // 2)
            spread = (torch.arange(P) * T // P).repeat_interleave(B)
            with torch.no_grad():
                t1 = median_time(lambda: rule.step(rule.scale_model_input(x, same), out, same, hist, noise), rounds)
                tp = median_time(lambda: rule.step(rule.scale_model_input(x, spread), out, spread, hist, noise),
                                 rounds)
            kind = "bridge" if isinstance(rule, SchedulerBridgeRule) else type(rule).__name__
            records.append({"table": f"P = {P} points × {B} image(s), T = {steps}", "scheduler": name, "rule": kind,
                            "one_step_ms": 1e3 * t1, "p_steps_ms": 1e3 * tp, "per_point_ms": 1e3 * tp / P,
                            "of_unet_call": tp / t_unet, "unet_ms": 1e3 * t_unet})
            print(f"{name:32} {kind:24} one step {1e3 * t1:.2f} ms, P steps {1e3 * tp:.2f} ms", flush=True)
    return records


def sections(records: List[dict], args) -> List[tuple]:
    return [("", __doc__.split("\n\n", 1)[1].strip())]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the table is the record
