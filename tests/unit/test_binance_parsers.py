"""Binance parsers and adapter plumbing, on real messages from the recordings (exact field values).

Messages come from the hftbacktest files (``<local_ns> <raw>`` lines) where the kind exists there; the
kline, partial-depth, shutdown and response shapes are not in those recordings and are taken verbatim
from shared/PROTOCOLS.md (real 2021 cryptofeed samples and the official docs' examples).
"""

from __future__ import annotations

import gzip
import math
import os
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from bot.config import BookConfig, BotSettings, VenueConfig
from bot.events import BookHealth, BookState, BookUpdate, Event, KlineClosed, Side, Trade, Venue
from bot.venues import ADAPTERS, make_adapter
from bot.venues.base import NeedSnapshot
from bot.venues.binance import BinanceSpotAdapter, BinanceUsdmAdapter
from bot.venues.binance_wire import (
    _ENV_HEAD,
    BookTicker,
    DepthSnapshot,
    DepthText,
    DepthUpdate,
    Kind,
    Response,
    WireTrade,
    depth_text,
    parse_frame,
    parse_snapshot,
    stream_kind,
    to_best_quote,
)
from bot.venues.levels import parse_levels

pytestmark = pytest.mark.unit

SPOT = "hftbacktest/examples/spot/btcusdt_20240808.gz"
USDM = "hftbacktest/examples/usdm/btcusdt_20240808.gz"
NS = 1_000_000
KLINE_CLOSED = (
    '{"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT","k":{"t":1626992700000,'
    '"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,"L":126902986,"o":"7.6080","c":"7.6170","h":"7.6180",'
    '"l":"7.6070","v":"3005","n":113,"x":true,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}'
)
KLINE_OPEN = (
    '{"stream":"nknusdt@kline_1m","data":{"e":"kline","E":1633998523963,"s":"NKNUSDT","k":{"t":1633998480000,'
    '"T":1633998539999,"s":"NKNUSDT","i":"1m","f":19862761,"L":19862790,"o":"0.35270000","c":"0.35280000",'
    '"h":"0.35280000","l":"0.35220000","v":"25877.00000000","n":30,"x":false,"q":"9116.04600000","V":"58.00000000",'
    '"Q":"20.46240000","B":"0"}}}'
)


def _shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


def _first(rel: str, want: Callable[[bytes], bool]) -> bytes:
    """The raw text of the first line of a recording that ``want`` accepts."""
    with gzip.open(_shared() / rel) as f:
        for line in f:
            raw = line.rstrip(b"\n").split(b" ", 1)[1]
            if want(raw):
                return raw
    raise AssertionError(f"no such line in {rel}")


def _stream(name: str) -> Callable[[bytes], bool]:
    return lambda raw: raw.startswith(b'{"stream":"btcusdt@' + name.encode() + b'"')


def _cfg(depth: str = "depth@100ms", symbols: tuple[str, ...] = ("BTCUSDT",), **kw: object) -> VenueConfig:
    return VenueConfig(ws_url="wss://example.test", rest_url="https://example.test", symbols=symbols, depth=depth, **kw)


def _spot(**kw: object) -> tuple[BinanceSpotAdapter, list[Event]]:
    events: list[Event] = []
    return BinanceSpotAdapter(_cfg(**kw), BookConfig(), events.append), events


def _usdm(**kw: object) -> tuple[BinanceUsdmAdapter, list[Event]]:
    events: list[Event] = []
    return BinanceUsdmAdapter(_cfg(depth="depth@0ms", **kw), BookConfig(), events.append), events


