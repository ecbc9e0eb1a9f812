"""``pitsolve solve``: every Jacobian strategy of pitsolve on one nonlinear ODE, beside the sequential solve.

The ODE ``y' = f(t, y)``, ``y(t0) = y0`` on ``[t0, t_end]`` (``--t0``,
``--t-end``, default [0, 2]) is a built-in example (``--example``, default
``vanderpol``: the Van der Pol oscillator with μ = 1,

    x' = v,    v' = μ (1 − x²) v − x,    (x, v)(0) = (2, 0);

``lotka-volterra``: the predator–prey equations) or the user's own function
(``--func module:f`` or ``--func path/to/file.py:f`` with ``--y0``;
:mod:`.problems`).  It is cut into N intervals of K steps of ``--method``
(default: classical RK4) each (``pitsolve.ODESystem``).  The sequential
solve ``X_{n+1} = Φ_n(X_n)`` is the reference; each strategy of
``pitsolve.jacobians.REGISTRY`` (or the one ``--jacobian`` names) then
solves the same banded system by parallel sweeps and must reproduce it to
within ``tol``.

Printed: one row per strategy with its iterations (parallel sweeps), depth
(fine steps on the critical path), NFE (all fine steps, also as a multiple of
the sequential N·K), the largest absolute difference from the sequential
trajectory, and the wall time of the solve, also relative to the sequential
one.  Every solve is timed after an untimed warm-up run, in this process,
as the fastest of ``--repeats`` identical runs.
On a CPU the batched sweep is not spread over devices, so the wall-time
ratio measures overheads as much as parallelism; depth is the figure that
bounds the speed-up on parallel hardware (docs/design.md, "Measures").

Saved in ``--output``: ``stats.json`` (the header of :mod:`.record`: the command
line, versions, threads and settings; then the table, plus the error after
every iteration and what the divergence guard did) and ``convergence.png``:
for each strategy, the largest error
over the trajectory of the iterate ``solve`` returns after k iterations
(``solve(..., max_iters=k, throw=False)`` re-run for every k), on a log axis;
exact zeros are drawn at ε/10 of the dtype, and errors above 1e6 or not
finite (iterates that diverged far ahead of the accepted front, before the
solver re-initialised them) at 1e6.  In stats.json they are ``null``.

    pitsolve solve --output outputs/solve          (or: python examples/ode_demo.py)
    pitsolve solve --func path/to/ode.py:f --y0 1,0 --t-end 5 --method dopri5
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import pitsolve

from . import checks, options, record
from .problems import EXAMPLES, MU, Y0_FILES, Problem, resolve, van_der_pol, y0_record

__all__ = ["add_arguments", "run", "main", "build_system", "format_table", "van_der_pol", "MU", "Y0", "T_END"]

Y0 = EXAMPLES["vanderpol"].y0
T0, T_END = 0.0, 2.0
#: Fine steps per interval when --substeps is not given (adaptive methods choose their own steps: 1 interval step).
SUBSTEPS = 2
CEILING = 1e6  # errors above it (diverged iterates far ahead of the front) are drawn at it
DTYPES = options.DTYPES
METHODS = pitsolve.FIXED_GRID_METHODS + pitsolve.MULTISTEP_METHODS + pitsolve.ADAPTIVE_METHODS
COLUMNS = ("strategy", "iters", "depth", "NFE", "NFE/(N*K)", "max|err| vs seq", "wall [s]", "wall/seq", "guard")


class _Default(str):
    """A default that argparse tells apart from the same value typed on the command line (it compares defaults
    by identity), so that an explicit ``--example vanderpol`` together with ``--func`` is refused."""


DEFAULT_EXAMPLE = _Default("vanderpol")


def build_system(n_intervals: int, substeps: int, dtype: torch.dtype, t_end: float = T_END, *,
                 problem: Optional[Problem] = None, t0: float = T0, method: str = "rk4",
                 device: str = "cpu") -> pitsolve.ODESystem:
    """``problem`` (default: Van der Pol from (2, 0)) on N = ``n_intervals`` equal intervals of ``[t0, t_end]``."""
    if problem is None:
        problem = resolve("vanderpol", None, None, t0, dtype, device)
    t = torch.linspace(t0, t_end, n_intervals + 1, dtype=dtype, device=device)
    return pitsolve.ODESystem(problem.func, problem.y0, t, method=method, substeps=substeps)


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


def run_strategy(system, ref, name: str, tol: float, window: Union[None, int, str], repeats: int,
                 guard: Union[bool, pitsolve.Guard] = True, stopping: str = "error") -> Dict:
    """The timed solve and the error of the iterate after k = 1 … iterations sweeps."""
    kwargs = dict(tol=tol, window=window, throw=False, guard=guard, stopping=stopping)
    # k = 1 and 2 first: they also warm up every code path of the timed solve.
    runs = {k: pitsolve.solve(system, name, max_iters=k, **kwargs) for k in (1, 2)}
    sol = fastest(lambda: pitsolve.solve(system, name, **kwargs), repeats)
    runs[sol.iterations] = sol
    errors = [
        max_error(runs[k] if k in runs else pitsolve.solve(system, name, max_iters=k, **kwargs), ref)
        for k in range(1, sol.iterations + 1)
    ]
    fine_steps = system.num_intervals * system.steps_per_interval
    chosen = sol.tuning["window"] if sol.tuning is not None else window
    return dict(row(name, sol, ref, fine_steps), window_chosen=chosen, error_per_iteration=errors)


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
    """The convergence figure, drawn on its own Agg canvas (no pyplot, so the process's backend is untouched)."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
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
    """The options of ``pitsolve solve`` (and ``examples/ode_demo.py``): the problem, then the shared vocabulary."""
    problem = parser.add_argument_group("the ODE (a built-in example, or your f(t, y) with --y0)")
    which = problem.add_mutually_exclusive_group()
    which.add_argument("--example", choices=tuple(EXAMPLES), default=DEFAULT_EXAMPLE,
                       help=f"a built-in ODE (default: {DEFAULT_EXAMPLE})")
    which.add_argument("--func", metavar="MODULE:F", default=None,
                       help="your f(t, y) -> dy/dt as for torchdiffeq.odeint: MODULE:FUNCTION (the current folder "
                            "is searched first) or path/to/file.py:FUNCTION; needs --y0")
    problem.add_argument("--y0", metavar="Y0", default=None,
                         help="the initial state: comma-separated numbers (e.g. 2,0) or a .pt/.npy file holding a "
                              "tensor; cast to --dtype (default: the example's)")
    problem.add_argument("--t0", type=float, default=T0, help=f"start of the time span (default: {T0:g})")
    problem.add_argument("--t-end", type=float, default=T_END, help=f"end of the time span (default: {T_END:g})")
    problem.add_argument("--method", choices=METHODS, default="rk4", metavar="METHOD",
                         help="the fine solver of each interval, any method of pitsolve.odeint: "
                              + ", ".join(METHODS) + " (default: rk4)")
    problem.add_argument("--substeps", type=int, default=None, metavar="K",
                         help=f"K, fine steps per interval (default: {SUBSTEPS}; 1 for the adaptive methods, "
                              "which choose their own steps)")
    options.add(parser, "intervals", 64)
    options.add(parser, "window", 0, shown="0 = all N")
    options.add(parser, "tol", 1e-8)
    options.add(parser, "stopping", "error")
    options.add(parser, "jacobian", "all", shown="all, one row each",
                choices=("all", *sorted(pitsolve.jacobians.REGISTRY)))
    options.add(parser, "guard")
    options.add(parser, "device", "cpu")
    options.add(parser, "dtype", "float64")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per solve; the fastest is reported "
                                                               "(default: 3)")
    options.add(parser, "output", Path("outputs/demo"))
    return parser


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    return run(parse_args(argv))


