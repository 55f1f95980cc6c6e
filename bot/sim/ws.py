"""The loopback exchange's websocket side: connections, subscriptions, fan-out and fault injection.

Every accepted socket is a ``Conn`` with a bounded send queue drained by its own writer task; the
replay runner hands each item to the venue's ``VenueHub``, which writes it into the queues of the
subscribed connections synchronously and in order (so fault dice are drawn in a deterministic order).
A client that does not read fast enough fills its queue (``SimTimings.send_queue`` frames) and is cut,
counted as ``slow_client_disconnects``, as real venues cut slow consumers.

The venue specifics live in ``bot.sim.binance`` and ``bot.sim.bybit``, which import this module (never
the other way round): a venue's derived streams (Bybit's shallower books) are ``DerivedStream``s here,
subclassed there. ``report_handler_error`` is the one place a handler's unexpected exception is turned
into a counter and a single structured warning (no traceback); the caller answers the client in the
venue's own error shape and keeps the connection. ``serve_conn`` serves one connection from the handshake
to its end (the public streams of ``server.py`` and Binance's user-data streams): the venue modules give it
their read and ping loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from bot.events import Venue
from bot.sim.faults import ConnDice, FaultSpec
from bot.sim.replay import BINANCE, Item, VenueReplay

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SimTimings:
    """Protocol timings and limits; the defaults are the venues' documented ones."""

    binance_spot_ping_s: float = 20.0  # the server's ping interval (tests shorten it)
    binance_spot_pong_timeout_s: float = 60.0
    binance_usdm_ping_s: float = 180.0
    binance_usdm_pong_timeout_s: float = 600.0
    binance_spot_msg_rate: int | None = 5  # incoming frames per second before the socket is cut
    binance_usdm_msg_rate: int | None = 10
    send_queue: int = 20_000  # frames queued for one client before it counts as too slow and is cut
    socket_sndbuf: int | None = None  # SO_SNDBUF of accepted sockets (None: the OS default); tests shrink it
    bybit_spot_max_args: int = 10


@dataclass
class SimStats:
    """Counters of the whole sim, keyed by (venue, what)."""

    counts: Counter[tuple[Venue, str]] = field(default_factory=Counter)
    faults: Counter[tuple[Venue, str]] = field(default_factory=Counter)
    # (venue, connection index, diff number on that connection, kind); the last 100 000 faults
    fault_log: deque[tuple[str, int, int, str]] = field(default_factory=lambda: deque(maxlen=100_000))
    errors_logged: set[tuple[Venue, str, str]] = field(default_factory=set)  # (venue, where, error type)


def report_handler_error(stats: SimStats, venue: Venue, where: str, exc: BaseException) -> None:
    """Count an unexpected exception of a handler (``handler_errors`` and ``handler_errors_<where>``) and
    log it once per (venue, where, type) as a warning without traceback; later ones are only counted."""
    stats.counts[(venue, "handler_errors")] += 1
    stats.counts[(venue, f"handler_errors_{where}")] += 1
    key = (venue, where, type(exc).__name__)
    if key not in stats.errors_logged:
        stats.errors_logged.add(key)
        log.warning("sim_handler_error", venue=venue.value, where=where, error=f"{type(exc).__name__}: {exc}")


GONE = (ConnectionError, RuntimeError)  # a peer going away (aiohttp's errors of a closing transport)


def unexpected(e: Exception) -> BaseException | None:
    """``e`` (or the part of a task group's errors) that is not a peer going away."""
    if isinstance(e, ExceptionGroup):
        rest = e.subgroup(lambda x: not isinstance(x, (*GONE, ExceptionGroup)))
        if rest is None:
            return None
        while isinstance(rest, ExceptionGroup) and len(rest.exceptions) == 1:
            rest = rest.exceptions[0]
        return rest
    return None if isinstance(e, GONE) else e


