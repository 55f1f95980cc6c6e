"""The loopback exchange's Bybit v5 private websocket, ``/v5/private`` on the Bybit host.

``{"op":"auth","args":[key, expires_ms, signature]}`` with signature = hex HMAC-SHA256(secret,
``"GET/realtime" + expires``) and ``expires`` later than the sim's clock is answered
``{"req_id"?,"success":true,"ret_msg":"","op":"auth","conn_id":...}``; an expiry already past (or
malformed arguments) ``"ret_msg":"Params Error"`` as the venue answers it (verified in client reports:
pybit issues #152 and #300, bybit api-usage-examples #70), a wrong key or signature
``"Request not authorized"`` (not verified). ``subscribe``/``unsubscribe`` take the private topics
(``order``, ``execution``, ``execution.fast``, ``position``, ``wallet``, ``greeks``, ``dcp`` and the
category forms such as ``order.spot`` or ``execution.linear``) and are acked in the same shape; before
auth they are refused ``"Request not authorized"``, an unknown topic ``"Invalid topic: ..."``.
``{"op":"ping"}`` gets the private stream's ``{"req_id"?,"op":"pong","args":["<ms>"],"conn_id":...}``.
The shapes of the acks and pong follow captured frames of the venue.

Every change of a Bybit order (``SimAccount.listeners``) is pushed as ``order`` (once per state: the
sim's NEW and ACCEPTED are one ``New``) and, for a fill,
``execution`` and ``execution.fast`` (the venue trade id is the ``execId``), then ``position`` (linear)
and ``wallet``, each ``{"id","topic","creationTime","data":[...]}`` with the topic as subscribed and the
data in the REST shapes (``bot.sim.bybit_ledger``), so a client sees the same ids on both. Connections
are the public side's ``Conn`` (queue and writer task) on a hub of their own, never faulted; its counters
read ``private_connections``, ``private_subscriptions`` (new topics) and ``private_subscribe_requests``
under ``bybit_linear``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bot.events import Venue
from bot.orders import Fill
from bot.sim.account import SimOrder
from bot.sim.bybit_ledger import CAT_OF, UID, BybitLedger
from bot.sim.faults import FaultSpec
from bot.sim.replay import Item, VenueReplay
from bot.sim.ws import Conn, SimStats, SimTimings, VenueHub, report_handler_error, serve_conn

_CATS = ("spot", "linear", "inverse", "option")
TOPICS = frozenset(
    {"order", "execution", "execution.fast", "position", "wallet", "greeks", "dcp"}
    | {f"{t}.{c}" for t in ("order", "execution", "execution.fast") for c in _CATS}
    | {f"position.{c}" for c in _CATS if c != "spot"}
)
_FAST = ("category", "symbol", "execId", "execPrice", "execQty", "orderId", "isMaker", "orderLinkId", "side",
         "execTime", "seq")  # fmt: skip


class _PrivateHub(VenueHub):
    """The public hub's bookkeeping, counted apart (``private_<what>``)."""

    def count(self, what: str, n: int = 1) -> None:
        super().count(f"private_{what}", n)

    def conn_id(self, index: int) -> str:
        return super().conn_id(-1 - index)  # never one of the public connections' ids


def _no_fanout(hub: VenueHub, item: Item, parsed: Any) -> None:
    return None  # the replay publishes nothing on the private stream


