"""ccxt (4.5.90, async and pro) with keys against the loopback exchange's Bybit private side.

One sim for the module (speed 1, the short recording, looping), ``bot.sim.private_bybit`` (signed REST)
and ``bot.sim.private_bybit_ws`` (``/v5/private``). Every URL ccxt holds is pointed at the sim (path
kept), so nothing can reach the venue. The UNIFIED wallet is the sum of the sim's two Bybit ledgers:
6000 USDT spot + 4000 USDT linear show as 10 000 USDT. ccxt signs its first request (the currencies) before
it takes the sim's clock offset, so ``load`` takes the offset first; nothing else is switched off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import orjson
import pytest
import pytest_asyncio

from bot.events import Venue
from bot.sim import LoopbackExchange
from tests.integration.test_sim_ccxt import closing

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

KEY, SECRET = "bybit-test-key", "bybit-test-secret"
SPOT, LINEAR = Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR
BALANCES = {SPOT: {"USDT": Decimal(6000)}, LINEAR: {"USDT": Decimal(4000)}}
# the sim's clock is the recording's: ccxt takes its offset once at load (speed 1 keeps it valid)
OPTS = {"adjustForTimeDifference": True, "fetchMarkets": {"types": ["spot", "linear"]}}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim(sim_recording_short: Path, sim_klines_dir: Path) -> AsyncIterator[LoopbackExchange]:
    async with LoopbackExchange(sim_recording_short, speed=1, klines_dir=sim_klines_dir, api_key=KEY,
                                api_secret=SECRET, balances=BALANCES) as s:  # fmt: skip
        await s.wait_position(SPOT, 0.05)
        await s.wait_position(LINEAR, 0.05)
        yield s


def _point(urls: dict[str, Any], http: str, ws: str) -> None:
    """Every URL in ``urls`` (nested) moved to the sim's host, its path kept."""
    for key, url in urls.items():
        if isinstance(url, dict):
            _point(url, http, ws)
        elif isinstance(url, str) and "://" in url:
            path = url.split("://", 1)[1].partition("/")[2]
            urls[key] = f"{ws if url.startswith('ws') else http}/{path}".rstrip("/")


def bybit(sim: LoopbackExchange, *, pro: bool = False, key: str = KEY, secret: str = SECRET) -> Any:
    cls = ccxt_pro.bybit if pro else ccxt_async.bybit
    ex = cls({"apiKey": key, "secret": secret, "options": OPTS})
    rest = sim.urls[LINEAR].rest_url
    _point(ex.urls["api"], rest, rest.replace("http://", "ws://", 1))
    return ex


async def load(ex: Any) -> Any:
    """``load_markets`` with the sim's clock: ccxt asks for the currencies (a signed call) before
    ``fetch_markets`` takes the time offset, so the offset is taken first here."""
    await ex.load_time_difference()
    await ex.load_markets()
    return ex


