"""Suite ``oracle``: the depth floor of each strategy: the final sample's error after every sweep, no stopping rule.

``python -m benchmarks.run --suite oracle`` (alias ``python -m benchmarks.oracle``) solves the digits
model's DDIM-50/25 and DPM-Solver++-50/25 samplers (one image, seed 0, N = T, the whole window,
copy-forward start) with ``tol=0`` for a fixed number of sweeps, and records
after each sweep the relative RMS error of the window's last point (the
final sample) against the sequential sample.  The first sweep whose error
is ≤ 1e-2 is the depth an oracle stopping rule would give: no stopping
rule based on the iterates can stop sooner.  Quick mode: DDIM-25 only,
identity and secant.
"""

from __future__ import annotations

from typing import Dict, List

import torch

import pitsolve

TITLE = "Oracle depth: the fewest sweeps any stopping rule could stop at"
RECORD_TABLES = False  # sections() shows the records with one column per sweep
SAMPLERS = (("DDIM-50", "ddim", 50), ("DDIM-25", "ddim", 25), ("DPM++-50", "dpmsolver++", 50),
            ("DPM++-25", "dpmsolver++", 25))
STRATEGIES = {
    "identity": lambda: pitsolve.jacobians.Identity(),
    "anderson (m=4)": lambda: pitsolve.jacobians.Anderson(4),
    "secant (m=2)": lambda: pitsolve.jacobians.Secant(2),
    "newton (exact JVPs)": lambda: pitsolve.jacobians.ExactJVP(),
}
SWEEPS = 10
TARGET = 1e-2


def curve(unet, sched, T: int, make) -> list:
    """Relative RMS error of the final sample after each of :data:`SWEEPS` sweeps (tol 0, guard off)."""
    from pitsolve.adapters.diffusers import build_system
    from pitsolve.adapters.diffusion import PosteriorInit

    def system():
        return build_system(unet, sched, num_inference_steps=T, shape=(1, 1, 16, 16),
                            generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        ref = pitsolve.sequential(system()).y[0]
    D = ref.numel()
    errors = []

    def record(it):
        if it.start + it.iterate.shape[0] == T:  # the window holds X_T, the final sample
            last = it.iterate[-1, :D].view_as(ref)
            errors.append(float((last - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()))

    with torch.no_grad():
        pitsolve.solve(system(), make(), tol=0.0, max_iters=SWEEPS, init=PosteriorInit(0), guard=False,
                       throw=False, callback=record)
    return errors


def run(args) -> List[dict]:
    from pitsolve.adapters.cli.models import make_scheduler
    from pitsolve.adapters.digits import load_pipeline

    quick = bool(getattr(args, "quick", False))
    samplers = SAMPLERS[1:2] if quick else SAMPLERS
    strategies = {k: v for k, v in STRATEGIES.items() if not quick or k.startswith(("identity", "secant"))}
    pipe = load_pipeline()
    unet = pipe.unet.eval()
    rows = []
    for name, kind, T in samplers:
        sched = make_scheduler(kind, pipe.scheduler)
        for label, make in strategies.items():
            errors = curve(unet, sched, T, make)
            first = next((k for k, e in enumerate(errors, 1) if e <= TARGET), None)
            rows.append({"sampler": name, "strategy": label, "errors": errors, "oracle_sweeps": first})
            print(f"{name:9} {label:20} oracle sweeps {first}  " + " ".join(f"{e:.1e}" for e in errors), flush=True)
    return rows


def sections(records: List[dict], args) -> List[tuple]:
    head = " | ".join(f"k={k}" for k in range(1, SWEEPS + 1))
    lines = [f"| sampler | strategy | oracle sweeps | {head} |", "|---|---|---|" + "---|" * SWEEPS]
    for r in records:
        errs = " | ".join(f"{e:.1e}" for e in r["errors"]) + " |" * (SWEEPS - len(r["errors"]))
        lines.append(f"| {r['sampler']} | {r['strategy']} | {r['oracle_sweeps'] or '> ' + str(SWEEPS)} | {errs} |")
    intro = ("Digits DDPM, one image, seed 0, N = T, whole window, copy-forward start, tol 0 (no stopping rule), "
             "guard off. Each column: relative RMS error of the final sample after sweep k. *Oracle sweeps*: the "
             f"first k with error ≤ {TARGET:g}, the fewest sweeps any stopping rule could stop at. Newton's sweeps "
             "each cost one more sequential JVP sweep of depth p−1 (its depth is not its sweep count).")
    return [("", intro), ("Error after each sweep", "\n".join(lines))]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the tables are the record
