"""Train a neural ODE on a 2-D spiral twice, side by side: pitsolve's parallel solve and adjoint vs torchdiffeq's adjoint.

The problem of torchdiffeq's ``examples/ode_demo.py``: the data is the spiral
``dy/dt = y³ A`` with ``A = [[-0.1, 2], [-2, -0.1]]`` from ``y0 = (2, 0)``
sampled at ``--data-size`` times over ``[0, 25]``; the model
``dy/dt = W₂ tanh(W₁ y³ + b₁) + b₂`` (50 hidden units) is fitted on random
windows of ``--batch-time`` points from ``--batch-size`` starting points
with RMSprop and the mean absolute error, as there.

Both models start from the same weights and see the same batches (drawn
from a generator seeded by ``--seed``); each step differentiates the loss
with

* ``torchdiffeq.odeint_adjoint(..., method="rk4", options=dict(step_size=h))`` — the continuous
  adjoint ODE integrated backwards step after step;
* ``pitsolve.odeint_adjoint(..., method="rk4", substeps=K)`` on the same rk4 steps ``h`` — the
  forward solved by parallel sweeps, the discrete adjoint solved by parallel sweeps of batched
  vector–Jacobian products.

The two gradients differ by rk4's discretisation error (O(h⁴)), so the two
loss curves agree closely; the script prints both per iteration, the wall
time of each, the sequential depth of the pitsolve forward (sweeps) and
backward (waves of VJPs) against the N intervals a step-by-step pass takes,
and the peak bytes autograd holds for one step of each.  float64 throughout.

    python examples/neural_ode_spiral.py                  # 100 iterations, under a minute on 2 cores
    python examples/neural_ode_spiral.py --niters 1000 --batch-time 40
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torchdiffeq

import pitsolve

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the saved-bytes meter lives in benchmarks/ (a folder of the repository)
    sys.path.insert(0, str(ROOT))

from benchmarks.suites.adjoint import SavedBytes, SpiralField  # noqa: E402

F64 = torch.float64
TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)


def spiral(t, y):
    """The data's dynamics, ``dy/dt = y³ A``."""
    return (y**3) @ TRUE_A


def make_data(size: int):
    t = torch.linspace(0.0, 25.0, size, dtype=F64)
    with torch.no_grad():
        y = torchdiffeq.odeint(spiral, torch.tensor([[2.0, 0.0]], dtype=F64), t, method="dopri5", rtol=1e-10,
                               atol=1e-12)
    return t, y  # y: [size, 1, 2]


