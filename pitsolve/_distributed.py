"""The ranks of a ``torch.distributed`` process group as an executor (docs/design.md, "Architecture").

Every rank runs the same deterministic solve loop on the same system.  Each
batched call of a sweep is split into contiguous slices, one per rank (sizes
differ by at most one); each rank evaluates its slice and one ``all_gather``
gives every rank the whole batch, so every rank takes the same decisions and
ends with the same :class:`~pitsolve.Solution`.

One exchange is one ``all_gather`` of a byte buffer per rank::

    [ header: 12 × int64 | payload: max_rows × width values of the state dtype, zero-padded ]

The header (magic, exchange number, call, batch rows, own rows, error flag,
call-specific fields) lets every rank check that all ranks are at the same
exchange of the same call before using the data, and carries a rank's own
failure to all others, so that every rank raises the same error instead of
waiting for a rank that will never come.

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
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

import torch

from ._errors import (
    ConvergenceError,
    DistributedError,
    InputTypeError,
    InputValueError,
    NonFiniteError,
    PitsolveError,
    RankMismatchError,
)
from ._execution import Call, Executor, evaluate, split_sizes

__all__ = ["DistributedExecutor"]

_MAGIC = 0x70697473  # "pits"
_FIELDS = 12
_HEADER = 8 * _FIELDS
_ERROR_BYTES = 4096
_KIND = {"start": 1, "fingerprint": 2, Call.PROPAGATE: 3, Call.COARSE: 4, Call.JVP: 5, "error": 6, "finish": 7}
_KIND_NAME = {v: (k.value if isinstance(k, Call) else k) for k, v in _KIND.items()}
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
        self._beat: Optional[_Heartbeat] = None
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
        self._beat = _Heartbeat.begin(group, self.rank, self._solve_no, self.heartbeat)
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
        fields = [
            list(type(solution.status)).index(solution.status),
            solution.iterations,
            solution.accepted[-1] if solution.accepted else 0,
            solution.nfe,
            solution.depth,
            _checksum(ys),
        ]
        headers, _ = self._exchange("finish", 0, None, 0, 0, torch.uint8, fields)
        self._check_step(headers, "finish", 0)
        mine = headers[self.rank][6:11]
        if any(h[6:11] != mine for h in headers):
            rows = "; ".join(f"rank {self._global[r]}: {self._describe_result(h)}" for r, h in enumerate(headers))
            raise self._broke(DistributedError(
                f"pitsolve.distributed: the ranks ended the solve differently ({rows}); they must run the same "
                "deterministic solve (same system, settings and hardware type).",
                ranks=[self._global[r] for r, h in enumerate(headers) if h[6:11] != headers[0][6:11]],
            ))
        if any(h[11] != headers[0][11] for h in headers):
            warnings.warn(
                "pitsolve.distributed: the ranks' trajectories differ in round-off (different hardware or "
                "kernels?); every rank now returns rank 0's trajectory.",
                RuntimeWarning,
                stacklevel=3,
            )
            parts = ys if isinstance(ys, tuple) else (ys,)
            for p in parts:
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
        self._check_step(headers, call, B)
        if any(h[5] for h in headers):
            self._raise_remote(headers, error, call)
        values = data.view(spec.dtype).view(self.world, max(sizes), width)
        result = torch.cat([values[r, : sizes[r]] for r in range(self.world) if sizes[r]]).to(spec.device)
        self.stats.add(call, B, mine, compute, time.perf_counter() - t1)
        return result

    # -- exchanges ------------------------------------------------------------------------------
    def _exchange(self, kind, rows, payload, max_rows, width, dtype, fields=(), error=None):
        """One ``all_gather`` of (header, padded payload); returns ``(headers [world][12], payloads [world, bytes])``."""
        self._seq += 1
        item = torch.empty((), dtype=dtype).element_size()
        nbytes = max_rows * width * item
        size = _HEADER + -(-nbytes // 16) * 16  # rows of the gathered buffer stay aligned for any dtype
        mine = 0 if payload is None else payload.shape[0]
        header = [_MAGIC, self._seq, _KIND[kind], rows, mine, int(error is not None), *fields]
        header += [0] * (_FIELDS - len(header))
        buf = torch.empty(size, dtype=torch.uint8, device=self._device)  # padding is never read
        buf[:_HEADER] = torch.tensor(header, dtype=torch.int64).view(torch.uint8).to(self._device)
        if mine:
            flat = payload.detach().contiguous().view(torch.uint8).reshape(-1)
            buf[_HEADER : _HEADER + flat.numel()] = flat.to(self._device)
        out = torch.empty(self.world * size, dtype=torch.uint8, device=self._device)
        what = f"the exchange of {_KIND_NAME[_KIND[kind]]}" + (
            f" in sweep {self._sweep}" if isinstance(kind, Call) else ""
        )

        def gather():
            dist = _dist()
            all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch < 2.10
            work = all_gather(out, buf, group=self._group, async_op=True)
            return work, lambda: _own(out.view(self.world, size)[:, :_HEADER].cpu())

        headers = self._collective(gather, what).view(torch.int64).tolist()
        return headers, out.view(self.world, size)[:, _HEADER : _HEADER + nbytes]

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
            raise self._broke(self._failure(what, err, time.perf_counter() - t0)) from err

    def _check_step(self, headers, kind, rows) -> None:
        """All ranks at the same exchange of the same call with the same batch, own rows as split."""
        expect = [_MAGIC, self._seq, _KIND[kind], rows]
        sizes = split_sizes(rows, self.world) if isinstance(kind, Call) else None
        if all(h[:4] == expect and (sizes is None or h[5] or h[4] == sizes[r]) for r, h in enumerate(headers)):
            return
        seen = "; ".join(
            f"rank {self._global[r]}: "
            + (
                f"exchange {h[1]} ({_KIND_NAME.get(h[2], '?')}, {h[3]} rows)"
                if h[0] == _MAGIC
                else "not a pitsolve exchange"
            )
            for r, h in enumerate(headers)
        )
        raise self._broke(DistributedError(
            f"pitsolve.distributed: the ranks fell out of step at exchange {self._seq} ({seen}); every rank must "
            "run the same solve, call for call (a rank-dependent branch in the system or a callback?).",
            ranks=[self._global[r] for r, h in enumerate(headers) if h[:4] != headers[0][:4]],
        ))

    def _raise_remote(self, headers, error, call) -> None:
        """Every rank learns what failed where, and raises the same error."""
        info = b""
        if error is not None:
            info = _encode_error(error)
        payload = torch.frombuffer(bytearray(info.ljust(_ERROR_BYTES, b"\0")), dtype=torch.uint8).view(1, -1)
        heads, data = self._exchange("error", 0, payload, 1, _ERROR_BYTES, torch.uint8)
        self._check_step(heads, "error", 0)
        infos = [_decode_error(data[r]) for r in range(self.world)]
        failing = [r for r, i in enumerate(infos) if i is not None]
        first = infos[failing[0]]
        also = f" (ranks {', '.join(str(self._global[r]) for r in failing[1:])} raised too)" if len(failing) > 1 else ""
        message = (
            f"rank {self._global[failing[0]]} raised {first['type']} in {call.value} of sweep {self._sweep}"
            f"{also}: {first['message']}"
        )
        cls = _PITSOLVE_ERRORS.get(first["type"]) if first.get("pitsolve") else None
        ranks = [self._global[r] for r in failing]
        if cls is None or issubclass(cls, DistributedError):
            exc = DistributedError(f"pitsolve.distributed: {message}", ranks=ranks)
        else:
            exc = cls(message)
            exc.ranks = tuple(ranks)
        raise exc from error

    def _check_fingerprints(self, fingerprint: Dict[str, str]) -> None:
        data = json.dumps(fingerprint, sort_keys=False).encode()
        headers, _ = self._exchange("start", 0, None, 0, 0, torch.uint8, [len(data)])
        self._check_step(headers, "start", 0)
        longest = max(h[6] for h in headers)
        payload = torch.frombuffer(bytearray(data.ljust(longest, b"\0")), dtype=torch.uint8).view(1, -1)
        heads, raw = self._exchange("fingerprint", 0, payload, 1, longest, torch.uint8)
        self._check_step(heads, "fingerprint", 0)
        prints = [json.loads(bytes(raw[r, : headers[r][6]].cpu().tolist()).decode()) for r in range(self.world)]
        diffs, culprits = [], set()
        for key in dict.fromkeys(k for p in prints for k in p):
            values = [p.get(key, "<missing>") for p in prints]
            if len(set(values)) == 1:
                continue
            by_value: Dict[str, List[int]] = {}
            for r, v in enumerate(values):
                by_value.setdefault(v, []).append(self._global[r])
            culprits.update(self._global[r] for r, v in enumerate(values) if v != values[0])
            diffs.append(f"  {key}: " + "; ".join(
                f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {_short(v)}" for v, rs in by_value.items()
            ))
        if diffs:
            raise RankMismatchError(
                f"pitsolve.distributed: the {self.world} ranks were given different solves; they differ in\n"
                + "\n".join(diffs)
                + "\nEvery rank must build the same system (seed every rank alike, e.g. torch.manual_seed(0) "
                "before building the model and the initial state) and call solve with the same options.",
                ranks=sorted(culprits),
            )

    # -- failures -------------------------------------------------------------------------------
    def _broke(self, exc: DistributedError) -> DistributedError:
        self._broken = True
        return exc

    def _failure(self, what: str, err: BaseException, elapsed: float) -> DistributedError:
        culprits, story = self._diagnose()
        me = f"rank {self._global[self.rank]} (of {self.world})"
        return DistributedError(
            f"pitsolve.distributed: {me}: {what} (exchange {self._seq}) failed after {elapsed:.1f} s: {story}. "
            f"[{type(err).__name__}: {_short(str(err), 300)}] Every surviving rank fails with such an error; the "
            "process group cannot be used for further collectives: end the job (torchrun can restart it, "
            "--max-restarts).",
            ranks=culprits,
        )

    def _diagnose(self) -> Tuple[List[int], str]:
        """Which ranks stopped or fell behind, from their heartbeats in the group's store."""
        if self._beat is None:
            return [], "no heartbeats (the process group has no store), so the missing rank cannot be named"
        others = [r for r in range(self.world) if r != self.rank]
        try:
            first = {r: self._beat.read(r) for r in others}
            time.sleep(2.5 * self.heartbeat)
            last = {r: self._beat.read(r) for r in others}
        except Exception as err:  # noqa: BLE001 - the store itself is gone
            return [], (
                f"the process group's store is unreachable ({type(err).__name__}: {_short(str(err), 120)}): "
                "the process "
                "hosting it (rank 0 with init_method='tcp://…', or the torchrun agent) probably died"
            )
        stopped, behind, absent, left = [], [], [], []
        for r in others:
            a, b = first[r], last[r]
            g = self._global[r]
            if b is None or b[0] != self._solve_no:
                absent.append(g)
            elif b[3] != "running":
                left.append((g, b[2]))
            elif a is not None and a[1] == b[1]:
                stopped.append((g, b[2]))
            elif b[2] < self._seq:
                behind.append((g, b[2]))
        parts = []
        if stopped:
            parts.append(
                ", ".join(
                    f"rank {g} stopped (no heartbeat for {2.5 * self.heartbeat:.1f} s; last seen at exchange {e})"
                    for g, e in stopped
                )
                + ": the process died or froze"
            )
        if behind:
            parts.append(
                ", ".join(
                    f"rank {g} is alive but has not reached this exchange (it is at exchange {e})" for g, e in behind
                )
                + f": it is stuck or slower than timeout={self.timeout} s"
            )
        if absent:
            parts.append(
                ", ".join(f"rank {g}" for g in absent)
                + " never joined this solve (it has not called it yet, or died before)"
            )
        if left and not (stopped or behind or absent):
            parts.append(
                ", ".join(f"rank {g} left this solve at exchange {e}" for g, e in left)
                + " (it finished or raised an error of its own; see its log)"
            )
        culprits = [g for g, _ in stopped] + [g for g, _ in behind] + absent
        if not parts:
            return [], "every other rank is alive and at this exchange; the transport itself failed"
        culprits = culprits or [g for g, _ in left]
        return culprits, "; ".join(parts)

    @staticmethod
    def _describe_result(h) -> str:
        status = list(_status_type())[h[6]].name
        return f"{status}, {h[7]} iterations, {h[8]} accepted, nfe {h[9]}"

    def __repr__(self) -> str:
        return f"DistributedExecutor(group={self.group!r}, timeout={self.timeout!r})"


