"""The risk gate (bot.risk): every rule and every state transition, each with a hand-checked case.

The book is Binance spot BTCUSDT with bid 60000.00 / ask 60001.00 (mid 60000.5) and the venue's real
rules (tick 0.01, step 0.00001, min qty 0.00001, min notional 5); limits are RiskConfig's defaults unless
a test says otherwise: 2000 per order, 5000 per position, 20000 gross, 60 orders a minute, band 1 %.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from bot.config import RiskConfig
from bot.events import BookCrossed, BookHealth, BookState, BookUpdate, Event, Side, Signal, Venue
from bot.orders import (
    ClockSkew,
    Instrument,
    InstrumentInfo,
    OrderDenied,
    OrderIntent,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TimeInForce,
    TradingState,
)
from bot.risk import RiskGate, ceil_to, floor_to

pytestmark = pytest.mark.unit

S = 1_000_000_000
T0 = 1_723_161_600 * S  # 2024-08-09 00:00:00 UTC
BN = Venue.BINANCE_USDM  # a perpetual: shorts allowed; the spot funds rules have their own tests
SP = Venue.BINANCE_SPOT
BY = Venue.BYBIT_LINEAR
D = Decimal


class FakeExposure:
    """The ledger's read side: positions and marks set by the test, gross = sum |qty| x mark + ``extra``."""

    def __init__(self) -> None:
        self.positions: dict[tuple[Venue, str], Decimal] = {}
        self.marks: dict[tuple[Venue, str], Decimal] = {}
        self.extra_gross = D(0)
        self.cash_left: dict[Venue, Decimal] = {}

    def cash(self, venue: Venue) -> Decimal:
        return self.cash_left.get(venue, D(10_000))

    def position(self, venue: Venue, symbol: str) -> Decimal:
        return self.positions.get((venue, symbol), D(0))

    def mark(self, venue: Venue, symbol: str) -> Decimal | None:
        return self.marks.get((venue, symbol))

    def equity(self, venue: Venue | None = None) -> Decimal:
        return D(10_000)

    def gross_exposure(self) -> Decimal:
        return self.extra_gross + sum(
            (abs(q) * self.marks.get(k, D(0)) for k, q in self.positions.items()), D(0)
        )


class Harness:
    def __init__(self, **cfg: Any) -> None:
        self.events: list[Event] = []
        self.exposure = FakeExposure()
        self.gate = RiskGate(RiskConfig(**cfg), self.exposure, self.events.append)
        self.n = 0

    def market(self, venue: Venue = BN, symbol: str = "BTCUSDT", bid: float = 60000.0, ask: float = 60001.0,
               ts: int = T0) -> None:  # fmt: skip
        self.gate.on_instrument(InstrumentInfo(ts_event=ts, ts_recv=ts, instrument=instrument(venue, symbol)))
        self.gate.on_health(BookHealth(ts_event=ts, ts_recv=ts, venue=venue, symbol=symbol, state=BookState.LIVE,
                                       reason="synced"))  # fmt: skip
        self.book(venue, symbol, bid, ask, ts)

    def book(self, venue: Venue, symbol: str, bid: float, ask: float, ts: int = T0) -> None:
        self.gate.on_book(BookUpdate(ts_event=ts, ts_recv=ts, venue=venue, symbol=symbol, update_id=1, bid_px=bid,
                                     bid_sz=1.0, ask_px=ask, ask_sz=1.0))  # fmt: skip

    def check(self, side: Side, qty: str, price: str | None = None, now: int = T0, **kw: Any) -> Any:
        self.n += 1
        intent = OrderIntent(
            ts_event=now, ts_recv=now, strategy=kw.pop("strategy", "s1"), venue=kw.pop("venue", BN),
            symbol=kw.pop("symbol", "BTCUSDT"), side=side, qty=D(qty),
            order_type=kw.pop("order_type", OrderType.LIMIT if price is not None else OrderType.MARKET),
            price=D(price) if price is not None else None, **kw,
        )  # fmt: skip
        return self.gate.check(intent, f"c{self.n}", now)

    def denied(self, result: Any, reason: str) -> OrderDenied:
        assert isinstance(result, OrderDenied), f"expected a denial ({reason}), got {result}"
        assert result.reason == reason, result.detail
        assert self.events[-1] is result  # published as well as returned
        return result

    def states(self) -> list[tuple[TradingState, TradingState, str]]:
        return [(e.previous, e.state, e.reason) for e in self.events if isinstance(e, RiskStateChanged)]