def batch(t, y, batch_time: int, batch_size: int, gen: torch.Generator):
    """``batch_size`` windows of ``batch_time`` points: starts ``[M, 1, 2]``, times ``[batch_time]``, targets."""
    starts = torch.randint(0, t.numel() - batch_time, (batch_size,), generator=gen)
    y0 = y[starts]
    ts = t[:batch_time]
    target = torch.stack([y[starts + i] for i in range(batch_time)])  # [batch_time, M, 1, 2]
    return y0, ts, target


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--niters", type=int, default=100, help="training iterations (default 100)")
    parser.add_argument("--data-size", type=int, default=1000, help="points of the spiral (default 1000)")
    parser.add_argument("--batch-time", type=int, default=20, help="points per window, N+1 (default 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per batch (default 16)")
    parser.add_argument("--substeps", type=int, default=2, help="rk4 steps per data interval K (default 2)")
    parser.add_argument("--tol", type=float, default=1e-8, help="tol of pitsolve's two solves (default 1e-8)")
    parser.add_argument("--adjoint-jacobian", default=None,
                        help="strategy of the adjoint solve (default: pitsolve's, 'dense' for states of at most "
                             "16 entries, else 'identity'; the state here is the batch, D = 2·batch-size)")
    parser.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the tensors are small, intra-op threads only cost)")
    parser.add_argument("--print-every", type=int, default=10, help="print every this many iterations (default 10)")
    args = parser.parse_args(argv)
    for name in ("niters", "data_size", "batch_size", "substeps", "threads", "print_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 2 <= args.batch_time < args.data_size:
        parser.error(f"--batch-time must be in [2, --data-size): got {args.batch_time}")

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return train(args)
    finally:
        torch.set_num_threads(threads)


def train(args) -> Dict:
    t, y = make_data(args.data_size)
    h = float(t[1] - t[0]) / args.substeps
    N = args.batch_time - 1
    theirs = SpiralField(seed=args.seed)
    ours = copy.deepcopy(theirs)  # the same initial weights
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), lr=args.lr)
    opt_ours = torch.optim.RMSprop(ours.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)

    def step_theirs(y0, ts, target):
        pred = torchdiffeq.odeint_adjoint(theirs, y0, ts, method="rk4", options=dict(step_size=h))
        loss = (pred - target).abs().mean()
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()
        return float(loss.detach())

    def step_ours(y0, ts, target, stats):
        pred = pitsolve.odeint_adjoint(ours, y0, ts, method="rk4", substeps=args.substeps, tol=args.tol, stats=stats,
                                       adjoint_jacobian=args.adjoint_jacobian)
        loss = (pred - target).abs().mean()
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()
        return float(loss.detach())

    losses = {"torchdiffeq": [], "pitsolve": []}
    wall = {"torchdiffeq": 0.0, "pitsolve": 0.0}
    saved = {}
    sweeps, waves = [], []
    print(f"N = {N} intervals of {args.substeps} rk4 steps (h = {h:.4g}), batch of {args.batch_size} windows, "
          f"state D = {2 * args.batch_size}")
    print(f"{'iter':>5} | {'torchdiffeq loss':>16} | {'pitsolve loss':>16} | {'|difference|':>12} | "
          f"{'fwd sweeps':>10} | {'bwd waves':>9}")
    for it in range(1, args.niters + 1):
        y0, ts, target = batch(t, y, args.batch_time, args.batch_size, gen)
        stats = pitsolve.AdjointStats()
        meters = {"torchdiffeq": SavedBytes(), "pitsolve": SavedBytes()} if it == 1 else None
        for name, run in (("torchdiffeq", lambda: step_theirs(y0, ts, target)),
                          ("pitsolve", lambda: step_ours(y0, ts, target, stats))):
            started = time.perf_counter()
            if meters is None:
                losses[name].append(run())
            else:
                with meters[name].hooks():
                    losses[name].append(run())
                saved[name] = meters[name].peak
            wall[name] += time.perf_counter() - started
        sweeps.append(stats.forward.iterations)
        waves.append(stats.backward_waves)
        if it % args.print_every == 0 or it == 1:
            a, b = losses["torchdiffeq"][-1], losses["pitsolve"][-1]
            print(f"{it:5d} | {a:16.10f} | {b:16.10f} | {abs(a - b):12.2e} | {sweeps[-1]:10d} | {waves[-1]:9d}")

    gap = max(abs(a - b) / abs(a) for a, b in zip(losses["torchdiffeq"], losses["pitsolve"]))
    summary = {
        "losses": losses,
        "largest_relative_loss_difference": gap,
        "wall_s": wall,
        "N": N,
        "forward_sweeps_median": statistics.median(sweeps),
        "backward_waves_median": statistics.median(waves),
        "saved_bytes_first_step": saved,
    }
    print(f"largest relative difference of the losses: {gap:.2e}")
    print(f"wall time: torchdiffeq {wall['torchdiffeq']:.1f} s, pitsolve {wall['pitsolve']:.1f} s "
          f"({args.niters} iterations, forward + backward + step)")
    print(f"sequential depth per step, in waves of one interval (N = {N}): torchdiffeq forward N, backward N; "
          f"pitsolve forward {summary['forward_sweeps_median']:g} sweeps, backward "
          f"{summary['backward_waves_median']:g} waves (medians)")
    print(f"peak bytes held by autograd, first step: torchdiffeq {saved['torchdiffeq'] / 1024:.1f} KiB, "
          f"pitsolve {saved['pitsolve'] / 1024:.1f} KiB")
    return summary


if __name__ == "__main__":
    main()
