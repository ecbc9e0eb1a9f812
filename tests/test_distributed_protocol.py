"""The distributed executor's wire format and failure diagnosis, in one process (no process group).

* a header survives encode/decode and a simulated ``all_gather`` of frames with its named fields;
  payloads come back bit for bit, aligned, in any dtype;
* a malformed header (wrong magic, unknown kind, wrong length) is a DistributedError, and ranks
  that send one are reported out of step;
* errors travel as bytes and are raised alike; heartbeats name a rank that stopped or fell behind.
"""

from __future__ import annotations

import pytest
import torch

import pitsolve
from pitsolve._distributed_diagnosis import Position, diagnose, out_of_step, remote_error
from pitsolve._distributed_heartbeat import Beat
from pitsolve._distributed_protocol import (
    ERROR_BYTES,
    FIELDS,
    HEADER_BYTES,
    MAGIC,
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
from pitsolve._execution import Call

CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name.lower())
def test_header_round_trip(kind):
    header = Header(exchange=7, kind=kind, rows=5, own=2, error=kind is Kind.ERROR, extra=(3, -4, 2**62))
    raw = header.encode()
    assert raw.dtype == torch.uint8 and raw.numel() == HEADER_BYTES
    values = raw.view(torch.int64).tolist()
    assert values[0] == MAGIC and len(values) == FIELDS
    decoded = Header.decode(values)
    assert decoded == header._replace(extra=(3, -4, 2**62, 0, 0, 0))  # extra padded to its six fields
    assert decoded.kind is kind and isinstance(decoded.error, bool)


def test_frames_gathered_give_back_headers_and_payloads():
    """Two ranks' frames, concatenated as all_gather does: named fields and payload bits come back."""
    for dtype, width in ((torch.float64, 3), (torch.float32, 5), (torch.float16, 1)):
        sizes = [2, 1]  # uneven split of three rows
        size, nbytes = frame_bytes(max(sizes), width, dtype)
        assert size % 16 == 0 and nbytes == max(sizes) * width * torch.empty((), dtype=dtype).element_size()
        rows = [torch.randn(n, width, generator=torch.Generator().manual_seed(n)).to(dtype) for n in sizes]
        frames = [frame(Header(4, Kind.of(Call.JVP), 3, n, False), x, size, CPU) for n, x in zip(sizes, rows)]
        gathered = torch.cat(frames).view(2, size)
        heads = [Header.decode(v) for v in header_fields(gathered)]
        assert [(h.exchange, h.kind, h.rows, h.own) for h in heads] == [(4, Kind.JVP, 3, 2), (4, Kind.JVP, 3, 1)]
        values = payloads(gathered, nbytes).contiguous().view(dtype).view(2, max(sizes), width)
        for r, x in enumerate(rows):
            assert torch.equal(values[r, : sizes[r]], x)


def test_kinds_name_the_calls():
    assert [Kind.of(c) for c in Call] == [Kind.PROPAGATE, Kind.COARSE, Kind.JVP]
    assert Kind.of("start") is Kind.START and Kind.FINISH.call is None
    assert Kind.PROPAGATE.label == "Φ" and Kind.FINGERPRINT.label == "fingerprint"
    assert Header(5, Kind.PROPAGATE, 7, 4, False).describe() == "exchange 5 (Φ, 7 rows)"


def test_outcome_fields_and_result():
    outcome = Outcome(status=0, iterations=4, accepted=24, nfe=96, depth=4, checksum=-17)
    header = Header.decode(Header(9, Kind.FINISH, 0, 0, False, outcome).encode().view(torch.int64).tolist())
    assert Outcome.of(header) == outcome
    assert outcome.result() == (0, 4, 24, 96, 4) and outcome._replace(checksum=3).result() == outcome.result()
    assert outcome.describe() == f"{list(pitsolve.Status)[0].name}, 4 iterations, 24 accepted, nfe 96"


