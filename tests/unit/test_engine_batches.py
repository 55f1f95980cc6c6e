"""The engine's quiet books: a run of ``BookUpdate`` events handed over as one ``BookUpdates`` batch leaves the
ledger, the risk gate, the matcher and the engine exactly as the events one by one; batches are taken only
for books no strategy trades and on which the matcher holds nothing; ``Trade`` is subscribed to only by an
engine that can have orders; the ledger's lazily converted marks read as the eager ones."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from bot.bus import EventBus
from bot.config import BotSettings
from bot.engine import Engine
from bot.events import BookUpdate, BookUpdates, Side, Trade, Venue
from bot.execution.paper import PaperExecution
from bot.ledger import Ledger
from bot.orders import OrderRequest, OrderStatus, OrderType, TimeInForce
from bot.risk import RiskGate
from strategies.base import Strategy

pytestmark = pytest.mark.unit
SPOT, PERP = Venue.BINANCE_SPOT, Venue.BINANCE_USDM
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class Book:
    def __init__(self, bid: float, ask: float) -> None:
        self.bid, self.ask = bid, ask

    def top(self, n: int) -> tuple[Sequence[tuple[float, float]], Sequence[tuple[float, float]]]:
        return [(self.bid, 1.0)], [(self.ask, 1.0)]


class OnBook(Strategy):
    kind = "on_book"

    def __init__(self, venue: Venue, symbol: str) -> None:
        super().__init__("s", venue, [symbol])


def _stack(strategies: Sequence[Strategy] = ()) -> tuple[Engine, EventBus, Ledger, RiskGate, PaperExecution]:
    settings = BotSettings()
    bus = EventBus()
    ledger = Ledger({SPOT: {"USDT": Decimal(1000)}, PERP: {"USDT": Decimal(1000)}})
    paper = PaperExecution(settings.paper, lambda v, s: Book(100.0, 100.5), bus.publish)
    gate = RiskGate(settings.risk, ledger, bus.publish)
    engine = Engine(strategies, gate, paper, ledger, accounts=[SPOT, PERP], snapshot_every_ns=10**9)
    engine.attach(bus)
    return engine, bus, ledger, gate, paper


def _updates(venue: Venue, n: int, seed: int, books: int = len(SYMBOLS)) -> list[BookUpdate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(books))
        bid = round(float(rng.uniform(99, 101)), 2) if rng.random() > 0.15 else 0.0  # some one-sided tops
        ask = round(bid + float(rng.uniform(0.01, 1)), 2) if bid else round(float(rng.uniform(99, 101)), 2)
        if rng.random() < 0.05:
            bid, ask = ask + 0.5, ask  # a crossed top: no mid for the gate
        t = 1_000 + i * 7 + int(rng.integers(3))
        out.append(BookUpdate(ts_event=t - 500 + int(rng.integers(1000)), ts_recv=t, venue=venue,
                              symbol=SYMBOLS[k], update_id=i, bid_px=bid, bid_sz=1.0, ask_px=ask, ask_sz=2.0))
    return out


def _batch(venue: Venue, events: list[BookUpdate]) -> BookUpdates:
    book = np.array([SYMBOLS.index(e.symbol) for e in events], np.int64)
    count = np.bincount(book, minlength=len(SYMBOLS)).astype(np.int64)
    recv = np.array([e.ts_recv for e in events], np.int64)
    max_recv = np.array([recv[book == k].max() if count[k] else -1 for k in range(len(SYMBOLS))], np.int64)
    return BookUpdates(venue, SYMBOLS, book, np.array([e.ts_event for e in events], np.int64), recv,
                       np.array([e.update_id for e in events], np.int64),
                       np.array([(e.bid_px, e.bid_sz, e.ask_px, e.ask_sz) for e in events]), count, max_recv)


def _state(engine: Engine, ledger: Ledger, gate: RiskGate, paper: PaperExecution) -> Any:
    return (list(ledger._pos), ledger.positions(), [ledger.snapshot(v, 5) for v in (SPOT, PERP)],
            dict(gate._mids), dict(engine._venue_now), engine._now, paper._now)


@pytest.mark.parametrize("venue", [SPOT, PERP])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("books", [1, 3])
def test_a_batch_leaves_everything_as_the_events_one_by_one(venue: Venue, seed: int, books: int) -> None:
    events = _updates(venue, 40, seed, books)
    one = _stack()
    two = _stack()
    for s in (one, two):  # something before the batch, on both
        s[1].publish(events[0])
    for e in events[1:21]:
        one[1].publish(e)
    assert two[1].batches(BookUpdate, venue, "BTCUSDT")
    two[1].publish_batch(BookUpdate, _batch(venue, events[1:21]))
    assert _state(one[0], *one[2:]) == _state(two[0], *two[2:])
    for e in events[21:]:  # and after it
        one[1].publish(e)
    two[1].publish_batch(BookUpdate, _batch(venue, events[21:]))
    assert _state(one[0], *one[2:]) == _state(two[0], *two[2:])


def test_books_are_marked_in_the_order_of_their_first_two_sided_top() -> None:
    t = 10
    ev = [BookUpdate(ts_event=t, ts_recv=t, venue=SPOT, symbol=s, update_id=i, bid_px=b, bid_sz=1.0, ask_px=100.0,
                     ask_sz=1.0) for i, (s, b) in enumerate([("SOLUSDT", 0.0), ("ETHUSDT", 99.0), ("SOLUSDT", 99.0)])]
    _, bus, ledger, _, _ = _stack()
    bus.publish_batch(BookUpdate, _batch(SPOT, ev))
    assert list(ledger._pos) == [(SPOT, "ETHUSDT"), (SPOT, "SOLUSDT")]


def _request(symbol: str, ts: int, *, limit: bool) -> OrderRequest:
    return OrderRequest(client_order_id=f"c{ts}", strategy="x", venue=SPOT, symbol=symbol, side=Side.BUY,
                        qty=Decimal("0.1"), order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                        price=Decimal("99") if limit else None, tif=TimeInForce.GTC, reduce_only=False,
                        ts_decision=ts)  # fmt: skip


def test_batches_only_for_books_no_strategy_trades_and_the_matcher_is_quiet_on() -> None:
    engine, bus, _, _, paper = _stack([OnBook(SPOT, "ETHUSDT")])
    assert not bus.takes_batches(BookUpdate)  # it hears trades: no batch form at all (runs would be short)
    ok = engine.takes_book_batch
    assert ok(SPOT, "BTCUSDT")
    assert not ok(SPOT, "ETHUSDT")  # its strategy sees every update
    paper.submit(_request("BTCUSDT", 1, limit=True))  # in flight: every book, until it arrives
    assert not ok(SPOT, "SOLUSDT")
    paper.on_time(10**9)  # arrived: it rests at 99 on BTCUSDT
    assert not ok(SPOT, "BTCUSDT")
    assert ok(SPOT, "SOLUSDT")
    paper.cancel("c1", 10**9)
    assert not ok(SPOT, "SOLUSDT")
    paper.on_time(2 * 10**9)
    assert ok(SPOT, "BTCUSDT")
    assert ok(SPOT, "SOLUSDT")
    _, bus, _, _, _ = _stack()
    assert bus.takes_batches(BookUpdate)
    assert bus.batches(BookUpdate, SPOT, "BTCUSDT")


def test_a_batch_with_a_book_it_does_not_take_goes_one_by_one_in_order() -> None:
    engine, *_ = _stack([OnBook(SPOT, "ETHUSDT")])
    seen: list[tuple[str, int]] = []
    engine.strategies[0].on_book = lambda b: seen.append((b.symbol, b.update_id)) or ()  # type: ignore[method-assign,func-returns-value]
    events = _updates(SPOT, 12, 3)
    engine.on_book_updates(_batch(SPOT, events))
    assert seen == [(e.symbol, e.update_id) for e in events if e.symbol == "ETHUSDT"]
    assert engine._now == max(e.ts_recv for e in events)


def test_trades_are_heard_only_by_an_engine_that_can_hold_orders() -> None:
    _, bus, _, _, _ = _stack()
    assert not bus.wants(Trade)  # no strategy, nothing restored: a trade would only move clocks nobody reads
    _, bus, _, _, _ = _stack([OnBook(SPOT, "ETHUSDT")])
    assert bus.wants(Trade)
    engine, bus, _, _, _ = _stack()
    o = _request("BTCUSDT", 1, limit=True).update(OrderStatus.ACCEPTED, 1)
    engine.restore([], [o], 1)
    assert bus.wants(Trade)


def test_lazy_marks_read_as_the_marks_set_at_once() -> None:
    eager, lazy = Ledger({SPOT: {"USDT": Decimal(1000)}}), Ledger({SPOT: {"USDT": Decimal(1000)}})
    tops = [(100.1, 100.35), (0.1, 0.30000000000000004), (61824.01, 61824.02)]
    for i, (bid, ask) in enumerate(tops):
        sym = SYMBOLS[i]
        eager.on_mark(SPOT, sym, (Decimal(repr(bid)) + Decimal(repr(ask))) / 2)
        lazy.on_mid(SPOT, sym, bid, ask)
    lazy.on_mid(SPOT, "BTCUSDT", 1.0, 2.0)
    lazy.on_mark(SPOT, "BTCUSDT", Decimal("100.225"))  # a mark set at once replaces the pending one
    for ledger in (eager, lazy):
        ledger.on_mid(SPOT, "ETHUSDT", 0.2, 0.4) if ledger is lazy else ledger.on_mark(SPOT, "ETHUSDT", Decimal("0.3"))
    assert lazy.mark(SPOT, "ETHUSDT") == eager.mark(SPOT, "ETHUSDT") == Decimal("0.3")
    assert lazy.positions() == eager.positions()
    assert lazy.snapshot(SPOT, 1) == eager.snapshot(SPOT, 1)
    assert lazy.dump() == eager.dump()
    assert lazy.equity() == eager.equity()


def test_an_engine_without_a_matcher_hears_trades_when_it_has_strategies() -> None:
    class NoMatcher:
        def submit(self, r: OrderRequest) -> None: ...
        def cancel(self, client_order_id: str, ts_ns: int) -> None: ...
        def on_time(self, ts_ns: int) -> None: ...

    settings = BotSettings()
    for strategies, heard in (([OnBook(SPOT, "ETHUSDT")], True), ([], False)):
        bus = EventBus()
        ledger = Ledger({SPOT: {"USDT": Decimal(1000)}})
        gate = RiskGate(settings.risk, ledger, bus.publish)
        engine = Engine(strategies, gate, NoMatcher(), ledger, accounts=[SPOT], snapshot_every_ns=10**9)  # type: ignore[arg-type]
        engine.attach(bus)
        assert bus.wants(Trade) is heard
        if heard:
            bus.publish(Trade(ts_event=5, ts_recv=7, venue=SPOT, symbol="BTCUSDT", price=1.0, size=1.0,
                              taker_side=Side.BUY, trade_id="t"))
            assert engine._now == 7  # the clock its strategies' orders are decided at
