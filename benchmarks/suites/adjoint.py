"""Suite ``adjoint``: the backward pass of a neural ODE three ways: the parallel adjoint, backprop through the
sequential solve, torchdiffeq's adjoint; sequential depth, saved memory and gradient agreement.

``python -m benchmarks.run --suite adjoint`` (alias ``python -m benchmarks.adjoint``) differentiates
``L = Σ_n ‖X_n‖²`` of a random neural ODE ``dy/dt = MLP(y³)`` (the spiral model of torchdiffeq's
ode_demo, float64, rk4 on a uniform grid of N intervals over ``[0, T]``) with respect to ``y0`` and the weights:

* ``backprop sequential`` — autograd through :func:`pitsolve.sequential` (discretise-then-optimise, the
  reference gradient; its backward runs the N intervals one after another);
* ``backprop solve`` — autograd through the parallel forward :func:`pitsolve.solve` (identity): the
  backward replays the sweeps, so its graph holds sweeps × window;
* ``pitsolve adjoint`` — :func:`pitsolve.odeint_adjoint` with each adjoint strategy and window;
* ``torchdiffeq adjoint`` — ``torchdiffeq.odeint_adjoint`` with the same rk4 steps (optimise-then-
  discretise: it integrates the adjoint ODE backwards, one step after another).

Measures (docs/design.md, "Measures"): ``waves`` — sequential waves of vector–Jacobian products in the
backward pass, one wave = one batched VJP through ``Φ_n`` (K rk4 steps); backprop through the sequential
solve and torchdiffeq's adjoint take N (torchdiffeq's N·K adjoint steps are N waves of K steps),
the parallel adjoint its sweeps and JVP waves plus its ⌈N/window⌉ parameter calls (independent of each
other).  The Jacobi sweep (``zero``) runs only up to N = 256: it needs about N waves.  ``saved`` — the peak bytes of tensors held by autograd over forward and backward, counted with
``torch.autograd.graph.saved_tensors_hooks`` (storages counted once while any tensor saved from them is
alive; torch.cuda is not available on this machine).  It does not count the N+1 trajectory states of the
result (``X``, and ``λ`` in the adjoint solve), which every method holds.  Gradient errors are relative to
the largest entry of the reference gradient.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import torch
import torchdiffeq

import pitsolve

from .. import _record

TITLE = "The parallel adjoint: backward depth, saved memory, gradients"
F64 = torch.float64
STRATEGIES = ("dense", "identity", "secant", "anderson", "zero")
#: The largest N at which the Jacobi sweep ("zero") is run: it takes about N waves (no contraction here).
ZERO_MAX_N = 256


class SavedBytes:
    """Peak bytes of the tensors autograd holds, through saved-tensor hooks (one count per storage)."""

    def __init__(self):
        self.live: Dict[int, List[int]] = {}
        self.current = 0
        self.peak = 0

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda handle: handle.tensor)

    def _pack(self, tensor: torch.Tensor) -> "_Held":
        return _Held(self, tensor)


class _Held:
    """One saved tensor; counts its storage while alive.  Holds a detached alias (no grad_fn: no reference cycle)."""

    def __init__(self, meter: SavedBytes, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        self.meter, self.tensor, self.key = meter, tensor.detach(), storage.data_ptr()
        entry = meter.live.setdefault(self.key, [0, storage.nbytes()])
        if entry[0] == 0:
            meter.current += entry[1]
            meter.peak = max(meter.peak, meter.current)
        entry[0] += 1

    def __del__(self):
        entry = self.meter.live[self.key]
        entry[0] -= 1
        if entry[0] == 0:
            self.meter.current -= entry[1]
            del self.meter.live[self.key]


class SpiralField(torch.nn.Module):
    """``dy/dt = W_2 tanh(W_1 y³ + b_1) + b_2`` (torchdiffeq's ode_demo model), weights from a seeded generator."""

    def __init__(self, dim: int = 2, hidden: int = 50, seed: int = 0):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim))
        gen = torch.Generator().manual_seed(seed)
        for m in self.net:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=0.1, generator=gen)
                torch.nn.init.zeros_(m.bias)
        self.double()

    def forward(self, t, y):
        return self.net(y**3)