class _Heartbeat:
    """A daemon thread writing ``"<solve> <beat> <exchange> <state>"`` to the group's store.

    It writes every ``interval`` seconds, and soon after the rank enters a new
    exchange (at most ten writes per interval), off the solve's own thread.
    """

    def __init__(self, store, rank: int, solve_no: int, interval: float):
        self.store, self.rank, self.solve_no, self.interval = store, rank, solve_no, interval
        self._exchange, self.beat = 0, 0
        self._stop, self._moved = threading.Event(), threading.Event()
        self._publish("running")
        self._thread = threading.Thread(target=self._loop, name=f"pitsolve-heartbeat-{rank}", daemon=True)
        self._thread.start()

    @classmethod
    def begin(cls, group, rank, solve_no, interval) -> Optional["_Heartbeat"]:
        store = _store_of(group)
        if store is None:
            return None
        try:
            return cls(store, rank, solve_no, interval)
        except Exception:  # noqa: BLE001 - no store, no names in failure messages; the solve still works
            return None

    @staticmethod
    def _key(rank: int) -> str:
        return f"pitsolve/heartbeat/{rank}"

    def _publish(self, state: str) -> None:
        self.beat += 1
        self.store.set(self._key(self.rank), f"{self.solve_no} {self.beat} {self.exchange} {state}")

    @property
    def exchange(self) -> int:
        return self._exchange

    @exchange.setter
    def exchange(self, value: int) -> None:
        self._exchange = value
        self._moved.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._moved.wait(self.interval)
            self._moved.clear()
            if self._stop.is_set():
                return
            try:
                self._publish("running")
            except Exception:  # noqa: BLE001 - the store is gone; the collectives will say so
                return
            self._stop.wait(self.interval / 10)

    def read(self, rank: int):
        """``(solve, beat, exchange, state)`` of ``rank``, or ``None`` if it never wrote one."""
        key = self._key(rank)
        if not self.store.check([key]):
            return None
        solve, beat, exchange, state = self.store.get(key).decode().split()
        return int(solve), int(beat), int(exchange), state

    def stop(self, publish: bool = True) -> None:
        self._stop.set()
        self._moved.set()
        self._thread.join(timeout=5 * self.interval)
        if publish:  # not after a failure: the store may be gone, and a write could block
            try:
                self._publish("left")
            except Exception:  # noqa: BLE001
                pass


