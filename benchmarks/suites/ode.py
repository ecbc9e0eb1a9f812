"""Suite ``ode``: every Jacobian strategy × N × window on nonlinear ODEs and an SDE, beside the sequential solve.

Problems (float64, classical RK4 / Euler–Maruyama on a fixed grid of F fine
steps, cut into N intervals of K = F/N steps):

* Van der Pol, μ = 1, (x, v)(0) = (2, 0), t ∈ [0, 8] — a limit cycle;
* Lorenz-63 (σ, ρ, β) = (10, 28, 8/3) from (−8, 8, 27), t ∈ [0, 1] — chaotic, short horizon;
* Allen–Cahn `u_t = ε u_xx + u − u³` on 32 periodic points, ε = 0.015,
  t ∈ [0, 4] (quick: [0, 1]) — stiff-ish: diffusion eigenvalues down to −61, slow modes near +1;
* a double-well SDE `dY = (Y − Y³) dt + 0.5 dW`, 8 paths × 2, t ∈ [0, 4], Itô, Euler–Maruyama;
* Van der Pol with the adaptive `dopri5` (rtol 1e-6, atol 1e-8) and `dopri8` (rtol 1e-9,
  atol 1e-11) inside each interval (no fixed K: F is the sequential solve's step count, and depth
  counts step attempts, a lock-step wave's slowest row; N = 8, 32 by default: wild iterates of an
  adaptive Φ ask for many steps, so larger N mostly hits the time cap);
* `adjoint`: the backward pass of `L = Σ_n ‖X_n‖²` (benchmarks/suites/adjoint.py): the spiral neural ODE
  with rk4 (N = 64, 256, 1024) and with dopri5 (N = 64), and the double-well SDE with parameters
  (N = 64, 256) — backprop through `sequential`, torchdiffeq's / torchsde's adjoint and
  `pitsolve.odeint_adjoint` / `sdeint_adjoint` per adjoint strategy and window: sequential waves
  of VJPs, saved-tensor peak, gradient error vs backprop (its own tables, below the solves').

`--ode-problems` runs a subset; with `--ode-merge` the rows of the problems not run are kept from
the existing record (`<out>/ode.json`), each with the command and date of the run that measured
it (section "Runs"), so new cases are added without rerunning the whole suite.

For every strategy of `pitsolve.jacobians.REGISTRY` (new ones appear here by
themselves), every N and window, with the divergence guard on (the library's
default) and off (the bare strategy): `solve(system, strategy, window=…,
tol=1e-8, init="constant", guard=…, throw=False)`; columns: status,
iterations, depth, ideal speedup F/depth, NFE relative to the sequential F,
error vs the sequential solve (relative RMS over the whole trajectory), the
guard's fallbacks and budget sweeps, and wall time.  Wall times: after every
solve of a (problem, N, window) group ran once (the measuring run, also the
warm-up), the group's solves are timed in one process alternating with the
sequential solve (seq, s_1, seq, s_2, …, seq, `repeats` rounds; each solve's
baseline is the mean of the sequential runs beside it; medians and their
ratio; a solve whose measuring run took over 2 s is timed once).  A
measuring solve running past the time cap (10 s; quick 2 s) is stopped and
reported as skipped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import alternate, error_text, relative_rms, repeats

TITLE = "Jacobian strategies on nonlinear ODEs and an SDE"
DEVICE = "cpu"  # small float64 states: the suite runs on the CPU whatever --device says
HIDDEN = ("problem",)  # the table title says it
HEADERS = {"N": "N", "K": "K", "window": "window", "ideal_speedup": "ideal F/depth", "worst_speedup": "worst repeat",
           # the backward-pass tables (benchmarks/suites/adjoint.py's columns)
           "method": "method", "waves": "backward waves", "waves_ratio": "N / waves", "saved_KiB": "saved peak (KiB)",
           "saved_ratio": "saved / backprop seq", "grad_error": "grad error vs backprop seq",
           "forward_sweeps": "forward sweeps"}
DT = torch.float64
TOL = 1e-8  # δ of Eq. 14 with s_n = 1 + |X_n| (atol = rtol = 1)
FINE_STEPS = 256
QUICK_FINE_STEPS = 32
INTERVALS = (8, 32, 128)
QUICK_INTERVALS = (4, 16)
ADAPTIVE_INTERVALS = (8, 32)
WINDOWS = (None, 16)  # None: the whole horizon (p = N)
QUICK_WINDOWS = (None,)
TIME_CAP = 10.0  # seconds one measuring solve may take before it is stopped and reported as skipped
QUICK_TIME_CAP = 2.0
SLOW = 2.0  # a solve whose measuring run took longer is timed in one repeat, not `repeats`


# -- problems --------------------------------------------------------------------------------------------
def van_der_pol(t, y, mu=1.0):
    x, v = y[0], y[1]
    return torch.stack([v, mu * (1 - x**2) * v - x])


def lorenz(t, y, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    x, v, z = y[0], y[1], y[2]
    return torch.stack([sigma * (v - x), x * (rho - z) - v, x * v - beta * z])


class AllenCahn:
    """``u_t = ε u_xx + u − u³``, second-order differences on a periodic grid of ``points``."""

    def __init__(self, points=32, eps=0.015):
        self.eps, self.dx2 = eps, (1.0 / points) ** 2

    def __call__(self, t, u):
        lap = (torch.roll(u, 1, 0) - 2 * u + torch.roll(u, -1, 0)) / self.dx2
        return self.eps * lap + u - u**3


class DoubleWell(torch.nn.Module):
    """``dY = (Y − Y³) dt + σ dW``, diagonal Itô noise."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sigma=0.5):
        super().__init__()
        self.sigma = sigma

    def f(self, t, y):
        return y - y**3

    def g(self, t, y):
        return self.sigma * torch.ones_like(y)