def instrument(venue: Venue = BN, symbol: str = "BTCUSDT") -> Instrument:
    if symbol == "ETHUSDT":  # a small max qty to test it
        return Instrument(venue=venue, symbol=symbol, base="ETH", quote="USDT", tick_size=D("0.01"),
                          step_size=D("0.001"), min_qty=D("0.001"), min_notional=D(5), max_qty=D("0.5"))  # fmt: skip
    return Instrument(venue=venue, symbol=symbol, base="BTC", quote="USDT", tick_size=D("0.01"),
                      step_size=D("0.00001000"), min_qty=D("0.00001"), min_notional=D(5), max_qty=D(9000))  # fmt: skip


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.market()
    return harness


def ok(result: Any) -> OrderRequest:
    assert isinstance(result, OrderRequest), getattr(result, "detail", result)
    return result


# -- rounding and instrument rules ------------------------------------------------------------------------


def test_floor_and_ceil_to_a_step_that_is_not_a_power_of_ten() -> None:
    assert floor_to(D("1.74"), D("0.25")) == D("1.50")
    assert ceil_to(D("1.74"), D("0.25")) == D("1.75")
    assert ceil_to(D("1.75"), D("0.25")) == D("1.75")


def test_a_limit_buy_rounds_qty_down_and_price_down(h: Harness) -> None:
    req = ok(h.check(Side.BUY, "0.0123456789", "60000.129"))
    assert req.qty == D("0.01234")
    assert req.price == D("60000.12")
    assert (req.side, req.order_type, req.tif, req.reduce_only, req.ts_decision) == (
        Side.BUY, OrderType.LIMIT, TimeInForce.GTC, False, T0)  # fmt: skip


def test_a_limit_sell_rounds_qty_down_and_price_up(h: Harness) -> None:
    req = ok(h.check(Side.SELL, "0.0123456789", "60000.121"))
    assert (req.qty, req.price) == (D("0.01234"), D("60000.13"))


def test_qty_that_rounds_below_min_qty_is_denied(h: Harness) -> None:
    h.denied(h.check(Side.BUY, "0.000009"), "min_qty")  # rounds down to 0.00000


def test_min_notional_uses_the_mid_for_a_market_order(h: Harness) -> None:
    # 0.00008 x 60000.5 = 4.80004 < 5; 0.00009 x 60000.5 = 5.400045
    d = h.denied(h.check(Side.BUY, "0.00008"), "min_notional")
    assert "4.80004" in d.detail
    assert ok(h.check(Side.BUY, "0.00009")).price is None


def test_min_notional_uses_the_rounded_limit_price(h: Harness) -> None:
    # 0.00009 x 59999.99 = 5.3999991 passes; 0.00008 x 60010.00 = 4.8008 does not
    ok(h.check(Side.BUY, "0.00009", "59999.999"))
    h.denied(h.check(Side.SELL, "0.00008", "60009.991"), "min_notional")


def test_max_qty_is_denied() -> None:
    h = Harness()
    h.market(symbol="ETHUSDT", bid=2500.0, ask=2500.2)
    h.denied(h.check(Side.BUY, "0.501", symbol="ETHUSDT"), "max_qty")
    assert ok(h.check(Side.BUY, "0.5009", symbol="ETHUSDT")).qty == D("0.500")


def test_no_rules_known_for_the_symbol_is_denied() -> None:
    h = Harness()
    h.gate.on_health(BookHealth(ts_event=T0, ts_recv=T0, venue=BN, symbol="BTCUSDT", state=BookState.LIVE, reason=""))
    h.book(BN, "BTCUSDT", 60000.0, 60001.0)
    h.denied(h.check(Side.BUY, "0.01"), "no_instrument_rules")


def test_bad_qty_and_limit_without_price_are_denied(h: Harness) -> None:
    h.denied(h.check(Side.BUY, "0"), "bad_qty")
    h.denied(h.check(Side.BUY, "-0.1"), "bad_qty")
    h.denied(h.check(Side.BUY, "0.01", order_type=OrderType.LIMIT), "no_price")


# -- limits -------------------------------------------------------------------------------------------------


