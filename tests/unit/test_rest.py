"""RestClient against a tiny aiohttp server on 127.0.0.1:0: bodies kept exact, errors translated, 429/418 gate."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.errors import RateLimited, VenueRejected, VenueUnavailable
from bot.rest import DEFAULT_RETRY_AFTER_418_S, RestClient

pytestmark = pytest.mark.unit

SNAPSHOT = (
    '{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[["61837.64000000","1.54698000"]]}'
)


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1_000_000_000
        self.wall = 1_786_310_818_000_000_000

    def now_ns(self) -> int:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += int(seconds * 1e9)
        self.wall += int(seconds * 1e9)


@dataclass
class Server:
    base: str
    hits: dict[str, int] = field(default_factory=dict)


Handler = Callable[[web.Request], "asyncio.Future[web.StreamResponse] | web.StreamResponse"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(base="")

    def count(request: web.Request) -> None:
        srv.hits[request.path] = srv.hits.get(request.path, 0) + 1

    async def depth(request: web.Request) -> web.Response:
        count(request)
        return web.Response(text=SNAPSHOT, content_type="application/json")

    async def limited(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=429, text='{"code":-1003,"msg":"Too many requests."}', headers={"Retry-After": "7"})

    async def banned(request: web.Request) -> web.Response:
        count(request)
        headers = {"Retry-After": request.query["ra"]} if "ra" in request.query else {}
        return web.Response(
            status=418, text='{"code":-1003,"msg":"Way too many requests; IP banned."}', headers=headers
        )

    async def dated(request: web.Request) -> web.Response:
        count(request)
        # 30 s after FakeClock.wall (1786310818 = Sun, 09 Aug 2026 21:26:58 GMT)
        return web.Response(status=429, text="slow down", headers={"Retry-After": "Sun, 09 Aug 2026 21:27:28 GMT"})

    async def broken(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=503, text="Service Unavailable")

    async def bad_symbol(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=400, text='{"code":-1121,"msg":"Invalid symbol."}')

    async def slow(request: web.Request) -> web.Response:
        count(request)
        await asyncio.sleep(1.0)
        return web.Response(text="too late")

    async def latin1(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=b"\xff\xfe not utf-8")

    app = web.Application()
    app.router.add_get("/api/v3/depth", depth)
    app.router.add_get("/limited", limited)
    app.router.add_get("/banned", banned)
    app.router.add_get("/dated", dated)
    app.router.add_get("/broken", broken)
    app.router.add_get("/bad", bad_symbol)
    app.router.add_get("/slow", slow)
    app.router.add_get("/latin1", latin1)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.base = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_get_text_returns_status_and_the_exact_body_text(server: Server) -> None:
    # Arrange
    async with RestClient(5.0) as rest:
        # Act
        status, body = await rest.get_text(server.base + "/api/v3/depth?symbol=BTCUSDT&limit=1000")

    # Assert: the decimal strings survive byte for byte (no float round trip)
    assert status == 200
    assert body == SNAPSHOT
    assert '"61837.63000000"' in body


async def test_429_raises_rate_limited_with_retry_after_and_gates_the_host(server: Server) -> None:
    # Arrange
    clock = FakeClock()
    async with RestClient(5.0, clock=clock) as rest:
        # Act
        with pytest.raises(RateLimited) as first:
            await rest.get_text(server.base + "/limited")
        with pytest.raises(RateLimited) as gated:
            await rest.get_text(server.base + "/api/v3/depth")  # another path, same host

        # Assert: status and Retry-After honoured; the second request never reached the server
        assert first.value.status == 429
        assert first.value.retry_after == 7.0
        assert "Too many requests" in str(first.value)
        assert gated.value.status == 429
        assert gated.value.retry_after == pytest.approx(7.0)
        assert server.hits == {"/limited": 1}
        assert rest.requests == 1
        assert rest.gated == 1
        assert rest.blocked_for(server.base + "/x") == pytest.approx(7.0)

        clock.advance(6.5)
        with pytest.raises(RateLimited) as still:
            await rest.get_text(server.base + "/api/v3/depth")
        assert still.value.retry_after == pytest.approx(0.5)

        clock.advance(0.5)
        status, body = await rest.get_text(server.base + "/api/v3/depth")
        assert (status, body) == (200, SNAPSHOT)
        assert server.hits == {"/limited": 1, "/api/v3/depth": 1}


async def test_418_is_a_ban_that_honours_retry_after(server: Server) -> None:
    clock = FakeClock()
    async with RestClient(5.0, clock=clock) as rest:
        with pytest.raises(RateLimited) as ban:
            await rest.get_text(server.base + "/banned?ra=300")
        assert ban.value.status == 418
        assert ban.value.retry_after == 300.0
        assert "IP ban" in str(ban.value)

        clock.advance(299)
        with pytest.raises(RateLimited) as gated:
            await rest.get_text(server.base + "/api/v3/depth")
        assert gated.value.status == 418
        assert gated.value.retry_after == pytest.approx(1.0)
        assert server.hits == {"/banned": 1}


async def test_418_without_retry_after_bans_for_the_default_two_minutes(server: Server) -> None:
    async with RestClient(5.0, clock=FakeClock()) as rest:
        with pytest.raises(RateLimited) as ban:
            await rest.get_text(server.base + "/banned")
    assert ban.value.retry_after == DEFAULT_RETRY_AFTER_418_S == 120.0


async def test_retry_after_as_an_http_date_is_converted_to_seconds(server: Server) -> None:
    async with RestClient(5.0, clock=FakeClock()) as rest:
        with pytest.raises(RateLimited) as limited:
            await rest.get_text(server.base + "/dated")
    assert limited.value.retry_after == pytest.approx(30.0)


async def test_the_gate_is_per_host_and_port(server: Server) -> None:
    # Arrange: a second server on another port is another host for the gate
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="{}")

    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    other = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with RestClient(5.0, clock=FakeClock()) as rest:
            with pytest.raises(RateLimited):
                await rest.get_text(server.base + "/limited")
            # Act / Assert
            assert await rest.get_text(other + "/ok") == (200, "{}")
    finally:
        await runner.cleanup()


async def test_5xx_is_venue_unavailable_and_other_4xx_is_venue_rejected(server: Server) -> None:
    async with RestClient(5.0) as rest:
        with pytest.raises(VenueUnavailable, match="HTTP 503"):
            await rest.get_text(server.base + "/broken")
        with pytest.raises(VenueRejected, match=r"HTTP 400: \{\"code\":-1121,\"msg\":\"Invalid symbol.\"\}"):
            await rest.get_text(server.base + "/bad?symbol=NOPE")
        # neither gates the host
        assert await rest.get_text(server.base + "/api/v3/depth") == (200, SNAPSHOT)


async def test_connection_refused_and_timeouts_are_venue_unavailable(server: Server) -> None:
    async with RestClient(0.3) as rest:
        with pytest.raises(VenueUnavailable, match="failed"):
            await rest.get_text(f"http://127.0.0.1:{free_port()}/api/v3/depth")
        with pytest.raises(VenueUnavailable, match="timed out"):
            await rest.get_text(server.base + "/slow")


async def test_a_body_that_is_not_utf8_is_venue_unavailable_not_mangled(server: Server) -> None:
    async with RestClient(5.0) as rest:
        with pytest.raises(VenueUnavailable, match="not UTF-8"):
            await rest.get_text(server.base + "/latin1")


async def test_a_malformed_url_is_venue_rejected() -> None:
    async with RestClient(5.0) as rest:
        with pytest.raises(VenueRejected, match="invalid URL"):
            await rest.get_text("http://[::1/broken")
