"""Executors: how the batched calls of a sweep are spread over hardware (docs/design.md, "Architecture").

Every sweep evaluates ``Φ_n(X_n^k)`` for all points of the window at once
(paper Algorithm 1, line 4): independent calls, the parallel part of the
method.  An :class:`Executor` decides where they run:

=============================  ====================================================
executor                       where the rows of one batched call run
=============================  ====================================================
:class:`LocalExecutor`         in one call, where the system lives (the default)
:class:`MultiDeviceExecutor`   split into contiguous slices over replicas of the
                               system on several devices of this process, one
                               thread per device, gathered on the first device
``DistributedExecutor``        split over the ranks of a ``torch.distributed``
(:mod:`pitsolve.distributed`)  process group and exchanged with ``all_gather``
=============================  ====================================================

The loop itself (update, stopping rule, window slide) runs unchanged in one
place — the first device, or every rank alike — so the answer is the one of
the local solve.  Besides ``Φ``, the strategies' batched Jacobian-vector
products (``"diagonal"``, ``"dense"``) and batched coarse calls
(``"parareal"``) are routed the same way; one-row calls (sequential sweeps,
initialisers) run where the loop runs.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ._devices import as_device
from ._errors import InputTypeError, InputValueError
from ._system import BandedSystem

__all__ = [
    "Executor",
    "LocalExecutor",
    "MultiDeviceExecutor",
    "ExecutionStats",
    "Call",
    "split_sizes",
    "resolve",
]

#: Forward-mode AD levels are global to the process in PyTorch, so the JVPs of
#: several device threads take turns (Φ and coarse calls run concurrently).
_FORWARD_AD = threading.Lock()


class Call(enum.Enum):
    """The batched calls an executor spreads; the value names them in messages."""

    PROPAGATE = "Φ"
    COARSE = "coarse G"
    JVP = "JVP"


def split_sizes(total: int, parts: int) -> List[int]:
    """Contiguous slice sizes of ``total`` rows over ``parts`` workers, the first ones one larger.

    ``split_sizes(5, 3) == [2, 2, 1]``; ``split_sizes(2, 3) == [1, 1, 0]``.
    """
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def evaluate(system: BandedSystem, call: Call, x: torch.Tensor, indices: torch.Tensor, tangents=None) -> torch.Tensor:
    """One slice of a batched call on one system, as flat rows ``[b, W]`` (a JVP: ``[Φ(x), J v]`` side by side)."""
    if call is Call.PROPAGATE:
        return system.propagate_flat(x, indices)
    if call is Call.COARSE:
        return system.coarse_flat(x, indices)
    y, jv = system.jvp_flat(x, indices, tangents)
    return torch.cat([y, jv], dim=1)


@dataclass
class ExecutionStats:
    """Where the time of the routed calls of the last solve went (seconds, this process).

    Attributes:
        calls: batched calls routed through the executor (Φ once per sweep,
            plus the strategies' batched JVP and coarse calls).
        rows: rows evaluated by this process (its slices).
        compute_time: time in the system's own calls (model calls) of this
            process; with several devices, the slowest device per call.
        communication_time: time moving inputs and results between devices
            or ranks, including waiting for the slowest one.
        records: per routed call ``(call, rows in the batch, compute s, communication s)``.
    """

    calls: int = 0
    rows: int = 0
    compute_time: float = 0.0
    communication_time: float = 0.0
    records: List[Tuple[str, int, float, float]] = field(default_factory=list)

    def add(self, call: Call, rows: int, mine: int, compute: float, communication: float) -> None:
        self.calls += 1
        self.rows += mine
        self.compute_time += compute
        self.communication_time += communication
        self.records.append((call.name.lower(), rows, compute, communication))


class Executor(abc.ABC):
    """Spreads the batched calls of a sweep; one instance serves one solve at a time.

    The solve loop calls :meth:`start` once (it returns the system the loop
    runs on), :meth:`propagate` once per sweep, :meth:`jvp`/:meth:`coarse` for
    the strategies' batched calls, :meth:`finish` on the result and
    :meth:`close` at the end, also on errors.  Statistics of the last solve
    are in :attr:`stats`.
    """

    #: A short name for messages and records.
    name: str = ""

    def __init__(self) -> None:
        self.stats = ExecutionStats()

    @property
    def leader(self) -> bool:
        """Whether this process reports (progress bars); ``False`` on all ranks but the first."""
        return True

    def start(self, system: BandedSystem, settings: Dict[str, str]) -> BandedSystem:
        """Prepare for a solve of ``system`` with the solve's ``settings``; return the system the loop uses."""
        self.stats = ExecutionStats()
        return system

    def finish(self, solution):
        """The solve's result, once every worker agrees on it."""
        return solution

    def close(self) -> None:
        """Release what :meth:`start` acquired (threads, heartbeats); called also after errors."""

    def route(self, system: BandedSystem):
        """The system the strategies see: its batched calls go through this executor."""
        return _RoutedSystem(system, self)

    def propagate(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``Φ_{indices[b]}(x[b])`` for flat states ``x [B, D]``."""
        return self.run(Call.PROPAGATE, x, indices)

    def coarse(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``G_{indices[b]}(x[b])``."""
        return self.run(Call.COARSE, x, indices)

    def jvp(self, x: torch.Tensor, indices: torch.Tensor, tangents: torch.Tensor):
        """``(Φ(x), J v)`` row by row."""
        out = self.run(Call.JVP, x, indices, tangents)
        D = x.shape[1]
        return out[:, :D], out[:, D:]

    @abc.abstractmethod
    def run(self, call: Call, x: torch.Tensor, indices: torch.Tensor, tangents: Optional[torch.Tensor] = None):
        """The rows ``[B, W]`` of one batched ``call`` (see :func:`evaluate`), wherever they are computed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LocalExecutor(Executor):
    """Every call in one batch, where the system lives (``solve(devices=None)``)."""

    name = "local"

    def start(self, system, settings):
        super().start(system, settings)
        self._system = system
        return system

    def route(self, system):
        return system  # nothing to route: strategies call the system directly

    def run(self, call, x, indices, tangents=None):
        t0 = time.perf_counter()
        out = evaluate(self._system, call, x, indices, tangents)
        self.stats.add(call, x.shape[0], x.shape[0], time.perf_counter() - t0, 0.0)
        return out


class MultiDeviceExecutor(Executor):
    r"""Several devices in one process: ``solve(..., devices=["cuda:0", "cuda:1", …])``.

    At the start the system is replicated once per device with
    :meth:`~pitsolve.BandedSystem.to` (modules already on a device are
    shared there, others copied; the caller's system is not modified).  Each
    batched call is split into contiguous slices (sizes differ by at most one;
    devices beyond the batch size stay idle), the slices run concurrently,
    one thread per device (PyTorch releases the GIL inside its ops; each CUDA
    device works on its own current stream), and the results are gathered on
    the first device, where the loop state stays.  Grad and inference mode of
    the calling thread carry over to the device threads.  Forward-mode AD is
    process-global in PyTorch, so the strategies' batched JVPs take turns
    over the devices; ``Φ`` and coarse calls overlap.

    Args:
        devices: the devices, in order; the first one holds the loop.  The
            same device may appear more than once (e.g. ``["cpu", "cpu"]``).
    """

    name = "devices"

    def __init__(self, devices: Sequence):
        super().__init__()
        if isinstance(devices, (str, int, torch.device)):
            devices = [devices]
        try:
            devices = list(devices)
        except TypeError:
            raise InputTypeError(
                f"devices is a {type(devices).__name__}; pass a list such as ['cuda:0', 'cuda:1']."
            ) from None
        if not devices:
            raise InputValueError("devices is empty; pass at least one device, e.g. ['cuda:0'], or devices=None.")
        self.devices = [as_device(d) for d in devices]
        for d in self.devices:
            if d.type == "meta":
                raise InputValueError(
                    f"device {d} in devices={[str(e) for e in self.devices]} holds no values (the meta device "
                    "only tracks shapes); pass real devices such as 'cpu' or 'cuda:0', or devices=None."
                )
            if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
                count = torch.cuda.device_count() if torch.cuda.is_available() else 0
                choices = f"cuda:0..cuda:{count - 1}, cpu" if count else "cpu"
                raise InputValueError(
                    f"device {d} is not available (this process sees {count} CUDA device(s)); "
                    f"pass devices from {choices}, or devices=None."
                )
        self._pool: Optional[ThreadPoolExecutor] = None
        self.replicas: List[BandedSystem] = []

    def start(self, system, settings):
        super().start(system, settings)
        replicas = []
        for d in self.devices:
            rep = system.to(d)
            if not isinstance(rep, BandedSystem):
                raise InputTypeError(
                    f"{type(system).__name__}.to({str(d)!r}) returned a {type(rep).__name__}, not a BandedSystem."
                )
            if rep.spec.device.type != d.type:
                raise InputValueError(
                    f"{type(system).__name__}.to({str(d)!r}) returned a system whose state lies on {rep.spec.device}."
                )
            replicas.append(rep)
        self.replicas = replicas
        if len(replicas) > 1:
            self._pool = ThreadPoolExecutor(len(replicas), thread_name_prefix="pitsolve-device")
        return replicas[0]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self, call, x, indices, tangents=None):
        B = x.shape[0]
        if len(self.replicas) == 1 or B < 2:
            t0 = time.perf_counter()
            out = evaluate(self.replicas[0], call, x, indices, tangents)
            self.stats.add(call, B, B, time.perf_counter() - t0, 0.0)
            return out
        t0 = time.perf_counter()
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        jobs, lo = [], 0
        for i, size in enumerate(split_sizes(B, len(self.replicas))):
            if size:
                sl = slice(lo, lo + size)
                t = None if tangents is None else tangents[sl]
                jobs.append(self._pool.submit(self._slice, i, call, x[sl], indices[sl], t, modes))
            lo += size
        results, error = [], None
        for job in jobs:  # wait for every thread before raising, first failing device first
            try:
                results.append(job.result())
            except BaseException as err:  # noqa: BLE001 - re-raised below
                error = error or err
        if error is not None:
            raise error
        primary = self.replicas[0].spec.device
        out = torch.cat([r.to(primary) for r, _ in results])
        wall = time.perf_counter() - t0
        compute = max(c for _, c in results)
        self.stats.add(call, B, B, compute, max(wall - compute, 0.0))
        return out

    def _slice(self, i, call, x, indices, tangents, modes):
        device, system = self.devices[i], self.replicas[i]
        grad, inference = modes
        ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with ctx, torch.inference_mode(inference), torch.set_grad_enabled(grad):
            x = x.to(device, non_blocking=True)
            indices = indices.to(device, non_blocking=True)
            if tangents is not None:
                tangents = tangents.to(device, non_blocking=True)
            with _FORWARD_AD if call is Call.JVP else contextlib.nullcontext():
                t0 = time.perf_counter()
                out = evaluate(system, call, x, indices, tangents)
                if device.type == "cuda":
                    torch.cuda.current_stream(device).synchronize()
                return out, time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"MultiDeviceExecutor(devices={[str(d) for d in self.devices]})"


class _RoutedSystem:
    """The loop's system as the strategies see it: batched calls go through the executor."""

    def __init__(self, system: BandedSystem, executor: Executor):
        self._system, self._executor = system, executor

    def __getattr__(self, name):
        return getattr(self._system, name)

    def propagate_flat(self, x, indices):
        return self._executor.propagate(x, indices)

    def coarse_flat(self, x, indices):
        return self._executor.coarse(x, indices)

    def jvp_flat(self, x, indices, tangents):
        return self._executor.jvp(x, indices, tangents)


def resolve(devices, executor) -> Executor:
    """The executor of ``solve(devices=..., executor=...)``."""
    if executor is not None:
        if devices is not None:
            raise InputValueError(
                f"pass devices={devices!r} or executor={executor!r}, not both "
                "(devices=[...] is the shortcut for executor=MultiDeviceExecutor([...]))."
            )
        if not isinstance(executor, Executor):
            raise InputTypeError(
                f"executor is a {type(executor).__name__}; pass a pitsolve.Executor such as "
                "pitsolve.MultiDeviceExecutor([...]) or pitsolve.distributed.DistributedExecutor()."
            )
        return executor
    if devices is None:
        return LocalExecutor()
    return MultiDeviceExecutor(devices)
