"""The loopback exchange: aiohttp servers on 127.0.0.1 that a client cannot tell from Bybit and Binance.

    async with LoopbackExchange(Path("rec"), speed=50, faults="drop=0.01") as sim:
        settings = load_settings(venues=sim.venue_overrides())
        ...
        book = sim.reference_book(Venue.BINANCE_SPOT, "BTCUSDT")

Three servers on ephemeral ports (one per venue host): Bybit (``/v5/public/spot``, ``/v5/public/linear`` and
``/v5/market/*``), Binance spot (``/ws``, ``/stream``, ``/api/v3/*``) and Binance USD-M (``/ws``,
``/stream``, ``/public/...``, ``/market/...``, ``/fapi/v1/*``). Every venue's timeline starts when the sim
starts (``align_ns``: up to that much later, on the recording's sub-step phase; ``runners[v].start_wall_ns``
is the wall time its first record is due) and is paced by the recorded receive times / ``speed`` and loops
seamlessly (``loop.py``); the wire behaviour is in ``ws.py`` (connections, fan-out), ``binance.py``,
``bybit.py`` and ``rest.py``, the
faults in ``faults.py``. Handler errors never escape: REST through ``rest.error_middleware``, websocket
frames in the venue modules' read loops, anything else around a connection in ``ws.serve_conn`` (a clean
1011 close), each counted in ``stats[venue]["handler_errors"]``.
All four venues are always served; a venue the recording does not hold answers REST with no symbols and
keeps its sockets silent, and ``venue_overrides()`` disables it.
The private side (one account: ``account.py``) is ``private_binance.py`` and, on the Bybit host, the
signed ``/v5/order/*``, ``/v5/account/*``... (``private_bybit.py``) and the ``/v5/private`` stream
(``private_bybit_ws.py``).

``sim.urls[venue]`` is a ``MarketUrls(ws_url, rest_url)`` whose ``ws_url`` goes straight into
``VenueConfig.ws_url``: Bybit ``ws://127.0.0.1:P/v5/public/spot``, Binance the base ``ws://127.0.0.1:P``
(the client appends ``/stream?streams=...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import structlog
from aiohttp import web

from bot.demo import KLINES as DEMO_KLINES
from bot.errors import ConfigError
from bot.events import Venue
from bot.sim import binance, bybit
from bot.sim.account import SimAccount
from bot.sim.bybit_ledger import BybitLedger
from bot.sim.faults import FaultSpec, OrderDice, RestartDice, RestDice
from bot.sim.klines import KlineStore, LiveKlines
from bot.sim.loop import VenueRunner
from bot.sim.private_binance import BinancePrivate
from bot.sim.private_bybit import BybitPrivate
from bot.sim.private_bybit_ws import BybitPrivateStream
from bot.sim.replay import BINANCE, Timeline, VenueReplay, load_timelines
from bot.sim.rest import BinanceRest, BybitRest, error_middleware
from bot.sim.truth import RefBook
from bot.sim.userdata_binance import BinanceUserData
from bot.sim.ws import Conn, SimStats, SimTimings, VenueHub, serve_conn

log = structlog.get_logger(__name__)

GOING_AWAY = 1001


class MarketUrls(NamedTuple):
    ws_url: str
    rest_url: str


_USDM_WS_PREFIXES = ("", "/public", "/market")


class LoopbackExchange:
    def __init__(
        self,
        data: Path,
        *,
        speed: float = 1.0,
        seed: int = 0,
        faults: FaultSpec | str = "",
        loop: bool = True,
        host: str = "127.0.0.1",
        klines_dir: Path | None = None,
        timings: SimTimings | None = None,
        splice_klines: bool | None = None,
        api_key: str = "sim-key",
        api_secret: str = "sim-secret",
        balances: dict[Venue, dict[str, Decimal]] | None = None,
        align_ns: int = 0,
    ) -> None:
        if not speed > 0:
            raise ConfigError(f"speed must be > 0, not {speed}")
        if align_ns < 0:
            raise ConfigError(f"align_ns must be >= 0, not {align_ns}")
        # > 0: each venue's playback starts at a wall time congruent to its first record's receive time
        # modulo align_ns (bot.sim.loop.VenueRunner._start), e.g. 1 s: at speed 1 a run's 1 s wall-clock
        # grid then cuts the recording at the same receive times as a replay's grid. 0: at once.
        self.align_ns = int(align_ns)
        self.data = Path(data)
        self.speed = float(speed)
        self.seed = int(seed)
        self.faults = FaultSpec.parse(faults)
        self.loop = loop
        self.host = host
        self.klines = KlineStore(Path(klines_dir) if klines_dir is not None else None)
        # REST history spliced onto the live session (bot.sim.klines); by default for the demo klines only
        demo = klines_dir is not None and Path(klines_dir).resolve() == DEMO_KLINES.resolve()
        self.splice_klines = demo if splice_klines is None else bool(splice_klines)
        self.timings = timings or SimTimings()
        self._api_key, self._api_secret = api_key, api_secret  # the private side's account (bot.sim.account)
        self._balances = balances or {}
        self.account: SimAccount | None = None
        self.sim_stats = SimStats()
        self.timelines: dict[Venue, Timeline] = {}
        self.replays: dict[Venue, VenueReplay] = {}
        self.hubs: dict[Venue, VenueHub] = {}
        self._private_hubs: list[VenueHub] = []  # the private streams' (closed at stop like the public ones)
        self.runners: dict[Venue, VenueRunner] = {}
        self.urls: dict[Venue, MarketUrls] = {}
        self._app_runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> LoopbackExchange:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.timelines = await asyncio.to_thread(load_timelines, self.data)
        if self.splice_klines:  # each symbol's first live bar, before any client asks for history
            self.klines.sessions = await asyncio.to_thread(
                lambda: {v: LiveKlines.from_items(v, tl.items) for v, tl in self.timelines.items()}
            )
        # The timelines are hundreds of thousands of long-lived objects: keep them out of the cyclic
        # GC's full collections, which otherwise stall the event loop for ~0.3 s at a time.
        gc.collect()
        gc.freeze()
        for venue in Venue:
            tl = self.timelines.get(venue) or Timeline(venue)
            replay = VenueReplay(tl)
            fanout = binance.publish if venue in BINANCE else bybit.publish
            hub = VenueHub(venue, replay, faults=self.faults, seed=self.seed, timings=self.timings,
                           stats=self.sim_stats, fanout=fanout)  # fmt: skip
            dice = RestartDice(self.faults, self.seed, venue.value)
            live = self.klines.sessions.get(venue)
            publish = hub.publish if live is None else live.tap(hub.publish)
            runner = VenueRunner(replay, self.speed, self.loop, publish, self._restart(hub), dice.roll,
                                 align_ns=self.align_ns)
            hub.clock_ms = runner.now_ms
            self.replays[venue], self.hubs[venue], self.runners[venue] = replay, hub, runner
        self.account = SimAccount(self.replays, self._balances)
        ports = {}
        for name, app in (("bybit", self._bybit_app()), ("binance_spot", self._binance_app(Venue.BINANCE_SPOT)),
                          ("binance_usdm", self._binance_app(Venue.BINANCE_USDM))):  # fmt: skip
            runner_ = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner_.setup()
            site = web.TCPSite(runner_, self.host, 0)
            await site.start()
            self._app_runners.append(runner_)
            ports[name] = runner_.addresses[0][1]
        h = self.host
        self.urls = {
            Venue.BYBIT_SPOT: MarketUrls(f"ws://{h}:{ports['bybit']}/v5/public/spot", f"http://{h}:{ports['bybit']}"),
            Venue.BYBIT_LINEAR: MarketUrls(
                f"ws://{h}:{ports['bybit']}/v5/public/linear", f"http://{h}:{ports['bybit']}"
            ),
            Venue.BINANCE_SPOT: MarketUrls(f"ws://{h}:{ports['binance_spot']}", f"http://{h}:{ports['binance_spot']}"),
            Venue.BINANCE_USDM: MarketUrls(f"ws://{h}:{ports['binance_usdm']}", f"http://{h}:{ports['binance_usdm']}"),
        }
        for venue, runner in self.runners.items():
            if runner.total:
                task = asyncio.create_task(runner.run(), name=f"sim-replay-{venue.value}")
                task.add_done_callback(self._task_done)
                self._tasks.append(task)
        log.info(
            "sim_started",
            venues={v.value: len(tl.items) for v, tl in self.timelines.items()},
            speed=self.speed,
            seed=self.seed,
            faults=str(self.faults),
            loop=self.loop,
            splice_klines=self.splice_klines,
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sim_replay_failed", task=task.get_name(), error=repr(task.exception()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for hub in [*self.hubs.values(), *self._private_hubs]:
            hub.close_all(GOING_AWAY, "going away")
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for handler in list(self._handlers):
            handler.cancel()
        for r in self._app_runners:
            await r.cleanup()
        self._app_runners.clear()

    def _restart(self, hub: VenueHub) -> Callable[[], Awaitable[None]]:
        """The ``restart`` fault at the end of the recording: every connection of the venue goes away."""

        async def end() -> None:
            log.info("sim_venue_restarts", venue=hub.venue.value, connections=len(hub.conns))
            hub.close_all(GOING_AWAY, "going away")
            hub.count("loop_restarts")
            await asyncio.sleep(0)

        return end

    # -- apps --------------------------------------------------------------------------------------
    def _bybit_app(self) -> web.Application:
        guard = error_middleware(None, self.sim_stats, self.runners[Venue.BYBIT_LINEAR].now_ms)
        app = web.Application(middlewares=[guard])
        for venue, path in ((Venue.BYBIT_SPOT, "/v5/public/spot"), (Venue.BYBIT_LINEAR, "/v5/public/linear")):
            app.router.add_get(path, self._ws_route(venue, combined=True, streams=False))
        bybit = [Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR]
        rest = BybitRest(
            {v: self.replays[v] for v in bybit},
            {v: self.runners[v].now_ms for v in bybit},
            {v: RestDice(self.faults, self.seed, v.value) for v in bybit},
            self.klines,
            self.sim_stats,
        )
        app.add_routes(rest.routes())
        assert self.account is not None
        ledger = BybitLedger(self.account, {v: self.runners[v].now_ms for v in bybit})
        stream = BybitPrivateStream(ledger, self._api_key, self._api_secret, self.replays[Venue.BYBIT_LINEAR],
                                    self.timings, self.sim_stats, self._handlers)  # fmt: skip
        self._private_hubs.append(stream.hub)
        app.add_routes([*BybitPrivate(ledger, self._api_key, self._api_secret).routes(),
                        web.get("/v5/private", stream.handle)])  # fmt: skip
        return app

    def _binance_app(self, venue: Venue) -> web.Application:
        app = web.Application(middlewares=[error_middleware(venue, self.sim_stats, self.runners[venue].now_ms)])
        prefixes = _USDM_WS_PREFIXES if venue is Venue.BINANCE_USDM else ("",)
        assert self.account is not None
        private = BinancePrivate(venue, self.account, self.runners[venue].now_ms, self._api_key, self._api_secret,
                                 OrderDice(self.faults, self.seed, venue.value), self.sim_stats)  # fmt: skip
        user = BinanceUserData(private, self.hubs[venue])  # a live listenKey on /ws/... or /stream is private
        for prefix in prefixes:
            app.router.add_get(f"{prefix}/ws", self._ws_route(venue, combined=False, streams=False))
            raw, combined = (self._ws_route(venue, combined=c, streams=True) for c in (False, True))
            app.router.add_get(prefix + "/ws/{streams:.+}", user.divert(raw, combined=False))
            app.router.add_get(f"{prefix}/stream", user.divert(combined, combined=True))
        app.add_routes(private.routes() + user.routes())
        rest = BinanceRest(
            venue,
            self.replays[venue] if venue in self.timelines else None,
            self.runners[venue].now_ms,
            RestDice(self.faults, self.seed, venue.value),
            self.klines,
            self.sim_stats,
        )
        app.add_routes(rest.routes())
        return app

    def _ws_route(
        self, venue: Venue, *, combined: bool, streams: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            names: list[str] = []
            if streams:
                raw = request.match_info.get("streams") or request.query.get("streams", "")
                names = [s for s in raw.split("/") if s]
            return await self._serve_ws(request, venue, combined, names)

        return handler

    async def _serve_ws(
        self, request: web.Request, venue: Venue, combined: bool, names: list[str]
    ) -> web.StreamResponse:
        hub = self.hubs[venue]
        if venue not in BINANCE:
            return await serve_conn(request, hub, bybit.read_loop, where="ws_connection", autoping=True,
                                    combined=combined, sndbuf=self.timings.socket_sndbuf, handlers=self._handlers)

        def subscribe(conn: Conn) -> None:
            binance.subscribe(hub, conn, names)  # malformed names in the URL are ignored

        return await serve_conn(request, hub, binance.read_loop, where="ws_connection", autoping=False,
                                combined=combined, helpers=(binance.ping_loop,), opened=subscribe if names else None,
                                sndbuf=self.timings.socket_sndbuf, handlers=self._handlers)

    # -- views for tests and the bot ---------------------------------------------------------------
    def venue_overrides(self) -> dict[str, dict[str, Any]]:
        """``load_settings(venues=sim.venue_overrides())``: every venue points at the sim; venues the
        recording lacks are disabled; symbols are the recorded ones."""
        out: dict[str, dict[str, Any]] = {}
        for venue, urls in self.urls.items():
            tl = self.timelines.get(venue)
            cfg: dict[str, Any] = {"ws_url": urls.ws_url, "rest_url": urls.rest_url, "enabled": tl is not None}
            if tl is not None:
                cfg["symbols"] = tuple(tl.symbols)
                if venue not in BINANCE and tl.depth_topic:
                    cfg["depth"] = next(iter(tl.depth_topic.values())).split(".")[1]
            out[venue.value] = cfg
        return out

    @property
    def fault_counts(self) -> Counter[tuple[Venue, str]]:
        return self.sim_stats.faults

    @property
    def fault_log(self) -> list[tuple[str, int, int, str]]:
        """Every fault fired: (venue, connection index, diff number on that connection, kind)."""
        return list(self.sim_stats.fault_log)

    def reference_book(self, venue: Venue, symbol: str, depth: int | None = None) -> RefBook | None:
        """The sim's current truth for ``symbol``: levels best first and the venue's update id (None
        before the replay has a book)."""
        return self.replays[venue].reference(symbol, depth)

    def clock_ms(self, venue: Venue) -> int:
        return self.runners[venue].now_ms()

    def position(self, venue: Venue) -> tuple[int, int, int]:
        """(cycle, items replayed in this cycle, items per cycle)."""
        r = self.runners[venue]
        return r.cycle, r.pos, r.total

    async def wait_position(self, venue: Venue, target: float | int, *, within_s: float = 60.0) -> None:
        """Wait until the replay of ``venue`` has passed ``target``: a fraction of the timeline (float in
        [0, 1]) or a number of items (int), in the current cycle (a later cycle counts as passed)."""
        r = self.runners[venue]
        if r.total == 0:
            raise ConfigError(f"{venue} has no recorded data")
        want = min(r.total, int(target * r.total) if isinstance(target, float) else int(target))
        cycle0 = r.cycle
        deadline = time.monotonic() + within_s
        while r.pos < want and r.cycle == cycle0 and not r.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{venue}: replay at {r.pos}/{r.total}, waited for {want} ({within_s} s)")
            await asyncio.sleep(0.005)

    async def wait_cycle(self, venue: Venue, cycle: int, *, within_s: float = 60.0) -> None:
        """Wait until the replay of ``venue`` has started cycle number ``cycle`` (0 = the first)."""
        r = self.runners[venue]
        deadline = time.monotonic() + within_s
        while r.cycle < cycle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{venue}: still in cycle {r.cycle}, waited for {cycle}")
            await asyncio.sleep(0.005)

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for venue, r in self.runners.items():
            d: dict[str, Any] = {
                "items_total": r.total,
                "items_replayed": r.stats.sent_items,
                "position": r.pos,
                "cycles": r.stats.cycles,
                "loop_wraps": r.stats.wraps,
                "max_lag_ms": round(r.stats.max_lag_ms, 1),
                "late_items": r.stats.late_items,
                "open_connections": len(self.hubs[venue].conns),
            }
            for (v, what), n in self.sim_stats.counts.items():
                if v is venue:
                    d[what] = n
            for (v, kind), n in self.sim_stats.faults.items():
                if v is venue:
                    d[f"fault_{kind}"] = n
            tl = self.timelines.get(venue)
            if tl is not None:
                d.update({f"load_{k}": n for k, n in tl.load_stats.items()})
            out[venue.value] = d
        return out
