"""The wire format of :class:`~pitsolve.distributed.DistributedExecutor`: one exchange, one frame per rank.

One exchange is one ``all_gather`` of a byte buffer per rank, its *frame*::

    [ header: 12 × int64 | payload: max_rows × width values of the payload dtype, zero-padded ]

The header's fields, in this order (:class:`Header`):

===========  =====================================================================
``magic``    ``0x70697473`` ("pits"): the buffer is a pitsolve exchange
``exchange`` the exchange's number in this solve, counted alike on every rank
``kind``     what is exchanged (:class:`Kind`): the start, the fingerprint, a
             batched call (Φ, coarse G, JVP), an error, the finish
``rows``     the batch's rows (0 outside a batched call)
``own``      the rows of the batch this rank evaluated
``error``    1 when this rank's slice raised (then an ``error`` exchange follows)
``extra``    6 kind-specific fields: the fingerprint's byte count at the start,
             :class:`Outcome` at the finish, zeros otherwise
===========  =====================================================================

A payload row is ``width`` values; the frame's length is rounded up to 16
bytes so that every rank's payload in the gathered buffer stays aligned for
any dtype.  An error travels as UTF-8 JSON (:func:`encode_error`) in a
payload of :data:`ERROR_BYTES`.
"""

from __future__ import annotations

import enum
import json
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from ._errors import DistributedError, PitsolveError
from ._execution import Call

__all__ = [
    "ERROR_BYTES",
    "FIELDS",
    "HEADER_BYTES",
    "MAGIC",
    "Header",
    "Kind",
    "Outcome",
    "checksum",
    "decode_error",
    "encode_error",
    "frame",
    "frame_bytes",
    "header_fields",
    "payloads",
]

MAGIC = 0x70697473  # "pits"
FIELDS = 12
EXTRA = 6  # kind-specific fields after the six fixed ones
HEADER_BYTES = 8 * FIELDS
ERROR_BYTES = 4096


class Kind(enum.IntEnum):
    """What an exchange carries; the value is the header's ``kind`` field."""

    START = 1
    FINGERPRINT = 2
    PROPAGATE = 3
    COARSE = 4
    JVP = 5
    ERROR = 6
    FINISH = 7

    @classmethod
    def of(cls, what: Union[Call, str]) -> "Kind":
        """The kind of a batched call (:class:`~pitsolve._execution.Call`) or of ``"start"``, ``"error"``, …."""
        return cls[what.name if isinstance(what, Call) else what.upper()]

    @property
    def call(self) -> Optional[Call]:
        """The batched call this kind exchanges, ``None`` for the start, fingerprint, error and finish."""
        return Call.__members__.get(self.name)

    @property
    def label(self) -> str:
        """The name messages use: the call's symbol (``"Φ"``) or the lower-case name."""
        return self.call.value if self.call is not None else self.name.lower()


class Header(NamedTuple):
    """A frame's 12 int64 fields (see the module docstring), ``magic`` written and checked, not held."""

    exchange: int
    kind: Kind
    rows: int
    own: int
    error: bool
    extra: Tuple[int, ...] = ()  # padded with zeros to 6 fields on the wire

    def encode(self) -> torch.Tensor:
        """The header as ``HEADER_BYTES`` bytes (uint8, CPU)."""
        if len(self.extra) > EXTRA:
            raise DistributedError(f"pitsolve.distributed: a header holds {EXTRA} extra fields, not {len(self.extra)}.")
        extra = tuple(self.extra) + (0,) * (EXTRA - len(self.extra))
        values = [MAGIC, self.exchange, int(self.kind), self.rows, self.own, int(self.error), *extra]
        return torch.tensor(values, dtype=torch.int64).view(torch.uint8)

    @classmethod
    def decode(cls, values: Sequence[int]) -> "Header":
        """The header from its 12 fields; a :class:`~pitsolve.DistributedError` when they are not one."""
        values = list(values)
        if len(values) != FIELDS:
            raise DistributedError(f"pitsolve.distributed: a header has {FIELDS} fields, got {len(values)}.")
        magic, exchange, kind, rows, own, error, *extra = values
        if magic != MAGIC:
            raise DistributedError(
                f"pitsolve.distributed: not a pitsolve exchange (magic {magic:#x}, expected {MAGIC:#x}); "
                "another collective on the same process group interleaved with the solve?"
            )
        if kind not in Kind._value2member_map_:
            raise DistributedError(
                f"pitsolve.distributed: unknown exchange kind {kind} (expected one of {[int(k) for k in Kind]}); "
                "do all ranks run the same pitsolve version?"
            )
        return cls(exchange, Kind(kind), rows, own, bool(error), tuple(extra))

    def describe(self) -> str:
        """``"exchange 5 (Φ, 7 rows)"``, for messages."""
        return f"exchange {self.exchange} ({self.kind.label}, {self.rows} rows)"


