"""What ``window="auto"`` picks for the digits model's samplers, and how stable the pick is.

``python -m benchmarks.auto_window`` builds each sampler's system (one image, seed 0, N = T) and runs the
tuner ``--tunings`` times from an empty cache in one process (``pitsolve.solve(window="auto")``, cache cleared with :func:`pitsolve.extend.clear_tuning_cache`),
recording the measured batch-cost curve ``c(p)`` and the chosen window each time.  The spread of the
picks shows how much the timing noise of the device moves the choice.  Writes
``benchmarks/results/auto_window.{json,md}``.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import torch

from . import _record

OUT = Path(__file__).resolve().parent / "results"
SAMPLERS = (("DDPM-1000", "ddpm", 1000), ("DDIM-50", "ddim", 50), ("DDIM-25", "ddim", 25),
            ("DPM++-50", "dpmsolver++", 50), ("DPM++-25", "dpmsolver++", 25))


def measure(tunings: int) -> list:
    import pitsolve
    from pitsolve.extend import clear_tuning_cache
    from pitsolve.adapters.cli.models import make_scheduler
    from pitsolve.adapters.diffusers import build_system
    from pitsolve.adapters.digits import load_pipeline

    pipe = load_pipeline()
    unet = pipe.unet.eval()
    rows = []
    for name, kind, T in SAMPLERS:
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunings", type=int, default=3, help="fresh tunings per sampler (default: 3)")
    args = parser.parse_args(argv)
    if args.tunings < 1:
        raise SystemExit(f"--tunings={args.tunings} must be >= 1.")
    command = "python -m benchmarks.auto_window" + ("" if args.tunings == 3 else f" --tunings {args.tunings}")
    h = _record.header("auto_window", command, "cpu", False, vars(args))
    started = time.time()
    rows = measure(args.tunings)
    h["elapsed_s"] = time.time() - started
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "auto_window.json").write_text(json.dumps({"header": h, "records": rows}, indent=2))
    picks = collections.defaultdict(list)
    for r in rows:
        picks[r["sampler"]].append(r["window"])
    lines = ["# `window=\"auto\"` on the digits model: the chosen window and the measured batch-cost curve", "",
             *_record.header_lines(h), "",
             f"One image, N = T; the tuner run {args.tunings} times per sampler from an empty cache. The pick "
             f"minimises the predicted solve time c(p)·min(N, {rows[0]['latency_sweeps']:g} + N/p) over the "
             "widths timed (pitsolve/_tuning.py).", "",
             "| sampler | windows picked | curve of the first tuning: rows → ms per call |", "|---|---|---|"]
    for name, _, _ in SAMPLERS:
        first = next(r for r in rows if r["sampler"] == name)
        curve = ", ".join(f"{p} → {ms:.1f}" for p, ms in first["curve_ms"])
        lines.append(f"| {name} | {', '.join(str(w) for w in picks[name])} | {curve} |")
    (OUT / "auto_window.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