# -- wire structs -----------------------------------------------------------------------------------------
def test_spot_depth_update_decodes_ids_and_float_levels_including_zero_deletes() -> None:
    f = parse_frame(_first(SPOT, _stream("depth@100ms")))

    assert f.kind is Kind.DEPTH
    assert f.stream == "btcusdt@depth@100ms"
    m = f.msg
    assert isinstance(m, DepthUpdate)
    assert (m.E, m.s, m.U, m.u, m.T, m.pu) == (1723161255208, "BTCUSDT", 50093239189, 50093239202, 0, -1)
    assert m.b.tolist() == [[61737.63, 0.0], [61730.17, 0.0], [56854.58, 0.0]]
    assert m.a[:2].tolist() == [[61837.64, 1.54698], [61839.85, 0.0]]
    assert m.a[-1].tolist() == [61937.64, 0.02]
    assert m.a.shape == (9, 2)


def test_usdm_depth_update_has_transaction_time_and_previous_final_id() -> None:
    m = parse_frame(_first(USDM, _stream("depth@0ms")), futures=True).msg

    assert isinstance(m, DepthUpdate)
    assert (m.E, m.T, m.U, m.u, m.pu) == (1723161256299, 1723161256298, 5123107832006, 5123107837557, 5123107831937)
    assert m.b[:3].tolist() == [[58710.2, 0.014], [61496.5, 0.01], [61510.9, 0.0]]


def test_spot_rest_snapshot_has_no_times_and_a_thousand_levels_a_side() -> None:
    snap = parse_snapshot(_first(SPOT, lambda r: r.startswith(b'{"lastUpdateId"')))

    assert isinstance(snap, DepthSnapshot)
    assert (snap.lastUpdateId, snap.E, snap.T) == (50093239218, 0, 0)
    assert snap.bids[:2] == [(61837.63, 3.78826), (61837.62, 0.617)]
    assert snap.asks[:2] == [(61837.64, 1.54698), (61837.65, 0.00843)]
    assert (len(snap.bids), len(snap.asks)) == (1000, 1000)


def test_usdm_rest_snapshot_adds_event_and_transaction_time() -> None:
    snap = parse_snapshot(_first(USDM, lambda r: r.startswith(b'{"lastUpdateId"')))

    assert (snap.lastUpdateId, snap.E, snap.T) == (5123107852948, 1723161256501, 1723161256493)
    assert snap.bids[:3] == [(61800.2, 2.909), (61800.1, 0.696), (61800.0, 20.004)]
    assert snap.asks[0] == (61800.3, 1.072)


def test_spot_book_ticker_without_event_time_becomes_a_best_quote() -> None:
    f = parse_frame(_first(SPOT, _stream("bookTicker")))

    assert f.kind is Kind.BOOK_TICKER
    assert isinstance(f.msg, BookTicker)
    assert to_best_quote(f.msg) == ("BTCUSDT", 50093239212, 61837.63, 3.78826, 61837.64, 1.54698, 0)


def test_usdm_book_ticker_with_event_time() -> None:
    q = to_best_quote(parse_frame(_first(USDM, _stream("bookTicker"))).msg)

    assert q == ("BTCUSDT", 5123107839020, 61800.2, 2.507, 61800.3, 2.51, 1723161256313 * NS)


def test_spot_trade_buyer_maker_means_taker_sold() -> None:
    raw = _first(SPOT, _stream("trade"))
    f = parse_frame(raw)
    assert isinstance(f.msg, WireTrade)
    assert f.msg.M is True
    assert f.msg.X is None
    adapter, events = _spot()

    adapter.on_ws(raw, 7)

    trades = [e for e in events if isinstance(e, Trade)]
    assert trades == [
        Trade(
            ts_event=1723161255342 * NS,
            ts_recv=7,
            venue=Venue.BINANCE_SPOT,
            symbol="BTCUSDT",
            price=61837.63,
            size=0.02,
            taker_side=Side.SELL,
            trade_id="3735683259",
        )
    ]


def test_usdm_trade_has_execution_type_and_taker_buy() -> None:
    raw = _first(USDM, _stream("trade"))
    assert parse_frame(raw).msg.X == "MARKET"
    adapter, events = _usdm()

    adapter.on_ws(raw.decode(), 9)  # text frames arrive as str

    assert [e for e in events if isinstance(e, Trade)] == [
        Trade(
            ts_event=1723161256322 * NS,
            ts_recv=9,
            venue=Venue.BINANCE_USDM,
            symbol="BTCUSDT",
            price=61800.3,
            size=0.006,
            taker_side=Side.BUY,
            trade_id="5266583935",
        )
    ]


