"""ccxt.pro (4.5.90) on the loopback exchange's Binance user-data streams (``bot.sim.userdata_binance``).

One sim for the module (speed 1, the short recording, looping). ccxt is pointed only at the sim: every REST
root (``_all_to``) and every websocket root under ``urls['api']['ws']`` (the WebSocket API's too). Spot
watches through the WebSocket API (``userDataStream.subscribe.signature``), USD-M through a listenKey on
``/private/ws``; what the streams report is checked against REST (``fetch_order``, ``fetch_my_trades``,
``fetch_balance``), and the refusals against the venue's codes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.pro as ccxt_pro
import orjson
import pytest
import pytest_asyncio

from bot.events import Venue
from bot.sim import LoopbackExchange
from bot.sim.userdata_binance import BinanceUserData
from tests.integration.test_sim_ccxt import closing
from tests.integration.test_sim_private import OPTS, _all_to, _signed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

KEY, SECRET = "test-key", "test-secret"
SPOT, USDM = Venue.BINANCE_SPOT, Venue.BINANCE_USDM
SPOT_WS = ("spot", "margin", "stock")  # urls['api']['ws'] entries served by the spot host; the rest by USD-M


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim(sim_recording_short: Path, sim_klines_dir: Path) -> AsyncIterator[LoopbackExchange]:
    async with LoopbackExchange(sim_recording_short, speed=1, klines_dir=sim_klines_dir, api_key=KEY,
                                api_secret=SECRET) as s:  # fmt: skip
        await s.wait_position(SPOT, 0.05)
        await s.wait_position(USDM, 0.05)
        yield s


def _ws_to(ws: dict[str, Any], sim: LoopbackExchange) -> None:
    """Every websocket root ccxt knows pointed at the sim (its path kept)."""
    for key, url in list(ws.items()):
        if isinstance(url, dict):
            for sub, u in list(url.items()):
                url[sub] = sim.urls[SPOT if sub == "spot" else USDM].ws_url + "/" + u.split("/", 3)[3]
        elif isinstance(url, str):
            ws[key] = sim.urls[SPOT if key in SPOT_WS else USDM].ws_url + "/" + url.split("/", 3)[3]


def pro_spot(sim: LoopbackExchange, secret: str = SECRET) -> Any:
    ex = ccxt_pro.binance({"apiKey": KEY, "secret": secret, "options": {"fetchMarkets": {"types": ["spot"]}, **OPTS}})
    _all_to(ex, sim.urls[SPOT].rest_url)
    _ws_to(ex.urls["api"]["ws"], sim)
    return ex


def pro_usdm(sim: LoopbackExchange) -> Any:
    ex = ccxt_pro.binanceusdm({"apiKey": KEY, "secret": SECRET,
                               "options": {"fetchMarkets": {"types": ["linear"]}, **OPTS}})  # fmt: skip
    _all_to(ex, sim.urls[USDM].rest_url)
    _ws_to(ex.urls["api"]["ws"], sim)
    return ex


async def test_every_root_points_at_the_sim(sim: LoopbackExchange) -> None:
    for ex in (pro_spot(sim), pro_usdm(sim)):
        roots = [u for u in ex.urls["api"].values() if isinstance(u, str)]
        ws = ex.urls["api"]["ws"]
        roots += [u for v in ws.values() for u in (v.values() if isinstance(v, dict) else [v])]
        assert roots
        assert all(u.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")) for u in roots), roots


async def _until(pred: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _collect(watch: Callable[[], Awaitable[list[dict[str, Any]]]], out: list[dict[str, Any]]) -> asyncio.Task[None]:
    async def run() -> None:
        while True:
            out.extend(dict(x) for x in await watch())

    return asyncio.create_task(run())


async def _orders_trades_balance(
    ex: Any, symbol: str, ready: Callable[[], Awaitable[None]], account: str, asset: str, field: str
) -> dict[str, Any]:
    """A far limit (seen open, then cancelled) and a market fill, watched; returns what REST says after, once
    the balance the stream gave ccxt (``ex.balance[account]``) shows REST's ``asset`` ``field``."""
    await ex.load_markets()
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    tasks = [_collect(lambda: ex.watch_orders(symbol), orders), _collect(lambda: ex.watch_my_trades(symbol), trades)]
    try:
        await ready()

        def seen(oid: str, status: str) -> bool:
            return any(o["id"] == oid and o["status"] == status for o in orders)

        book = await ex.fetch_order_book(symbol, limit=5)
        far = float(ex.price_to_precision(symbol, book["bids"][0][0] * 0.9))
        limit = await ex.create_order(symbol, "limit", "buy", 0.01, far, {"newClientOrderId": f"far-{ex.id}"})
        await _until(lambda: seen(limit["id"], "open"), "the limit order open on the stream")
        opened = next(o for o in orders if o["id"] == limit["id"])
        assert (opened["clientOrderId"], opened["price"], opened["amount"]) == (f"far-{ex.id}", far, 0.01)
        await ex.cancel_order(limit["id"], symbol)
        await _until(lambda: seen(limit["id"], "canceled"), "the cancel on the stream")
        balance = asyncio.create_task(ex.watch_balance())
        await asyncio.sleep(0)
        mkt = await ex.create_order(symbol, "market", "buy", 0.01)
        await _until(lambda: seen(mkt["id"], "closed"), "the market order filled on the stream")
        await _until(lambda: any(t["order"] == mkt["id"] for t in trades), "the fill on the stream")
        await asyncio.wait_for(balance, 5)  # a balance event came
        rest_balance = await ex.fetch_balance()
        await _until(lambda: (ex.balance.get(account) or {}).get(asset, {}).get(field) == rest_balance[asset][field],
                     "the balance after the fill on the stream")  # fmt: skip
        return {"limit": limit, "mkt": mkt, "orders": orders, "trades": trades, "ws_balance": ex.balance[account],
                "rest_order": await ex.fetch_order(mkt["id"], symbol), "rest_trades": await ex.fetch_my_trades(symbol),
                "rest_cancelled": await ex.fetch_order(limit["id"], symbol), "rest_balance": rest_balance}  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _check_fill(r: dict[str, Any]) -> None:
    assert r["rest_cancelled"]["status"] == "canceled"
    ws_fills = [t for t in r["trades"] if t["order"] == r["mkt"]["id"]]
    rest_fills = [t for t in r["rest_trades"] if t["order"] == r["mkt"]["id"]]
    assert ws_fills
    assert [t["id"] for t in ws_fills] == [t["id"] for t in rest_fills]
    for w, rest in zip(ws_fills, rest_fills, strict=True):
        assert (w["price"], w["amount"], w["side"], w["takerOrMaker"]) == \
            (rest["price"], rest["amount"], "buy", "taker")  # fmt: skip
        assert w["fee"]["cost"] == pytest.approx(rest["fee"]["cost"])
    closed = [o for o in r["orders"] if o["id"] == r["mkt"]["id"] and o["status"] == "closed"][-1]
    assert (r["rest_order"]["status"], r["rest_order"]["filled"]) == ("closed", 0.01)
    assert closed["filled"] == 0.01
    assert closed["average"] == pytest.approx(r["rest_order"]["average"])


