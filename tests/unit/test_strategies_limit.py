"""Limit (maker) entries in the strategies (``strategies.limit``): the price at the offset from the last top,
post-only, the timeout cancel of the strategy's own resting orders (hand-made ``OrderUpdate`` events in the
event clock), exits at market, the default config unchanged; then a threshold strategy with
``order_type = "limit"`` through the real Engine, RiskGate, PaperExecution and Ledger on the real book of the
embedded demo recording (Binance spot BTCUSDT, 2024-08-08 23:54 UTC, built by ``bot.export.OfflineFeed``
in ``tests.unit.demo_books``, shared with test_paper.py): an order resting, then filled as maker, or
cancelled at its timeout and placed again.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from decimal import ROUND_DOWN
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

import strategies.config
from bot.bus import EventBus
from bot.config import PaperConfig, PaperVenueConfig, RiskConfig, load_settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.events import BookHealth, BookState, Event, Side, Signal, Trade, Venue
from bot.execution.paper import PaperExecution
from bot.ledger import Ledger
from bot.orders import (
    CancelIntent,
    Fill,
    Instrument,
    InstrumentInfo,
    Intent,
    Liquidity,
    OrderDenied,
    OrderStatus,
    OrderType,
    OrderUpdate,
    TargetPosition,
    TimeInForce,
)
from bot.risk import RiskGate
from bot.trading import BookHealthView
from strategies import build_strategies
from strategies.config import ForecasterConfig, MultiHorizonConfig, PortfolioConfig, StrategyConfig, ThresholdConfig
from strategies.forecaster import ForecasterStrategy
from strategies.multihorizon import MultiHorizonStrategy
from strategies.portfolio import PortfolioStrategy
from strategies.threshold import ThresholdStrategy
from tests.unit import strategy_events as events
from tests.unit.demo_books import SYM, ReplayBook, Session, V, capture_session
from tests.unit.strategy_events import LINEAR, SPOT, T0, USDM, S, book, only_target

pytestmark = pytest.mark.unit

UP, DOWN = (0.1, 0.1, 0.8), (0.8, 0.1, 0.1)


def sig(ts: int, probs: tuple[float, ...] = UP, **kw: Any) -> Signal:
    """``strategy_events.sig``, "up" unless the test says otherwise."""
    return events.sig(ts, probs, **kw)


def update(cid: str, status: OrderStatus, ts: int, *, side: Side = Side.BUY, qty: str = "0.002",
           filled: str = "0", order_type: OrderType = OrderType.LIMIT, strategy: str = "t",
           symbol: str = "BTCUSDT", venue: Venue = SPOT) -> OrderUpdate:
    return OrderUpdate(ts_event=ts, ts_recv=ts, client_order_id=cid, strategy=strategy, venue=venue, symbol=symbol,
                       side=side, order_type=order_type, tif=TimeInForce.POST_ONLY, qty=D(qty),
                       price=D("49999.0") if order_type is OrderType.LIMIT else None, status=status,
                       filled_qty=D(filled))


def fill(cid: str, qty: str, ts: int, side: Side = Side.BUY, symbol: str = "BTCUSDT", venue: Venue = SPOT,
         strategy: str = "t") -> Fill:
    return Fill(ts_event=ts, ts_recv=ts, client_order_id=cid, strategy=strategy, venue=venue, symbol=symbol,
                side=side, qty=D(qty), price=D("49999.0"), fee=D(0), fee_asset="USDT", liquidity=Liquidity.MAKER,
                trade_id=f"{cid}-1")


def only_cancel(intents: Sequence[Intent]) -> CancelIntent:
    assert len(intents) == 1, intents
    c = intents[0]
    assert isinstance(c, CancelIntent)
    return c


def threshold(**kw: Any) -> ThresholdStrategy:
    """``strategy_events.threshold`` with limit entries and a day's hold unless the test says otherwise."""
    return events.threshold(**{"order_type": "limit", "hold_s": 86_400, **kw})