def test_max_order_notional(h: Harness) -> None:
    # 0.034 x 60000.5 = 2040.017 > 2000; 0.033 x 60000.5 = 1980.0165
    h.denied(h.check(Side.BUY, "0.034"), "max_order_notional")
    ok(h.check(Side.BUY, "0.033"))


def test_max_position_notional_after_the_order_and_reducing_always_allowed(h: Harness) -> None:
    h.exposure.positions[(BN, "BTCUSDT")] = D("0.08")  # 4800.04 at the mid
    d = h.denied(h.check(Side.BUY, "0.004"), "max_position_notional")  # 0.084 x 60000.5 = 5040.042
    assert "5040.042" in d.detail
    ok(h.check(Side.BUY, "0.003"))  # 0.083 x 60000.5 = 4980.0415
    h.exposure.positions[(BN, "BTCUSDT")] = D("0.1")  # already over: 6000.05
    h.denied(h.check(Side.BUY, "0.0001"), "max_position_notional")
    ok(h.check(Side.SELL, "0.03"))  # reduces |position|: always allowed by this rule


def test_a_flip_past_the_position_limit_is_denied() -> None:
    # a higher order limit, so that the position rule alone decides
    h2 = Harness(max_order_notional=D(10_000))
    h2.market()
    h2.exposure.positions[(BN, "BTCUSDT")] = D("0.03")
    h2.denied(h2.check(Side.SELL, "0.12"), "max_position_notional")  # after: -0.09, |.| > 0.03
    ok(h2.check(Side.SELL, "0.11"))  # after -0.08: 4800.04


def test_open_orders_on_the_same_side_count_toward_the_position(h: Harness) -> None:
    ok(h.check(Side.BUY, "0.03"))  # c1 open, 1800.015
    ok(h.check(Side.BUY, "0.03"))  # c2 open: 0.06 worst case, 3600.03
    h.denied(h.check(Side.BUY, "0.03"), "max_position_notional")  # 0.09 x 60000.5 = 5400.045
    h.gate.on_order(update("c1", Side.BUY, "0.03", OrderStatus.CANCELLED))
    ok(h.check(Side.BUY, "0.03"))  # c1 gone: 0.06 again


def test_max_gross_exposure_after_the_order() -> None:
    h = Harness()
    h.market()
    h.exposure.extra_gross = D(19_000)  # other venues
    h.denied(h.check(Side.BUY, "0.02"), "max_gross_exposure")  # 19000 + 1200.01 = 20200.01 > 20000
    ok(h.check(Side.BUY, "0.016"))  # 19000 + 960.008
    # a position valued at its mark: selling it lowers gross, allowed even above the limit
    h.exposure.extra_gross = D(19_500)
    h.exposure.positions[(BN, "BTCUSDT")] = D("0.02")
    h.exposure.marks[(BN, "BTCUSDT")] = D(60_000)
    ok(h.check(Side.SELL, "0.01"))


def test_a_spot_account_cannot_sell_what_it_does_not_hold() -> None:
    h = Harness()
    h.market(SP)
    d = h.denied(h.check(Side.SELL, "0.001", venue=SP), "insufficient_funds")  # flat: no spot short
    assert "holds 0" in d.detail
    h.exposure.positions[(SP, "BTCUSDT")] = D("0.03")
    ok(h.check(Side.SELL, "0.02", price="60001", venue=SP))  # c2 offers 0.02 of the 0.03
    h.denied(h.check(Side.SELL, "0.011", venue=SP), "insufficient_funds")  # 0.02 + 0.011 > 0.03
    ok(h.check(Side.SELL, "0.01", venue=SP))  # exactly what is left
    # the perpetual beside it may go short
    h.market(BN)
    ok(h.check(Side.SELL, "0.01"))