async def test_spot_watch_orders_trades_and_balance_match_rest(sim: LoopbackExchange) -> None:
    async with closing(pro_spot(sim)) as ex:

        async def ready() -> None:  # the WebSocket API subscription is confirmed before anything trades
            await ex.authenticate({"type": "spot"})

        r = await _orders_trades_balance(ex, "BTC/USDT", ready, "spot", "BTC", "free")
    _check_fill(r)
    # outboundAccountPosition after the fill: BTC and USDT as REST has them
    assert r["ws_balance"]["BTC"]["free"] == r["rest_balance"]["BTC"]["free"] > 0
    assert r["ws_balance"]["USDT"]["free"] == pytest.approx(r["rest_balance"]["USDT"]["free"])
    assert r["ws_balance"]["USDT"]["free"] < 10_000


async def test_usdm_watch_orders_trades_and_balance_match_rest(sim: LoopbackExchange) -> None:
    async with closing(pro_usdm(sim)) as ex:

        async def ready() -> None:  # the listenKey stream is connected before anything trades
            await _until(lambda: any(c.request.path == "/private/ws" for c in sim.hubs[USDM].conns), "the stream")

        r = await _orders_trades_balance(ex, "BTC/USDT:USDT", ready, "linear", "USDT", "total")
        positions = await ex.fetch_positions(["BTC/USDT:USDT"])
    _check_fill(r)
    # ACCOUNT_UPDATE after the fill: the wallet after the fee, as REST has it
    assert r["ws_balance"]["USDT"]["total"] == pytest.approx(r["rest_balance"]["USDT"]["total"])
    assert r["ws_balance"]["USDT"]["total"] < 10_000
    assert positions[0]["contracts"] == 0.01


