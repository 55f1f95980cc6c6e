"""What every strategy needs and none should re-derive: mids from book events, quantities from notionals,
the model horizon in seconds from a Signal's label, and (``Directional``) the per-symbol direction, entry
time and time exit that the single-instrument kinds (threshold, multihorizon, forecaster) share.

A Signal's ``horizon`` is the workers' label (``bot.workers.duration_label``): ``"10s"``, ``"60m"``,
``"5s,10s,15s,20s"``. Parsing it here keeps strategies from hard-coding a checkpoint's horizon.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any

from bot.events import BookUpdate, Venue
from bot.orders import Intent, TargetPosition
from strategies.base import NO_INTENTS, Strategy

QTY_QUANTUM = Decimal("1e-8")  # finer than any venue's step; the risk gate rounds to the real step
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LABEL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
NS_PER_S = 1_000_000_000

Key = tuple[Venue, str]


def horizon_seconds(label: str) -> tuple[float, ...]:
    """``"5s,10s,1m"`` -> ``(5.0, 10.0, 60.0)``; a part that is not a duration label is left out."""
    out = []
    for part in label.split(","):
        m = _LABEL.match(part)
        if m:
            out.append(float(m.group(1)) * _UNITS[m.group(2)])
    return tuple(out)


def qty_for(notional: Decimal, mid: float, sign: int = 1) -> Decimal:
    """Signed base quantity worth ``notional`` (quote asset) at ``mid``, rounded toward zero."""
    if sign == 0 or notional <= 0 or not mid > 0:
        return Decimal(0)
    q = (notional / Decimal(repr(mid))).quantize(QTY_QUANTUM, rounding=ROUND_DOWN)
    return q if sign > 0 else -q


class Mids:
    """The latest mid and spread (bps of the mid) per (venue, symbol), from ``BookUpdate`` top of book.

    A one-sided or crossed top is ignored: the previous good mid stays (the book heals or resyncs)."""

    def __init__(self) -> None:
        self._mid: dict[Key, float] = {}
        self._spread_bps: dict[Key, float] = {}

    def on_book(self, b: BookUpdate) -> None:
        if b.bid_px > 0 and b.ask_px >= b.bid_px:
            mid = 0.5 * (b.bid_px + b.ask_px)
            key = (b.venue, b.symbol)
            self._mid[key] = mid
            self._spread_bps[key] = (b.ask_px - b.bid_px) / mid * 1e4

    def mid(self, venue: Venue, symbol: str) -> float | None:
        return self._mid.get((venue, symbol))

    def spread_bps(self, venue: Venue, symbol: str) -> float | None:
        return self._spread_bps.get((venue, symbol))


def sign_of(x: float) -> int:
    return 1 if x > 0 else -1 if x < 0 else 0


class Directional(Strategy):
    """Shared by the single-instrument kinds: per symbol the direction it holds (+1, -1, absent = flat), when
    it entered and for how long it may hold; time exits on any event-clock tick.

    The direction is what the strategy asked for (its last ``TargetPosition``), not what filled: the engine
    owns getting there, and a later target simply replaces an earlier one. After a restart (``restore``) a
    restored position is held until the opposite signal, or for ``hold_s`` (when configured) counted from
    the first event seen after the restart: its model horizon is not known before a signal."""

    def __init__(self, name: str, venue: Venue, symbols: Sequence[str], models: Sequence[str]) -> None:
        super().__init__(name, venue, symbols, models)
        self.mids = Mids()
        self.counts: collections.Counter[str] = collections.Counter()
        self._dir: dict[str, int] = {}
        self._entry_ns: dict[str, int | None] = {}
        self._hold_ns: dict[str, int | None] = {}

    def direction(self, symbol: str) -> int:
        return self._dir.get(symbol, 0)

    def enter(self, symbol: str, direction: int, notional: Decimal, ts_ns: int, signal_ts: int,
              hold_s: float | None, reason: str) -> TargetPosition | None:
        """The target for ``notional`` in ``direction`` at the latest mid; None (counted) without a mid."""
        mid = self.mids.mid(self.venue, symbol)
        qty = qty_for(notional, mid, direction) if mid is not None else Decimal(0)
        if qty == 0:
            self.counts["no_mid" if mid is None else "zero_qty"] += 1
            return None
        self._dir[symbol] = direction
        self._entry_ns[symbol] = ts_ns
        self._hold_ns[symbol] = None if hold_s is None else int(hold_s * NS_PER_S)
        self.counts["entries_long" if direction > 0 else "entries_short"] += 1
        return self._target(symbol, qty, ts_ns, signal_ts, reason)

    def exit(self, symbol: str, ts_ns: int, signal_ts: int | None, reason: str) -> TargetPosition:
        self._dir.pop(symbol, None)
        self._entry_ns.pop(symbol, None)
        self._hold_ns.pop(symbol, None)
        self.counts["exits"] += 1
        return self._target(symbol, Decimal(0), ts_ns, signal_ts, reason)

    def _target(self, symbol: str, qty: Decimal, ts_ns: int, signal_ts: int | None, reason: str) -> TargetPosition:
        return TargetPosition(ts_event=ts_ns, ts_recv=ts_ns, strategy=self.name, venue=self.venue, symbol=symbol,
                              qty=qty, signal_ts=signal_ts, reason=reason)

    def time_exits(self, ts_ns: int) -> list[Intent]:
        out: list[Intent] = []
        for symbol in list(self._dir):
            entry = self._entry_ns.get(symbol)
            if entry is None:  # restored: the hold starts now
                self._entry_ns[symbol] = ts_ns
                continue
            hold = self._hold_ns.get(symbol)
            if hold is not None and ts_ns - entry >= hold:
                self.counts["time_exits"] += 1
                out.append(self.exit(symbol, ts_ns, None, f"held {hold / NS_PER_S:g}s"))
        return out

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        self.mids.on_book(b)
        return self.time_exits(b.ts_recv) if self._dir else NO_INTENTS

    def on_time(self, ts_ns: int) -> Sequence[Intent]:
        return self.time_exits(ts_ns) if self._dir else NO_INTENTS

    def restore(self, positions: Mapping[Key, Decimal]) -> None:
        super().restore(positions)
        for (venue, symbol), qty in positions.items():
            if venue == self.venue and symbol in self.symbols and qty != 0:
                self._dir[symbol] = 1 if qty > 0 else -1
                self._entry_ns[symbol] = None
                hold_s = self.restored_hold_s()
                self._hold_ns[symbol] = None if hold_s is None else int(hold_s * NS_PER_S)

    def restored_hold_s(self) -> float | None:
        """How long a position restored after a restart is held (subclasses: their ``hold_s``)."""
        return None

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "holding": dict(self._dir), **self.counts}