def test_a_spot_buy_needs_the_free_cash_open_buys_on_any_symbol_included() -> None:
    h = Harness()
    h.market(SP)
    h.market(SP, "ETHUSDT", bid=3000.0, ask=3000.2)
    h.exposure.cash_left[SP] = D(2500)
    ok(h.check(Side.BUY, "0.02", price="60000", venue=SP))  # c1 commits 1200
    ok(h.check(Side.BUY, "0.3", price="3000", venue=SP, symbol="ETHUSDT"))  # c2 commits 900: 400 free
    d = h.denied(h.check(Side.BUY, "0.007", price="60000", venue=SP), "insufficient_funds")  # 420 > 400
    assert "400.00 cash is free" in d.detail
    assert "2100.00 committed" in d.detail
    ok(h.check(Side.BUY, "0.006", price="60000", venue=SP))  # 360 (c4)
    # a market buy is priced at the band's edge (it may walk the book): 40 free, 0.00066 x 60600.505 = 39.996
    h.denied(h.check(Side.BUY, "0.00067", venue=SP), "insufficient_funds")  # 40.60
    ok(h.check(Side.BUY, "0.00066", venue=SP))
    # a cancelled buy frees its cash
    h.gate.on_order(OrderUpdate(
        ts_event=T0, ts_recv=T0, client_order_id="c1", strategy="s1", venue=SP, symbol="BTCUSDT", side=Side.BUY,
        order_type=OrderType.LIMIT, tif=TimeInForce.GTC, qty=D("0.02"), price=D(60000), status=OrderStatus.CANCELLED,
        filled_qty=D(0), reason="",
    ))  # fmt: skip
    ok(h.check(Side.BUY, "0.019", price="60000", venue=SP))


def test_an_open_order_the_gate_did_not_pass_counts_once_seen() -> None:
    # after a restart the engine hands the restored open orders to the gate: they count again
    h = Harness()
    h.market()
    h.gate.on_order(update("r1", Side.BUY, "0.07", OrderStatus.PARTIALLY_FILLED, filled="0.01"))  # 0.06 left
    h.denied(h.check(Side.BUY, "0.03"), "max_position_notional")  # 0.09 x 60000.5 = 5400.045
    ok(h.check(Side.BUY, "0.02"))  # 0.08: 4800.04


def test_order_rate_window_slides_in_the_event_clock() -> None:
    h = Harness(max_orders_per_minute=3)
    h.market()
    for t in (0, 10, 20):
        ok(h.check(Side.BUY, "0.0001", now=T0 + t * S))
    h.denied(h.check(Side.BUY, "0.0001", now=T0 + 30 * S), "rate_limit")
    h.denied(h.check(Side.BUY, "0.0001", now=T0 + 60 * S - 1), "rate_limit")  # the order at 0 is still inside
    ok(h.check(Side.BUY, "0.0001", now=T0 + 60 * S))  # it left the window
    h.denied(h.check(Side.BUY, "0.0001", now=T0 + 61 * S), "rate_limit")  # 10, 20, 60
    # per venue: another venue has its own window
    h.market(venue=BY)
    ok(h.check(Side.BUY, "0.001", now=T0 + 61 * S, venue=BY))


def test_price_band_around_the_mid(h: Harness) -> None:
    # 1 % of 60000.5 is 600.005
    h.denied(h.check(Side.BUY, "0.001", "60600.51"), "price_band")
    ok(h.check(Side.BUY, "0.001", "60600.50"))
    h.denied(h.check(Side.SELL, "0.001", "59400.49"), "price_band")
    ok(h.check(Side.SELL, "0.001", "59400.50"))


def test_no_order_on_a_book_that_is_not_live_or_has_no_mid(h: Harness) -> None:
    h.gate.on_health(BookHealth(ts_event=T0, ts_recv=T0, venue=BN, symbol="BTCUSDT", state=BookState.STALE,
                                reason="no update"))  # fmt: skip
    d = h.denied(h.check(Side.BUY, "0.001"), "book_not_live")
    assert "stale" in d.detail
    h.gate.on_health(BookHealth(ts_event=T0, ts_recv=T0, venue=BN, symbol="BTCUSDT", state=BookState.LIVE, reason=""))
    h.book(BN, "BTCUSDT", 60000.0, math.nan)  # empty ask side
    h.denied(h.check(Side.BUY, "0.001"), "no_mid")
    h.book(BN, "BTCUSDT", 60000.0, 60001.0)
    ok(h.check(Side.BUY, "0.001"))
    h2 = Harness()
    h2.gate.on_instrument(InstrumentInfo(ts_event=T0, ts_recv=T0, instrument=instrument()))
    h2.denied(h2.check(Side.BUY, "0.001"), "book_not_live")  # never seen


def test_stale_signal_is_denied_and_no_signal_is_allowed(h: Harness) -> None:
    now = T0 + 100 * S
    h.denied(h.check(Side.BUY, "0.001", now=now, signal_ts=now - 10 * S - 1), "stale_signal")
    ok(h.check(Side.BUY, "0.001", now=now, signal_ts=now - 10 * S))
    ok(h.check(Side.BUY, "0.001", now=now, signal_ts=None))