def test_closed_kline_becomes_kline_closed_at_start_plus_interval_and_open_one_is_skipped() -> None:
    adapter, events = _usdm(symbols=("SUSHIUSDT", "NKNUSDT"), klines=("1m",))

    adapter.on_ws(KLINE_OPEN, 1)
    adapter.on_ws(KLINE_CLOSED, 2)
    adapter.on_ws(KLINE_CLOSED, 3)  # a repeat of the same closed candle is sent once

    klines = [e for e in events if isinstance(e, KlineClosed)]
    assert klines == [
        KlineClosed(
            ts_event=(1626992700000 + 60_000) * NS,
            ts_recv=2,
            venue=Venue.BINANCE_USDM,
            symbol="SUSHIUSDT",
            interval_s=60,
            open_time_ms=1626992700000,
            open=7.608,
            high=7.618,
            low=7.607,
            close=7.617,
            volume=3005.0,
            source="ws",
        )
    ]
    assert adapter.stats.malformed == 0


def test_partial_depth_spot_and_usdm_shapes_are_told_apart_by_stream_name() -> None:
    spot = (
        '{"stream":"btcusdt@depth5@100ms","data":{"lastUpdateId":160,"bids":[["0.0024","10"]],'
        '"asks":[["0.0026","100"]]}}'
    )
    usdm = (
        '{"stream":"btcusdt@depth5","data":{"e":"depthUpdate","E":1571889248277,"T":1571889248276,"s":"BTCUSDT",'
        '"U":390497796,"u":390497878,"pu":390497794,"b":[["7403.89","0.002"],["7403.90","3.906"]],'
        '"a":[["7405.96","3.340"],["7406.63","4.525"]]}}'
    )
    assert stream_kind("btcusdt@depth5@100ms") is Kind.PARTIAL
    assert stream_kind("btcusdt@depth@100ms") is Kind.DEPTH
    assert stream_kind("btcusdt@depth20") is Kind.PARTIAL
    assert isinstance(parse_frame(spot).msg, DepthSnapshot)
    assert isinstance(parse_frame(usdm).msg, DepthUpdate)

    spot_adapter, spot_events = _spot(depth="depth5@100ms")
    usdm_events: list[Event] = []
    usdm_adapter = BinanceUsdmAdapter(_cfg(depth="depth5"), BookConfig(), usdm_events.append)

    spot_adapter.on_ws(spot, 5)
    usdm_adapter.on_ws(usdm, 6)

    (s,) = [e for e in spot_events if isinstance(e, BookUpdate)]
    assert (s.update_id, s.bid_px, s.bid_sz, s.ask_px, s.ask_sz, s.snapshot) == (160, 0.0024, 10.0, 0.0026, 100.0, True)
    (u,) = [e for e in usdm_events if isinstance(e, BookUpdate)]
    assert (u.update_id, u.bid_px, u.bid_sz, u.ask_px, u.ask_sz) == (390497878, 7403.9, 3.906, 7405.96, 3.34)
    assert u.ts_event == 1571889248277 * NS
    assert spot_adapter.states["BTCUSDT"] is BookState.LIVE
    assert usdm_adapter.states["BTCUSDT"] is BookState.LIVE


def test_server_shutdown_and_subscribe_responses_are_recognised_not_malformed() -> None:
    adapter, events = _spot()
    shutdown = '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1723161255000}}'
    raw_shutdown = '{"e":"serverShutdown","E":1723161255001}'

    assert parse_frame(shutdown).kind is Kind.SHUTDOWN
    assert parse_frame(raw_shutdown).msg.E == 1723161255001
    ok = parse_frame('{"result":null,"id":1}')
    assert ok.kind is Kind.RESPONSE
    assert ok.msg == Response(id=1, result=None, error=None)

    for frame in (shutdown, raw_shutdown, '{"result":null,"id":1}', '{"error":{"code":2,"msg":"Invalid"},"id":"x"}'):
        adapter.on_ws(frame, 1)

    assert adapter.shutdown_notices == 2
    assert adapter.stats.malformed == 0
    assert adapter.stats.messages == 4
    assert not [e for e in events if not isinstance(e, BookHealth)]