async def _ws_api(sim: LoopbackExchange, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{sim.urls[SPOT].ws_url}/ws-api/v3") as ws:
        out = []
        for f in frames:
            await ws.send_str(orjson.dumps(f).decode())
            out.append(orjson.loads((await ws.receive(timeout=5)).data))
        await ws.ping(b"hi")
        return out


def _sub(sim: LoopbackExchange, rid: str, *, key: str = KEY, secret: str = SECRET, age_ms: int = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"apiKey": key, "timestamp": sim.clock_ms(SPOT) - age_ms}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    params["signature"] = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return {"id": rid, "method": "userDataStream.subscribe.signature", "params": params}


async def test_spot_ws_api_answers_and_refuses_with_the_venue_codes(sim: LoopbackExchange) -> None:
    got = await _ws_api(sim, [
        _sub(sim, "a", key="wrong-key"), _sub(sim, "b", secret="wrong-secret"), _sub(sim, "c", age_ms=60_000),
        {"id": "d", "method": "userDataStream.subscribe.signature", "params": {"apiKey": KEY}},
        _sub(sim, "e"), _sub(sim, "f"), {"id": 7, "method": "session.subscriptions"}, {"id": 8, "method": "ping"},
        {"id": 9, "method": "userDataStream.unsubscribe"}, {"id": 10, "method": "session.subscriptions"},
    ])  # fmt: skip
    codes = [(g["id"], g["status"], g.get("error", {}).get("code")) for g in got]
    assert codes[:6] == [("a", 401, -2015), ("b", 400, -1022), ("c", 400, -1021), ("d", 400, -1102),
                         ("e", 200, None), ("f", 200, None)]  # fmt: skip
    assert got[4]["result"] == got[5]["result"] == {"subscriptionId": 0}  # one subscription per account
    assert [g["result"] for g in got[6:]] == [[{"subscriptionId": 0}], {}, {}, []]


async def test_ccxt_spot_with_a_wrong_secret_is_refused(sim: LoopbackExchange) -> None:
    async with closing(pro_spot(sim, secret="wrong-secret")) as ex:
        await ex.load_markets()
        with pytest.raises(KeyError) as refused:
            await ex.watch_orders("BTC/USDT")
    # ccxt 4.5.90 raises KeyError('spot') from its own clean-up (handle_ws_error has already dropped the
    # subscription); the venue's refusal is the exception it was handling
    chain: list[BaseException] = []
    e: BaseException | None = refused.value
    while e is not None:
        chain.append(e)
        e = e.__context__
    assert any(isinstance(x, ccxt_pro.AuthenticationError) and "-1022" in str(x) for x in chain), chain


async def test_usdm_listen_keys_are_refused_as_the_venue_does(sim: LoopbackExchange) -> None:
    base = sim.urls[USDM].rest_url + "/fapi/v1/listenKey"
    async with aiohttp.ClientSession() as http:
        got = []
        for method, headers in (("POST", {"X-MBX-APIKEY": "wrong-key"}), ("POST", {})):
            async with http.request(method, base, headers=headers) as r:
                got.append((r.status, (await r.json())["code"]))
        assert got == [(401, -2015), (401, -2014)]
        async with http.post(base, headers={"X-MBX-APIKEY": KEY}) as r:
            key = (await r.json())["listenKey"]
        async with http.put(base, headers={"X-MBX-APIKEY": KEY}) as r:
            assert (await r.json()) == {"listenKey": key}
        async with http.ws_connect(f"{sim.urls[USDM].ws_url}/ws/{key}") as ws:  # the legacy path, private
            async with http.delete(base, headers={"X-MBX-APIKEY": KEY}) as r:
                assert (r.status, await r.json()) == (200, {})
            closed = await ws.receive(timeout=5)
            assert closed.type == aiohttp.WSMsgType.CLOSE
        async with http.put(base, headers={"X-MBX-APIKEY": KEY}) as r:
            assert (r.status, (await r.json())["code"]) == (400, -1125)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{sim.urls[USDM].ws_url}/private/ws?listenKey={key}")
        assert refused.value.status == 400


async def test_spot_legacy_listen_key_stream_pushes_bare_events(sim: LoopbackExchange) -> None:
    rest = sim.urls[SPOT].rest_url
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rest}/api/v3/userDataStream", headers={"X-MBX-APIKEY": KEY}) as r:
            key = (await r.json())["listenKey"]
        async with http.ws_connect(f"{sim.urls[SPOT].ws_url}/ws/{key}") as ws:
            book = sim.reference_book(SPOT, "BTCUSDT", 1)
            assert book is not None
            params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
                      "price": f"{book.bids[0][0] * 0.9:.2f}", "timestamp": sim.clock_ms(SPOT)}  # fmt: skip
            async with http.post(f"{rest}/api/v3/order?{_signed(params, SECRET)}", headers={"X-MBX-APIKEY": KEY}) as r:
                order = await r.json()
            first = orjson.loads((await ws.receive(timeout=5)).data)
            second = orjson.loads((await ws.receive(timeout=5)).data)
        async with http.delete(f"{rest}/api/v3/userDataStream?listenKey={key}", headers={"X-MBX-APIKEY": KEY}) as r:
            assert r.status == 200
    assert (first["e"], first["x"], first["X"], first["i"], first["C"]) == \
        ("executionReport", "NEW", "NEW", order["orderId"], "")  # fmt: skip
    assert set(first) >= set("eEscSofqpPFgCxXrilzLnNTtIwmMOZYQWV")
    assert second["e"] == "outboundAccountPosition"
    assert {b["a"]: b["l"] for b in second["B"]}["USDT"] == f"{float(order['price']) * 0.01:.8f}"