@dataclass(frozen=True)
class Problem:
    key: str
    label: str
    build: Callable[[int, int, bool], object]  # (N, K, quick) -> BandedSystem
    intervals: Optional[Tuple[int, ...]] = None  # default N values (full mode), if not INTERVALS


def _ode(func, y0, t_end):
    import pitsolve

    def build(N, K, quick):
        t = torch.linspace(0.0, t_end(quick), N + 1, dtype=DT)
        return pitsolve.ODESystem(func, torch.tensor(y0, dtype=DT), t, method="rk4", substeps=K)

    return build


def _allen_cahn(N, K, quick):
    import pitsolve

    x = torch.arange(32, dtype=DT) / 32
    u0 = 0.5 * torch.sin(2 * math.pi * x) + 0.3 * torch.cos(6 * math.pi * x)
    t = torch.linspace(0.0, 1.0 if quick else 4.0, N + 1, dtype=DT)  # RK4 stays stable: h·61 ≤ 1.9
    return pitsolve.ODESystem(AllenCahn(), u0, t, method="rk4", substeps=K)


def _adaptive(method, rtol):
    import pitsolve

    def build(N, K, quick):  # K unused: the step control picks the steps
        t = torch.linspace(0.0, 8.0, N + 1, dtype=DT)
        return pitsolve.ODESystem(van_der_pol, torch.tensor((2.0, 0.0), dtype=DT), t, method=method, rtol=rtol,
                                  atol=rtol / 100)

    return build


def _double_well(N, K, quick):
    import pitsolve

    y0 = torch.linspace(-1.2, 1.2, 16, dtype=DT).reshape(8, 2)
    t = torch.linspace(0.0, 4.0, N + 1, dtype=DT)
    return pitsolve.SDESystem(DoubleWell(), y0, t, method="euler", substeps=K, seed=0)


PROBLEMS: Dict[str, Problem] = {p.key: p for p in (
    Problem("vdp", "Van der Pol (mu=1, t in [0, 8])", _ode(van_der_pol, (2.0, 0.0), lambda q: 8.0)),
    Problem("lorenz", "Lorenz-63 (t in [0, 1])", _ode(lorenz, (-8.0, 8.0, 27.0), lambda q: 1.0)),
    Problem("allen_cahn", "Allen-Cahn (32 points, stiff-ish)", _allen_cahn),
    Problem("sde", "double-well SDE (Euler-Maruyama, 8x2 paths)", _double_well),
    Problem("vdp_dopri5", "Van der Pol, adaptive dopri5 (rtol 1e-6, t in [0, 8])", _adaptive("dopri5", 1e-6),
            ADAPTIVE_INTERVALS),
    Problem("vdp_dopri8", "Van der Pol, adaptive dopri8 (rtol 1e-9, t in [0, 8])", _adaptive("dopri8", 1e-9),
            ADAPTIVE_INTERVALS),
    Problem("adjoint", "backward passes (benchmarks/suites/adjoint.py)", None),
)}
#: Problems whose records are not solves of a banded system (their own tables and columns).
ADJOINT = "adjoint"


