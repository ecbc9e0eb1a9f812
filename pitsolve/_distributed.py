"""The ranks of a ``torch.distributed`` process group as an executor (docs/design.md, "Architecture").

Every rank runs the same deterministic solve loop on the same system.  Each
batched call of a sweep is split into contiguous slices, one per rank (sizes
differ by at most one); each rank evaluates its slice and one ``all_gather``
gives every rank the whole batch, so every rank takes the same decisions and
ends with the same :class:`~pitsolve.Solution`.

One exchange is one ``all_gather`` of a byte buffer per rank::

    [ header: 12 × int64 | payload: max_rows × width values of the state dtype, zero-padded ]

The header (magic, exchange number, kind of exchange, batch rows, own rows,
error flag, kind-specific fields; :class:`._distributed_protocol.Header`) lets
every rank check that all ranks are at the same exchange of the same call
before using the data, and carries a rank's own failure to all others, so
that every rank raises the same error instead of waiting for a rank that will
never come.

Safety (see ``docs/distributed.md``):

* at the start, a fingerprint of the system and the settings (shapes,
  dtypes, options, exact digests of the initial state, grid, noise and model
  weights) is gathered and compared; ranks that differ raise the same
  :class:`~pitsolve.RankMismatchError` naming the fields and the ranks;
* an exception in a rank's slice is sent to all ranks, which raise the same
  error type with the same message;
* a rank that dies or hangs: each collective waits at most ``timeout``
  seconds (gloo also reports a closed connection at once); a heartbeat each
  rank writes to the process group's store then tells the others which rank
  stopped (died or froze) or fell behind, and every survivor raises a
  :class:`~pitsolve.DistributedError` naming it.

The parts, one concern a module:

* ``_distributed_protocol.py`` — the wire format: the header's named fields
  (:class:`Header`, :class:`Kind`, :class:`Outcome`), the frame and payload
  layout, errors as bytes, the trajectory checksum;
* ``_distributed_heartbeat.py`` — the heartbeat thread on the group's store;
* ``_distributed_diagnosis.py`` — which rank died, froze, fell behind or
  differs, and the error every rank raises for it;
* this module — :class:`DistributedExecutor`, which composes them.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import timedelta
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import _distributed_diagnosis as diagnosis
from ._distributed_heartbeat import Heartbeat
from ._distributed_protocol import (
    ERROR_BYTES,
    Header,
    Kind,
    Outcome,
    decode_error,
    encode_error,
    frame,
    frame_bytes,
    header_fields,
    payloads,
)
from ._distributed_protocol import checksum as _checksum  # looked up here at call time: tests replace it
from ._errors import DistributedError, InputTypeError, InputValueError
from ._execution import Call, Executor, evaluate, split_sizes

__all__ = ["DistributedExecutor"]

#: Solves started per process group in this process: all ranks must count alike.
_SOLVES: Dict[Tuple[int, ...], int] = {}
class DistributedExecutor(Executor):
    r"""Spread each sweep over the ranks of an initialised ``torch.distributed`` process group.

    Used by :func:`pitsolve.distributed.solve`; pass it as
    ``solve(..., executor=DistributedExecutor(...))`` to read its
    :attr:`~pitsolve.Executor.stats` afterwards.  Any backend works: gloo on
    the CPU (a CUDA system is staged through host memory), nccl with the
    system on ``cuda:<local rank>``.

    Args:
        group: the process group (``None``: the default group); every rank of
            it must call the solve with the same system and settings.
        timeout: seconds (or a ``timedelta``) one exchange may wait for the
            other ranks before the solve fails naming the missing rank.  It
            must exceed the largest difference in time between the ranks'
            model calls (first-call warm-up included).  ``None``: the process
            group's own timeout (``init_process_group(timeout=...)``).
        heartbeat: seconds between the heartbeats each rank writes to the
            group's store (default ``min(1, timeout/10)``); a failing rank
            waits 2.5 heartbeats before naming the culprit.
    """

    name = "distributed"

    def __init__(self, group=None, timeout=None, heartbeat: Optional[float] = None):
        super().__init__()
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        bad = isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        if timeout is not None and bad:
            raise InputValueError(f"timeout={timeout!r} must be a positive number of seconds, a timedelta or None.")
        if heartbeat is None:
            heartbeat = 1.0 if timeout is None else min(1.0, timeout / 10)
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or not heartbeat > 0:
            raise InputValueError(f"heartbeat={heartbeat!r} must be a positive number of seconds.")
        self.group, self.timeout, self.heartbeat = group, timeout, float(max(heartbeat, 0.05))
        self.rank, self.world = 0, 1
        self._broken = False
        self._beat: Optional[Heartbeat] = None
        self._leader = True

    @property
    def leader(self) -> bool:
        return self._leader

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, system, settings):
        super().start(system, settings)
        self._broken = False
        dist = _dist()
        group = self.group if self.group is not None else dist.group.WORLD
        self._group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        if self.rank < 0:
            raise InputValueError("this process is not a member of the process group passed as group=.")
        self._leader = self.rank == 0
        self._global = dist.get_process_group_ranks(group)
        self._system = system
        self._device = _comm_device(str(dist.get_backend(group)), system.spec.device)
        self._seq = self._sweep = 0
        key = tuple(self._global)
        _SOLVES[key] = self._solve_no = _SOLVES.get(key, 0) + 1
        self._beat = Heartbeat.begin(group, self.rank, self._solve_no, self.heartbeat)
        from . import __version__

        fingerprint = {
            **settings,
            **system.fingerprint(),
            "pitsolve": __version__,
            "torch": torch.__version__,
            "solve number in this group": str(self._solve_no),
        }
        self._check_fingerprints(fingerprint)
        return system

    def close(self):
        if self._beat is not None:
            self._beat.stop(publish=not self._broken)
            self._beat = None

    def finish(self, solution):
        """Check that every rank ends with the same result; rank 0's trajectory wins a round-off split."""
        ys = solution.ys
        mine = Outcome(
            status=list(type(solution.status)).index(solution.status),
            iterations=solution.iterations,
            accepted=solution.accepted[-1] if solution.accepted else 0,
            nfe=solution.nfe,
            depth=solution.depth,
            checksum=_checksum(ys),
        )
        headers, _ = self._exchange("finish", 0, None, 0, 0, torch.uint8, mine)
        outcomes = [Outcome.of(h) for h in headers]
        error = diagnosis.ended_differently(outcomes, self._global)
        if error is not None:
            raise self._broke(error)
        if any(o.checksum != outcomes[0].checksum for o in outcomes):
            warnings.warn(
                "pitsolve.distributed: the ranks' trajectories differ in round-off (different hardware or "
                "kernels?); every rank now returns rank 0's trajectory.",
                RuntimeWarning,
                stacklevel=3,
            )
            for p in ys if isinstance(ys, tuple) else (ys,):
                staged = p.contiguous().to(self._device)
                self._collective(lambda: _dist().broadcast(staged, self._global[0], group=self._group, async_op=True),
                                 "the broadcast of rank 0's trajectory")
                p.copy_(staged)
        return solution

    # -- the batched calls ----------------------------------------------------------------------
    def run(self, call, x, indices, tangents=None):
        B = x.shape[0]
        if call is Call.PROPAGATE:
            self._sweep += 1
        if B < 2:  # one row: every rank computes it, nothing to exchange
            t0 = time.perf_counter()
            out = evaluate(self._system, call, x, indices, tangents)
            self.stats.add(call, B, B, time.perf_counter() - t0, 0.0)
            return out
        sizes = split_sizes(B, self.world)
        lo, mine = sum(sizes[: self.rank]), sizes[self.rank]
        spec = self._system.spec
        width = spec.size * (2 if call is Call.JVP else 1)
        t0 = time.perf_counter()
        out, error = None, None
        if mine:
            sl = slice(lo, lo + mine)
            try:
                out = evaluate(self._system, call, x[sl], indices[sl], None if tangents is None else tangents[sl])
                out = out.to(spec.dtype)
            except Exception as err:  # sent to every rank, raised alike below
                error = err
        compute = time.perf_counter() - t0
        t1 = time.perf_counter()
        headers, data = self._exchange(call, B, out, max(sizes), width, spec.dtype, error=error)
        if any(h.error for h in headers):
            self._raise_remote(error, call)
        values = data.view(spec.dtype).view(self.world, max(sizes), width)
        result = torch.cat([values[r, : sizes[r]] for r in range(self.world) if sizes[r]]).to(spec.device)
        self.stats.add(call, B, mine, compute, time.perf_counter() - t1)
        return result

    # -- exchanges ------------------------------------------------------------------------------
    def _exchange(self, what: Union[Call, str], rows: int, payload: Optional[torch.Tensor], max_rows: int,
                  width: int, dtype: torch.dtype, extra: Sequence[int] = (), error: Optional[BaseException] = None,
                  ) -> Tuple[List[Header], torch.Tensor]:
        """One ``all_gather`` of (header, padded payload), checked in step: ``(headers, payloads [world, bytes])``."""
        self._seq += 1
        kind = Kind.of(what)
        size, nbytes = frame_bytes(max_rows, width, dtype)
        own = 0 if payload is None else payload.shape[0]
        buf = frame(Header(self._seq, kind, rows, own, error is not None, tuple(extra)), payload, size, self._device)
        out = torch.empty(self.world * size, dtype=torch.uint8, device=self._device)
        label = f"the exchange of {kind.label}" + (f" in sweep {self._sweep}" if isinstance(what, Call) else "")

        def gather():
            dist = _dist()
            all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch < 2.10
            work = all_gather(out, buf, group=self._group, async_op=True)
            return work, lambda: header_fields(out.view(self.world, size))

        headers = self._check_step(self._collective(gather, label), kind, rows)
        return headers, payloads(out.view(self.world, size), nbytes)

    def _collective(self, op, what: str):
        """Run a collective, waiting at most ``timeout``; any failure becomes a DistributedError naming ranks."""
        if self._beat is not None:
            self._beat.exchange = self._seq
        t0 = time.perf_counter()
        try:
            result = op()
            work, fetch = result if isinstance(result, tuple) else (result, None)
            if self.timeout is None:
                work.wait()
            elif work.wait(timeout=timedelta(seconds=self.timeout)) is False:
                raise TimeoutError(f"no answer within timeout={self.timeout} s")
            return fetch() if fetch is not None else None
        except Exception as err:
            where = self._position()
            culprits, story = diagnosis.diagnose(self._beat, where, self.heartbeat, self.timeout)
            error = diagnosis.failure(where, what, err, time.perf_counter() - t0, culprits, story)
            raise self._broke(error) from err

    def _check_step(self, fields: List[List[int]], kind: Kind, rows: int) -> List[Header]:
        """The decoded headers, once all ranks are at this exchange of the same call with the same batch.

        Each rank's own rows must be its slice of the split (unless it raised).
        """
        headers: List[Optional[Header]] = []
        for values in fields:
            try:
                headers.append(Header.decode(values))
            except DistributedError:
                headers.append(None)
        sizes = split_sizes(rows, self.world) if kind.call is not None else None

        def in_step(r: int, h: Optional[Header]) -> bool:
            same = h is not None and (h.exchange, h.kind, h.rows) == (self._seq, kind, rows)
            return same and (sizes is None or h.error or h.own == sizes[r])

        if all(in_step(r, h) for r, h in enumerate(headers)):
            return headers
        raise self._broke(diagnosis.out_of_step(headers, self._position()))

    def _raise_remote(self, error: Optional[BaseException], call: Call) -> None:
        """Every rank learns what failed where, and raises the same error."""
        info = encode_error(error) if error is not None else b""
        payload = torch.frombuffer(bytearray(info.ljust(ERROR_BYTES, b"\0")), dtype=torch.uint8).view(1, -1)
        _, data = self._exchange("error", 0, payload, 1, ERROR_BYTES, torch.uint8)
        infos = [decode_error(data[r]) for r in range(self.world)]
        raise diagnosis.remote_error(infos, self._global, call.value, self._sweep) from error

    def _check_fingerprints(self, fingerprint: Dict[str, str]) -> None:
        data = json.dumps(fingerprint, sort_keys=False).encode()
        headers, _ = self._exchange("start", 0, None, 0, 0, torch.uint8, [len(data)])
        lengths = [h.extra[0] for h in headers]  # the start exchange's extra field: the fingerprint's bytes
        payload = torch.frombuffer(bytearray(data.ljust(max(lengths), b"\0")), dtype=torch.uint8).view(1, -1)
        _, raw = self._exchange("fingerprint", 0, payload, 1, max(lengths), torch.uint8)
        prints = [json.loads(bytes(raw[r, : lengths[r]].cpu().tolist()).decode()) for r in range(self.world)]
        error = diagnosis.mismatch(prints, self._global)
        if error is not None:
            raise error

    # -- failures -------------------------------------------------------------------------------
    def _position(self) -> diagnosis.Position:
        return diagnosis.Position(self.rank, self._global, self._solve_no, self._seq)

    def _broke(self, exc: DistributedError) -> DistributedError:
        """Mark the group unusable (no farewell heartbeat: the store may be gone) and return ``exc``."""
        self._broken = True
        return exc

    def __repr__(self) -> str:
        return f"DistributedExecutor(group={self.group!r}, timeout={self.timeout!r})"


# -- process group ------------------------------------------------------------------------------
def _dist():
    import torch.distributed as dist

    if not dist.is_available():
        raise InputValueError("this PyTorch build has no torch.distributed; use pitsolve.solve(devices=...) instead.")
    if not dist.is_initialized():
        raise InputValueError(
            "torch.distributed is not initialised; call torch.distributed.init_process_group(backend) first "
            "(launched by torchrun, which sets RANK, WORLD_SIZE and MASTER_ADDR), see docs/distributed.md."
        )
    return dist


def _comm_device(backend: str, device: torch.device) -> torch.device:
    backend = backend.lower()
    if device.type == "cuda" and "nccl" in backend:
        return device
    if device.type == "cpu" and backend == "nccl":
        raise InputTypeError(
            "the nccl backend exchanges CUDA tensors, but the system lives on the CPU; move it to "
            "torch.device('cuda', local_rank) or initialise the group with backend='gloo'."
        )
    if device.type == "cuda" or "gloo" in backend:
        return torch.device("cpu")  # gloo: CUDA results are staged through host memory
    return device
