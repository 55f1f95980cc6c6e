"""The trading engine: market events and signals in, risk-checked orders out, fills booked.

    bus ─► Engine ─► strategies (pure) ─► intents ─► target → order ─► RiskGate.check ─► Execution.submit
                                                                        └─ denied: OrderDenied (the gate publishes it)
    Execution ─► OrderUpdate / Fill ─► bus ─► Engine ─► Ledger, RiskGate, the strategy that owns the order

Synchronous and clock-driven like the parts it wires: it never reads a clock. Time comes from the events
(``ts_recv``, the bot's event clock) and from ``on_time(ts)``, which the live app calls from a timer and the
replay engine from the recording; so a replay drives exactly this object.

Ordering. Each market event goes first to the ledger (mark), the risk gate (mid, health) and the paper
matcher (resting orders meet the new book), then to the strategies. Intents are never acted on inside
another component's callback: they are queued and handled when the outermost handler returns, so a fill
published from inside the matcher's loop cannot re-enter the matcher.

Quiet books. A book no strategy trades and on which the paper matcher holds nothing (no order in flight
anywhere, none resting and no taken liquidity on that book) needs of its ``BookUpdate`` events only the
last mark, the last mid and the newest times: the engine takes such runs as one batch (``bot.bus``
batches, ``on_book_updates``), with the same effect as the events one by one. ``Trade`` events matter
only to the paper matcher's resting orders and due arrivals: an engine with no strategy (and no order
restored) never reads its clock, so it does not subscribe to them at all, and only such an engine offers
the batch form (with trades to publish, a replay loop could not make runs long enough to pay).

Targets. A ``TargetPosition`` becomes one order for ``target - (position + open orders)`` of that
strategy (its own position, from its own fills), after cancelling its open orders that point the other
way. A difference below the instrument's minimum quantity or notional is dust: counted, no order, no
denial (otherwise every signal of a flat strategy would be denied).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

import numpy as np
import structlog

from bot.bus import EventBus
from bot.events import BookCrossed, BookHealth, BookUpdate, BookUpdates, KlineClosed, Side, Signal, Trade, Venue
from bot.execution.base import Execution
from bot.orders import (
    ZERO,
    CancelIntent,
    ClockSkew,
    Fill,
    FundingRate,
    Instrument,
    InstrumentInfo,
    Intent,
    OrderIntent,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    TargetPosition,
    TradingState,
)
from strategies.base import Strategy

log = structlog.get_logger(__name__)

Key = tuple[Venue, str]


class Gate(Protocol):
    """What the engine needs of ``bot.risk.RiskGate``."""

    @property
    def state(self) -> TradingState: ...
    def check(self, intent: OrderIntent, client_order_id: str, now_ns: int) -> OrderRequest | Any: ...
    def register_strategy(self, name: str, models: Sequence[str]) -> None: ...
    def on_instrument(self, ev: InstrumentInfo) -> None: ...
    def on_book(self, ev: BookUpdate) -> None: ...
    def on_top(self, venue: Venue, symbol: str, bid_px: float, ask_px: float) -> None: ...
    def on_health(self, ev: BookHealth) -> None: ...
    def on_crossed(self, ev: BookCrossed) -> None: ...
    def on_skew(self, ev: ClockSkew) -> None: ...
    def on_signal(self, s: Signal) -> None: ...
    def on_order(self, o: OrderUpdate) -> None: ...
    def on_equity(self, equity: Decimal, ts_ns: int) -> None: ...
    def on_time(self, ts_ns: int) -> None: ...
    def halt(self, reason: str, ts_ns: int) -> None: ...
    def reduce(self, reason: str, ts_ns: int) -> None: ...
    def resume(self, ts_ns: int) -> None: ...


class Books(Protocol):
    """What the engine needs of ``bot.ledger.Ledger``."""

    def on_fill(self, f: Fill) -> None: ...
    def on_mark(self, venue: Venue, symbol: str, price: float | Decimal) -> None: ...
    def on_funding(self, fr: FundingRate, ts_ns: int) -> None: ...
    def settle_funding(self, ts_ns: int, venue: Venue | None = None) -> None: ...
    def equity(self, venue: Venue | None = None) -> Decimal: ...
    def snapshot(self, venue: Venue, ts_ns: int) -> Any: ...


class MatchesBooks(Protocol):
    """The paper matcher's market-data hooks (live execution has none). ``quiet(venue, symbol)``, where it
    has it (``PaperExecution``): the book's events would only move the matcher's clock on."""

    def on_book(self, ev: BookUpdate) -> None: ...
    def on_trade(self, ev: Trade) -> None: ...
    def on_time(self, ts_ns: int) -> None: ...


@dataclass
class EngineStats:
    intents: int = 0
    orders: int = 0
    cancels: int = 0
    denied: int = 0
    fills: int = 0
    dust: int = 0
    strategy_errors: int = 0
    order_status: collections.Counter[str] = field(default_factory=collections.Counter)


class Engine:
    def __init__(
        self,
        strategies: Sequence[Strategy],
        gate: Gate,
        execution: Execution,
        ledger: Books,
        *,
        accounts: Iterable[Venue],
        snapshot_every_ns: int,
        next_seq: int = 1,
        order_prefix: str = "b",
    ) -> None:
        self.strategies = list(strategies)
        self.gate = gate
        self.execution = execution
        self.ledger = ledger
        self.accounts = tuple(accounts)
        self.snapshot_every_ns = snapshot_every_ns
        self.next_seq = next_seq
        self.order_prefix = order_prefix
        self.stats = EngineStats()
        self.instruments: dict[Key, Instrument] = {}
        self._by_name = {s.name: s for s in self.strategies}
        self._open: dict[str, OrderUpdate] = {}  # client_order_id -> last update, open orders only
        self._cancelling: set[str] = set()  # open orders with a cancel sent: they no longer count
        self._pending: collections.deque[tuple[Strategy, Intent]] = collections.deque()
        self.latest_fills: collections.deque[Fill] = collections.deque(maxlen=5)  # for the status view
        self._depth = 0  # > 0 while inside a handler: intents wait in _pending
        self._now = 0
        self._venue_now: dict[Venue, int] = {}  # each perpetual venue's own clock (its funding times are in it)
        self._next_snapshot = 0
        self._publish: Any = None
        self._matcher: MatchesBooks | None = execution if hasattr(execution, "on_book") else None  # type: ignore[assignment]
        self._quiet: Any = getattr(self._matcher, "quiet", None)  # (venue, symbol) -> bool, or None: never quiet
        self._bus: EventBus | None = None
        self._hears_trades = False
        self._traders: dict[Key, tuple[Strategy, ...]] = {}  # (venue, symbol) -> the strategies trading it
        self._perp: dict[Venue, bool] = {}  # venue -> not spot (its events carry the venue's funding clock)
        on_mid = getattr(ledger, "on_mid", None)  # bot.ledger.Ledger: the mark converted when it is read
        self._on_mid: Any = on_mid if on_mid is not None else self._mark_now
        for s in self.strategies:
            gate.register_strategy(s.name, s.models)

    # -- wiring ---------------------------------------------------------------------------------------

    def attach(self, bus: EventBus) -> None:
        self._publish = bus.publish
        self._bus = bus
        self._listen_trades()
        if self._hears_trades:
            # No batch form: an offline loop stops at every trade it must publish, so the runs of updates
            # would be too short to pay for the stops (the same events either way, only slower).
            bus.subscribe(BookUpdate, self.on_book)
        else:
            bus.subscribe(BookUpdate, self.on_book, batch=self.on_book_updates, batch_ok=self.takes_book_batch)
        bus.subscribe(KlineClosed, self.on_bar)
        bus.subscribe(Signal, self.on_signal)
        bus.subscribe(BookHealth, self._guard(self.gate.on_health))
        bus.subscribe(BookCrossed, self._guard(self.gate.on_crossed))
        bus.subscribe(ClockSkew, self._guard(self.gate.on_skew))
        bus.subscribe(InstrumentInfo, self.on_instrument)
        bus.subscribe(FundingRate, self.on_funding)
        bus.subscribe(OrderUpdate, self.on_order)
        bus.subscribe(Fill, self.on_fill)

    def restore(self, fills: Sequence[Fill], open_orders: Sequence[OrderUpdate], ts_ns: int) -> None:
        """After a restart: rebuild the ledger and each strategy's position from the persisted fills, and
        hand the still-open orders back to execution (paper: they rest again)."""
        per_strategy: dict[str, dict[Key, Decimal]] = collections.defaultdict(dict)
        for f in fills:
            self.ledger.on_fill(f)
            pos = per_strategy[f.strategy]
            key = (f.venue, f.symbol)
            pos[key] = pos.get(key, ZERO) + (f.qty if f.side is Side.BUY else -f.qty)
        for name, positions in per_strategy.items():
            strategy = self._by_name.get(name)
            if strategy is not None:
                strategy.restore(positions)
        for o in open_orders:
            self._open[o.client_order_id] = o
            self.gate.on_order(o)  # they count toward the position and exposure limits again
        restore = getattr(self.execution, "restore", None)
        if restore is not None and open_orders:
            restore(list(open_orders), ts_ns)
        self._listen_trades()
        # each strategy learns its own open orders (to time them out, or count them toward its targets)
        self._enter(ts_ns)
        try:
            for o in open_orders:
                owner = self._by_name.get(o.strategy)
                if owner is not None:
                    self._call(owner, owner.on_order, o)
        finally:
            self._leave()

    def _listen_trades(self) -> None:
        """Subscribe to ``Trade`` (once attached) when a trade could ever matter: a strategy may send orders
        (a trade moves the clock they are decided at, and the matcher's), or orders were restored. Without
        either, a trade only moved clocks nothing reads (intents come from strategies alone; the matcher
        holds nothing), so the event need not be made at all."""
        if self._hears_trades or self._bus is None:
            return
        if self.strategies or self._open:
            self._bus.subscribe(Trade, self.on_trade)
            self._hears_trades = True

    def _trading(self, key: Key) -> tuple[Strategy, ...]:
        """The strategies that trade ``key``, in their order (``Strategy.trades`` depends on nothing else)."""
        t = self._traders.get(key)
        if t is None:
            t = self._traders[key] = tuple(s for s in self.strategies if s.trades(*key))
        return t

    def _mark_now(self, venue: Venue, symbol: str, bid_px: float, ask_px: float) -> None:
        # the exact mid of the two printed prices
        self.ledger.on_mark(venue, symbol, (Decimal(repr(bid_px)) + Decimal(repr(ask_px))) / 2)

    # -- market events ----------------------------------------------------------------------------------

    def on_book(self, ev: BookUpdate) -> None:
        self._enter(ev.ts_recv)
        try:
            venue = ev.venue
            perp = self._perp.get(venue)
            if perp is None:
                perp = self._perp[venue] = venue.market != "spot"
            if perp and ev.ts_event > self._venue_now.get(venue, 0):
                self._venue_now[venue] = ev.ts_event
            if ev.bid_px > 0 and ev.ask_px > 0:  # the exact mid of the two printed prices
                self._on_mid(venue, ev.symbol, ev.bid_px, ev.ask_px)
            self.gate.on_book(ev)
            if self._matcher is not None:
                self._matcher.on_book(ev)
            for s in self._trading((venue, ev.symbol)):
                self._call(s, s.on_book, ev)
        finally:
            self._leave()

    def takes_book_batch(self, venue: Venue, symbol: str) -> bool:
        """Whether this book's ``BookUpdate`` events may come as one batch handed over late (``bot.bus``): no
        strategy trades it and the matcher is quiet on it (``PaperExecution.quiet``: nothing in flight,
        nothing resting or taken there). Then an update only sets the mark, the gate's mid and the clocks,
        and the last of each is what a batch sets."""
        if self._trading((venue, symbol)):
            return False
        return self._matcher is None or (self._quiet is not None and bool(self._quiet(venue, symbol)))

    def on_book_updates(self, batch: BookUpdates) -> None:
        """``on_book`` for each update of a batch (every book in it ``takes_book_batch``): the newest times
        move the clocks, the last two-sided top of each book is its mark, its last top the gate's mid.
        Books are marked in the order of their first two-sided top, as the events would first mark them."""
        venue = batch.venue
        symbols = batch.symbols
        present = [k for k, n in enumerate(batch.count.tolist()) if n]
        for k in present:
            if not self.takes_book_batch(venue, symbols[k]):
                for ev in batch.events():  # a batch it did not take: one by one
                    self.on_book(ev)
                return
        if not present:
            return
        newest = int(batch.max_recv.max())
        self._enter(newest)
        try:
            perp = self._perp.get(venue)
            if perp is None:
                perp = self._perp[venue] = venue.market != "spot"
            if perp:
                ts_event = int(batch.ts_event.max())
                if ts_event > self._venue_now.get(venue, 0):
                    self._venue_now[venue] = ts_event
            top = batch.top
            two_sided = (top[:, 0] > 0) & (top[:, 2] > 0)
            if len(present) == 1:  # one book: every row is its own
                symbol = symbols[present[0]]
                bp, _, ap, _ = top[-1].tolist()
                self.gate.on_top(venue, symbol, bp, ap)
                marked = np.flatnonzero(two_sided)
                if len(marked):
                    mbp, _, map_, _ = top[marked[-1]].tolist()
                    self._on_mid(venue, symbol, mbp, map_)
            else:
                books = batch.book
                marks = []
                for k in present:
                    rows = np.flatnonzero(books == k)
                    bp, _, ap, _ = top[rows[-1]].tolist()
                    self.gate.on_top(venue, symbols[k], bp, ap)
                    marked = rows[two_sided[rows]]
                    if len(marked):
                        mbp, _, map_, _ = top[marked[-1]].tolist()
                        marks.append((int(marked[0]), symbols[k], mbp, map_))
                for _, symbol, mbp, map_ in sorted(marks):
                    self._on_mid(venue, symbol, mbp, map_)
            if self._matcher is not None:
                self._matcher.on_time(newest)  # quiet: the matcher's clock only
        finally:
            self._leave()

    def on_trade(self, ev: Trade) -> None:
        self._enter(ev.ts_recv)
        try:
            if self._matcher is not None:
                self._matcher.on_trade(ev)
        finally:
            self._leave()

    def on_bar(self, k: KlineClosed) -> None:
        self._enter(k.ts_recv)
        try:
            for s in self.strategies:
                if s.trades(k.venue, k.symbol):
                    self._call(s, s.on_bar, k)
        finally:
            self._leave()

    def on_signal(self, sig: Signal) -> None:
        self._enter(sig.ts_recv)
        try:
            self.gate.on_signal(sig)
            for s in self.strategies:
                if s.wants_signal(sig):
                    self._call(s, s.on_signal, sig)
        finally:
            self._leave()

    def on_instrument(self, ev: InstrumentInfo) -> None:
        self.instruments[(ev.instrument.venue, ev.instrument.symbol)] = ev.instrument
        self.gate.on_instrument(ev)

    def on_funding(self, ev: FundingRate) -> None:
        # funding times are in the venue's clock (in replay and sim another day than ours): compare them
        # with the venue's own times, never with the local clock
        self.ledger.on_funding(ev, max(ev.ts_event, self._venue_now.get(ev.venue, 0)))

    # -- own orders and fills ---------------------------------------------------------------------------

    def on_order(self, o: OrderUpdate) -> None:
        self._enter(o.ts_recv)
        try:
            self.stats.order_status[o.status.value] += 1
            if o.status.is_open:
                self._open[o.client_order_id] = o
            else:
                self._open.pop(o.client_order_id, None)
                self._cancelling.discard(o.client_order_id)
            self.gate.on_order(o)
            s = self._by_name.get(o.strategy)
            if s is not None:
                self._call(s, s.on_order, o)
        finally:
            self._leave()

    def on_fill(self, f: Fill) -> None:
        self._enter(f.ts_recv)
        try:
            self.stats.fills += 1
            self.latest_fills.append(f)
            self.ledger.on_fill(f)
            s = self._by_name.get(f.strategy)
            if s is not None:
                self._call(s, s.on_fill, f)
        finally:
            self._leave()

    # -- time ------------------------------------------------------------------------------------------

    def on_time(self, ts_ns: int) -> None:
        """The event clock reached ``ts_ns``: latencies that ran out, time-based alarms and exits, and the
        periodic equity snapshot (every ``snapshot_every_ns``)."""
        self._enter(ts_ns)
        try:
            self.execution.on_time(ts_ns)
            self.gate.on_time(ts_ns)
            for venue, venue_ns in self._venue_now.items():
                self.ledger.settle_funding(venue_ns, venue)
            for s in self.strategies:
                self._call(s, s.on_time, ts_ns)
            if ts_ns >= self._next_snapshot:
                self.snapshot(ts_ns)
        finally:
            self._leave()

    def snapshot(self, ts_ns: int) -> None:
        """Publish every account's ``EquitySnapshot`` and feed the total equity to the drawdown switch."""
        self._next_snapshot = (ts_ns // self.snapshot_every_ns + 1) * self.snapshot_every_ns
        for venue in self.accounts:
            if self._publish is not None:
                self._publish(self.ledger.snapshot(venue, ts_ns))
        self.gate.on_equity(self.ledger.equity(), ts_ns)

    # -- operator ---------------------------------------------------------------------------------------

    def halt(self, reason: str, ts_ns: int, *, reduce: bool = False) -> None:
        if reduce:
            self.gate.reduce(reason, ts_ns)
        else:
            self.gate.halt(reason, ts_ns)

    def resume(self, ts_ns: int) -> None:
        self.gate.resume(ts_ns)

    def cancel_all(self, ts_ns: int, reason: str = "stop") -> int:
        """Cancel every open order (a cancel is always allowed, whatever the trading state); returns how many
        are still open, cancels already in flight included, so that a stop waits for them all."""
        ids = [cid for cid in self._open if cid not in self._cancelling]
        for cid in ids:
            self._cancel(cid, ts_ns)
        if ids:
            log.info("orders_cancel_requested", count=len(ids), reason=reason)
        return len(self._open)  # still open: those just cancelled and those whose cancel was in flight

    def open_orders(self) -> list[OrderUpdate]:
        return list(self._open.values())

    # -- intents ----------------------------------------------------------------------------------------

    def _enter(self, ts_ns: int) -> None:
        if ts_ns > self._now:
            self._now = ts_ns
        self._depth += 1

    def _leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._depth = 1  # intents handled here may publish; what they cause queues behind them
            try:
                while self._pending:
                    strategy, intent = self._pending.popleft()
                    self._handle(strategy, intent)
            finally:
                self._depth = 0

    def _call(self, s: Strategy, hook: Any, arg: Any) -> None:
        try:
            intents = hook(arg)
        except Exception:
            # A broken strategy must not take the others (or the market data) down: counted and logged.
            self.stats.strategy_errors += 1
            log.exception("strategy_failed", strategy=s.name, hook=getattr(hook, "__name__", "?"))
            return
        for intent in intents:
            self._pending.append((s, intent))

    def _guard(self, handler: Any) -> Any:
        def run(ev: Any) -> None:
            self._enter(ev.ts_recv)
            try:
                handler(ev)
            finally:
                self._leave()

        return run

    def _handle(self, s: Strategy, intent: Intent) -> None:
        self.stats.intents += 1
        if isinstance(intent, CancelIntent):
            o = self._open.get(intent.client_order_id)
            if o is not None and o.strategy == s.name and o.client_order_id not in self._cancelling:
                self._cancel(o.client_order_id, self._now)
            return
        if isinstance(intent, TargetPosition):
            order = self._target_to_order(s, intent)
            if order is None:
                return
        else:
            order = intent
        cid = f"{self.order_prefix}{self.next_seq:09d}"
        self.next_seq += 1
        result = self.gate.check(order, cid, self._now)
        if isinstance(result, OrderRequest):
            self.stats.orders += 1
            self.execution.submit(result)
        else:
            self.stats.denied += 1

    def _cancel(self, client_order_id: str, ts_ns: int) -> None:
        self._cancelling.add(client_order_id)
        self.execution.cancel(client_order_id, ts_ns)
        self.stats.cancels += 1

    def _target_to_order(self, s: Strategy, t: TargetPosition) -> OrderIntent | None:
        """The order that moves the strategy from its position to ``t``, counting its open orders on the
        same side toward it: those on the other side are cancelled, and the newest same-side ones beyond
        the need (the oldest keep their queue places), so that position plus what rests never overshoots
        the target. (A cancel in flight can still fill: the next target corrects it.)"""
        key = (t.venue, t.symbol)
        position = s.position(t.venue, t.symbol)
        need = t.qty - position
        side = Side.BUY if need > 0 else Side.SELL
        mine = [o for o in self._open.values() if o.strategy == s.name and (o.venue, o.symbol) == key
                and o.client_order_id not in self._cancelling]
        resting = ZERO
        for o in mine:  # oldest first
            left = abs(_remaining(o))
            if need == ZERO or o.side is not side or resting + left > abs(need):
                self._cancel(o.client_order_id, self._now)
            else:
                resting += left
        qty = abs(need) - resting
        if qty <= ZERO:
            return None
        if self._is_dust(key, qty, t):
            self.stats.dust += 1
            return None
        reduce_only = (position != ZERO and abs(t.qty) < abs(position)
                       and (t.qty == ZERO or (t.qty > 0) == (position > 0)))
        return OrderIntent(
            ts_event=t.ts_event, ts_recv=t.ts_recv, strategy=s.name, venue=t.venue, symbol=t.symbol,
            side=side, qty=qty, order_type=t.order_type, price=t.price, tif=t.tif, reduce_only=reduce_only,
            signal_ts=t.signal_ts, reason=t.reason,
        )

    def _is_dust(self, key: Key, qty: Decimal, t: TargetPosition) -> bool:
        inst = self.instruments.get(key)
        if inst is None:
            return False  # the gate denies it (no rules yet), which is worth seeing
        rounded = (qty / inst.step_size).to_integral_value(rounding=ROUND_DOWN) * inst.step_size
        if rounded < inst.min_qty or rounded == ZERO:
            return True
        mark = t.price
        if mark is None:
            m = getattr(self.ledger, "mark", None)
            mark = m(*key) if m is not None else None
        return mark is not None and rounded * mark < inst.min_notional

    def summary(self) -> dict[str, Any]:
        st = self.stats
        return {
            "state": self.gate.state.value, "intents": st.intents, "orders": st.orders, "denied": st.denied,
            "fills": st.fills, "cancels": st.cancels, "dust": st.dust, "open_orders": len(self._open),
            "strategy_errors": st.strategy_errors, "order_status": dict(st.order_status),
            "latest_fills": [
                {"strategy": f.strategy, "venue": f.venue.value, "symbol": f.symbol, "side": f.side.value,
                 "qty": str(f.qty), "price": str(f.price), "liquidity": f.liquidity.value}
                for f in self.latest_fills
            ],
        }


def _remaining(o: OrderUpdate) -> Decimal:
    left = o.qty - o.filled_qty
    return left if o.side is Side.BUY else -left


__all__ = ["Engine", "EngineStats", "OrderStatus"]
