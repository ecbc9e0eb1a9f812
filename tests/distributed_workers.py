"""Rank programs for tests/test_distributed.py, run in spawned processes of a gloo group on 127.0.0.1.

Each scenario returns a dict that :func:`main` saves to ``<out>/rank<r>.pt``; errors a scenario
expects are caught and recorded (type, message, ranks, time), anything else is recorded as a crash.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import traceback
from pathlib import Path

import torch

DT = torch.float64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenario: str, world: int, out: Path, expect, wait: float = 150.0, **kwargs):
    """Run ``scenario`` on ``world`` forked ranks; return ``(results by file name, exit codes)``.

    Returns once every file in ``expect`` (e.g. ``"result0"``) is saved; processes still alive
    then (a hung rank) or after ``wait`` seconds are killed.  Ranks start from a fork server that
    has imported torch, diffusers and pitsolve once (a clean interpreter that has run no
    PyTorch op, so forking it is safe), which saves each rank the import time of ``spawn``.
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["distributed_workers", "pitsolve.adapters.diffusers", "diffusion_models"])
    port = free_port()
    procs = [
        ctx.Process(target=main, args=(scenario, r, world, port, str(out), kwargs), daemon=True) for r in range(world)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(p.is_alive() for p in procs):
        if all((out / f"{name}.pt").exists() for name in expect):
            break
        time.sleep(0.1)
    grace = time.monotonic() + 5.0
    for p in procs:
        p.join(max(0.0, grace - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)
    results = {path.stem: torch.load(path, weights_only=False) for path in sorted(out.glob("*.pt"))}
    return results, [p.exitcode for p in procs]


def main(scenario, rank, world, port, out, kwargs):
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )

    def save(name, value):
        tmp = Path(out) / f"{name}{rank}.tmp"
        torch.save(value, tmp)
        tmp.rename(Path(out) / f"{name}{rank}.pt")

    try:
        broken = SCENARIOS[scenario](rank, world, Path(out), save, **kwargs)
    except BaseException:  # noqa: BLE001 - recorded for the test to show
        save("crash", traceback.format_exc())
        os._exit(1)
    if not broken:  # a broken group cannot be torn down before its pending collective times out
        dist.barrier()
        dist.destroy_process_group()
    elif rank == 0:  # rank 0 hosts the store (tcp://): stay until the other survivors are done with it
        deadline = time.monotonic() + 30
        survivors = [r for r in range(1, world - 1)]
        while time.monotonic() < deadline and not all((Path(out) / f"failure{r}.pt").exists() for r in survivors):
            time.sleep(0.1)
    os._exit(0)  # skip the interpreter's slow teardown


# -- problems (the same on every rank and in the test process) ----------------------------------------
def vdp_func(t, y):
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def ode_system(n=24):
    import pitsolve

    y0 = torch.tensor([2.0, 0.0], dtype=DT)
    return pitsolve.ODESystem(vdp_func, y0, torch.linspace(0, 6, n + 1, dtype=DT), substeps=4)


class OU(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return 0.7 * (0.3 - y)

    def g(self, t, y):
        return 0.5 * torch.ones_like(y)


def sde_system(n=20):
    import pitsolve

    y0 = torch.tensor([[1.0, -1.0], [0.5, 0.2]], dtype=DT)
    return pitsolve.SDESystem(OU(), y0, torch.linspace(0, 2, n + 1, dtype=DT), substeps=4, seed=3)


#: (problem, jacobian, window) solved in every equivalence run.
CASES = [("ode", "identity", 7), ("ode", "dense", 5), ("sde", "identity", None), ("sde", "parareal", 6)]
SAMPLE = dict(num_inference_steps=10, shape=(2, 1, 8, 8), intervals=10, tol=1e-8, window=6)


def sample_args():
    from diffusers import DDPMScheduler

    from diffusion_models import tiny_unet

    return tiny_unet(), DDPMScheduler(num_train_timesteps=1000)


def single_process_results():
    """The reference: the same cases solved by pitsolve.solve in one process."""
    import pitsolve
    from pitsolve.adapters.diffusers import parallel_sample

    out = {}
    for problem, jacobian, window in CASES:
        system = ode_system() if problem == "ode" else sde_system()
        sol = pitsolve.solve(system, jacobian, tol=1e-10, window=window)
        out[(problem, jacobian)] = (sol.ys, sol.iterations, sol.status.name)
    unet, scheduler = sample_args()
    _, sol = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(5), **SAMPLE)
    out[("diffusion", "identity")] = (sol.ys, sol.iterations, sol.status.name)
    return out


# -- scenarios -------------------------------------------------------------------------------------
def equivalence(rank, world, out, save, extras=False, fault=None, timeout=None):
    """The cases of :data:`CASES` and a diffusion sample; then the extras; then a rank fails (``fault``)."""
    import pitsolve
    import pitsolve.distributed
    from pitsolve.adapters.diffusers import parallel_sample

    result = {"solutions": {}, "stats": {}}
    for problem, jacobian, window in CASES:
        system = ode_system() if problem == "ode" else sde_system()
        executor = pitsolve.distributed.DistributedExecutor(timeout=60)
        sol = pitsolve.solve(system, jacobian, tol=1e-10, window=window, executor=executor)
        result["solutions"][(problem, jacobian)] = (sol.ys, sol.iterations, sol.status.name)
        result["stats"][(problem, jacobian)] = (executor.stats.calls, executor.stats.rows)
    unet, scheduler = sample_args()
    executor = pitsolve.distributed.DistributedExecutor(timeout=60)
    _, sol = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(5), executor=executor, **SAMPLE)
    result["solutions"][("diffusion", "identity")] = (sol.ys, sol.iterations, sol.status.name)
    if extras:
        result.update(_extras(rank, world))
    save("result", result)
    if fault is None:
        return False
    # Last: the last rank exits or hangs in its third Φ; the others record how they fail.
    system = Faulty(ode_system(), rank=rank, fault_rank=world - 1, call=3, action=fault, out=out)
    found = _caught(lambda: pitsolve.distributed.solve(system, "identity", tol=1e-10, window=8, timeout=timeout))
    found["time"] = time.time()
    save("failure", found)
    return True


