"""What every strategy needs and none should re-derive: mids (and the top of book) from book events,
quantities from notionals, the model horizon in seconds from a Signal's label, and (``Directional``) the
per-symbol direction, entry time and time exit that the single-instrument kinds (threshold, multihorizon,
forecaster) share, with their orders' style and timeout (``strategies.limit``), their config plumbing and
the first steps of every signal (``Directional.on_signal``: a kind writes only ``decide``).

A Signal's ``horizon`` is the workers' label (``bot.workers.duration_label``): ``"10s"``, ``"60m"``,
``"5s,10s,15s,20s"``. Parsing it here keeps strategies from hard-coding a checkpoint's horizon.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any, Generic, Protocol, TypeVar

from bot.events import BookUpdate, Signal, Venue
from bot.orders import Intent, OrderUpdate, TargetPosition
from strategies.base import NO_INTENTS, Strategy
from strategies.limit import LimitOrders, OrderStyle

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
    """The latest mid, spread (bps of the mid) and top (best bid, best ask) per (venue, symbol), from
    ``BookUpdate`` top of book.

    A one-sided or crossed top is ignored: the previous good one stays (the book heals or resyncs)."""

    def __init__(self) -> None:
        self._mid: dict[Key, float] = {}
        self._spread_bps: dict[Key, float] = {}
        self._top: dict[Key, tuple[float, float]] = {}

    def on_book(self, b: BookUpdate) -> None:
        if b.bid_px > 0 and b.ask_px >= b.bid_px:
            mid = 0.5 * (b.bid_px + b.ask_px)
            key = (b.venue, b.symbol)
            self._mid[key] = mid
            self._spread_bps[key] = (b.ask_px - b.bid_px) / mid * 1e4
            self._top[key] = (b.bid_px, b.ask_px)

    def top(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        return self._top.get((venue, symbol))

    def mid(self, venue: Venue, symbol: str) -> float | None:
        return self._mid.get((venue, symbol))

    def spread_bps(self, venue: Venue, symbol: str) -> float | None:
        return self._spread_bps.get((venue, symbol))


def sign_of(x: float) -> int:
    return 1 if x > 0 else -1 if x < 0 else 0


class DirectionalConfig(OrderStyle, Protocol):
    """The config fields ``Directional`` reads (``ThresholdConfig``, ``MultiHorizonConfig``,
    ``ForecasterConfig`` all have them)."""

    @property
    def name(self) -> str: ...
    @property
    def venue(self) -> Venue: ...
    @property
    def symbols(self) -> Sequence[str]: ...
    @property
    def model(self) -> str: ...
    @property
    def hold_s(self) -> float | None: ...


C = TypeVar("C", bound=DirectionalConfig)


class Directional(Strategy, Generic[C]):
    """Shared by the single-instrument kinds: per symbol the direction it holds (+1, -1, absent = flat), when
    it entered and for how long it may hold; time exits on any event-clock tick. Each kind reads one model's
    signals and is configured by one ``strategies.config`` model (``cfg``); it writes only ``decide``.

    The direction is what the strategy asked for (its last ``TargetPosition``), not what filled: the engine
    owns getting there, and a later target simply replaces an earlier one. After a restart (``restore``) a
    restored position is held until the opposite signal, or for ``hold_s`` (when configured) counted from
    the first event seen after the restart: its model horizon is not known before a signal.

    Limit orders (``style.order_type = "limit"``) may end unfilled: when one ends short of the target
    (``LimitOrders.on_order``), the direction is set to what the position really is (flat: none; a failed
    exit: the position's, with its old entry time and hold, so a time exit fires again) and the symbol is
    *unreached* until the next target: a subclass treats a signal in the held direction as a new entry
    then (``unreached``), so the strategy targets again at its next decision."""

    def __init__(self, cfg: C) -> None:
        super().__init__(cfg.name, cfg.venue, cfg.symbols, (cfg.model,))
        self.cfg = cfg
        self.mids = Mids()
        self.counts: collections.Counter[str] = collections.Counter()
        self.orders = LimitOrders(cfg.name, cfg.venue, cfg, self.counts)
        self._dir: dict[str, int] = {}
        self._entry_ns: dict[str, int | None] = {}  # kept after an exit: a failed limit exit holds on
        self._hold_ns: dict[str, int | None] = {}
        self._unreached: set[str] = set()

    def on_signal(self, s: Signal) -> Sequence[Intent]:
        """Counted, with any time exit due first; then the kind's ``decide``."""
        if s.symbol not in self.symbols:
            return NO_INTENTS
        self.counts["signals"] += 1
        out = self.time_exits(s.ts_recv) if self._dir else []
        return self.decide(s, out)

    def decide(self, s: Signal, out: list[Intent]) -> Sequence[Intent]:
        """The kind's answer to a signal of one of its symbols: ``out`` (the time exits due) and what it adds."""
        return out

    def hold_for(self, label: str, index: int = 0) -> float | None:
        """How long an entry is held: ``hold_s``, else the ``index``-th horizon of the duration label
        ``label`` (None when it has none: held until the opposite signal)."""
        if self.cfg.hold_s is not None:
            return self.cfg.hold_s
        horizons = horizon_seconds(label)
        return horizons[index] if index < len(horizons) else None

    def direction(self, symbol: str) -> int:
        return self._dir.get(symbol, 0)

    def unreached(self, symbol: str) -> bool:
        """An order for the last target of ``symbol`` ended short of it (see the class docstring)."""
        return symbol in self._unreached

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

    def exit(self, symbol: str, ts_ns: int, signal_ts: int | None, reason: str, *,
             time_exit: bool = False) -> TargetPosition:
        self._dir.pop(symbol, None)
        self.counts["exits"] += 1
        return self._target(symbol, Decimal(0), ts_ns, signal_ts, reason, time_exit)

    def _target(self, symbol: str, qty: Decimal, ts_ns: int, signal_ts: int | None, reason: str,
                time_exit: bool = False) -> TargetPosition:
        self._unreached.discard(symbol)
        return self.orders.target(symbol=symbol, qty=qty, position=self.position(self.venue, symbol),
                                  top=self.mids.top(self.venue, symbol), ts_ns=ts_ns, signal_ts=signal_ts,
                                  reason=reason, time_exit=time_exit)

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
                out.append(self.exit(symbol, ts_ns, None, f"held {hold / NS_PER_S:g}s", time_exit=True))
        return out

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        self.mids.on_book(b)
        return self._on_tick(b.ts_recv)

    def on_time(self, ts_ns: int) -> Sequence[Intent]:
        return self._on_tick(ts_ns)

    def _on_tick(self, ts_ns: int) -> Sequence[Intent]:
        cancels = self.orders.expired(ts_ns)
        exits = self.time_exits(ts_ns) if self._dir else NO_INTENTS
        return [*cancels, *exits] if cancels else exits

    def on_order(self, o: OrderUpdate) -> Sequence[Intent]:
        symbol = self.orders.on_order(o)
        if symbol is not None:
            self._settle(symbol)
        return NO_INTENTS

    def _settle(self, symbol: str) -> None:
        """An order ended short of its target: the direction becomes what the position is."""
        self._unreached.add(symbol)
        pos = self.position(self.venue, symbol)
        held = 1 if pos > 0 else -1 if pos < 0 else 0
        if held == 0:
            if self._dir.pop(symbol, None) is not None:
                self.counts["unfilled_flat"] += 1
        elif self._dir.get(symbol) != held:
            self._dir[symbol] = held
            self._entry_ns.setdefault(symbol, None)
            if symbol not in self._hold_ns:
                hold_s = self.restored_hold_s()
                self._hold_ns[symbol] = None if hold_s is None else int(hold_s * NS_PER_S)
            self.counts["unfilled_still_held"] += 1

    def restore(self, positions: Mapping[Key, Decimal]) -> None:
        super().restore(positions)
        for (venue, symbol), qty in positions.items():
            if venue == self.venue and symbol in self.symbols and qty != 0:
                self._dir[symbol] = 1 if qty > 0 else -1
                self._entry_ns[symbol] = None
                hold_s = self.restored_hold_s()
                self._hold_ns[symbol] = None if hold_s is None else int(hold_s * NS_PER_S)

    def restored_hold_s(self) -> float | None:
        """How long a position restored after a restart is held: ``hold_s`` (its model horizon is not known
        before a signal)."""
        return self.cfg.hold_s

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "holding": dict(self._dir), **self.counts}