WRITE_HIGH = 256 * 1024  # bytes buffered in the transport before the writer waits


def _text_frame(text: str) -> bytes:
    """An unmasked, final websocket text frame (server to client, RFC 6455 5.2)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Conn:
    """One accepted websocket of one venue."""

    def __init__(self, hub: VenueHub, index: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.hub = hub
        self.index = index
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str | _Close] = asyncio.Queue(hub.timings.send_queue)
        self.closing = False
        self.combined = True
        self.subs: dict[str, str] = {}  # name the client asked for -> recorded topic
        self.sub_depth: dict[str, int] = {}  # Bybit orderbook name -> requested depth
        self.dice = ConnDice(hub.faults, hub.seed, hub.venue.value, index, bybit=hub.venue not in BINANCE)
        self.held: dict[str, str] = {}  # reorder fault: topic -> message sent after the next one
        self.renumber: dict[str, int] = {}  # bybit_reset fault: topic -> truth u that became u=1
        self.stalled_until = 0.0
        self.book_msgs = 0
        self.conn_id = hub.conn_id(index)
        # Binance heartbeat and incoming-rate state
        self.pings: dict[bytes, float] = {}
        self.in_times: list[float] = []

    # -- output ------------------------------------------------------------------------------------
    def send(self, text: str, *, control: bool = False) -> None:
        if self.closing:
            return
        if not control and self.stalled_until and time.monotonic() < self.stalled_until:
            self.hub.count("stalled_frames_dropped")
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.hub.count("slow_client_disconnects")
            log.info("sim_slow_client_cut", venue=self.hub.venue.value, conn=self.index)
            self.abort()

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a clean close frame)."""
        if self.closing:
            return
        self.closing = True
        try:
            self.queue.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            self.abort()

    def abort(self) -> None:
        """Cut the TCP connection without a close frame."""
        self.closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.hub.unregister(self)

    async def write_loop(self) -> None:
        """Drain the queue: every frame waiting is written in one go (one syscall, not one per frame).

        Text frames are encoded here and written to the transport directly; aiohttp's own writer only
        sends control frames (ping, pong, close), each in a single write, so frames never interleave.
        Back-pressure: while the transport holds more than ``WRITE_HIGH`` bytes the loop waits, and the
        queue (bounded) fills up behind it.
        """
        transport = self.request.transport
        queue = self.queue
        try:
            while True:
                item = await queue.get()
                out: list[bytes] = []
                while True:
                    if isinstance(item, _Close):
                        if out and transport is not None:
                            transport.write(b"".join(out))
                        await self.ws.close(code=item.code, message=item.reason.encode())
                        return
                    out.append(_text_frame(item))
                    if queue.empty() or len(out) >= 1024:
                        break
                    item = queue.get_nowait()
                if transport is None or transport.is_closing():
                    return
                transport.write(b"".join(out))
                while transport.get_write_buffer_size() > WRITE_HIGH:
                    if transport.is_closing():
                        return
                    await asyncio.sleep(0.002)
        except (ConnectionError, RuntimeError):
            return  # peer gone; the reader notices too

    # -- book messages and faults ------------------------------------------------------------------
    def deliver_book(self, topic: str, text: str) -> str | None:
        """Send one diff message through the fault dice; returns the fault fired (if any)."""
        self.book_msgs += 1
        kind = self.dice.roll()
        if self.stalled_until and time.monotonic() < self.stalled_until:
            self.hub.count("stalled_frames_dropped")
            return None
        if kind == "bybit_reset":
            return kind  # the hub sends a u=1 snapshot instead of this delta
        if kind is None:
            self._send_book(topic, text)
            return kind
        self.hub.fault(kind, self)
        if kind == "drop":
            return kind
        if kind == "dup":
            self._send_book(topic, text)
            self.send(text)
        elif kind == "reorder":
            if topic in self.held:
                self._send_book(topic, text)
            else:
                self.held[topic] = text
        elif kind == "malformed":
            self._send_book(topic, text[: len(text) // 2])
        elif kind == "stall":
            self.stalled_until = time.monotonic() + self.hub.faults.stall_s
        elif kind == "disconnect":
            self.abort()
        return kind

    def _send_book(self, topic: str, text: str) -> None:
        self.send(text)
        held = self.held.pop(topic, None)
        if held is not None:
            self.send(held)


class DerivedStream:
    """A stream the venue module derives from the replayed one (Bybit's shallower books): its subscribers,
    which the hub drops with their connection or subscription."""

    def __init__(self) -> None:
        self.subs: dict[Conn, str] = {}


class VenueHub:
    """Subscriptions and fan-out of one venue."""

    def __init__(
        self,
        venue: Venue,
        replay: VenueReplay,
        *,
        faults: FaultSpec,
        seed: int,
        timings: SimTimings,
        stats: SimStats,
        fanout: Callable[[VenueHub, Item, Any], None],
    ) -> None:
        self.fanout = fanout
        self.venue = venue
        self.replay = replay
        self.faults = faults
        self.seed = seed
        self.timings = timings
        self.stats = stats
        self.conns: set[Conn] = set()
        self.next_index = 0
        self.topic_subs: dict[str, dict[Conn, str]] = {}  # recorded topic -> {conn: client name}
        self.partial_subs: dict[str, dict[Conn, dict[str, int]]] = {}  # symbol -> {conn: {name: levels}}
        self.views: dict[tuple[str, int], DerivedStream] = {}  # Bybit (symbol, depth) -> derived book
        self.tickers: dict[str, dict[str, Any]] = {}  # Bybit tickers topic -> current ticker (bot.sim.bybit)
        self.clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)  # set to the runner's clock

    # -- bookkeeping -------------------------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        self.stats.counts[(self.venue, what)] += n

    def fault(self, kind: str, conn: Conn) -> None:
        self.stats.faults[(self.venue, kind)] += 1
        self.stats.fault_log.append((self.venue.value, conn.index, conn.book_msgs, kind))

    def conn_id(self, index: int) -> str:
        rng = random.Random(f"conn_id/{self.seed}/{self.venue.value}/{index}")
        alphabet = "0123456789abcdefghijklmnopqrstuv"
        return "".join(rng.choice(alphabet) for _ in range(20)) + "-" + "".join(rng.choice(alphabet) for _ in range(5))

    def register(self, ws: web.WebSocketResponse, request: web.Request) -> Conn:
        conn = Conn(self, self.next_index, ws, request)
        self.next_index += 1
        self.conns.add(conn)
        self.count("connections")
        return conn

    def unregister(self, conn: Conn) -> None:
        self.conns.discard(conn)
        for subs in self.topic_subs.values():
            subs.pop(conn, None)
        for psubs in self.partial_subs.values():
            psubs.pop(conn, None)
        for view in self.views.values():
            view.subs.pop(conn, None)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.conns):
            conn.close(code, reason)
            self.unregister(conn)

    # -- subscriptions -----------------------------------------------------------------------------
    def subscribe(self, conn: Conn, name: str, recorded: str) -> None:
        conn.subs[name] = recorded
        self.topic_subs.setdefault(recorded, {})[conn] = name

    def unsubscribe(self, conn: Conn, name: str) -> None:
        recorded = conn.subs.pop(name, None)
        conn.sub_depth.pop(name, None)
        if recorded is not None:
            subs = self.topic_subs.get(recorded)
            if subs is not None and subs.get(conn) == name:
                del subs[conn]
        for psubs in self.partial_subs.values():
            psubs.get(conn, {}).pop(name, None)
        for view in self.views.values():
            if view.subs.get(conn) == name:
                del view.subs[conn]

    def subscribe_partial(self, conn: Conn, name: str, symbol: str, levels: int) -> None:
        conn.subs[name] = name
        self.partial_subs.setdefault(symbol, {}).setdefault(conn, {})[name] = levels

    # -- fan-out -----------------------------------------------------------------------------------
    def publish(self, item: Item, parsed: Any) -> None:
        """Fan one replayed item out to the subscribed connections (the venue module's ``publish``).

        An exception here would end the replay of the whole venue: it is counted and reported instead
        (``handler_errors_publish``) and the replay goes on with the next item."""
        try:
            self.fanout(self, item, parsed)
        except Exception as e:  # reported once, counted; the replay goes on
            report_handler_error(self.stats, self.venue, "publish", e)