# -- model health -------------------------------------------------------------------------------------------


def signal(model: str, ts: int, latency_ms: float = 5.0, age_s: float = 1.0) -> Signal:
    return Signal(
        ts_event=ts - int(age_s * S), ts_recv=ts, model=model, family="tabl", version="0" * 12, code_version="",
        venue=BN, symbol="BTCUSDT", horizon="10 steps of 1s", inference_start_ns=ts - int(latency_ms * 1e6) - 1000,
        inference_end_ns=ts - 1000,
    )  # fmt: skip


def test_a_slow_model_stops_the_strategies_that_read_it_until_a_healthy_signal(h: Harness) -> None:
    g = h.gate
    g.register_strategy("s1", ["tabl"])
    g.register_strategy("s2", ["other"])
    g.register_strategy("s3", [])  # reads any model
    g.on_signal(signal("tabl", T0 + S, latency_ms=1000.0))  # at the bound: fine
    assert [e for e in h.events if isinstance(e, StrategyHealth)] == []
    g.on_signal(signal("tabl", T0 + 2 * S, latency_ms=1500.0))
    stopped = [e for e in h.events if isinstance(e, StrategyHealth)]
    assert [(e.strategy, e.enabled, e.reason) for e in stopped] == [
        ("s1", False, "model_latency"), ("s3", False, "model_latency")]  # fmt: skip
    assert (g.strategy_enabled("s1"), g.strategy_enabled("s2"), g.strategy_enabled("s3")) == (False, True, False)
    assert "1500.0 ms" in h.denied(h.check(Side.BUY, "0.001", strategy="s1"), "strategy_stopped").detail
    ok(h.check(Side.BUY, "0.001", strategy="s2"))
    g.on_signal(signal("tabl", T0 + 3 * S, latency_ms=1600.0))  # still bad: no repeated events
    assert len([e for e in h.events if isinstance(e, StrategyHealth)]) == 2
    g.on_signal(signal("tabl", T0 + 4 * S, latency_ms=20.0))
    restarted = [e for e in h.events if isinstance(e, StrategyHealth)][2:]
    assert [(e.strategy, e.enabled, e.ts_recv) for e in restarted] == [("s1", True, T0 + 4 * S),
                                                                       ("s3", True, T0 + 4 * S)]  # fmt: skip
    ok(h.check(Side.BUY, "0.001", strategy="s1"))


def test_old_model_inputs_stop_its_strategies(h: Harness) -> None:
    h.gate.register_strategy("s1", ["tabl"])
    h.gate.on_signal(signal("tabl", T0 + S, age_s=15.5))  # > 15 s
    (ev,) = [e for e in h.events if isinstance(e, StrategyHealth)]
    assert (ev.enabled, ev.reason) == (False, "model_input_age")
    assert "15.5 s" in ev.detail


# -- drawdown -----------------------------------------------------------------------------------------------


def test_daily_drawdown_halts_and_the_day_rolls_over_at_utc_midnight() -> None:
    h = Harness()
    h.market()
    g = h.gate
    day2 = T0 + 86_400 * S
    g.on_equity(D(10_000), T0 + S)  # the day's opening equity
    g.on_equity(D(9_600), day2 - S)  # -4 %
    assert g.state is TradingState.ACTIVE
    g.on_equity(D(9_600), day2)  # day 2 opens at 9600
    g.on_equity(D(9_200), day2 + S)  # -4.17 % on the day (-8 % from the peak: under 10 %)
    assert g.state is TradingState.ACTIVE
    g.on_equity(D(9_100), day2 + 2 * S)  # -5.21 % on the day
    assert g.state is TradingState.HALTED
    assert h.states() == [(TradingState.ACTIVE, TradingState.HALTED, "daily_drawdown")]
    g.on_equity(D(9_700), day2 + 3 * S)  # latched: recovering does not resume
    assert g.state is TradingState.HALTED
    h.denied(h.check(Side.SELL, "0.001", now=day2 + 3 * S), "halted")