# -- the suite -------------------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--ode-problems", nargs="+", choices=sorted(PROBLEMS), default=None, metavar="P",
                        help=f"problems of the ode suite (default all: {', '.join(PROBLEMS)})")
    parser.add_argument("--ode-strategies", nargs="+", default=None, metavar="S",
                        help="Jacobian strategies (default: every name in pitsolve.jacobians.REGISTRY)")
    parser.add_argument("--ode-intervals", nargs="+", type=int, default=None, metavar="N",
                        help=f"values of N (default {INTERVALS}, quick {QUICK_INTERVALS}); must divide the fine steps")
    parser.add_argument("--ode-windows", nargs="+", type=int, default=None, metavar="P",
                        help="windows besides the whole horizon (default 16; quick: none); 0 means the whole horizon")
    parser.add_argument("--ode-guard", choices=("on", "off", "both"), default="both",
                        help="solve with the divergence guard on (the library default), off (the bare strategy) "
                             "or both (default)")
    parser.add_argument("--ode-time-cap", type=float, default=None, metavar="S",
                        help=f"stop a measuring solve after S seconds, reported as skipped (default {TIME_CAP:g}, "
                             f"quick {QUICK_TIME_CAP:g})")
    parser.add_argument("--ode-fine-steps", type=int, default=None, metavar="F",
                        help=f"fine steps F of every problem (default {FINE_STEPS}, quick {QUICK_FINE_STEPS})")
    parser.add_argument("--ode-merge", action="store_true",
                        help="keep the rows of the problems not run now from <out>/ode.json (each with the command "
                             "and date of its run), so new cases are added without rerunning the whole suite")


def run(args) -> List[dict]:
    import pitsolve

    quick = bool(getattr(args, "quick", False))
    problems = getattr(args, "ode_problems", None) or list(PROBLEMS)
    strategies = getattr(args, "ode_strategies", None) or sorted(pitsolve.jacobians.REGISTRY)
    fine = getattr(args, "ode_fine_steps", None) or (QUICK_FINE_STEPS if quick else FINE_STEPS)
    intervals = getattr(args, "ode_intervals", None) or (QUICK_INTERVALS if quick else INTERVALS)
    extra = getattr(args, "ode_windows", None)
    windows = (None, *[w or None for w in extra]) if extra is not None else (QUICK_WINDOWS if quick else WINDOWS)
    cap = getattr(args, "ode_time_cap", None) or (QUICK_TIME_CAP if quick else TIME_CAP)
    guards = _guards(getattr(args, "ode_guard", "both"))
    r = repeats(args, full=3, quick=1)
    bad = [n for n in intervals if fine % n]
    if bad:
        raise SystemExit(f"ode suite: N={bad} do not divide the {fine} fine steps; pass --ode-intervals dividing it")
    from .._record import versions

    run = {"command": args.command, "date": _now(), "git": versions()["git_commit"]}  # as the header: at the start
    records = []
    for key in problems:
        problem = PROBLEMS[key]
        if key == ADJOINT:
            records += _adjoint_records(quick)
            continue
        given = getattr(args, "ode_intervals", None)
        for N in given or (problem.intervals if problem.intervals and not quick else intervals):
            K = fine // N
            system = problem.build(N, K, quick)
            with torch.no_grad():
                ref = pitsolve.sequential(system)
            for window in dict.fromkeys(None if (w is None or w >= N) else w for w in windows):
                fast, slow = {}, {}
                for name in strategies:
                    for guard in guards:
                        row, solve = measure(problem, system, ref, name, guard, N, K, window, cap)
                        records.append(row)
                        if solve is not None:
                            (slow if row["_measuring_wall_s"] > SLOW else fast)[len(records) - 1] = solve
                # Wall times: the group's solves alternated with the sequential solve (all warm by now);
                # the slow ones (a measuring run over SLOW seconds) in a round of their own, once.
                timings = alternate(lambda: pitsolve.sequential(system), fast, r) if fast else {}
                if slow:
                    timings.update(alternate(lambda: pitsolve.sequential(system), slow, 1))
                for i, timing in timings.items():
                    records[i].update({"wall_s": timing.median, "seq_wall_s": timing.baseline_median,
                                       "speedup": timing.speedup, "worst_speedup": timing.worst_speedup,
                                       "_times": timing.times, "_seq_times": timing.baseline})
                for row in records[-len(strategies) * len(guards):]:
                    print(_line(row), flush=True)
    for r in records:
        r["_run"] = run
    if getattr(args, "ode_merge", False):
        records = _kept(Path(args.out) / "ode.json", problems) + records
    return records


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _kept(path: Path, problems: Sequence[str]) -> List[dict]:
    """The records of ``path`` (an earlier ode record) for the problems not run now, each with its run."""
    if not path.exists():
        raise SystemExit(f"ode suite: --ode-merge needs an earlier record {path}; run without --ode-merge first")
    data = json.loads(path.read_text())
    h = data["header"]
    run = {"command": h["command"], "date": h["date"], "git": h["versions"]["git_commit"]}
    return [{**r, "_run": r.get("_run", run)} for r in data["records"] if r.get("problem") not in problems]


