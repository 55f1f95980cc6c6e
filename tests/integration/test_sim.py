"""The loopback exchange seen from outside, with plain ``websockets`` and ``aiohttp`` clients.

The book clients below implement the official sync algorithms themselves (PROTOCOLS.md 2.4 Binance
spot, 3.4 Binance USD-M, 1.4 Bybit), independently of ``bot.book`` and of the sim's own book, so a test
that ends with ``client book == sim.reference_book`` checks both sides. Recordings come from
``conftest.py`` (real shared data; the tests skip without it). Speeds of 10-50 keep each test to seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from bot.errors import ConfigError
from bot.events import Venue
from bot.importers import import_hftbacktest, slice_records
from bot.recording_writer import RecordingWriter
from bot.sim import FaultSpec, LoopbackExchange, SimTimings
from bot.sim.cli import main as sim_main
from tests.integration.conftest import SHORT_S, SimFactory, build_recording

pytestmark = pytest.mark.integration

SPOT, USDM, BY_SPOT, BY_LINEAR = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR
DEPTH = 200  # levels compared; the clients' snapshots cover them (Binance REST 1000/5000 levels, Bybit 200)


# -- independent client-side books -----------------------------------------------------------------


class LocalBook:
    """Decimal price -> Decimal size, with the crossed-book rule (newest update wins)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for p, q in bids:
            price, size = Decimal(p), Decimal(q)
            if size == 0:
                self.bids.pop(price, None)
            else:
                self.bids[price] = size
                for a in [a for a in self.asks if a <= price]:
                    del self.asks[a]
        for p, q in asks:
            price, size = Decimal(p), Decimal(q)
            if size == 0:
                self.asks.pop(price, None)
            else:
                self.asks[price] = size
                for b in [b for b in self.bids if b >= price]:
                    del self.bids[b]

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = sorted(self.bids, reverse=True)[:n]
        asks = sorted(self.asks)[:n]
        return [(float(p), float(self.bids[p])) for p in bids], [(float(p), float(self.asks[p])) for p in asks]