# -- serving one connection ------------------------------------------------------------------------
INTERNAL_ERROR = 1011
ConnLoop = Callable[[VenueHub, Conn], Coroutine[Any, Any, None]]  # e.g. bot.sim.binance.read_loop, ping_loop


async def accept(
    request: web.Request, *, autoping: bool, sndbuf: int | None = None
) -> tuple[web.WebSocketResponse, bool]:
    """The websocket handshake: the response, and False when the client left during it (return it as is).
    ``sndbuf``: SO_SNDBUF of the accepted socket (None or 0: the OS default)."""
    ws = web.WebSocketResponse(autoping=autoping, compress=False, max_msg_size=1 << 20)
    try:
        await ws.prepare(request)
    except ConnectionError:
        return ws, False
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return ws, True


async def let_close_out(conn: Conn, writer: asyncio.Task[None]) -> None:
    """The end of a connection's writer task: a close of ours (``conn.closing``) gets up to 1 s to write
    its close frame, then the writer is cancelled."""
    if conn.closing and not writer.done():
        with contextlib.suppress(TimeoutError, *GONE):
            await asyncio.wait_for(asyncio.shield(writer), 1.0)
    conn.closing = True
    writer.cancel()


async def serve_conn(
    request: web.Request,
    hub: VenueHub,
    read: ConnLoop,
    *,
    where: str,
    autoping: bool,
    combined: bool,
    helpers: Sequence[ConnLoop] = (),
    opened: Callable[[Conn], None] | None = None,
    closed: Callable[[Conn], object] | None = None,
    sndbuf: int | None = None,
    handlers: set[asyncio.Task[Any]] | None = None,
) -> web.WebSocketResponse:
    """One websocket connection of ``hub``, handshake to end: a ``Conn`` registered with the hub, its
    writer task and ``helpers`` (e.g. a ping loop) in one task group beside ``read`` (the read loop; the
    connection ends when it returns). ``opened``/``closed``: the caller's own bookkeeping of the connection
    (``opened`` may subscribe it); ``handlers``: a set that holds this handler's task while it runs (the
    sim's stop waits for them). A bug of ours (not a peer going away) is counted as ``handler_errors_<where>``,
    logged once, and the client gets a clean 1011 close, never a 1006.
    """
    ws, ok = await accept(request, autoping=autoping, sndbuf=sndbuf)
    if not ok:
        return ws
    conn = hub.register(ws, request)
    conn.combined = combined
    me = asyncio.current_task()
    if handlers is not None and me is not None:
        handlers.add(me)
    try:
        if opened is not None:
            opened(conn)
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(conn.write_loop())
            running = [tg.create_task(loop(hub, conn)) for loop in helpers]
            try:
                await read(hub, conn)
            finally:
                await let_close_out(conn, writer)
                for t in running:
                    t.cancel()
    except Exception as e:
        bug = unexpected(e)
        if bug is not None:  # a bug of ours: counted, logged once, and a clean close, never a 1006
            report_handler_error(hub.stats, hub.venue, where, bug)
            with contextlib.suppress(Exception):
                await ws.close(code=INTERNAL_ERROR, message=b"internal error")
    finally:
        hub.unregister(conn)
        if closed is not None:
            closed(conn)
        if handlers is not None and me is not None:
            handlers.discard(me)
    return ws