def measure_one(run: Callable[[], torch.Tensor], params, y0) -> dict:
    """Forward and backward of ``L = Σ‖X_n‖²`` under the saved-bytes meter: gradients, peak bytes, wall time."""
    meter = SavedBytes()
    started = time.perf_counter()
    with meter.hooks():
        ys = run()
        grads = torch.autograd.grad(ys.pow(2).sum(), (y0, *params))
    return {"grads": grads, "saved": meter.peak, "wall_s": time.perf_counter() - started}


def measure(Ns, K: int, horizon: float, windows, strategies, tol: float, dim: int) -> List[dict]:
    field = SpiralField(dim=dim)
    params = tuple(field.parameters())
    y0 = torch.zeros(dim, dtype=F64)
    y0[0], y0[1 % dim] = 2.0, 0.0
    y0.requires_grad_(True)
    rows = []
    for N in Ns:
        t = torch.linspace(0.0, horizon, N + 1, dtype=F64)
        system = lambda: pitsolve.ODESystem(field, y0, t, method="rk4", substeps=K)  # noqa: E731
        ref = measure_one(lambda: pitsolve.sequential(system()).ys, params, y0)
        scale = max(float(g.abs().max()) for g in ref["grads"])

        def row(*args, **kwargs):
            return _row(f"N = {N}, K = {K}, D = {dim}", N, ref, scale, *args, **kwargs)

        rows.append(row("backprop sequential", "—", None, ref, N, N * K, N))
        td = measure_one(lambda: torchdiffeq.odeint_adjoint(field, y0, t, method="rk4",
                                                            options=dict(step_size=horizon / (N * K))), params, y0)
        rows.append(row("torchdiffeq adjoint", "—", None, td, N, N * K))
        box = {}

        def through_solve():
            solution = pitsolve.solve(system(), "identity", tol=tol)
            box["sweeps"] = solution.iterations
            return solution.ys

        bp = measure_one(through_solve, params, y0)
        rows.append(row("backprop solve", "identity", N, bp, box["sweeps"], box["sweeps"] * K, box["sweeps"]))
        for w in sorted({min(window, N) if window else N for window in windows}, reverse=True):
            w = None if w == N else w
            for strategy in strategies:
                if strategy == "zero" and N > ZERO_MAX_N:
                    continue  # N + 1 waves whatever the window (finite termination, no contraction): measured below
                stats = pitsolve.AdjointStats()
                res = measure_one(lambda: pitsolve.odeint_adjoint(
                    field, y0, t, method="rk4", substeps=K, tol=tol, window=w, adjoint_jacobian=strategy,
                    stats=stats), params, y0)
                depth = stats.backward.depth + stats.parameter_calls * K
                rows.append(row("pitsolve adjoint", strategy, w or N, res, stats.backward_waves, depth,
                                stats.forward.iterations))
                print(f"[adjoint] N={N} window={w or N} {strategy:9s} waves {stats.backward_waves:4d} "
                      f"saved {res['saved'] / 1024:8.1f} KiB error {rows[-1]['grad_error']:.1e}", flush=True)
    return rows


def _row(table: str, N: int, ref: dict, scale: float, method: str, strategy: str, window, result: dict, waves: int,
         depth: int, sweeps=None) -> dict:
    err = max(float((a - b).abs().max()) for a, b in zip(result["grads"], ref["grads"])) / scale
    return {"table": table, "method": method, "strategy": strategy, "window": window, "waves": waves,
            "depth": depth, "waves_ratio": N / waves, "saved_KiB": result["saved"] / 1024,
            "saved_ratio": result["saved"] / ref["saved"], "grad_error": err, "forward_sweeps": sweeps,
            "wall_s": result["wall_s"]}