class BinanceBookClient:
    """The official Binance local-book algorithm over a combined stream and REST ``/depth``."""

    def __init__(self, sim: LoopbackExchange, venue: Venue, symbol: str = "BTCUSDT", stream: str = "depth") -> None:
        self.venue = venue
        self.usdm = venue is USDM
        self.symbol = symbol
        urls = sim.urls[venue]
        self.ws_url = f"{urls.ws_url}/stream?streams={symbol.lower()}@{stream}"
        self.depth_url = f"{urls.rest_url}{'/fapi/v1' if self.usdm else '/api/v3'}/depth"
        self.limit = 1000 if self.usdm else 5000
        self.book = LocalBook()
        self.local: int | None = None  # update id of the local book; None while (re)syncing
        self.bridging = False
        self.events: list[tuple[int, int, int]] = []  # (U, u, pu) as received
        self.gaps = self.malformed = self.connections = self.snapshots = 0
        self.rest_status: list[int] = []
        self.closes: list[int | None] = []
        self.on_synced_event: Callable[[int], None] | None = None

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self._session(http)
                except ConnectionClosed as e:
                    self.closes.append(e.rcvd.code if e.rcvd is not None else None)
                except OSError:
                    self.closes.append(None)
                self.local = None
                await asyncio.sleep(0.05)

    async def _snapshot(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        while True:
            async with http.get(self.depth_url, params={"symbol": self.symbol, "limit": self.limit}) as r:
                self.rest_status.append(r.status)
                if r.status == 200:
                    self.snapshots += 1
                    body: dict[str, Any] = await r.json()
                    return body
                await asyncio.sleep(float(r.headers.get("Retry-After", "0.1")))

    async def _session(self, http: aiohttp.ClientSession) -> None:
        async with connect(self.ws_url, max_queue=None) as ws:
            self.connections += 1
            buffer: list[dict[str, Any]] = []
            snap: asyncio.Task[dict[str, Any]] | None = None
            try:
                async for raw in ws:
                    try:
                        ev = json.loads(raw)["data"]
                        first, last, prev = int(ev["U"]), int(ev["u"]), int(ev.get("pu", -1))
                    except (ValueError, KeyError, TypeError):
                        self.malformed += 1
                        continue
                    self.events.append((first, last, prev))
                    if self.local is not None:
                        self._update(ev)
                        if self.local is None:  # a gap: start over from this event
                            buffer, snap = [ev], asyncio.create_task(self._snapshot(http))
                        continue
                    buffer.append(ev)
                    if snap is None:
                        snap = asyncio.create_task(self._snapshot(http))
                    if snap.done():
                        body, snap = snap.result(), None
                        if not self._bridge(body, buffer):
                            snap = asyncio.create_task(self._snapshot(http))
                        buffer = []
            finally:
                if snap is not None:
                    snap.cancel()

    def _bridge(self, body: dict[str, Any], buffer: list[dict[str, Any]]) -> bool:
        lid = int(body["lastUpdateId"])
        if not self.usdm and lid < int(buffer[0]["U"]):
            return False  # spot step 4: snapshot older than the first buffered event
        self.book.reset(body["bids"], body["asks"])
        self.local = lid
        self.bridging = True  # the first event past the snapshot must straddle lastUpdateId
        for e in buffer:
            self._update(e)
            if self.local is None:
                return False
        return True

    def _update(self, ev: dict[str, Any]) -> None:
        assert self.local is not None
        first, last = int(ev["U"]), int(ev["u"])
        if self.bridging:
            if last < self.local or (not self.usdm and last == self.local):
                return  # older than the snapshot: dropped
            target = self.local if self.usdm else self.local + 1
            if not first <= target <= last:
                self.gaps += 1
                self.local = None
                return
            self.bridging = False
        elif last <= self.local:
            return  # stale (a duplicate or a late, reordered event): already reflected in the book
        elif self.usdm:
            if int(ev["pu"]) != self.local:
                self.gaps += 1
                self.local = None
                return
        else:
            if first > self.local + 1:
                self.gaps += 1
                self.local = None
                return
        self._apply(ev)

    def _apply(self, ev: dict[str, Any]) -> None:
        self.book.apply(ev["b"], ev["a"])
        self.local = int(ev["u"])
        if self.on_synced_event is not None:
            self.on_synced_event(self.local)


class BybitBookClient:
    """Bybit v5 orderbook rules: a snapshot resets the book, deltas must have u == previous u + 1 (a gap
    unsubscribes and subscribes again for a fresh snapshot)."""

    def __init__(
        self, sim: LoopbackExchange, venue: Venue, symbols: list[str], ping_every: float = 0.0, depth: int = 200
    ) -> None:
        self.url = sim.urls[venue].ws_url
        self.depth = depth
        self.symbols = symbols
        self.books = {s: LocalBook() for s in symbols}
        self.u: dict[str, int | None] = dict.fromkeys(symbols)
        self.gaps = self.malformed = self.snapshots = self.connections = 0
        self.u1_snapshots: list[str] = []
        self.after_u1: list[int] = []  # the u of the first delta after each u=1 snapshot
        self._reset_pending: set[str] = set()
        self.data_times: list[float] = []
        self.pong_times: list[float] = []
        self.ping_every = ping_every
        self.closes: list[int | None] = []

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except ConnectionClosed as e:
                self.closes.append(e.rcvd.code if e.rcvd is not None else None)
            self.u = dict.fromkeys(self.symbols)
            await asyncio.sleep(0.05)

    async def _pinger(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(self.ping_every)
            await ws.send('{"op":"ping"}')

    async def _session(self) -> None:
        async with connect(self.url, max_queue=None) as ws:
            self.connections += 1
            topics = [f"orderbook.{self.depth}.{s}" for s in self.symbols]
            await ws.send(json.dumps({"op": "subscribe", "args": topics}))
            pinger = asyncio.create_task(self._pinger(ws)) if self.ping_every else None
            try:
                async for raw in ws:
                    await self._on(ws, raw)
            finally:
                if pinger is not None:
                    pinger.cancel()

    async def _on(self, ws: Any, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.malformed += 1
            return
        if msg.get("op") in ("pong", "ping") or msg.get("ret_msg") == "pong":
            self.pong_times.append(time.monotonic())
            return
        topic = msg.get("topic", "")
        if not topic.startswith("orderbook."):
            return
        self.data_times.append(time.monotonic())
        d = msg["data"]
        sym = d["s"]
        if msg["type"] == "snapshot":
            self.snapshots += 1
            self.books[sym].reset(d["b"], d["a"])
            self.u[sym] = d["u"]
            if d["u"] == 1:
                self.u1_snapshots.append(sym)
                self._reset_pending.add(sym)
            return
        last = self.u[sym]
        if last is None:
            return
        if d["u"] != last + 1:
            self.gaps += 1
            self.u[sym] = None
            await ws.send(json.dumps({"op": "unsubscribe", "args": [topic]}))
            await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
            return
        if sym in self._reset_pending:
            self._reset_pending.discard(sym)
            self.after_u1.append(d["u"])
        self.books[sym].apply(d["b"], d["a"])
        self.u[sym] = d["u"]


# -- helpers ---------------------------------------------------------------------------------------


async def eventually(cond: Callable[[], bool], within: float = 15.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


@contextlib.asynccontextmanager
async def running(*coros: Awaitable[None]) -> Any:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def ref_top(sim: LoopbackExchange, venue: Venue, symbol: str) -> tuple[Any, Any]:
    ref = sim.reference_book(venue, symbol, DEPTH)
    assert ref is not None
    return ref.bids, ref.asks


async def recv_json(ws: Any, within: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), within))


async def recv_until(ws: Any, pred: Callable[[Any], bool], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if pred(msg):
            return msg


def connect(url: str, **kw: Any) -> Any:
    """A websockets client that never blocks the server's close handshake on an unread queue."""
    kw.setdefault("max_queue", None)
    kw.setdefault("close_timeout", 1)
    return websockets.connect(url, **kw)


async def send_slowly(ws: Any, text: str) -> None:
    """Binance cuts a connection that sends more than 5 frames a second (spot)."""
    await asyncio.sleep(0.25)
    await ws.send(text)


async def read_all(ws: Any, each: Callable[[Any], None]) -> None:
    """Read until the connection closes (raises ConnectionClosed) or 5 s of silence (TimeoutError)."""
    while True:
        each(json.loads(await asyncio.wait_for(ws.recv(), 5)))


# -- fault spec ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_fault_spec_parses_probabilities_and_parameters_and_rejects_bad_specs() -> None:
    spec = FaultSpec.parse("drop=0.01, stall=0.002:3,rest429=0.2:2 ,bybit_reset=0.002")
    assert (spec.drop, spec.stall, spec.stall_s, spec.rest429, spec.retry_after_s, spec.bybit_reset) == (
        0.01, 0.002, 3.0, 0.2, 2.0, 0.002
    )  # fmt: skip
    assert str(spec) == "drop=0.01,stall=0.002:3,bybit_reset=0.002,rest429=0.2:2"
    venue_level = FaultSpec.parse("drop=0.6,restart=0.6")  # a venue kind: not part of the per-message dice
    assert (venue_level.restart, venue_level.streams_active, str(venue_level)) == (0.6, True, "drop=0.6,restart=0.6")
    for bad, words in [
        ("drp=0.1", "unknown fault kind 'drp'"),
        ("drop", "not kind=probability"),
        ("drop=x", "not a number"),
        ("drop=1.5", "within [0, 1]"),
        ("drop=0.1,drop=0.2", "given twice"),
        ("dup=0.1:3", "takes no parameter"),
        ("stall=0.1:0", "must be > 0"),
        ("drop=0.6,dup=0.6", "add up to 1.2 > 1"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            FaultSpec.parse(bad)


# -- Binance wire shapes ---------------------------------------------------------------------------


async def test_binance_spot_combined_stream_wraps_raw_stream_is_bare_and_depth_speeds_alias_the_recording(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        base = sim.urls[SPOT].ws_url
        async with (
            connect(f"{base}/stream?streams=btcusdt@depth@100ms/btcusdt@trade") as combined,
            connect(f"{base}/ws/btcusdt@depth") as raw,
            connect(f"{base}/stream?streams=btcusdt@depth@500ms") as alias,
            connect(f"{base}/ws/btcusdt@depth5@100ms") as partial,
        ):
            c = await recv_until(combined, lambda m: m["stream"] == "btcusdt@depth@100ms")
            r = await recv_json(raw)
            a = await recv_json(alias)
            p = await recv_json(partial)
            t = await recv_until(combined, lambda m: m["stream"] == "btcusdt@trade")
    assert set(c) == {"stream", "data"}
    assert c["data"]["e"] == "depthUpdate"
    assert c["data"]["s"] == "BTCUSDT"
    assert "pu" not in c["data"]
    assert "T" not in c["data"]
    assert list(p) == ["lastUpdateId", "bids", "asks"]  # spot partial depth: no event fields at all
    assert len(p["bids"]) == 5
    assert Decimal(p["bids"][0][0]) < Decimal(p["asks"][0][0])
    assert r["e"] == "depthUpdate"
    assert "stream" not in r
    assert a["stream"] == "btcusdt@depth@500ms"
    assert a["data"]["e"] == "depthUpdate"
    assert t["data"]["e"] == "trade"
    assert t["data"]["p"].endswith("000000")
    assert len(t["data"]["p"].split(".")[1]) == 8


async def test_binance_method_frames_get_result_acks_lists_properties_and_error_shapes(make_sim: SimFactory) -> None:
    async with make_sim(speed=5, loop=False) as sim, connect(f"{sim.urls[SPOT].ws_url}/ws") as ws:
        params = ["btcusdt@depth@100ms", "ethusdt@trade"]
        await send_slowly(ws, json.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}))
        assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 1}
        await send_slowly(ws, json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "a7"}))
        assert await recv_until(ws, lambda m: "id" in m) == {
            "result": ["btcusdt@depth@100ms", "ethusdt@trade"], "id": "a7"
        }  # fmt: skip
        data = await recv_until(ws, lambda m: m.get("e") == "depthUpdate")
        assert data["s"] == "BTCUSDT"  # raw connection: bare payloads
        await send_slowly(ws, json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}))
        assert await recv_until(ws, lambda m: m.get("id") == 2) == {"result": False, "id": 2}
        await send_slowly(ws, json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 3}))
        assert await recv_until(ws, lambda m: m.get("id") == 3) == {"result": None, "id": 3}
        await send_slowly(ws, json.dumps({"method": "SUBSCRIBE", "params": ["BTCUSDT depth"], "id": 4}))
        err = await recv_until(ws, lambda m: m.get("id") == 4)
        assert err["error"]["code"] == 2
        assert "invalid stream" in err["error"]["msg"]
        await send_slowly(ws, json.dumps({"method": "SUBSCRIBED", "id": 5}))
        err = await recv_until(ws, lambda m: m.get("id") == 5)
        assert err["error"]["code"] == 2
        assert "unknown variant" in err["error"]["msg"]
        await send_slowly(ws, "{not json")
        err = await recv_until(ws, lambda m: "error" in m)
        assert err["error"]["code"] == 3
        assert err["id"] is None