def test_raw_payloads_without_envelope_are_routed_by_their_keys() -> None:
    depth = _first(SPOT, _stream("depth@100ms"))
    trade = _first(SPOT, _stream("trade"))
    ticker = _first(SPOT, _stream("bookTicker"))
    raw_depth = depth[depth.index(b'"data":') + 7 : -1]
    raw_trade = trade[trade.index(b'"data":') + 7 : -1]
    raw_ticker = ticker[ticker.index(b'"data":') + 7 : -1]

    assert parse_frame(raw_depth).kind is Kind.DEPTH
    assert parse_frame(raw_trade).kind is Kind.TRADE
    assert parse_frame(raw_ticker).kind is Kind.BOOK_TICKER
    adapter, events = _spot()
    adapter.on_ws(raw_trade, 1)
    adapter.on_ws(raw_depth, 2)
    adapter.on_ws(raw_ticker, 3)

    assert [type(e).__name__ for e in events] == ["BookHealth", "Trade"]
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]  # the raw diff started the sync
    assert adapter.ignored == 1  # the bookTicker


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        b"\xff\xfe",
        "[1,2,3]",
        '{"stream":"btcusdt@depth@100ms"}',
        '{"stream":"btcusdt@depth@100ms","data":[]}',
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[["abc","1"]],"a":[]}}',
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[["nan","1"]],"a":[]}}',
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[["1","-1"]],"a":[]}}',
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1,"u":2,"b":[],"a":[]}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":"x","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true}}',
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
        '{"stream":7,"data":{}}',
        '{"e":"depthUpdate","E":1}',
    ],
)
def test_malformed_frames_are_counted_and_dropped_without_raising(frame: str | bytes) -> None:
    adapter, events = _spot(klines=("1m",))

    adapter.on_ws(frame, 1)

    assert adapter.stats.malformed == 1
    assert adapter.stats.messages == 1
    assert [type(e) for e in events] == [BookHealth]  # only the start-of-session SYNCING
    assert adapter.take_actions() == []


def test_malformed_snapshot_body_is_counted_and_asked_for_again() -> None:
    adapter, _ = _spot()

    adapter.on_snapshot("BTCUSDT", '{"code":-1121,"msg":"Invalid symbol."}', 1)

    assert adapter.stats.malformed == 1
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]


# -- connection plan and REST ---------------------------------------------------------------------------
def test_spot_connection_plan_is_one_combined_stream_with_depth_trades_and_klines() -> None:
    settings = BotSettings()  # defaults: independent of any config.toml in the working directory
    update = {"symbols": ("BTCUSDT", "ETHUSDT"), "klines": ("1m", "5m")}
    cfg = settings.venues[Venue.BINANCE_SPOT].model_copy(update=update)
    adapter = make_adapter(Venue.BINANCE_SPOT, cfg, settings.book, lambda e: None)

    (spec,) = adapter.connections()

    assert spec.name == "binance_spot/stream"
    assert spec.url == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/ethusdt@depth@100ms/"
        "ethusdt@trade/btcusdt@kline_1m/btcusdt@kline_5m/ethusdt@kline_1m/ethusdt@kline_5m"
    )
    assert spec.symbols == ("BTCUSDT", "ETHUSDT")
    assert spec.subscribe == ()
    assert adapter.ping_payload() is None
    assert adapter.resubscribe_payloads("BTCUSDT") == []
    assert adapter.snapshot_url("ETHUSDT") == "https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=1000"
    assert (
        adapter.klines_url("BTCUSDT", "1m", 500)
        == "https://api.binance.com/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=500"
    )