def _check(args: argparse.Namespace) -> int:
    """Check the options that argparse cannot; return K, the fine steps per interval."""
    for name in ("intervals", "repeats"):
        if getattr(args, name) < 1:
            raise pitsolve.InputValueError(f"--{name}={getattr(args, name)} must be >= 1.")
    adaptive = args.method in pitsolve.ADAPTIVE_METHODS
    if args.substeps is not None and args.substeps < 1:
        raise pitsolve.InputValueError(f"--substeps={args.substeps} must be >= 1.")
    if adaptive and args.substeps not in (None, 1):
        raise pitsolve.InputValueError(
            f"--substeps={args.substeps} with --method {args.method}: an adaptive method chooses its own steps; "
            "leave --substeps out, or pick a fixed-grid method such as --method rk4."
        )
    options.check_window(args.window)
    for flag, value in (("--t0", args.t0), ("--t-end", args.t_end)):
        if not math.isfinite(value):
            raise pitsolve.InputValueError(f"{flag}={value} must be a finite number, e.g. {flag} 2.")
    if args.t_end == args.t0:
        raise pitsolve.InputValueError(
            f"--t-end={args.t_end} equals --t0={args.t0}: an empty time span; pass another --t-end, e.g. --t-end 2."
        )
    checks.tolerance(args.tol)
    checks.device(args.device)
    checks.output_folder(args.output, "--output")
    return 1 if adaptive else (args.substeps or SUBSTEPS)