def _caught(fn):
    t0 = time.monotonic()
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001 - the scenario's expected error
        return {"type": type(err).__name__, "message": str(err), "ranks": getattr(err, "ranks", None),
                "seconds": time.monotonic() - t0, "cause": type(err.__cause__).__name__}
    return {"type": None, "value": value, "seconds": time.monotonic() - t0}


def _extras(rank, world):
    """Mismatch, a rank's own exception and non-convergence, in the same (still usable) group."""
    import pitsolve
    import pitsolve.distributed

    found = {}
    system = ode_system()
    found["mismatch_tol"] = _caught(
        lambda: pitsolve.distributed.solve(system, "identity", tol=1e-10 if rank == 0 else 1e-9, timeout=30)
    )
    y0 = torch.tensor([2.0, 0.0 if rank != world - 1 else 0.5], dtype=DT)
    other = pitsolve.ODESystem(vdp_func, y0, torch.linspace(0, 6, 25, dtype=DT), substeps=4)
    found["mismatch_state"] = _caught(lambda: pitsolve.distributed.solve(other, "identity", tol=1e-10, timeout=30))
    faulty = Faulty(ode_system(), rank=rank, fault_rank=world - 1, call=2, action="raise")
    found["remote_error"] = _caught(lambda: pitsolve.distributed.solve(faulty, "identity", tol=1e-10, timeout=30))
    found["not_converged"] = _caught(
        lambda: _summary(pitsolve.distributed.solve(ode_system(), "identity", tol=1e-10, max_iters=2, throw=False))
    )
    found["not_converged_throw"] = _caught(lambda: pitsolve.distributed.solve(ode_system(), "zero", max_iters=3))
    found["after_errors"] = _caught(lambda: _summary(pitsolve.distributed.solve(ode_system(), "identity", tol=1e-10)))
    found["roundoff"] = _caught(lambda: _roundoff_split(rank))
    return found


def _roundoff_split(rank):
    """Ranks whose trajectories differ in the last bits end with rank 0's (and a warning)."""
    import warnings

    import pitsolve._distributed as impl
    import pitsolve.distributed

    checksum = impl._checksum
    impl._checksum = lambda ys: rank  # pretend the ranks' hardware rounded differently
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sol = pitsolve.distributed.solve(ode_system(), "identity", tol=1e-10)
    finally:
        impl._checksum = checksum
    return [str(w.message) for w in caught], sol.ys


def _summary(sol):
    return (sol.status.name, sol.message, sol.iterations, sol.ys)


class Faulty:
    """Wraps a system; on rank ``fault_rank`` its ``call``-th propagate raises, exits or hangs."""

    def __new__(cls, inner, rank, fault_rank, call, action, out=None):
        import pitsolve

        class _Faulty(pitsolve.BandedSystem):
            def __init__(self):
                self.inner, self.calls = inner, 0

            initial_state = property(lambda self: self.inner.initial_state)
            num_intervals = property(lambda self: self.inner.num_intervals)
            spec = property(lambda self: self.inner.spec)
            steps_per_interval = property(lambda self: self.inner.steps_per_interval)

            def propagate(self, states, indices):
                self.calls += 1
                if rank == fault_rank and self.calls == call:
                    if action == "raise":
                        raise pitsolve.NonFiniteError("the model returned NaN (injected on one rank)")
                    if out is not None:
                        (out / "fault_time").write_text(repr(time.time()))
                    if action == "exit":
                        os._exit(7)
                    time.sleep(600)  # "hang": alive but never answers
                return self.inner.propagate(states, indices)

        return _Faulty()


SCENARIOS = {"equivalence": equivalence}