def measure_adaptive(N: int, horizon: float, rtol: float, windows, strategies, tol: float,
                     method: str = "dopri5") -> List[dict]:
    """The spiral model with an adaptive method: every ``Φ_n`` picks its own steps (recomputed in the backward pass).

    ``depth`` counts step attempts (rows in lock-step: a wave's slowest row); torchdiffeq's adjoint runs its own
    adaptive solve of the adjoint ODE at the same ``rtol`` (``atol = rtol/100``), so its gradient differs by that
    solve's error.
    """
    field = SpiralField(dim=2)
    params = tuple(field.parameters())
    y0 = torch.tensor([2.0, 0.0], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, horizon, N + 1, dtype=F64)
    options = dict(method=method, rtol=rtol, atol=rtol / 100)
    system = pitsolve.ODESystem(field, y0, t, **options)
    ref = measure_one(lambda: pitsolve.sequential(system).ys, params, y0)
    steps = pitsolve.sequential(pitsolve.ODESystem(field, y0.detach(), t, **options)).depth
    scale = max(float(g.abs().max()) for g in ref["grads"])
    table = f"N = {N}, {method} (rtol {rtol:g}), D = 2"
    rows = [_row(table, N, ref, scale, "backprop sequential", "—", None, ref, N, steps, N)]
    td = measure_one(lambda: torchdiffeq.odeint_adjoint(field, y0, t, **options), params, y0)
    rows.append(_row(table, N, ref, scale, "torchdiffeq adjoint", "—", None, td, N, steps))
    for w in sorted({min(window, N) if window else N for window in windows}, reverse=True):
        for strategy in strategies:
            stats = pitsolve.AdjointStats()
            res = measure_one(lambda: pitsolve.odeint_adjoint(
                field, y0, t, tol=tol, window=None if w == N else w, adjoint_jacobian=strategy, stats=stats,
                **options), params, y0)
            rows.append(_row(table, N, ref, scale, "pitsolve adjoint", strategy, w, res, stats.backward_waves,
                             stats.backward.depth, stats.forward.iterations))
            print(f"[adjoint] {table} window={w} {strategy:9s} waves {stats.backward_waves:4d} "
                  f"error {rows[-1]['grad_error']:.1e}", flush=True)
    return rows