def test_daily_drawdown_limit_is_exceeded_not_reached() -> None:
    h = Harness()
    h.gate.on_equity(D(10_000), T0)
    h.gate.on_equity(D(9_500), T0 + S)  # exactly 5 %
    assert h.gate.state is TradingState.ACTIVE
    h.gate.on_equity(D("9499.99"), T0 + 2 * S)
    assert h.gate.state is TradingState.HALTED


def test_drawdown_from_peak_halts_until_resume_which_rebases() -> None:
    h = Harness(max_daily_drawdown_pct=50.0)
    g = h.gate
    for ts, eq in ((1, "10000"), (2, "11000"), (3, "9901")):  # 9901: 9.99 % below 11000
        g.on_equity(D(eq), T0 + ts * S)
    assert g.state is TradingState.ACTIVE
    g.on_equity(D(9_899), T0 + 4 * S)  # 10.009 %
    assert g.state is TradingState.HALTED
    assert h.states()[-1] == (TradingState.ACTIVE, TradingState.HALTED, "drawdown")
    g.resume(T0 + 5 * S)
    assert g.state is TradingState.ACTIVE
    g.on_equity(D(9_800), T0 + 6 * S)  # 1 % below 9899, the new reference
    assert g.state is TradingState.ACTIVE


# -- venue rejections ---------------------------------------------------------------------------------------


def update(cid: str, side: Side, qty: str, status: OrderStatus, ts: int = T0, filled: str = "0") -> OrderUpdate:
    return OrderUpdate(
        ts_event=ts, ts_recv=ts, client_order_id=cid, strategy="s1", venue=BN, symbol="BTCUSDT", side=side,
        order_type=OrderType.MARKET, tif=TimeInForce.IOC, qty=D(qty), price=None, status=status,
        filled_qty=D(filled), reason="insufficient balance" if status is OrderStatus.REJECTED else "",
    )  # fmt: skip


def test_repeated_venue_rejects_within_the_window_halt_latched() -> None:
    h = Harness(max_rejects=3, reject_window_s=60.0)
    h.market()
    g = h.gate
    g.on_order(update("r1", Side.BUY, "0.001", OrderStatus.REJECTED, T0))
    g.on_order(update("r1", Side.BUY, "0.001", OrderStatus.REJECTED, T0))  # the same order again: counted once
    g.on_order(update("r2", Side.BUY, "0.001", OrderStatus.REJECTED, T0 + 30 * S))
    g.on_order(update("x", Side.BUY, "0.001", OrderStatus.FILLED, T0 + 40 * S, filled="0.001"))
    g.on_order(update("r3", Side.BUY, "0.001", OrderStatus.REJECTED, T0 + 60 * S))  # r1 left the window
    assert g.state is TradingState.ACTIVE
    g.on_order(update("r4", Side.BUY, "0.001", OrderStatus.REJECTED, T0 + 70 * S))  # r2, r3, r4
    assert g.state is TradingState.HALTED
    assert h.states() == [(TradingState.ACTIVE, TradingState.HALTED, "rejects")]
    g.on_time(T0 + 1000 * S)
    assert g.state is TradingState.HALTED  # latched
    g.resume(T0 + 1001 * S)
    assert g.state is TradingState.ACTIVE


# -- data-integrity alarms (REDUCING while they last) -----------------------------------------------------


def health(state: BookState, ts: int, venue: Venue = BN, symbol: str = "BTCUSDT") -> BookHealth:
    return BookHealth(ts_event=ts, ts_recv=ts, venue=venue, symbol=symbol, state=state, reason="test")


def test_a_book_resyncing_too_long_reduces_until_it_is_live_again(h: Harness) -> None:
    g = h.gate
    g.on_health(health(BookState.RESYNCING, T0 + 10 * S, BY, "ETHUSDT"))
    g.on_health(health(BookState.RESYNCING, T0 + 15 * S, BY, "ETHUSDT"))  # still the first one's clock
    g.on_time(T0 + 40 * S)  # 30 s exactly: not yet
    assert g.state is TradingState.ACTIVE
    g.on_time(T0 + 40 * S + 1)
    assert g.state is TradingState.REDUCING
    assert "bybit_linear:ETHUSDT" in g.alarms["book_resyncing"]
    g.on_health(health(BookState.LIVE, T0 + 50 * S, BY, "ETHUSDT"))
    assert g.state is TradingState.ACTIVE
    assert h.states() == [
        (TradingState.ACTIVE, TradingState.REDUCING, "book_resyncing"),
        (TradingState.REDUCING, TradingState.ACTIVE, "book_resyncing"),
    ]
    assert [e.ts_recv for e in h.events if isinstance(e, RiskStateChanged)] == [T0 + 40 * S + 1, T0 + 50 * S]


