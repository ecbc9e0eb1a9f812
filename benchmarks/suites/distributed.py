"""Suite ``distributed``: time in communication vs in model calls per sweep, for 1, 2 and 4 torch.distributed ranks.

Each world size runs in its own gloo process group of local processes on
127.0.0.1 (one intra-op thread per rank); every rank solves the same problems
with :class:`pitsolve.distributed.DistributedExecutor` and reports its
executor's statistics: seconds in its own slice of the model calls, and
seconds in the exchanges (the ``all_gather`` of every sweep, including the wait
for the slowest rank).  A row ``local`` is the plain single-process solve.

    python -m benchmarks.run --suite distributed     # 1, 2, 4 ranks (alias: python benchmarks/distributed.py)
    python -m benchmarks.run --suite distributed --distributed-ranks 1 2 --repeats 3
    python -m benchmarks.run --suite distributed --quick   # 1 and 2 ranks, one repeat

Workloads: a neural ODE (an MLP vector field, N = 64 intervals of 8 RK4 steps,
identity strategy, window 64) and DDPM sampling with a small random UNet
(16×16, T = N = 50, batch 4, window 50).  The loop is the same on every rank, so
the iterations do not depend on the number of ranks.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from . import repeats as default_repeats

TITLE = "Distributed execution: communication vs model time per sweep"
RECORD_TABLES = False  # sections() shows the records in milliseconds, with min / mean / max over ranks


# -- workloads (the same on every rank) ---------------------------------------------------------------
class VectorField(torch.nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.Tanh(), torch.nn.Linear(hidden, dim))

    def forward(self, t, y):
        return -0.2 * y + 0.3 * self.net(y)


def neural_ode():
    import pitsolve

    torch.manual_seed(0)
    field = VectorField(32, 128).double()
    y0 = torch.linspace(-1, 1, 32, dtype=torch.float64)
    t = torch.linspace(0, 4, 65, dtype=torch.float64)
    system = pitsolve.ODESystem(field, y0, t, method="rk4", substeps=8)
    return lambda executor: pitsolve.solve(system, "identity", tol=1e-8, window=64, executor=executor)


def diffusion():
    import pitsolve
    from diffusers import DDPMScheduler, UNet2DModel

    from pitsolve.adapters.diffusers import parallel_sample

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    ).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000)

    def run(executor):
        _, sol = parallel_sample(unet, scheduler, num_inference_steps=50, shape=(4, 1, 16, 16), tol=1e-3,
                                 generator=torch.Generator().manual_seed(0), window=50, executor=executor)
        return sol

    return run


WORKLOADS = {"neural ODE (D=32, N=64, K=8)": neural_ode, "DDPM tiny UNet (16x16, batch 4, T=50)": diffusion}


# -- one rank -------------------------------------------------------------------------------------------
def rank_main(rank, world, port, repeats, out):
    torch.set_num_threads(1)
    import torch.distributed as dist

    import pitsolve
    import pitsolve.distributed

    if world:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))
    rows = {}
    for name, build in WORKLOADS.items():
        run = build()
        measured = []
        for r in range(repeats + 1):  # the first run warms up
            executor = pitsolve.distributed.DistributedExecutor(timeout=300) if world else pitsolve.LocalExecutor()
            if world:
                dist.barrier()
            t0 = time.perf_counter()
            with torch.no_grad():
                sol = run(executor)
            wall = time.perf_counter() - t0
            s = executor.stats
            phi = [rec for rec in s.records if rec[0] == "propagate"]
            if r:
                measured.append({
                    "wall": wall, "iterations": sol.iterations, "status": sol.status.name,
                    "model": sum(rec[2] for rec in phi), "comm": sum(rec[3] for rec in phi),
                    "rows": sum(rec[1] for rec in phi), "calls": len(phi),
                    "state_bytes": sol.ys[0].numel() * sol.ys[0].element_size() if isinstance(sol.ys, torch.Tensor)
                    else sum(p[0].numel() * p[0].element_size() for p in sol.ys),
                })
        if world:  # the bare all_gather of one sweep's bytes, no model calls in between: the transfer alone
            per_rank = 96 + -(-measured[0]["rows"] // measured[0]["calls"] // world) * measured[0]["state_bytes"]
            measured[0]["raw_gather_s"] = _raw_gather(dist, world, int(per_rank))
        rows[name] = measured
    if world:
        gathered = [None] * world
        dist.all_gather_object(gathered, rows)
        dist.destroy_process_group()
    else:
        gathered = [rows]
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))


def _raw_gather(dist, world, nbytes, calls=200):
    buf = torch.zeros(nbytes, dtype=torch.uint8)
    out = torch.empty(world * nbytes, dtype=torch.uint8)
    for _ in range(10):
        dist.all_gather_single(out, buf)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        dist.all_gather_single(out, buf)
    return (time.perf_counter() - t0) / calls


def run_world(world, repeats):
    """Per workload: per-rank lists of measured repeats (world 0: the local solve)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"distributed-{world}.json"
        procs = [ctx.Process(target=rank_main, args=(r, world, port, repeats, str(out)))
                 for r in range(max(world, 1))]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a rank of the {world}-rank run failed: exit codes {[p.exitcode for p in procs]}")
        return json.loads(out.read_text())


