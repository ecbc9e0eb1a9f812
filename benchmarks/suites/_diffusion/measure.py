"""The rows of one case (search, choice, alternating wall times, Fréchet distance) and the batch-cost curve."""

from __future__ import annotations

import statistics
from typing import Dict, List, Mapping, Sequence

import torch

from .. import alternate, clock, relative_rms
from .methods import Method
from .models import Model
from .search import Case, choose, search

SLOW = 60.0  # a chosen configuration whose measuring run took longer is timed in one repeat only
FID_IMAGES = 64
BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 4, 16, 64)


#: Column order of the methods' table (the search table uses the same keys).
COLUMNS = ("table", "model", "sampler", "method", "config", "tol", "status", "iterations", "depth", "nfe_over_T",
           "error", "meets_error_target", "fallbacks", "fid", "wall_s", "seq_wall_s", "speedup", "worst_speedup")


def _ordered(row: Mapping) -> Dict:
    """``row`` with the columns of :data:`COLUMNS` first, in that order (missing ones as ``None``)."""
    return {**{k: row.get(k) for k in COLUMNS}, **{k: v for k, v in row.items() if k not in COLUMNS}}


def measure_case(case: Case, methods: Sequence[Method], quick: bool, r: int, fid_images: int) -> List[dict]:
    """The methods' rows (search, choice, alternated timing), the search rows and the Fréchet rows of one case."""
    base = {"table": case.model.label, "model": case.model.key, "sampler": case.sampler.key, "_main": True}
    seq_row = {**base, "method": "sequential", "config": f"T={case.T}", "status": "SEQUENTIAL",
               "iterations": case.T, "depth": case.T, "nfe_over_T": 1.0, "error": 0.0}
    rows, search_rows, chosen, seen = [seq_row], [], {}, set()
    for method in methods:
        reason = method.when(case.sampler)
        if reason:
            rows.append({**base, "method": method.key, "status": f"skipped: {reason}"})
            continue
        found = search(case, method, quick)
        search_rows += [f for f in found if f["_key"] not in seen]  # methods sharing a grid share its runs
        seen.update(f["_key"] for f in found)
        best = choose(found, method.pick)
        if best is None:
            rows.append({**base, "method": method.key, "status": found[0]["status"] if found else "no grid point"})
            continue
        rows.append({**base, **{k: best.get(k) for k in COLUMNS[4:13]}, "method": method.key,
                     "_label": method.label, "_point": best["_point"], "_measuring_wall_s": best.get("wall_s")})
        chosen[method.key] = (method, best)

    # Wall time: every chosen configuration alternated with the sequential sampler (all warm by now);
    # the slow ones (a measuring run over SLOW seconds) in a round of their own with one repeat.
    fast, slow = {}, {}
    for key, (method, best) in chosen.items():
        if best.get("status") in ("CONVERGED", "MAX_ITERS"):
            run = (lambda m=method, b=best: case.parallel(m, b["_point"], b["tol"]))
            (slow if best.get("wall_s", 0.0) > SLOW else fast)[key] = run
    timings = alternate(case.sequential, fast, r, case.device) if fast else {}
    if slow:
        timings.update(alternate(case.sequential, slow, 1, case.device))
    for row in rows:
        t = timings.get(row["method"])
        if t is not None:
            row.update({"wall_s": t.median, "seq_wall_s": t.baseline_median, "speedup": t.speedup,
                        "worst_speedup": t.worst_speedup, "_times": t.times, "_seq_times": t.baseline})
    if timings:
        seq_times = [b for t in timings.values() for b in t.baseline]
        seq_row.update({"wall_s": statistics.median(seq_times), "seq_wall_s": statistics.median(seq_times),
                        "speedup": 1.0, "_seq_times": seq_times})
    for row in rows[1:]:
        if "wall_s" in row:
            print(f"  {row['method']:18} speedup {row['speedup']:.2f} (worst {row['worst_speedup']:.2f}) "
                  f"wall {row['wall_s']:.2f}s seq {row['seq_wall_s']:.2f}s", flush=True)

    fid_rows = frechet(case, chosen, rows, fid_images) if fid_images else []
    for f in fid_rows:  # the methods' table shows the Fréchet distance too
        for row in rows:
            if row["method"] == f["method"]:
                row["fid"] = f["fid"]
    return [_ordered(row) for row in rows] + fid_rows + [_ordered(row) for row in search_rows]


def frechet(case: Case, chosen: Mapping, rows: Sequence[dict], images: int) -> List[dict]:
    """Fréchet d² of ``images`` samples: sequential and the fastest parallel method meeting the error target."""
    from pitsolve.adapters.digits import frechet_distance

    ok = [r for r in rows if r.get("meets_error_target") and r.get("speedup") is not None]
    out = []
    seq, _ = case.sequential(images)
    seq_fid = frechet_distance(seq.float().cpu().clamp(-1, 1))
    base = {"table": f"Fréchet distance: {case.model.label}", "model": case.model.key, "sampler": case.sampler.key}
    out.append({**base, "method": "sequential", "images": images, "config": f"T={case.T}", "fid": seq_fid,
                "error": 0.0})
    if ok:
        best = max(ok, key=lambda r: r["speedup"])
        method, run = chosen[best["method"]]
        par, sol = case.parallel(method, run["_point"], run["tol"], images)
        out.append({**base, "method": best["method"], "images": images, "config": run["config"], "tol": run["tol"],
                    "fid": frechet_distance(par.float().cpu().clamp(-1, 1)), "error": relative_rms(par, seq),
                    "status": sol.status.name, "iterations": sol.iterations, "depth": sol.depth,
                    "nfe_over_T": sol.nfe / case.T})
    return out


# -- batch cost ------------------------------------------------------------------------------------------
def batch_cost(model: Model, device: str, batches: Sequence[int], reps: int) -> List[dict]:
    """Time of one model call vs batch size: whether a wider window (more rows per call) costs more wall time.

    The batches are timed round-robin (``reps`` rounds, after ``2`` warm-up
    rounds), so a change of the machine's load hits every batch alike; medians.
    """
    now = clock(device)
    unet = model.unet
    inputs = {}
    for b in batches:
        x = torch.randn((b, *model.shape[1:]), generator=torch.Generator().manual_seed(0)).to(device)
        inputs[b] = (x, torch.full((b,), 500, dtype=torch.long, device=device))
    times: Dict[int, List[float]] = {b: [] for b in batches}
    with torch.no_grad():
        for round_ in range(reps + 2):
            for b, (x, t) in inputs.items():
                t0 = now()
                unet(x, t)
                if round_ >= 2:
                    times[b].append(now() - t0)
    rows, first = [], None
    for b in batches:
        seconds = statistics.median(times[b])
        first = first or (b, seconds)
        rows.append({"table": f"batch cost: {model.label} on {device}", "model": model.key, "batch": b,
                     "time_per_call_ms": 1e3 * seconds, "time_per_sample_ms": 1e3 * seconds / b,
                     "relative_cost": seconds / first[1], "efficiency": (b / first[0]) * first[1] / seconds})
    return rows
