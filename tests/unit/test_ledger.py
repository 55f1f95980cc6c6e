"""The ledger, on hand-computed cases in Decimal: every figure below is worked out in the comments."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from bot.events import Side, Venue
from bot.ledger import Ledger, quote_asset, split_symbol
from bot.orders import EquitySnapshot, Fill, FundingRate, Liquidity

pytestmark = pytest.mark.unit

SPOT = Venue.BINANCE_SPOT
PERP = Venue.BINANCE_USDM
BTC = "BTCUSDT"
_n = iter(range(1_000_000))


def fill(venue: Venue, side: Side, qty: str, price: str, fee: str, symbol: str = BTC, ts: int = 0) -> Fill:
    return Fill(
        ts_event=ts,
        ts_recv=ts,
        client_order_id="c",
        strategy="s",
        venue=venue,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=D(price),
        fee=D(fee),
        fee_asset="USDT",
        liquidity=Liquidity.TAKER,
        trade_id=f"c-{next(_n)}",
    )


def funding(rate: str, at: int, mark: str | None = None, venue: Venue = PERP) -> FundingRate:
    return FundingRate(
        ts_event=0,
        ts_recv=0,
        venue=venue,
        symbol=BTC,
        rate=D(rate),
        funding_time_ns=at,
        mark_price=None if mark is None else D(mark),
    )


def invariant(ledger: Ledger, venue: Venue) -> EquitySnapshot:
    """``equity == cash + sum(position values)``, the values recomputed here from the snapshot's fields."""
    snap = ledger.snapshot(venue, 1)
    values = D(0)
    for p in snap.positions:
        mark = p.mark if p.mark is not None else p.avg_price
        values += p.qty * mark if venue.market == "spot" else p.qty * (mark - p.avg_price)
    assert snap.equity == snap.cash + values
    assert snap.equity == ledger.equity(venue)
    return snap


def test_spot_buys_average_up_and_a_partial_sell_realises_at_the_unchanged_average() -> None:
    ledger = Ledger({SPOT: {"USDT": D(20_000)}})
    # buy 0.1 @ 60000, fee 6: cash 20000 - 6000 - 6 = 13994
    ledger.on_fill(fill(SPOT, Side.BUY, "0.1", "60000", "6"))
    assert ledger.cash(SPOT) == D("13994")
    assert ledger.mark(SPOT, BTC) is None
    assert ledger.equity(SPOT) == D("19994")  # never marked: valued at its entry, 13994 + 6000
    invariant(ledger, SPOT)
    # buy 0.1 @ 62000, fee 6.2: cash 7787.8; 0.2 held, cost 12200, average 61000
    ledger.on_fill(fill(SPOT, Side.BUY, "0.1", "62000", "6.2"))
    assert (ledger.position(SPOT, BTC), ledger.avg_price(SPOT, BTC)) == (D("0.2"), D("61000"))
    assert ledger.cash(SPOT) == D("7787.8")
    # mark 61500: value 0.2 x 61500 = 12300, equity 20087.8, unrealised 100, realised = -fees = -12.2
    ledger.on_mark(SPOT, BTC, 61500.0)
    assert ledger.mark(SPOT, BTC) == D("61500.0")
    assert ledger.equity(SPOT) == D("20087.8")
    assert ledger.unrealized_pnl(SPOT, BTC) == D("100")
    assert ledger.realized_pnl(SPOT, BTC) == D("-12.2")
    invariant(ledger, SPOT)
    # sell 0.05 @ 63000, fee 3.15: cash + 3150 - 3.15 = 10934.65; realised + (63000 - 61000) x 0.05 - 3.15
    ledger.on_fill(fill(SPOT, Side.SELL, "0.05", "63000", "3.15"))
    assert ledger.cash(SPOT) == D("10934.65")
    assert (ledger.position(SPOT, BTC), ledger.avg_price(SPOT, BTC)) == (D("0.15"), D("61000"))
    assert ledger.realized_pnl(SPOT, BTC) == D("84.65")  # -12.2 + 100 - 3.15
    assert ledger.unrealized_pnl(SPOT, BTC) == D("75")  # 0.15 x (61500 - 61000)
    snap = invariant(ledger, SPOT)
    # 10934.65 + 0.15 x 61500 = 20159.65 = 20000 + realised 84.65 + unrealised 75
    assert snap.equity == D("20159.65")
    assert (snap.fees, snap.funding, snap.quote) == (D("15.35"), D(0), "USDT")
    assert ledger.gross_exposure() == D("9225.0")