def test_usdm_connection_plan_puts_klines_on_the_market_path_and_rounds_the_depth_limit() -> None:
    settings = BotSettings()  # defaults: independent of any config.toml in the working directory
    update = {"symbols": ("BTCUSDT",), "snapshot_limit": 700, "trades": False}
    cfg = settings.venues[Venue.BINANCE_USDM].model_copy(update=update)
    adapter = ADAPTERS[Venue.BINANCE_USDM](cfg, settings.book, lambda e: None)

    depth, klines = adapter.connections()

    assert (depth.name, depth.url) == (
        "binance_usdm/depth",
        "wss://fstream.binance.com/stream?streams=btcusdt@depth@100ms",
    )
    assert depth.symbols == ("BTCUSDT",)
    assert (klines.name, klines.url) == (
        "binance_usdm/klines",
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/btcusdt@markPrice@1s",  # + funding
    )
    assert klines.symbols == ()
    assert adapter.snapshot_url("BTCUSDT") == "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    assert (
        adapter.klines_url("BTCUSDT", "1h", 3)
        == "https://fapi.binance.com/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=3"
    )


def test_make_adapter_refuses_an_unknown_venue() -> None:
    with pytest.raises(ValueError, match="no adapter for venue 'kraken'"):
        make_adapter("kraken", _cfg(), BookConfig(), lambda e: None)  # type: ignore[arg-type]


def test_rest_klines_keep_closed_rows_oldest_first_and_drop_the_forming_one() -> None:
    # Rows as the docs show them (12 fields); the third is still forming at ts_recv.
    body = (
        '[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499040059999,'
        '"2434.19055334",308,"1756.87402397","28.46694368","0"],'
        '[1499040060000,"0.01577100","0.01600000","0.01570000","0.01590000","10.5",1499040119999,"0.1",3,"1","1","0"],'
        '[1499040120000,"0.01590000","0.01590000","0.01590000","0.01590000","1",1499040179999,"0.1",1,"1","1","0"]]'
    )
    adapter, _ = _spot()

    klines = adapter.parse_klines("BTCUSDT", "1m", body, 1499040150000 * NS)

    assert [(k.open_time_ms, k.ts_event, k.interval_s, k.source) for k in klines] == [
        (1499040000000, 1499040060000 * NS, 60, "rest"),
        (1499040060000, 1499040120000 * NS, 60, "rest"),
    ]
    assert (klines[0].open, klines[0].high, klines[0].low, klines[0].close) == (0.0163479, 0.8, 0.015758, 0.015771)
    assert klines[0].volume == 148976.11427815
    assert adapter.parse_klines("BTCUSDT", "1m", '{"code":-1100}', 0) == []
    assert adapter.stats.malformed == 1


def test_book_update_reports_nan_for_an_empty_side() -> None:
    adapter, events = _spot(depth="depth5")
    adapter.on_ws('{"stream":"btcusdt@depth5","data":{"lastUpdateId":7,"bids":[["10.5","2"]],"asks":[]}}', 1)

    (u,) = [e for e in events if isinstance(e, BookUpdate)]
    assert (u.bid_px, u.bid_sz) == (10.5, 2.0)
    assert math.isnan(u.ask_px)
    assert math.isnan(u.ask_sz)


def test_ws_closed_kline_already_delivered_by_rest_backfill_is_not_published_again() -> None:
    adapter, events = _usdm(symbols=("SUSHIUSDT",), klines=("1m",))
    body = (
        '[[1626992640000,"7.6","7.62","7.6","7.608","100",1626992699999,"1",1,"1","1","0"],'
        '[1626992700000,"7.6080","7.6180","7.6070","7.6170","3005",1626992759999,"1",1,"1","1","0"]]'
    )

    rest = adapter.parse_klines("SUSHIUSDT", "1m", body, 1626992760500 * NS)
    adapter.on_ws(KLINE_CLOSED, 1626992760500 * NS)

    assert [k.open_time_ms for k in rest] == [1626992640000, 1626992700000]
    assert [e for e in events if isinstance(e, KlineClosed)] == []


