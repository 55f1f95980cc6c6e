"""The collector's I/O loop against a fake adapter and a tiny websocket + REST server on 127.0.0.1:0.

The fake adapter speaks a toy protocol so each test can steer the collector: a frame ``need:SYM`` makes
it queue ``NeedSnapshot(SYM)``, ``resub:SYM`` queues ``Resubscribe(SYM)``. Everything the collector does
to it is appended to one shared ``journal`` so the order of tap and adapter calls can be asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from bot.backoff import Backoff
from bot.book import OrderBook
from bot.bus import EventBus
from bot.config import BookConfig, BotSettings, VenueConfig
from bot.errors import ConfigError
from bot.events import BookHealth, BookState, BookUpdate, KlineClosed, Venue
from bot.feed import HEALTHY_FRAMES, Collector
from bot.feed_status import _BookView
from bot.recording import Record
from bot.venues.base import Action, ConnectionSpec, NeedSnapshot, Publish, Resubscribe, VenueAdapter

pytestmark = pytest.mark.unit

VENUE = Venue.BINANCE_SPOT
SUBSCRIBE = '{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}'
SNAPSHOT = '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}'
KLINES = json.dumps(
    [[1_700_000_000_000, "1.5", "2.5", "1.0", "2.0", "10"], [1_700_000_060_000, "2", "3", "2", "3", "4"]]
)


class StepClock:
    """Every reading is 1 µs later than the last: each timestamp taken is distinct and ordered."""

    def __init__(self) -> None:
        self.t = 1_786_310_818_000_000_000

    def now_ns(self) -> int:
        self.t += 1_000
        return self.t

    def monotonic_ns(self) -> int:
        self.t += 1_000
        return self.t


class FakeAdapter(VenueAdapter):
    venue = VENUE

    def __init__(
        self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, journal: list[tuple[Any, ...]]
    ) -> None:
        super().__init__(cfg, book_cfg, publish, live=True)
        self.journal = journal
        self.actions: list[Action] = []
        self.ping: str | None = None
        self.stale_checks = 0
        self.resnapshot_after_success = 0  # ask again this many times after an applied snapshot
        self.books: dict[str, OrderBook] = {}

    def connections(self) -> list[ConnectionSpec]:
        return [
            ConnectionSpec(
                name="binance_spot/depth", url=self.cfg.ws_url, subscribe=(SUBSCRIBE,), symbols=self.cfg.symbols
            )
        ]

    def resubscribe_payloads(self, symbol: str) -> list[str]:
        return [f'{{"unsub":"{symbol}"}}', f'{{"sub":"{symbol}"}}']

    def ping_payload(self) -> str | None:
        return self.ping

    def snapshot_url(self, symbol: str) -> str | None:
        return f"{self.cfg.rest_url}/api/v3/depth?symbol={symbol}&limit=1000"

    def klines_url(self, symbol: str, interval: str, limit: int) -> str:
        return f"{self.cfg.rest_url}/api/v3/klines?symbol={symbol}&interval={interval}&limit={limit}"

    def on_ws(self, raw: str | bytes, ts_recv: int, conn: str = "-") -> None:
        self.stats.messages += 1
        self.journal.append(("ws", raw, ts_recv, conn))
        assert isinstance(raw, str)
        if raw.startswith("need:"):
            self.actions.append(NeedSnapshot(raw[5:]))
        elif raw.startswith("resub:"):
            self.actions.append(Resubscribe(raw[6:]))
        elif raw.startswith("top:"):
            bid, ask = raw[4:].split("/")
            self.publish(
                BookUpdate(
                    ts_event=1,
                    ts_recv=ts_recv,
                    venue=VENUE,
                    symbol="BTCUSDT",
                    update_id=1,
                    bid_px=float(bid),
                    bid_sz=1.0,
                    ask_px=float(ask),
                    ask_sz=2.0,
                )
            )
            self.publish(
                BookHealth(
                    ts_event=1, ts_recv=ts_recv, venue=VENUE, symbol="BTCUSDT", state=BookState.LIVE, reason="synced"
                )
            )

    def on_snapshot(self, symbol: str, raw: str | bytes, ts_recv: int) -> None:
        self.journal.append(("snapshot", symbol, raw, ts_recv))
        if self.resnapshot_after_success > 0:
            self.resnapshot_after_success -= 1
            self.actions.append(NeedSnapshot(symbol))

    def on_snapshot_failed(self, symbol: str, reason: str) -> None:
        self.journal.append(("snapshot_failed", symbol, reason))

    def parse_klines(self, symbol: str, interval: str, raw: str | bytes, ts_recv: int) -> list[KlineClosed]:
        self.journal.append(("klines", symbol, interval))
        return [
            KlineClosed(
                ts_event=(row[0] + 60_000) * 1_000_000,
                ts_recv=ts_recv,
                venue=VENUE,
                symbol=symbol,
                interval_s=60,
                open_time_ms=row[0],
                open=float(row[1]),
                high=float(row[2]),
                low=float(row[3]),
                close=float(row[4]),
                volume=float(row[5]),
                source="rest",
            )
            for row in json.loads(raw)
        ]

    def on_disconnect(self, conn: str, ts_recv: int) -> None:
        self.journal.append(("disconnect", conn, ts_recv))

    def check_stale(self, now_ns: int) -> None:
        self.stale_checks += 1

    def take_actions(self) -> list[Action]:
        out, self.actions = self.actions, []
        return out


@dataclass
class FakeVenue:
    """A websocket server and a REST server on 127.0.0.1:0, both steerable from the test."""

    ws_url: str = ""
    rest_url: str = ""
    conns: list[ServerConnection] = field(default_factory=list)
    received: list[list[str]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    rest_hits: list[str] = field(default_factory=list)
    snapshot_replies: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)  # popped per request
    snapshot_gate: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handler(self, ws: ServerConnection) -> None:
        index = len(self.conns)
        self.conns.append(ws)
        self.received.append([])
        self.close_codes.append(None)
        async with self.connected:
            self.connected.notify_all()
        try:
            async for msg in ws:
                self.received[index].append(str(msg))
        except Exception:
            pass
        self.close_codes[index] = ws.close_code

    async def depth(self, request: web.Request) -> web.Response:
        self.rest_hits.append(request.path_qs)
        await self.snapshot_gate.wait()
        status, body, headers = self.snapshot_replies.pop(0) if self.snapshot_replies else (200, SNAPSHOT, {})
        return web.Response(status=status, text=body, headers=headers)

    async def klines(self, request: web.Request) -> web.Response:
        self.rest_hits.append(request.path_qs)
        return web.Response(text=KLINES)


@pytest.fixture
async def venue() -> AsyncIterator[FakeVenue]:
    fv = FakeVenue()
    fv.snapshot_gate.set()
    app = web.Application()
    app.router.add_get("/api/v3/depth", fv.depth)
    app.router.add_get("/api/v3/klines", fv.klines)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fv.rest_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with serve(fv.handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fv.ws_url = f"ws://127.0.0.1:{port}/stream"
        try:
            yield fv
        finally:
            await stop_all()  # clients first: a reconnect racing the server's shutdown leaks a socket
            fv.snapshot_gate.set()
            for c in fv.conns:
                await c.close()
    await runner.cleanup()


def make_settings(fv: FakeVenue, **reconnect: float) -> BotSettings:
    venues: dict[str, Any] = {v.value: {"enabled": False} for v in Venue}
    venues[VENUE.value] = {
        "ws_url": fv.ws_url,
        "rest_url": fv.rest_url,
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "klines": ["1m"],
    }
    rc = {"initial_s": 0.01, "max_s": 0.05, "jitter": 0.0, "watchdog_s": 30.0} | reconnect
    return BotSettings(
        venues=venues,
        reconnect=rc,
        book={"resync_backoff_initial_s": 0.01, "resync_backoff_max_s": 0.05},
        klines={"resolutions": ["1m"], "backfill": 0},
    )


@dataclass
class Harness:
    collector: Collector
    adapter: FakeAdapter
    journal: list[tuple[Any, ...]]
    taps: list[Record]
    bus: EventBus
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.collector.run())
        RUNNING.append(self)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


RUNNING: list[Harness] = []


async def stop_all() -> None:
    """Cancel every collector a test left running (a failed assertion skips its own stop)."""
    while RUNNING:
        h = RUNNING.pop()
        if h.task is not None and not h.task.done():
            h.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await h.task


@pytest.fixture(autouse=True)
async def _no_collector_outlives_its_test() -> AsyncIterator[None]:
    yield
    await stop_all()


async def eventually(cond: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
    """Poll ``cond`` (state owned by the code under test, no event to wait on) for up to ``within_s``."""
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    assert cond(), what


async def wait_conns(fv: FakeVenue, n: int) -> ServerConnection:
    async with asyncio.timeout(5.0), fv.connected:
        await fv.connected.wait_for(lambda: len(fv.conns) >= n)
    return fv.conns[n - 1]


def build(fv: FakeVenue, settings: BotSettings | None = None, **kw: Any) -> Harness:
    journal: list[tuple[Any, ...]] = []
    taps: list[Record] = []
    made: list[FakeAdapter] = []

    def factory(v: Venue, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish) -> VenueAdapter:
        a = FakeAdapter(cfg, book_cfg, publish, journal)
        made.append(a)
        return a

    def tap(rec: Record) -> None:
        taps.append(rec)
        journal.append(("tap", rec.kind, rec.key, rec.raw))

    bus = EventBus()
    coll = Collector(
        settings or make_settings(fv), bus, StepClock(), tap=tap, adapter_factory=factory, rng=random.Random(1), **kw
    )
    return Harness(coll, made[0], journal, taps, bus)


@pytest.fixture
async def harness(venue: FakeVenue) -> AsyncIterator[Harness]:
    h = build(venue)
    yield h
    if h.task is not None and not h.task.done():
        await h.stop()


# -- Backoff -------------------------------------------------------------------------------------


def test_backoff_doubles_from_initial_caps_at_max_and_resets() -> None:
    b = Backoff(0.5, 4.0, 0.0, random.Random(0))
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_the_configured_fraction() -> None:
    b = Backoff(1.0, 1.0, 0.25, random.Random(7))
    delays = [b.next() for _ in range(200)]
    assert all(0.75 <= d <= 1.25 for d in delays)
    assert len(set(delays)) > 100  # actually jittered


# -- frames --------------------------------------------------------------------------------------


async def test_subscribes_then_delivers_frames_in_order_with_the_tap_before_the_adapter(
    venue: FakeVenue, harness: Harness
) -> None:
    # Arrange
    await harness.start()
    server = await wait_conns(venue, 1)
    await eventually(lambda: venue.received[0] == [SUBSCRIBE], "subscribe frame sent")

    # Act
    for i in range(3):
        await server.send(f'{{"n":{i}}}')
    await eventually(lambda: sum(e[0] == "ws" for e in harness.journal) == 3, "3 frames delivered")

    # Assert: each frame is tapped, then handed to the adapter, with the same receive time and conn
    ws_events = [e for e in harness.journal if e[0] in ("tap", "ws")]
    conn = "binance_spot/depth"
    assert ws_events == [
        ("tap", "ws", conn, '{"n":0}'),
        ws_events[1],
        ("tap", "ws", conn, '{"n":1}'),
        ws_events[3],
        ("tap", "ws", conn, '{"n":2}'),
        ws_events[5],
    ]
    assert [e[1] for e in ws_events[1::2]] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert [e[3] for e in ws_events[1::2]] == ["binance_spot/depth"] * 3
    assert [r.ts_recv for r in harness.taps] == [e[2] for e in ws_events[1::2]]
    assert harness.taps[0] == Record(harness.taps[0].ts_recv, "binance_spot", "ws", "binance_spot/depth", '{"n":0}')
    assert harness.collector.stats.frames == 3
    st = harness.collector.status()
    assert [(c["name"], c["connected"], c["reconnects"], c["frames"]) for c in st["connections"]] == [
        ("binance_spot/depth", True, 0, 3)
    ]


async def test_binary_frames_are_decoded_as_utf8_and_undecodable_ones_are_counted_and_dropped(
    venue: FakeVenue, harness: Harness
) -> None:
    await harness.start()
    server = await wait_conns(venue, 1)
    await server.send(b'{"price":"61837.63"}')
    await server.send(b"\xff\xfe\x00garbage")
    await server.send("after")
    await eventually(lambda: any(e[:2] == ("ws", "after") for e in harness.journal), "third frame")
    assert [e[1] for e in harness.journal if e[0] == "ws"] == ['{"price":"61837.63"}', "after"]
    assert harness.collector.stats.undecodable_frames == 1
    assert harness.collector.stats.malformed_frames == 1
    assert [r.raw for r in harness.taps] == ['{"price":"61837.63"}', "after"]


async def test_binance_style_server_ping_frames_are_answered_by_the_library(venue: FakeVenue, harness: Harness) -> None:
    await harness.start()
    server = await wait_conns(venue, 1)
    pong = await server.ping(b"20s-heartbeat")
    async with asyncio.timeout(2.0):
        latency = await pong
    assert latency >= 0.0
    assert not any(e[0] == "ws" for e in harness.journal)  # control frames are not data


async def test_bybit_style_app_ping_is_sent_periodically_and_its_pong_reaches_the_adapter(
    venue: FakeVenue,
) -> None:
    h = build(venue, make_settings(venue, bybit_ping_s=0.05))
    h.adapter.ping = '{"op":"ping"}'
    await h.start()
    server = await wait_conns(venue, 1)
    await eventually(lambda: venue.received[0].count('{"op":"ping"}') >= 2, "two pings")
    await server.send('{"success":true,"ret_msg":"pong","conn_id":"x","op":"pong"}')
    await eventually(lambda: any(e[0] == "ws" and "pong" in e[1] for e in h.journal), "pong delivered")
    assert h.collector.stats.pings_sent >= 2
    assert venue.received[0][0] == SUBSCRIBE
    await h.stop()


# -- snapshots and resubscribe -------------------------------------------------------------------


async def test_need_snapshot_fetches_rest_once_per_symbol_and_taps_the_body_before_on_snapshot(
    venue: FakeVenue, harness: Harness
) -> None:
    # Arrange: hold the REST reply so several requests pile up while the first is in flight
    venue.snapshot_gate.clear()
    await harness.start()
    server = await wait_conns(venue, 1)

    # Act
    for _ in range(3):
        await server.send("need:BTCUSDT")
    await server.send("need:ETHUSDT")
    await eventually(lambda: len(venue.rest_hits) == 2, "one request per symbol")
    venue.snapshot_gate.set()
    await eventually(lambda: sum(e[0] == "snapshot" for e in harness.journal) == 2, "both applied")

    # Assert
    assert sorted(venue.rest_hits) == [
        "/api/v3/depth?symbol=BTCUSDT&limit=1000",
        "/api/v3/depth?symbol=ETHUSDT&limit=1000",
    ]
    snaps = [e for e in harness.journal if e[0] == "snapshot"]
    assert {e[1] for e in snaps} == {"BTCUSDT", "ETHUSDT"}
    assert all(e[2] == SNAPSHOT for e in snaps)
    for sym in ("BTCUSDT", "ETHUSDT"):
        tap_i = harness.journal.index(("tap", "snapshot", sym, SNAPSHOT))
        snap_i = next(i for i, e in enumerate(harness.journal) if e[0] == "snapshot" and e[1] == sym)
        assert tap_i < snap_i
    recs = [r for r in harness.taps if r.kind == "snapshot"]
    assert sorted((r.venue, r.key, r.raw) for r in recs) == [
        ("binance_spot", "BTCUSDT", SNAPSHOT),
        ("binance_spot", "ETHUSDT", SNAPSHOT),
    ]
    assert {e[3] for e in snaps} == {r.ts_recv for r in recs}
    assert harness.collector.stats.snapshot_attempts == 2
    assert harness.collector.stats.snapshots_applied == 2


async def test_failed_snapshots_are_reported_then_retried_with_backoff_and_rate_limits_wait_retry_after(
    venue: FakeVenue,
) -> None:
    # Arrange: 503, then 429 with Retry-After: 0 (gate passes at once), then success
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    settings = make_settings(venue)
    book = settings.book.model_copy(update={"resync_backoff_initial_s": 0.5, "resync_backoff_max_s": 4.0})
    h = build(venue, settings.model_copy(update={"book": book}), sleep=fake_sleep)
    venue.snapshot_replies = [(503, "busy", {}), (429, '{"code":-1003}', {"Retry-After": "0"})]
    await h.start()
    server = await wait_conns(venue, 1)

    # Act
    await server.send("need:BTCUSDT")
    await eventually(lambda: any(e[0] == "snapshot" for e in h.journal), "applied at last")

    # Assert
    kinds = [e[0] for e in h.journal if e[0].startswith("snapshot")]
    assert kinds == ["snapshot_failed", "snapshot_failed", "snapshot"]
    fails = [e for e in h.journal if e[0] == "snapshot_failed"]
    assert "HTTP 503" in fails[0][2]
    assert "rate limit (429)" in fails[1][2]
    # what was left of 0.5 s, then of 1.0 s (doubling, jitter 0) when the next attempt came up
    assert len(delays) == 2
    assert 0.0 < delays[0] <= 0.5
    assert 0.5 < delays[1] <= 1.0
    s = h.collector.stats
    assert (s.snapshot_attempts, s.snapshot_failures, s.snapshots_applied) == (3, 2, 1)
    assert (s.rest_errors, s.rate_limited) == (2, 1)
    assert len(venue.rest_hits) == 3
    assert [r.kind for r in h.taps if r.kind != "ws"] == ["snapshot"]  # only the body used is tapped
    await h.stop()


async def test_a_rate_limited_snapshot_waits_at_least_retry_after(venue: FakeVenue) -> None:
    delays: list[float] = []
    done = asyncio.Event()

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        done.set()
        await asyncio.Event().wait()  # park: one retry decision is all this test needs

    h = build(venue, sleep=fake_sleep)
    venue.snapshot_replies = [(418, "banned", {"Retry-After": "90"})]
    await h.start()
    server = await wait_conns(venue, 1)
    await server.send("need:BTCUSDT")
    async with asyncio.timeout(5):
        await done.wait()
    assert delays == [pytest.approx(90.0, abs=0.1)]
    assert h.collector.rest is not None
    assert h.collector.rest.blocked_for(venue.rest_url) > 80.0
    await h.stop()


async def test_a_snapshot_the_adapter_asks_for_again_right_away_is_refetched_by_the_same_task(
    venue: FakeVenue, harness: Harness
) -> None:
    harness.adapter.resnapshot_after_success = 1  # e.g. Binance: snapshot older than the buffered diffs
    await harness.start()
    server = await wait_conns(venue, 1)
    await server.send("need:BTCUSDT")
    await eventually(lambda: sum(e[0] == "snapshot" for e in harness.journal) == 2, "fetched twice")
    await asyncio.sleep(0.05)
    assert len(venue.rest_hits) == 2
    assert harness.collector.stats.snapshots_applied == 2


async def test_snapshots_that_do_not_bring_the_book_live_are_spaced_by_backoff_until_it_goes_live(
    venue: FakeVenue,
) -> None:
    # Arrange
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    settings = make_settings(venue)
    book = settings.book.model_copy(update={"resync_backoff_initial_s": 0.5, "resync_backoff_max_s": 1.0})
    h = build(venue, settings.model_copy(update={"book": book}), sleep=fake_sleep)
    await h.start()
    server = await wait_conns(venue, 1)

    # Act: a snapshot that leaves the book out of sync, a second request on a later frame, then LIVE
    await server.send("need:BTCUSDT")
    await eventually(lambda: len(venue.rest_hits) == 1, "first fetch")
    await eventually(lambda: not h.collector._snapshot_inflight, "first task done")
    await server.send("need:BTCUSDT")
    await eventually(lambda: len(venue.rest_hits) == 2, "second fetch")
    await eventually(lambda: not h.collector._snapshot_inflight, "second task done")
    await server.send("top:61837.63/61837.64")  # the book goes LIVE
    await server.send("need:BTCUSDT")  # a later gap
    await eventually(lambda: len(venue.rest_hits) == 3, "third fetch")

    # Assert: only the second request waited (the rest of resync_backoff_initial_s); LIVE reset the backoff
    assert len(delays) == 1
    assert 0.0 < delays[0] <= 0.5
    await h.stop()


async def test_resubscribe_sends_the_adapters_payloads_on_the_books_connection(
    venue: FakeVenue, harness: Harness
) -> None:
    await harness.start()
    server = await wait_conns(venue, 1)
    await server.send("resub:ETHUSDT")
    await eventually(lambda: len(venue.received[0]) == 3, "two payloads after the subscribe")
    assert venue.received[0] == [SUBSCRIBE, '{"unsub":"ETHUSDT"}', '{"sub":"ETHUSDT"}']
    assert harness.collector.stats.resubscribes == 1


# -- reconnects ----------------------------------------------------------------------------------


async def test_server_disconnect_calls_on_disconnect_then_reconnects_and_subscribes_again(
    venue: FakeVenue, harness: Harness
) -> None:
    await harness.start()
    first = await wait_conns(venue, 1)
    await eventually(lambda: venue.received[0] == [SUBSCRIBE], "subscribed")

    await first.close(code=1011, reason="restarting")
    second = await wait_conns(venue, 2)
    await eventually(lambda: venue.received[1] == [SUBSCRIBE], "subscribed again")
    await second.send("hello again")
    await eventually(lambda: any(e[:2] == ("ws", "hello again") for e in harness.journal), "data flows")

    disconnects = [e for e in harness.journal if e[0] == "disconnect"]
    assert [e[1] for e in disconnects] == ["binance_spot/depth"]
    st = harness.collector.status()
    assert st["stats"]["reconnects"] == 1
    assert st["stats"]["watchdog_trips"] == 0
    assert [(c["connected"], c["reconnects"]) for c in st["connections"]] == [(True, 1)]
    assert "1011" in st["connections"][0]["last_error"]


async def test_a_busy_connection_closed_by_the_venue_resets_the_backoff(venue: FakeVenue) -> None:
    # Arrange: every connection delivers HEALTHY_FRAMES frames, then the venue restarts (1001)
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    h = build(venue, make_settings(venue, initial_s=0.5, max_s=8.0), sleep=fake_sleep)
    await h.start()

    # Act
    for n in (1, 2, 3):
        server = await wait_conns(venue, n)
        for i in range(HEALTHY_FRAMES):
            await server.send(f'{{"i":{i}}}')
        await eventually(lambda n=n: h.collector.status()["connections"][0]["frames"] >= n * HEALTHY_FRAMES, "read")
        await server.close(code=1001, reason="going away")
    await wait_conns(venue, 4)

    # Assert: each reconnect waited the initial delay, not 0.5, 1, 2
    assert delays == [0.5, 0.5, 0.5]
    assert h.collector.stats.reconnects == 3


async def test_a_silent_connection_trips_the_watchdog_and_is_replaced(venue: FakeVenue) -> None:
    h = build(venue, make_settings(venue, watchdog_s=0.2))
    await h.start()
    await wait_conns(venue, 1)
    await wait_conns(venue, 2)  # nothing was sent on the first: the watchdog closed it
    await eventually(lambda: venue.close_codes[0] is not None, "first closed")
    assert venue.close_codes[0] == 1000  # we closed it, cleanly
    assert h.collector.stats.watchdog_trips >= 1
    assert h.collector.stats.reconnects >= 1
    assert [e[1] for e in h.journal if e[0] == "disconnect"][:1] == ["binance_spot/depth"]
    await h.stop()


async def test_connections_are_renewed_before_their_maximum_age_without_backoff(venue: FakeVenue) -> None:
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    h = build(venue, make_settings(venue, max_connection_age_s=0.15), sleep=fake_sleep)
    await h.start()
    await wait_conns(venue, 3)
    assert h.collector.stats.proactive_reconnects >= 2
    assert h.collector.stats.watchdog_trips == 0
    assert delays[:2] == [0.0, 0.0]
    await h.stop()


async def test_failed_connects_back_off_exponentially_until_the_venue_returns() -> None:
    # Arrange: a port with nothing listening
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fv = FakeVenue(ws_url=f"ws://127.0.0.1:{port}/ws", rest_url=f"http://127.0.0.1:{port}")
    delays: list[float] = []
    three = asyncio.Event()

    async def fake_sleep(d: float) -> None:
        delays.append(d)
        if len(delays) >= 4:
            three.set()
            await asyncio.Event().wait()
        await asyncio.sleep(0)

    h = build(fv, make_settings(fv, initial_s=0.5, max_s=2.0), sleep=fake_sleep)
    await h.start()
    async with asyncio.timeout(5):
        await three.wait()
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert h.collector.stats.connect_failures == 4
    assert h.collector.stats.reconnects == 0
    assert not any(e[0] == "disconnect" for e in h.journal)  # never opened: books untouched
    await h.stop()


async def test_an_invalid_websocket_url_stops_the_collector_with_a_config_error(venue: FakeVenue) -> None:
    venue.ws_url = "not-a-url"
    h = build(venue)
    with pytest.raises(ConfigError, match="invalid websocket URL"):
        async with asyncio.timeout(5):
            await h.collector.run()


async def test_cancelling_run_closes_the_socket_cleanly(venue: FakeVenue, harness: Harness) -> None:
    await harness.start()
    await wait_conns(venue, 1)
    await eventually(lambda: harness.collector.status()["connections"][0]["connected"], "client side open")
    await harness.stop()
    await eventually(lambda: venue.close_codes[0] is not None, "server saw the close")
    assert venue.close_codes[0] == 1000
    assert harness.collector.rest is None


# -- backfill, stale checks, status --------------------------------------------------------------


async def test_kline_backfill_publishes_closed_candles_and_taps_the_body(venue: FakeVenue) -> None:
    settings = make_settings(venue)
    settings = settings.model_copy(update={"klines": settings.klines.model_copy(update={"backfill": 2})})
    h = build(venue, settings)
    got: list[KlineClosed] = []
    h.bus.subscribe(KlineClosed, got.append)
    await h.start()
    await eventually(lambda: h.collector.stats.klines_backfilled == 4, "backfill done")

    assert sorted(r for r in venue.rest_hits if "klines" in r) == [
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=2",
        "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=2",
    ]
    btc = [k for k in got if k.symbol == "BTCUSDT"]
    assert [(k.open_time_ms, k.open, k.high, k.low, k.close, k.volume) for k in btc] == [
        (1_700_000_000_000, 1.5, 2.5, 1.0, 2.0, 10.0),
        (1_700_000_060_000, 2.0, 3.0, 2.0, 3.0, 4.0),
    ]
    assert {(r.kind, r.key, r.raw) for r in h.taps} == {
        ("klines", "BTCUSDT:1m", KLINES),
        ("klines", "ETHUSDT:1m", KLINES),
    }
    assert h.collector.stats.klines_backfilled == 4
    await h.stop()


def test_backfill_covers_the_streamed_interval_and_every_model_resolution() -> None:
    fv = FakeVenue(ws_url="ws://127.0.0.1:1/ws", rest_url="http://127.0.0.1:1")
    settings = make_settings(fv)
    settings = settings.model_copy(
        update={"klines": settings.klines.model_copy(update={"resolutions": ("1m", "5m", "15m", "1h")})}
    )
    h = build(fv, settings)
    assert h.collector.backfill_intervals(h.adapter.cfg) == ("1m", "5m", "15m", "1h")


async def test_status_reports_book_state_top_of_book_and_adapter_counters(venue: FakeVenue, harness: Harness) -> None:
    await harness.start()
    server = await wait_conns(venue, 1)
    harness.adapter.stats.gaps["BTCUSDT"] = 2
    harness.adapter.stats.resyncs["BTCUSDT"] = 3
    harness.adapter.stats.crossed["BTCUSDT"] = 1
    await server.send("top:61837.63/61837.64")
    await eventually(lambda: harness.collector.status()["books"][0]["state"] == "live", "live")
    await eventually(lambda: harness.adapter.stale_checks >= 1, "check_stale ticked")

    st = harness.collector.status()
    btc, eth = st["books"]
    assert btc == {
        "venue": "binance_spot",
        "symbol": "BTCUSDT",
        "state": "live",
        "bid_px": 61837.63,
        "ask_px": 61837.64,
        "msgs_per_s": btc["msgs_per_s"],
        "gaps": 2,
        "resyncs": 3,
        "crossed": 1,
    }
    assert (eth["symbol"], eth["state"], eth["gaps"], eth["resyncs"]) == ("ETHUSDT", "syncing", 0, 0)
    assert (eth["bid_px"], eth["ask_px"]) == (None, None)  # no top of book yet: unknown, not nan
    json.dumps(st, allow_nan=False)  # strict JSON for the status display


async def test_an_empty_side_of_the_book_is_none_in_the_status_and_the_status_is_strict_json(
    venue: FakeVenue, harness: Harness
) -> None:
    await harness.start()
    server = await wait_conns(venue, 1)
    await server.send("top:nan/61837.64")  # the venue adapters publish nan for an empty side
    await eventually(lambda: harness.collector.status()["books"][0]["state"] == "live", "live")
    st = harness.collector.status()
    assert (st["books"][0]["bid_px"], st["books"][0]["ask_px"]) == (None, 61837.64)
    text = json.dumps({"status": st}, allow_nan=False)
    assert "NaN" not in text
    assert "Infinity" not in text


def test_the_malformed_frames_counter_is_the_adapters_drops_plus_the_undecodable_frames() -> None:
    fv = FakeVenue(ws_url="ws://127.0.0.1:1/ws", rest_url="http://127.0.0.1:1")
    h = build(fv)
    assert h.collector.stats.malformed_frames == 0
    h.adapter.stats.malformed = 16  # e.g. 16 malformed_frame_dropped lines from the adapter
    h.collector.stats.undecodable_frames = 2
    assert h.collector.stats.malformed_frames == 18
    assert h.collector.status()["stats"]["malformed_frames"] == 18
    h.adapter.stats.malformed += 1
    assert h.collector.status()["stats"]["malformed_frames"] == 19  # read live, not copied once


def test_get_book_returns_the_adapters_local_book_or_none() -> None:
    fv = FakeVenue(ws_url="ws://127.0.0.1:1/ws", rest_url="http://127.0.0.1:1")
    h = build(fv)
    book = OrderBook(VENUE.value, "BTCUSDT")
    book.reset([(61837.63, 3.78826)], [(61837.64, 1.54698)], update_id=50093239218, ts_event=0)
    h.adapter.books = {"BTCUSDT": book}
    got = h.collector.get_book(VENUE, "BTCUSDT")
    assert got is book
    assert got.top(1) == ([(61837.63, 3.78826)], [(61837.64, 1.54698)])
    assert h.collector.get_book(VENUE, "ETHUSDT") is None
    assert h.collector.get_book(Venue.BYBIT_SPOT, "BTCUSDT") is None


def test_msgs_per_second_is_the_event_rate_over_the_sampled_window() -> None:
    view = _BookView()
    assert view.rate() == 0.0
    for t, n in [(0.0, 0), (1.0, 40), (2.0, 100)]:
        view.samples.append((t, n))
    assert view.rate() == 50.0
    for t in range(3, 20):
        view.samples.append((float(t), 100))
    assert view.rate() == 0.0  # the burst has left the 10 s window