def test_perp_flip_realises_the_old_side_and_opens_the_new_at_the_fill_price() -> None:
    ledger = Ledger({PERP: {"USDT": D(1000)}})
    # sell 0.01 @ 60000, fee 0.3: a short; perp cash moves only by fees / realised PnL: 999.7
    ledger.on_fill(fill(PERP, Side.SELL, "0.01", "60000", "0.3"))
    assert (ledger.position(PERP, BTC), ledger.avg_price(PERP, BTC), ledger.cash(PERP)) == (
        D("-0.01"),
        D("60000"),
        D("999.7"),
    )
    # mark 59000: value -0.01 x (59000 - 60000) = +10, equity 1009.7
    ledger.on_mark(PERP, BTC, D("59000"))
    assert ledger.equity(PERP) == D("1009.7")
    invariant(ledger, PERP)
    # buy 0.03 @ 59500, fee 0.8925: closes 0.01 (realises (60000 - 59500) x 0.01 = 5), opens 0.02 long @ 59500
    ledger.on_fill(fill(PERP, Side.BUY, "0.03", "59500", "0.8925"))
    assert (ledger.position(PERP, BTC), ledger.avg_price(PERP, BTC)) == (D("0.02"), D("59500"))
    assert ledger.cash(PERP) == D("1003.8075")  # 999.7 + 5 - 0.8925
    assert ledger.realized_pnl(PERP, BTC) == D("3.8075")  # -0.3 + 5 - 0.8925
    assert ledger.unrealized_pnl(PERP, BTC) == D("-10")  # 0.02 x (59000 - 59500)
    assert invariant(ledger, PERP).equity == D("993.8075")
    # flat again: sell 0.02 @ 59600, fee 0.596: realises 0.02 x 100 = 2
    ledger.on_fill(fill(PERP, Side.SELL, "0.02", "59600", "0.596"))
    assert (ledger.position(PERP, BTC), ledger.avg_price(PERP, BTC), ledger.unrealized_pnl(PERP, BTC)) == (
        D(0),
        D(0),
        D(0),
    )
    assert ledger.cash(PERP) == D("1005.2115")  # 1003.8075 + 2 - 0.596
    assert invariant(ledger, PERP).equity == D("1005.2115")


def test_a_full_close_realises_exactly_even_when_the_average_does_not_terminate() -> None:
    ledger = Ledger({PERP: {"USDT": D(0)}})
    ledger.on_fill(fill(PERP, Side.BUY, "1", "100", "0"))
    ledger.on_fill(fill(PERP, Side.BUY, "2", "101", "0"))
    assert ledger.avg_price(PERP, BTC) == D(302) / D(3)  # 100.666...
    ledger.on_mark(PERP, BTC, 101.5)
    assert ledger.unrealized_pnl(PERP, BTC) == D("2.5")  # 3 x 101.5 - 302: exact from the cost basis
    ledger.on_fill(fill(PERP, Side.SELL, "3", "102", "0"))
    assert ledger.realized_pnl(PERP, BTC) == D("4")  # 306 - 302
    assert ledger.cash(PERP) == D("4")


def test_spot_and_perp_accounts_book_the_same_fill_differently_with_the_same_equity() -> None:
    ledger = Ledger({SPOT: {"USDT": D(10_000)}, PERP: {"USDT": D(10_000)}})
    for venue in (SPOT, PERP):
        ledger.on_fill(fill(venue, Side.BUY, "0.1", "60000", "6"))
        ledger.on_mark(venue, BTC, 61000.0)
    # spot pays the notional: 10000 - 6000 - 6 = 3994, holds 0.1 x 61000 = 6100
    assert (ledger.cash(SPOT), invariant(ledger, SPOT).equity) == (D("3994"), D("10094.0"))
    # perp pays the fee only: 9994, position worth 0.1 x (61000 - 60000) = 100
    assert (ledger.cash(PERP), invariant(ledger, PERP).equity) == (D("9994"), D("10094.0"))
    assert ledger.equity() == D("20188.0")
    assert ledger.gross_exposure() == D("12200.0")
    assert [(p.venue, p.qty, p.unrealized_pnl) for p in ledger.positions()] == [
        (SPOT, D("0.1"), D("100")),  # sorted by venue name
        (PERP, D("0.1"), D("100")),
    ]