def crossed(ts: int, symbol: str = "BTCUSDT") -> BookCrossed:
    return BookCrossed(ts_event=ts, ts_recv=ts, venue=BN, symbol=symbol, bid_px=1.0, ask_px=0.9, removed_levels=1)


def test_a_burst_of_crossed_heals_on_one_book_reduces_until_the_window_passes() -> None:
    h = Harness(crossed_burst=3, crossed_window_s=60.0)
    h.market()
    g = h.gate
    g.on_crossed(crossed(T0))
    g.on_crossed(crossed(T0 + 10 * S, "ETHUSDT"))  # another book: not part of the burst
    g.on_crossed(crossed(T0 + 10 * S))
    assert g.state is TradingState.ACTIVE
    g.on_crossed(crossed(T0 + 20 * S))
    assert g.state is TradingState.REDUCING
    g.on_time(T0 + 60 * S - 1)
    assert g.state is TradingState.REDUCING
    g.on_time(T0 + 60 * S)  # the heal at T0 is out of the window
    assert g.state is TradingState.ACTIVE
    assert [r for _, _, r in h.states()] == ["crossed_burst", "crossed_burst"]


def skew(venue: Venue, offset_ms: float, ts: int) -> ClockSkew:
    return ClockSkew(ts_event=ts, ts_recv=ts, venue=venue, offset_ms=offset_ms, round_trip_ms=3.0)


def test_clock_skew_reduces_while_it_lasts_per_venue(h: Harness) -> None:
    g = h.gate
    g.on_skew(skew(BY, 1000.0, T0))  # at the bound
    assert g.state is TradingState.ACTIVE
    g.on_skew(skew(BY, -1500.0, T0 + S))
    assert g.state is TradingState.REDUCING
    g.on_skew(skew(BN, 2.0, T0 + 2 * S))  # another venue's good measurement does not clear it
    assert g.state is TradingState.REDUCING
    g.on_skew(skew(BY, 900.0, T0 + 3 * S))
    assert g.state is TradingState.ACTIVE
    assert h.states() == [
        (TradingState.ACTIVE, TradingState.REDUCING, "clock_skew"),
        (TradingState.REDUCING, TradingState.ACTIVE, "clock_skew"),
    ]


# -- operator and the states ---------------------------------------------------------------------------------


def test_operator_halt_reduce_resume_and_live_alarms_survive_resume(h: Harness) -> None:
    g = h.gate
    g.halt("manual", T0)
    h.denied(h.check(Side.BUY, "0.001"), "halted")
    g.reduce("flatten", T0 + S)
    assert g.state is TradingState.REDUCING
    g.on_skew(skew(BN, 5000.0, T0 + 2 * S))  # an alarm on top: no change
    g.halt("again", T0 + 3 * S)
    g.resume(T0 + 4 * S)
    assert g.state is TradingState.REDUCING  # the skew alarm still applies
    g.on_skew(skew(BN, 0.0, T0 + 5 * S))
    assert g.state is TradingState.ACTIVE
    assert h.states() == [
        (TradingState.ACTIVE, TradingState.HALTED, "operator"),
        (TradingState.HALTED, TradingState.REDUCING, "operator"),
        (TradingState.REDUCING, TradingState.HALTED, "operator"),
        (TradingState.HALTED, TradingState.REDUCING, "operator"),
        (TradingState.REDUCING, TradingState.ACTIVE, "clock_skew"),
    ]


def test_reducing_allows_only_orders_toward_zero_without_crossing(h: Harness) -> None:
    h.gate.reduce("test", T0)
    h.exposure.positions[(BN, "BTCUSDT")] = D("0.03")
    h.denied(h.check(Side.BUY, "0.001"), "reduce_only")  # increases
    h.denied(h.check(Side.SELL, "0.031"), "reduce_only")  # flips to -0.001
    req = ok(h.check(Side.SELL, "0.02"))
    assert req.reduce_only is True
    h.denied(h.check(Side.SELL, "0.011"), "reduce_only")  # with the open 0.02: 0.031 > 0.03
    ok(h.check(Side.SELL, "0.01"))  # exactly flat with the open order
    h.exposure.positions[(BN, "BTCUSDT")] = D(0)
    h.denied(h.check(Side.SELL, "0.001"), "reduce_only")  # flat: nothing reduces


