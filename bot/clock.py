"""Time. Backtest and live differ only in the clock: nothing else calls ``time.time()``."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall time in nanoseconds since the epoch (replay: the time of the record being replayed)."""
        ...

    def monotonic_ns(self) -> int:
        """A clock for measuring intervals and ages; never goes backwards."""
        ...


class LiveClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ReplayClock:
    """Advanced by the replay driver to each record's timestamp before the record is dispatched."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def advance_to(self, ts_ns: int) -> None:
        if ts_ns > self._now:
            self._now = ts_ns

    def now_ns(self) -> int:
        return self._now

    def monotonic_ns(self) -> int:
        return self._now
