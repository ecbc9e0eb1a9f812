"""Every Jacobian strategy of pitsolve on one nonlinear ODE, beside the sequential solve.

The problem is the Van der Pol oscillator with μ = 1,

    x' = v,    v' = μ (1 − x²) v − x,    (x, v)(0) = (2, 0),    t ∈ [0, 2]  (``--t-end``),

cut into N intervals of K classical RK4 steps each (``pitsolve.ODESystem``).
The sequential solve ``X_{n+1} = Φ_n(X_n)`` is the reference; each strategy of
``pitsolve.jacobians.REGISTRY`` then solves the same banded system by
parallel sweeps and must reproduce it to within ``tol``.

Printed: one row per strategy with its iterations (parallel sweeps), depth
(fine steps on the critical path), NFE (all fine steps, also as a multiple of
the sequential N·K), the largest absolute difference from the sequential
trajectory, and the wall time of the solve, also relative to the sequential
one.  Every solve is timed after an untimed warm-up run, in this process,
as the fastest of ``--repeats`` identical runs.
On a CPU the batched sweep is not spread over devices, so the wall-time
ratio measures overheads as much as parallelism; depth is the figure that
bounds the speed-up on parallel hardware (docs/design.md, "Measures").

Saved in ``--out``: ``stats.json`` (the header of :mod:`.record`: the command
line, versions, threads and settings; then the table, plus the error after
every iteration and what the divergence guard did) and ``convergence.png``:
for each strategy, the largest error
over the trajectory of the iterate ``solve`` returns after k iterations
(``solve(..., max_iters=k, throw=False)`` re-run for every k), on a log axis;
exact zeros are drawn at ε/10 of the dtype, and errors above 1e6 or not
finite (iterates that diverged far ahead of the accepted front, before the
solver re-initialised them) at 1e6.  In stats.json they are ``null``.

    pitsolve solve --out outputs/solve          (or: python examples/ode_demo.py)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pitsolve  # noqa: E402

from . import checks, record  # noqa: E402

MU = 1.0
Y0 = (2.0, 0.0)
T_END = 2.0
CEILING = 1e6  # errors above it (diverged iterates far ahead of the front) are drawn at it
DTYPES = {"float32": torch.float32, "float64": torch.float64}
COLUMNS = ("strategy", "iters", "depth", "NFE", "NFE/(N*K)", "max|err| vs seq", "wall [s]", "wall/seq", "guard")


def van_der_pol(t, y):
    x, v = y[0], y[1]
    return torch.stack([v, MU * (1 - x**2) * v - x])


def build_system(n_intervals: int, substeps: int, dtype: torch.dtype, t_end: float = T_END) -> pitsolve.ODESystem:
    t = torch.linspace(0.0, t_end, n_intervals + 1, dtype=dtype)
    y0 = torch.tensor(Y0, dtype=dtype)
    return pitsolve.ODESystem(van_der_pol, y0, t, method="rk4", substeps=substeps)


def max_error(sol: pitsolve.Solution, ref: pitsolve.Solution) -> float:
    return float((sol.ys - ref.ys).abs().max())


def row(name: str, sol: pitsolve.Solution, ref: pitsolve.Solution, fine_steps: int) -> Dict:
    return {
        "strategy": name,
        "converged": sol.converged,
        "status": sol.status.name,
        "iterations": sol.iterations,
        "depth": sol.depth,
        "nfe": sol.nfe,
        "resets": sol.resets,
        "nfe_per_fine_step": sol.nfe / fine_steps,
        "max_abs_error": max_error(sol, ref),
        "wall_time_s": sol.wall_time,
        "wall_time_ratio": sol.wall_time / ref.wall_time,
        **record.guard_fields(sol),
    }


def fastest(run: Callable[[], pitsolve.Solution], repeats: int) -> pitsolve.Solution:
    """The run with the least wall time of ``repeats`` identical (deterministic) solves."""
    return min((run() for _ in range(repeats)), key=lambda sol: sol.wall_time)


def run_strategy(system, ref, name: str, tol: float, window: Optional[int], repeats: int,
                 guard: Union[bool, pitsolve.Guard] = True) -> Dict:
    """The timed solve and the error of the iterate after k = 1 … iterations sweeps."""
    kwargs = dict(tol=tol, window=window, throw=False, guard=guard)
    # k = 1 and 2 first: they also warm up every code path of the timed solve.
    runs = {k: pitsolve.solve(system, name, max_iters=k, **kwargs) for k in (1, 2)}
    sol = fastest(lambda: pitsolve.solve(system, name, **kwargs), repeats)
    runs[sol.iterations] = sol
    errors = [
        max_error(runs[k] if k in runs else pitsolve.solve(system, name, max_iters=k, **kwargs), ref)
        for k in range(1, sol.iterations + 1)
    ]
    fine_steps = system.num_intervals * system.steps_per_interval
    return dict(row(name, sol, ref, fine_steps), error_per_iteration=errors)


def format_table(rows: Sequence[Dict]) -> str:
    cells = [COLUMNS] + [
        (
            r["strategy"],
            str(r["iterations"]),
            str(r["depth"]),
            str(r["nfe"]),
            f"{r['nfe_per_fine_step']:.2f}",
            f"{r['max_abs_error']:.2e}",
            f"{r['wall_time_s']:.3f}",
            f"{r['wall_time_ratio']:.2f}",
            record.guard_cell(r),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(rows: Sequence[Dict], floor: float, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    clipped = False
    # Distinct markers: newton and dense produce the same iterates, so their curves overlap.
    for i, r in enumerate(rows):
        errors = [min(max(e, floor), CEILING) if math.isfinite(e) else CEILING for e in r["error_per_iteration"]]
        clipped |= CEILING in errors
        ax.semilogy(range(1, len(errors) + 1), errors, ["-", "--", ":", "-."][i % 4], marker="osD^xv+"[i % 7],
                    markersize=5, markerfacecolor="none", label=r["strategy"])
    if clipped:
        ax.axhline(CEILING, color="grey", lw=0.8, ls=":", label=f"≥ {CEILING:g} or not finite")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("max |X^k − X_sequential| over the trajectory")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finite_or_null(obj):
    """``obj`` with NaN and ±Inf replaced by ``None``, so that stats.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the ODE demonstration (``pitsolve solve`` and ``examples/ode_demo.py``)."""
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="folder for stats.json and the PNG")
    parser.add_argument("--n-intervals", type=int, default=64, help="N, the number of intervals")
    parser.add_argument("--substeps", type=int, default=2, help="K, RK4 steps per interval")
    parser.add_argument("--window", type=int, default=None, help="points iterated at once (default: all N)")
    parser.add_argument("--t-end", type=float, default=T_END, help="end of the time span [0, t_end]")
    parser.add_argument("--tol", type=float, default=1e-8, help="δ of the stopping rule (Eq. 14)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per solve; the fastest is reported")
    parser.add_argument("--no-guard", dest="guard", action="store_false",
                        help="run every strategy bare, without pitsolve.Guard's fallbacks and depth budget")
    return parser


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> Dict:
    for name in ("n_intervals", "substeps", "repeats"):
        if getattr(args, name) < 1:
            raise pitsolve.InputValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1.")
    if args.window is not None and not 1 <= args.window <= args.n_intervals:
        raise pitsolve.InputValueError(f"--window={args.window} must lie in 1..--n-intervals={args.n_intervals}.")
    if not (math.isfinite(args.t_end) and args.t_end > 0):
        raise pitsolve.InputValueError(f"--t-end={args.t_end} must be a finite number > 0, e.g. --t-end 2.")
    checks.tolerance(args.tol)
    checks.output_folder(args.out, "--out")
    dtype = DTYPES[args.dtype]
    guard = record.guard(args)
    system = build_system(args.n_intervals, args.substeps, dtype, args.t_end)
    N, K = system.num_intervals, system.steps_per_interval
    title = (
        f"Van der Pol (mu={MU}) on [0, {args.t_end}], y0={Y0}: N={N} intervals x K={K} RK4 steps\n"
        f"tol={args.tol:g}, window={args.window}, {args.dtype}{'' if guard else ', no guard'}"
    )
    print(title.replace("\n", ", "))

    pitsolve.sequential(system)  # warm-up
    ref = fastest(lambda: pitsolve.sequential(system), args.repeats)
    rows = [row("sequential", ref, ref, N * K)]
    for name in pitsolve.jacobians.REGISTRY:
        rows.append(run_strategy(system, ref, name, args.tol, args.window, args.repeats, guard))
    print(format_table(rows))
    for r in rows:
        if not r["converged"]:
            print(f"note: {r['strategy']} did not converge ({r['status']}); its row is the partial solve.")

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "convergence.png"
    plot(rows[1:], torch.finfo(dtype).eps / 10, png, title)
    settings = {"n_intervals": N, "substeps": K, "window": args.window, "t_end": args.t_end, "tol": args.tol,
                "dtype": args.dtype, "repeats": args.repeats, "guard": record.guard_setting(guard)}
    stats = finite_or_null({
        **record.header(record.command("solve", args, add_arguments), device="cpu", seed=None, settings=settings),
        "problem": {
            "name": "van_der_pol", "mu": MU, "y0": list(Y0), "t_end": args.t_end, "method": "rk4",
            "n_intervals": N, "substeps": K, "tol": args.tol, "window": args.window, "dtype": args.dtype,
            "repeats": args.repeats,
        },
        "rows": rows,
    })
    json_path = args.out / "stats.json"
    json_path.write_text(json.dumps(stats, indent=2, allow_nan=False))
    print(f"convergence plot: {png}")
    print(f"table as JSON:    {json_path}")
    return stats


if __name__ == "__main__":
    main()
