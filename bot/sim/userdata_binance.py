"""Binance user-data streams of the loopback exchange (spot WebSocket API, USD-M and spot listenKeys).

USD-M: ``POST/PUT/DELETE /fapi/v1/listenKey`` with the ``X-MBX-APIKEY`` header only (no signature, as the
venue: a missing key -2014, a wrong one -2015, both HTTP 401). POST returns the account's active key
(extending it) or a new one, PUT extends it (``{"listenKey": ...}``; none active: -1125 "This listenKey
does not exist."), DELETE closes its streams. A key lives 60 minutes after the last POST/PUT, wall-clock
time (``key_life_s``: a client's keep-alive timer is wall-clock, whatever the replay speed); then its
streams get ``{"e":"listenKeyExpired","E":...,"listenKey":...}`` and nothing more.
Streams: ``/private/ws?listenKey=K`` (what ccxt 4.5.90's ``get_private_ws_url`` builds from
``urls['api']['ws']['linear']``), ``/private/ws/K``, ``/private/stream?listenKey=K`` (``{"stream","data"}``
wrapper), and the legacy ``/ws/K``, ``/stream?streams=K`` (a live key among the names of those public
routes makes the connection private; other names stay public subscriptions). A ``/private`` path whose key
is not live is refused at the handshake: HTTP 400 ``{"code":-1125,"msg":"This listenKey does not exist."}``
(the venue: "<listenKey> must be a valid listenKey when you establish a connection"); the legacy paths treat
an unknown key as a silent stream name, as the public routes do.

Spot: the WebSocket API at ``/ws-api/v3`` (``urls['api']['ws']['ws-api']['spot']``). Requests
``{"id","method","params"}`` are answered ``{"id","status","result"}`` or ``{"id","status","error":{code,
msg}}`` with HTTP's status codes (as the venue's "Response format" page says): ``ping``, ``time``,
``session.status``, ``session.subscriptions``, ``userDataStream.unsubscribe`` (optional ``subscriptionId``)
and ``userDataStream.subscribe.signature`` with ``apiKey``, ``timestamp``, optional ``recvWindow`` and
``signature`` = HMAC-SHA256 hex of the other params sorted by name as ``k=v&...`` (ccxt's ``sign_params``:
keysort + rawencode); refusals -1102 (missing), 401 -2015 (key), 400 -1022 (signature), 400 -1021
(timestamp). The result is ``{"subscriptionId": N}`` (per connection, from 0; one per account and
connection: a repeat answers the active id); then events arrive as ``{"subscriptionId":N,"event":{...}}``.
The retired ``POST/PUT/DELETE /api/v3/userDataStream`` (PUT/DELETE need ``listenKey``) and ``/ws/<key>``
still work for older clients, with bare events.

Checked against the venues' pages (spot "User Data Stream requests", "Response format", "WebSocket API
general information", ``user-data-stream.md`` and ``errors.md`` of binance/binance-spot-api-docs; USD-M
"User Data Streams" connect notes, "Important WebSocket Change Notice", "error-code"): the listen-key rules
above, -1125, the subscribe request and answer, the one-subscription-per-account rule, the event envelope,
the 20 s pings of the WebSocket API, and the error codes and messages. Not found there, so chosen: an unknown
method answers 400 -1020 "This operation is not supported.", malformed JSON 400 -1135 "Invalid JSON
Request", a repeated subscribe the active id, a DELETEd key's sockets a 1000 close, the handshake refusal of
a dead key on ``/private`` (status and body).

Every private socket is a ``bot.sim.ws.Conn`` of the venue's hub (so the sim's stop closes it) with the
venue's ping frames (``binance.ping_loop``; the WebSocket API pings as spot streams do, 20 s) and answers
ping frames. Events: ``bot.sim.binance_events``. While a private socket is open, resting orders are matched
after every replayed item of their symbol, so fills are pushed without the client polling REST.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

from bot.orders import Fill
from bot.sim import binance
from bot.sim.account import SimOrder
from bot.sim.binance_events import (
    account_position,
    account_update,
    execution_report,
    execution_types,
    order_trade_update,
)
from bot.sim.private_binance import JSON, BinancePrivate, Refused
from bot.sim.replay import Item
from bot.sim.ws import Conn, VenueHub, report_handler_error, serve_conn

_NO_KEY = "This listenKey does not exist."
_NO_TS = "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Sub:
    keys: set[str] = field(default_factory=set)  # listen keys of a stream connection
    ws_api: dict[int, str] = field(default_factory=dict)  # WebSocket API: subscriptionId -> api key
    next_id: int = 0


def _refusal(r: Refused) -> web.Response:
    return web.Response(body=orjson.dumps({"code": r.code, "msg": r.msg}), status=r.status, content_type=JSON)


class BinanceUserData:
    """The user-data side of one Binance venue: listen keys, private sockets, event fan-out."""

    def __init__(self, private: BinancePrivate, hub: VenueHub) -> None:
        self.p, self.hub, self.spot = private, hub, private.spot
        self.keys: dict[str, float] = {}  # listen key -> expiry (time.monotonic())
        self.key_life_s = 3600.0
        self.subs: dict[Conn, _Sub] = {}
        self._n = itertools.count(1)
        self._exec_ids = itertools.count(1)
        private.account.listeners.append(self._on_order)
        fanout = hub.fanout

        def publish_then_match(h: VenueHub, item: Item, parsed: Any) -> None:
            fanout(h, item, parsed)
            sym = item.book.symbol if item.book is not None else None
            if self.subs and sym:  # fills pushed while someone listens, without a REST poll to match them
                private.account.sync(private.venue, sym)

        hub.fanout = publish_then_match

    def routes(self) -> list[web.RouteDef]:
        if self.spot:
            path = "/api/v3/userDataStream"
            return [web.post(path, self._key_route("POST")), web.put(path, self._key_route("PUT")),
                    web.delete(path, self._key_route("DELETE")), web.get("/ws-api/v3", self._ws_api)]  # fmt: skip
        path = "/fapi/v1/listenKey"
        return [web.post(path, self._key_route("POST")), web.put(path, self._key_route("PUT")),
                web.delete(path, self._key_route("DELETE")), web.get("/private/ws", self._private(False)),
                web.get("/private/ws/{key}", self._private(False)),
                web.get("/private/stream", self._private(True))]  # fmt: skip

    def divert(self, public: Handler, *, combined: bool) -> Handler:
        """The public ``/ws/{streams}`` (or ``/stream``) route, private when a name is a live listen key."""

        async def handler(request: web.Request) -> web.StreamResponse:
            raw = request.match_info.get("streams") or request.query.get("streams", "")
            names = [s for s in raw.split("/") if s]
            keys = [n for n in names if self.live(n)]
            if not keys:
                return await public(request)
            return await self._serve(request, keys, [n for n in names if n not in keys], combined, ws_api=False)

        return handler

    # -- listen keys -------------------------------------------------------------------------------------
    def live(self, key: str) -> bool:
        return self.keys.get(key, 0.0) > time.monotonic()

    def _key_route(self, method: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                api_key = request.headers.get("X-MBX-APIKEY")
                if not api_key:
                    raise Refused(401, -2014, "API-key format invalid.")
                if api_key != self.p.api_key:
                    raise Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")
                params = dict(parse_qsl(request.rel_url.raw_query_string))
                if request.can_read_body:
                    params.update(parse_qsl(await request.text()))
                return web.Response(body=orjson.dumps(self._listen_key(method, params)), content_type=JSON)
            except Refused as r:
                return _refusal(r)

        return handler

    def _listen_key(self, method: str, params: dict[str, str]) -> dict[str, Any]:
        expiry = time.monotonic() + self.key_life_s
        active = next((k for k in self.keys if self.live(k)), None)
        if self.spot and method != "POST":
            given = params.get("listenKey", "")
            if not given:
                raise Refused(400, -1102, "Mandatory parameter 'listenKey' was not sent, was empty/null, or malformed.")
            active = given if self.live(given) else None
        if method == "POST":
            if active is None:
                rng = random.Random(f"listenKey/{self.p.venue.value}/{next(self._n)}")
                active = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                                 for _ in range(64))  # fmt: skip
            self.keys[active] = expiry
            return {"listenKey": active}
        if active is None:
            raise Refused(400, -1125, _NO_KEY)
        if method == "PUT":
            self.keys[active] = expiry
            return {} if self.spot else {"listenKey": active}
        del self.keys[active]
        for conn, sub in list(self.subs.items()):
            if active in sub.keys:
                sub.keys.discard(active)
                if not sub.keys:
                    conn.close(1000, "listenKey closed")
        return {}

    # -- events ------------------------------------------------------------------------------------------
    def _on_order(self, o: SimOrder, fill: Fill | None, trade_id: int | None) -> None:
        if o.venue is not self.p.venue or not self.subs:
            return
        trade = self.p.trade_by_id.get(trade_id) if trade_id is not None else None
        now = self.p.clock_ms()
        for x, status in execution_types(o, trade, self.spot):
            if self.spot:
                self._push(execution_report(self.p, o, x, status, trade, now, next(self._exec_ids)))
                if x != "NEW" or o.price is not None:  # funds locked, released or moved
                    self._push(account_position(self.p, o, now))
            else:
                self._push(order_trade_update(self.p, o, x, status, trade, now))
                if trade is not None:
                    self._push(account_update(self.p, o, now, trade.time_ms))

    def _push(self, ev: dict[str, Any]) -> None:
        body = orjson.dumps(ev).decode()
        for conn, sub in list(self.subs.items()):
            for sid in sub.ws_api:
                conn.send(f'{{"subscriptionId":{sid},"event":{body}}}')
            for key in sub.keys:
                if self.live(key):
                    conn.send(f'{{"stream":"{key}","data":{body}}}' if conn.combined else body)

    async def _expiry_loop(self, conn: Conn, sub: _Sub) -> None:
        while not conn.closing:
            await asyncio.sleep(0.5)
            for key in [k for k in sub.keys if not self.live(k)]:
                sub.keys.discard(key)
                now = self.p.clock_ms()
                ev = {"e": "listenKeyExpired", "E": str(now) if self.spot else now, "listenKey": key}
                body = orjson.dumps(ev).decode()
                conn.send(f'{{"stream":"{key}","data":{body}}}' if conn.combined else body)

    # -- sockets -----------------------------------------------------------------------------------------
    def _private(self, combined: bool) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            keys = [k for k in (request.match_info.get("key") or request.query.get("listenKey", "")).split("/") if k]
            if not keys or not all(self.live(k) for k in keys):
                return _refusal(Refused(400, -1125, _NO_KEY))
            return await self._serve(request, keys, [], combined, ws_api=False)

        return handler

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, [], [], False, ws_api=True)

    async def _serve(
        self, request: web.Request, keys: list[str], public: list[str], combined: bool, *, ws_api: bool
    ) -> web.StreamResponse:
        def opened(conn: Conn) -> None:
            self.subs[conn] = _Sub(set(keys))
            if public:
                binance.subscribe(self.hub, conn, public)

        def expiry_loop(hub: VenueHub, conn: Conn) -> Coroutine[Any, Any, None]:
            return self._expiry_loop(conn, self.subs[conn])

        def api_read_loop(hub: VenueHub, conn: Conn) -> Coroutine[Any, Any, None]:
            return self._api_read_loop(conn, self.subs[conn])

        return await serve_conn(request, self.hub, api_read_loop if ws_api else binance.read_loop, where="ws_private",
                                autoping=False, combined=combined, helpers=(binance.ping_loop, expiry_loop),
                                opened=opened, closed=lambda conn: self.subs.pop(conn, None))  # fmt: skip

    # -- the WebSocket API -------------------------------------------------------------------------------
    async def _api_read_loop(self, conn: Conn, sub: _Sub) -> None:
        async for msg in conn.ws:
            if msg.type == WSMsgType.PING:
                await conn.ws.pong(bytes(msg.data))
            elif msg.type == WSMsgType.PONG:
                sent = conn.pings.pop(bytes(msg.data), None)
                if sent is not None:
                    conn.pings = {p: t for p, t in conn.pings.items() if t > sent}
            elif msg.type == WSMsgType.TEXT:
                try:
                    reply = self._api_request(sub, msg.data)
                except Exception as e:  # answered as the venue answers a request it cannot serve
                    report_handler_error(self.hub.stats, self.hub.venue, "ws_api", e)
                    reply = _api_error(None, 500, -1000, "An unknown error occurred while processing the request.")
                conn.send(reply, control=True)
            elif msg.type == WSMsgType.BINARY:
                conn.send(_api_error(None, 400, -1135, "Invalid JSON Request"), control=True)

    def _api_request(self, sub: _Sub, text: str) -> str:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _api_error(None, 400, -1135, "Invalid JSON Request")
        if not isinstance(req, dict):
            return _api_error(None, 400, -1135, "Invalid JSON Request")
        rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}
        if not isinstance(params, dict):
            return _api_error(rid, 400, -1135, "JSON sent for parameter 'params' is not valid")
        now = self.p.clock_ms()
        result: Any
        if method == "ping":
            result = {}
        elif method == "time":
            result = {"serverTime": now}
        elif method == "session.status":
            result = {"apiKey": None, "authorizedSince": None, "connectedSince": None, "returnRateLimits": True,
                      "serverTime": now, "userDataStream": bool(sub.ws_api)}  # fmt: skip
        elif method == "session.subscriptions":
            result = [{"subscriptionId": sid} for sid in sub.ws_api]
        elif method == "userDataStream.unsubscribe":
            sid = params.get("subscriptionId")
            if sid is None:
                sub.ws_api.clear()
            else:
                sub.ws_api.pop(sid, None)
            result = {}
        elif method == "userDataStream.subscribe.signature":
            try:
                api_key = self._check_signature(params, now)
            except Refused as r:
                return _api_error(rid, r.status, r.code, r.msg)
            active = next((sid for sid, k in sub.ws_api.items() if k == api_key), None)
            if active is None:
                active, sub.next_id = sub.next_id, sub.next_id + 1
                sub.ws_api[active] = api_key
            result = {"subscriptionId": active}
        else:
            return _api_error(rid, 400, -1020, "This operation is not supported.")
        return orjson.dumps({"id": rid, "status": 200, "result": result}).decode()

    def _check_signature(self, params: dict[str, Any], now: int) -> str:
        for name in ("apiKey", "timestamp", "signature"):
            if params.get(name) in (None, ""):
                raise Refused(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        if params["apiKey"] != self.p.api_key:
            raise Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload = "&".join(f"{k}={_param(v)}" for k, v in sorted(params.items()) if k != "signature")
        if str(params["signature"]).lower() != self.p.sign(payload):
            raise Refused(400, -1022, "Signature for this request is not valid.")
        try:
            ts, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except (TypeError, ValueError):
            raise Refused(400, -1102, _NO_TS) from None
        if not 0 < window <= 60_000:
            raise Refused(400, -1131, "recvWindow must be less than 60000")
        if ts >= now + 1000 or now - ts > window:
            raise Refused(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return str(params["apiKey"])


def _param(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _api_error(rid: Any, status: int, code: int, msg: str) -> str:
    return orjson.dumps({"id": rid, "status": status, "error": {"code": code, "msg": msg}}).decode()