class WellSDE(torch.nn.Module):
    """``dY = θ (Y − Y³) dt + σ dW`` (the ode suite's double well with parameters θ, σ), diagonal Itô noise."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.sigma = torch.nn.Parameter(torch.tensor(0.5, dtype=F64))

    def f(self, t, y):
        return self.theta * (y - y**3)

    def g(self, t, y):
        return self.sigma * torch.ones_like(y)


def measure_sde(Ns, horizon: float, windows, strategies, tol: float) -> List[dict]:
    """The double-well SDE, 8 × 2 paths, Euler–Maruyama with one step per interval and a fixed ``BrownianInterval``.

    Backprop through :func:`pitsolve.sequential` (equal to backprop through ``torchsde.sdeint`` on the same
    ``bm``), torchsde's ``sdeint_adjoint`` (the continuous adjoint SDE, Euler, same ``bm`` and ``dt``), and
    :func:`pitsolve.sdeint_adjoint` (the discrete adjoint on the same increments).
    """
    import torchsde

    sde = WellSDE()
    params = tuple(sde.parameters())
    y0 = torch.linspace(-1.2, 1.2, 16, dtype=F64).reshape(8, 2).requires_grad_(True)
    rows = []
    for N in Ns:
        ts = torch.linspace(0.0, horizon, N + 1, dtype=F64)
        bm = torchsde.BrownianInterval(0.0, horizon, size=(8, 2), dtype=F64, entropy=0)
        dt = horizon / N
        ref = measure_one(lambda: pitsolve.sequential(pitsolve.SDESystem(sde, y0, ts, bm=bm)).ys, params, y0)
        scale = max(float(g.abs().max()) for g in ref["grads"])
        table = f"double-well SDE, N = {N}, Euler-Maruyama, 8 x 2 paths"
        rows.append(_row(table, N, ref, scale, "backprop sequential", "—", None, ref, N, N, N))
        ts_adj = measure_one(lambda: torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, dt=dt, method="euler"), params, y0)
        rows.append(_row(table, N, ref, scale, "torchsde adjoint", "—", None, ts_adj, N, N))
        for w in sorted({min(window, N) if window else N for window in windows}, reverse=True):
            for strategy in strategies:
                stats = pitsolve.AdjointStats()
                res = measure_one(lambda: pitsolve.sdeint_adjoint(
                    sde, y0, ts, bm, dt=dt, tol=tol, window=None if w == N else w, adjoint_jacobian=strategy,
                    stats=stats), params, y0)
                rows.append(_row(table, N, ref, scale, "pitsolve adjoint", strategy, w, res, stats.backward_waves,
                                 stats.backward.depth + stats.parameter_calls, stats.forward.iterations))
                print(f"[adjoint] {table} window={w} {strategy:9s} waves {stats.backward_waves:4d} "
                      f"saved {res['saved'] / 1024:8.1f} KiB error {rows[-1]['grad_error']:.1e}", flush=True)
    return rows


HEADERS = {"method": "method", "strategy": "adjoint strategy", "window": "window", "waves": "backward waves",
           "depth": "backward depth (steps)", "waves_ratio": "N / waves", "saved_KiB": "saved peak (KiB)",
           "saved_ratio": "saved / backprop seq", "grad_error": "grad error vs backprop seq",
           "forward_sweeps": "forward sweeps", "wall_s": "wall fwd+bwd (s)"}


def summary(rows: List[dict]) -> str:
    lines = []
    for table, group in _record.tables(rows).items():
        adj = [r for r in group if r["method"] == "pitsolve adjoint"]
        td = next(r for r in group if r["method"] in ("torchdiffeq adjoint", "torchsde adjoint"))
        best = min(adj, key=lambda r: (r["waves"], r["saved_KiB"]))
        lean = min(adj, key=lambda r: (r["saved_KiB"], r["waves"]))
        lines.append(
            f"- {table}: fewest waves {best['waves']} ({best['strategy']}, window {best['window']}: "
            f"{best['waves_ratio']:.1f}× fewer than backprop's N, saved peak {best['saved_ratio']:.2f}× backprop's); "
            f"least memory {lean['saved_KiB']:.0f} KiB ({lean['strategy']}, window {lean['window']}, "
            f"{lean['saved_ratio']:.2f}× backprop's, {lean['waves']} waves); {td['method'].split()[0]}'s adjoint "
            f"{td['saved_KiB']:.0f} KiB, {td['waves']} waves, gradient {td['grad_error']:.1e} from backprop's "
            "(its discretisation error: it solves the continuous adjoint).")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite adjoint")
    group.add_argument("--adjoint-intervals", type=int, nargs="+", default=None, metavar="N",
                       help="N (default 64 256 1024; quick 16)")
    group.add_argument("--adjoint-substeps", type=int, default=1, help="rk4 steps per interval K (default 1)")
    group.add_argument("--adjoint-horizon", type=float, default=10.0, help="T of the grid [0, T] (default 10)")
    group.add_argument("--adjoint-windows", type=int, nargs="+", default=[0, 64],
                       help="adjoint windows, 0 = N (default 0 64)")
    group.add_argument("--adjoint-strategies", nargs="+", default=None,
                       help=f"adjoint strategies (default {' '.join(STRATEGIES)}; quick dense identity)")
    group.add_argument("--adjoint-tol", type=float, default=1e-10, help="tol of both solves (default 1e-10)")
    group.add_argument("--adjoint-dim", type=int, default=2, help="state size D (default 2, the spiral)")
    group.add_argument("--adjoint-threads", type=int, default=1,
                       help="torch threads (default 1: the model's tensors are small; on 2 busy cores intra-op "
                            "threads made an elementwise op 100x slower)")


def run(args) -> List[dict]:
    quick = bool(getattr(args, "quick", False))
    Ns = args.adjoint_intervals or ([16] if quick else [64, 256, 1024])
    strategies = args.adjoint_strategies or (["dense", "identity"] if quick else list(STRATEGIES))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.adjoint_threads)
    try:
        return measure(Ns, args.adjoint_substeps, args.adjoint_horizon, args.adjoint_windows, strategies,
                       args.adjoint_tol, args.adjoint_dim)
    finally:
        torch.set_num_threads(threads)


def sections(records: List[dict], args) -> List[tuple]:
    return [("", __doc__.split("\n\n", 1)[1].strip()), ("Summary", summary(records))]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the tables are the record
