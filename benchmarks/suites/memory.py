"""Peak memory against N at a fixed window: does it grow with the window or with N?

Each measurement runs in a fresh Python process (``python -m
benchmarks.suites.memory N WINDOW MODE``) so that earlier runs leave no
allocator state behind: it builds a linear ODE ``y' = −λ ⊙ y + sin(t)`` with
a large state (``D`` float64 entries, so that the states dominate the
interpreter's own memory), records the resident set size just before the
solve, and samples it every millisecond during the solve; the figure
reported is the peak rise above the level before the solve.  Modes:

* ``sequential`` — :func:`pitsolve.sequential` keeping ``X_0 … X_N``;
* ``sequential-final`` — ``sequential(trajectory=False)``;
* ``parallel`` — ``solve(window=p)`` keeping the trajectory (``N+1`` states);
* ``parallel-final`` — ``solve(window=p, trajectory=False)``: ``X_0`` and
  ``X_N`` only, so only the window's ``O(p·D)`` working set remains.

Every mode runs with a fixed mmap threshold of glibc's malloc (the resident
size then tracks live tensors); the parallel modes also with the default
allocator, whose retained heap is what a user's process shows.

    python -m benchmarks.run --suite memory
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List

TITLE = "Peak memory of a solve against N at a fixed window"
HEADERS = {"N": "N", "window": "window", "mode": "mode", "D": "D", "state_MiB": "one state (MiB)",
           "trajectory_MiB": "N+1 states (MiB)", "peak_rise_MiB": "peak rise (MiB)",
           "peak_over_state": "peak / state", "iterations": "sweeps", "wall_s": "wall (s)"}
D = 5_000
MODES = ("sequential", "sequential-final", "parallel", "parallel-final")
#: glibc's malloc raises its mmap threshold as large blocks are freed and then serves window-sized
#: temporaries from a heap it does not return, so the resident size also counts freed blocks.  With a
#: fixed threshold every large tensor is mmapped and unmapped when freed: RSS tracks live tensors.
ALLOCATORS = {"fixed mmap threshold": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "glibc default": {}}


def add_arguments(group) -> None:
    group.add_argument("--memory-window", type=int, default=32, help="window p of the parallel solves (default 32)")


def run(args) -> List[Dict]:
    Ns = (100, 300, 1000) if args.quick else (100, 1000, 10_000)
    window = getattr(args, "memory_window", 32)
    records = []
    for allocator, env in ALLOCATORS.items():
        for N in Ns:
            for mode in MODES if env else ("parallel", "parallel-final"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.suites.memory", str(N), str(window), mode],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **env})
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"[memory] {allocator}: N={N:6d} {mode:17s} peak rise {rec['peak_rise_MiB']:8.1f} MiB "
                      f"({rec['peak_over_state']:.0f} states), {rec['wall_s']:.1f} s", flush=True)
                records.append({"table": f"window {window}, D = {D} (float64), {allocator}", **rec})
    return records


def sections(records, args):
    window = getattr(args, "memory_window", 32)
    fixed = [r for r in records if "fixed" in r["table"]]
    final = [r for r in fixed if r["mode"] == "parallel-final"]
    full = [r for r in fixed if r["mode"] == "parallel"]
    lines = []
    if final and full:
        lo, hi = final[0], final[-1]
        lines.append(
            f"From N = {lo['N']} to N = {hi['N']} ({hi['N'] // lo['N']}× more intervals) the peak rise of "
            f"`solve(window={window}, trajectory=False)` went from {lo['peak_rise_MiB']:.1f} to "
            f"{hi['peak_rise_MiB']:.1f} MiB ({lo['peak_over_state']:.0f} to {hi['peak_over_state']:.0f} states of "
            f"{lo['state_MiB']:.3f} MiB): it is set by the window. Keeping the trajectory, the rise went from "
            f"{full[0]['peak_rise_MiB']:.1f} to {full[-1]['peak_rise_MiB']:.1f} MiB, the N+1 states the result "
            f"holds ({full[-1]['trajectory_MiB']:.0f} MiB at N = {full[-1]['N']}).")
    default = [r for r in records if "default" in r["table"]]
    if default:
        d_final = [r for r in default if r["mode"] == "parallel-final"]
        d_full = [r for r in default if r["mode"] == "parallel"]
        lines.append(
            "With glibc's default allocator the resident size also holds freed window-sized blocks that malloc "
            "keeps in its heap once it has raised its mmap threshold: "
            + ", ".join(f"N = {a['N']}: {a['peak_rise_MiB']:.0f} MiB with the trajectory, "
                        f"{b['peak_rise_MiB']:.0f} MiB without" for a, b in zip(d_full, d_final))
            + ". Without the trajectory it stays bounded there too.")
    lines.append("Peak rise: the largest resident set size sampled every millisecond during the solve, minus the "
                 "resident size just before it, in a fresh process per row; `MALLOC_MMAP_THRESHOLD_=65536` "
                 "makes every large tensor an mmap that is returned to the system when freed, so the figure "
                 "tracks live tensors (the first tables).")
    return [("", "\n\n".join(lines))]


def figures(records, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        rows = [r for r in records if r["mode"] == mode and "fixed" in r["table"]]
        ax.loglog([r["N"] for r in rows], [max(r["peak_rise_MiB"], 0.1) for r in rows], "o-", label=mode)
    ax.set_xlabel("N (intervals)")
    ax.set_ylabel("peak RSS rise (MiB)")
    ax.set_title(f"window {getattr(args, 'memory_window', 32)}, D = {D}")
    ax.legend()
    fig.tight_layout()
    return {"peak": fig}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(N: int, window: int, mode: str) -> Dict:
    import torch

    import pitsolve

    torch.set_num_threads(1)
    lam = torch.linspace(0.1, 2.0, D, dtype=torch.float64)
    system = pitsolve.ODESystem(lambda t, y: -lam * y + torch.sin(t), torch.ones(D, dtype=torch.float64),
                                torch.linspace(0.0, N * 0.01, N + 1, dtype=torch.float64), batched_func=True,
                                atol=1e-6, rtol=1e-6)
    # batched_func: y is [B, D], t is [B]
    system.func = lambda t, y: -lam * y + torch.sin(t).unsqueeze(-1)
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    before = _rss_bytes()
    peak[0] = before
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    if mode.startswith("sequential"):
        sol = pitsolve.sequential(system, trajectory=mode == "sequential")
    else:
        sol = pitsolve.solve(system, "identity", window=window, tol=1e-6, trajectory=mode == "parallel")
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    state = D * 8 / 2**20
    rise = (peak[0] - before) / 2**20
    return {"N": N, "window": window if mode.startswith("parallel") else None, "mode": mode, "D": D,
            "state_MiB": state, "trajectory_MiB": (N + 1) * state, "peak_rise_MiB": rise,
            "peak_over_state": rise / state, "iterations": sol.iterations, "wall_s": wall}


if __name__ == "__main__":
    n, p, m = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(json.dumps(_measure(n, p, m)))