class Outcome(NamedTuple):
    """The finish exchange's ``extra`` fields: how a rank's solve ended."""

    status: int  # index of the Status member
    iterations: int
    accepted: int  # the last accepted point
    nfe: int
    depth: int
    checksum: int  # :func:`checksum` of the trajectory

    @classmethod
    def of(cls, header: Header) -> "Outcome":
        return cls(*header.extra)

    def result(self) -> Tuple[int, ...]:
        """Everything but the checksum: what must agree exactly between ranks."""
        return tuple(self[:5])

    def describe(self) -> str:
        """``"CONVERGED, 4 iterations, 24 accepted, nfe 96"``, for messages."""
        from ._solution import Status

        status = list(Status)[self.status].name
        return f"{status}, {self.iterations} iterations, {self.accepted} accepted, nfe {self.nfe}"


def frame_bytes(max_rows: int, width: int, dtype: torch.dtype) -> Tuple[int, int]:
    """``(frame size, payload bytes)`` for ``max_rows`` rows of ``width`` values of ``dtype``."""
    nbytes = max_rows * width * torch.empty((), dtype=dtype).element_size()
    return HEADER_BYTES + -(-nbytes // 16) * 16, nbytes


def frame(header: Header, payload: Optional[torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    """A rank's frame of ``size`` bytes on ``device``: the header, then the payload's bytes (padding unset)."""
    buf = torch.empty(size, dtype=torch.uint8, device=device)  # the padding is never read
    buf[:HEADER_BYTES] = header.encode().to(device)
    if payload is not None and payload.shape[0]:
        flat = payload.detach().contiguous().view(torch.uint8).reshape(-1)
        buf[HEADER_BYTES : HEADER_BYTES + flat.numel()] = flat.to(device)
    return buf


def header_fields(gathered: torch.Tensor) -> List[List[int]]:
    """The raw header fields of every rank's frame in a gathered ``[world, size]`` uint8 buffer."""
    # A copy with standard strides: view(dtype) needs them, and contiguous() keeps a size-1 axis' odd stride.
    heads = gathered[:, :HEADER_BYTES].cpu().clone(memory_format=torch.contiguous_format)
    return heads.view(torch.int64).tolist()


def payloads(gathered: torch.Tensor, nbytes: int) -> torch.Tensor:
    """Every rank's payload bytes, ``[world, nbytes]``, from a gathered ``[world, size]`` buffer."""
    return gathered[:, HEADER_BYTES : HEADER_BYTES + nbytes]


def encode_error(error: BaseException) -> bytes:
    """An exception as JSON (type, whether it is a pitsolve error, message), at most :data:`ERROR_BYTES`."""
    info = {"type": type(error).__name__, "pitsolve": isinstance(error, PitsolveError), "message": str(error)}
    data = json.dumps(info).encode()
    while len(data) > ERROR_BYTES and info["message"]:
        info["message"] = info["message"][: len(info["message"]) // 2] + " …"
        data = json.dumps(info).encode()
    return data[:ERROR_BYTES]


def decode_error(raw: torch.Tensor) -> Optional[dict]:
    """The dict :func:`encode_error` wrote, or ``None`` for a rank that sent no error (all zeros)."""
    data = bytes(raw.cpu().tolist()).rstrip(b"\0")
    return json.loads(data.decode()) if data else None


def checksum(ys) -> int:
    """An exact order-sensitive integer checksum of the trajectory's bits (wrapping int64 arithmetic)."""
    total = 0
    for p in ys if isinstance(ys, tuple) else (ys,):
        flat = p.detach().contiguous().reshape(-1)
        ints = flat.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[flat.element_size()])
        weights = torch.arange(ints.numel(), device=ints.device, dtype=torch.int64) % 1_000_003 + 1
        total += int((ints.to(torch.int64) * weights).sum())
    return (total + 2**63) % 2**64 - 2**63