def _absolute(value: Optional[str], kind: str) -> Optional[str]:
    """``--func``/``--y0`` as recorded: a file path made absolute, so the command runs from any folder."""
    if value is None:
        return None
    if kind == "func":
        where, _, name = value.rpartition(":")
        is_file = where.endswith(".py") or "/" in where or os.sep in where
        return f"{os.path.abspath(where)}:{name}" if is_file else value
    return os.path.abspath(value) if value.strip().lower().endswith(Y0_FILES) else value


def run(args: argparse.Namespace) -> Dict:
    K = _check(args)
    dtype = DTYPES[args.dtype]
    guard = record.guard(args)
    problem = resolve(args.example, args.func, args.y0, args.t0, dtype, args.device)
    system = build_system(args.intervals, K, dtype, args.t_end, problem=problem, t0=args.t0, method=args.method,
                          device=args.device)
    N = system.num_intervals
    window = options.resolve_window(args.window, N)
    steps = (f"{args.method} with its own step control" if args.method in pitsolve.ADAPTIVE_METHODS
             else f"K={K} {args.method} steps")
    title = (
        f"{problem.label} on [{args.t0:g}, {args.t_end:g}], y0={problem.shown_y0()}: N={N} intervals x {steps}\n"
        f"tol={args.tol:g}, stopping={args.stopping}, window={window or 'all N'}, {args.dtype}, {args.device}"
        f"{'' if guard else ', no guard'}"
    )
    print(title.replace("\n", ", "))

    pitsolve.sequential(system)  # warm-up
    ref = fastest(lambda: pitsolve.sequential(system), args.repeats)
    rows = [row("sequential", ref, ref, N * system.steps_per_interval)]
    names = list(pitsolve.jacobians.REGISTRY) if args.jacobian == "all" else [args.jacobian]
    for name in names:
        rows.append(run_strategy(system, ref, name, args.tol, window, args.repeats, guard, args.stopping))
    print(format_table(rows))
    for r in rows:
        if not r["converged"]:
            print(f"note: {r['strategy']} did not converge ({r['status']}); its row is the partial solve.")

    args.output.mkdir(parents=True, exist_ok=True)
    png = args.output / "convergence.png"
    plot(rows[1:], torch.finfo(dtype).eps / 10, png, title)
    func, y0 = _absolute(args.func, "func"), _absolute(args.y0, "y0")
    example = None if args.func else str(args.example)
    settings = {"example": example, "func": func, "y0": y0, "t0": args.t0, "t_end": args.t_end,
                "method": args.method, "intervals": N, "substeps": K, "window": window, "tol": args.tol,
                "stopping": args.stopping, "jacobian": args.jacobian, "dtype": args.dtype, "device": args.device,
                "repeats": args.repeats, "guard": record.guard_setting(guard)}
    command = record.command("solve", args, add_arguments, example=example, func=func, y0=y0)
    stats = finite_or_null({
        **record.header(command, device=args.device, seed=None, settings=settings),
        "problem": {
            **problem.record, **y0_record(problem.y0), "t0": args.t0, "t_end": args.t_end, "method": args.method,
            "n_intervals": N, "substeps": K, "tol": args.tol, "stopping": args.stopping, "window": window,
            "dtype": args.dtype, "repeats": args.repeats,
        },
        "rows": rows,
    })
    json_path = args.output / "stats.json"
    json_path.write_text(json.dumps(stats, indent=2, allow_nan=False))
    print(f"convergence plot: {png}")
    print(f"table as JSON:    {json_path}")
    return stats


if __name__ == "__main__":
    main()
