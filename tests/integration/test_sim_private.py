"""ccxt (4.5.90, async) with keys against the loopback exchange's private side (``bot.sim.private_*``).

One sim for the module (speed 1, the short recording, looping); ccxt pointed at it as in
``test_sim_ccxt.py`` plus the private API roots. Binance spot and USD-M: signed REST round trips and the
venue's refusals.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt_async
import pytest
import pytest_asyncio

from bot.events import Venue
from bot.sim import LoopbackExchange
from tests.integration.test_sim_ccxt import closing

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

KEY, SECRET = "test-key", "test-secret"
# no currencies or margin pairs (sapi, not served); ccxt takes the sim's clock offset once at load
OPTS = {"fetchCurrencies": False, "fetchMargins": False, "adjustForTimeDifference": True}
SPOT, USDM = Venue.BINANCE_SPOT, Venue.BINANCE_USDM


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim(sim_recording_short: Path, sim_klines_dir: Path) -> AsyncIterator[LoopbackExchange]:
    async with LoopbackExchange(sim_recording_short, speed=1, klines_dir=sim_klines_dir, api_key=KEY,
                                api_secret=SECRET) as s:  # fmt: skip
        # speed 1: the sim's clock runs as the wall clock does, so ccxt's time offset (taken once) holds
        await s.wait_position(SPOT, 0.05)
        await s.wait_position(USDM, 0.05)
        yield s


def _all_to(ex: Any, rest_url: str) -> None:
    """Every REST root ccxt knows pointed at the sim (its path kept), so nothing can reach a venue."""
    for key, url in list(ex.urls["api"].items()):
        if isinstance(url, str) and url.startswith("http"):
            ex.urls["api"][key] = rest_url + "/" + url.split("/", 3)[3]


def binance_spot(sim: LoopbackExchange, secret: str = SECRET) -> Any:
    ex = ccxt_async.binance({"apiKey": KEY, "secret": secret, "options": {"fetchMarkets": {"types": ["spot"]}, **OPTS}})
    _all_to(ex, sim.urls[SPOT].rest_url)
    for key in ("public", "private"):
        ex.urls["api"][key] = f"{sim.urls[SPOT].rest_url}/api/v3"
    return ex


def binance_usdm(sim: LoopbackExchange) -> Any:
    ex = ccxt_async.binanceusdm({"apiKey": KEY, "secret": SECRET,
                                 "options": {"fetchMarkets": {"types": ["linear"]}, **OPTS}})  # fmt: skip
    _all_to(ex, sim.urls[USDM].rest_url)
    for kind in ("Public", "Private"):
        for key, version in ((f"fapi{kind}", "v1"), (f"fapi{kind}V2", "v2"), (f"fapi{kind}V3", "v3")):
            ex.urls["api"][key] = f"{sim.urls[USDM].rest_url}/fapi/{version}"
    return ex


async def _round_trip(ex: Any, symbol: str, quote_free_key: str) -> None:
    await ex.load_markets()
    bal0 = await ex.fetch_balance()
    assert bal0["USDT"]["free"] == 10_000
    book = await ex.fetch_order_book(symbol, limit=5)
    far = ex.price_to_precision(symbol, book["bids"][0][0] * 0.9)
    order = await ex.create_order(symbol, "limit", "buy", 0.01, float(far), {"newClientOrderId": "cid-limit-1"})
    assert order["status"] == "open"
    got = await ex.fetch_order(order["id"], symbol)
    assert (got["status"], got["clientOrderId"], got["price"]) == ("open", "cid-limit-1", float(far))
    by_cid = await ex.fetch_order(None, symbol, {"origClientOrderId": "cid-limit-1"})
    assert by_cid["id"] == order["id"]
    opened = await ex.fetch_open_orders(symbol)
    assert [o["id"] for o in opened] == [order["id"]]
    cancelled = await ex.cancel_order(order["id"], symbol)
    assert cancelled["status"] == "canceled"
    assert await ex.fetch_open_orders(symbol) == []
    mkt = await ex.create_order(symbol, "market", "buy", 0.01)
    done = await ex.fetch_order(mkt["id"], symbol)
    assert done["status"] == "closed"
    assert done["filled"] == 0.01
    assert 0.9 * book["asks"][0][0] < done["average"] < 1.1 * book["asks"][0][0]
    bal1 = await ex.fetch_balance()
    assert bal1["USDT"]["total"] < 10_000
    return None


async def test_ccxt_binance_spot_trades_on_the_sim(sim: LoopbackExchange) -> None:
    async with closing(binance_spot(sim)) as ex:
        await _round_trip(ex, "BTC/USDT", "free")
        bal = await ex.fetch_balance()
    assert bal["BTC"]["total"] == 0.01
    assert sim.stats["binance_spot"]["signed_requests"] >= 8


async def test_ccxt_binance_usdm_trades_on_the_sim(sim: LoopbackExchange) -> None:
    async with closing(binance_usdm(sim)) as ex:
        await _round_trip(ex, "BTC/USDT:USDT", "free")
        positions = await ex.fetch_positions(["BTC/USDT:USDT"])
    assert positions[0]["contracts"] == 0.01
    assert positions[0]["side"] == "long"


def _signed(params: dict[str, Any], secret: str = SECRET) -> str:
    q = urlencode(params)
    return q + "&signature=" + hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("venue", "path", "mutate", "status", "code"),
    [
        (SPOT, "/api/v3/account", "secret", 400, -1022),
        (SPOT, "/api/v3/account", "key", 401, -2015),
        (SPOT, "/api/v3/account", "stale", 400, -1021),
        (SPOT, "/api/v3/openOrders", "symbol", 400, -1121),
        (SPOT, "/api/v3/order", "missing_order", 400, -2013),
        (USDM, "/fapi/v2/account", "secret", 400, -1022),
        (USDM, "/fapi/v2/account", "key", 401, -2015),
        (USDM, "/fapi/v2/account", "stale", 400, -1021),
        (USDM, "/fapi/v1/openOrders", "symbol", 400, -1121),
    ],
)
async def test_binance_refuses_bad_requests_with_the_venue_codes(
    sim: LoopbackExchange, venue: Venue, path: str, mutate: str, status: int, code: int
) -> None:
    now = sim.clock_ms(venue)
    params: dict[str, Any] = {"timestamp": now - 60_000 if mutate == "stale" else now, "recvWindow": 5000}
    if mutate == "symbol":
        params["symbol"] = "NOPEUSDT"
    if mutate == "missing_order":
        params.update(symbol="BTCUSDT", orderId=42)
    key = "wrong-key" if mutate == "key" else KEY
    query = _signed(params, "wrong-secret" if mutate == "secret" else SECRET)
    async with aiohttp.ClientSession() as http, http.get(
        f"{sim.urls[venue].rest_url}{path}?{query}", headers={"X-MBX-APIKEY": key}
    ) as r:
        body = await r.json()
    assert (r.status, body["code"]) == (status, code)


async def test_sim_config_takes_balances_and_refuses_negative_ones_and_unknown_keys() -> None:
    from pydantic import ValidationError

    from bot.config import SimConfig

    cfg = SimConfig.model_validate({"balances": {"binance_spot": {"USDT": "500", "BTC": "0.1"}}})
    assert cfg.balances[SPOT] == {"USDT": Decimal(500), "BTC": Decimal("0.1")}
    assert "sim-secret" not in repr(cfg)
    with pytest.raises(ValidationError, match=">= 0"):
        SimConfig.model_validate({"balances": {"binance_spot": {"USDT": "-1"}}})
    with pytest.raises(ValidationError):
        SimConfig.model_validate({"balance": {}})