def test_a_short_position_is_reduced_by_buys(h: Harness) -> None:
    h.gate.reduce("test", T0)
    h.exposure.positions[(BN, "BTCUSDT")] = D("-0.03")
    ok(h.check(Side.BUY, "0.03"))
    h.denied(h.check(Side.SELL, "0.001"), "reduce_only")


def test_halted_denies_everything_even_reducing_orders() -> None:
    h = Harness()
    h.market()
    h.exposure.positions[(BN, "BTCUSDT")] = D("0.03")
    h.gate.halt("test", T0)
    h.denied(h.check(Side.SELL, "0.01"), "halted")
    h.denied(h.check(Side.BUY, "0.01"), "halted")
    h.denied(h.check(Side.SELL, "0.01", reduce_only=True), "halted")


def test_a_gate_restored_halted_stays_halted() -> None:
    events: list[Event] = []
    gate = RiskGate(RiskConfig(), FakeExposure(), events.append, state=TradingState.HALTED)
    assert gate.state is TradingState.HALTED
    gate.on_time(T0)
    assert gate.state is TradingState.HALTED
    assert events == []


def test_denials_are_counted_by_reason(h: Harness) -> None:
    h.denied(h.check(Side.BUY, "0.000001"), "min_qty")
    h.denied(h.check(Side.BUY, "0.000002"), "min_qty")
    h.denied(h.check(Side.BUY, "1"), "max_order_notional")
    ok(h.check(Side.BUY, "0.001"))
    st = h.gate.stats()
    assert st["denied_by_reason"] == {"min_qty": 2, "max_order_notional": 1}
    assert (st["denied"], st["accepted"], st["state"]) == (3, 1, "active")
    denied = [e for e in h.events if isinstance(e, OrderDenied)]
    assert [(d.reason, d.qty, d.side, d.strategy) for d in denied] == [
        ("min_qty", D("0.000001"), Side.BUY, "s1"),
        ("min_qty", D("0.000002"), Side.BUY, "s1"),
        ("max_order_notional", D("1"), Side.BUY, "s1"),
    ]


def test_a_latch_change_under_a_live_alarm_is_published_with_the_same_state(h: Harness) -> None:
    g = h.gate
    g.on_skew(skew(BN, 5000.0, T0))
    g.reduce("flatten", T0 + S)  # the effective state stays REDUCING; the latch moves
    assert g.latched is TradingState.REDUCING
    g.reduce("again", T0 + 2 * S)  # nothing moves: no event
    g.resume(T0 + 3 * S)
    assert (g.state, g.latched) == (TradingState.REDUCING, TradingState.ACTIVE)
    changes = [(e.previous, e.state, e.reason, e.detail) for e in h.events if isinstance(e, RiskStateChanged)]
    assert changes == [
        (TradingState.ACTIVE, TradingState.REDUCING, "clock_skew", "binance_usdm +5000 ms"),
        (TradingState.REDUCING, TradingState.REDUCING, "operator", "reduce: flatten"),
        (TradingState.REDUCING, TradingState.REDUCING, "operator", "resume; alarms still on: clock_skew"),
    ]


def test_restored_drawdown_references_survive_a_restart() -> None:
    h = Harness()
    day = T0 + 86_400 * S
    h.gate.restore_equity(D(12_000), D(10_000), day)
    h.gate.on_equity(D(9_600), day + 3600 * S)  # -4 % on the restored day, -20 % from the restored peak
    assert h.states() == [(TradingState.ACTIVE, TradingState.HALTED, "drawdown")]
    h2 = Harness()
    h2.gate.restore_equity(None, D(10_000), day)
    h2.gate.on_equity(D(9_400), day + 3600 * S)  # -6 % on the restored day
    assert h2.states() == [(TradingState.ACTIVE, TradingState.HALTED, "daily_drawdown")]
    h3 = Harness()
    h3.gate.restore_equity(None, D(10_000), day - 86_400 * S)  # yesterday's: the new day opens at 9400
    h3.gate.on_equity(D(9_400), day + 3600 * S)
    assert h3.gate.state is TradingState.ACTIVE
