"""Strategies on hand-made signals, books, bars and fills: every expected quantity computed by hand."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from bot.bus import EventBus
from bot.engine import Engine
from bot.events import KlineClosed, Side, Signal, Venue
from bot.orders import Fill, Liquidity, OrderRequest, TargetPosition
from strategies import build_strategies
from strategies.common import Mids, horizon_seconds, qty_for
from strategies.config import ForecasterConfig, MultiHorizonConfig, PortfolioConfig, ThresholdConfig
from strategies.forecaster import ForecasterStrategy
from strategies.multihorizon import MultiHorizonStrategy, kelly_fraction
from strategies.portfolio import PortfolioStrategy
from strategies.threshold import ThresholdStrategy
from tests.unit.strategy_events import LINEAR, SPOT, T0, USDM, S, book, only_target, sig, threshold

pytestmark = pytest.mark.unit

def bar(ts: int, open_ms: int, close: float, *, symbol: str, venue: Venue = LINEAR,
        interval_s: int = 60) -> KlineClosed:
    return KlineClosed(ts_event=ts, ts_recv=ts, venue=venue, symbol=symbol, interval_s=interval_s,
                       open_time_ms=open_ms, open=close, high=close, low=close, close=close, volume=1.0)


# -- helpers --------------------------------------------------------------------------------------------


def test_horizon_labels_parse_to_seconds() -> None:
    assert horizon_seconds("10s") == (10.0,)
    assert horizon_seconds("5s,10s,15s,20s") == (5.0, 10.0, 15.0, 20.0)
    assert horizon_seconds("60m") == (3600.0,)
    assert horizon_seconds("1h,1d") == (3600.0, 86400.0)
    assert horizon_seconds("10 steps of 1s") == ()


def test_qty_rounds_toward_zero_and_needs_a_mid() -> None:
    assert qty_for(Decimal(100), 61_829.765) == Decimal("0.00161734")  # 0.001617345...
    assert qty_for(Decimal(100), 61_829.765, -1) == Decimal("-0.00161734")
    assert qty_for(Decimal(100), 0.0) == 0


def test_mids_ignore_one_sided_and_crossed_tops() -> None:
    m = Mids()
    m.on_book(book(T0, 100.0, 102.0))
    m.on_book(book(T0, 0.0, 101.0))
    m.on_book(book(T0, 103.0, 102.0))
    assert m.mid(SPOT, "BTCUSDT") == 101.0
    assert m.spread_bps(SPOT, "BTCUSDT") == pytest.approx(2 / 101 * 1e4)


# -- threshold -------------------------------------------------------------------------------------------


def test_threshold_enters_long_above_threshold_with_notional_over_mid() -> None:
    s = threshold()
    t = only_target(s.on_signal(sig(T0 + S, probs=(0.30, 0.25, 0.45))))
    assert t.qty == Decimal("0.002")  # 100 USDT / 50,000
    assert (t.strategy, t.venue, t.symbol, t.signal_ts) == ("t", SPOT, "BTCUSDT", T0 + S)
    assert t.reason.startswith("up 0.450 > 0.4")


def test_threshold_does_nothing_at_or_below_threshold() -> None:
    s = threshold()
    assert list(s.on_signal(sig(T0 + S, probs=(0.30, 0.31, 0.39)))) == []
    assert list(s.on_signal(sig(T0 + 2 * S, probs=(0.20, 0.40, 0.40)))) == []  # equal: not above


def test_threshold_ignores_other_symbols_and_a_repeat_of_its_own_direction() -> None:
    s = threshold()
    assert list(s.on_signal(sig(T0 + S, symbol="ETHUSDT", probs=(0.1, 0.1, 0.8)))) == []
    only_target(s.on_signal(sig(T0 + S, probs=(0.1, 0.1, 0.8))))
    assert list(s.on_signal(sig(T0 + 2 * S, probs=(0.1, 0.1, 0.8)))) == []


def test_threshold_no_mid_no_intent() -> None:
    s = ThresholdStrategy(ThresholdConfig(name="t", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",),
                                          threshold=0.4, notional=Decimal(100)))
    assert list(s.on_signal(sig(T0, probs=(0.1, 0.1, 0.8)))) == []
    assert s.counts["no_mid"] == 1


def test_threshold_spot_down_closes_a_long_and_never_shorts() -> None:
    s = threshold()
    assert list(s.on_signal(sig(T0 + S, probs=(0.5, 0.3, 0.2)))) == []  # flat + down on spot: nothing
    only_target(s.on_signal(sig(T0 + 2 * S, probs=(0.1, 0.2, 0.7))))
    t = only_target(s.on_signal(sig(T0 + 3 * S, probs=(0.6, 0.2, 0.2))))
    assert t.qty == 0
    assert "no short" in t.reason
    assert s.direction("BTCUSDT") == 0


def test_threshold_allow_short_goes_short_and_flips_on_the_opposite_signal() -> None:
    s = threshold(venue=USDM, allow_short=True)
    t = only_target(s.on_signal(sig(T0 + S, venue=USDM, probs=(0.6, 0.2, 0.2))))
    assert t.qty == Decimal("-0.002")
    t = only_target(s.on_signal(sig(T0 + 2 * S, venue=USDM, probs=(0.2, 0.2, 0.6))))
    assert t.qty == Decimal("0.002")  # flipped: the engine trades the 0.004 difference


def test_threshold_exits_after_the_model_horizon_in_event_time() -> None:
    s = threshold()
    only_target(s.on_signal(sig(T0 + S, horizon="10s", probs=(0.1, 0.1, 0.8))))
    assert list(s.on_time(T0 + S + 10 * S - 1)) == []
    t = only_target(s.on_time(T0 + S + 10 * S))
    assert t.qty == 0
    assert t.signal_ts is None
    assert s.counts["time_exits"] == 1
    assert list(s.on_time(T0 + 30 * S)) == []


def test_threshold_hold_s_overrides_the_horizon_and_books_also_tick_the_clock() -> None:
    s = threshold(hold_s=3.0)
    only_target(s.on_signal(sig(T0 + S, horizon="10s", probs=(0.1, 0.1, 0.8))))
    assert list(s.on_book(book(T0 + 4 * S - 1, 49_999.0, 50_001.0))) == []
    assert only_target(s.on_book(book(T0 + 4 * S, 49_999.0, 50_001.0))).qty == 0


def test_threshold_reads_the_configured_horizon_index() -> None:
    s = threshold(horizon_index=1)
    # horizon 0 says up strongly, horizon 1 (20 s) says nothing
    assert list(s.on_signal(sig(T0 + S, horizon="10s,20s", probs=(0.1, 0.1, 0.8, 0.3, 0.4, 0.3)))) == []
    only_target(s.on_signal(sig(T0 + 2 * S, horizon="10s,20s", probs=(0.3, 0.4, 0.3, 0.1, 0.1, 0.8))))
    assert list(s.on_time(T0 + 2 * S + 20 * S - 1)) == []
    assert only_target(s.on_time(T0 + 2 * S + 20 * S)).qty == 0


def test_strategy_position_comes_from_its_own_fills() -> None:
    s = threshold()
    f = Fill(ts_event=T0, ts_recv=T0, client_order_id="b1", strategy="t", venue=SPOT, symbol="BTCUSDT",
             side=Side.BUY, qty=Decimal("0.002"), price=Decimal(50_000), fee=Decimal("0.1"), fee_asset="USDT",
             liquidity=Liquidity.TAKER, trade_id="1")
    s.on_fill(f)
    assert s.position(SPOT, "BTCUSDT") == Decimal("0.002")


def test_restored_position_is_held_until_hold_s_from_the_first_event() -> None:
    s = threshold(hold_s=5.0)
    s.restore({(SPOT, "BTCUSDT"): Decimal("0.002")})
    assert s.direction("BTCUSDT") == 1
    assert list(s.on_time(T0 + 100 * S)) == []  # the hold starts here
    assert only_target(s.on_time(T0 + 105 * S)).qty == 0


# -- multihorizon ----------------------------------------------------------------------------------------

RETS = ("ret_5m", "ret_60m", "ret_240m")


def multi(**kw: Any) -> MultiHorizonStrategy:
    base: dict[str, Any] = {"name": "mh", "kind": "multihorizon", "model": "m", "venue": SPOT,
                            "symbols": ["BTCUSDT"], "threshold": 0.45, "notional": 1000}
    base.update(kw)
    s = MultiHorizonStrategy(MultiHorizonConfig(**base))
    s.on_book(book(T0, 49_999.0, 50_001.0, venue=base["venue"]))
    return s


def msig(ts: int, probs: tuple[float, float, float], rets: tuple[float, ...], venue: Venue = SPOT) -> Signal:
    return sig(ts, venue=venue, horizon="60m", probs=probs, names=RETS[: len(rets)], values=rets)


def test_multihorizon_fixed_entry_needs_probability_and_full_agreement() -> None:
    s = multi()
    assert list(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, -0.002)))) == []  # 2/3 < 1
    assert s.counts["not_agreed"] == 1
    assert list(s.on_signal(msig(T0 + S, (0.2, 0.36, 0.44), (0.002, 0.006, 0.002)))) == []  # 0.44 < 0.45
    t = only_target(s.on_signal(msig(T0 + 2 * S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002))))
    assert t.qty == Decimal("0.02")  # 1000 / 50,000


def test_multihorizon_min_agreement_fraction() -> None:
    s = multi(min_agreement=0.6)
    t = only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, -0.002))))
    assert t.qty == Decimal("0.02")


def test_multihorizon_confidence_sizing_scales_by_the_edge_over_the_opposite_class() -> None:
    s = multi(sizing="confidence")
    t = only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002))))
    assert t.qty == Decimal("0.006")  # 1000 * (0.5 - 0.2) = 300 USDT / 50,000


def test_kelly_fraction_by_hand() -> None:
    # p = 0.5 / (0.5 + 0.2) = 5/7; W = mean(0.002, 0.006) = 0.004, L = mean(0.002, 0.006, 0.002) = 0.01/3,
    # b = 1.2; f = 5/7 - (2/7) / 1.2 = 15/21 - 5/21 = 10/21
    assert kelly_fraction(0.5, 0.2, [0.002, 0.006], [-0.002]) == pytest.approx(10 / 21, rel=1e-12)
    # a near-zero disagreeing horizon hardly matters: b -> 0.004 / (0.008 / 3) = 1.5, f -> 5/7 - (2/7) / 1.5 = 11/21
    assert kelly_fraction(0.5, 0.2, [0.002, 0.006], [-1e-12]) == pytest.approx(11 / 21, rel=1e-6)
    # nothing disagrees: b = 1, f = 2p - 1 = 3/7
    assert kelly_fraction(0.5, 0.2, [0.002, 0.006], []) == pytest.approx(3 / 7, rel=1e-12)


def test_multihorizon_kelly_sizing_is_fractional_kelly_of_capital() -> None:
    s = multi(sizing="kelly", min_agreement=0.6, capital=1000, kelly_fraction=0.5)
    t = only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, -0.002))))
    # 0.5 * 10/21 * 1000 = 238.095238... USDT / 50,000 = 0.00476190 (rounded toward zero)
    assert t.qty == Decimal("0.00476190")


def test_multihorizon_kelly_without_edge_does_not_trade() -> None:
    s = multi(sizing="kelly", min_agreement=0.6, capital=1000)
    # p = 5/7, W = 0.001, L = mean(0.001, 0.001, 0.01) = 0.004, b = 1/4: f = 5/7 - (2/7) * 4 < 0
    assert list(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.001, 0.001, -0.01)))) == []
    assert s.counts["kelly_no_bet"] == 1


def test_multihorizon_max_notional_caps_every_mode() -> None:
    s = multi(max_notional=200)
    t = only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002))))
    assert t.qty == Decimal("0.004")  # 200 / 50,000
    k = multi(sizing="kelly", capital=100_000, kelly_fraction=1.0, max_notional=300)
    assert only_target(k.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002)))).qty == Decimal("0.006")


def test_multihorizon_exits_on_opposite_and_after_the_direction_horizon() -> None:
    s = multi()
    only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002))))
    t = only_target(s.on_signal(msig(T0 + 2 * S, (0.5, 0.3, 0.2), (-0.002, -0.006, -0.002))))
    assert t.qty == 0  # spot: the down signal closes, never shorts
    only_target(s.on_signal(msig(T0 + 3 * S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002))))
    assert list(s.on_time(T0 + 3 * S + 3600 * S - 1)) == []
    assert only_target(s.on_time(T0 + 3 * S + 3600 * S)).qty == 0


def test_multihorizon_allow_short_flips() -> None:
    s = multi(venue=USDM, allow_short=True)
    only_target(s.on_signal(msig(T0 + S, (0.2, 0.3, 0.5), (0.002, 0.006, 0.002), venue=USDM)))
    t = only_target(s.on_signal(msig(T0 + 2 * S, (0.5, 0.3, 0.2), (-0.002, -0.006, -0.002), venue=USDM)))
    assert t.qty == Decimal("-0.02")


# -- portfolio -------------------------------------------------------------------------------------------

ASSETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MIDS = {"BTCUSDT": 50_000.0, "ETHUSDT": 2_500.0, "SOLUSDT": 100.0}


def portfolio(**kw: Any) -> PortfolioStrategy:
    base: dict[str, Any] = {"name": "p", "kind": "portfolio", "model": "ca", "venue": LINEAR, "symbols": ASSETS,
                            "capital": 1000, "max_position": 1000, "rebalance_bars": 3, "drift_band": 0.1}
    base.update(kw)
    s = PortfolioStrategy(PortfolioConfig(**base))
    for sym, mid in MIDS.items():
        s.on_book(book(T0, mid - 0.5, mid + 0.5, venue=LINEAR, symbol=sym))
    return s


def step(s: PortfolioStrategy, ts: int, weights: tuple[float, ...], rets: tuple[float, ...] = (0.001,) * 3,
         ) -> list[TargetPosition]:
    out: list[TargetPosition] = []
    for sym, w, r in zip(ASSETS, weights, rets, strict=True):
        for i in s.on_signal(sig(ts, venue=LINEAR, symbol=sym, horizon="15m", names=("ret_15m", "weight"),
                                 values=(r, w), ts_event=ts - S)):
            assert isinstance(i, TargetPosition)
            out.append(i)
    return out


def qtys(ts: list[TargetPosition]) -> dict[str, Decimal]:
    return {t.symbol: t.qty for t in ts}


def test_portfolio_head_weights_times_capital_over_mid_once_every_asset_has_its_signal() -> None:
    s = portfolio()
    out: list[Any] = []
    for sym, w in zip(ASSETS[:2], (0.5, 0.3), strict=True):
        out += s.on_signal(sig(T0 + S, venue=LINEAR, symbol=sym, names=("ret_15m", "weight"), values=(0.0, w)))
    assert out == []  # the step is not complete
    got = step(s, T0 + 3 * S, (0.5, 0.3, 0.2))  # the next model step (data time T0 + 2 s)
    assert qtys(got) == {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("0.12"), "SOLUSDT": Decimal("2")}
    assert all(t.signal_ts == T0 + 2 * S for t in got)  # the signals' data time
    assert s.counts["incomplete_steps"] == 1


def test_portfolio_max_position_caps_each_asset() -> None:
    s = portfolio(max_position=400)
    got = qtys(step(s, T0 + S, (0.5, 0.3, 0.2)))
    assert got["BTCUSDT"] == Decimal("0.008")  # 500 capped to 400 USDT
    assert got["ETHUSDT"] == Decimal("0.12")


def test_portfolio_rebalances_every_n_bars_of_its_resolution() -> None:
    s = portfolio()
    assert step(s, T0 + S, (0.5, 0.3, 0.2))
    assert step(s, T0 + 2 * S, (0.52, 0.28, 0.2)) == []  # inside the band, no bars yet
    for i in range(2):
        for sym in ASSETS:  # one bar = one open time, whichever assets report it
            s.on_bar(bar(T0 + 3 * S, 60_000 * (i + 1), MIDS[sym], symbol=sym))
        s.on_bar(bar(T0 + 3 * S, 60_000 * (i + 1), 1.0, symbol="BTCUSDT", interval_s=300))  # other resolution
    assert step(s, T0 + 4 * S, (0.52, 0.28, 0.2)) == []  # 2 bars < 3
    s.on_bar(bar(T0 + 5 * S, 180_000, MIDS["BTCUSDT"], symbol="BTCUSDT"))
    got = qtys(step(s, T0 + 6 * S, (0.52, 0.28, 0.2)))
    assert got == {"BTCUSDT": Decimal("0.0104"), "ETHUSDT": Decimal("0.112"), "SOLUSDT": Decimal("2")}


def test_portfolio_rebalances_on_signal_count_when_configured() -> None:
    s = portfolio(rebalance_on="signals", rebalance_bars=2)
    assert step(s, T0 + S, (0.5, 0.3, 0.2))
    assert step(s, T0 + 2 * S, (0.5, 0.3, 0.2)) == []
    assert step(s, T0 + 3 * S, (0.5, 0.3, 0.2))


def test_portfolio_rebalances_when_a_target_weight_drifts_past_the_band() -> None:
    s = portfolio()
    step(s, T0 + S, (0.5, 0.3, 0.2))
    assert step(s, T0 + 2 * S, (0.59, 0.21, 0.2)) == []  # |0.59 - 0.5| = 0.09 <= 0.1
    got = step(s, T0 + 3 * S, (0.61, 0.19, 0.2))
    assert "drift BTCUSDT" in got[0].reason
    assert qtys(got)["BTCUSDT"] == Decimal("0.0122")


def test_portfolio_price_moves_drift_the_held_weight() -> None:
    s = portfolio()
    step(s, T0 + S, (0.5, 0.3, 0.2))
    s.on_book(book(T0 + 2 * S, 65_000 - 0.5, 65_000 + 0.5, venue=LINEAR, symbol="BTCUSDT"))
    # held: 0.01 BTC * 65,000 / 1000 = 0.65 vs target 0.5
    got = qtys(step(s, T0 + 3 * S, (0.5, 0.3, 0.2)))
    assert got["BTCUSDT"] == Decimal("0.00769230")  # 500 / 65,000, toward zero


def test_portfolio_weights_from_returns_long_only_and_with_shorts() -> None:
    s = portfolio(weights="returns")
    got = qtys(step(s, T0 + S, (0.0,) * 3, rets=(0.002, -0.001, 0.001)))
    # no bars: plain returns, negatives to 0, gross 1: 2/3, 0, 1/3 of 1000 USDT
    assert got == {"BTCUSDT": Decimal("0.01333333"), "ETHUSDT": Decimal("0"), "SOLUSDT": Decimal("3.33333333")}
    s = portfolio(weights="returns", allow_short=True)
    got = qtys(step(s, T0 + S, (0.0,) * 3, rets=(0.002, -0.001, 0.001)))
    # gross 0.004: 0.5, -0.25, 0.25
    assert got == {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("-0.1"), "SOLUSDT": Decimal("2.5")}


def test_portfolio_return_weights_are_scaled_by_realised_volatility() -> None:
    s = portfolio(weights="returns", vol_window=2)
    moves = {"BTCUSDT": 1.01, "ETHUSDT": 1.02, "SOLUSDT": 1.04}
    for i, close_mult in enumerate((1.0, "up", 1.0)):
        for sym, m in moves.items():
            close = 100.0 * (m if close_mult == "up" else 1.0)
            s.on_bar(bar(T0, 60_000 * i, close, symbol=sym))
    # returns +ln(m), -ln(m): sample std = sqrt(2) ln(m); equal predicted returns -> w ~ 1 / ln(m)
    inv = {sym: 1 / (math.sqrt(2) * math.log(m)) for sym, m in moves.items()}
    expected = {sym: v / sum(inv.values()) for sym, v in inv.items()}
    for sym in ASSETS:
        assert s.volatility(sym) == pytest.approx(math.sqrt(2) * math.log(moves[sym]), rel=1e-12)
    step(s, T0 + S, (0.0,) * 3)
    assert s.last_weights == pytest.approx(expected, rel=1e-12)


def test_portfolio_signal_without_the_needed_value_is_counted_not_traded() -> None:
    s = portfolio()
    for sym in ASSETS:
        assert list(s.on_signal(sig(T0 + S, venue=LINEAR, symbol=sym, names=("ret_15m",), values=(0.1,)))) == []
    assert s.counts["bad_signal"] == 1


# -- forecaster ------------------------------------------------------------------------------------------

FC = ("mid_bps_5s", "mid_bps_10s", "mid_bps_15s", "mid_bps_20s",
      "spread_bps_5s", "spread_bps_10s", "spread_bps_15s", "spread_bps_20s")


def forecaster(**kw: Any) -> ForecasterStrategy:
    base: dict[str, Any] = {"name": "fc", "kind": "forecaster", "model": "lf", "venue": USDM, "symbols": ["BTCUSDT"],
                            "taker_fee_bps": 2.5, "margin_bps": 0.5, "horizon_index": 3, "notional": 500,
                            "allow_short": True}
    base.update(kw)
    s = ForecasterStrategy(ForecasterConfig(**base))
    s.on_book(book(T0, 49_999.0, 50_001.0, venue=base["venue"]))  # spread 2 / 50,000 = 0.4 bps
    return s


def fsig(ts: int, move_20s: float, venue: Venue = USDM) -> Signal:
    values = (0.0, 0.0, 0.0, move_20s, 0.4, 0.4, 0.4, 0.4)
    return sig(ts, venue=venue, horizon="5s,10s,15s,20s", names=FC, values=values)


def test_forecaster_cost_gate_just_below_and_just_above_spread_plus_fees() -> None:
    s = forecaster()
    assert s.cost_bps("BTCUSDT") == pytest.approx(0.4 + 2 * 2.5 + 0.5)  # 5.9 bps
    assert list(s.on_signal(fsig(T0 + S, 5.89))) == []
    assert list(s.on_signal(fsig(T0 + S, -5.89))) == []
    assert s.counts["below_cost"] == 2
    t = only_target(s.on_signal(fsig(T0 + 2 * S, 5.91)))
    assert t.qty == Decimal("0.01")  # 500 / 50,000
    assert t.reason.startswith("20s +5.91 bps vs cost 5.90")


def test_forecaster_shorts_only_where_allowed() -> None:
    assert only_target(forecaster().on_signal(fsig(T0 + S, -6.0))).qty == Decimal("-0.01")
    s = forecaster(venue=SPOT, allow_short=False)
    assert list(s.on_signal(fsig(T0 + S, -6.0, venue=SPOT))) == []


def test_forecaster_exits_after_its_horizon() -> None:
    s = forecaster()
    only_target(s.on_signal(fsig(T0 + S, 8.0)))
    assert list(s.on_time(T0 + S + 20 * S - 1)) == []
    assert only_target(s.on_time(T0 + S + 20 * S)).qty == 0


def test_forecaster_reversal_goes_flat_or_flips_when_it_beats_the_costs() -> None:
    s = forecaster()
    only_target(s.on_signal(fsig(T0 + S, 8.0)))
    assert list(s.on_signal(fsig(T0 + 2 * S, 3.0))) == []  # same sign, weaker: hold
    t = only_target(s.on_signal(fsig(T0 + 3 * S, -1.0)))
    assert t.qty == 0
    assert t.reason.startswith("reversed")
    only_target(s.on_signal(fsig(T0 + 4 * S, 8.0)))
    assert only_target(s.on_signal(fsig(T0 + 5 * S, -8.0))).qty == Decimal("-0.01")


def test_forecaster_without_a_book_does_not_trade() -> None:
    s = ForecasterStrategy(ForecasterConfig(name="fc", kind="forecaster", model="lf", venue=USDM,
                                            symbols=("BTCUSDT",), taker_fee_bps=2.5, notional=Decimal(500)))
    assert list(s.on_signal(fsig(T0, 50.0))) == []
    assert s.counts["no_book"] == 1


def test_forecaster_wider_spread_raises_the_bar() -> None:
    s = forecaster()
    s.on_book(book(T0 + S, 49_990.0, 50_010.0, venue=USDM))  # 4 bps spread: cost 9.5
    assert list(s.on_signal(fsig(T0 + 2 * S, 9.4))) == []
    assert only_target(s.on_signal(fsig(T0 + 3 * S, 9.6))).qty == Decimal("0.01")


# -- building -------------------------------------------------------------------------------------------


def test_build_strategies_maps_kinds_and_skips_disabled() -> None:
    cfgs = [
        ThresholdConfig(name="a", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",), threshold=0.4,
                        notional=Decimal(1)),
        ThresholdConfig(name="b", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",), threshold=0.4,
                        notional=Decimal(1), enabled=False),
        MultiHorizonConfig(name="c", kind="multihorizon", model="m", venue=SPOT, symbols=("BTCUSDT",),
                           threshold=0.4, notional=Decimal(1)),
        PortfolioConfig(name="d", kind="portfolio", model="m", venue=LINEAR, symbols=ASSETS, capital=Decimal(1),
                        max_position=Decimal(1)),
        ForecasterConfig(name="e", kind="forecaster", model="m", venue=USDM, symbols=("BTCUSDT",),
                         taker_fee_bps=5, notional=Decimal(1)),
    ]
    got = build_strategies(cfgs)
    assert [(s.name, type(s)) for s in got] == [
        ("a", ThresholdStrategy), ("c", MultiHorizonStrategy), ("d", PortfolioStrategy), ("e", ForecasterStrategy)]
    assert got[0].models == ("m",)
    assert got[0].wants_signal(sig(T0, model="m"))
    assert not got[0].wants_signal(sig(T0, model="other"))
    assert not got[0].wants_signal(sig(T0, model="m", venue=USDM))


# -- through the real engine -----------------------------------------------------------------------------


class _Gate:
    """Accepts everything (the risk gate's own rules are tested in test_risk.py)."""

    def check(self, intent: Any, client_order_id: str, now_ns: int) -> OrderRequest:
        return OrderRequest(client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue,
                            symbol=intent.symbol, side=intent.side, qty=intent.qty, order_type=intent.order_type,
                            price=intent.price, tif=intent.tif, reduce_only=intent.reduce_only, ts_decision=now_ns)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class _Exec:
    """Fills every order at once at 50,000."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.submitted: list[Any] = []

    def submit(self, r: Any) -> None:
        self.submitted.append(r)
        t = r.ts_decision
        self.bus.publish(Fill(ts_event=t, ts_recv=t, client_order_id=r.client_order_id, strategy=r.strategy,
                              venue=r.venue, symbol=r.symbol, side=r.side, qty=r.qty, price=Decimal(50_000),
                              fee=Decimal(0), fee_asset="USDT", liquidity=Liquidity.TAKER, trade_id=r.client_order_id))

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        pass

    def on_time(self, ts_ns: int) -> None:
        pass

    def open_orders(self) -> list[Any]:
        return []


class _Ledger:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def test_threshold_targets_become_an_entry_and_a_reducing_exit_through_the_engine() -> None:
    bus = EventBus()
    s = ThresholdStrategy(ThresholdConfig(name="t", kind="threshold", model="m", venue=SPOT, symbols=("BTCUSDT",),
                                          threshold=0.4, notional=Decimal(100)))
    ex = _Exec(bus)
    engine = Engine([s], _Gate(), ex, _Ledger(), accounts=[SPOT], snapshot_every_ns=3600 * S)  # type: ignore[arg-type]
    engine.attach(bus)
    bus.publish(book(T0, 49_999.0, 50_001.0))
    bus.publish(sig(T0 + S, model="m", probs=(0.1, 0.1, 0.8)))
    bus.publish(sig(T0 + 2 * S, model="m", probs=(0.1, 0.1, 0.8)))  # same direction: no second order
    assert [(r.side, r.qty, r.reduce_only) for r in ex.submitted] == [(Side.BUY, Decimal("0.002"), False)]
    assert s.position(SPOT, "BTCUSDT") == Decimal("0.002")
    engine.on_time(T0 + 11 * S)  # the 10 s horizon has passed
    assert [(r.side, r.qty, r.reduce_only) for r in ex.submitted[1:]] == [(Side.SELL, Decimal("0.002"), True)]
    assert s.position(SPOT, "BTCUSDT") == 0