def _get(sim: LoopbackExchange, venue: Venue, path: str, params: dict[str, Any]) -> Awaitable[tuple[int, Any]]:
    async def run() -> tuple[int, Any]:
        q = _signed({**params, "timestamp": sim.clock_ms(venue)}, SECRET)
        async with aiohttp.ClientSession() as http, http.get(
            f"{sim.urls[venue].rest_url}{path}?{q}", headers={"X-MBX-APIKEY": KEY}
        ) as r:
            return r.status, await r.json()

    return run()


async def test_rest_fills_take_the_venue_parameters(sim: LoopbackExchange) -> None:
    for venue, path in ((SPOT, "/api/v3/myTrades"), (USDM, "/fapi/v1/userTrades")):
        order = "/api/v3/order" if venue is SPOT else "/fapi/v1/order"
        async with aiohttp.ClientSession() as http:
            for side in ("BUY", "SELL"):
                params = {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": "0.01",
                          "timestamp": sim.clock_ms(venue)}  # fmt: skip
                async with http.post(f"{sim.urls[venue].rest_url}{order}?{_signed(params, SECRET)}",
                                     headers={"X-MBX-APIKEY": KEY}) as r:  # fmt: skip
                    assert r.status == 200, await r.text()
        status, rows = await _get(sim, venue, path, {"symbol": "BTCUSDT"})
        assert status == 200
        assert len(rows) >= 2, (venue, rows)
        first = rows[0]["id"]
        assert [r["id"] for r in (await _get(sim, venue, path, {"symbol": "BTCUSDT", "fromId": first + 1}))[1]] \
            == [r["id"] for r in rows if r["id"] > first]  # fmt: skip
        assert (await _get(sim, venue, path, {"symbol": "BTCUSDT", "limit": 1}))[1] == rows[-1:]
        by_order = (await _get(sim, venue, path, {"symbol": "BTCUSDT", "orderId": rows[0]["orderId"]}))[1]
        assert {r["orderId"] for r in by_order} == {rows[0]["orderId"]}
        now = sim.clock_ms(venue)
        bad = (await _get(sim, venue, path, {"symbol": "BTCUSDT", "fromId": first, "startTime": now - 1000}))
        assert bad == (400, {"code": -1128, "msg": "Combination of optional parameters invalid."})
        assert (await _get(sim, venue, path, {}))[1]["code"] == -1102
    assert set(rows[0]) == {"buyer", "commission", "commissionAsset", "id", "maker", "orderId", "price", "qty",
                            "quoteQty", "realizedPnl", "side", "positionSide", "symbol", "time"}  # fmt: skip