# -- helpers ------------------------------------------------------------------------------------
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


def _store_of(group):
    getter = getattr(group, "get_group_store", None)
    try:
        if callable(getter):
            return getter()
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001
        return None


def _checksum(ys) -> int:
    """An exact order-sensitive integer checksum of the trajectory's bits (wrapping int64 arithmetic)."""
    total = 0
    for p in ys if isinstance(ys, tuple) else (ys,):
        flat = p.detach().contiguous().reshape(-1)
        ints = flat.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[flat.element_size()])
        weights = torch.arange(ints.numel(), device=ints.device, dtype=torch.int64) % 1_000_003 + 1
        total += int((ints.to(torch.int64) * weights).sum())
    return (total + 2**63) % 2**64 - 2**63


def _status_type():
    from ._solution import Status

    return Status


_PITSOLVE_ERRORS = {
    cls.__name__: cls
    for cls in (PitsolveError, InputValueError, InputTypeError, ConvergenceError, NonFiniteError, DistributedError)
}


def _encode_error(error: BaseException) -> bytes:
    info = {"type": type(error).__name__, "pitsolve": isinstance(error, PitsolveError), "message": str(error)}
    data = json.dumps(info).encode()
    while len(data) > _ERROR_BYTES and info["message"]:
        info["message"] = info["message"][: len(info["message"]) // 2] + " …"
        data = json.dumps(info).encode()
    return data[:_ERROR_BYTES]


def _decode_error(raw: torch.Tensor):
    data = bytes(raw.cpu().tolist()).rstrip(b"\0")
    return json.loads(data.decode()) if data else None


def _own(t: torch.Tensor) -> torch.Tensor:
    """A copy with standard strides (``view(dtype)`` needs them; ``contiguous()`` keeps a size-1 axis' odd stride)."""
    return t.clone(memory_format=torch.contiguous_format)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