def _adjoint_records(quick: bool) -> List[dict]:
    """benchmarks/suites/adjoint.py's measurements: rk4 and dopri5 neural ODEs, the double-well SDE."""
    from . import adjoint

    strategies = ("dense", "identity") if quick else ("dense", "identity", "secant", "anderson")
    rows = adjoint.measure((16,) if quick else (64, 256, 1024), 1, 10.0, (0, 64), strategies, 1e-10, 2)
    rows += adjoint.measure_adaptive(16 if quick else 64, 10.0, 1e-6, (0, 16), strategies[:2], 1e-10)
    rows += adjoint.measure_sde((16,) if quick else (64, 256), 4.0, (0, 64), strategies[:2], 1e-10)
    return [{**r, "problem": ADJOINT, "table": f"backward pass: {r['table']}"} for r in rows]


def _guards(choice: str):
    """The ``guard=`` values to run: the library's default (on), the bare strategy (off), or both."""
    import inspect

    import pitsolve

    if "guard" not in inspect.signature(pitsolve.solve).parameters:
        return (None,)  # this version of the library has no guard
    return {"on": (True,), "off": (False,), "both": (True, False)}[choice]


class _Deadline(Exception):
    pass


def measure(problem: Problem, system, ref, strategy: str, guard, N: int, K: int, window, cap: float):
    """One measuring solve (also the warm-up): the record without wall times, and the solve to time (or None)."""
    import pitsolve

    row = {"table": problem.label, "problem": problem.key, "strategy": strategy,
           "guard": {True: "on", False: "off", None: "n/a"}[guard], "N": N,
           "K": None if getattr(system, "adaptive", False) else K, "window": window or N}
    options = dict(window=window, tol=TOL, init="constant", throw=False)
    if guard is not None:
        options["guard"] = guard

    def par(callback=None):
        return pitsolve.solve(system, strategy, callback=callback, **options)

    started = time.perf_counter()

    def deadline(_):
        if time.perf_counter() - started > cap:
            raise _Deadline

    try:
        sol = par(deadline)
        row["_measuring_wall_s"] = time.perf_counter() - started
    except _Deadline:
        return {**row, "status": f"skipped: over the {cap:g} s cap of the ode suite"}, None
    except Exception as err:  # a strategy that cannot run on this system (e.g. too large for dense)
        return {**row, "status": error_text(err)}, None
    F = ref.depth  # the sequential solve's fine steps: N·K, or an adaptive method's step count
    row["_F"] = F
    row.update({
        "status": sol.status.name,
        "iterations": sol.iterations,
        "depth": sol.depth,
        "ideal_speedup": F / sol.depth,
        "nfe_over_seq": sol.nfe / F,
        "error": relative_rms(sol.ys, ref.ys) if sol.status is not pitsolve.Status.NONFINITE else float("nan"),
        "fallbacks": ">".join(f.target for f in getattr(sol, "fallbacks", [])) or None,
        "budget_sweeps": getattr(sol, "budget_sweeps", None),
        "resets": sol.resets,
    })
    return row, par


def _line(r: dict) -> str:
    head = f"{r['problem']:>10} {r['strategy']:>9} guard {r['guard']:>3} N={r['N']:4d} p={r['window']:4d}"
    if "depth" not in r:
        return f"{head}  {r['status']}"
    return (f"{head}  {r['status']:>9} "
            f"it {r['iterations']:4d} depth {r['depth']:5d} NFE/F {r['nfe_over_seq']:6.2f} err {r['error']:.1e} "
            f"speedup {r['speedup']:.2f}")


