"""The engine: targets become the right orders, intents never re-enter a component, ownership routing."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from bot.bus import EventBus
from bot.engine import Engine
from bot.events import BookUpdate, Side, Signal, Venue
from bot.orders import (
    Fill,
    FundingRate,
    Instrument,
    InstrumentInfo,
    Intent,
    Liquidity,
    OrderDenied,
    OrderIntent,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    TargetPosition,
    TimeInForce,
    TradingState,
)
from strategies.base import Strategy

pytestmark = pytest.mark.unit
V = Venue.BINANCE_USDM
D = Decimal


class FakeGate:
    def __init__(self) -> None:
        self.state = TradingState.ACTIVE
        self.checked: list[OrderIntent] = []
        self.deny: set[str] = set()
        self.seen: list[str] = []
        self.orders_seen: list[str] = []

    def on_order(self, o: OrderUpdate) -> None:
        self.orders_seen.append(o.client_order_id)

    def check(self, intent: OrderIntent, client_order_id: str, now_ns: int) -> OrderRequest | OrderDenied:
        self.checked.append(intent)
        if intent.strategy in self.deny:
            return OrderDenied(ts_event=now_ns, ts_recv=now_ns, strategy=intent.strategy, venue=intent.venue,
                               symbol=intent.symbol, side=intent.side, qty=intent.qty, reason="test")
        return OrderRequest(
            client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol,
            side=intent.side, qty=intent.qty, order_type=intent.order_type, price=intent.price, tif=intent.tif,
            reduce_only=intent.reduce_only, ts_decision=now_ns,
        )

    def register_strategy(self, name: str, models: Sequence[str]) -> None:
        self.seen.append(name)

    def __getattr__(self, name: str) -> Any:  # the on_* inputs and operator calls: recorded, no effect
        if name.startswith(("on_", "halt", "reduce", "resume")):
            return lambda *a, **k: None
        raise AttributeError(name)


class FakeExec:
    """Fills every market order at once at 100 (publishing like the paper matcher would)."""

    def __init__(self, bus: EventBus, fill: bool = True) -> None:
        self.bus = bus
        self.fill = fill
        self.submitted: list[OrderRequest] = []
        self.cancelled: list[str] = []

    def submit(self, r: OrderRequest) -> None:
        self.submitted.append(r)
        base: dict[str, Any] = dict(
            client_order_id=r.client_order_id, strategy=r.strategy, venue=r.venue, symbol=r.symbol, side=r.side,
            order_type=r.order_type, tif=r.tif, qty=r.qty, price=r.price,
        )
        t = r.ts_decision
        self.bus.publish(OrderUpdate(ts_event=t, ts_recv=t, status=OrderStatus.NEW, **base))
        if self.fill:
            self.bus.publish(Fill(ts_event=t, ts_recv=t, client_order_id=r.client_order_id, strategy=r.strategy,
                                  venue=r.venue, symbol=r.symbol, side=r.side, qty=r.qty, price=D(100),
                                  fee=D(0), fee_asset="USDT", liquidity=Liquidity.TAKER, trade_id=r.client_order_id))
            self.bus.publish(OrderUpdate(ts_event=t, ts_recv=t, status=OrderStatus.FILLED, filled_qty=r.qty,
                                         avg_price=D(100), **base))

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        self.cancelled.append(client_order_id)

    def on_time(self, ts_ns: int) -> None:
        pass

    def open_orders(self) -> list[OrderUpdate]:
        return []


class FakeLedger:
    def __init__(self) -> None:
        self.fills: list[Fill] = []

    def on_fill(self, f: Fill) -> None:
        self.fills.append(f)

    def on_mark(self, venue: Venue, symbol: str, price: float | Decimal) -> None:
        pass

    def on_funding(self, fr: FundingRate, ts_ns: int) -> None:
        pass

    def mark(self, venue: Venue, symbol: str) -> Decimal | None:
        return D(100)

    def equity(self, venue: Venue | None = None) -> Decimal:
        return D(0)

    def snapshot(self, venue: Venue, ts_ns: int) -> Any:
        return None


class Scripted(Strategy):
    """Answers every book update with the next scripted target."""

    kind = "scripted"

    def __init__(self, name: str, targets: list[Decimal]) -> None:
        super().__init__(name, V, ["BTCUSDT"])
        self.targets = targets
        self.fills_seen = 0

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        if not self.targets:
            return ()
        q = self.targets.pop(0)
        return [TargetPosition(ts_event=b.ts_event, ts_recv=b.ts_recv, strategy=self.name, venue=V,
                               symbol="BTCUSDT", qty=q, signal_ts=b.ts_recv)]

    def on_fill(self, f: Fill) -> Sequence[Intent]:
        self.fills_seen += 1
        return super().on_fill(f)


def _book(t: int) -> BookUpdate:
    return BookUpdate(ts_event=t, ts_recv=t, venue=V, symbol="BTCUSDT", update_id=t, bid_px=99.9, bid_sz=1.0,
                      ask_px=100.1, ask_sz=1.0)


def _engine(strategies: list[Strategy], fill: bool = True) -> tuple[Engine, EventBus, FakeGate, FakeExec, FakeLedger]:
    bus = EventBus()
    gate, ledger = FakeGate(), FakeLedger()
    ex = FakeExec(bus, fill=fill)
    eng = Engine(strategies, gate, ex, ledger, accounts=[V], snapshot_every_ns=10**9)  # type: ignore[arg-type]
    eng.attach(bus)
    return eng, bus, gate, ex, ledger


def test_targets_become_orders_for_the_difference_to_the_strategys_own_position() -> None:
    # Arrange
    s = Scripted("a", [D("0.5"), D("0.5"), D("-0.2"), D("0")])
    _eng, bus, _gate, ex, ledger = _engine([s])
    # Act
    for t in (1, 2, 3, 4):
        bus.publish(_book(t))
    # Assert: buy 0.5, nothing (already there), sell 0.7 (flip), buy 0.2 (flat again, reduce-only)
    assert [(r.side, r.qty, r.reduce_only) for r in ex.submitted] == [
        (Side.BUY, D("0.5"), False), (Side.SELL, D("0.7"), False), (Side.BUY, D("0.2"), True)]
    assert s.position(V, "BTCUSDT") == D(0)
    assert len(ledger.fills) == 3
    assert s.fills_seen == 3
    assert [r.client_order_id for r in ex.submitted] == ["b000000001", "b000000002", "b000000003"]


def test_open_orders_count_toward_the_target_and_opposite_ones_are_cancelled() -> None:
    s = Scripted("a", [D("1"), D("1"), D("-1")])
    _eng, bus, _gate, ex, _ = _engine([s], fill=False)
    bus.publish(_book(1))
    bus.publish(_book(2))  # the first order is still open: no second buy
    assert [r.qty for r in ex.submitted] == [D("1")]
    bus.publish(_book(3))  # now short 1: the open buy is cancelled, sell 1 (the buy no longer counts)
    assert ex.cancelled == ["b000000001"]
    assert [(r.side, r.qty) for r in ex.submitted] == [(Side.BUY, D("1")), (Side.SELL, D("1"))]


def test_a_lower_target_on_the_same_side_cancels_the_open_order_and_places_the_smaller_one() -> None:
    s = Scripted("a", [D("1"), D("0.4"), D("0.4")])
    eng, bus, _gate, ex, _ = _engine([s], fill=False)
    bus.publish(_book(1))  # buy 1 rests
    bus.publish(_book(2))  # 0.4: the 1 would overshoot: cancelled, buy 0.4
    assert ex.cancelled == ["b000000001"]
    assert [(r.side, r.qty) for r in ex.submitted] == [(Side.BUY, D("1")), (Side.BUY, D("0.4"))]
    # the cancel is in flight (no CANCELLED yet): b1 neither counts nor is cancelled again
    bus.publish(_book(3))
    assert ex.cancelled == ["b000000001"]
    assert len(ex.submitted) == 2
    assert eng.stats.cancels == 1
    assert eng.cancel_all(4) == 2  # both still open; only b2 is cancelled now, b1's cancel is already sent
    assert ex.cancelled == ["b000000001", "b000000002"]


def test_the_oldest_same_side_orders_keep_their_place_and_newer_excess_ones_are_cancelled() -> None:
    s = Scripted("a", [D("0.3"), D("0.6"), D("0.4")])
    _eng, bus, _gate, ex, _ = _engine([s], fill=False)
    for t in (1, 2, 3):
        bus.publish(_book(t))
    # b1 0.3 and b2 0.3 rest; for 0.4, b1 stays, b2 (it would make 0.6) goes, and 0.1 more is bought
    assert ex.cancelled == ["b000000002"]
    assert [r.qty for r in ex.submitted] == [D("0.3"), D("0.3"), D("0.1")]


def test_fills_and_orders_go_only_to_the_strategy_that_owns_them() -> None:
    a, b = Scripted("a", [D("1")]), Scripted("b", [])
    _eng, bus, *_ = _engine([a, b])
    bus.publish(_book(1))
    assert a.fills_seen == 1
    assert b.fills_seen == 0
    assert a.position(V, "BTCUSDT") == D(1)
    assert b.position(V, "BTCUSDT") == D(0)


def test_dust_below_the_instrument_minimum_is_not_sent_and_not_denied() -> None:
    s = Scripted("a", [D("0.0004"), D("0.002")])
    eng, bus, gate, ex, _ = _engine([s])
    bus.publish(InstrumentInfo(ts_event=0, ts_recv=0, instrument=Instrument(
        venue=V, symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.1"), step_size=D("0.001"),
        min_qty=D("0.001"), min_notional=D("100"))))
    bus.publish(_book(1))  # 0.0004 rounds to 0: dust
    bus.publish(_book(2))  # 0.002 x 100 = 0.2 USDT < 100 min notional: dust
    assert ex.submitted == []
    assert gate.checked == []
    assert eng.stats.dust == 2


def test_denied_intents_are_counted_and_never_reach_execution() -> None:
    s = Scripted("a", [D("1")])
    eng, bus, gate, ex, _ = _engine([s])
    gate.deny.add("a")
    bus.publish(_book(1))
    assert ex.submitted == []
    assert eng.stats.denied == 1


def test_a_strategy_that_raises_is_counted_and_the_others_still_trade() -> None:
    class Broken(Strategy):
        kind = "broken"

        def on_book(self, b: BookUpdate) -> Sequence[Intent]:
            raise RuntimeError("bug")

    ok = Scripted("ok", [D("1")])
    eng, bus, _gate, ex, _ = _engine([Broken("x", V, ["BTCUSDT"]), ok])
    bus.publish(_book(1))
    assert eng.stats.strategy_errors == 1
    assert len(ex.submitted) == 1


def test_explicit_order_intents_pass_through_the_gate_with_their_fields() -> None:
    class Limit(Strategy):
        kind = "limit"

        def on_signal(self, sig: Signal) -> Sequence[Intent]:
            return [OrderIntent(ts_event=sig.ts_event, ts_recv=sig.ts_recv, strategy=self.name, venue=V,
                                symbol="BTCUSDT", side=Side.SELL, qty=D("0.01"), order_type=OrderType.LIMIT,
                                price=D("101.5"), tif=TimeInForce.POST_ONLY, signal_ts=sig.ts_recv)]

    eng, bus, _gate, ex, _ = _engine([Limit("l", V, ["BTCUSDT"])], fill=False)
    bus.publish(Signal(ts_event=5, ts_recv=7, model="m", family="tabl", version="v", code_version="", venue=V,
                       symbol="BTCUSDT", horizon="h", inference_start_ns=5, inference_end_ns=6))
    (r,) = ex.submitted
    assert (r.side, r.qty, r.order_type, r.price, r.tif, r.ts_decision) == (
        Side.SELL, D("0.01"), OrderType.LIMIT, D("101.5"), TimeInForce.POST_ONLY, 7)
    assert [o.client_order_id for o in eng.open_orders()] == [r.client_order_id]


def test_restore_rebuilds_each_strategys_position_from_the_persisted_fills() -> None:
    a = Scripted("a", [D("1")])
    eng, bus, _gate, ex, ledger = _engine([a])
    fills = [Fill(ts_event=1, ts_recv=1, client_order_id=f"b{i}", strategy="a", venue=V, symbol="BTCUSDT",
                  side=side, qty=D(q), price=D(100), fee=D(0), fee_asset="USDT", liquidity=Liquidity.TAKER,
                  trade_id=f"b{i}-1") for i, (side, q) in enumerate([(Side.BUY, "2"), (Side.SELL, "0.5")])]
    resting = OrderUpdate(ts_event=5, ts_recv=5, client_order_id="b9", strategy="a", venue=V, symbol="BTCUSDT",
                          side=Side.BUY, order_type=OrderType.LIMIT, tif=TimeInForce.GTC, qty=D("0.2"),
                          price=D(99), status=OrderStatus.ACCEPTED)  # fmt: skip
    eng.restore(fills, [resting], 10)
    assert a.position(V, "BTCUSDT") == D("1.5")
    assert _gate.orders_seen == ["b9"]  # the gate counts it toward the limits again
    assert len(ledger.fills) == 2
    bus.publish(_book(11))  # target 1: the resting buy goes, sell 0.5, reduce-only
    assert ex.cancelled == ["b9"]
    assert [(r.side, r.qty, r.reduce_only) for r in ex.submitted] == [(Side.SELL, D("0.5"), True)]


def test_funding_is_settled_by_the_venues_clock_not_ours() -> None:
    # In sim and replay the venue's clock is another day: a funding time far in our past is still ahead
    # of the venue. It is paid when the venue's own book times pass it, on the position held then.
    from bot.ledger import Ledger

    bus = EventBus()
    ledger = Ledger({V: {"USDT": D(10_000)}})
    eng = Engine([], FakeGate(), FakeExec(bus), ledger, accounts=[V], snapshot_every_ns=10**18)  # type: ignore[arg-type]
    eng.attach(bus)
    venue_t, ours = 1_000 * 10**9, 5_000 * 10**9  # the venue is 4000 s behind us
    ledger.on_fill(Fill(ts_event=venue_t, ts_recv=ours, client_order_id="x", strategy="s", venue=V,
                        symbol="BTCUSDT", side=Side.BUY, qty=D("0.5"), price=D(100), fee=D(0), fee_asset="USDT",
                        liquidity=Liquidity.TAKER, trade_id="x-1"))

    def book(t_venue: int, t_ours: int) -> BookUpdate:
        return BookUpdate(ts_event=t_venue, ts_recv=t_ours, venue=V, symbol="BTCUSDT", update_id=t_venue,
                          bid_px=99.9, bid_sz=1.0, ask_px=100.1, ask_sz=1.0)

    bus.publish(book(venue_t, ours))
    bus.publish(FundingRate(ts_event=venue_t, ts_recv=ours, venue=V, symbol="BTCUSDT", rate=D("0.0001"),
                            funding_time_ns=venue_t + 60 * 10**9, mark_price=D(100)))
    eng.on_time(ours + 10**9)
    assert ledger.cash(V) == D(10_000)  # our clock is past the funding time, the venue's is not
    bus.publish(book(venue_t + 61 * 10**9, ours + 61 * 10**9))
    eng.on_time(ours + 62 * 10**9)
    assert ledger.cash(V) == D(10_000) - D("0.5") * 100 * D("0.0001")  # a long pays 0.005 USDT, once
    eng.on_time(ours + 63 * 10**9)
    assert ledger.cash(V) == D("9999.995")
