"""The loopback exchange's Bybit v5 public websockets (spot and linear): ops, acks, books.

``{"op":"subscribe","args":[...]}`` is acked in the venue's shapes (linear
``{"success","ret_msg":"","conn_id","req_id","op"}``, spot ``ret_msg:"subscribe"`` and no ``req_id``
unless one was sent); a topic of unknown form gets ``{"success":false,"ret_msg":"Invalid topic: ..."}``
(the well-formed topics of the same request are still subscribed); subscribing twice to a topic gets
``"error:already subscribed,topic:..."``. ``{"op":"ping"}`` is answered ``{"success":true,"ret_msg":"pong",
...,"op":"ping"}`` on spot and ``{"req_id"?,"op":"pong","args":[ms],"conn_id"}`` on linear (counted,
``client_pings``). A new
``orderbook.N.SYM`` subscription gets a snapshot of the current truth book (top N levels, current ``u``,
``seq``, ``ts``, ``cts``) at once, then the live deltas; before the recorded snapshot was replayed it
simply waits for it. A depth at least the recorded one is an alias of the recorded topic (renamed); a
shallower one (``orderbook.50`` from a recorded ``orderbook.200``) is derived: each replayed message
becomes the change of the top N levels, with removals for levels pushed out, numbered by its own ``u``
(``DepthView``); ``orderbook.1`` pushes a snapshot whenever the top changes. An op whose handling fails
unexpectedly is answered ``{"success":false,"ret_msg":"error:internal error",...}`` and counted
(``handler_errors``); the connection stays open. A new ``tickers.SYM`` subscription gets the current
ticker at once, as a snapshot (the last replayed snapshot with the deltas since merged in,
``note_ticker``), then the recorded frames, as the venue sends its ticker.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import WSMsgType

from bot.events import Venue
from bot.sim.replay import BbBook, Item, bybit_book_msg, bybit_snapshot_text
from bot.sim.ws import Conn, DerivedStream, VenueHub, report_handler_error


def publish(hub: VenueHub, item: Item, parsed: Any) -> None:
    """Recorded topics to their subscribers (renamed for deeper aliases), then the derived shallower books."""
    if item.topic.startswith("tickers."):
        note_ticker(hub, item)
    subs = hub.topic_subs.get(item.topic)
    if subs:
        _publish_bybit(hub, item, subs, parsed)
    if isinstance(item.book, BbBook) and hub.views:
        _publish_views(hub, item.book)


def note_ticker(hub: VenueHub, item: Item) -> None:
    """Keep the current ticker of a topic (the venue sends it on subscription; its deltas carry only the
    fields that changed, so a late subscriber has nothing to merge them into without it)."""
    msg = orjson.loads(item.raw)
    data = msg.get("data") if isinstance(msg, dict) else None
    if not isinstance(data, dict):
        return
    if msg.get("type") == "snapshot":
        hub.tickers[item.topic] = {**msg, "data": dict(data)}  # the frame's own key order
        return
    current = hub.tickers.get(item.topic)
    if current is not None:  # a delta before any snapshot has nothing to merge into
        current["data"].update(data)
        current.update({k: msg[k] for k in ("ts", "cs") if k in msg})


def _publish_bybit(hub: VenueHub, item: Item, subs: dict[Conn, str], parsed: Any) -> None:
    b = item.book
    for conn, name in list(subs.items()):
        text = item.raw
        if name != item.topic:
            text = text.replace(f'"topic":"{item.topic}"', f'"topic":"{name}"', 1)
        if isinstance(b, BbBook):
            _send_bybit_book(hub, conn, name, b.symbol, parsed, text, b.snapshot)
        else:
            conn.send(text)


def _publish_views(hub: VenueHub, b: BbBook) -> None:
    """Shallower books derived from the recorded one (orderbook.50 from orderbook.200 ...)."""
    bs = hub.replay.bybit_book(b.symbol)
    if bs is None or bs.book is None:
        return
    for (symbol, _), view in hub.views.items():
        if symbol != b.symbol or not view.subs or not isinstance(view, DepthView):
            continue
        msg = view.advance(hub.venue, b.symbol, bs, reset=b.snapshot)
        if msg is None:
            continue
        text = orjson.dumps(msg).decode()
        for conn, name in list(view.subs.items()):
            _send_bybit_book(hub, conn, name, b.symbol, msg, text, msg["type"] == "snapshot")


def _send_bybit_book(hub: VenueHub, conn: Conn, name: str, symbol: str, msg: Any, text: str, snapshot: bool) -> None:
    """One orderbook message to one connection: faults, and the renumbering after a bybit_reset."""
    if snapshot:
        conn.renumber.pop(name, None)
        conn.send(text)
        return
    u = int(msg["data"]["u"])
    base = conn.renumber.get(name)
    if base is not None:
        text = orjson.dumps({**msg, "topic": name, "data": {**msg["data"], "u": u - base + 1}}).decode()
    if conn.deliver_book(name, text) == "bybit_reset":
        bs = hub.replay.bybit_book(symbol)
        if bs is None:
            conn._send_book(name, text)
            return
        # instead of this delta: the current book with u=1; the following deltas count on from 2
        hub.fault("bybit_reset", conn)
        conn.renumber[name] = u
        conn.send(bybit_snapshot_text(hub.venue, name, symbol, bs, conn.sub_depth.get(name), u=1))


def subscribe_book(hub: VenueHub, conn: Conn, name: str, symbol: str, depth: int) -> None:
    """A Bybit orderbook subscription: the recorded topic itself (or deeper: an alias), else a view;
    either way the current book is sent at once when it is known."""
    recorded = hub.replay.tl.depth_topic[symbol]
    conn.sub_depth[name] = depth
    bs = hub.replay.bybit_book(symbol)
    if depth >= _depth_of(recorded):
        hub.subscribe(conn, name, recorded)
        if bs is not None:
            conn.send(bybit_snapshot_text(hub.venue, name, symbol, bs, depth))
        return
    conn.subs[name] = name
    found = hub.views.get((symbol, depth))
    view = found if isinstance(found, DepthView) else DepthView(depth)
    hub.views[(symbol, depth)] = view
    view.subs[conn] = name
    if bs is not None and bs.book is not None:
        if not view.ready:
            view.advance(hub.venue, symbol, bs, reset=True)
        conn.send(bybit_snapshot_text(hub.venue, name, symbol, bs, depth, u=view.u))


class DepthView(DerivedStream):
    """A Bybit book of ``depth`` levels derived from a deeper recorded one: each replayed message becomes
    the difference of the top ``depth`` levels (removals as size "0"), numbered by its own ``u``, so the
    stream looks like the venue's own ``orderbook.<depth>`` topic. Depth 1 pushes snapshots only, when the
    top changes (the venue's 3 s repeat of an unchanged top is not emulated)."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.u = 0
        self.ready = False

    def advance(self, venue: Venue, symbol: str, st: Any, *, reset: bool) -> dict[str, Any] | None:
        bids, asks = st.book.top(self.depth)
        nb = {float(p): (p, q) for p, q in bids}
        na = {float(p): (p, q) for p, q in asks}
        topic = f"orderbook.{self.depth}.{symbol}"
        if reset or not self.ready:
            self.bids, self.asks, self.u, self.ready = nb, na, st.u, True
            return bybit_book_msg(venue, topic, "snapshot", symbol, bids, asks, st, self.u)
        db = _level_diff(self.bids, nb)
        da = _level_diff(self.asks, na)
        if not db and not da:
            return None
        self.bids, self.asks = nb, na
        self.u += 1
        if self.depth == 1:
            return bybit_book_msg(venue, topic, "snapshot", symbol, bids, asks, st, self.u)
        return bybit_book_msg(venue, topic, "delta", symbol, db, da, st, self.u)


def _level_diff(old: dict[float, tuple[str, str]], new: dict[float, tuple[str, str]]) -> list[tuple[str, str]]:
    changed = [pq for k, pq in new.items() if old.get(k) != pq]
    return changed + [(p, "0") for k, (p, _) in old.items() if k not in new]


def _depth_of(topic: str) -> int:
    parts = topic.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


# -- topic grammar ---------------------------------------------------------------------------------

_BB_TOPIC = re.compile(
    r"^(orderbook\.(?P<depth>1|25|50|100|200|500|1000)|publicTrade|tickers|allLiquidation|liquidation"
    r"|kline\.(1|3|5|15|30|60|120|240|360|720|D|W|M)|orderbook\.rpi)\.(?P<sym>[A-Z0-9]+)$"
)


def parse_bybit_topic(topic: str) -> tuple[str, int] | None:
    """(symbol, orderbook depth or 0) for a topic of valid form, else None."""
    m = _BB_TOPIC.match(topic)
    if m is None:
        return None
    return m.group("sym"), int(m.group("depth") or 0)


# -- read loop and ops ------------------------------------------------------------------------------


async def read_loop(hub: VenueHub, conn: Conn) -> None:
    async for msg in conn.ws:
        if msg.type == WSMsgType.TEXT:
            try:
                reply = _bybit_op(hub, conn, msg.data)
            except Exception as e:  # answered as the venue answers a request it cannot serve
                report_handler_error(hub.stats, hub.venue, "ws_op", e)
                reply = _internal_error(conn, msg.data)
            if reply is not None:
                conn.send(reply, control=True)
        elif msg.type == WSMsgType.PING:
            await conn.ws.pong(bytes(msg.data))


def _internal_error(conn: Conn, text: str) -> str:
    """``{"success":false,"ret_msg":"error:internal error",...}``, with the request's op and req_id when
    they can be read."""
    op: Any = ""
    req_id: Any = None
    try:
        req = orjson.loads(text)
        if isinstance(req, dict):
            op, req_id = req.get("op", ""), req.get("req_id")
    except orjson.JSONDecodeError:
        pass
    out: dict[str, Any] = {"success": False, "ret_msg": "error:internal error", "conn_id": conn.conn_id}
    if req_id is not None:
        out["req_id"] = req_id
    out["op"] = str(op)
    return orjson.dumps(out).decode()


def _bybit_ack(hub: VenueHub, conn: Conn, op: str, ok: bool, msg: str, req_id: Any) -> str:
    linear = hub.venue is Venue.BYBIT_LINEAR
    out: dict[str, Any] = {"success": ok, "ret_msg": msg if (msg or linear) else op, "conn_id": conn.conn_id}
    if linear or req_id is not None:
        out["req_id"] = "" if req_id is None else req_id
    out["op"] = op
    return orjson.dumps(out).decode()


def _bybit_op(hub: VenueHub, conn: Conn, text: str) -> str | None:
    try:
        req = orjson.loads(text)
    except orjson.JSONDecodeError:
        return orjson.dumps({"success": False, "ret_msg": "error:invalid json", "conn_id": conn.conn_id,
                             "op": ""}).decode()  # fmt: skip
    if not isinstance(req, dict):
        return orjson.dumps({"success": False, "ret_msg": "error:invalid request", "conn_id": conn.conn_id,
                             "op": ""}).decode()  # fmt: skip
    op = req.get("op")
    req_id = req.get("req_id")
    if op == "ping":
        hub.count("client_pings")
        if hub.venue is Venue.BYBIT_SPOT:
            out: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": conn.conn_id}
            if req_id is not None:
                out["req_id"] = req_id
            out["op"] = "ping"
            return orjson.dumps(out).decode()
        pong: dict[str, Any] = {}
        if req_id is not None:
            pong["req_id"] = req_id
        pong.update(op="pong", args=[str(hub.clock_ms())], conn_id=conn.conn_id)
        return orjson.dumps(pong).decode()
    if op not in ("subscribe", "unsubscribe"):
        return _bybit_ack(hub, conn, str(op), False, f"error:unsupported op {op}", req_id)
    args = req.get("args")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return _bybit_ack(hub, conn, op, False, "error:args must be a list of topics", req_id)
    if hub.venue is Venue.BYBIT_SPOT and len(args) > hub.timings.bybit_spot_max_args:
        return _bybit_ack(hub, conn, op, False, f"error:args size >{hub.timings.bybit_spot_max_args}", req_id)
    failure = ""
    books: list[tuple[str, str, int]] = []
    tickers: list[str] = []
    for topic in args:
        if op == "unsubscribe":
            hub.unsubscribe(conn, topic)
            continue
        parsed = parse_bybit_topic(topic)
        if parsed is None:
            failure = failure or f"Invalid topic: {topic}"
            continue
        if topic in conn.subs:
            failure = failure or f"error:already subscribed,topic:{topic}"
            continue
        symbol, depth = parsed
        if depth and symbol in hub.replay.tl.depth_topic:
            books.append((topic, symbol, depth))
        else:
            hub.subscribe(conn, topic, topic)  # recorded as it is, or silent
            if topic in hub.tickers:
                tickers.append(topic)
    conn.send(_bybit_ack(hub, conn, op, not failure, failure, req_id), control=True)
    for topic, symbol, depth in books:  # the ack comes first, then the book, as on the venue
        subscribe_book(hub, conn, topic, symbol, depth)
    for topic in tickers:  # and the current ticker
        conn.send(orjson.dumps(hub.tickers[topic]).decode())
    return None
