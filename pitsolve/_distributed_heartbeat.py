"""Each rank's heartbeat in the process group's store, read to name a rank that died, froze or fell behind.

A rank writes ``"<solve> <beat> <exchange> <state>"`` under
``pitsolve/heartbeat/<rank>``: the number of the solve in this group, a
counter that grows while the process lives, the exchange it is at, and
``running`` or ``left`` (it ended the solve).  :mod:`._distributed_diagnosis`
reads the others' beats when an exchange fails.
"""

from __future__ import annotations

import threading
from typing import NamedTuple, Optional

__all__ = ["Beat", "Heartbeat"]


class Beat(NamedTuple):
    """What a rank last wrote to the store."""

    solve: int  # the solve's number in this group (all ranks count alike)
    beat: int  # grows with every write while the process lives
    exchange: int  # the exchange the rank is at
    state: str  # "running", or "left" once it ended the solve


class Heartbeat:
    """A daemon thread writing this rank's :class:`Beat` to the group's store.

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
    def begin(cls, group, rank: int, solve_no: int, interval: float) -> Optional["Heartbeat"]:
        """A running heartbeat, or ``None`` when the group has no usable store (failures then name no rank)."""
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
        """The exchange this rank is at; setting it wakes the thread to publish it."""
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

    def read(self, rank: int) -> Optional[Beat]:
        """What ``rank`` last wrote, or ``None`` if it never wrote one."""
        key = self._key(rank)
        if not self.store.check([key]):
            return None
        solve, beat, exchange, state = self.store.get(key).decode().split()
        return Beat(int(solve), int(beat), int(exchange), state)

    def stop(self, publish: bool = True) -> None:
        """End the thread; with ``publish``, write ``left`` (not after a failure: the store may be gone)."""
        self._stop.set()
        self._moved.set()
        self._thread.join(timeout=5 * self.interval)
        if publish:  # a write to a store that is gone could block
            try:
                self._publish("left")
            except Exception:  # noqa: BLE001
                pass


def _store_of(group):
    getter = getattr(group, "get_group_store", None)
    try:
        if callable(getter):
            return getter()
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001
        return None