def test_funding_is_paid_once_per_funding_time_by_the_position_held() -> None:
    ledger = Ledger({PERP: {"USDT": D(1000)}})
    ledger.on_fill(fill(PERP, Side.BUY, "0.02", "59500", "0"))
    ledger.on_mark(PERP, BTC, 59000.0)
    t1, t2 = 8 * 3600 * 10**9, 16 * 3600 * 10**9
    # announced before t1 (again and again, the rate changing): nothing paid yet
    ledger.on_funding(funding("0.0002", t1, "59300"), ts_ns=t1 - 10)
    ledger.on_funding(funding("0.0001", t1, "59200"), ts_ns=t1 - 5)
    assert ledger.cash(PERP) == D("1000")
    # the first announcement of t2, after t1: t1 is settled with the last rate heard for it
    # long 0.02 x 59200 x 0.0001 = 0.1184 paid
    ledger.on_funding(funding("-0.0003", t2), ts_ns=t1 + 1)
    assert ledger.cash(PERP) == D("999.8816")
    ledger.on_funding(funding("0.0001", t1, "59200"), ts_ns=t1 + 2)  # t1 repeated late: not again
    assert ledger.cash(PERP) == D("999.8816")
    snap = invariant(ledger, PERP)
    assert (snap.funding, ledger.realized_pnl(PERP, BTC)) == (D("0.1184"), D("-0.1184"))
    # t2 with a negative rate and no mark in the event: longs receive 0.02 x 59000 (ledger mark) x 0.0003
    ledger.settle_funding(t2)
    assert ledger.cash(PERP) == D("1000.2356")  # 999.8816 + 0.354
    assert invariant(ledger, PERP).funding == D("-0.2356")


def test_a_short_pays_funding_when_the_rate_is_negative() -> None:
    ledger = Ledger({PERP: {"USDT": D(100)}})
    ledger.on_fill(fill(PERP, Side.SELL, "0.5", "2000", "0"))
    ledger.on_funding(funding("-0.001", 10, "2000"), ts_ns=10)  # -0.5 x 2000 x -0.001 = 1 paid
    assert ledger.cash(PERP) == D("99")


def test_funding_on_a_spot_account_and_fills_it_cannot_value_are_refused() -> None:
    ledger = Ledger({SPOT: {"USDT": D(100)}})
    with pytest.raises(ValueError, match="spot"):
        ledger.on_funding(funding("0.0001", 1, venue=SPOT), ts_ns=1)
    with pytest.raises(ValueError, match="quoted in BTC"):
        ledger.on_fill(fill(SPOT, Side.BUY, "1", "0.05", "0", symbol="ETHBTC"))
    with pytest.raises(ValueError, match="only USDT"):
        Ledger({SPOT: {"USDT": D(1), "BTC": D(1)}})


def test_quote_assets_come_from_known_suffixes() -> None:
    assert split_symbol("BTCUSDT") == ("BTC", "USDT")
    assert split_symbol("BTCFDUSD") == ("BTC", "FDUSD")
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert quote_asset("SOLUSDC") == "USDC"
    with pytest.raises(ValueError, match="no known quote"):
        split_symbol("USDT")


def test_dump_load_round_trip_and_replaying_the_fills_give_the_same_books() -> None:
    balances = {SPOT: {"USDT": D(20_000)}, PERP: {"USDT": D(1000)}}
    fills = [
        fill(SPOT, Side.BUY, "0.1", "60000", "6"),
        fill(SPOT, Side.BUY, "0.1", "62000", "6.2"),
        fill(PERP, Side.SELL, "0.01", "60000", "0.3"),
        fill(SPOT, Side.SELL, "0.05", "63000", "3.15"),
        fill(PERP, Side.BUY, "0.03", "59500", "0.8925"),
    ]
    ledger = Ledger(balances)
    for f in fills:
        ledger.on_fill(f)
    ledger.on_mark(SPOT, BTC, 61500.0)
    ledger.on_mark(PERP, BTC, 59000.0)
    ledger.on_funding(funding("0.0001", 100, "59200"), ts_ns=50)  # announced, not yet due
    # Act
    loaded = Ledger.load(json.loads(json.dumps(ledger.dump())))
    # Assert: the same books, and the same future
    assert loaded.dump() == ledger.dump()
    for venue in (SPOT, PERP):
        assert loaded.snapshot(venue, 7) == ledger.snapshot(venue, 7)
    for lg in (ledger, loaded):
        lg.settle_funding(100)
        lg.on_fill(fill(PERP, Side.SELL, "0.02", "59600", "0.596"))
    assert loaded.dump() == ledger.dump()
    assert loaded.cash(PERP) == D("1005.0931")  # 1003.8075 - 0.1184 funding + 2 - 0.596
    # replaying the persisted fills gives the same cash and positions (marks and funding are not fills)
    replayed = Ledger.replay(balances, fills)
    assert [replayed.cash(v) for v in (SPOT, PERP)] == [D("10934.65"), D("1003.8075")]
    assert [(p.qty, p.avg_price, p.realized_pnl) for p in replayed.positions()] == [
        (D("0.15"), D("61000"), D("84.65")),  # binance_spot, then binance_usdm
        (D("0.02"), D("59500"), D("3.8075")),
    ]
    with pytest.raises(ValueError, match="does not load"):
        Ledger.load({"start": {}})