# -- the default: market orders, as before ------------------------------------------------------------


def test_default_config_is_market_orders_and_tracks_no_order() -> None:
    cfg = ThresholdConfig(name="t", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",), threshold=0.4,
                          notional=D(100))
    assert (cfg.order_type, cfg.limit_offset_bps, cfg.post_only, cfg.limit_timeout_s, cfg.exit_market) == (
        "market", 0.0, True, 30.0, True)
    s = threshold(order_type="market")
    t = only_target(s.on_signal(sig(T0 + S)))
    assert (t.qty, t.order_type, t.price, t.tif) == (D("0.002"), OrderType.MARKET, None, TimeInForce.GTC)
    # an order left open for an hour is not the strategy's business at market
    s.on_order(update("b1", OrderStatus.NEW, T0 + S, order_type=OrderType.MARKET))
    assert not s.on_time(T0 + 3600 * S)
    assert not s.on_book(book(T0 + 3601 * S, 49_999.0, 50_001.0))
    # and a market order that ends unfilled changes nothing (the held direction stays, as before)
    s.on_order(update("b1", OrderStatus.EXPIRED, T0 + 3602 * S, order_type=OrderType.MARKET))
    assert s.direction("BTCUSDT") == 1
    assert s.on_signal(sig(T0 + 3603 * S)) == []


def test_every_kind_has_the_order_fields_with_market_defaults() -> None:
    cfgs: list[StrategyConfig] = [
        ThresholdConfig(name="a", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",), threshold=0.4,
                        notional=D(1)),
        MultiHorizonConfig(name="c", kind="multihorizon", model="m", venue=SPOT, symbols=("BTCUSDT",),
                           threshold=0.4, notional=D(1)),
        PortfolioConfig(name="d", kind="portfolio", model="m", venue=LINEAR, symbols=("BTCUSDT", "ETHUSDT"),
                        capital=D(1), max_position=D(1)),
        ForecasterConfig(name="e", kind="forecaster", model="m", venue=USDM, symbols=("BTCUSDT",),
                         taker_fee_bps=5, notional=D(1)),
    ]
    for c in cfgs:
        assert (c.order_type, c.limit_offset_bps, c.post_only, c.limit_timeout_s, c.exit_market) == (
            "market", 0.0, True, 30.0, True), type(c).__name__
    assert all(not s.orders.limit for s in build_strategies(cfgs))  # type: ignore[attr-defined]


def _config_example() -> str:
    doc = strategies.config.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    lines = list(itertools.takewhile(lambda ln: ln.startswith("    ") or not ln.strip(), block.splitlines()))
    return "\n".join(ln[4:] for ln in lines).strip() + "\n"


