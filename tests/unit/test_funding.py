"""Funding rates from the venues' streams: parsers, dedup, connection plans, and the ledger settling them.

Bybit: the REAL linear ``tickers`` frames of the embedded demo recording (bot/demo/recording, the
2026-08-09 cryptofeed session: BTC, ETH, SOL, DOGE), whose values are quoted in the comments. Binance
USD-M: no recording holds ``@markPrice``; the example is the venue docs' own "Mark Price Stream" payload.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal as D
from pathlib import Path

import numpy as np
import pytest

from bot.config import BookConfig, BotSettings, VenueConfig
from bot.events import Event, Side, Venue
from bot.ledger import Ledger
from bot.orders import Fill, FundingRate, Liquidity
from bot.recording import Frames, Record, iter_frames, iter_records
from bot.recording_writer import RecordingWriter
from bot.sim.cli import DEMO_DIR
from bot.venues import bybit_kernels as bk
from bot.venues import make_adapter
from bot.venues.binance import BinanceSpotAdapter, BinanceUsdmAdapter
from bot.venues.binance_funding import MarkPriceUpdate
from bot.venues.binance_wire import Kind, parse_frame
from bot.venues.bybit import BybitLinearAdapter, BybitSpotAdapter
from bot.venues.bybit_wire import FundingView, TickerData, TickerMsg, merge_funding
from bot.venues.bybit_wire import parse_frame as bybit_frame
from bot.venues.funding import FundingFilter

pytestmark = pytest.mark.unit

MS = 1_000_000
RECORDING = DEMO_DIR / "recording"
LINEAR_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
NEXT_FUNDING_MS = 1786320000000  # every recorded linear symbol: 2026-08-10 00:00 UTC
# The venue docs' markPriceUpdate (USD-M "Mark Price Stream"), on the combined stream we subscribe.
DOC_MARK = (
    '{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091",'
    '"P":"11784.25641265","r":"0.00038167","T":1562306400000}'
)
DOC_FRAME = '{"stream":"btcusdt@markPrice@1s","data":' + DOC_MARK + "}"


def _cfg(symbols: tuple[str, ...] = ("BTCUSDT",), **kw: object) -> VenueConfig:
    return VenueConfig(ws_url="wss://x.test", rest_url="https://x.test", symbols=symbols, **kw)


def _rates(events: list[Event]) -> list[FundingRate]:
    return [e for e in events if isinstance(e, FundingRate)]


@functools.cache
def _ws(venue: str) -> tuple[Record, ...]:
    return tuple(r for r in iter_records(RECORDING, venues=[venue]) if r.kind == "ws")


def _linear_frames() -> tuple[Record, ...]:
    return _ws("bybit_linear")


def _ticker_frames() -> list[Record]:
    return [r for r in _ws("bybit_linear") if '"topic":"tickers.' in r.raw]


def _btc_snapshot() -> Record:
    return next(r for r in _ticker_frames() if r.raw.startswith('{"topic":"tickers.BTCUSDT","type":"snapshot"'))


def _linear(**kw: object) -> tuple[BybitLinearAdapter, list[Event]]:
    events: list[Event] = []
    return BybitLinearAdapter(_cfg(LINEAR_SYMBOLS, **kw), BookConfig(), events.append, live=False), events


# -- Bybit: real recorded tickers -------------------------------------------------------------------------------
def test_bybit_linear_ticker_snapshot_carries_the_funding_fields_as_recorded() -> None:
    btc = _btc_snapshot().raw

    msg = bybit_frame(btc)

    assert isinstance(msg, TickerMsg)
    # recorded: "markPrice":"65117.44", "nextFundingTime":"1786320000000", "fundingRate":"0.0001", "ts":1786310817583
    assert (msg.data.fundingRate, msg.data.nextFundingTime, msg.data.markPrice, msg.ts) == (
        "0.0001", NEXT_FUNDING_MS, 65117.44, 1786310817583,
    )  # fmt: skip


def test_bybit_linear_recording_publishes_one_funding_rate_per_change() -> None:
    adapter, events = _linear()
    tickers = _ticker_frames()

    for r in _linear_frames():
        adapter.on_ws(r.raw, r.ts_recv, r.key)

    got = [(e.symbol, e.rate, e.funding_time_ns, e.mark_price, e.ts_event, e.ts_recv) for e in _rates(events)]
    t = NEXT_FUNDING_MS * MS
    assert got == [
        # the four snapshots (rate, mark and ts as recorded; "77.310" is the decimal 77.31)
        ("BTCUSDT", D("0.0001"), t, D("65117.44"), 1786310817583 * MS, 1786310819526356992),
        ("DOGEUSDT", D("0.0001"), t, D("0.07055"), 1786310818834 * MS, 1786310819526520064),
        ("ETHUSDT", D("0.00004617"), t, D("1922.43"), 1786310818974 * MS, 1786310819526556928),
        ("SOLUSDT", D("0.00000876"), t, D("77.31"), 1786310819280 * MS, 1786310819526594048),
        # deltas carrying a new fundingRate only: the funding time comes from the snapshot, the mark from
        # the last delta that sent one (ETH "1922.58" at ts 1786310821974, SOL "77.304" at 1786310822980)
        ("ETHUSDT", D("0.00004709"), t, D("1922.58"), 1786310822174 * MS, 1786310822282544896),
        ("SOLUSDT", D("0.00000952"), t, D("77.304"), 1786310823780 * MS, 1786310823888685056),
    ]
    assert adapter.funding is not None
    assert len(tickers) == 758
    assert (adapter.funding.stats.published, adapter.funding.stats.unchanged) == (6, 752)  # 758 tickers in all
    assert adapter.stats.malformed == 0
    # ETH's last recorded markPrice is the "1922.58" of ts 1786310821974 (later deltas send none)
    assert adapter.funding_views["ETHUSDT"] == FundingView("0.00004709", NEXT_FUNDING_MS, 1922.58)


def test_bybit_same_rate_twice_is_one_event_and_a_new_funding_time_is_another() -> None:
    adapter, events = _linear()
    snap = _btc_snapshot()
    # the same rate for the next period, as Bybit sends it after the 00:00 settlement (times hand-written)
    rolled = (
        '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","nextFundingTime":"1786348800000"},'
        '"cs":1,"ts":1786320000100}'
    )

    adapter.on_ws(snap.raw, snap.ts_recv)
    adapter.on_ws(snap.raw, snap.ts_recv + 1)  # a resent snapshot: same (rate, time)
    adapter.on_ws(rolled, 1786320000200 * MS)

    rates = _rates(events)
    assert [(e.rate, e.funding_time_ns) for e in rates] == [
        (D("0.0001"), NEXT_FUNDING_MS * MS),
        (D("0.0001"), 1786348800000 * MS),
    ]
    assert adapter.funding is not None
    assert adapter.funding.stats.unchanged == 1


def test_bybit_merge_funding_delta_keeps_the_unsent_fields_and_a_snapshot_replaces() -> None:
    eth = [r.raw for r in _ticker_frames() if r.raw.startswith('{"topic":"tickers.ETHUSDT"')]
    snap, delta = bybit_frame(eth[0]), bybit_frame(next(r for r in eth if '"fundingRate":"0.00004709"' in r))
    assert isinstance(snap, TickerMsg)
    assert isinstance(delta, TickerMsg)
    empty = TickerMsg(topic="tickers.ETHUSDT", type="snapshot", data=TickerData(symbol="ETHUSDT"))

    first = merge_funding(None, snap)
    second = merge_funding(first, delta)
    replaced = merge_funding(second, empty)

    # recorded snapshot: "markPrice":"1922.43", "nextFundingTime":"1786320000000", "fundingRate":"0.00004617"
    assert first == FundingView("0.00004617", NEXT_FUNDING_MS, 1922.43)
    assert delta.data.nextFundingTime is None
    assert delta.data.markPrice is None
    assert second == FundingView("0.00004709", NEXT_FUNDING_MS, 1922.43)
    assert (replaced.rate, replaced.next_funding_ms, math.isnan(replaced.mark_px)) == (None, None, True)


def test_bybit_delta_before_any_snapshot_publishes_nothing() -> None:
    adapter, events = _linear()
    delta = next(r for r in _ticker_frames() if '"fundingRate":"0.00004709"' in r.raw)  # ETH, no nextFundingTime

    adapter.on_ws(delta.raw, delta.ts_recv)

    assert _rates(events) == []
    assert adapter.funding is not None
    assert adapter.funding.stats.no_funding == 1


def test_bybit_spot_and_funding_off_publish_no_funding() -> None:
    spot_events: list[Event] = []
    spot = BybitSpotAdapter(_cfg(("BTCUSDT", "ETHUSDT")), BookConfig(), spot_events.append, live=False)
    off, off_events = _linear(funding=False)

    for r in _ws("bybit_spot"):
        spot.on_ws(r.raw, r.ts_recv)
    for r in _linear_frames():
        off.on_ws(r.raw, r.ts_recv)

    assert spot.funding is None
    assert off.funding is None
    assert _rates(spot_events) == _rates(off_events) == []
    # not subscribed live; the recording's tickers are counted as skipped (the demo: 185 BTC, 41 on spot)
    assert off.stats.skipped["not_handled:tickers.BTCUSDT"] == 185
    assert spot.stats.skipped["not_handled:tickers.BTCUSDT"] == 41
    assert off.funding_views == spot.funding_views == {}
    assert not [t for t in off.topics() + spot.topics() if t.startswith("tickers.")]


@pytest.mark.parametrize("market", ["spot", "linear_funding_off"])
def test_bybit_ticker_without_funding_is_skipped_undecoded_and_publishes_nothing(market: str) -> None:
    venue = "bybit_spot" if market == "spot" else "bybit_linear"
    raw = next(r for r in _ws(venue) if r.raw.startswith('{"topic":"tickers.BTCUSDT"')).raw  # a real snapshot
    events: list[Event] = []
    if market == "spot":
        adapter: BybitSpotAdapter | BybitLinearAdapter = BybitSpotAdapter(_cfg(), BookConfig(), events.append)
    else:
        adapter = BybitLinearAdapter(_cfg(funding=False), BookConfig(), events.append)
    adapter.on_ws(raw, 1)  # the session's first frame
    assert [type(e).__name__ for e in events] == ["BookHealth"]  # the book's SYNCING (start), nothing else
    events.clear()
    ignored, messages = adapter.ignored, adapter.stats.messages

    adapter.on_ws(raw, 2)
    adapter.on_ws(raw.encode(), 3)  # the recorded (bytes) form takes the same route

    assert events == []
    assert adapter.stats.skipped == {"not_handled:tickers.BTCUSDT": 3}
    assert (adapter.ignored - ignored, adapter.stats.messages - messages) == (2, 2)
    assert adapter.stats.malformed == 0
    assert adapter.funding is None
    assert adapter.funding_views == {}


def test_bybit_linear_plan_subscribes_tickers_after_the_market_data_topics() -> None:
    settings = BotSettings()
    cfg = settings.venues[Venue.BYBIT_LINEAR].model_copy(update={"symbols": ("BTCUSDT", "ETHUSDT"), "klines": ("1m",)})
    adapter = make_adapter(Venue.BYBIT_LINEAR, cfg, settings.book, lambda e: None)
    spot = make_adapter(Venue.BYBIT_SPOT, settings.venues[Venue.BYBIT_SPOT], settings.book, lambda e: None)

    (spec,) = adapter.connections()
    (spot_spec,) = spot.connections()

    assert spec.subscribe == (
        '{"op":"subscribe","args":["orderbook.200.BTCUSDT","publicTrade.BTCUSDT","kline.1.BTCUSDT",'
        '"orderbook.200.ETHUSDT","publicTrade.ETHUSDT","kline.1.ETHUSDT","tickers.BTCUSDT","tickers.ETHUSDT"]}',
    )
    assert "tickers." not in "".join(spot_spec.subscribe)  # spot: funding ignored


# -- Binance USD-M: markPriceUpdate ---------------------------------------------------------------------------
def _usdm() -> tuple[BinanceUsdmAdapter, list[Event]]:
    events: list[Event] = []
    return BinanceUsdmAdapter(_cfg(), BookConfig(), events.append, live=False), events


def test_binance_mark_price_doc_example_parses_to_its_fields() -> None:
    f = parse_frame(DOC_FRAME, futures=True)
    raw = parse_frame(DOC_MARK, futures=True)  # the raw-stream payload (/ws/<stream>), by its "e"

    expected = MarkPriceUpdate(E=1562305380000, s="BTCUSDT", p="11794.15000000", r="0.00038167", T=1562306400000,
                               i="11784.62659091")  # fmt: skip
    assert (f.kind, f.stream, f.msg) == (Kind.MARK_PRICE, "btcusdt@markPrice@1s", expected)
    assert (raw.kind, raw.stream, raw.msg) == (Kind.MARK_PRICE, "", expected)


def test_binance_usdm_publishes_the_doc_example_once_and_a_changed_rate_again() -> None:
    adapter, events = _usdm()
    changed = DOC_FRAME.replace('"r":"0.00038167"', '"r":"0.00040000"').replace("1562305380000", "1562305381000")

    adapter.on_ws(DOC_FRAME, 1562305380100 * MS)
    adapter.on_ws(DOC_FRAME, 1562305380200 * MS)  # same rate, same time: counted only
    adapter.on_ws(DOC_MARK, 1562305380300 * MS)  # raw payload, same pair
    adapter.on_ws(changed, 1562305381100 * MS)

    assert _rates(events) == [
        FundingRate(
            ts_event=1562305380000 * MS, ts_recv=1562305380100 * MS, venue=Venue.BINANCE_USDM, symbol="BTCUSDT",
            rate=D("0.00038167"), funding_time_ns=1562306400000 * MS, mark_price=D("11794.15000000"),
        ),
        FundingRate(
            ts_event=1562305381000 * MS, ts_recv=1562305381100 * MS, venue=Venue.BINANCE_USDM, symbol="BTCUSDT",
            rate=D("0.00040000"), funding_time_ns=1562306400000 * MS, mark_price=D("11794.15000000"),
        ),
    ]  # fmt: skip
    assert adapter.funding is not None
    assert (adapter.funding.stats.published, adapter.funding.stats.unchanged) == (2, 2)


def test_binance_delivery_contract_and_bad_rates_publish_nothing() -> None:
    adapter, events = _usdm()
    delivery = DOC_FRAME.replace('"r":"0.00038167"', '"r":""').replace('"T":1562306400000', '"T":0')

    adapter.on_ws(delivery, 1)
    adapter.on_ws(DOC_FRAME.replace('"r":"0.00038167"', '"r":"abc"'), 2)
    adapter.on_ws(DOC_FRAME.replace('"r":"0.00038167"', '"r":"NaN"'), 3)
    adapter.on_ws(DOC_FRAME.replace('"s":"BTCUSDT"', '"s":"ETHUSDT"'), 4)  # another symbol on BTC's stream

    assert _rates(events) == []
    assert adapter.funding is not None
    assert adapter.funding.stats.no_funding == 1
    assert adapter.stats.malformed == 3


def test_binance_mark_price_through_the_batched_offline_loop(tmp_path: Path) -> None:
    adapter, events = _usdm()
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write(Record(1000, "binance_usdm", "ws", "-", DOC_FRAME))
        w.write(Record(2000, "binance_usdm", "ws", "-", '{"stream":"btcusdt@bookTicker","data":{}}'))  # skipped
        w.write(Record(3000, "binance_usdm", "ws", "-", DOC_FRAME))

    for block in iter_frames(rec):
        assert isinstance(block, Frames)
        adapter.on_ws_frames(block)

    assert [(e.rate, e.ts_recv) for e in _rates(events)] == [(D("0.00038167"), 1000)]
    assert adapter.funding is not None
    assert adapter.funding.stats.unchanged == 1


def test_binance_usdm_plan_puts_mark_prices_on_the_market_connection_spot_has_none() -> None:
    settings = BotSettings()
    usdm_cfg = settings.venues[Venue.BINANCE_USDM].model_copy(update={"symbols": ("BTCUSDT", "ETHUSDT")})
    usdm = make_adapter(Venue.BINANCE_USDM, usdm_cfg, settings.book, lambda e: None)
    book = settings.book
    only = make_adapter(Venue.BINANCE_USDM, usdm_cfg.model_copy(update={"klines": ()}), book, lambda e: None)
    off = make_adapter(Venue.BINANCE_USDM, usdm_cfg.model_copy(update={"funding": False}), book, lambda e: None)
    spot = BinanceSpotAdapter(_cfg(), BookConfig(), lambda e: None)

    _, market = usdm.connections()
    _, market_only = only.connections()

    assert market.url == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m/"
        "btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    )
    assert market_only.url == "wss://fstream.binance.com/market/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    assert not [c for c in off.connections() + spot.connections() if "markPrice" in c.url]
    assert spot.funding is None


def test_funding_filter_compares_rates_by_value() -> None:
    f = FundingFilter(Venue.BINANCE_USDM)

    first = f.update("BTCUSDT", "0.0001", 5, None, 1, 1)
    same = f.update("BTCUSDT", "0.00010000", 5, None, 2, 2)

    assert first is not None
    assert first.rate == D("0.0001")
    assert same is None


# -- the ledger settles what the adapter published ------------------------------------------------------------
def test_recorded_bybit_funding_rate_is_booked_when_its_funding_time_passes_with_a_position_open() -> None:
    adapter, events = _linear()
    ledger = Ledger({Venue.BYBIT_LINEAR: {"USDT": D("10000")}})
    snap = _btc_snapshot()
    # after the 00:00 settlement Bybit announces the next period: new nextFundingTime and rate (hand-written)
    rolled = (
        '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","nextFundingTime":"1786348800000",'
        '"fundingRate":"0.00012"},"cs":1,"ts":1786320000100}'
    )
    ledger.on_fill(
        Fill(
            ts_event=1, ts_recv=1, client_order_id="c1", strategy="s", venue=Venue.BYBIT_LINEAR, symbol="BTCUSDT",
            side=Side.BUY, qty=D("0.5"), price=D("65000"), fee=D("1.95"), fee_asset="USDT",
            liquidity=Liquidity.TAKER, trade_id="t1",
        )
    )  # fmt: skip

    adapter.on_ws(snap.raw, snap.ts_recv)
    for ev in _rates(events):
        ledger.on_funding(ev, ev.ts_recv)
    before = ledger.cash(Venue.BYBIT_LINEAR)
    events.clear()
    adapter.on_ws(rolled, 1786320000200 * MS)
    for ev in _rates(events):
        ledger.on_funding(ev, ev.ts_recv)

    # before 00:00 nothing is due: cash = 10000 - fee 1.95
    assert before == D("9998.05")
    # at 00:00 the long 0.5 BTC pays qty * mark * rate = 0.5 * 65117.44 * 0.0001 = 3.255872 (the recorded
    # rate and mark of that funding time); the 0.00012 is for 08:00 and not due yet
    snapshot = ledger.snapshot(Venue.BYBIT_LINEAR, 1786320000200 * MS)
    assert snapshot.funding == D("3.255872")
    assert ledger.cash(Venue.BYBIT_LINEAR) == D("9998.05") - D("3.255872") == D("9994.794128")
    assert ledger.realized_pnl(Venue.BYBIT_LINEAR, "BTCUSDT") == D("-1.95") - D("3.255872")
    assert ledger.dump()["funding_due"][0]["rate"] == "0.00012"


def test_the_compiled_loop_tells_the_tickers_that_can_move_the_funding_pair_from_the_rest() -> None:
    """``bybit_kernels.ticker_keys`` on every real linear ticker of the demo: a frame that decodes with a funding
    field or as a snapshot is T_PAIR (handled one by one); the rest are put off, T_MARK exactly when they carry
    a mark price (the one frame of a run that is decoded). Most are put off."""
    put_off = 0
    for r in _ticker_frames():
        data = r.raw.encode()
        keys = bk.ticker_keys(np.frombuffer(data, np.uint8), 0, len(data))
        msg = bybit_frame(data)
        assert isinstance(msg, TickerMsg)
        d = msg.data
        moves = msg.type == "snapshot" or d.fundingRate is not None or d.nextFundingTime is not None
        assert (keys == bk.T_PAIR) == moves, r.raw[:120]
        if not moves:
            put_off += 1
            assert (keys == bk.T_MARK) == (d.markPrice is not None), r.raw[:120]
    assert put_off > 0.8 * len(_ticker_frames())
    escaped = b'{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","\\u0066undingRate":"0.1"}}'
    assert bk.ticker_keys(np.frombuffer(escaped, np.uint8), 0, len(escaped)) == bk.T_PAIR
