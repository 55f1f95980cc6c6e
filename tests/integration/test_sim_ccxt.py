"""ccxt (4.5.90, async and pro) against the loopback exchange: a third-party client that cannot tell.

Pointing ccxt at the sim: start it (``python -m bot sim --print-urls`` prints the URLs, or use
``LoopbackExchange`` in-process) and override the API roots ccxt builds its requests from::

    ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})      # spot only: the sim
    ex.urls["api"]["public"] = "http://127.0.0.1:PORT/api/v3"                  # serves no sapi/dapi
    ex.urls["api"]["ws"]["spot"] = "ws://127.0.0.1:PORT/ws"                    # ccxt.pro only

    ex = ccxt.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}}})
    ex.urls["api"]["fapiPublic"] = "http://127.0.0.1:PORT/fapi/v1"
    ex.urls["api"]["ws"]["future"] = "ws://127.0.0.1:PORT/ws"                  # ccxt.pro only

    ex = ccxt.bybit({"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    for key in ("spot", "futures", "v2", "public", "private"):
        ex.urls["api"][key] = "http://127.0.0.1:PORT"
    ex.urls["api"]["ws"]["public"]["linear"] = "ws://127.0.0.1:PORT/v5/public/linear"   # ccxt.pro only

(``inverse``/``option`` market types may stay in ``fetchMarkets``: the sim answers them with empty lists.)
The sim's clock and REST data follow the recording, so ``fetch_time`` returns the recording's dates
and ``fetch_ohlcv`` the CSV candles of other dates (see ``bot.sim.klines``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from bot.events import Venue
from bot.sim import LoopbackExchange
from tests.integration.conftest import SimFactory

pytestmark = pytest.mark.integration

SPOT, USDM, BY_SPOT, BY_LINEAR = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR


def point_binance(ex: Any, sim: LoopbackExchange) -> Any:
    ex.urls["api"]["public"] = f"{sim.urls[SPOT].rest_url}/api/v3"
    if "ws" in ex.urls["api"]:
        ex.urls["api"]["ws"]["spot"] = f"{sim.urls[SPOT].ws_url}/ws"
    return ex


def point_binanceusdm(ex: Any, sim: LoopbackExchange) -> Any:
    for key, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3")):
        ex.urls["api"][key] = f"{sim.urls[USDM].rest_url}/fapi/{version}"
    if "ws" in ex.urls["api"]:
        for key in ("future", "linear"):
            ex.urls["api"]["ws"][key] = f"{sim.urls[USDM].ws_url}/ws"
    return ex


def point_bybit(ex: Any, sim: LoopbackExchange) -> Any:
    for key in ("spot", "futures", "v2", "public", "private"):
        ex.urls["api"][key] = sim.urls[BY_LINEAR].rest_url
    if "ws" in ex.urls["api"]:
        ex.urls["api"]["ws"]["public"]["spot"] = sim.urls[BY_SPOT].ws_url
        ex.urls["api"]["ws"]["public"]["linear"] = sim.urls[BY_LINEAR].ws_url
    return ex


@asynccontextmanager
async def closing(ex: Any) -> AsyncIterator[Any]:
    try:
        yield ex
    finally:
        await ex.close()


async def test_ccxt_binance_spot_loads_markets_and_fetches_book_candles_and_time(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        await sim.wait_position(SPOT, 0.2)
        ex = point_binance(ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}}}), sim)
        async with closing(ex):
            markets = await ex.load_markets()
            book = await ex.fetch_order_book("BTC/USDT", limit=10)
            ref = sim.reference_book(SPOT, "BTCUSDT", 10)
            candles = await ex.fetch_ohlcv("BTC/USDT", "1m", since=1672531200000, limit=3)
            server_ms = await ex.fetch_time()
    btc = markets["BTC/USDT"]
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 1e-05)
    assert (btc["limits"]["amount"]["min"], btc["limits"]["cost"]["min"]) == (1e-05, 5.0)
    assert ref is not None
    assert book["nonce"] <= ref.update_id
    assert len(book["bids"]) == 10
    assert book["bids"][0][0] < book["asks"][0][0]
    assert 61000 < book["bids"][0][0] < 62500  # BTC on 2024-08-08
    # BTCUSDT_1m.csv: 2023-01-01 00:00..00:02
    assert candles == [
        [1672531200000, 16541.77, 16544.76, 16538.45, 16543.67, 83.08143],
        [1672531260000, 16543.04, 16544.41, 16538.48, 16539.31, 80.453],
        [1672531320000, 16539.31, 16541.17, 16534.52, 16536.43, 62.90197],
    ]
    assert abs(server_ms - sim.clock_ms(SPOT)) < 5000


async def test_ccxt_binanceusdm_loads_linear_markets_and_fetches_book_and_time_over_fapi(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        await sim.wait_position(USDM, 0.2)
        ex = point_binanceusdm(ccxt_async.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}}}), sim)
        async with closing(ex):
            markets = await ex.load_markets()
            book = await ex.fetch_order_book("BTC/USDT:USDT", limit=5)
            server_ms = await ex.fetch_time()
    btc = markets["BTC/USDT:USDT"]
    assert btc["swap"]
    assert btc["linear"]
    assert btc["settle"] == "USDT"
    assert (btc["precision"]["price"], btc["precision"]["amount"], btc["limits"]["cost"]["min"]) == (0.1, 0.001, 100.0)
    assert len(book["asks"]) == 5
    assert book["nonce"] > 5123107852948
    assert abs(server_ms - sim.clock_ms(USDM)) < 5000


async def test_ccxt_bybit_loads_spot_and_linear_markets_and_fetches_book_candles_and_time(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        await sim.wait_position(BY_LINEAR, 0.3)
        ex = point_bybit(ccxt_async.bybit(), sim)  # default market types: inverse and option answered empty
        async with closing(ex):
            markets = await ex.load_markets()
            book = await ex.fetch_order_book("ETH/USDT:USDT", limit=5)
            candles = await ex.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=2)
            server_ms = await ex.fetch_time()
    assert len(markets) == 800 + 557  # the recorded instruments-info responses
    assert markets["BTC/USDT:USDT"]["precision"]["price"] == 0.1
    assert markets["BTC/USDT"]["precision"]["amount"] == 1e-06
    assert len(book["bids"]) == 5
    assert 1900 < book["bids"][0][0] < book["asks"][0][0] < 1950
    # BTCUSDT_60m.csv ends with these two bars (2025-06-29 15:00 and 16:00 UTC), oldest first in ccxt
    assert candles == [
        [1751209200000, 107884.1, 107976.3, 107602.0, 107693.5, 1903.465],
        [1751212800000, 107693.5, 107738.7, 107401.0, 107457.9, 1591.5],
    ]
    assert abs(server_ms - sim.clock_ms(BY_LINEAR)) < 5000


async def _watch_until_done(ex: Any, symbol: str, sim: LoopbackExchange, venue: Venue) -> int:
    updates = 0
    while sim.position(venue)[1] < sim.position(venue)[2]:
        try:
            await asyncio.wait_for(ex.watch_order_book(symbol), 2)
            updates += 1
        except TimeoutError:
            break
    await asyncio.sleep(0.3)  # let the last messages in
    return updates


async def test_ccxt_pro_binance_watch_order_book_ends_with_the_reference_book(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        ex = point_binance(ccxt_pro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}}), sim)
        async with closing(ex):
            updates = await _watch_until_done(ex, "BTC/USDT", sim, SPOT)
            book = ex.orderbooks["BTC/USDT"]
            ref = sim.reference_book(SPOT, "BTCUSDT", 20)
            top = (book["bids"][:20], book["asks"][:20])
    assert updates > 20
    assert ref is not None
    assert book["nonce"] == ref.update_id
    assert top == ([list(level) for level in ref.bids], [list(level) for level in ref.asks])


async def test_ccxt_pro_bybit_watch_order_book_ends_with_the_reference_book(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        ex = point_bybit(ccxt_pro.bybit({"options": {"fetchMarkets": {"types": ["linear"]}}}), sim)
        async with closing(ex):
            updates = await _watch_until_done(ex, "BTC/USDT:USDT", sim, BY_LINEAR)
            book = ex.orderbooks["BTC/USDT:USDT"]
            ref = sim.reference_book(BY_LINEAR, "BTCUSDT", 50)
            top = (book["bids"][:50], book["asks"][:50])
    assert updates > 20
    assert ref is not None
    assert len(book["bids"]) == 50  # ccxt asks for orderbook.50: the sim derives it from the 200 book
    assert top == ([list(level) for level in ref.bids], [list(level) for level in ref.asks])
    assert sim.stats["bybit_linear"]["items_replayed"] == sim.position(BY_LINEAR)[2]