def test_the_example_in_the_config_docstring_loads(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_text(_config_example())
    (cfg,) = load_settings(p).strategies
    assert isinstance(cfg, ThresholdConfig)
    assert (cfg.order_type, cfg.limit_offset_bps, cfg.post_only, cfg.limit_timeout_s, cfg.exit_market) == (
        "limit", 0.5, True, 20.0, True)


@pytest.mark.parametrize(("line", "key"), [
    ('order_type = "stop"', "order_type"),
    ("limit_offset_bps = -1", "limit_offset_bps"),
    ("limit_offset_bps = 5000", "limit_offset_bps"),
    ("limit_timeout_s = 0", "limit_timeout_s"),
])
def test_bad_order_fields_are_refused_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(re.sub(rf"^{key} = .*$", line, _config_example(), count=1, flags=re.M))  # the one bad value
    with pytest.raises(ConfigError, match=key):
        load_settings(p)


# -- price, side and time in force ------------------------------------------------------------------------


def test_limit_buy_rests_at_the_bid_and_a_sell_at_the_ask_with_the_offset() -> None:
    s = threshold(limit_offset_bps=2)
    t = only_target(s.on_signal(sig(T0 + S)))
    # 49,999.0 x (1 - 2 / 10,000) = 49,999 - 9.9998
    assert (t.qty, t.order_type, t.tif, t.price) == (D("0.002"), OrderType.LIMIT, TimeInForce.POST_ONLY,
                                                     D("49989.0002"))
    s.on_fill(fill("b1", "0.002", T0 + 2 * S))
    s.on_book(book(T0 + 3 * S, 50_100.0, 50_102.5))
    exit_ = only_target(s.on_signal(sig(T0 + 4 * S, DOWN)))  # spot: the opposite signal goes flat
    # the opposite-signal exit goes the entries' way: a limit sell at 50,102.5 x (1 + 2 / 10,000)
    assert (exit_.qty, exit_.order_type, exit_.tif, exit_.price) == (D(0), OrderType.LIMIT, TimeInForce.POST_ONLY,
                                                                     D("50102.5") + D("10.0205"))


def test_zero_offset_is_the_touch_exactly_from_the_float_repr_and_the_last_good_book() -> None:
    s = threshold()
    s.on_book(book(T0 + S, 61_837.63, 61_837.64))
    s.on_book(book(T0 + 2 * S, 61_840.0, 61_839.0))  # crossed: ignored, the last good top stays
    t = only_target(s.on_signal(sig(T0 + 3 * S)))
    assert t.price == D("61837.63")
    assert str(t.price) == "61837.63"  # Decimal(repr(px)), not the binary expansion


def test_post_only_off_sends_gtc() -> None:
    s = threshold(post_only=False)
    t = only_target(s.on_signal(sig(T0 + S)))
    assert (t.order_type, t.tif, t.price) == (OrderType.LIMIT, TimeInForce.GTC, D("49999.0"))


def test_short_entry_is_a_limit_sell_at_the_ask() -> None:
    s = threshold(venue=USDM, allow_short=True, limit_offset_bps=1)
    t = only_target(s.on_signal(sig(T0 + S, DOWN, venue=USDM)))
    assert (t.qty, t.price) == (D("-0.002"), D("50001.0") * D("1.0001"))
    assert t.price == D("50006.0001")


# -- timeout ------------------------------------------------------------------------------------------------


def test_resting_order_is_cancelled_at_the_timeout_in_event_time_from_on_time_or_on_book() -> None:
    # Arrange: an entry whose order the engine placed as b1 at T0 + 1 s
    s = threshold(limit_timeout_s=30)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.NEW, T0 + S))
    s.on_order(update("b1", OrderStatus.ACCEPTED, T0 + S + S // 20))
    # Act / Assert: 29.999 s old is not yet 30
    assert not s.on_time(T0 + 31 * S - 1)
    assert not s.on_book(book(T0 + 31 * S - 1, 49_999.0, 50_001.0))
    c = only_cancel(s.on_book(book(T0 + 31 * S, 49_999.0, 50_001.0)))
    assert (c.client_order_id, c.strategy, c.ts_recv) == ("b1", "t", T0 + 31 * S)
    assert c.reason == "limit order open 30s >= 30s"
    assert not s.on_time(T0 + 40 * S)  # asked already: not again every tick
    assert only_cancel(s.on_time(T0 + 61 * S)).client_order_id == "b1"  # still open a timeout later: again
    assert s.stats()["timeout_cancels"] == 1
    assert s.stats()["timeout_cancels_repeated"] == 1


def test_after_the_timeout_cancel_the_next_signal_targets_again() -> None:
    s = threshold(limit_timeout_s=30)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.NEW, T0 + S))
    s.on_order(update("b1", OrderStatus.ACCEPTED, T0 + S + S // 20))
    only_cancel(s.on_time(T0 + 31 * S))
    assert s.on_signal(sig(T0 + 31 * S + 1)) == []  # the cancel is not done yet: the target stands
    s.on_order(update("b1", OrderStatus.CANCELLED, T0 + 31 * S + S // 20))
    assert s.direction("BTCUSDT") == 0  # nothing filled: flat
    s.on_book(book(T0 + 32 * S, 39_999.0, 40_001.0))
    t = only_target(s.on_signal(sig(T0 + 33 * S)))
    assert (t.qty, t.price) == (D("0.0025"), D("39999.0"))  # 100 / 40,000, at the new bid
    assert not s.on_time(T0 + 3600 * S)  # b1 is closed: nothing to cancel


def test_partly_filled_order_cancelled_at_timeout_keeps_the_fill_and_targets_the_full_size_again() -> None:
    s = threshold(limit_timeout_s=10)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.NEW, T0 + S))
    s.on_fill(fill("b1", "0.0005", T0 + 2 * S))
    s.on_order(update("b1", OrderStatus.PARTIALLY_FILLED, T0 + 2 * S, filled="0.0005"))
    only_cancel(s.on_time(T0 + 11 * S))
    s.on_order(update("b1", OrderStatus.CANCELLED, T0 + 11 * S, filled="0.0005"))
    assert (s.direction("BTCUSDT"), s.position(SPOT, "BTCUSDT")) == (1, D("0.0005"))
    t = only_target(s.on_signal(sig(T0 + 12 * S)))  # same direction, but short of the target: again
    assert (t.qty, t.price) == (D("0.002"), D("49999.0"))  # the engine orders the 0.0015 missing


def test_a_cancel_the_strategy_did_not_ask_for_and_a_fill_are_not_misses() -> None:
    s = threshold(limit_timeout_s=10)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.NEW, T0 + S))
    s.on_order(update("b1", OrderStatus.CANCELLED, T0 + 2 * S))  # the engine's or the operator's
    assert s.direction("BTCUSDT") == 1
    assert s.on_signal(sig(T0 + 3 * S)) == []
    s.on_order(update("b2", OrderStatus.NEW, T0 + 3 * S))
    s.on_fill(fill("b2", "0.002", T0 + 4 * S))
    s.on_order(update("b2", OrderStatus.FILLED, T0 + 4 * S, filled="0.002"))
    assert not s.on_time(T0 + 100 * S)
    assert s.on_signal(sig(T0 + 101 * S)) == []  # held: the repeat changes nothing