def test_malformed_headers_are_distributed_errors():
    good = Header(1, Kind.START, 0, 0, False).encode().view(torch.int64).tolist()
    with pytest.raises(pitsolve.DistributedError, match=r"not a pitsolve exchange \(magic 0x1234, expected 0x70697473"):
        Header.decode([0x1234] + good[1:])
    with pytest.raises(pitsolve.DistributedError, match="unknown exchange kind 99"):
        Header.decode(good[:2] + [99] + good[3:])
    with pytest.raises(pitsolve.DistributedError, match="a header has 12 fields, got 11"):
        Header.decode(good[:-1])
    with pytest.raises(pitsolve.DistributedError, match="6 extra fields, not 7"):
        Header(1, Kind.START, 0, 0, False, (0,) * 7).encode()


def test_a_malformed_or_late_header_is_reported_out_of_step():
    where = Position(rank=0, ranks=[0, 3, 5], solve_no=1, exchange=4)
    headers = [Header(4, Kind.PROPAGATE, 6, 2, False), None, Header(3, Kind.COARSE, 6, 2, False)]
    error = out_of_step(headers, where)
    assert isinstance(error, pitsolve.DistributedError) and error.ranks == (3, 5)
    assert str(error).startswith(
        "pitsolve.distributed: the ranks fell out of step at exchange 4 (rank 0: exchange 4 (Φ, 6 rows); "
        "rank 3: not a pitsolve exchange; rank 5: exchange 3 (coarse G, 6 rows))"
    )


def test_errors_travel_as_bytes_and_keep_their_type():
    raw = encode_error(pitsolve.NonFiniteError("the model returned NaN"))
    padded = torch.frombuffer(bytearray(raw.ljust(ERROR_BYTES, b"\0")), dtype=torch.uint8)
    infos = [None, decode_error(padded), decode_error(torch.zeros(ERROR_BYTES, dtype=torch.uint8))]
    error = remote_error(infos, [0, 1, 2], Call.PROPAGATE.value, 2)
    assert type(error) is pitsolve.NonFiniteError and error.ranks == (1,)
    assert str(error) == "rank 1 raised NonFiniteError in Φ of sweep 2: the model returned NaN"
    # A foreign exception becomes a DistributedError; a long message is cut to fit the payload.
    long = decode_error(torch.frombuffer(bytearray(encode_error(KeyError("x" * 10 * ERROR_BYTES))), dtype=torch.uint8))
    assert len(encode_error(KeyError("x" * 10 * ERROR_BYTES))) <= ERROR_BYTES and long["message"].endswith(" …")
    error = remote_error([long, long], [0, 1], "JVP", 3)
    assert type(error) is pitsolve.DistributedError and error.ranks == (0, 1)
    assert str(error).startswith("pitsolve.distributed: rank 0 raised KeyError in JVP of sweep 3 (ranks 1 raised too)")


class FakeBeats:
    """Heartbeats as a rank reads them: ``reads[rank]`` is returned on successive reads."""

    def __init__(self, reads):
        self.reads = {r: iter(b) for r, b in reads.items()}

    def read(self, rank):
        return next(self.reads[rank])


def test_heartbeats_name_a_stopped_and_a_behind_rank():
    where = Position(rank=0, ranks=[0, 1, 2, 3], solve_no=2, exchange=5)
    beats = FakeBeats({
        1: [Beat(2, 10, 3, "running")] * 2,  # no new beat: died or froze
        2: [Beat(2, 10, 4, "running"), Beat(2, 12, 4, "running")],  # alive, at an earlier exchange
        3: [Beat(2, 10, 5, "running"), Beat(2, 11, 5, "running")],  # alive and here
    })
    culprits, story = diagnose(beats, where, interval=0.01, timeout=3)
    assert culprits == [1, 2]
    assert story == (
        "rank 1 stopped (no heartbeat for 0.0 s; last seen at exchange 3): the process died or froze; "
        "rank 2 is alive but has not reached this exchange (it is at exchange 4): it is stuck or slower than "
        "timeout=3 s"
    )
    absent = FakeBeats({1: [None, None], 2: [Beat(1, 3, 9, "running")] * 2, 3: [Beat(2, 4, 5, "left")] * 2})
    culprits, story = diagnose(absent, where, interval=0.01, timeout=3)
    assert culprits == [1, 2] and story.startswith("rank 1, rank 2 never joined this solve")
    assert diagnose(None, where, 0.01, 3)[0] == []
