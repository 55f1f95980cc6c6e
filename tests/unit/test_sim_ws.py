"""The loopback exchange's websocket connections: one served from handshake to end (``serve_conn``), and which
errors around a connection are bugs of ours."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from bot.events import Venue
from bot.sim.faults import FaultSpec
from bot.sim.replay import Timeline, VenueReplay
from bot.sim.ws import Conn, ConnLoop, SimStats, SimTimings, VenueHub, serve_conn, unexpected


def test_a_peer_going_away_is_not_a_bug_alone_or_in_a_task_group() -> None:
    assert unexpected(ConnectionResetError("Cannot write to closing transport")) is None
    assert unexpected(RuntimeError("closing")) is None
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError()])) is None
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError(), ExceptionGroup("inner", [RuntimeError()])])) is None


def test_a_bug_is_reported_as_itself_without_the_peers_going_away() -> None:
    bug = KeyError("x")
    assert unexpected(bug) is bug
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError(), bug])) is bug
    both = unexpected(ExceptionGroup("tg", [bug, ValueError("y"), RuntimeError()]))
    assert isinstance(both, ExceptionGroup)
    assert [type(e) for e in both.exceptions] == [KeyError, ValueError]


def _hub() -> VenueHub:
    venue = Venue.BINANCE_SPOT
    return VenueHub(venue, VenueReplay(Timeline(venue)), faults=FaultSpec(), seed=0, timings=SimTimings(),
                    stats=SimStats(), fanout=lambda hub, item, parsed: None)  # fmt: skip


async def _serve_once(hub: VenueHub, read: ConnLoop, helpers: tuple[ConnLoop, ...] = ()) -> tuple[list[Any], list[str]]:
    """One client connects to a route served by ``serve_conn``, sends "hi", reads until the close; returns
    (what the client received, what the server's hooks saw) once the handler has ended."""
    handlers: set[asyncio.Task[Any]] = set()
    seen: list[str] = []

    async def route(request: web.Request) -> web.StreamResponse:
        return await serve_conn(request, hub, read, where="test", autoping=True, combined=False, helpers=helpers,
                                opened=lambda c: seen.append(f"opened combined={c.combined}"),
                                closed=lambda c: seen.append("closed"), handlers=handlers)  # fmt: skip

    app = web.Application()
    app.router.add_get("/ws", route)
    got: list[Any] = []
    async with TestServer(app) as server, ClientSession() as session:
        async with session.ws_connect(server.make_url("/ws")) as ws:
            await ws.send_str("hi")
            async for msg in ws:
                got.append(msg.data)
            got.append(ws.close_code)
        for _ in range(200):  # the handler ends after the client has gone
            if not handlers and "closed" in seen:
                break
            await asyncio.sleep(0.01)
        assert not handlers
        assert not hub.conns
    return got, seen


async def test_a_connection_runs_its_helpers_beside_the_read_loop_and_a_close_of_ours_goes_out() -> None:
    hub = _hub()
    cancelled: list[bool] = []

    async def helper(h: VenueHub, conn: Conn) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def read(h: VenueHub, conn: Conn) -> None:
        async for msg in conn.ws:
            conn.send(f"echo {msg.data}")
            conn.close(1000, "bye")  # ours: the writer gets to send the close frame

    got, seen = await _serve_once(hub, read, (helper,))
    assert got == ["echo hi", 1000]
    assert seen == ["opened combined=False", "closed"]
    assert cancelled == [True]
    assert hub.stats.counts[(hub.venue, "handler_errors")] == 0


async def test_a_bug_in_a_connection_is_counted_and_answered_with_a_clean_1011() -> None:
    hub = _hub()

    async def read(h: VenueHub, conn: Conn) -> None:
        await conn.ws.receive()
        raise KeyError("a bug of ours")

    got, seen = await _serve_once(hub, read)
    assert got == [1011]
    assert seen == ["opened combined=False", "closed"]
    assert hub.stats.counts[(hub.venue, "handler_errors")] == 1
    assert hub.stats.counts[(hub.venue, "handler_errors_test")] == 1
