"""The loopback exchange's REST side: Binance ``/api/v3`` and ``/fapi/v1``, Bybit ``/v5/market``.

Binance answers with the venue's JSON error bodies (``{"code":-1121,"msg":"Invalid symbol."}``) and
``X-MBX-USED-WEIGHT-1M`` headers (request weights as documented; the per-minute limit, 6000 spot / 2400
USD-M, is enforced with a 429 of its own). Depth requests roll the REST fault dice (``faults.py``):
503 ``snapshot_fail``, 429 with ``Retry-After`` and then 418 for a client that comes back too early.
Bybit answers HTTP 200 with ``retCode``/``retMsg`` as the venue does; depth faults there are a 503 and
``retCode`` 10006.

``/depth`` serves the recorded snapshot until the replay bridges it and then the truth book
(``lastUpdateId`` = the last replayed ``u``; USD-M adds ``E`` = the sim clock and ``T`` = the last diff's
transaction time). Time endpoints answer the venue's replay clock (``VenueRunner.now_ms``), not the wall
clock, so a client sees the recording's dates. Klines come from CSV files (``klines.py``) of other dates
than the order-book sessions; with ``splice_klines`` they are moved and scaled onto the live session and
followed by the live bars the sim has published so far (``klines.py`` says how and what stays real).

A handler that fails unexpectedly (``error_middleware``) is answered as the venue answers an internal
error, Binance HTTP 500 ``{"code":-1000,"msg":"An unknown error occurred while processing the request."}``,
Bybit ``{"retCode":10016,"retMsg":"Internal server error.",...}``, counted (``handler_errors``) and
logged once as a warning, without traceback.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bot.events import Venue
from bot.sim.faults import RestDice
from bot.sim.instruments import binance_exchange_info, binance_symbol_entry, bybit_static_entry
from bot.sim.klines import BINANCE_INTERVALS, BYBIT_INTERVALS, KlineStore
from bot.sim.replay import BbBook, VenueReplay
from bot.sim.ws import SimStats, report_handler_error

JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(venue: Venue | None, stats: SimStats, clock_ms: Callable[[], int]) -> Any:
    """An aiohttp middleware for one venue host (``venue`` None: the Bybit host, the venue read from
    ``category``): an unexpected exception becomes the venue's internal-error answer."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_signed(request):  # counted, so a test can prove that paper mode never sends one
            v = venue or (Venue.BYBIT_SPOT if request.query.get("category") == "spot" else Venue.BYBIT_LINEAR)
            stats.counts[(v, "signed_requests")] += 1
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # aiohttp's own answers (404, 405 ...)
        except Exception as e:
            if venue is not None:
                report_handler_error(stats, venue, "rest", e)
                body = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
                return web.Response(body=orjson.dumps(body), status=500, content_type=JSON)
            v = Venue.BYBIT_SPOT if request.query.get("category") == "spot" else Venue.BYBIT_LINEAR
            report_handler_error(stats, v, "rest", e)
            body_bb = {"retCode": 10016, "retMsg": "Internal server error.", "result": {}, "retExtInfo": {},
                       "time": clock_ms()}  # fmt: skip
            return web.Response(body=orjson.dumps(body_bb), content_type=JSON)

    return guard


_KEY_HEADERS = ("X-MBX-APIKEY", "X-BAPI-API-KEY", "X-BAPI-SIGN")


_PRIVATE_PATHS = ("/ws-api/", "/private/", "/v5/private", "/api/v3/userDataStream", "/fapi/v1/listenKey")


def _is_signed(request: web.Request) -> bool:
    """A request that carries an API key or a signature (Binance ``signature``, Bybit ``X-BAPI-*``), or opens
    a private stream (the WebSocket API, a listenKey, Bybit's private socket: signed inside the socket)."""
    return ("signature" in request.query or any(h in request.headers for h in _KEY_HEADERS)
            or request.path.startswith(_PRIVATE_PATHS) or "listenKey" in request.query)  # fmt: skip


