"""Bybit parsers and adapter plumbing, on real frames from the cryptofeed v3 session (exact field values).

``BYBIT.jsonl.zst`` holds ``"t":"recv"`` records whose ``data`` is the raw frame; connection
``BYBIT.ws.2`` is /v5/public/linear, ``BYBIT.ws.3`` /v5/public/spot. Pongs and a refused subscription
are not in the recording; their shapes are taken verbatim from shared/PROTOCOLS.md (nautilus, pybit).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from bot.config import BookConfig, BotSettings, VenueConfig
from bot.events import BookHealth, BookUpdate, Event, KlineClosed, Side, Trade, Venue
from bot.venues import make_adapter
from bot.venues.base import Resubscribe
from bot.venues.bybit import BybitLinearAdapter, BybitSpotAdapter
from bot.venues.bybit_wire import (
    FundingView,
    KlineMsg,
    OpMsg,
    OrderBookMsg,
    TickerMsg,
    TradeMsg,
    parse_frame,
)

pytestmark = pytest.mark.unit

LINEAR, SPOT = "BYBIT.ws.2", "BYBIT.ws.3"
NS = 1_000_000


@pytest.fixture(scope="module")
def frames() -> list[tuple[str, int, str]]:
    """(connection, ts_recv ns, raw frame) for every received frame of the session."""
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    path = root / "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"
    if not path.is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
        records = [json.loads(line) for line in io.TextIOWrapper(z, encoding="utf-8")]
    return [(r["conn"], round(r["ts"] * 1e9), r["data"]) for r in records if r["t"] == "recv"]


def _first(frames: list[tuple[str, int, str]], conn: str, want: Callable[[str], bool]) -> str:
    return next(raw for c, _, raw in frames if c == conn and want(raw))


def _cfg(symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"), **kw: object) -> VenueConfig:
    return VenueConfig(ws_url="wss://example.test/v5/public/x", rest_url="https://example.test", symbols=symbols, **kw)


def _linear(**kw: object) -> tuple[BybitLinearAdapter, list[Event]]:
    events: list[Event] = []
    return BybitLinearAdapter(_cfg(**kw), BookConfig(), events.append), events


def _spot(**kw: object) -> tuple[BybitSpotAdapter, list[Event]]:
    events: list[Event] = []
    return BybitSpotAdapter(_cfg(**kw), BookConfig(), events.append), events


# -- order book ---------------------------------------------------------------------------------------------
def test_linear_orderbook_snapshot_decodes_and_resets_the_book(frames: list[tuple[str, int, str]]) -> None:
    raw = _first(frames, LINEAR, lambda s: s.startswith('{"topic":"orderbook.200.BTCUSDT","type":"snapshot"'))
    msg = parse_frame(raw)
    assert isinstance(msg, OrderBookMsg)
    assert (msg.type, msg.ts, msg.cts, msg.data.u, msg.data.seq) == (
        "snapshot",
        1786310818129,
        1786310818027,
        15076952,
        753843911359,
    )
    assert msg.data.b[:3] == [(65114.2, 6.054), (65114.1, 0.002), (65114.0, 0.041)]
    assert msg.data.a[:3] == [(65114.3, 10.486), (65115.4, 0.002), (65115.7, 0.033)]
    assert (len(msg.data.b), len(msg.data.a)) == (200, 200)
    adapter, events = _linear()

    adapter.on_ws(raw, 5, "bybit_linear/public")

    updates = [e for e in events if isinstance(e, BookUpdate)]
    assert updates == [
        BookUpdate(
            ts_event=1786310818129 * NS,
            ts_recv=5,
            venue=Venue.BYBIT_LINEAR,
            symbol="BTCUSDT",
            update_id=15076952,
            bid_px=65114.2,
            bid_sz=6.054,
            ask_px=65114.3,
            ask_sz=10.486,
            snapshot=True,
        )
    ]
    assert adapter.books["BTCUSDT"].depth() == (200, 200)


def test_spot_orderbook_other_key_order_unpadded_prices_and_a_zero_delete(frames: list[tuple[str, int, str]]) -> None:
    snapshot = _first(frames, SPOT, lambda s: s.startswith('{"topic":"orderbook.200.BTCUSDT","ts":1786310816516'))
    delta = _first(frames, SPOT, lambda s: '"u":62505426' in s)
    msg = parse_frame(delta)
    assert isinstance(msg, OrderBookMsg)
    assert (msg.type, msg.ts, msg.data.u, msg.data.b) == ("delta", 1786310816816, 62505426, [])
    assert msg.data.a == [(65140.5, 0.472215), (65145.7, 0.03), (65150.2, 0.000231), (65239.0, 0.0)]
    snap = parse_frame(snapshot)
    assert isinstance(snap, OrderBookMsg)
    assert snap.data.b[:2] == [(65140.4, 0.885797), (65140.0, 0.014)]  # "65140": not zero-padded
    adapter, events = _spot()
    u425 = _first(frames, SPOT, lambda s: '"u":62505425' in s)

    for raw in (snapshot, u425, delta):
        adapter.on_ws(raw, 1)

    book = adapter.books["BTCUSDT"]
    assert book.update_id == 62505426
    assert 65239.0 not in book.to_dicts()[1]
    assert [e.update_id for e in events if isinstance(e, BookUpdate)] == [62505424, 62505425, 62505426]
    assert book.top_of_book() == (65140.4, 0.875077, 65140.5, 0.472215)


# -- trades, klines, tickers ---------------------------------------------------------------------------------
def test_linear_public_trade_with_tick_direction(frames: list[tuple[str, int, str]]) -> None:
    raw = _first(frames, LINEAR, lambda s: s.startswith('{"topic":"publicTrade.BTCUSDT"'))
    msg = parse_frame(raw)
    assert isinstance(msg, TradeMsg)
    assert msg.data[0].L == "MinusTick"
    adapter, events = _linear()

    adapter.on_ws(raw, 3)

    assert [e for e in events if isinstance(e, Trade)] == [
        Trade(
            ts_event=1786310819680 * NS,
            ts_recv=3,
            venue=Venue.BYBIT_LINEAR,
            symbol="BTCUSDT",
            price=65114.2,
            size=0.004,
            taker_side=Side.SELL,
            trade_id="a9188a0a-82bc-50de-be60-03eedbe3cdd7",
        )
    ]


def test_spot_public_trade_without_tick_direction_and_numeric_id(frames: list[tuple[str, int, str]]) -> None:
    raw = _first(frames, SPOT, lambda s: s.startswith('{"topic":"publicTrade.ETHUSDT"'))
    msg = parse_frame(raw)
    assert isinstance(msg, TradeMsg)
    assert msg.data[0].L is None
    adapter, events = _spot()

    adapter.on_ws(raw, 4)

    (t,) = [e for e in events if isinstance(e, Trade)]
    assert (t.ts_event, t.symbol, t.price, t.size, t.taker_side, t.trade_id) == (
        1786310821917 * NS,
        "ETHUSDT",
        1923.28,
        0.04537,
        Side.SELL,
        "2280000001739247417",
    )


def test_one_trade_message_with_several_trades_publishes_each(frames: list[tuple[str, int, str]]) -> None:
    raw = _first(frames, LINEAR, lambda s: s.startswith('{"topic":"publicTrade.ETHUSDT"') and s.count('"T":') > 2)
    adapter, events = _linear()

    adapter.on_ws(raw, 1)

    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == raw.count('"T":')
    assert trades[0].trade_id == "19d7df56-4f10-5290-a969-d9d9f2c74cc3"
    assert (trades[0].price, trades[0].size, trades[0].taker_side) == (1922.5, 0.01, Side.BUY)
    assert (trades[1].size, trades[1].trade_id) == (1.3, "4d4ad26c-901f-5146-adc0-1db29b6b9ab6")


def test_kline_message_with_closed_and_new_candle_publishes_only_the_closed_one(
    frames: list[tuple[str, int, str]],
) -> None:
    raw = _first(frames, LINEAR, lambda s: s.startswith('{"topic":"kline.1.ETHUSDT"') and '"confirm":true' in s)
    msg = parse_frame(raw)
    assert isinstance(msg, KlineMsg)
    assert [k.confirm for k in msg.data] == [True, False]
    adapter, events = _linear(klines=("1m",))

    adapter.on_ws(raw, 11)
    adapter.on_ws(raw, 12)  # a repeated closed candle is published once

    assert [e for e in events if isinstance(e, KlineClosed)] == [
        KlineClosed(
            ts_event=1786310820000 * NS,
            ts_recv=11,
            venue=Venue.BYBIT_LINEAR,
            symbol="ETHUSDT",
            interval_s=60,
            open_time_ms=1786310760000,
            open=1922.43,
            high=1922.48,
            low=1922.42,
            close=1922.48,
            volume=15.7,
            source="ws",
        )
    ]


def test_spot_kline_starting_with_type_key_is_parsed_by_key(frames: list[tuple[str, int, str]]) -> None:
    raw = _first(frames, SPOT, lambda s: '"topic":"kline.1.BTCUSDT"' in s and '"confirm":true' in s)
    assert raw.startswith('{"type":"snapshot","topic"')
    adapter, events = _spot(klines=("1m",))

    adapter.on_ws(raw, 1)

    (k,) = [e for e in events if isinstance(e, KlineClosed)]
    assert (k.symbol, k.open, k.high, k.low, k.close, k.volume) == (
        "BTCUSDT",
        65140.4,
        65140.5,
        65140.4,
        65140.5,
        0.15388,
    )


def test_linear_tickers_snapshot_then_deltas_merge_the_funding_fields(frames: list[tuple[str, int, str]]) -> None:
    raws = [raw for c, _, raw in frames if c == LINEAR and raw.startswith('{"topic":"tickers.BTCUSDT"')][:4]
    first = parse_frame(raws[0])
    assert isinstance(first, TickerMsg)
    assert first.type == "snapshot"
    adapter, events = _linear()

    for raw in raws:
        adapter.on_ws(raw, 1)

    # snapshot: rate 0.0001, next funding 1786320000000, mark 65117.44; the third frame (a delta) sends the
    # mark 65117.43, the others only bid/ask changes (the rest of the ticker is not kept: nobody reads it)
    assert adapter.funding_views["BTCUSDT"] == FundingView("0.0001", 1786320000000, 65117.43)
    # tickers make no market events; the snapshot's funding rate is the one FundingRate (deltas repeat it)
    others = [e for e in events if not isinstance(e, BookHealth)]
    assert [type(e).__name__ for e in others] == ["FundingRate"]


# -- control frames -------------------------------------------------------------------------------------------
def test_subscribe_acks_of_both_shapes_and_pongs_of_both_forms_are_not_market_data(
    frames: list[tuple[str, int, str]],
) -> None:
    linear_ack = _first(frames, LINEAR, lambda s: s.startswith('{"success"'))
    spot_ack = _first(frames, SPOT, lambda s: s.startswith('{"success"'))
    pongs = [
        '{"success":true,"ret_msg":"pong","conn_id":"test-conn-id","req_id":"","op":"pong"}',
        '{"args":["1777226678908"],"conn_id":"yzr7jz02gws1vh60mk5m-hxqdp","op":"pong"}',
        '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}',
    ]
    assert parse_frame(linear_ack) == OpMsg(
        op="subscribe", success=True, ret_msg="", conn_id="d8bu1olkndm7crnfs1e0-j6akw", req_id=""
    )
    assert parse_frame(spot_ack) == OpMsg(
        op="subscribe", success=True, ret_msg="subscribe", conn_id="d9avt8shteepr00gfc1g-4zd1x"
    )
    adapter, events = _spot()

    for raw in (linear_ack, spot_ack, *pongs):
        adapter.on_ws(raw, 1)

    assert adapter.pongs == 3
    assert adapter.ignored == 2
    assert adapter.subscribe_failures == []
    assert adapter.stats.malformed == 0
    assert [type(e) for e in events] == [BookHealth, BookHealth]  # SYNCING for both books, nothing else


def test_refused_subscription_is_recorded() -> None:
    adapter, _ = _linear()

    adapter.on_ws(
        '{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"cejreaspqfm9se7usbrg-2xh",'
        '"op":"subscribe"}',
        1,
    )

    assert adapter.subscribe_failures == ["Invalid topic: invalid.topic.BTCUSDT"]


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        b"\xc3\x28",
        '"just a string"',
        '{"nothing":"useful"}',
        '{"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1}',
        '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["x","1"]],"a":[],"u":1}}',
        '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["1","inf"]],"a":[],"u":1}}',
        '{"topic":"orderbook.200.BTCUSDT","type":"weird","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}',
        '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"ETHUSDT","b":[],"a":[],"u":1}}',
        '{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"1","p":"-5","i":"1"}]}',
        '{"topic":"kline.1.BTCUSDT","ts":1,"data":[{"start":"soon"}]}',
        '{"op":5}',
    ],
)
def test_malformed_frames_are_counted_and_dropped_without_raising(frame: str | bytes) -> None:
    adapter, events = _linear(klines=("1m",))

    adapter.on_ws(frame, 1)

    assert adapter.stats.malformed == 1
    assert [type(e) for e in events] == [BookHealth, BookHealth]
    assert adapter.books["BTCUSDT"].depth() == (0, 0)


# -- connection plan and REST ---------------------------------------------------------------------------------
def test_connection_plan_subscribes_book_trades_klines_in_batches_of_at_most_ten() -> None:
    settings = BotSettings()
    update = {"symbols": ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"), "klines": ("1m", "1h")}
    cfg = settings.venues[Venue.BYBIT_LINEAR].model_copy(update=update)
    adapter = make_adapter(Venue.BYBIT_LINEAR, cfg, settings.book, lambda e: None)

    (spec,) = adapter.connections()

    assert (spec.name, spec.url) == ("bybit_linear/public", "wss://stream.bybit.com/v5/public/linear")
    assert spec.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
    sent = [json.loads(s) for s in spec.subscribe]
    # 4 symbols x (book, trades, 2 klines) + the funding rates' tickers (funding = true, the default)
    assert [len(s["args"]) for s in sent] == [10, 10]
    assert sent[1]["args"][-4:] == ["tickers.BTCUSDT", "tickers.ETHUSDT", "tickers.SOLUSDT", "tickers.DOGEUSDT"]
    assert {s["op"] for s in sent} == {"subscribe"}
    assert sent[0]["args"][:4] == [
        "orderbook.200.BTCUSDT",
        "publicTrade.BTCUSDT",
        "kline.1.BTCUSDT",
        "kline.60.BTCUSDT",
    ]
    assert adapter.ping_payload() == '{"op":"ping"}'
    assert adapter.snapshot_url("BTCUSDT") is None
    assert adapter.resubscribe_payloads("ETHUSDT") == [
        '{"op":"unsubscribe","args":["orderbook.200.ETHUSDT"]}',
        '{"op":"subscribe","args":["orderbook.200.ETHUSDT"]}',
    ]
    assert adapter.klines_url("BTCUSDT", "1h", 200) == (
        "https://api.bybit.com/v5/market/kline?category=linear&symbol=BTCUSDT&interval=60&limit=200"
    )
    spot = make_adapter(Venue.BYBIT_SPOT, settings.venues[Venue.BYBIT_SPOT], settings.book, lambda e: None)
    assert spot.klines_url("ETHUSDT", "1d", 5).endswith(
        "/v5/market/kline?category=spot&symbol=ETHUSDT&interval=D&limit=5"
    )


def test_rest_klines_are_reversed_to_oldest_first_without_the_forming_bar() -> None:
    body = (
        '{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":['
        '["1694649600000","26210","26527.2","26125.8","26268.2","11185.573","293656450.7204"],'
        '["1694563200000","25828.3","34343","25752.4","26210","76565.946","2060874661.2268"]]},'
        '"retExtInfo":{},"time":1694700000000}'
    )
    adapter, _ = _linear()

    klines = adapter.parse_klines("BTCUSDT", "1d", body, 1694700000000 * NS)

    assert [(k.open_time_ms, k.open, k.high, k.low, k.close, k.volume) for k in klines] == [
        (1694563200000, 25828.3, 34343.0, 25752.4, 26210.0, 76565.946),
    ]
    assert klines[0].ts_event == (1694563200000 + 86_400_000) * NS
    assert klines[0].interval_s == 86_400
    assert klines[0].source == "rest"
    assert len(adapter.parse_klines("BTCUSDT", "1d", body, 1694736000000 * NS)) == 2  # both closed a day later


def test_rest_klines_error_answer_is_counted_not_raised() -> None:
    adapter, _ = _spot()

    assert adapter.parse_klines("BTCUSDT", "1m", '{"retCode":10001,"retMsg":"params error"}', 0) == []
    assert adapter.parse_klines("BTCUSDT", "1m", "<html>", 0) == []
    assert adapter.stats.malformed == 2


def test_gap_queues_a_resubscribe_of_that_book_only(frames: list[tuple[str, int, str]]) -> None:
    snapshot = _first(frames, LINEAR, lambda s: s.startswith('{"topic":"orderbook.200.ETHUSDT","type":"snapshot"'))
    deltas = [
        raw for c, _, raw in frames if c == LINEAR and raw.startswith('{"topic":"orderbook.200.ETHUSDT","type":"delta"')
    ]
    adapter, _ = _linear()

    adapter.on_ws(snapshot, 1)
    adapter.on_ws(deltas[0], 2)
    adapter.on_ws(deltas[2], 3)  # deltas[1] lost

    assert adapter.take_actions() == [Resubscribe("ETHUSDT")]
    assert adapter.stats.gaps == {"BTCUSDT": 0, "ETHUSDT": 1}
