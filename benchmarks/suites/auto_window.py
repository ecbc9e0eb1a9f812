"""Suite ``auto_window``: what ``window="auto"`` picks for the digits model's samplers, and how stable the pick is.

``python -m benchmarks.run --suite auto_window`` (alias ``python -m benchmarks.auto_window``) builds each
sampler's system (one image, seed 0, N = T) and runs the tuner ``--auto-window-tunings`` times from an empty
cache in one process (``pitsolve.solve(window="auto")``, cache cleared with
:func:`pitsolve.extend.clear_tuning_cache`), recording the measured batch-cost curve ``c(p)`` and the chosen
window each time.  The spread of the picks shows how much the timing noise of the device moves the choice.
"""

from __future__ import annotations

import collections
from typing import Dict, List

import torch

TITLE = "`window=\"auto\"` on the digits model: the chosen window and the measured batch-cost curve"
HIDDEN = ("curve_ms",)
SAMPLERS = (("DDPM-1000", "ddpm", 1000), ("DDIM-50", "ddim", 50), ("DDIM-25", "ddim", 25),
            ("DPM++-50", "dpmsolver++", 50), ("DPM++-25", "dpmsolver++", 25))
QUICK_SAMPLERS = (("DDIM-25", "ddim", 25),)


def measure(tunings: int, samplers=None) -> List[dict]:
    """Per sampler of ``samplers`` (default :data:`SAMPLERS`) and tuning: the window picked and the curve timed."""
    import pitsolve
    from pitsolve.adapters.cli.models import make_scheduler
    from pitsolve.adapters.diffusers import build_system
    from pitsolve.adapters.digits import load_pipeline
    from pitsolve.extend import clear_tuning_cache

    pipe = load_pipeline()
    unet = pipe.unet.eval()
    rows = []
    for name, kind, T in SAMPLERS if samplers is None else samplers:
        system = build_system(unet, make_scheduler(kind, pipe.scheduler), num_inference_steps=T,
                              shape=(1, 1, 16, 16), generator=torch.Generator().manual_seed(0))
        for k in range(tunings):
            clear_tuning_cache()
            # One sweep is enough: window="auto" times the batch-cost curve before it.
            with torch.no_grad():
                info = pitsolve.solve(system, "identity", window="auto", max_iters=1, throw=False).tuning
            window = info["window"]
            rows.append({"sampler": name, "N": T, "tuning": k + 1, "window": window,
                         "latency_sweeps": info["latency_sweeps"],
                         "curve_ms": [[p, 1e3 * t] for p, t in info["curve"]]})
            print(f"{name:9} tuning {k + 1}: window {window:4d}  "
                  + " ".join(f"{p}:{1e3 * t:.1f}" for p, t in info["curve"]), flush=True)
    return rows


def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite auto_window")
    group.add_argument("--auto-window-tunings", type=int, default=None, metavar="n",
                       help="fresh tunings per sampler (default 3; quick 1)")


def run(args) -> List[dict]:
    quick = bool(getattr(args, "quick", False))
    tunings = args.auto_window_tunings or (1 if quick else 3)
    if tunings < 1:
        raise SystemExit(f"--auto-window-tunings={tunings} must be >= 1.")
    return measure(tunings, QUICK_SAMPLERS if quick else SAMPLERS)


def sections(records: List[dict], args) -> List[tuple]:
    picks: Dict[str, List[int]] = collections.defaultdict(list)
    for r in records:
        picks[r["sampler"]].append(r["window"])
    tunings = max(r["tuning"] for r in records)
    intro = (f"One image, N = T; the tuner run {tunings} times per sampler from an empty cache. The pick "
             f"minimises the predicted solve time c(p)·min(N, {records[0]['latency_sweeps']:g} + N/p) over the "
             "widths timed (pitsolve/_tuning.py).")
    lines = ["| sampler | windows picked | curve of the first tuning: rows → ms per call |", "|---|---|---|"]
    for name in picks:
        first = next(r for r in records if r["sampler"] == name)
        curve = ", ".join(f"{p} → {ms:.1f}" for p, ms in first["curve_ms"])
        lines.append(f"| {name} | {', '.join(str(w) for w in picks[name])} | {curve} |")
    return [("", intro), ("Picks", "\n".join(lines))]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the tables are the record