async def test_binance_server_pings_and_cuts_a_client_that_never_pongs_but_keeps_one_that_does(
    make_sim: SimFactory,
) -> None:
    timings = SimTimings(binance_spot_ping_s=0.2, binance_spot_pong_timeout_s=0.6)
    async with make_sim(speed=5, loop=False, timings=timings) as sim, aiohttp.ClientSession() as http:
        url = f"{sim.urls[SPOT].ws_url}/ws/btcusdt@trade"
        silent = await http.ws_connect(url, autoping=False)
        polite = await connect(url)
        ping = await silent.receive(timeout=2)
        while ping.type != aiohttp.WSMsgType.PING:
            ping = await silent.receive(timeout=2)
        assert ping.data  # the payload a pong must copy
        t0 = time.monotonic()
        while not silent.closed and time.monotonic() - t0 < 5:
            await silent.receive(timeout=5)
        assert silent.closed
        assert sim.stats["binance_spot"]["pong_timeouts"] == 1
        assert json.loads(await polite.recv())["e"] == "trade"  # websockets answers pings: still served
        await polite.close()
        await silent.close()


async def test_binance_usdm_routed_paths_serve_depth_with_pu_and_synthesized_klines(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim:
        base = sim.urls[USDM].ws_url
        async with (
            connect(f"{base}/public/stream?streams=btcusdt@depth@100ms") as pub,
            connect(f"{base}/market/stream?streams=btcusdt@kline_1m") as mkt,
            connect(f"{base}/public/ws/btcusdt@depth5@100ms") as partial,
        ):
            d = await recv_json(pub)
            k = await recv_json(mkt, within=10)
            p = await recv_json(partial)
    assert d["stream"] == "btcusdt@depth@100ms"
    assert {"e", "E", "T", "s", "U", "u", "pu", "b", "a"} <= set(d["data"])
    assert k["stream"] == "btcusdt@kline_1m"
    assert k["data"]["k"]["i"] == "1m"
    assert k["data"]["E"] % 2000 == 0
    assert p["e"] == "depthUpdate"
    assert len(p["b"]) == 5
    assert len(p["a"]) == 5
    assert float(p["b"][0][0]) < float(p["a"][0][0])


@pytest.fixture(scope="module")
def spot_minutes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 130 s of the Binance spot session: two whole minutes of trades."""
    return build_recording(tmp_path_factory.mktemp("spot") / "rec", shared_data, [SPOT], seconds=130)


async def test_binance_kline_stream_closed_candle_matches_the_trades_of_its_minute(
    make_sim: SimFactory, spot_minutes: Path
) -> None:
    async with make_sim(data=spot_minutes, speed=50, loop=False) as sim:
        url = f"{sim.urls[SPOT].ws_url}/stream?streams=btcusdt@trade/btcusdt@kline_1m"
        trades: list[dict[str, Any]] = []
        closed: list[dict[str, Any]] = []
        async with connect(url, max_queue=None) as ws:
            while len(closed) < 2:
                m = await recv_json(ws, within=10)
                if m["stream"] == "btcusdt@trade":
                    trades.append(m["data"])
                elif m["data"]["k"]["x"]:
                    closed.append(m["data"])
    k = closed[1]["k"]  # the first closed candle may predate the connection
    mine = [t for t in trades if k["t"] <= t["T"] <= k["T"]]
    assert trades[0]["T"] < k["t"]
    assert closed[1]["E"] == k["T"] + 1
    assert Decimal(k["o"]) == Decimal(mine[0]["p"])
    assert Decimal(k["c"]) == Decimal(mine[-1]["p"])
    assert Decimal(k["h"]) == max(Decimal(t["p"]) for t in mine)
    assert Decimal(k["l"]) == min(Decimal(t["p"]) for t in mine)
    assert Decimal(k["v"]) == sum(Decimal(t["q"]) for t in mine)
    assert k["n"] == len(mine)
    assert k["f"] == mine[0]["t"]
    assert k["L"] == mine[-1]["t"]


# -- Bybit wire shapes -----------------------------------------------------------------------------


async def test_bybit_acks_pongs_and_failure_shapes_differ_between_linear_and_spot(make_sim: SimFactory) -> None:
    async with (
        make_sim(speed=5, loop=False) as sim,
        connect(sim.urls[BY_LINEAR].ws_url) as lin,
        connect(sim.urls[BY_SPOT].ws_url) as spot,
    ):
        await lin.send('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
        ack = await recv_until(lin, lambda m: m.get("op") == "subscribe")
        assert list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
        assert (ack["success"], ack["ret_msg"], ack["req_id"]) == (True, "", "")
        await spot.send('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
        ack = await recv_until(spot, lambda m: m.get("op") == "subscribe")
        assert list(ack) == ["success", "ret_msg", "conn_id", "op"]
        assert ack["ret_msg"] == "subscribe"
        await lin.send('{"op":"subscribe","args":["invalid.topic.BTCUSDT"],"req_id":"r1"}')
        bad = await recv_until(lin, lambda m: m.get("op") == "subscribe")
        assert (bad["success"], bad["ret_msg"], bad["req_id"]) == (False, "Invalid topic: invalid.topic.BTCUSDT", "r1")
        await lin.send('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
        again = await recv_until(lin, lambda m: m.get("op") == "subscribe")
        assert again["success"] is False
        assert "already subscribed" in again["ret_msg"]
        await lin.send('{"req_id":"100001","op":"ping"}')
        pong = await recv_until(lin, lambda m: m.get("op") == "pong")
        assert list(pong) == ["req_id", "op", "args", "conn_id"]
        assert pong["req_id"] == "100001"
        assert int(pong["args"][0]) == pytest.approx(sim.clock_ms(BY_LINEAR), abs=5000)
        await spot.send('{"op":"ping"}')
        spong = await recv_until(spot, lambda m: m.get("ret_msg") == "pong")
        assert spong["op"] == "ping"
        assert spong["success"] is True
        trade = await recv_until(lin, lambda m: m.get("topic") == "publicTrade.BTCUSDT", within=10)
        assert {"T", "s", "S", "v", "p", "L", "i"} <= set(trade["data"][0])


async def test_bybit_new_orderbook_subscription_gets_the_current_book_then_contiguous_deltas(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=5, loop=False) as sim:
        await sim.wait_position(BY_LINEAR, 0.3)
        async with connect(sim.urls[BY_LINEAR].ws_url) as ws:
            await ws.send('{"op":"subscribe","args":["orderbook.50.ETHUSDT"]}')
            ack = await recv_json(ws)
            snap = await recv_json(ws)
            ref = sim.reference_book(BY_LINEAR, "ETHUSDT", 50)
            deltas = [await recv_until(ws, lambda m: m.get("topic") == "orderbook.50.ETHUSDT") for _ in range(3)]
    assert ack["success"] is True
    assert list(snap) == ["topic", "type", "ts", "data", "cts"]  # linear key order
    assert snap["type"] == "snapshot"
    assert snap["topic"] == "orderbook.50.ETHUSDT"
    assert len(snap["data"]["b"]) == 50
    assert len(snap["data"]["a"]) == 50
    assert ref is not None
    assert ref.update_id >= snap["data"]["u"]
    us = [snap["data"]["u"]] + [d["data"]["u"] for d in deltas]
    assert us == list(range(us[0], us[0] + 4))
    assert all(d["type"] == "delta" for d in deltas)


# -- REST ------------------------------------------------------------------------------------------


async def test_rest_depth_time_ping_and_exchange_info_have_the_venue_shapes(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim, aiohttp.ClientSession() as http:
        await sim.wait_position(SPOT, 0.05)
        await sim.wait_position(USDM, 0.05)
        spot, usdm = sim.urls[SPOT].rest_url, sim.urls[USDM].rest_url
        async with http.get(f"{spot}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "5"}) as r:
            assert r.status == 200
            assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 5
            body = await r.json()
        assert list(body) == ["lastUpdateId", "bids", "asks"]
        assert len(body["bids"]) == 5
        assert all(len(p.split(".")[1]) == 8 and len(q.split(".")[1]) == 8 for p, q in body["bids"] + body["asks"])
        assert Decimal(body["bids"][0][0]) < Decimal(body["asks"][0][0])
        async with http.get(f"{usdm}/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": "10"}) as r:
            fb = await r.json()
        assert list(fb) == ["lastUpdateId", "E", "T", "bids", "asks"]
        assert len(fb["asks"]) == 10
        assert all(len(p.split(".")[1]) == 2 for p, _ in fb["bids"])  # USD-M precision as recorded
        async with http.get(f"{spot}/api/v3/time") as r:
            assert abs((await r.json())["serverTime"] - sim.clock_ms(SPOT)) < 5000
        assert sim.clock_ms(SPOT) // 86_400_000 == 1723161600000 // 86_400_000 - 1  # the recording's date
        async with http.get(f"{spot}/api/v3/ping") as r:
            assert await r.json() == {}
        async with http.get(f"{spot}/api/v3/depth", params={"symbol": "NOPEUSDT"}) as r:
            assert (r.status, await r.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})
        async with http.get(f"{spot}/api/v3/depth") as r:
            assert r.status == 400
            assert (await r.json())["code"] == -1102
        async with http.get(f"{spot}/api/v3/exchangeInfo") as r:
            info = await r.json()
        (btc,) = info["symbols"]
        filters = {f["filterType"]: f for f in btc["filters"]}
        assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
        assert (filters["LOT_SIZE"]["stepSize"], filters["LOT_SIZE"]["minQty"]) == ("0.00001000", "0.00001000")
        assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
        async with http.get(f"{usdm}/fapi/v1/exchangeInfo") as r:
            finfo = await r.json()
        ffilters = {f["filterType"]: f for f in finfo["symbols"][0]["filters"]}
        assert ffilters["PRICE_FILTER"]["tickSize"] == "0.10"
        assert ffilters["MIN_NOTIONAL"]["notional"] == "100"
        # every recorded price sits on the served tick
        for level in body["bids"] + body["asks"]:
            assert Decimal(level[0]) % Decimal("0.01") == 0
        for level in fb["bids"] + fb["asks"]:
            assert Decimal(level[0]) % Decimal("0.10") == 0


async def test_rest_klines_come_from_the_csv_files_in_each_venue_format(
    make_sim: SimFactory, shared_data: Path
) -> None:
    async with make_sim(speed=1) as sim, aiohttp.ClientSession() as http:
        spot, bybit = sim.urls[SPOT].rest_url, sim.urls[BY_LINEAR].rest_url
        q = {"symbol": "BTCUSDT", "interval": "1m", "startTime": "1672531200000", "limit": "2"}
        async with http.get(f"{spot}/api/v3/klines", params=q) as r:
            rows = await r.json()
        # BTCUSDT_1m.csv: 2023-01-01 00:00:00,16541.77,16544.76,16538.45,16543.67,83.08143
        assert rows[0][:7] == [1672531200000, "16541.77000000", "16544.76000000", "16538.45000000",
                               "16543.67000000", "83.08143000", 1672531259999]  # fmt: skip
        assert rows[1][0] == 1672531260000
        assert len(rows) == 2
        assert len(rows[0]) == 12
        q = {"symbol": "BTCUSDT", "interval": "15m", "startTime": "1672531200000", "limit": "1"}
        async with http.get(f"{spot}/api/v3/klines", params=q) as r:
            (agg,) = await r.json()  # no 15m file: aggregated from the 5m bars
        lines = (shared_data / "benicio1007_bot_trading/f802e27/data/BTCUSDT_5m.csv").read_text().splitlines()[1:4]
        bars = [line.split(",") for line in lines]
        assert agg[1] == f"{float(bars[0][1]):.8f}"
        assert agg[4] == f"{float(bars[2][4]):.8f}"
        assert float(agg[2]) == max(float(b[2]) for b in bars)
        assert float(agg[3]) == min(float(b[3]) for b in bars)
        assert float(agg[5]) == pytest.approx(sum(float(b[5]) for b in bars))
        async with http.get(f"{spot}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "7m"}) as r:
            assert (r.status, (await r.json())["code"]) == (400, -1120)
        q = {"category": "linear", "symbol": "BTCUSDT", "interval": "60", "limit": "3"}
        async with http.get(f"{bybit}/v5/market/kline", params=q) as r:
            res = (await r.json())["result"]
        # BTCUSDT_60m.csv ends with 2025-06-29 16:00:00+00:00: newest first
        assert res["list"][0][0] == "1751212800000"
        assert int(res["list"][1][0]) == 1751212800000 - 3_600_000
        assert len(res["list"][0]) == 7
        assert res["category"] == "linear"


async def test_bybit_rest_instruments_orderbook_and_time(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim, aiohttp.ClientSession() as http:
        base = sim.urls[BY_LINEAR].rest_url
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            params = {"category": "linear", "limit": "500", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{base}/v5/market/instruments-info", params=params) as r:
                res = (await r.json())["result"]
            items += res["list"]
            cursor = res["nextPageCursor"]
            if not cursor:
                break
        assert len(items) == 800  # the recorded response, paginated
        btc = next(i for i in items if i["symbol"] == "BTCUSDT")
        assert (btc["priceFilter"]["tickSize"], btc["lotSizeFilter"]["qtyStep"]) == ("0.10", "0.001")
        for cat in ("inverse", "option"):
            async with http.get(f"{base}/v5/market/instruments-info", params={"category": cat}) as r:
                assert (await r.json())["result"]["list"] == []
        await sim.wait_position(BY_LINEAR, 0.2)
        async with http.get(f"{base}/v5/market/orderbook", params={"category": "linear", "symbol": "SOLUSDT",
                                                                    "limit": "3"}) as r:  # fmt: skip
            body = await r.json()
        assert body["retCode"] == 0
        assert list(body["result"]) == ["s", "b", "a", "ts", "u", "seq", "cts"]
        assert len(body["result"]["b"]) == 3
        assert float(body["result"]["b"][0][0]) < float(body["result"]["a"][0][0])
        async with http.get(f"{base}/v5/market/time") as r:
            t = (await r.json())["result"]
        assert int(t["timeSecond"]) // 86400 == 1786310818 // 86400  # the recording's date (2026-08-09)


# -- book equality: official algorithms against the sim's truth ------------------------------------


@pytest.mark.parametrize("venue", [SPOT, USDM])
async def test_binance_official_algorithm_ends_with_the_reference_book(
    make_sim: SimFactory, sim_recording_short: Path, venue: Venue
) -> None:
    async with make_sim(speed=20, loop=False) as sim:
        client = BinanceBookClient(sim, venue, stream="depth@100ms")
        async with running(client.run()):
            await sim.wait_position(venue, 1.0, within_s=SHORT_S)
            ref = sim.reference_book(venue, "BTCUSDT")
            assert ref is not None
            assert await eventually(lambda: client.local == ref.update_id)
    assert client.book.top(DEPTH) == ref_top(sim, venue, "BTCUSDT")
    assert client.gaps == 0
    assert client.malformed == 0
    assert client.connections == 1


async def test_binance_rest_depth_after_the_snapshot_chains_with_the_stream(make_sim: SimFactory) -> None:
    async with make_sim(speed=10, loop=False) as sim, aiohttp.ClientSession() as http:
        client = BinanceBookClient(sim, USDM)
        states: dict[int, Any] = {}
        client.on_synced_event = lambda u: states.__setitem__(u, client.book.top(20))
        async with running(client.run()):
            await sim.wait_position(USDM, 0.1)
            assert await eventually(lambda: client.local is not None)
            async with http.get(f"{sim.urls[USDM].rest_url}/fapi/v1/depth", params={"symbol": "BTCUSDT",
                                                                                   "limit": "20"}) as r:  # fmt: skip
                body = await r.json()
            lid = body["lastUpdateId"]
            assert await eventually(lambda: lid in states and client.events[-1][1] > lid)
    assert body["lastUpdateId"] > 5123107852948  # past the recorded snapshot: synthesized from the truth
    bids = [(float(p), float(q)) for p, q in body["bids"]]
    asks = [(float(p), float(q)) for p, q in body["asks"]]
    assert (bids, asks) == states[lid]
    # the event that ends at lastUpdateId is on the stream, and the next one chains from it (pu)
    us = [u for _, u, _ in client.events]
    i = us.index(lid)
    assert client.events[i + 1][2] == lid


async def test_bybit_snapshot_and_delta_rules_end_with_the_reference_books(make_sim: SimFactory) -> None:
    async with make_sim(speed=20, loop=False) as sim:
        lin = BybitBookClient(sim, BY_LINEAR, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])
        spot = BybitBookClient(sim, BY_SPOT, ["BTCUSDT", "ETHUSDT"])
        lin50 = BybitBookClient(sim, BY_LINEAR, ["BTCUSDT", "SOLUSDT"], depth=50)  # derived from the 200 book
        async with running(lin.run(), spot.run(), lin50.run()):
            await sim.wait_position(BY_LINEAR, 1.0, within_s=SHORT_S)
            await sim.wait_position(BY_SPOT, 1.0, within_s=SHORT_S)

            def converged() -> bool:
                return all(
                    c.u[s] == getattr(sim.reference_book(v, s), "update_id", None)
                    for c, v in ((lin, BY_LINEAR), (spot, BY_SPOT))
                    for s in c.symbols
                )

            assert await eventually(converged)
            await asyncio.sleep(0.2)
    for client, venue in ((lin, BY_LINEAR), (spot, BY_SPOT)):
        for s in client.symbols:
            assert client.books[s].top(DEPTH) == ref_top(sim, venue, s), (venue, s)
        assert client.gaps == 0
    for s in lin50.symbols:
        ref = sim.reference_book(BY_LINEAR, s, 50)
        assert ref is not None
        assert client_book_is(lin50.books[s], ref.bids, ref.asks)
        assert len(lin50.books[s].bids) == 50  # the derived stream keeps exactly 50 levels
        assert len(lin50.books[s].asks) == 50
    assert lin50.gaps == 0


def client_book_is(book: LocalBook, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> bool:
    return book.top(len(bids)) == (bids, asks)


# -- faults ----------------------------------------------------------------------------------------


async def _binance_under_faults(
    make_sim: SimFactory, data: Path, venue: Venue, faults: str, seed: int = 7
) -> tuple[LoopbackExchange, BinanceBookClient]:
    async with make_sim(data=data, speed=20, loop=False, faults=faults, seed=seed) as sim:
        client = BinanceBookClient(sim, venue)
        async with running(client.run()):
            await sim.wait_position(venue, 1.0, within_s=SHORT_S)
            ref = sim.reference_book(venue, "BTCUSDT")
            assert ref is not None
            assert await eventually(lambda: client.local == ref.update_id)
        assert client.book.top(DEPTH) == ref_top(sim, venue, "BTCUSDT")
    return sim, client


async def test_fault_drop_is_a_sequence_gap_the_spot_client_resyncs_from(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    sim, client = await _binance_under_faults(make_sim, sim_recording_short, SPOT, "drop=0.03")
    assert sim.fault_counts[(SPOT, "drop")] >= 2
    assert client.gaps >= 1
    assert client.snapshots >= 2


async def test_fault_dup_and_reorder_are_visible_as_repeated_and_backwards_update_ids(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    sim, client = await _binance_under_faults(make_sim, sim_recording_short, USDM, "dup=0.03,reorder=0.03")
    us = [u for _, u, _ in client.events]
    repeats = sum(1 for a, b in itertools.pairwise(us) if b == a)
    backwards = sum(1 for a, b in itertools.pairwise(us) if b < a)
    assert repeats == sim.fault_counts[(USDM, "dup")] >= 1
    assert backwards >= 1
    assert sim.fault_counts[(USDM, "reorder")] >= 1
    assert client.gaps >= 1  # the newer event of a swapped pair breaks the pu chain


async def test_fault_disconnect_cuts_the_socket_without_a_close_frame(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    # seed 56: the first connection is cut at its 66th diff, the second one lives to the end
    sim, client = await _binance_under_faults(make_sim, sim_recording_short, USDM, "disconnect=0.005", seed=56)
    assert sim.fault_counts[(USDM, "disconnect")] == 1
    assert client.connections == 2
    assert client.closes == [None]  # no close frame: the TCP connection was cut


async def test_fault_malformed_frames_are_unparsable_and_counted_one_for_one(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    async with make_sim(data=sim_recording_short, speed=20, loop=False, faults="malformed=0.02", seed=5) as sim:
        client = BybitBookClient(sim, BY_LINEAR, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])
        async with running(client.run()):
            await sim.wait_position(BY_LINEAR, 1.0, within_s=SHORT_S)
            await asyncio.sleep(0.5)
        fired = sim.fault_counts[(BY_LINEAR, "malformed")]
    assert fired >= 3
    assert client.malformed == fired
    assert client.gaps >= 1


async def test_fault_bybit_reset_sends_a_u1_snapshot_and_renumbers_the_following_deltas(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    async with make_sim(data=sim_recording_short, speed=20, loop=False, faults="bybit_reset=0.01", seed=2) as sim:
        client = BybitBookClient(sim, BY_LINEAR, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])
        async with running(client.run()):
            await sim.wait_position(BY_LINEAR, 1.0, within_s=SHORT_S)
            await asyncio.sleep(0.5)
    assert sim.fault_counts[(BY_LINEAR, "bybit_reset")] == len(client.u1_snapshots) >= 1
    assert set(client.after_u1) == {2}  # the first delta after each reset
    assert client.gaps == 0  # the renumbered deltas chain from u=1
    for s in client.symbols:
        assert client.books[s].top(DEPTH) == ref_top(sim, BY_LINEAR, s), s


async def test_fault_stall_silences_data_while_pings_are_still_answered(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    async with make_sim(data=sim_recording_short, speed=5, loop=False, faults="stall=0.01:0.6", seed=1) as sim:
        client = BybitBookClient(sim, BY_LINEAR, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"], ping_every=0.1)
        async with running(client.run()):
            assert await eventually(lambda: sim.fault_counts[(BY_LINEAR, "stall")] >= 1, within=SHORT_S / 5)
            await asyncio.sleep(1.0)
    times = client.data_times
    silences = [(a, b) for a, b in itertools.pairwise(times) if b - a >= 0.5]
    assert silences, "no silence of 0.5 s on the data"
    a, b = silences[0]
    assert any(a < t < b for t in client.pong_times)  # the socket stayed open and answered pings
    assert client.connections == 1


async def test_fault_rest_snapshot_fail_then_429_then_418_ban_with_binance_bodies(make_sim: SimFactory) -> None:
    faults = "snapshot_fail=0.5,rest429=0.5:1"
    async with make_sim(speed=10, faults=faults, seed=11) as sim, aiohttp.ClientSession() as http:
        url = f"{sim.urls[SPOT].rest_url}/api/v3/depth"
        seen: dict[int, dict[str, Any]] = {}
        headers: dict[int, Any] = {}
        for _ in range(20):
            async with http.get(url, params={"symbol": "BTCUSDT", "limit": "10"}) as r:
                seen.setdefault(r.status, await r.json())
                headers.setdefault(r.status, r.headers)
                if r.status == 429:
                    async with http.get(url, params={"symbol": "BTCUSDT"}) as again:  # too early: banned
                        seen.setdefault(again.status, await again.json())
                        headers.setdefault(again.status, again.headers)
                    break
        assert seen[503] == {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        assert seen[429]["code"] == -1003
        assert headers[429]["Retry-After"] == "1"
        assert seen[418]["code"] == -1003
        assert "banned until" in seen[418]["msg"]
        assert int(headers[418]["Retry-After"]) >= 1
        assert "X-MBX-USED-WEIGHT-1M" in headers[418]
        async with http.get(f"{sim.urls[SPOT].rest_url}/api/v3/time") as r:
            assert r.status == 418  # the ban covers every endpoint
        assert sim.fault_counts[(SPOT, "rest418")] == 1
        assert sim.fault_counts[(SPOT, "rest429")] == 1


async def test_faults_are_deterministic_for_a_seed(make_sim: SimFactory, sim_recording_short: Path) -> None:
    async def fault_log(seed: int) -> list[tuple[str, int, int, str]]:
        async with make_sim(data=sim_recording_short, speed=20, loop=False, seed=seed,
                            faults="drop=0.05,dup=0.05,reorder=0.05,malformed=0.02") as sim:  # fmt: skip
            async with connect(f"{sim.urls[USDM].ws_url}/ws/btcusdt@depth", max_queue=None) as ws:
                for _ in range(150):
                    await ws.recv()
            return [e for e in sim.fault_log if e[2] <= 120]

    first, again, other = await fault_log(4), await fault_log(4), await fault_log(5)
    assert len(first) >= 10
    assert first == again
    assert first != other


# -- loop, slow clients, sessions, CLI -------------------------------------------------------------


async def test_restart_fault_at_the_end_of_the_recording_closes_clients_with_1001_and_restarts_the_sequence(
    make_sim: SimFactory, sim_recording_short: Path
) -> None:
    async with make_sim(data=sim_recording_short, speed=20, loop=True, faults="restart=1") as sim:
        base = sim.urls[SPOT].ws_url
        first_cycle: list[int] = []
        async with connect(f"{base}/ws/btcusdt@depth", max_queue=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await read_all(ws, lambda m: first_cycle.append(m["u"]))
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        async with connect(f"{base}/ws/btcusdt@depth") as ws:
            restarted = json.loads(await ws.recv())["u"]
        assert restarted < first_cycle[-1]
        assert sim.stats["binance_spot"]["loop_restarts"] >= 1
        assert sim.stats["binance_spot"]["loop_wraps"] == 0


async def test_a_client_that_does_not_read_is_cut_and_counted(make_sim: SimFactory) -> None:
    timings = SimTimings(send_queue=200, socket_sndbuf=8192)
    async with make_sim(speed=10, loop=False, timings=timings) as sim:
        url = f"{sim.urls[USDM].ws_url}/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/btcusdt@trade"
        host, port = sim.urls[USDM].ws_url.removeprefix("ws://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a small window, then stop reading
        sock.connect((host, int(port)))
        async with websockets.connect(url, sock=sock, max_queue=1, close_timeout=1) as ws:
            assert await eventually(lambda: sim.stats["binance_usdm"].get("slow_client_disconnects", 0) == 1)
            with pytest.raises(ConnectionClosed):
                await read_all(ws, lambda m: None)
        assert sim.stats["binance_usdm"]["open_connections"] == 0


async def test_sessions_of_disjoint_symbols_play_side_by_side(
    shared_data: Path, tmp_path: Path, sim_klines_dir: Path
) -> None:
    # two USD-M sessions weeks apart: ETHUSDT 2024-07-18 and BTCUSDT 2024-08-08, 5 s of each
    eth = slice_records(import_hftbacktest([shared_data / "hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz"],
                                           USDM), 5)  # fmt: skip
    btc = slice_records(import_hftbacktest([shared_data / "hftbacktest/examples/usdm/btcusdt_20240808.gz"], USDM), 5)
    with RecordingWriter(tmp_path / "both") as w:
        w.write_many(heapq.merge(eth, btc, key=lambda r: r.ts_recv))
    async with LoopbackExchange(tmp_path / "both", speed=2, klines_dir=sim_klines_dir, loop=False) as sim:
        tl = sim.timelines[USDM]
        assert tl.symbols == ["BTCUSDT", "ETHUSDT"]
        assert tl.load_stats["sessions_side_by_side"] == 2
        assert tl.duration_s < 6  # not weeks
        async with connect(f"{sim.urls[USDM].ws_url}/stream?streams=ethusdt@trade/btcusdt@trade") as ws:
            got = {(await recv_json(ws))["data"]["s"] for _ in range(40)}
    assert got == {"BTCUSDT", "ETHUSDT"}


def test_cli_exits_2_with_one_line_for_a_missing_recording_or_a_bad_spec(
    capsys: pytest.CaptureFixture[str], sim_recording_short: Path
) -> None:
    assert sim_main(["--data", "/nonexistent/rec"]) == 2
    assert capsys.readouterr().err.strip() == "error: /nonexistent/rec: no such directory"
    assert sim_main(["--data", str(sim_recording_short), "--faults", "drop=2"]) == 2
    assert "probability of drop must be within [0, 1]" in capsys.readouterr().err
    assert sim_main(["--data", str(sim_recording_short), "--speed", "0"]) == 2
    assert "--speed must be > 0" in capsys.readouterr().err


async def test_cli_print_urls_serves_until_sigint_and_exits_0(sim_recording_short: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.sim.cli", "--data", str(sim_recording_short), "--print-urls", "--speed", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) for _ in range(4)]
        by_venue = {line["venue"]: line for line in lines}
        assert set(by_venue) == {v.value for v in Venue}
        assert by_venue["bybit_linear"]["ws"].endswith("/v5/public/linear")
        assert by_venue["binance_spot"]["symbols"] == ["BTCUSDT"]
        async with connect(by_venue["binance_spot"]["ws_combined"] + "?streams=btcusdt@trade") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["e"] == "trade"
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
    assert code == 0


async def test_venue_overrides_point_every_venue_at_the_sim_and_load_as_settings(make_sim: SimFactory) -> None:
    from bot.config import load_settings

    async with make_sim(speed=1) as sim:
        settings = load_settings(None, venues=sim.venue_overrides())
    for venue in Venue:
        cfg = settings.venues[venue]
        assert cfg.ws_url == sim.urls[venue].ws_url
        assert cfg.rest_url.startswith("http://127.0.0.1:")
    assert settings.venues[BY_LINEAR].symbols == ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT")
    assert settings.venues[BY_LINEAR].depth == "200"
    assert settings.venues[SPOT].symbols == ("BTCUSDT",)
