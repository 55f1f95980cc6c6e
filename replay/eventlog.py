"""The replay's event log: every event of the order path, one JSON line each, in publish order.

    {"type": "Fill", "ts_event": ..., "ts_recv": ..., "client_order_id": ..., ...}

Types: the bot's own event classes (``bot.events``, ``bot.orders``; fields ``msgspec.to_builtins``:
Decimals as strings, enums as their values, times as int ns) plus ``Price``, the mid of every book the
replay carries at each grid tick (bar close, for bar books), which the report values buy-and-hold and
scores signals with. Times are replay time (``ts_recv`` is the replay clock), nothing is wall-clock, so
the same inputs give the same bytes. Written as it happens (buffered), never held whole.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import msgspec

from bot.bus import EventBus
from bot.events import BookCrossed, BookHealth, Event, Signal, Venue
from bot.orders import (
    EquitySnapshot,
    Fill,
    FundingRate,
    OrderDenied,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TargetPosition,
)

LOGGED: tuple[type[Event], ...] = (
    Signal, TargetPosition, OrderUpdate, Fill, OrderDenied, RiskStateChanged, StrategyHealth, BookHealth,
    BookCrossed, EquitySnapshot, FundingRate,
)  # fmt: skip


class Price(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    ts_recv: int
    venue: Venue
    symbol: str
    mid: float


class EventLog:
    """Writes ``LOGGED`` events (and ``Price`` lines) to ``path``; ``since_ns``: only from that time on."""

    def __init__(self, path: Path, since_ns: int = 0) -> None:
        self.path = path
        self._fh: io.BufferedWriter = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._enc = msgspec.json.Encoder()
        self.since_ns = since_ns
        self.counts: dict[str, int] = {}
        self._heads: dict[type, bytes] = {}  # event class -> b'{"type":"Name",'

    def attach(self, bus: EventBus) -> None:
        for t in LOGGED:
            bus.subscribe(t, self.write)

    def write(self, ev: Any) -> None:
        """One line: ``{"type": <class name>, **msgspec.to_builtins(ev)}`` as JSON. Written as the type's key
        followed by the event struct's own encoding (its fields, in order, from its first: an event has
        at least its two times): the same bytes, without building the dict."""
        if ev.ts_recv < self.since_ns:
            return
        cls = type(ev)
        head = self._heads.get(cls)
        if head is None:
            name = cls.__name__
            head = self._heads[cls] = b'{"type":' + self._enc.encode(name) + b","
        else:
            name = cls.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        body = self._enc.encode(ev)
        self._fh.write(head + memoryview(body)[1:] + b"\n")

    def close(self) -> None:
        self._fh.close()