class BybitPrivateStream:
    def __init__(
        self, ledger: BybitLedger, api_key: str, api_secret: str, replay: VenueReplay, timings: SimTimings,
        stats: SimStats, handlers: set[asyncio.Task[Any]],
    ) -> None:  # fmt: skip
        self.ledger = ledger
        self._key, self._secret = api_key, api_secret.encode()
        self.hub = _PrivateHub(Venue.BYBIT_LINEAR, replay, faults=FaultSpec(), seed=0, timings=timings, stats=stats,
                               fanout=_no_fanout)  # fmt: skip
        self.hub.clock_ms = ledger.now
        self._handlers = handlers  # the server's, so that its stop waits for these too
        self._authed: set[Conn] = set()
        self._ids = itertools.count(1)
        self._last: dict[int, tuple[str, str]] = {}  # open order id -> (orderStatus, cumExecQty) last pushed
        ledger.account.listeners.append(self._on_change)

    # -- connection ------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One connection, served as the public streams are (``bot.sim.ws.serve_conn``): a bug of ours in it
        is counted (``handler_errors_private_ws``) and closes it 1011, a peer going away is no error."""
        return await serve_conn(request, self.hub, self._read_loop, where="private_ws", autoping=True,
                                combined=False, closed=self._authed.discard, handlers=self._handlers)  # fmt: skip

    async def _read_loop(self, hub: VenueHub, conn: Conn) -> None:
        async for msg in conn.ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    reply = self._op(conn, msg.data)
                except Exception as e:  # answered as the venue answers a request it cannot serve
                    report_handler_error(hub.stats, hub.venue, "private_ws_op", e)
                    reply = self._ack(conn, "", False, "error:internal error", None)
                conn.send(reply, control=True)

    # -- ops -------------------------------------------------------------------------------------------------
    @staticmethod
    def _ack(conn: Conn, op: str, ok: bool, msg: str, req_id: Any) -> str:
        out: dict[str, Any] = {} if req_id is None else {"req_id": req_id}
        out.update(success=ok, ret_msg=msg, op=op, conn_id=conn.conn_id)
        return orjson.dumps(out).decode()

    def _op(self, conn: Conn, text: str) -> str:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict):
            return self._ack(conn, "", False, "error:invalid json", None)
        op, req_id = str(req.get("op", "")), req.get("req_id")
        if op == "ping":
            pong: dict[str, Any] = {} if req_id is None else {"req_id": req_id}
            pong.update(op="pong", args=[str(self.ledger.now())], conn_id=conn.conn_id)
            return orjson.dumps(pong).decode()
        if op == "auth":
            msg = self._auth(req.get("args"))
            if not msg:
                self._authed.add(conn)
            return self._ack(conn, op, not msg, msg, req_id)
        if op not in ("subscribe", "unsubscribe"):
            return self._ack(conn, op, False, "error:invalid op", req_id)
        if conn not in self._authed:
            return self._ack(conn, op, False, "Request not authorized", req_id)
        args = req.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return self._ack(conn, op, False, "error:args must be a list of topics", req_id)
        self.hub.count(f"{op}_requests")
        failure = ""
        for topic in args:
            if op == "unsubscribe":
                self.hub.unsubscribe(conn, topic)
            elif topic not in TOPICS:
                failure = failure or f"Invalid topic: {topic}"
            elif topic not in conn.subs:
                self.hub.subscribe(conn, topic, topic)
                self.hub.count("subscriptions")
        return self._ack(conn, op, not failure, failure, req_id)

    def _auth(self, args: Any) -> str:
        """'' when ``args`` authenticate, else the venue's message."""
        if not isinstance(args, list) or len(args) != 3 or not all(isinstance(a, str | int) for a in args):
            return "Params Error"
        key, expires, sig = (str(a) for a in args)
        if not expires.isdigit() or int(expires) <= self.ledger.now():
            return "Params Error"
        want = hmac.new(self._secret, f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(key, self._key) or not hmac.compare_digest(sig.lower(), want):
            return "Request not authorized"
        return ""

    # -- pushes ----------------------------------------------------------------------------------------------
    def _push(self, topics: tuple[str, ...], data: list[dict[str, Any]], now: int) -> None:
        for topic in topics:
            subs = self.hub.topic_subs.get(topic)
            if not subs:
                continue
            text = orjson.dumps({"id": f"{UID}-{next(self._ids)}-{now}", "topic": topic, "creationTime": now,
                                 "data": data}).decode()  # fmt: skip
            for conn in list(subs):
                conn.send(text)

    def _on_change(self, o: SimOrder, fill: Fill | None, tid: int | None) -> None:
        if o.venue not in CAT_OF or not any(self.hub.topic_subs.values()):
            return
        cat, now, ledger = CAT_OF[o.venue], self.ledger.now(o.venue), self.ledger
        shape = ledger.order_shape(o)
        state = (shape["orderStatus"], shape["cumExecQty"])
        if self._last.get(o.order_id) != state:  # the sim's NEW then ACCEPTED are one "New" on the venue
            self._push(("order", f"order.{cat}"), [shape], now)
        if o.status.is_open:
            self._last[o.order_id] = state
        else:
            self._last.pop(o.order_id, None)
        if fill is None or tid is None:
            return
        ex = ledger.exec_shape(o, fill, tid)
        self._push(("execution", f"execution.{cat}"), [ex], now)
        self._push(("execution.fast", f"execution.fast.{cat}"), [{k: ex[k] for k in _FAST}], now)
        if o.venue is Venue.BYBIT_LINEAR:
            self._push(("position", "position.linear"), [{"category": cat, **ledger.position_shape(o.symbol)}], now)
        self._push(("wallet",), [ledger.wallet_entry()], now)
