"""Instrument-rule and server-time parsers (bot.venues.reference) on the loopback exchange's bodies and on
the real Bybit instruments-info responses recorded in the demo (bot/demo/recording, records of kind info)."""

from __future__ import annotations

import urllib.parse
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from bot.errors import MalformedMessage, RateLimited, VenueRejected, VenueUnavailable
from bot.events import Venue
from bot.orders import Instrument
from bot.recording import iter_records
from bot.sim.faults import FaultSpec, RestDice
from bot.sim.instruments import binance_exchange_info, binance_symbol_entry, bybit_static_entry
from bot.sim.klines import KlineStore
from bot.sim.rest import BinanceRest, BybitRest
from bot.sim.ws import SimStats
from bot.venues.reference import instruments_url, parse_instruments, parse_server_time, time_url

pytestmark = pytest.mark.unit

D = Decimal
DEMO = Path(__file__).resolve().parents[2] / "bot" / "demo" / "recording"


def _bybit_body(venue: Venue, entries: list[dict[str, object]], cursor: str | None = None) -> bytes:
    result: dict[str, object] = {"category": "spot" if venue is Venue.BYBIT_SPOT else "linear", "list": entries}
    if cursor is not None:
        result["nextPageCursor"] = cursor
    return orjson.dumps({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1})


# -- Binance exchangeInfo, as the sim serves it ----------------------------------------------------------------


def test_binance_spot_exchange_info_from_the_sim() -> None:
    v = Venue.BINANCE_SPOT
    entries = [binance_symbol_entry(v, s, 2, 5) for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT")]
    body = orjson.dumps(binance_exchange_info(v, entries, 1_723_161_253_123))
    got, cursor = parse_instruments(v, body, {"BTCUSDT", "DOGEUSDT"})
    assert cursor == ""
    assert got == [
        Instrument(venue=v, symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.00001"),
                   min_qty=D("0.00001"), min_notional=D(5), max_qty=D(9000)),
        Instrument(venue=v, symbol="DOGEUSDT", base="DOGE", quote="USDT", tick_size=D("0.00001"), step_size=D(1),
                   min_qty=D(1), min_notional=D(1), max_qty=D(9_000_000_000)),
    ]  # fmt: skip
    assert str(got[0].tick_size) == "0.01000000"  # the venue's exact string
    assert got[0].perpetual is False


def test_binance_usdm_exchange_info_reads_min_notional_notional() -> None:
    v = Venue.BINANCE_USDM
    entries = [binance_symbol_entry(v, s, 2, 3) for s in ("BTCUSDT", "SOLUSDT")]
    (btc, sol), _ = parse_instruments(v, orjson.dumps(binance_exchange_info(v, entries, 1)))
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.max_qty, btc.min_notional) == (
        D("0.10"), D("0.001"), D("0.001"), D(1000), D(100))  # fmt: skip
    assert (sol.tick_size, sol.step_size, sol.min_notional, sol.base) == (D("0.01"), D(1), D(5), "SOL")
    assert btc.perpetual is True


def test_binance_spot_falls_back_to_min_notional_filter() -> None:
    entry = binance_symbol_entry(Venue.BINANCE_SPOT, "BTCUSDT", 2, 5)
    entry["filters"] = [f for f in entry["filters"] if f["filterType"] != "NOTIONAL"]
    entry["filters"].append({"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000", "applyToMarket": True})
    (got,), _ = parse_instruments(Venue.BINANCE_SPOT, orjson.dumps({"symbols": [entry]}))
    assert got.min_notional == D(10)