@pytest.mark.parametrize(("rel", "futures"), [(SPOT, False), (USDM, True)])
def test_depth_text_split_equals_the_whole_frame_decode_on_real_frames(rel: str, futures: bool) -> None:
    frames = []
    with gzip.open(_shared() / rel) as f:
        for line in f:
            raw = line.rstrip(b"\n").split(b" ", 1)[1]
            if b"@depth" in raw[:40]:
                frames.append(raw.decode())
            if len(frames) == 300:
                break

    for frame in frames:
        text = depth_text(frame)
        whole = parse_frame(frame, futures=futures).msg
        assert text is not None
        prefix = frame[: frame.index('"data":{') + 8].encode()
        assert depth_text(frame.encode(), prefix) == text  # the payload's head alone: the same fields
        assert depth_text(frame, b'{"stream":"xrpusdt@depth","data":{') == text  # another prefix: the envelope
        assert isinstance(whole, DepthUpdate)
        head = (whole.E, whole.s, whole.U, whole.u, whole.T, whole.pu)
        assert (text.E, text.s, text.U, text.u, text.T, text.pu) == head
        b, a = parse_levels(text.b), parse_levels(text.a)
        assert (b.tolist(), a.tolist()) == (whole.b.tolist(), whole.a.tolist())
    assert depth_text('{"stream":"btcusdt@depth","data":{"b":[],"a":[],"e":"depthUpdate"}}') is None


def _depth_text_reference(frame: bytes) -> DepthText | None:
    """The split as first written: a pattern search for the asks, the envelope decoded around the head."""
    i = frame.find(b',"b":[')
    j = frame.find(b'],"a":[', i)
    if i < 0 or j < 0 or not frame.endswith(b"]}}"):
        return None
    h = _ENV_HEAD.decode(frame[:i] + b"}}").data
    return DepthText(h.E, h.s, h.U, h.u, frame[i + 5 : j + 1], frame[j + 6 : -2], h.T, h.pu)


def test_depth_text_with_its_shortcuts_equals_the_reference_split_on_damaged_frames() -> None:
    # Real frames with one byte changed, dropped or repeated anywhere (head, levels, envelope): the
    # payload-only decode and the letter search give the reference's result, or fail as it fails.
    rng = random.Random(3)
    frames = [
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161258209,"s":"BTCUSDT",'
        b'"U":50093241262,"u":50093241266,"b":[["61824.00000000","0.32726000"],["61799.50000000","0.06470000"]],'
        b'"a":[["61840.18000000","0.04959000"],["61840.19000000","0.00000000"]]}}',
        b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161389724,"T":1723161389706,'
        b'"s":"BTCUSDT","U":5123118435177,"u":5123118436391,"pu":5123118434683,"b":[["5000.00","2.301"]],'
        b'"a":[["62438.40","23.249"],["62547.00","0.000"]]}}',
    ]
    alphabet = b'{}[]",:abeEsuUTp0123456789.-\\ '
    checked = 0
    for _ in range(4000):
        intact = rng.choice(frames)
        prefix = intact[: intact.index(b'"data":{') + 8]  # as the adapter has it: from its configuration
        f = bytearray(intact)
        at = rng.randrange(len(f))
        op = rng.randrange(3)
        if op == 0:
            f[at] = rng.choice(alphabet)
        elif op == 1:
            del f[at]
        else:
            f.insert(at, f[at])
        frame = bytes(f)
        outcomes: list[object] = []
        for fn, args in ((_depth_text_reference, (frame,)), (depth_text, (frame, prefix))):
            try:
                outcomes.append(fn(*args))  # type: ignore[operator]
            except msgspec.DecodeError as e:  # ValidationError included
                outcomes.append(type(e))
        assert outcomes[0] == outcomes[1], frame
        checked += isinstance(outcomes[0], DepthText)
    assert checked > 1000  # most damage leaves a frame the split still takes
