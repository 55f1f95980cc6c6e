"""The collectors: the async I/O around the venue adapters, one reconnect loop for every venue.

The adapters (``bot.venues``) are synchronous: they parse text, keep the books and queue I/O requests.
Everything that waits lives here, inside ONE ``asyncio.TaskGroup`` owned by ``Collector.run``::

    Collector.run ── TaskGroup
      ├── _tick                    every 1 s: adapter.check_stale(now), msgs/s sampling
      ├── run_connection ×spec     connect ─► subscribe ─► recv ─► tap ─► adapter.on_ws ─► actions
      │                            (watchdog, Bybit app ping, max age; on loss: on_disconnect, backoff)
      ├── _backfill_one ×N         REST klines per venue, symbol and interval, published on the bus
      ├── _snapshot(venue, sym)    NeedSnapshot: REST depth, one in flight per symbol, backoff on failure
      └── _resubscribe(venue, sym) Resubscribe: send resubscribe_payloads on the book's connection

Timing decisions:

* ``ts_recv`` is ``clock.now_ns()`` read right after ``recv()`` returns (and right after a REST body is
  read), before the tap and the adapter see the text.
* Liveness is judged by data, not by protocol pings: a socket with no frame for
  ``ReconnectConfig.watchdog_s`` is closed and reopened (``watchdog_trips``). The websockets library's
  own keepalive pings are off; Binance's server ping frames are answered by the library automatically
  (its protocol layer sends the pong as soon as the ping is read), Bybit gets ``adapter.ping_payload()``
  every ``bybit_ping_s`` and its pongs count as frames.
* Proactive reconnect before ``max_connection_age_s`` (Binance cuts at 24 h) is the simple kind: close,
  reopen at once (no backoff), and let the books resync through ``on_disconnect``. Overlapping two
  connections would need the venue's sequence numbers to splice the streams, which is the adapter's
  knowledge, not ours; one resync per connection per day is cheap.
* Reconnect delays are capped exponential with jitter (``ReconnectConfig.initial_s/max_s/jitter``); the
  backoff resets after a healthy connection: open for ``healthy_after_s`` or ``HEALTHY_FRAMES`` frames
  delivered (a venue restart that closes a busy stream costs the initial delay, not a grown one).
  Snapshot requests for one book are spaced by their own backoff (``BookConfig.resync_backoff_*``),
  reset when the book goes LIVE; a 429/418 waits at least its Retry-After, and the REST client refuses
  any request to a rate-limited host until then (``bot.rest``).

Nothing here logs per message: counters live in ``CollectorStats`` and ``status()``. What the collector
reports (the counters, its connection and book views, ``status()``'s JSON shape) is ``bot.feed_status``;
the delay policy it shares with ``bot.reference`` is ``bot.backoff``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from bot.backoff import Backoff
from bot.bus import EventBus
from bot.clock import Clock
from bot.config import BookConfig, BotSettings, VenueConfig
from bot.errors import ConfigError, RateLimited, VenueError
from bot.events import BookHealth, BookState, BookUpdate, Trade, Venue
from bot.feed_status import (
    BookLevels,
    CollectorStats,
    CollectorStatus,
    ConnectionStatus,
    _BookView,
    collector_status,
)
from bot.recording import Record
from bot.rest import RestClient
from bot.venues.base import ConnectionSpec, NeedSnapshot, Publish, Resubscribe, VenueAdapter

log = structlog.get_logger(__name__)

Tap = Callable[[Record], None]
AdapterFactory = Callable[[Venue, VenueConfig, BookConfig, Publish], VenueAdapter]
Sleep = Callable[[float], Awaitable[None]]

WS_MAX_SIZE = 64 << 20  # a 1000-level Bybit snapshot is ~60 KB; leave room for any depth
CLOSE_TIMEOUT_S = 2.0  # a stalled server must not hold a reconnect for long
OPEN_TIMEOUT_S = 10.0
HEALTHY_AFTER_S = 30.0
HEALTHY_FRAMES = 100  # a connection that delivered this many frames was working, however short-lived
TICK_S = 1.0
BACKFILL_ATTEMPTS = 3


def _default_factory(venue: Venue, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish) -> VenueAdapter:
    from bot.venues import make_adapter  # the venue package registers the concrete adapters

    return make_adapter(venue, cfg, book_cfg, publish, live=True)


class Collector:
    """Runs every enabled venue's connections, snapshots and backfill until cancelled.

    ``tap`` (the recorder) receives every raw frame and every REST body used, as a ``Record``, before the
    adapter sees it. It is called on the event loop and must not block.
    """

    def __init__(
        self,
        settings: BotSettings,
        bus: EventBus,
        clock: Clock,
        *,
        tap: Tap | None = None,
        adapter_factory: AdapterFactory | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        healthy_after_s: float = HEALTHY_AFTER_S,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.clock = clock
        self._stats = CollectorStats()
        self._tap = tap
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._healthy_after_s = healthy_after_s
        factory = adapter_factory or _default_factory
        self.adapters: dict[Venue, VenueAdapter] = {
            venue: factory(venue, cfg, settings.book, bus.publish) for venue, cfg in settings.enabled_venues().items()
        }
        self.specs: dict[Venue, list[ConnectionSpec]] = {v: a.connections() for v, a in self.adapters.items()}
        self.connections: dict[tuple[Venue, str], ConnectionStatus] = {}
        self._book_conn: dict[tuple[Venue, str], str] = {}
        for venue, specs in self.specs.items():
            for spec in specs:
                self.connections[(venue, spec.name)] = ConnectionStatus(venue, spec.name, spec.url)
                for symbol in spec.symbols:
                    self._book_conn[(venue, symbol)] = spec.name
        self._books: dict[tuple[Venue, str], _BookView] = {
            (venue, symbol): _BookView() for venue, cfg in settings.enabled_venues().items() for symbol in cfg.symbols
        }
        self._sockets: dict[tuple[Venue, str], ClientConnection] = {}
        self._snapshot_backoff: dict[tuple[Venue, str], Backoff] = {}
        self._snapshot_not_before: dict[tuple[Venue, str], float] = {}  # loop time
        self._snapshot_inflight: set[tuple[Venue, str]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.rest: RestClient | None = None
        bus.subscribe(BookUpdate, self._on_book_update)
        bus.subscribe(Trade, self._on_trade)
        bus.subscribe(BookHealth, self._on_health)

    # -- running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled; cancellation closes every socket and the REST session."""
        self.rest = RestClient(self.settings.reconnect.rest_timeout_s, clock=self.clock)
        log.info(
            "collector_starting",
            venues=[v.value for v in self.adapters],
            connections=sum(len(s) for s in self.specs.values()),
            reconnect=self.settings.reconnect.model_dump(),
            book=self.settings.book.model_dump(),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._tick(), name="collector_tick")
                for adapter in self.adapters.values():
                    self._start_venue(adapter)
        except BaseExceptionGroup as eg:
            # Unwrap so callers can catch ConfigError & co; a second failure, if any, is logged.
            leaves = _leaves(eg)
            for extra in leaves[1:]:
                log.error("collector_task_failed", error=f"{type(extra).__name__}: {extra}")
            raise leaves[0] from None
        finally:
            self._tg = None
            rest, self.rest = self.rest, None
            await rest.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> bool:
        """Start ``coro`` in the collector's task group; False (and the coroutine closed) if not running."""
        if self._tg is None:
            coro.close()
            return False
        try:
            self._tg.create_task(coro, name=name)
        except RuntimeError:  # the group is shutting down (cancelled or failed): nothing new starts
            coro.close()
            return False
        return True

    def _start_venue(self, adapter: VenueAdapter) -> None:
        """Open the venue's sockets at once, and backfill its klines while the books sync.

        The backfill does not hold the streams back (a slow or rate-limited REST must not cost book
        data); a REST bar that reaches the bus after a live one of a later minute is merged into place
        by the kline store, and the adapter drops live repeats of bars the backfill already delivered.
        """
        venue = adapter.venue.value
        for spec in self.specs[adapter.venue]:
            self._spawn(self.run_connection(adapter, spec), f"conn:{spec.name}")
        if self.settings.klines.backfill > 0:
            for symbol in adapter.cfg.symbols:
                for interval in self.backfill_intervals(adapter.cfg):
                    coro = self._backfill_one(adapter, symbol, interval, self.settings.klines.backfill)
                    self._spawn(coro, f"klines:{venue}:{symbol}:{interval}")

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            now = self.clock.now_ns()
            for adapter in self.adapters.values():
                adapter.check_stale(now)
                self._dispatch(adapter)
            t = loop.time()
            for view in self._books.values():
                view.samples.append((t, view.events))

    # -- the one reconnect loop ------------------------------------------------------------------
    async def run_connection(self, adapter: VenueAdapter, spec: ConnectionSpec) -> None:
        """Keep ``spec`` connected forever: connect, subscribe, pump frames, reconnect with backoff."""
        venue = adapter.venue
        cfg = self.settings.reconnect
        status = self.connections.setdefault((venue, spec.name), ConnectionStatus(venue, spec.name, spec.url))
        backoff = Backoff(cfg.initial_s, cfg.max_s, cfg.jitter, self._rng)
        loop = asyncio.get_running_loop()
        clog = log.bind(venue=venue.value, conn=spec.name)
        while True:
            opened_at: float | None = None
            frames_before = status.frames
            reason = ""
            try:
                ws = await connect(
                    spec.url,
                    compression=None,
                    max_size=WS_MAX_SIZE,
                    ping_interval=None,
                    open_timeout=OPEN_TIMEOUT_S,
                    close_timeout=CLOSE_TIMEOUT_S,
                    proxy=None,
                )
                ended_by: list[str] = []  # the supervisor's reason, when it closed the socket
                assert self._tg is not None, "run_connection runs inside Collector.run"
                supervisor = self._tg.create_task(
                    self._supervise(adapter, ws, status, ended_by), name=f"supervise:{spec.name}"
                )
                try:
                    opened_at = loop.time()
                    status.connected = True
                    status.opened_at_ns = self.clock.now_ns()
                    self._sockets[(venue, spec.name)] = ws
                    clog.info("connection_opened", url=spec.url, subscribe_frames=len(spec.subscribe))
                    for frame in spec.subscribe:
                        await ws.send(frame)
                    await self._pump(adapter, spec, ws, status)
                except ConnectionClosed:
                    if not ended_by:
                        raise
                    reason = ended_by[0]
                finally:
                    supervisor.cancel()
                    # A normal closure (1000) whatever the cause, cancellation included: a shutdown, a
                    # watchdog trip or the age limit is not an error on the venue's side.
                    await ws.close()
            except ConnectionClosed as e:
                reason = f"closed by peer: {e}"
            except InvalidURI as e:
                raise ConfigError(f"{venue.value}: invalid websocket URL {spec.url!r}: {e}") from e
            except InvalidStatus as e:
                reason = f"handshake refused: HTTP {e.response.status_code}"
            except (OSError, TimeoutError, InvalidHandshake) as e:
                reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            finally:
                status.connected = False
                self._sockets.pop((venue, spec.name), None)
            status.last_error = reason
            if opened_at is None:
                self.stats.connect_failures += 1
            else:
                adapter.on_disconnect(spec.name, self.clock.now_ns())
                self._dispatch(adapter)
                status.reconnects += 1
                self.stats.reconnects += 1
                if reason == "watchdog":
                    self.stats.watchdog_trips += 1
                elif reason == "max_age":
                    self.stats.proactive_reconnects += 1
                frames = status.frames - frames_before
                if reason == "max_age" or frames >= HEALTHY_FRAMES or loop.time() - opened_at >= self._healthy_after_s:
                    backoff.reset()
            delay = 0.0 if reason == "max_age" else backoff.next()
            event = "connection_failed" if opened_at is None else "connection_lost"
            emit = clog.info if reason == "max_age" else clog.warning  # the age limit is routine
            emit(event, reason=reason, retry_in_s=round(delay, 3), reconnects=status.reconnects)
            await self._sleep(delay)

    async def _pump(
        self, adapter: VenueAdapter, spec: ConnectionSpec, ws: ClientConnection, status: ConnectionStatus
    ) -> None:
        """The hot path: every frame to the tap and the adapter, until the socket closes (raises)."""
        venue, conn, tap, now_ns, stats = adapter.venue.value, spec.name, self._tap, self.clock.now_ns, self.stats
        recv, on_ws, dispatch = ws.recv, adapter.on_ws, self._dispatch
        while True:
            frame = await recv()
            ts = now_ns()
            stats.frames += 1
            status.frames += 1
            if isinstance(frame, bytes):
                try:
                    frame = frame.decode("utf-8")
                except UnicodeDecodeError:
                    stats.undecodable_frames += 1
                    continue
            if tap is not None:
                tap(Record(ts, venue, "ws", conn, frame))
            on_ws(frame, ts, conn)
            dispatch(adapter)

    async def _supervise(
        self, adapter: VenueAdapter, ws: ClientConnection, status: ConnectionStatus, ended_by: list[str]
    ) -> None:
        """Beside each open socket: the watchdog, the age limit and the Bybit app ping, on a coarse tick.

        Silence is measured by the frame counter, so the hot path pays nothing for it (a timeout around
        every ``recv`` costs more than the rest of the frame's handling). A trip closes the socket with
        the reason in ``ended_by``; the reader then sees the close and ``run_connection`` reconnects.
        """
        cfg = self.settings.reconnect
        loop = asyncio.get_running_loop()
        ping = adapter.ping_payload()
        ping_s = cfg.bybit_ping_s if ping is not None else math.inf
        tick = min(TICK_S, cfg.watchdog_s / 4, cfg.max_connection_age_s / 4, ping_s / 4)
        started = loop.time()
        next_ping = started + ping_s
        seen, quiet_since = status.frames, started
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if status.frames != seen:
                seen, quiet_since = status.frames, now
            if now - quiet_since >= cfg.watchdog_s:
                ended_by.append("watchdog")
            elif now - started >= cfg.max_connection_age_s:
                ended_by.append("max_age")
            else:
                if ping is not None and now >= next_ping:
                    next_ping = now + ping_s
                    try:
                        await ws.send(ping)
                    except ConnectionClosed:
                        return  # the reader sees it too
                    self.stats.pings_sent += 1
                continue
            await ws.close()
            return

    # -- actions ---------------------------------------------------------------------------------
    def _dispatch(self, adapter: VenueAdapter, owner: str | None = None) -> bool:
        """Perform the adapter's queued actions; return whether ``NeedSnapshot(owner)`` was among them.

        ``owner`` is the symbol whose snapshot task is calling: its own request is reported back to it
        instead of starting a second task (one snapshot in flight per symbol).
        """
        again = False
        for action in adapter.take_actions():
            if isinstance(action, NeedSnapshot):
                key = (adapter.venue, action.symbol)
                if action.symbol == owner:
                    again = True
                elif key not in self._snapshot_inflight and self._spawn(
                    self._snapshot(adapter, action.symbol), f"snapshot:{key[0].value}:{key[1]}"
                ):
                    self._snapshot_inflight.add(key)
            elif isinstance(action, Resubscribe):
                self._spawn(
                    self._resubscribe(adapter, action.symbol), f"resubscribe:{adapter.venue.value}:{action.symbol}"
                )
        return again

    async def _snapshot(self, adapter: VenueAdapter, symbol: str) -> None:
        """Fetch ``symbol``'s depth snapshot until the adapter stops asking; one task per (venue, symbol).

        Attempts for one book are spaced by a per-symbol capped exponential backoff
        (``BookConfig.resync_backoff_*``) that resets only when the book goes LIVE. A failed request
        delays the next attempt, and so does a snapshot that did not bring the book in sync (Binance:
        older than the buffered stream), whether the adapter asks again at once or on a later frame. A
        429/418 waits at least its Retry-After. After a failure the book still needs a snapshot, so the
        task retries (after ``on_snapshot_failed``) even if the adapter did not ask again.
        """
        key = (adapter.venue, symbol)
        backoff = self._snapshot_backoff_for(key)
        loop = asyncio.get_running_loop()
        slog = log.bind(venue=adapter.venue.value, symbol=symbol)
        try:
            while True:
                wait = self._snapshot_not_before.get(key, 0.0) - loop.time()
                if wait > 0:
                    await self._sleep(wait)
                url = adapter.snapshot_url(symbol)
                if url is None:
                    slog.warning("snapshot_not_available", reason="venue sends snapshots on the stream")
                    return
                assert self.rest is not None
                self.stats.snapshot_attempts += 1
                try:
                    _, body = await self.rest.get_text(url)
                except VenueError as e:
                    self.stats.snapshot_failures += 1
                    self._count_rest_error(e)
                    delay = max(e.retry_after if isinstance(e, RateLimited) else 0.0, backoff.next())
                    self._snapshot_not_before[key] = loop.time() + delay
                    slog.warning("snapshot_failed", error=str(e), attempt=backoff.attempts, retry_in_s=round(delay, 3))
                    adapter.on_snapshot_failed(symbol, str(e))
                    self._dispatch(adapter, owner=symbol)
                    continue
                ts = self.clock.now_ns()
                if self._tap is not None:
                    self._tap(Record(ts, adapter.venue.value, "snapshot", symbol, body))
                # Set before on_snapshot: if the book goes LIVE right away, _on_health clears it.
                self._snapshot_not_before[key] = loop.time() + backoff.next()
                adapter.on_snapshot(symbol, body, ts)
                self.stats.snapshots_applied += 1
                if not self._dispatch(adapter, owner=symbol):
                    return
        finally:
            self._snapshot_inflight.discard(key)

    def _snapshot_backoff_for(self, key: tuple[Venue, str]) -> Backoff:
        backoff = self._snapshot_backoff.get(key)
        if backoff is None:
            book = self.settings.book
            backoff = Backoff(
                book.resync_backoff_initial_s, book.resync_backoff_max_s, self.settings.reconnect.jitter, self._rng
            )
            self._snapshot_backoff[key] = backoff
        return backoff

    async def _resubscribe(self, adapter: VenueAdapter, symbol: str) -> None:
        conn = self._book_conn.get((adapter.venue, symbol))
        ws = self._sockets.get((adapter.venue, conn)) if conn is not None else None
        if ws is None:  # not connected: the reconnect subscribes afresh anyway
            return
        self.stats.resubscribes += 1
        try:
            for payload in adapter.resubscribe_payloads(symbol):
                await ws.send(payload)
        except ConnectionClosed:
            pass  # the connection's own loop notices and reconnects

    # -- kline backfill --------------------------------------------------------------------------
    def backfill_intervals(self, cfg: VenueConfig) -> tuple[str, ...]:
        """The venue's streamed intervals, then every model resolution, so each window starts warm."""
        return tuple(dict.fromkeys((*cfg.klines, *self.settings.klines.resolutions)))

    async def _backfill_one(self, adapter: VenueAdapter, symbol: str, interval: str, limit: int) -> None:
        assert self.rest is not None
        url = adapter.klines_url(symbol, interval, limit)
        rc = self.settings.reconnect
        backoff = Backoff(rc.initial_s, rc.max_s, rc.jitter, self._rng)
        for attempt in range(1, BACKFILL_ATTEMPTS + 1):
            try:
                _, body = await self.rest.get_text(url)
            except VenueError as e:
                self._count_rest_error(e)
                last = attempt == BACKFILL_ATTEMPTS or isinstance(e, RateLimited)  # a ban is not waited out here
                if last:
                    self.stats.backfill_failures += 1
                    log.warning(
                        "klines_backfill_failed",
                        venue=adapter.venue.value,
                        symbol=symbol,
                        interval=interval,
                        error=str(e),
                    )
                    return
                await self._sleep(backoff.next())
                continue
            ts = self.clock.now_ns()
            if self._tap is not None:
                self._tap(Record(ts, adapter.venue.value, "klines", f"{symbol}:{interval}", body))
            klines = adapter.parse_klines(symbol, interval, body, ts)
            for k in klines:
                self.bus.publish(k)
            self.stats.klines_backfilled += len(klines)
            return

    def _count_rest_error(self, e: VenueError) -> None:
        self.stats.rest_errors += 1
        if isinstance(e, RateLimited):
            self.stats.rate_limited += 1

    # -- status ----------------------------------------------------------------------------------
    @property
    def stats(self) -> CollectorStats:
        """The counters, with ``malformed_frames`` brought up to date from the adapters' counts."""
        s = self._stats
        s.malformed_frames = s.undecodable_frames + sum(a.stats.malformed for a in self.adapters.values())
        return s

    def _on_book_update(self, ev: BookUpdate) -> None:
        view = self._books.get((ev.venue, ev.symbol))
        if view is not None:
            view.events += 1
            view.bid_px = ev.bid_px
            view.ask_px = ev.ask_px

    def _on_trade(self, ev: Trade) -> None:
        view = self._books.get((ev.venue, ev.symbol))
        if view is not None:
            view.events += 1

    def _on_health(self, ev: BookHealth) -> None:
        key = (ev.venue, ev.symbol)
        view = self._books.get(key)
        if view is not None:
            view.state = ev.state
        if ev.state is BookState.LIVE:  # in sync: the next resync starts without delay
            backoff = self._snapshot_backoff.get(key)
            if backoff is not None:
                backoff.reset()
            self._snapshot_not_before.pop(key, None)

    def status(self) -> CollectorStatus:
        """A snapshot for the status display: per book and per connection, plus the counters."""
        return collector_status(self._books, self.adapters, self.connections.values(), self.stats)

    def get_book(self, venue: Venue, symbol: str) -> BookLevels | None:
        """The adapter's local book for ``symbol`` (any object with ``top(n)``), or None.

        The adapter contract does not name its books; the venue adapters keep them in ``books``.
        """
        adapter = self.adapters.get(venue)
        books = getattr(adapter, "books", None)
        if not isinstance(books, dict):
            return None
        book = books.get(symbol)
        return book if isinstance(book, BookLevels) else None


def _leaves(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out.extend(_leaves(e))
        else:
            out.append(e)
    return out


__all__ = [
    "HEALTHY_FRAMES",
    "AdapterFactory",
    "Collector",
    "Tap",
]