async def test_usdm_private_stream_pushes_the_venue_fields(sim: LoopbackExchange) -> None:
    rest, headers = sim.urls[USDM].rest_url, {"X-MBX-APIKEY": KEY}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rest}/fapi/v1/listenKey", headers=headers) as r:
            key = (await r.json())["listenKey"]
        async with http.ws_connect(f"{sim.urls[USDM].ws_url}/private/stream?listenKey={key}") as ws:
            params = {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.01",
                      "timestamp": sim.clock_ms(USDM)}  # fmt: skip
            async with http.post(f"{rest}/fapi/v1/order?{_signed(params, SECRET)}", headers=headers) as r:
                order = await r.json()
            frames = [orjson.loads((await ws.receive(timeout=5)).data) for _ in range(3)]
    assert {f["stream"] for f in frames} == {key}
    new, fill, account = (f["data"] for f in frames)
    assert [(e["e"], e["o"]["x"], e["o"]["X"]) for e in (new, fill)] == \
        [("ORDER_TRADE_UPDATE", "NEW", "NEW"), ("ORDER_TRADE_UPDATE", "TRADE", "FILLED")]  # fmt: skip
    fields = {"s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "N", "n", "T", "t", "b",
              "a", "m", "R", "wt", "ot", "ps", "cp", "rp", "pP", "si", "ss", "V", "pm", "gtd"}  # fmt: skip
    assert set(fill["o"]) == fields
    assert set(new["o"]) == fields - {"N", "n"}  # no commission pushed without a fill
    assert (fill["o"]["i"], fill["o"]["S"]) == (order["orderId"], "SELL")
    trades = (await _get(sim, USDM, "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "orderId": order["orderId"]}))[1]
    assert [t["id"] for t in trades] == [fill["o"]["t"]]
    assert trades[0]["realizedPnl"] == fill["o"]["rp"]
    _, risk = await _get(sim, USDM, "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
    assert Decimal(account["a"]["P"][0]["pa"]) == Decimal(risk[0]["positionAmt"])
    assert (account["e"], account["a"]["m"]) == ("ACCOUNT_UPDATE", "ORDER")
    assert set(account["a"]["P"][0]) == {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"}
    assert set(account["a"]["B"][0]) == {"a", "wb", "cw", "bc"}


async def test_usdm_listen_key_expires_with_the_venue_event(sim: LoopbackExchange) -> None:
    assert sim.account is not None
    owners = [getattr(fn, "__self__", None) for fn in sim.account.listeners]
    user = next(u for u in owners if isinstance(u, BinanceUserData) and u.p.venue is USDM)
    rest, headers = sim.urls[USDM].rest_url, {"X-MBX-APIKEY": KEY}
    user.key_life_s = 0.6
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{rest}/fapi/v1/listenKey", headers=headers) as r:
                key = (await r.json())["listenKey"]
            async with http.ws_connect(f"{sim.urls[USDM].ws_url}/private/ws/{key}") as ws:
                expired = orjson.loads((await ws.receive(timeout=5)).data)
            async with http.put(f"{rest}/fapi/v1/listenKey", headers=headers) as r:
                assert (r.status, (await r.json())["code"]) == (400, -1125)
    finally:
        user.key_life_s = 3600.0
    assert (expired["e"], expired["listenKey"], type(expired["E"])) == ("listenKeyExpired", key, int)


async def test_no_handler_errors(sim: LoopbackExchange) -> None:
    for venue in (SPOT, USDM):
        assert sim.stats[venue.value].get("handler_errors", 0) == 0
