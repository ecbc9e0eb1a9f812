"""What went wrong in a distributed solve, and the error every rank raises for it.

* a collective that failed or timed out: which other ranks stopped (died or
  froze), fell behind or never joined, from their heartbeats
  (:func:`diagnose`, :func:`failure`);
* ranks out of step, given different solves, or ending differently
  (:func:`out_of_step`, :func:`mismatch`, :func:`ended_differently`);
* an exception raised in one rank's slice, raised alike on every rank
  (:func:`remote_error`).

Ranks are named by their global rank (``torch.distributed.get_rank()``);
``ranks[r]`` maps a rank of the group to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ._errors import (
    ConvergenceError,
    DistributedError,
    InputTypeError,
    InputValueError,
    NonFiniteError,
    PitsolveError,
    RankMismatchError,
)
from ._distributed_heartbeat import Beat, Heartbeat
from ._distributed_protocol import Header, Outcome

__all__ = ["Position", "diagnose", "ended_differently", "failure", "mismatch", "out_of_step", "remote_error"]

_PITSOLVE_ERRORS = {
    cls.__name__: cls
    for cls in (PitsolveError, InputValueError, InputTypeError, ConvergenceError, NonFiniteError, DistributedError)
}


@dataclass(frozen=True)
class Position:
    """Where this rank is: its rank in the group, the group's global ranks, the solve and exchange numbers."""

    rank: int
    ranks: Sequence[int]  # global rank of each rank of the group
    solve_no: int
    exchange: int

    @property
    def world(self) -> int:
        return len(self.ranks)


def failure(where: Position, what: str, err: BaseException, elapsed: float, culprits: List[int], story: str):
    """The :class:`~pitsolve.DistributedError` of a failed collective, naming ``culprits`` (from :func:`diagnose`)."""
    me = f"rank {where.ranks[where.rank]} (of {where.world})"
    return DistributedError(
        f"pitsolve.distributed: {me}: {what} (exchange {where.exchange}) failed after {elapsed:.1f} s: {story}. "
        f"[{type(err).__name__}: {short(str(err), 300)}] Every surviving rank fails with such an error; the "
        "process group cannot be used for further collectives: end the job (torchrun can restart it, "
        "--max-restarts).",
        ranks=culprits,
    )


def diagnose(beat: Optional[Heartbeat], where: Position, interval: float, timeout) -> Tuple[List[int], str]:
    """``(culprits, story)``: which other ranks stopped or fell behind, from two reads of their heartbeats.

    The reads are ``2.5 × interval`` apart: a rank whose beat did not grow
    stopped; one whose beat grew but is at an earlier exchange fell behind.
    """
    if beat is None:
        return [], "no heartbeats (the process group has no store), so the missing rank cannot be named"
    others = [r for r in range(where.world) if r != where.rank]
    try:
        first = {r: beat.read(r) for r in others}
        time.sleep(2.5 * interval)
        last = {r: beat.read(r) for r in others}
    except Exception as err:  # noqa: BLE001 - the store itself is gone
        return [], (
            f"the process group's store is unreachable ({type(err).__name__}: {short(str(err), 120)}): "
            "the process "
            "hosting it (rank 0 with init_method='tcp://…', or the torchrun agent) probably died"
        )
    found = _classify({where.ranks[r]: (first[r], last[r]) for r in others}, where)
    return _story(found, 2.5 * interval, timeout)


def _classify(beats: Dict[int, Tuple[Optional[Beat], Optional[Beat]]], where: Position) -> Dict[str, list]:
    """Sort the other ranks (global rank → two reads) into stopped, behind, absent and left."""
    found: Dict[str, list] = {"stopped": [], "behind": [], "absent": [], "left": []}
    for g, (a, b) in beats.items():
        if b is None or b.solve != where.solve_no:
            found["absent"].append(g)
        elif b.state != "running":
            found["left"].append((g, b.exchange))
        elif a is not None and a.beat == b.beat:
            found["stopped"].append((g, b.exchange))
        elif b.exchange < where.exchange:
            found["behind"].append((g, b.exchange))
    return found