def summarise(world, gathered):
    rows = []
    for name in WORKLOADS:
        per_rank = [g[name] for g in gathered]
        reps = len(per_rank[0])
        iterations = per_rank[0][0]["iterations"]
        calls = per_rank[0][0]["calls"]

        def per_sweep(key, pick):
            # per repeat: pick over ranks of the rank's seconds per Φ exchange; then the median over repeats
            return statistics.median(pick(rk[i][key] / rk[i]["calls"] for rk in per_rank) for i in range(reps))

        model_max = per_sweep("model", max)
        comm_min, comm_max = per_sweep("comm", min), per_sweep("comm", max)
        comm_mean = per_sweep("comm", statistics.fmean)
        model_mean = per_sweep("model", statistics.fmean)
        wall = statistics.median(max(rk[i]["wall"] for rk in per_rank) for i in range(reps))
        rows_per_sweep = per_rank[0][0]["rows"] / calls
        state = per_rank[0][0]["state_bytes"]
        max_rows = -(-rows_per_sweep // max(world, 1))
        rows.append({
            "workload": name,
            "ranks": world if world else "local",
            "iterations": iterations,
            "status": per_rank[0][0]["status"],
            "window_rows_per_sweep": rows_per_sweep,
            "bytes_gathered_per_sweep": int(max(world, 1) * (96 + max_rows * state)) if world else 0,
            "model_s_per_sweep_slowest_rank": model_max,
            "model_s_per_sweep_mean_rank": model_mean,
            "comm_s_per_sweep_min_rank": comm_min,
            "comm_s_per_sweep_mean_rank": comm_mean,
            "comm_s_per_sweep_max_rank": comm_max,
            "comm_fraction_mean_rank": comm_mean / (comm_mean + model_mean) if comm_mean + model_mean else 0.0,
            "bare_all_gather_s": max(rk[0].get("raw_gather_s", 0.0) for rk in per_rank),
            "wall_s": wall,
            "repeats": reps,
        })
    return rows


def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite distributed")
    group.add_argument("--distributed-ranks", type=int, nargs="+", default=None, metavar="R",
                       help="world sizes (default 1 2 4; quick 1 2); a local single-process row is always added")


def run(args) -> List[dict]:
    ranks = args.distributed_ranks or ([1, 2] if args.quick else [1, 2, 4])
    repeats = default_repeats(args, full=3, quick=1)
    rows = []
    for world in [0, *ranks]:
        t0 = time.perf_counter()
        rows += summarise(world, run_world(world, repeats))
        print(f"{world or 'local'} rank(s): {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def sections(records: List[dict], args) -> List[tuple]:
    intro = (
        "- ranks: local processes in one gloo group on 127.0.0.1, one intra-op thread each; "
        "`local` is the plain single-process solve\n"
        "- per sweep = per exchange of Φ (one per iteration); median over "
        f"{records[0]['repeats']} repeats after one warm-up. *model*: seconds in the rank's own slice of the "
        "model calls (slowest rank); *comm*: seconds in the exchange, which includes waiting for the "
        "slowest rank (min / mean / max over ranks); *comm share*: comm / (comm + model), mean rank; "
        "*bare all_gather*: the same bytes gathered 200 times in a row with no model calls in between "
        "(the transfer alone, slowest rank)")
    lines = ["| workload | ranks | iterations | bytes gathered / sweep | model ms / sweep "
             "| comm ms / sweep (min / mean / max) | comm share | bare all_gather ms | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['workload']} | {r['ranks']} | {r['iterations']} | {r['bytes_gathered_per_sweep']:,} | "
            f"{1e3 * r['model_s_per_sweep_slowest_rank']:.2f} | "
            f"{1e3 * r['comm_s_per_sweep_min_rank']:.2f} / {1e3 * r['comm_s_per_sweep_mean_rank']:.2f} / "
            f"{1e3 * r['comm_s_per_sweep_max_rank']:.2f} | {100 * r['comm_fraction_mean_rank']:.0f}% | "
            f"{1e3 * r['bare_all_gather_s']:.2f} | {r['wall_s']:.3f} |"
        )
    note = (
        f"On this {os.cpu_count()}-core CPU the ranks share the cores with each other (and with other users of the "
        "machine), so more ranks than cores cannot speed the model calls up: the point of the record is the "
        "split of each sweep between model calls and communication, not the speed-up. Communication on one "
        "host is a memory copy through gloo's TCP loopback; the comm times above also absorb the ranks' "
        "imbalance (waiting for the slowest).")
    return [("", intro), ("Per sweep", "\n".join(lines)), ("Reading", note)]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the table is the record
