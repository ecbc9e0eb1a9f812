"""A neural-ODE solve spread over the ranks of ``torch.distributed``, checked against the sequential solve.

One process per device; each rank evaluates its slice of every sweep's window
and the slices are exchanged with ``all_gather`` (docs/distributed.md)::

    torchrun --nproc_per_node=2 examples/distributed_ode.py                      # CPU, gloo
    torchrun --nproc_per_node=4 examples/distributed_ode.py --backend nccl       # 4 GPUs, one per rank
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
             --rdzv-endpoint=HOST:29500 examples/distributed_ode.py --backend nccl  # 2 nodes × 8 GPUs

Every rank builds the same system: the vector field is a small MLP whose weights
come from the same seed on every rank (checked at the start of the solve).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import pitsolve
import pitsolve.distributed


class VectorField(torch.nn.Module):
    """``dy/dt = A y + MLP(y)``: a damped rotation with a learned-looking nonlinearity."""

    def __init__(self, dim: int = 8, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim))
        rot = torch.zeros(dim, dim)
        for i in range(0, dim - 1, 2):
            rot[i, i + 1], rot[i + 1, i] = 1.0, -1.0
        self.register_buffer("A", rot - 0.1 * torch.eye(dim))

    def forward(self, t, y):
        return y @ self.A.T + 0.5 * self.net(y)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    parser.add_argument("--n-intervals", type=int, default=64)
    parser.add_argument("--substeps", type=int, default=8)
    parser.add_argument("--jacobian", default="identity")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds an exchange may wait for the others")
    parser.add_argument("--progress", action="store_true", help="a progress bar on rank 0")
    args = parser.parse_args(argv)

    dist.init_process_group(args.backend)  # torchrun provides RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        torch.manual_seed(0)  # the same weights on every rank
        field = VectorField().to(device, torch.float64)
        y0 = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64, device=device)
        t = torch.linspace(0.0, 8.0, args.n_intervals + 1, dtype=torch.float64, device=device)
        system = pitsolve.ODESystem(field, y0, t, method="rk4", substeps=args.substeps)

        executor = pitsolve.distributed.DistributedExecutor(timeout=args.timeout)
        with torch.no_grad():
            solution = pitsolve.solve(system, args.jacobian, window=args.window, tol=args.tol, executor=executor,
                                      progress=args.progress)
            reference = pitsolve.sequential(system)
        stats = executor.stats
        result = {
            "rank": rank,
            "world_size": world,
            "status": solution.status.name,
            "iterations": solution.iterations,
            "max_error_vs_sequential": float((solution.ys - reference.ys).abs().max()),
            "model_seconds": stats.compute_time,
            "communication_seconds": stats.communication_time,
        }
        if rank == 0:
            print(f"{world} ranks ({args.backend}): {solution}")
            print(f"  max |parallel - sequential| = {result['max_error_vs_sequential']:.2e}")
            print(f"  rank 0: {stats.calls} exchanges, {stats.compute_time:.3f} s in model calls, "
                  f"{stats.communication_time:.3f} s exchanging")
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