def _story(found: Dict[str, list], silence: float, timeout) -> Tuple[List[int], str]:
    stopped, behind, absent, left = found["stopped"], found["behind"], found["absent"], found["left"]
    parts = []
    if stopped:
        parts.append(
            ", ".join(
                f"rank {g} stopped (no heartbeat for {silence:.1f} s; last seen at exchange {e})" for g, e in stopped
            )
            + ": the process died or froze"
        )
    if behind:
        parts.append(
            ", ".join(f"rank {g} is alive but has not reached this exchange (it is at exchange {e})" for g, e in behind)
            + f": it is stuck or slower than timeout={timeout} s"
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
    if not parts:
        return [], "every other rank is alive and at this exchange; the transport itself failed"
    culprits = [g for g, _ in stopped] + [g for g, _ in behind] + absent
    return culprits or [g for g, _ in left], "; ".join(parts)


def out_of_step(headers: Sequence[Optional[Header]], where: Position) -> DistributedError:
    """The ranks are not all at this exchange of the same call (``None``: a frame that is not a pitsolve header)."""
    seen = "; ".join(
        f"rank {where.ranks[r]}: " + (h.describe() if h is not None else "not a pitsolve exchange")
        for r, h in enumerate(headers)
    )
    keys = [None if h is None else (h.exchange, h.kind, h.rows) for h in headers]
    return DistributedError(
        f"pitsolve.distributed: the ranks fell out of step at exchange {where.exchange} ({seen}); every rank must "
        "run the same solve, call for call (a rank-dependent branch in the system or a callback?).",
        ranks=[where.ranks[r] for r, k in enumerate(keys) if k != keys[0]],
    )


def ended_differently(outcomes: Sequence[Outcome], ranks: Sequence[int]) -> Optional[DistributedError]:
    """``None`` when every rank ended with the same result (status, iterations, …), else the error."""
    if all(o.result() == outcomes[0].result() for o in outcomes):
        return None
    rows = "; ".join(f"rank {ranks[r]}: {o.describe()}" for r, o in enumerate(outcomes))
    return DistributedError(
        f"pitsolve.distributed: the ranks ended the solve differently ({rows}); they must run the same "
        "deterministic solve (same system, settings and hardware type).",
        ranks=[ranks[r] for r, o in enumerate(outcomes) if o.result() != outcomes[0].result()],
    )


def remote_error(infos: Sequence[Optional[dict]], ranks: Sequence[int], call: str, sweep: int) -> PitsolveError:
    """The error every rank raises for the errors ``infos`` (decoded, ``None`` for ranks without one).

    A pitsolve error keeps its type (a :class:`~pitsolve.DistributedError`
    for any other); the message names the first failing rank, the call
    (``call``, e.g. ``"Φ"``) and the sweep, and ``ranks`` all failing ranks.
    """
    failing = [r for r, i in enumerate(infos) if i is not None]
    first = infos[failing[0]]
    also = f" (ranks {', '.join(str(ranks[r]) for r in failing[1:])} raised too)" if len(failing) > 1 else ""
    message = f"rank {ranks[failing[0]]} raised {first['type']} in {call} of sweep {sweep}{also}: {first['message']}"
    cls = _PITSOLVE_ERRORS.get(first["type"]) if first.get("pitsolve") else None
    culprits = [ranks[r] for r in failing]
    if cls is None or issubclass(cls, DistributedError):
        return DistributedError(f"pitsolve.distributed: {message}", ranks=culprits)
    exc = cls(message)
    exc.ranks = tuple(culprits)
    return exc


def mismatch(prints: Sequence[Dict[str, str]], ranks: Sequence[int]) -> Optional[RankMismatchError]:
    """``None`` when every rank's fingerprint is the same, else the error naming each differing field."""
    diffs, culprits = [], set()
    for key in dict.fromkeys(k for p in prints for k in p):
        values = [p.get(key, "<missing>") for p in prints]
        if len(set(values)) == 1:
            continue
        by_value: Dict[str, List[int]] = {}
        for r, v in enumerate(values):
            by_value.setdefault(v, []).append(ranks[r])
        culprits.update(ranks[r] for r, v in enumerate(values) if v != values[0])
        diffs.append(f"  {key}: " + "; ".join(
            f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {short(v)}" for v, rs in by_value.items()
        ))
    if not diffs:
        return None
    return RankMismatchError(
        f"pitsolve.distributed: the {len(prints)} ranks were given different solves; they differ in\n"
        + "\n".join(diffs)
        + "\nEvery rank must build the same system (seed every rank alike, e.g. torch.manual_seed(0) "
        "before building the model and the initial state) and call solve with the same options.",
        ranks=sorted(culprits),
    )


def short(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