async def _round_trip(ex: Any, symbol: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Limit far from the touch (fetched, listed, cancelled), then a market buy that fills."""
    book = await ex.fetch_order_book(symbol, limit=5)
    far = float(ex.price_to_precision(symbol, book["bids"][0][0] * 0.9))
    order = await ex.create_order(symbol, "limit", "buy", 0.01, far, {"clientOrderId": f"cid-{symbol[:3]}-{far}"})
    got = await ex.fetch_order(order["id"], symbol, {"acknowledged": True})
    assert (got["status"], got["price"], got["amount"]) == ("open", far, 0.01)
    assert got["clientOrderId"] == order["clientOrderId"]
    assert [o["id"] for o in await ex.fetch_open_orders(symbol)] == [order["id"]]
    by_link = await ex.fetch_open_orders(symbol, params={"orderLinkId": order["clientOrderId"]})
    assert [o["id"] for o in by_link] == [order["id"]]
    cancelled = await ex.cancel_order(order["id"], symbol)
    assert cancelled["id"] == order["id"]
    assert (await ex.fetch_order(order["id"], symbol, {"acknowledged": True}))["status"] == "canceled"
    assert await ex.fetch_open_orders(symbol) == []
    mkt = await ex.create_order(symbol, "market", "buy", 0.01)
    done = await ex.fetch_order(mkt["id"], symbol, {"acknowledged": True})
    assert (done["status"], done["filled"], done["remaining"]) == ("closed", 0.01, 0)
    assert 0.99 * book["asks"][0][0] < done["average"] < 1.01 * book["asks"][0][0]
    trades = await ex.fetch_my_trades(symbol)
    assert {t["order"] for t in trades} == {mkt["id"]}
    assert sum(t["amount"] for t in trades) == pytest.approx(0.01)
    assert all(t["takerOrMaker"] == "taker" and t["fee"]["currency"] == "USDT" for t in trades)
    return done, trades[0]


async def test_ccxt_bybit_spot_and_linear_trade_on_the_sim(sim: LoopbackExchange) -> None:
    async with closing(bybit(sim)) as ex:
        await load(ex)
        assert (ex.markets["BTC/USDT"]["type"], ex.markets["BTC/USDT:USDT"]["type"]) == ("spot", "swap")
        bal0 = await ex.fetch_balance()
        assert (bal0["USDT"]["total"], bal0["USDT"]["free"]) == (10_000, 10_000)
        spot, _ = await _round_trip(ex, "BTC/USDT")
        linear, _ = await _round_trip(ex, "BTC/USDT:USDT")
        positions = await ex.fetch_positions(["BTC/USDT:USDT"])
        bal1 = await ex.fetch_balance()
        everything = await ex.fetch_positions()
    assert (positions[0]["contracts"], positions[0]["side"]) == (0.01, "long")
    assert positions[0]["entryPrice"] == pytest.approx(linear["average"])
    assert [p["symbol"] for p in everything] == ["BTC/USDT:USDT"]
    assert bal1["BTC"]["total"] == 0.01  # bought on spot; the spot fee is booked in USDT
    assert bal1["USDT"]["total"] < 10_000 - spot["cost"]


def _get(sim: LoopbackExchange, path: str, params: dict[str, Any], *, key: str = KEY, secret: str = SECRET,
         ts: int | None = None) -> tuple[str, dict[str, str]]:  # fmt: skip
    stamp = str(sim.clock_ms(LINEAR) if ts is None else ts)
    query = urlencode(params)
    sign = hmac.new(secret.encode(), f"{stamp}{key}5000{query}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": stamp, "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": sign}
    return f"{sim.urls[LINEAR].rest_url}{path}?{query}", headers


@pytest.mark.parametrize(
    ("mutate", "path", "params", "code"),
    [
        ("key", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}, 10003),
        ("secret", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}, 10004),
        ("stale", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}, 10002),
        ("", "/v5/order/realtime", {"category": "linear", "symbol": "NOPEUSDT"}, 10001),
        ("", "/v5/order/realtime", {"category": "spot", "symbol": "NOPEUSDT"}, 10001),
        ("", "/v5/order/realtime", {"category": "inverse", "symbol": "BTCUSD"}, 10001),
    ],
)
async def test_bybit_refuses_bad_requests_with_the_venue_codes(
    sim: LoopbackExchange, mutate: str, path: str, params: dict[str, Any], code: int
) -> None:
    url, headers = _get(sim, path, params, key="wrong-key" if mutate == "key" else KEY,
                        secret="wrong-secret" if mutate == "secret" else SECRET,
                        ts=sim.clock_ms(LINEAR) - 60_000 if mutate == "stale" else None)  # fmt: skip
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        body = await r.json()
    assert (r.status, body["retCode"]) == (200, code), body
    if mutate == "stale":
        assert body["retMsg"].startswith("invalid request, please check your server timestamp or recv_window param.")


async def test_ccxt_bybit_refusals_raise_the_right_exceptions(sim: LoopbackExchange) -> None:
    import ccxt

    async with closing(bybit(sim)) as ex:
        await load(ex)
        with pytest.raises(ccxt.OrderNotFound):  # 110001
            await ex.cancel_order("42", "BTC/USDT:USDT")
        with pytest.raises(ccxt.OrderNotFound):  # 170213
            await ex.cancel_order("42", "BTC/USDT")
        with pytest.raises(ccxt.InsufficientFunds):  # 170131
            await ex.create_order("BTC/USDT", "market", "buy", 100)
        with pytest.raises(ccxt.BadSymbol):  # an instrument the venue lists but the recording does not trade
            await ex.fetch_open_orders("ADA/USDT")
        await ex.create_order("ETH/USDT:USDT", "limit", "sell", 0.01, 1_000_000, {"clientOrderId": "dup-1"})
        with pytest.raises(ccxt.InvalidOrder):  # 110072
            await ex.create_order("ETH/USDT:USDT", "limit", "sell", 0.01, 1_000_000, {"clientOrderId": "dup-1"})
        assert len(await ex.cancel_all_orders("ETH/USDT:USDT")) == 1
        ex.options["timeDifference"] -= 60_000  # a clock a minute ahead
        with pytest.raises(ccxt.InvalidNonce):  # 10002
            await ex.fetch_balance()
    for key, secret, code in (("wrong-key", SECRET, "10003"), (KEY, "wrong-secret", "10004")):
        async with closing(bybit(sim, key=key, secret=secret)) as bad:
            with pytest.raises(ccxt.AuthenticationError, match=f'"retCode":{code}'):  # already on load: currencies
                await load(bad)


async def _ws(sim: LoopbackExchange) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    return http, await http.ws_connect(sim.urls[LINEAR].rest_url.replace("http", "ws", 1) + "/v5/private")


def _auth(expires: int, key: str = KEY, secret: str = SECRET) -> dict[str, Any]:
    sig = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    return {"req_id": "a1", "op": "auth", "args": [key, expires, sig]}


async def test_private_stream_auth_subscribe_and_ping_are_answered_as_the_venue_does(sim: LoopbackExchange) -> None:
    http, ws = await _ws(sim)
    try:
        now = sim.clock_ms(LINEAR)
        await ws.send_json({"op": "subscribe", "args": ["order"]})
        refused = await ws.receive_json()
        for expires, key, secret, msg in ((now - 1000, KEY, SECRET, "Params Error"),
                                          (now + 10_000, KEY, "wrong", "Request not authorized"),
                                          (now + 10_000, "wrong", SECRET, "Request not authorized")):  # fmt: skip
            await ws.send_json(_auth(expires, key, secret))
            bad = await ws.receive_json()
            assert (bad["success"], bad["ret_msg"], bad["op"]) == (False, msg, "auth")
        await ws.send_json(_auth(now + 10_000))
        ok = await ws.receive_str()
        await ws.send_json({"op": "subscribe", "args": ["order.spot", "execution.linear", "position", "wallet"]})
        sub = await ws.receive_json()
        await ws.send_json({"req_id": "p1", "op": "ping"})
        pong = await ws.receive_json()
        body = orjson.dumps({"category": "spot", "symbol": "ETHUSDT", "side": "Buy", "orderType": "Market",
                             "qty": "20", "orderLinkId": "ws-quote-1"}).decode()  # 20 USDT of ETH  # fmt: skip
        stamp = str(sim.clock_ms(LINEAR))
        sign = hmac.new(SECRET.encode(), f"{stamp}{KEY}5000{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"X-BAPI-API-KEY": KEY, "X-BAPI-TIMESTAMP": stamp, "X-BAPI-RECV-WINDOW": "5000",
                   "X-BAPI-SIGN": sign, "Content-Type": "application/json"}  # fmt: skip
        async with http.post(f"{sim.urls[LINEAR].rest_url}/v5/order/create", data=body, headers=headers) as r:
            created = await r.json()
        pushed = [orjson.loads(await ws.receive_str())]
        while pushed[-1]["topic"] != "wallet":  # an order change per fill, then the wallet after it
            pushed.append(orjson.loads(await ws.receive_str()))
    finally:
        await ws.close()
        await http.close()
    assert (refused["success"], refused["ret_msg"], refused["op"]) == (False, "Request not authorized", "subscribe")
    assert list(orjson.loads(ok)) == ["req_id", "success", "ret_msg", "op", "conn_id"]
    assert ok.startswith('{"req_id":"a1","success":true,"ret_msg":"","op":"auth","conn_id":"')
    assert (sub["success"], sub["ret_msg"], sub["op"], "req_id" in sub) == (True, "", "subscribe", False)
    assert (pong["req_id"], pong["op"], list(pong)) == ("p1", "pong", ["req_id", "op", "args", "conn_id"])
    assert abs(int(pong["args"][0]) - sim.clock_ms(LINEAR)) < 5_000
    assert created["retCode"] == 0, created
    statuses = [m["data"][0]["orderStatus"] for m in pushed[:-1]]
    assert statuses[-1] == "Filled"
    assert statuses.count("New") <= 1  # the sim's NEW and ACCEPTED are one "New"
    assert all(list(m) == ["id", "topic", "creationTime", "data"] for m in pushed)
    assert [m["topic"] for m in pushed] == ["order.spot"] * len(statuses) + ["wallet"]
    order = pushed[-2]["data"][0]
    assert (order["orderId"], order["orderLinkId"]) == (created["result"]["orderId"], "ws-quote-1")
    assert (order["category"], order["orderStatus"], order["qty"], order["marketUnit"]) == (
        "spot", "Filled", "20", "quoteCoin")  # fmt: skip
    assert 19 < float(order["cumExecValue"]) <= 20
    assert "tpslMode" not in order  # ccxt tells spot from contract orders by it
    assert pushed[-1]["data"][0]["accountType"] == "UNIFIED"


async def _until(watch: Any, done: Any) -> list[Any]:
    """Await ``watch()`` again until ``done(result)`` (ccxt.pro returns its growing cache each time)."""
    while True:
        got = await asyncio.wait_for(watch(), 5)
        if done(got):
            return list(got)


async def _watched_fill(sim: LoopbackExchange, pro: Any, rest: Any, symbol: str, side: str) -> None:
    """watch_orders and watch_my_trades see a market order's fill with the ids REST reports."""
    requests = sim.stats["bybit_linear"].get("private_subscribe_requests", 0)
    orders = asyncio.ensure_future(pro.watch_orders(symbol))
    trades = asyncio.ensure_future(pro.watch_my_trades(symbol))
    deadline = time.monotonic() + 5
    while sim.stats["bybit_linear"].get("private_subscribe_requests", 0) < requests + 2:
        assert time.monotonic() < deadline, "ccxt.pro never subscribed"
        await asyncio.sleep(0.01)
    mkt = await rest.create_order(symbol, "market", side, 0.01)
    first_orders, first_trades = await asyncio.wait_for(asyncio.gather(orders, trades), 5)
    seen_orders = first_orders if first_orders[-1]["status"] == "closed" else await _until(
        lambda: pro.watch_orders(symbol), lambda os: os[-1]["status"] == "closed")  # fmt: skip
    seen_trades = first_trades if sum(t["amount"] for t in first_trades) >= 0.01 - 1e-12 else await _until(
        lambda: pro.watch_my_trades(symbol), lambda ts: sum(t["amount"] for t in ts) >= 0.01 - 1e-12)  # fmt: skip
    rest_trades = await rest.fetch_my_trades(symbol, params={"orderId": mkt["id"]})
    assert (seen_orders[-1]["id"], seen_orders[-1]["filled"], seen_orders[-1]["side"]) == (mkt["id"], 0.01, side)
    assert sorted((t["id"], t["order"], t["price"], t["amount"]) for t in seen_trades) == sorted(
        (t["id"], mkt["id"], t["price"], t["amount"]) for t in rest_trades)  # fmt: skip


async def test_ccxt_pro_bybit_watches_orders_and_my_trades_on_spot_and_linear(sim: LoopbackExchange) -> None:
    async with closing(bybit(sim, pro=True)) as pro, closing(bybit(sim)) as rest:
        await asyncio.gather(load(pro), load(rest))
        await _watched_fill(sim, pro, rest, "BTC/USDT", "sell")  # the 0.01 BTC bought above
        await _watched_fill(sim, pro, rest, "BTC/USDT:USDT", "buy")
    assert not any(v.get("handler_errors") for v in sim.stats.values())


async def test_private_stream_bug_closes_1011_and_is_counted_a_client_leaving_is_not(
    sim: LoopbackExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in the module: the others check that the sim they share counted no handler error."""
    from bot.sim.private_bybit_ws import BybitPrivateStream

    def broken(*_: Any) -> str:
        raise KeyError("a bug of ours")

    before = sim.stats["bybit_linear"].get("handler_errors_private_ws", 0)
    http, ws = await _ws(sim)  # a client that leaves: no error
    await ws.send_json({"op": "ping"})
    await ws.receive_json()
    await ws.close()
    await http.close()
    monkeypatch.setattr(BybitPrivateStream, "_op", broken)  # the request is answered "internal error" ...
    monkeypatch.setattr(BybitPrivateStream, "_ack", broken)  # ... unless answering it fails too: a bug
    http, ws = await _ws(sim)
    try:
        await ws.send_json({"op": "ping"})
        msg = await asyncio.wait_for(ws.receive(), 5)
    finally:
        await ws.close()
        await http.close()

    assert (msg.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 1011)
    assert sim.stats["bybit_linear"].get("handler_errors_private_ws", 0) == before + 1