def _spot_depth_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _usdm_depth_weight(limit: int) -> int:
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _int_param(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    return int(v)  # ValueError handled by the caller


class BinanceRest:
    """``/api/v3/*`` (spot) or ``/fapi/v1/*`` (USD-M) of one venue."""

    def __init__(
        self,
        venue: Venue,
        replay: VenueReplay | None,
        clock_ms: Callable[[], int],
        dice: RestDice,
        klines: KlineStore,
        stats: SimStats,
    ) -> None:
        self.venue = venue
        self.spot = venue is Venue.BINANCE_SPOT
        self.replay = replay
        self.clock_ms = clock_ms
        self.dice = dice
        self.klines = klines
        self.stats = stats
        self.limit = 6000 if self.spot else 2400
        self.minute = 0
        self.used = 0
        self._info: dict[str, dict[str, Any]] | None = None

    def routes(self) -> list[web.RouteDef]:
        base = "/api/v3" if self.spot else "/fapi/v1"
        return [
            web.get(f"{base}/ping", self.ping),
            web.get(f"{base}/time", self.time),
            web.get(f"{base}/exchangeInfo", self.exchange_info),
            web.get(f"{base}/depth", self.depth),
            web.get(f"{base}/klines", self.klines_handler),
        ]

    # -- plumbing ----------------------------------------------------------------------------------
    def _respond(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        text = body if isinstance(body, (str, bytes)) else orjson.dumps(body)
        hdrs = {"X-MBX-USED-WEIGHT-1M": str(self.used)}
        if self.spot:
            hdrs["X-MBX-USED-WEIGHT"] = str(self.used)
        hdrs.update(headers or {})
        data = text.encode() if isinstance(text, str) else text
        return web.Response(body=data, status=status, content_type=JSON, headers=hdrs)

    def _error(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
        return self._respond({"code": code, "msg": msg}, status, headers)

    def _guard(self, weight: int) -> web.Response | None:
        """The IP ban, the 429 back-off window and the weight limit; None when the request may go on."""
        self.stats.counts[(self.venue, "rest_requests")] += 1
        now = time.monotonic()
        d = self.dice
        if now < d.banned_until:
            return self._banned(now)
        if now < d.retry_until:
            d.banned_until = now + 2 * d.spec.retry_after_s
            d.retry_until = 0.0
            self.stats.faults[(self.venue, "rest418")] += 1
            return self._banned(now)
        minute = int(time.time() // 60)
        if minute != self.minute:
            self.minute, self.used = minute, 0
        self.used += weight
        if self.used > self.limit:
            wait = 60 - time.time() % 60
            d.retry_until = now + wait
            self.stats.counts[(self.venue, "weight_limit_429")] += 1
            return self._error(429, -1003, self._too_many(), {"Retry-After": str(math.ceil(wait))})
        return None

    def _too_many(self) -> str:
        return (
            f"Too many requests; current limit of IP(127.0.0.1) is {self.limit} requests per minute. "
            "Please use the websocket for live updates to avoid polling the API."
        )

    def _banned(self, now: float) -> web.Response:
        until_ms = int(time.time() * 1000 + (self.dice.banned_until - now) * 1000)
        return self._error(
            418,
            -1003,
            f"Way too many requests; IP(127.0.0.1) banned until {until_ms}. "
            "Please use the websocket for live updates to avoid bans.",
            {"Retry-After": str(max(1, math.ceil(self.dice.banned_until - now)))},
        )

    def _symbol(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        sym = request.query.get("symbol", "")
        if not sym:
            return None, self._error(
                400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if self.replay is None or sym not in self.replay.tl.symbols:
            return None, self._error(400, -1121, "Invalid symbol.")
        return sym, None

    # -- endpoints ---------------------------------------------------------------------------------
    async def ping(self, request: web.Request) -> web.Response:
        return self._guard(1) or self._respond(b"{}")

    async def time(self, request: web.Request) -> web.Response:
        return self._guard(1) or self._respond({"serverTime": self.clock_ms()})

    def _entries(self) -> dict[str, dict[str, Any]]:
        if self._info is None:
            self._info = {}
            if self.replay is not None:
                tl = self.replay.tl
                for s in tl.symbols:
                    self._info[s] = binance_symbol_entry(self.venue, s, tl.price_dec.get(s, 2), tl.qty_dec.get(s, 3))
        return self._info

    async def exchange_info(self, request: web.Request) -> web.Response:
        denied = self._guard(20 if self.spot else 1)
        if denied:
            return denied
        entries = self._entries()
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = [str(s) for s in orjson.loads(request.query["symbols"])]
            except (orjson.JSONDecodeError, TypeError):
                return self._error(400, -1100, "Illegal characters found in parameter 'symbols'.")
        if wanted is not None:
            if any(s not in entries for s in wanted):
                return self._error(400, -1121, "Invalid symbol.")
            chosen = [entries[s] for s in wanted]
        else:
            chosen = list(entries.values())
        return self._respond(binance_exchange_info(self.venue, chosen, self.clock_ms()))

    async def depth(self, request: web.Request) -> web.Response:
        try:
            limit = _int_param(request, "limit")
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.")
        limit = limit if limit is not None else 100 if self.spot else 500
        top = 5000 if self.spot else 1000
        if not 1 <= limit <= top:
            return self._error(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is '1-{top}'.")
        denied = self._guard(_spot_depth_weight(limit) if self.spot else _usdm_depth_weight(limit))
        if denied:
            return denied
        sym, err = self._symbol(request)
        if err is not None or sym is None or self.replay is None:
            return err or self._error(400, -1121, "Invalid symbol.")
        fault = self.dice.roll()
        if fault == "snapshot_fail":
            self.stats.faults[(self.venue, "snapshot_fail")] += 1
            return self._error(503, -1001, "Internal error; unable to process your request. Please try again.")
        if fault == "rest429":
            self.stats.faults[(self.venue, "rest429")] += 1
            self.dice.retry_until = time.monotonic() + self.dice.spec.retry_after_s
            return self._error(429, -1003, self._too_many(),
                               {"Retry-After": str(max(1, math.ceil(self.dice.spec.retry_after_s)))})  # fmt: skip
        body = self.replay.binance_depth(sym, limit, self.clock_ms())
        if body is None:
            return self._error(400, -1121, "Invalid symbol.")
        self.stats.counts[(self.venue, "depth_snapshots_served")] += 1
        return self._respond(body)

    async def klines_handler(self, request: web.Request) -> web.Response:
        try:
            limit = _int_param(request, "limit")
            start = _int_param(request, "startTime")
            end = _int_param(request, "endTime")
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in a parameter.")
        top = 1000 if self.spot else 1500
        limit = 500 if limit is None else limit
        if not 1 <= limit <= top:
            return self._error(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is '1-{top}'.")
        weight = 2 if self.spot else 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        denied = self._guard(weight)
        if denied:
            return denied
        sym, err = self._symbol(request)
        if err is not None or sym is None:
            return err or self._error(400, -1121, "Invalid symbol.")
        interval = request.query.get("interval", "")
        if interval not in BINANCE_INTERVALS:
            return self._error(400, -1120, "Invalid interval.")
        minutes = BINANCE_INTERVALS[interval]
        live = self.klines.live_view(self.venue, sym, minutes)  # here, where the live session is fed
        rows = await asyncio.to_thread(  # a CSV may have to be read: off the event loop
            self.klines.binance_rows, self.venue, sym, minutes, start, end, limit, live
        )
        return self._respond(rows)


class BybitRest:
    """``/v5/market/*`` for both Bybit categories served by the sim (spot, linear)."""

    def __init__(
        self,
        replays: dict[Venue, VenueReplay],
        clocks: dict[Venue, Callable[[], int]],
        dice: dict[Venue, RestDice],
        klines: KlineStore,
        stats: SimStats,
    ) -> None:
        self.replays = replays
        self.clocks = clocks
        self.dice = dice
        self.klines = klines
        self.stats = stats
        self._lists: dict[Venue, list[dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v5/market/time", self.time),
            web.get("/v5/market/instruments-info", self.instruments),
            web.get("/v5/market/orderbook", self.orderbook),
            web.get("/v5/market/kline", self.kline),
        ]

    def _now(self, venue: Venue | None = None) -> int:
        clock = self.clocks.get(venue or Venue.BYBIT_LINEAR) or self.clocks.get(Venue.BYBIT_SPOT)
        return clock() if clock is not None else int(time.time() * 1000)

    def _ok(self, result: Any, venue: Venue | None = None) -> web.Response:
        body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": self._now(venue)}
        return web.Response(body=orjson.dumps(body), content_type=JSON)

    def _err(self, code: int, msg: str, status: int = 200) -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": self._now()}
        return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)

    def _venue(self, request: web.Request) -> tuple[str, Venue | None]:
        cat = request.query.get("category", "")
        return cat, {"spot": Venue.BYBIT_SPOT, "linear": Venue.BYBIT_LINEAR}.get(cat)

    async def time(self, request: web.Request) -> web.Response:
        now = self._now()
        return self._ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})

    def _instrument_list(self, venue: Venue) -> list[dict[str, Any]]:
        if venue not in self._lists:
            rp = self.replays.get(venue)
            cat = "spot" if venue is Venue.BYBIT_SPOT else "linear"
            if rp is not None and cat in rp.tl.info:
                body = orjson.loads(rp.tl.info[cat])
                self._lists[venue] = list(body.get("result", {}).get("list", []))
            elif rp is not None:
                tl = rp.tl
                self._lists[venue] = [
                    bybit_static_entry(venue, s, tl.price_dec.get(s, 2), tl.qty_dec.get(s, 3)) for s in tl.symbols
                ]
            else:
                self._lists[venue] = []
        return self._lists[venue]

    async def instruments(self, request: web.Request) -> web.Response:
        cat, venue = self._venue(request)
        self.stats.counts[(venue or Venue.BYBIT_LINEAR, "rest_requests")] += 1
        if cat in ("inverse", "option"):
            return self._ok({"category": cat, "list": [], "nextPageCursor": ""})
        if venue is None:
            return self._err(10001, "params error: category only support spot, linear, inverse, option")
        items = self._instrument_list(venue)
        if "symbol" in request.query:
            items = [i for i in items if i.get("symbol") == request.query["symbol"]]
        if "baseCoin" in request.query:
            items = [i for i in items if i.get("baseCoin") == request.query["baseCoin"]]
        if "status" in request.query:
            items = [i for i in items if i.get("status") == request.query["status"]]
        if venue is Venue.BYBIT_SPOT:  # spot is not paginated
            return self._ok({"category": cat, "list": items}, venue)
        try:
            limit = min(1000, max(1, _int_param(request, "limit") or 500))
            cursor = request.query.get("cursor", "")
            start = int(cursor.removeprefix("sim-")) if cursor else 0
        except ValueError:
            return self._err(10001, "params error: limit or cursor invalid")
        page = items[start : start + limit]
        nxt = f"sim-{start + limit}" if start + limit < len(items) else ""
        return self._ok({"category": cat, "list": page, "nextPageCursor": nxt}, venue)

    async def orderbook(self, request: web.Request) -> web.Response:
        _, venue = self._venue(request)
        if venue is None:
            return self._err(10001, "params error: category only support spot, linear")
        self.stats.counts[(venue, "rest_requests")] += 1
        rp = self.replays.get(venue)
        sym = request.query.get("symbol", "")
        if rp is None or sym not in rp.tl.symbols:
            return self._err(10001, "params error: symbol invalid")
        spot = venue is Venue.BYBIT_SPOT
        try:
            limit = _int_param(request, "limit") or (1 if spot else 25)
        except ValueError:
            return self._err(10001, "params error: limit invalid")
        limit = max(1, min(limit, 200 if spot else 500))
        fault = self.dice[venue].roll() if venue in self.dice else None
        if fault == "snapshot_fail":
            self.stats.faults[(venue, "snapshot_fail")] += 1
            return self._err(10016, "Internal server error.", status=503)
        if fault == "rest429":
            self.stats.faults[(venue, "rest429")] += 1
            return self._err(10006, "Too many visits!")
        bs = rp.bybit_book(sym)
        if bs is not None and bs.book is not None:
            bids, asks = bs.book.top(limit)
            result = {"s": sym, "b": bids, "a": asks, "ts": bs.ts, "u": bs.u, "seq": bs.seq, "cts": bs.cts}
        else:  # before the first recorded snapshot: that snapshot, as the venue had it
            first = next(
                (i for i in rp.tl.items if isinstance(i.book, BbBook) and i.book.snapshot and i.book.symbol == sym),
                None,
            )
            if first is None or not isinstance(first.book, BbBook):
                return self._err(10001, "params error: symbol invalid")
            d = orjson.loads(first.raw)["data"]
            b = first.book
            result = {"s": sym, "b": d["b"][:limit], "a": d["a"][:limit], "ts": b.ts, "u": b.u, "seq": b.seq,
                      "cts": b.cts}  # fmt: skip
        return self._ok(result, venue)

    async def kline(self, request: web.Request) -> web.Response:
        cat, venue = self._venue(request)
        if venue is None:
            if cat in ("inverse",):
                return self._ok({"category": cat, "symbol": request.query.get("symbol", ""), "list": []})
            return self._err(10001, "params error: category only support spot, linear, inverse")
        interval = request.query.get("interval", "")
        if interval not in BYBIT_INTERVALS:
            return self._err(10001, "params error: interval invalid")
        try:
            limit = max(1, min(1000, _int_param(request, "limit") or 200))
            start = _int_param(request, "start")
            end = _int_param(request, "end")
        except ValueError:
            return self._err(10001, "params error: start, end or limit invalid")
        sym = request.query.get("symbol", "")
        minutes = BYBIT_INTERVALS[interval]
        live = self.klines.live_view(venue, sym, minutes)  # here, where the live session is fed
        rows = await asyncio.to_thread(self.klines.bybit_rows, venue, sym, minutes, start, end, limit, live)
        return self._ok({"symbol": sym, "category": cat, "list": rows}, venue)
