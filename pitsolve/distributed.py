"""Parallel-in-time solves across the ranks of ``torch.distributed`` (one process per GPU, any number of nodes).

Launch one process per device with ``torchrun``, initialise the process group,
build the *same* system on every rank (on that rank's device) and call
:func:`solve`: each sweep's window is split over the ranks, every rank
evaluates its slice, the slices are exchanged with ``all_gather``, and every
rank ends with the same :class:`~pitsolve.Solution`::

    # torchrun --nproc_per_node=2 examples/distributed_ode.py
    import torch, torch.distributed as dist, pitsolve, pitsolve.distributed

    dist.init_process_group("gloo")          # "nccl" with one GPU per rank
    system = pitsolve.ODESystem(f, y0, t)     # the same on every rank
    solution = pitsolve.distributed.solve(system, "identity", tol=1e-8, timeout=60)

See ``docs/distributed.md`` for several GPUs, several nodes, timeouts and failures.
"""

from __future__ import annotations

from typing import Optional

from ._distributed import DistributedExecutor
from ._errors import DistributedError, InputValueError, RankMismatchError
from ._solution import Solution
from ._solver import solve as _solve
from ._system import BandedSystem

__all__ = ["solve", "DistributedExecutor", "DistributedError", "RankMismatchError"]


def solve(
    system: BandedSystem,
    jacobian="identity",
    *,
    group=None,
    timeout: Optional[float] = None,
    **options,
) -> Solution:
    """:func:`pitsolve.solve` on every rank of an initialised process group, the window spread over the ranks.

    Every rank of ``group`` must call it with the same system (built alike
    on each rank, on that rank's device) and the same options; this is
    checked at the start and ranks that differ raise the same
    :class:`~pitsolve.RankMismatchError` naming the fields.  Every rank
    returns the same :class:`~pitsolve.Solution` (states, status,
    iterations); a non-converged solve raises the same
    :class:`~pitsolve.ConvergenceError` on every rank (or returns the same
    partial solution with ``throw=False``).  The progress bar shows on rank 0.

    Args:
        system, jacobian: as for :func:`pitsolve.solve`.
        group: the ``torch.distributed`` process group (``None``: the default one).
        timeout: seconds one exchange may wait for the other ranks; then
            every surviving rank raises a :class:`~pitsolve.DistributedError`
            naming the rank that died, froze or fell behind.  ``None``: the
            process group's own timeout.  A dead rank is usually reported at
            once (its connections close).
        **options: ``window``, ``tol``, ``max_iters``, ``init``,
            ``progress``, ``throw``, ``callback`` as for :func:`pitsolve.solve`.
    """
    for name in ("devices", "executor"):
        if name in options:
            raise InputValueError(
                f"pitsolve.distributed.solve takes no {name}=; each rank solves on the device its system "
                "lives on (one rank per device, as with DDP). Use pitsolve.solve(executor=DistributedExecutor(...)) "
                "to pass an executor."
            )
    return _solve(system, jacobian, executor=DistributedExecutor(group, timeout=timeout), **options)
