"""The loopback exchange's Binance websockets (spot and USD-M): streams, method frames, heartbeat.

Raw streams ``/ws/<stream>`` get the bare payload, combined streams
``/stream?streams=a/b`` the ``{"stream","data"}`` wrapper; both accept ``SUBSCRIBE``/``UNSUBSCRIBE``/
``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/``GET_PROPERTY`` frames answered ``{"result":...,"id":...}``.
Every diff-depth speed (``@depth``, ``@depth@100ms``, ``@depth@500ms``, ``@depth@0ms``, ...) is an alias of
whichever diff stream was recorded for the symbol: the client gets the recorded diffs under the name it
asked for (their pace is the recorded one). Partial-depth streams (``@depth5``/``10``/``20``, any speed) are
synthesized from the truth book after every replayed diff, in the venue's own shape (spot
``{lastUpdateId,bids,asks}``, USD-M a full ``depthUpdate``). A well-formed stream name the recording
does not hold is accepted and stays silent; a malformed one gets ``{"error":{"code":2,...}}``. The server
sends a ping frame every 20 s (spot) / 3 min (USD-M) and cuts a connection whose ping was not answered
with the same payload within 1 min / 10 min (``SimTimings``; ``pings_sent``, ``pongs_received``); a client's ping
frame is answered with a pong of its payload (``client_pings``); more than 5 (spot) / 10 (USD-M) incoming
frames a second, pings and pongs included, also cut the connection. Ping and pong payloads are compared
as ``bytes`` (aiohttp hands a received payload over as a ``bytearray``, whatever the client: the
``websockets`` library, aiohttp, ccxt.pro); a pong with a payload never sent (an unsolicited one) is
ignored, as the venue does. USD-M stream routing (``/public``, ``/market``) is served but not enforced:
every path delivers every stream. A method frame whose handling fails unexpectedly is answered
``{"error":{"code":-1000,"msg":"An unknown error occurred while processing the request."},"id":...}`` and
counted (``handler_errors``); the connection stays open.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType

from bot.events import Venue
from bot.sim.replay import BnDiff, Item
from bot.sim.ws import Conn, VenueHub, report_handler_error

log = structlog.get_logger(__name__)


def publish(hub: VenueHub, item: Item, parsed: Any) -> None:
    """Recorded streams to their subscribers (renamed for aliases, bare on raw connections), then the
    partial-depth streams synthesized from the truth book after a diff."""
    subs = hub.topic_subs.get(item.topic)
    if subs:
        _publish_binance(hub, item, subs)
    if parsed is not None and isinstance(item.book, BnDiff):
        _publish_partials(hub, item.book, parsed)


def _publish_binance(hub: VenueHub, item: Item, subs: dict[Conn, str]) -> None:
    book = isinstance(item.book, BnDiff)
    payload: str | None = None
    for conn, name in list(subs.items()):
        if conn.combined:
            if name == item.topic:
                text = item.raw
            else:
                payload = payload or item.payload()
                text = f'{{"stream":"{name}","data":{payload}}}'
        else:
            payload = payload or item.payload()
            text = payload
        if book:
            conn.deliver_book(name, text)
        else:
            conn.send(text)


def _publish_partials(hub: VenueHub, d: BnDiff, parsed: dict[str, Any]) -> None:
    psubs = hub.partial_subs.get(d.symbol)
    if not psubs:
        return
    st = hub.replay.bn[d.symbol]
    if st.book is None:
        return
    cache: dict[int, str] = {}
    for conn, names in list(psubs.items()):
        for name, levels in names.items():
            if levels not in cache:
                bids, asks = st.book.top(levels)
                if hub.venue is Venue.BINANCE_SPOT:
                    body: dict[str, Any] = {"lastUpdateId": d.last, "bids": bids, "asks": asks}
                else:
                    body = {"e": "depthUpdate", "E": d.event_ms, "T": d.trans_ms, "s": d.symbol,
                            "U": d.first, "u": d.last, "pu": d.prev, "b": bids, "a": asks}  # fmt: skip
                cache[levels] = orjson.dumps(body).decode()
            text = cache[levels]
            conn.send(f'{{"stream":"{name}","data":{text}}}' if conn.combined else text)


# -- stream grammar --------------------------------------------------------------------------------

_BN_STREAM = re.compile(
    r"^(?P<sym>[a-z0-9_]+)@(?P<kind>aggTrade|trade|bookTicker|miniTicker|ticker|avgPrice|forceOrder"
    r"|ticker_(1h|4h|1d)|markPrice(@1s)?|kline_\w+(@[+-]\d\d:\d\d)?"
    r"|depth(?P<levels>5|10|20)?(@(?P<speed>\d+ms))?)$"
)
_BN_ALL = re.compile(r"^!(miniTicker@arr|ticker@arr|bookTicker|markPrice@arr(@1s)?|forceOrder@arr|ticker_\w+@arr)$")


@dataclass(frozen=True)
class BinanceStream:
    name: str
    symbol: str  # upper case, "" for all-market streams
    diff: bool = False
    levels: int = 0  # partial depth


def parse_binance_stream(name: str) -> BinanceStream | None:
    """A stream name of valid form, or None."""
    if _BN_ALL.match(name):
        return BinanceStream(name, "")
    m = _BN_STREAM.match(name)
    if m is None:
        return None
    if m.group("kind").startswith("depth"):
        levels = int(m.group("levels") or 0)
        return BinanceStream(name, m.group("sym").upper(), diff=levels == 0, levels=levels)
    return BinanceStream(name, m.group("sym").upper())


def subscribe(hub: VenueHub, conn: Conn, names: Iterable[str]) -> str | None:
    """Subscribe ``names``; returns the first malformed name (whose error the caller reports), if any."""
    bad = None
    for name in names:
        s = parse_binance_stream(name)
        if s is None:
            bad = bad or name
            continue
        if s.levels:
            hub.subscribe_partial(conn, name, s.symbol, s.levels)
            continue
        recorded = name
        if s.diff and s.symbol in hub.replay.tl.depth_topic:
            recorded = hub.replay.tl.depth_topic[s.symbol]
        hub.subscribe(conn, name, recorded)
    return bad


# -- read loop, method frames, heartbeat ------------------------------------------------------------


async def read_loop(hub: VenueHub, conn: Conn) -> None:
    ws = conn.ws
    rate = hub.timings.binance_spot_msg_rate if hub.venue is Venue.BINANCE_SPOT else hub.timings.binance_usdm_msg_rate
    async for msg in ws:
        if rate is not None and _over_rate(conn, rate):
            hub.count("rate_limit_disconnects")
            conn.close(1008, "Too many requests")
            return
        if msg.type == WSMsgType.PING:
            hub.count("client_pings")
            await ws.pong(bytes(msg.data))
        elif msg.type == WSMsgType.PONG:
            sent = conn.pings.pop(bytes(msg.data), None)
            if sent is not None:
                hub.count("pongs_received")
                conn.pings = {p: t for p, t in conn.pings.items() if t > sent}
        elif msg.type == WSMsgType.TEXT:
            try:
                reply = _binance_method(hub, conn, msg.data)
            except Exception as e:  # answered as the venue answers a request it cannot serve
                report_handler_error(hub.stats, hub.venue, "ws_method", e)
                reply = _bn_error(-1000, _UNKNOWN_ERROR, _request_id(msg.data))
            if reply is not None:
                conn.send(reply, control=True)
        elif msg.type == WSMsgType.BINARY:
            conn.send(_bn_error(3, "Invalid JSON: binary frames are not accepted", None), control=True)


def _over_rate(conn: Conn, rate: int) -> bool:
    now = time.monotonic()
    conn.in_times = [t for t in conn.in_times if now - t < 1.0]
    conn.in_times.append(now)
    return len(conn.in_times) > rate


_UNKNOWN_ERROR = "An unknown error occurred while processing the request."


def _bn_error(code: int, msg: str, rid: Any) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid}).decode()


def _request_id(text: str) -> Any:
    """The ``id`` of a method frame when it can be read (for the answer to a failed one), else None."""
    try:
        req = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    rid = req.get("id") if isinstance(req, dict) else None
    return rid if rid is None or isinstance(rid, (int, str)) else None


def _binance_method(hub: VenueHub, conn: Conn, text: str) -> str | None:
    try:
        req = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return _bn_error(3, f"Invalid JSON: {e}", None)
    if not isinstance(req, dict):
        return _bn_error(2, "Invalid request: expected an object", None)
    rid = req.get("id")
    if "id" not in req:
        return _bn_error(2, "Invalid request: missing field `id`", None)
    if not (rid is None or isinstance(rid, int) or (isinstance(rid, str) and len(rid) <= 36 and rid.isalnum())):
        return _bn_error(2, "Invalid request: request ID must be an unsigned integer", None)
    method = req.get("method")
    params = req.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _bn_error(2, "Invalid request: params must be a list of stream names", rid)
        if method == "SUBSCRIBE":
            bad = subscribe(hub, conn, params)
            if bad is not None:
                return _bn_error(2, f"Invalid request: invalid stream {bad}", rid)
        else:
            for name in params:
                hub.unsubscribe(conn, name)
        return orjson.dumps({"result": None, "id": rid}).decode()
    if method == "LIST_SUBSCRIPTIONS":
        return orjson.dumps({"result": list(conn.subs), "id": rid}).decode()
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        if not isinstance(params, list) or not params or params[0] != "combined":
            return _bn_error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return orjson.dumps({"result": conn.combined, "id": rid}).decode()
        if len(params) != 2 or not isinstance(params[1], bool):
            return _bn_error(1, "Invalid value type: expected Boolean", rid)
        conn.combined = params[1]
        return orjson.dumps({"result": None, "id": rid}).decode()
    return _bn_error(
        2,
        f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
        "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
        rid,
    )


async def ping_loop(hub: VenueHub, conn: Conn) -> None:
    spot = hub.venue is Venue.BINANCE_SPOT
    t = hub.timings
    interval = t.binance_spot_ping_s if spot else t.binance_usdm_ping_s
    timeout = t.binance_spot_pong_timeout_s if spot else t.binance_usdm_pong_timeout_s
    tick = max(0.01, min(interval, timeout) / 4)
    next_ping = time.monotonic() + interval
    while not conn.closing:
        await asyncio.sleep(tick)
        now = time.monotonic()
        if conn.pings and now - min(conn.pings.values()) > timeout:
            hub.count("pong_timeouts")
            log.info("sim_pong_timeout", venue=hub.venue.value, conn=conn.index)
            conn.abort()
            return
        if now >= next_ping:
            payload = str(hub.clock_ms()).encode()
            while payload in conn.pings:
                payload += b"."
            conn.pings[payload] = now
            next_ping = now + interval
            hub.count("pings_sent")
            try:
                await conn.ws.ping(payload)
            except (ConnectionError, RuntimeError):
                return