def test_other_strategies_orders_are_not_tracked() -> None:
    s = threshold(limit_timeout_s=10)
    s.on_order(update("x1", OrderStatus.NEW, T0, strategy="other"))
    assert not s.on_time(T0 + 100 * S)


def test_post_only_rejection_leaves_the_strategy_flat_to_try_again() -> None:
    s = threshold()
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.NEW, T0 + S))
    s.on_order(update("b1", OrderStatus.REJECTED, T0 + S + S // 20))
    assert s.direction("BTCUSDT") == 0
    assert only_target(s.on_signal(sig(T0 + 2 * S))).qty == D("0.002")
    assert s.stats()["unfilled_rejected"] == 1


def test_no_timeout_means_an_order_rests_until_filled() -> None:
    s = threshold(limit_timeout_s=None)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_order(update("b1", OrderStatus.ACCEPTED, T0 + S))
    assert not s.on_time(T0 + 23 * 3600 * S)  # within the day-long hold


# -- exits -----------------------------------------------------------------------------------------------


def test_time_exit_goes_at_market_by_default_and_as_a_limit_with_exit_market_off() -> None:
    for exit_market, want in ((True, (OrderType.MARKET, None, TimeInForce.GTC)),
                              (False, (OrderType.LIMIT, D("50001.0"), TimeInForce.POST_ONLY))):
        s = threshold(hold_s=10, exit_market=exit_market)
        only_target(s.on_signal(sig(T0 + S)))
        s.on_fill(fill("b1", "0.002", T0 + 2 * S))
        t = only_target(s.on_time(T0 + 11 * S))
        assert (t.qty, t.order_type, t.price, t.tif) == (D(0), *want)
        assert t.reason == "held 10s"


def test_a_limit_time_exit_that_times_out_is_sent_again_at_the_next_tick() -> None:
    s = threshold(hold_s=10, exit_market=False, limit_timeout_s=5)
    only_target(s.on_signal(sig(T0 + S)))
    s.on_fill(fill("b1", "0.002", T0 + 2 * S))
    only_target(s.on_time(T0 + 11 * S))
    s.on_order(update("b2", OrderStatus.NEW, T0 + 11 * S, side=Side.SELL))
    only_cancel(s.on_time(T0 + 16 * S))
    s.on_order(update("b2", OrderStatus.CANCELLED, T0 + 16 * S, side=Side.SELL))
    assert s.direction("BTCUSDT") == 1  # still long: held again, with its entry time
    t = only_target(s.on_book(book(T0 + 17 * S, 49_950.0, 49_952.0)))  # the hold is long over: at once
    assert (t.qty, t.price, t.order_type) == (D(0), D("49952.0"), OrderType.LIMIT)


def test_exit_of_a_long_that_never_filled_has_no_price_to_chase() -> None:
    # position 0, target 0: no order follows (the engine cancels the resting buy), so it goes plain
    s = threshold(hold_s=10)
    only_target(s.on_signal(sig(T0 + S)))
    t = only_target(s.on_signal(sig(T0 + 2 * S, DOWN)))
    assert (t.qty, t.order_type, t.price) == (D(0), OrderType.MARKET, None)


def test_restored_position_exits_at_market_before_any_book() -> None:
    s = ThresholdStrategy(ThresholdConfig(name="t", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",),
                                          threshold=0.4, notional=D(100), order_type="limit", hold_s=10,
                                          exit_market=False))
    s.restore({(SPOT, "BTCUSDT"): D("0.002")})
    assert not s.on_time(T0)  # the hold starts
    t = only_target(s.on_time(T0 + 10 * S))
    assert (t.qty, t.order_type) == (D(0), OrderType.MARKET)
    assert s.stats()["limit_without_book"] == 1


# -- the other kinds ----------------------------------------------------------------------------------------


def test_multihorizon_and_forecaster_entries_are_limit_orders() -> None:
    m = MultiHorizonStrategy(MultiHorizonConfig(name="mh", kind="multihorizon", model="m", venue=SPOT,
                                                symbols=("BTCUSDT",), threshold=0.4, notional=D(100),
                                                order_type="limit", limit_offset_bps=10))
    m.on_book(book(T0, 49_999.0, 50_001.0))
    t = only_target(m.on_signal(sig(T0 + S, UP, horizon="5m", names=("ret_5m", "ret_60m"), values=(0.01, 0.02))))
    assert (t.qty, t.price, t.tif) == (D("0.002"), D("49949.001"), TimeInForce.POST_ONLY)  # 49,999 - 49.999
    f = ForecasterStrategy(ForecasterConfig(name="fc", kind="forecaster", model="m", venue=USDM,
                                            symbols=("BTCUSDT",), taker_fee_bps=2.5, notional=D(500),
                                            allow_short=True, order_type="limit", post_only=False))
    f.on_book(book(T0, 49_999.0, 50_001.0, venue=USDM))
    t = only_target(f.on_signal(sig(T0 + S, (), venue=USDM, horizon="20s", names=("mid_bps_20s",), values=(-9.0,))))
    assert (t.qty, t.price, t.tif) == (D("-0.01"), D("50001.0"), TimeInForce.GTC)


def test_portfolio_rebalance_prices_each_side_and_retargets_an_unfilled_asset() -> None:
    p = PortfolioStrategy(PortfolioConfig(name="p", kind="portfolio", model="m", venue=LINEAR,
                                          symbols=("BTCUSDT", "ETHUSDT"), capital=D(1000), max_position=D(1000),
                                          allow_short=True, rebalance_bars=100, drift_band=1.0,
                                          order_type="limit", limit_timeout_s=10))
    p.on_book(book(T0, 49_999.0, 50_001.0, venue=LINEAR))
    p.on_book(book(T0, 2_499.9, 2_500.1, venue=LINEAR, symbol="ETHUSDT"))

    def step(ts: int) -> list[TargetPosition]:
        out = [*p.on_signal(sig(ts, (), venue=LINEAR, names=("ret_15m", "weight"), values=(0.0, 0.5),
                                ts_event=ts - S)),
               *p.on_signal(sig(ts, (), venue=LINEAR, symbol="ETHUSDT", names=("ret_15m", "weight"),
                                values=(0.0, -0.5), ts_event=ts - S))]
        assert all(isinstance(t, TargetPosition) for t in out)
        return out  # type: ignore[return-value]

    btc, eth = step(T0 + S)
    assert (btc.qty, btc.price) == (D("0.01"), D("49999.0"))  # 500 long: a buy at the bid
    assert (eth.qty, eth.price) == (D("-0.2"), D("2500.1"))  # 500 short: a sell at the ask
    for cid, sym, side in (("b1", "BTCUSDT", Side.BUY), ("b2", "ETHUSDT", Side.SELL)):
        p.on_order(update(cid, OrderStatus.NEW, T0 + S, side=side, symbol=sym, venue=LINEAR, strategy="p"))
    p.on_fill(fill("b1", "0.01", T0 + 2 * S, symbol="BTCUSDT", venue=LINEAR, strategy="p"))
    p.on_order(update("b1", OrderStatus.FILLED, T0 + 2 * S, filled="0.01", venue=LINEAR, strategy="p"))
    assert step(T0 + 3 * S) == []  # nothing drifted, no bar: no rebalance
    assert only_cancel(p.on_book(book(T0 + 11 * S, 2_499.9, 2_500.1, venue=LINEAR, symbol="ETHUSDT")))
    p.on_order(update("b2", OrderStatus.CANCELLED, T0 + 11 * S, side=Side.SELL, symbol="ETHUSDT", venue=LINEAR,
                      strategy="p"))
    assert (p.held_weight("BTCUSDT"), p.held_weight("ETHUSDT")) == (0.5, 0.0)  # what filled, not the target
    # ETH holds 0 of its -0.2 target (within the wide drift band): the next step targets again; BTC is
    # where it should be (no order follows, so its target goes plain)
    again = step(T0 + 12 * S)
    assert [(t.symbol, t.qty, t.price) for t in again] == [
        ("BTCUSDT", D("0.01"), None), ("ETHUSDT", D("-0.2"), D("2500.1"))]
    assert again[1].reason == "rebalance (unfilled ETHUSDT): w -0.500"
    assert step(T0 + 13 * S) == []  # targeted again: no longer owed


# -- through the real engine, risk gate, paper matcher and ledger on the demo book --------------------------

@pytest.fixture(scope="module")
def session() -> Session:
    return capture_session()


class Stack:
    """The order path as ``bot.trading`` wires it, on one bus, fed the captured session event by event
    (each followed by ``engine.on_time``, as the live timer does)."""

    def __init__(self, s: Session, **strategy: Any) -> None:
        self.s = s
        self.bus = EventBus()
        self.out: list[Event] = []
        for t in (OrderUpdate, Fill, OrderDenied):
            self.bus.subscribe(t, self.out.append)
        self.book = ReplayBook(s)
        health = BookHealthView()
        self.bus.subscribe(BookHealth, health.on_health)
        self.ledger = Ledger({V: {"USDT": D(10_000)}})
        self.gate = RiskGate(RiskConfig(), self.ledger, self.bus.publish)
        venue = PaperVenueConfig(latency_ms=50, cancel_latency_ms=50, maker_fee=D("0.0002"), taker_fee=D("0.0005"))
        self.paper = PaperExecution(PaperConfig(venues={V: venue}), lambda v, sym: self.book if (v, sym) == (V, SYM)
                                    else None, self.bus.publish, live=health.live)
        cfg: dict[str, Any] = {"name": "maker", "kind": "threshold", "model": "m", "venue": V, "symbols": [SYM],
                               "threshold": 0.4, "notional": 100, "order_type": "limit"}
        cfg.update(strategy)
        self.strategy = ThresholdStrategy(ThresholdConfig(**cfg))
        self.engine = Engine([self.strategy], self.gate, self.paper, self.ledger, accounts=[V],
                             snapshot_every_ns=3600 * S)
        self.engine.attach(self.bus)
        t0 = s.events[0].ts_recv
        # Binance spot BTCUSDT's rules (exchangeInfo: PRICE_FILTER, LOT_SIZE, NOTIONAL)
        self.bus.publish(InstrumentInfo(ts_event=t0, ts_recv=t0, instrument=Instrument(
            venue=V, symbol=SYM, base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"),
            min_qty=D("0.00001"), min_notional=D(5))))
        self.bus.publish(BookHealth(ts_event=t0, ts_recv=t0, venue=V, symbol=SYM, state=BookState.LIVE,
                                    reason="synced"))
        self.pos = -1

    def to(self, i: int) -> None:
        for j in range(self.pos + 1, i + 1):
            self.book.i = j
            ev = self.s.events[j]
            self.bus.publish(ev)
            self.engine.on_time(ev.ts_recv)
        self.pos = max(self.pos, i)

    def until(self, pred: Any, limit: int) -> int:
        """Hand in events until ``pred()`` holds; the index of the event after which it did."""
        for j in range(self.pos + 1, limit):
            self.to(j)
            if pred():
                return j
        raise AssertionError("never happened")

    def signal_up(self, at: int) -> None:
        ts = self.s.events[at].ts_recv
        self.bus.publish(sig(ts, UP))

    def updates(self, cid: str) -> list[OrderUpdate]:
        return [e for e in self.out if isinstance(e, OrderUpdate) and e.client_order_id == cid]

    def fills(self, cid: str) -> list[Fill]:
        return [e for e in self.out if isinstance(e, Fill) and e.client_order_id == cid]


def test_limit_entry_rests_then_fills_as_maker_and_the_time_exit_takes(session: Session) -> None:
    # Arrange: the real book at event 100 (23:54:16.54): best bid 61,824.00, best ask 61,824.01
    bids, asks = session.tops[100]
    assert (bids[0][0], asks[0][0]) == (61824.0, 61824.01)
    st = Stack(session, hold_s=10)
    st.to(100)
    t_signal = session.events[100].ts_recv
    # Act: an "up" signal; 100 USDT / mid 61,824.005 = 0.00161749 BTC, the gate floors it to 0.00161
    st.signal_up(100)
    # Assert: a post-only buy at the best bid, NEW inside the 50 ms latency
    (new,) = st.updates("b000000001")
    assert (new.status, new.side, new.order_type, new.tif) == (OrderStatus.NEW, Side.BUY, OrderType.LIMIT,
                                                              TimeInForce.POST_ONLY)
    assert (new.qty, new.price) == (D("0.00161"), D("61824.00"))
    j = st.until(lambda: st.updates("b000000001")[-1].status is OrderStatus.ACCEPTED, 400)
    assert session.events[j].ts_recv >= t_signal + 50_000_000
    resting = st.engine.open_orders()
    assert [(o.client_order_id, o.status, o.filled_qty) for o in resting] == [
        ("b000000001", OrderStatus.ACCEPTED, D(0))]
    assert [o.client_order_id for o in st.paper.open_orders()] == ["b000000001"]
    assert st.strategy.orders.open_ids() == ["b000000001"]
    # a sell-taker trade at our price, past the queue ahead, fills it (event 238, 6.18 s later); the ask
    # never came down to 61,824.00 before, so the fill is the queue's, as maker
    k = st.until(lambda: bool(st.fills("b000000001")), 400)
    trade = session.events[k]
    assert isinstance(trade, Trade)
    assert (k, trade.price, trade.size, trade.taker_side) == (238, 61824.0, 0.02, Side.SELL)
    assert min(session.tops[i][1][0][0] for i in range(100, k + 1)) > 61824.0
    (f,) = st.fills("b000000001")
    assert (f.qty, f.price, f.liquidity) == (D("0.00161"), D("61824.00"), Liquidity.MAKER)
    assert f.fee == D("0.00161") * D("61824.00") * D("0.0002") == D("0.019907328")
    assert st.updates("b000000001")[-1].status is OrderStatus.FILLED
    assert st.strategy.position(V, SYM) == D("0.00161") == st.ledger.position(V, SYM)
    assert st.engine.open_orders() == []
    # the 10 s hold ends: the time exit goes at market, reduce-only, and takes
    e = st.until(lambda: bool(st.updates("b000000002")), 1000)
    assert session.events[e].ts_recv >= t_signal + 10 * S > session.events[e - 1].ts_recv
    exit_new = st.updates("b000000002")[0]
    assert (exit_new.side, exit_new.order_type, exit_new.qty, exit_new.reduce_only) == (
        Side.SELL, OrderType.MARKET, D("0.00161"), True)
    st.until(lambda: st.updates("b000000002")[-1].status is OrderStatus.FILLED, 1000)
    assert {x.liquidity for x in st.fills("b000000002")} == {Liquidity.TAKER}
    assert st.strategy.position(V, SYM) == 0 == st.ledger.position(V, SYM)
    assert not [x for x in st.out if isinstance(x, OrderDenied)]


def test_limit_entry_behind_the_touch_is_cancelled_at_its_timeout_and_the_next_signal_places_it_again(
        session: Session) -> None:
    # Arrange: event 500 (23:54:33.34), best bid 61,830.00; 2 bps behind it is 61,817.634, floored to the tick
    bids, _ = session.tops[500]
    assert bids[0][0] == 61830.0
    st = Stack(session, limit_offset_bps=2, limit_timeout_s=5, hold_s=60)
    st.to(500)
    t_signal = session.events[500].ts_recv
    st.signal_up(500)
    assert st.updates("b000000001")[0].price == D("61817.63")
    j = st.until(lambda: st.updates("b000000001")[-1].status is OrderStatus.ACCEPTED, 700)
    assert st.engine.open_orders()[0].status is OrderStatus.ACCEPTED
    # Act: nothing trades or offers down to 61,817.63 within the next 5 s (the lowest ask is 61,828.10)
    c = st.until(lambda: not st.updates("b000000001")[-1].status.is_open, 800)
    window = range(j, c + 1)
    assert min(session.tops[i][1][0][0] for i in window) == 61828.1
    assert min(ev.price for i in window if isinstance(ev := session.events[i], Trade)) > 61817.63
    # Assert: the strategy's cancel went out at the first event 5 s after the order, and took 50 ms
    last = st.updates("b000000001")[-1]
    assert (last.status, last.reason, last.filled_qty) == (OrderStatus.CANCELLED, "cancelled", D(0))
    times = [ev.ts_recv for ev in session.events]
    asked = next(t for t in times if t >= t_signal + 5 * S)
    assert last.ts_event == next(t for t in times if t >= asked + 50_000_000)
    assert st.fills("b000000001") == []
    assert st.engine.open_orders() == []
    assert st.strategy.direction(SYM) == 0
    assert st.strategy.stats()["timeout_cancels"] == 1
    # the next "up" signal aims again, 2 bps behind the bid of that moment
    st.to(c + 1)
    bid = session.tops[c + 1][0][0][0]
    st.signal_up(c + 1)
    again = st.updates("b000000002")[0]
    assert (again.side, again.qty, again.tif) == (Side.BUY, D("0.00161"), TimeInForce.POST_ONLY)
    expected = (D(repr(bid)) * D("0.9998")).quantize(D("0.01"), rounding=ROUND_DOWN)
    assert again.price == expected < D(repr(bid))