def sections(records: Sequence[dict], args) -> List[tuple]:
    runs = _runs(records)
    backward = [r for r in records if r.get("problem") == ADJOINT]
    records = [r for r in records if r.get("problem") != ADJOINT]
    tol = ("Each row: `pitsolve.solve(system, strategy, window=window, tol=%g, init=\"constant\", throw=False)`; "
           "the stopping rule is Eq. 14 with s_n = 1 + |X_n|. *depth*: fine steps on the critical path; "
           "*ideal F/depth*: the speed-up bound on parallel hardware; *NFE/seq*: work relative to the F fine "
           "steps of the sequential solve; *error vs seq*: relative RMS over the whole trajectory; "
           "*wall*, *seq wall*: medians of the alternated runs; *worst repeat*: the smallest per-repeat "
           "ratio. A status other than CONVERGED is reported as such (MAX_ITERS: the N-sweep budget ran out; "
           "NONFINITE: the iteration blew up; ERROR: the strategy cannot run on the system)." % TOL)
    notes = [("", __doc__.split("\n\n", 1)[1].strip()), ("How to read", tol)]
    ok = [r for r in records if r.get("status") == "CONVERGED"]
    if ok:
        lines = ["| problem | lowest depth (strategy, N, window) | best wall speed-up (strategy, N, window) |",
                 "|---|---|---|"]
        for label in dict.fromkeys(r["table"] for r in ok):
            rows = [r for r in ok if r["table"] == label]
            d = min(rows, key=lambda r: (r["depth"], r["nfe_over_seq"]))
            s = max(rows, key=lambda r: r.get("speedup", 0.0))
            lines.append(f"| {label} | {d['depth']} ({d['strategy']}, guard {d['guard']}, N={d['N']}, "
                         f"window {d['window']}) | {s.get('speedup', float('nan')):.2f} ({s['strategy']}, "
                         f"guard {s['guard']}, N={s['N']}, window {s['window']}) |")
        notes.append(("Summary", "\n".join(lines)))
    failed = [r for r in records if r.get("status") != "CONVERGED"]
    if failed:
        notes.append(("Not converged", "\n".join(
            f"- {r['problem']}, {r['strategy']}, guard {r['guard']}, N={r['N']}, window={r['window']}: {r['status']}"
            for r in failed)))
    if backward:
        from . import adjoint

        intro = adjoint.__doc__.split("\n\n", 1)[1].strip()
        notes.append(("Backward passes", intro + "\n\n" + adjoint.summary(backward)))
    if len(runs) > 1:
        notes.append(("Runs", "This record merges runs (`--ode-merge`); each row was measured by one of them:\n\n"
                      + "\n".join(f"- `{cmd}` ({date}): {', '.join(problems)}"
                                   for (cmd, date), problems in runs.items())))
    return notes


def _runs(records: Sequence[dict]) -> Dict[tuple, List[str]]:
    """``{(command, date): [problems]}`` of the runs that measured ``records``."""
    out: Dict[tuple, List[str]] = {}
    for r in records:
        run = r.get("_run") or {}
        key = (run.get("command", "?"), f"{run.get('date', '?')}, git {run.get('git', '?')}")
        if r.get("problem") not in out.setdefault(key, []):
            out[key].append(r.get("problem"))
    return out


def figures(records: Sequence[dict], args) -> Dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r.get("problem") != ADJOINT]
    labels = list(dict.fromkeys(r["table"] for r in records))
    cycle = plt.get_cmap("tab10").colors
    colors = {name: cycle[i % len(cycle)] for i, name in enumerate(dict.fromkeys(r["strategy"] for r in records))}
    out = {}
    for measure, ylabel, log in (("depth", "depth (fine steps on the critical path)", True),
                                 ("speedup", "wall-time speed-up vs sequential", False)):
        fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.6), squeeze=False)
        for ax, label in zip(axes[0], labels):
            rows = [r for r in records if r["table"] == label and r["window"] == r["N"] and measure in r]
            for strategy, guard in dict.fromkeys((r["strategy"], r["guard"]) for r in rows):
                pts = sorted((r["N"], r[measure]) for r in rows if (r["strategy"], r["guard"]) == (strategy, guard)
                             and r["status"] == "CONVERGED")
                if pts:
                    ax.plot(*zip(*pts), marker="o" if guard != "on" else "x", ls="-" if guard != "on" else ":",
                            color=colors[strategy], label=strategy + (f" (guard {guard})" if guard != "n/a" else ""))
            if measure == "depth":
                fine = {r.get("_F") or r["N"] * r["K"] for r in rows}
                for F in fine:
                    ax.axhline(F, color="k", lw=0.8, ls="--")
            else:
                ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xscale("log", base=2)
            if log:
                ax.set_yscale("log")
            ax.set_title(label, fontsize=8)
            ax.set_xlabel("N (window = N)")
            ax.set_ylabel(ylabel, fontsize=8)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        fig.legend(handles, names, loc="lower center", ncol=min(7, max(1, len(names))), fontsize=6, frameon=False)
        out[measure] = fig
    return out