def test_binance_entry_without_lot_size_is_malformed() -> None:
    entry = binance_symbol_entry(Venue.BINANCE_SPOT, "BTCUSDT", 2, 5)
    entry["filters"] = [f for f in entry["filters"] if f["filterType"] != "LOT_SIZE"]
    with pytest.raises(MalformedMessage, match="BTCUSDT: no LOT_SIZE filter"):
        parse_instruments(Venue.BINANCE_SPOT, orjson.dumps({"symbols": [entry]}))


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"timezone":"UTC"}', b'{"symbols":[{"symbol":"X","baseAsset":"X","quoteAsset":"U",'
     b'"filters":[{"filterType":"PRICE_FILTER","tickSize":"abc"},{"filterType":"LOT_SIZE","stepSize":"1",'
     b'"minQty":"1","maxQty":"1"},{"filterType":"NOTIONAL","minNotional":"1"}]}]}'],
)  # fmt: skip
def test_damaged_exchange_info_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_instruments(Venue.BINANCE_SPOT, body)


# -- Bybit instruments-info: the sim's static entries and the real recorded bodies ---------------------------


def test_bybit_spot_static_entry_uses_base_precision_and_min_order_amt() -> None:
    v = Venue.BYBIT_SPOT
    (eth,), _ = parse_instruments(v, _bybit_body(v, [bybit_static_entry(v, "ETHUSDT", 2, 4)]))
    assert eth == Instrument(venue=v, symbol="ETHUSDT", base="ETH", quote="USDT", tick_size=D("0.01"),
                             step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D(5),
                             max_qty=D(8118))  # fmt: skip


def test_bybit_linear_static_entry_and_the_next_page_cursor() -> None:
    v = Venue.BYBIT_LINEAR
    body = _bybit_body(v, [bybit_static_entry(v, s, 2, 3) for s in ("BTCUSDT", "SOLUSDT")], cursor="sim-500")
    got, cursor = parse_instruments(v, body, {"SOLUSDT"})
    assert cursor == "sim-500"
    assert got == [Instrument(venue=v, symbol="SOLUSDT", base="SOL", quote="USDT", tick_size=D("0.010"),
                              step_size=D("0.1"), min_qty=D("0.1"), min_notional=D(5), max_qty=D(96000))]  # fmt: skip


def _recorded_info() -> dict[Venue, str]:
    records = iter_records(DEMO, venues=["bybit_spot", "bybit_linear"])
    return {Venue(r.venue): r.raw for r in records if r.kind == "info"}


def test_real_recorded_bybit_instruments_info_parses_every_entry() -> None:
    info = _recorded_info()
    assert set(info) == {Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR}
    linear, cursor = parse_instruments(Venue.BYBIT_LINEAR, info[Venue.BYBIT_LINEAR])
    spot, _ = parse_instruments(Venue.BYBIT_SPOT, info[Venue.BYBIT_SPOT])
    assert (len(linear), cursor, len(spot)) == (800, "", 557)
    by = {i.symbol: i for i in linear}
    # the values as recorded on 2026-08-09 (see the raw body: priceFilter / lotSizeFilter)
    assert by["BTCUSDT"] == Instrument(venue=Venue.BYBIT_LINEAR, symbol="BTCUSDT", base="BTC", quote="USDT",
                                       tick_size=D("0.10"), step_size=D("0.001"), min_qty=D("0.001"),
                                       min_notional=D(5), max_qty=D(1500))  # fmt: skip
    assert (by["DOGEUSDT"].tick_size, by["DOGEUSDT"].step_size, by["DOGEUSDT"].max_qty) == (
        D("0.00001"), D(1), D(43_678_900))  # fmt: skip
    sp = {i.symbol: i for i in spot}
    assert (sp["BTCUSDT"].tick_size, sp["BTCUSDT"].step_size, sp["BTCUSDT"].min_qty, sp["BTCUSDT"].max_qty) == (
        D("0.1"), D("0.000001"), D("0.000001"), D(230))  # fmt: skip
    assert (sp["SOLUSDT"].tick_size, sp["SOLUSDT"].step_size, sp["SOLUSDT"].min_notional) == (
        D("0.01"), D("0.0001"), D(5))  # fmt: skip
    assert all(i.tick_size > 0 and i.step_size > 0 for i in linear + spot)


def test_recorded_bybit_bodies_agree_with_the_sims_static_copies() -> None:
    info = _recorded_info()
    for venue in (Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR):
        wanted = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"}
        real, _ = parse_instruments(venue, info[venue], wanted)
        static, _ = parse_instruments(venue, _bybit_body(venue, [bybit_static_entry(venue, s, 2, 3) for s in wanted]))
        assert sorted(real, key=lambda i: i.symbol) == sorted(static, key=lambda i: i.symbol)


def test_bybit_error_codes() -> None:
    with pytest.raises(VenueRejected, match="retCode 10001"):
        parse_instruments(Venue.BYBIT_LINEAR, b'{"retCode":10001,"retMsg":"params error","result":{}}')
    with pytest.raises(RateLimited):
        parse_instruments(Venue.BYBIT_SPOT, b'{"retCode":10006,"retMsg":"Too many visits!","result":{}}')
    with pytest.raises(VenueUnavailable):  # the sim's (and Bybit's) internal error, HTTP 200
        parse_server_time(Venue.BYBIT_SPOT, b'{"retCode":10016,"retMsg":"Internal server error.","result":{}}')


# -- server time, from the sim's own handlers -------------------------------------------------------------------


async def test_binance_server_time_from_the_sim() -> None:
    for venue, path in ((Venue.BINANCE_SPOT, "/api/v3/time"), (Venue.BINANCE_USDM, "/fapi/v1/time")):
        rest = BinanceRest(venue, None, lambda: 1_723_161_253_123, RestDice(FaultSpec.parse(""), 0, venue.value),
                           KlineStore(None), SimStats())  # fmt: skip
        resp = await rest.time(make_mocked_request("GET", path))
        assert resp.body is not None
        assert parse_server_time(venue, bytes(resp.body)) == 1_723_161_253_123_000_000


async def test_bybit_server_time_from_the_sim_prefers_time_nano() -> None:
    rest = BybitRest({}, {Venue.BYBIT_LINEAR: lambda: 1_786_310_817_197}, {}, KlineStore(None), SimStats())
    resp = await rest.time(make_mocked_request("GET", "/v5/market/time"))
    assert parse_server_time(Venue.BYBIT_SPOT, bytes(resp.body)) == 1_786_310_817_197_000_000
    real = b'{"retCode":0,"retMsg":"OK","result":{"timeSecond":"1688639403","timeNano":"1688639403423213947"}}'
    assert parse_server_time(Venue.BYBIT_LINEAR, real) == 1_688_639_403_423_213_947
    assert parse_server_time(Venue.BYBIT_LINEAR, b'{"retCode":0,"result":{"timeSecond":"1688639403"}}') == (
        1_688_639_403_000_000_000)  # fmt: skip


@pytest.mark.parametrize("body", [b'{"serverTime":"1"}', b"{}", b"[", b'{"serverTime":true}'])
def test_damaged_binance_time(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_server_time(Venue.BINANCE_SPOT, body)


# -- URLs ------------------------------------------------------------------------------------------------------


def test_urls() -> None:
    url = instruments_url(Venue.BINANCE_SPOT, "https://api.binance.com/", ["ETHUSDT", "BTCUSDT"])
    base, query = url.split("?")
    assert base == "https://api.binance.com/api/v3/exchangeInfo"
    assert urllib.parse.parse_qs(query) == {"symbols": ['["BTCUSDT","ETHUSDT"]']}
    assert instruments_url(Venue.BINANCE_USDM, "https://fapi.binance.com", ["BTCUSDT"]) == (
        "https://fapi.binance.com/fapi/v1/exchangeInfo")  # fmt: skip
    assert instruments_url(Venue.BYBIT_LINEAR, "https://api.bybit.com", cursor="a=b%") == (
        "https://api.bybit.com/v5/market/instruments-info?category=linear&limit=1000&cursor=a%3Db%25")  # fmt: skip
    assert instruments_url(Venue.BYBIT_SPOT, "https://api.bybit.com") == (
        "https://api.bybit.com/v5/market/instruments-info?category=spot")  # fmt: skip
    assert time_url(Venue.BINANCE_USDM, "https://fapi.binance.com") == "https://fapi.binance.com/fapi/v1/time"
    assert time_url(Venue.BYBIT_SPOT, "https://api.bybit.com") == "https://api.bybit.com/v5/market/time"
