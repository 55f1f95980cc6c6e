"""The real collectors (bot.feed + bot.venues) against the loopback exchange (bot.sim), one fault at a time.

Every test plays the first ``SECONDS`` of the real recordings of all four markets (Binance spot and USD-M
BTCUSDT, Bybit spot BTC/ETH, Bybit linear BTC/ETH/SOL/DOGE) at ``SPEED``, with one kind of fault,
and asserts that the fault fired (``sim.fault_counts``), that the collector reacted the way it should
(gap and resync, watchdog, reconnect, rate-limit wait...), and that afterwards every book is LIVE and
equals the sim's unfaulted truth at the same update id: the top ``DEPTH`` levels, prices and sizes,
exactly.

Comparing "at the same update id" needs both sides read at one instant: the sim and the collector share
this event loop, so ``books_match_truth`` polls, and whenever a LIVE book's update id equals the truth's
it compares them (and a mismatch then is a failure). Between replayed messages the client catches up,
so such instants come often.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings
from bot.events import BookState, KlineClosed, Venue
from bot.feed import Collector
from bot.sim import LoopbackExchange
from bot.venues._shared import BookAdapter
from tests.integration.conftest import build_recording

pytestmark = pytest.mark.integration

SECONDS = 40.0  # of each venue's recording (Bybit holds ~42 s)
SPEED = 10.0  # so one test replays 4 s
DEPTH = 20
BINANCE = (Venue.BINANCE_SPOT, Venue.BINANCE_USDM)
BYBIT = (Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR)
ALL = BINANCE + BYBIT


@pytest.fixture(scope="module")
def recording(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_recording(tmp_path_factory.mktemp("collectors") / "rec", shared_data, seconds=SECONDS)


@dataclass
class Run:
    sim: LoopbackExchange
    collector: Collector
    klines: list[KlineClosed]

    def adapter(self, venue: Venue) -> BookAdapter:
        a = self.collector.adapters[venue]
        assert isinstance(a, BookAdapter)
        return a

    def books(self) -> Iterable[tuple[Venue, str]]:
        for venue in ALL:
            for symbol in self.adapter(venue).books:
                yield venue, symbol

    def total(self, venue: Venue, counter: str) -> int:
        return sum(getattr(self.adapter(venue).stats, counter).values())


@pytest.fixture
def run_sim(recording: Path, sim_klines_dir: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Run]]:
    @contextlib.asynccontextmanager
    async def start(faults: str = "", seed: int = 1, backfill: int = 0, **reconnect: float) -> AsyncIterator[Run]:
        async with LoopbackExchange(
            recording, speed=SPEED, seed=seed, faults=faults, loop=False, klines_dir=sim_klines_dir
        ) as sim:
            settings = BotSettings(
                venues=sim.venue_overrides(),
                reconnect={"initial_s": 0.05, "max_s": 0.5, "watchdog_s": 30.0} | reconnect,
                book={"resync_backoff_initial_s": 0.05, "resync_backoff_max_s": 0.5, "stale_after_s": 30.0},
                klines={"resolutions": ["1m"], "backfill": backfill},  # the sim reads its kline CSVs slowly
            )
            assert set(settings.enabled_venues()) == set(ALL)
            bus = EventBus()
            klines: list[KlineClosed] = []
            bus.subscribe(KlineClosed, klines.append)
            collector = Collector(settings, bus, LiveClock())
            task = asyncio.create_task(collector.run())
            try:
                yield Run(sim, collector, klines)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return start


async def until(cond: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not cond():  # noqa: ASYNC110 - state of the sim and the collector, no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for: {what}") from None


def truth_update_id(sim: LoopbackExchange, venue: Venue, symbol: str, client_u: int) -> int:
    """The truth's update id for the client's: equal, except after a ``bybit_reset`` fault, which
    renumbers that connection's deltas from 1 (the sim keeps the base in ``Conn.renumber``)."""
    if venue in BYBIT:
        for conn in sim.hubs[venue].conns:
            for topic, base in conn.renumber.items():
                if topic.endswith("." + symbol):
                    return client_u + base - 1
    return client_u


async def books_match_truth(run: Run, within_s: float = 15.0) -> dict[tuple[Venue, str], int]:
    """Wait until every book has been LIVE at the truth's update id; assert the top DEPTH levels equal.

    Returns the update id each book was compared at.
    """
    pending = set(run.books())
    compared: dict[tuple[Venue, str], int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while pending:
        for venue, symbol in list(pending):
            adapter = run.adapter(venue)
            if adapter.states[symbol] is not BookState.LIVE:
                continue
            book = adapter.books[symbol]
            ref = run.sim.reference_book(venue, symbol, DEPTH)
            if ref is None or ref.update_id != truth_update_id(run.sim, venue, symbol, book.update_id):
                continue
            bids, asks = book.top(DEPTH)
            assert len(ref.bids) == len(ref.asks) == DEPTH
            assert list(bids) == ref.bids, f"{venue} {symbol} bids differ at update {ref.update_id}"
            assert list(asks) == ref.asks, f"{venue} {symbol} asks differ at update {ref.update_id}"
            compared[(venue, symbol)] = ref.update_id
            pending.discard((venue, symbol))
        if loop.time() > deadline:
            states = {f"{v.value}/{s}": run.adapter(v).states[s].value for v, s in sorted(pending)}
            raise AssertionError(f"books never LIVE at the truth's update id within {within_s} s: {states}")
        await asyncio.sleep(0.001)
    return compared


def fired(run: Run, kind: str, venues: Iterable[Venue] = ALL) -> dict[Venue, int]:
    return {v: run.sim.fault_counts[(v, kind)] for v in venues}


async def wait_fired(run: Run, kind: str, venues: Iterable[Venue] = ALL, within_s: float = 10.0) -> None:
    venues = tuple(venues)
    await until(lambda: all(n > 0 for n in fired(run, kind, venues).values()), f"{kind} on {venues}", within_s)


# -- no faults -----------------------------------------------------------------------------------


async def test_without_faults_every_book_goes_live_and_equals_the_truth_with_no_gap_or_resync(
    run_sim: Callable[..., Any],
) -> None:
    async with run_sim(backfill=20) as run:
        compared = await books_match_truth(run)
        await asyncio.sleep(1.0)  # keep streaming a while: still nothing may go wrong
        await books_match_truth(run)

        assert len(compared) == 8  # 1 + 1 Binance, 2 Bybit spot, 4 Bybit linear
        for venue in ALL:
            assert run.total(venue, "gaps") == 0, venue
            assert run.total(venue, "resyncs") == 0, venue
            assert run.adapter(venue).stats.malformed == 0, venue
        s = run.collector.stats
        assert (s.reconnects, s.watchdog_trips, s.rest_errors, s.snapshot_failures, s.malformed_frames) == (
            0,
            0,
            0,
            0,
            0,
        )
        assert s.snapshots_applied == 2  # one per Binance book
        assert sum(run.sim.fault_counts.values()) == 0
        # the kline backfill: 20 closed 1m bars of every venue and symbol the sim has CSVs for
        expected = {(v, s) for v, s in run.books() if s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}

        def backfilled() -> set[tuple[Venue, str]]:
            return {(k.venue, k.symbol) for k in run.klines if k.source == "rest"}

        await until(lambda: backfilled() >= expected, "klines backfilled for every book")  # REST runs alongside
        rest = [k for k in run.klines if k.source == "rest"]
        assert backfilled() == expected
        assert all(k.interval_s == 60 for k in rest)
        status = run.collector.status()
        assert {b["state"] for b in status["books"]} == {"live"}
        assert all(c["connected"] for c in status["connections"])


# -- stream faults -------------------------------------------------------------------------------


async def test_dropped_book_messages_are_detected_as_gaps_and_resynced_to_the_truth(
    run_sim: Callable[..., Any],
) -> None:
    async with run_sim(faults="drop=0.02") as run:
        await wait_fired(run, "drop")
        for venue in ALL:
            await until(lambda venue=venue: run.total(venue, "gaps") > 0, f"a gap on {venue}")
        await books_match_truth(run)
        for venue in ALL:
            assert run.total(venue, "resyncs") > 0, venue
        s = run.collector.stats
        assert s.resubscribes > 0  # Bybit resyncs by resubscribing
        assert s.snapshots_applied > 2  # Binance resyncs by a fresh REST snapshot


async def test_duplicated_book_messages_are_ignored_without_corrupting_the_book(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="dup=0.02") as run:
        await wait_fired(run, "dup")
        compared = await books_match_truth(run)
        assert len(compared) == 8
        for venue in BINANCE:
            assert run.total(venue, "dropped_stale") > 0, venue


async def test_reordered_book_messages_force_a_resync_that_ends_equal_to_the_truth(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="reorder=0.02") as run:
        await wait_fired(run, "reorder")
        for venue in ALL:
            await until(lambda venue=venue: run.total(venue, "resyncs") > 0, f"a resync on {venue}")
        await books_match_truth(run)


async def test_malformed_frames_are_counted_dropped_and_the_lost_update_resynced(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="malformed=0.02") as run:
        await wait_fired(run, "malformed")
        for venue in ALL:
            await until(lambda venue=venue: run.adapter(venue).stats.malformed > 0, f"malformed counted on {venue}")
            await until(lambda venue=venue: run.total(venue, "resyncs") > 0, f"a resync on {venue}")
        await books_match_truth(run)
        # The collector's counter is what the adapters dropped (it stayed 0 while they logged drops), and
        # nothing more than the sim damaged: every drop is one damaged frame, counted once.
        dropped = {v: run.adapter(v).stats.malformed for v in ALL}
        sent = fired(run, "malformed")
        status = run.collector.status()  # no await since dropped was read: the same instant
        assert status["stats"]["malformed_frames"] == sum(dropped.values()) > 0
        assert run.collector.stats.undecodable_frames == 0
        assert run.collector.stats.malformed_frames == sum(run.adapter(v).stats.malformed for v in ALL)
        for venue in ALL:
            assert 0 < dropped[venue] <= sent[venue], venue
        json.dumps(status, allow_nan=False)


async def test_a_silent_stall_trips_the_watchdog_which_reconnects_and_resyncs(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="stall=0.01:2", watchdog_s=0.5) as run:
        await wait_fired(run, "stall", BYBIT)  # Bybit's busy linear and spot sockets: deterministic with seed 1
        await until(lambda: run.collector.stats.watchdog_trips > 0, "a watchdog trip")
        await books_match_truth(run)
        assert run.collector.stats.reconnects >= run.collector.stats.watchdog_trips


async def test_a_server_side_disconnect_is_reconnected_and_the_books_resynced(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="disconnect=0.005") as run:
        await wait_fired(run, "disconnect", BYBIT)
        await until(lambda: run.collector.stats.reconnects > 0, "a reconnect")
        await books_match_truth(run)
        conns = run.collector.status()["connections"]
        assert sum(c["reconnects"] for c in conns) == run.collector.stats.reconnects
        # disconnect faults keep firing: every connection comes back, though not necessarily all at once
        await until(lambda: all(c["connected"] for c in run.collector.status()["connections"]), "all reconnected")


async def test_bybit_u1_snapshot_resets_the_book_and_it_stays_equal_to_the_truth(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="bybit_reset=0.01") as run:
        await wait_fired(run, "bybit_reset", BYBIT)
        assert fired(run, "bybit_reset", BINANCE) == {Venue.BINANCE_SPOT: 0, Venue.BINANCE_USDM: 0}
        await books_match_truth(run)
        for venue in BYBIT:
            assert run.total(venue, "gaps") == 0, venue  # a u=1 snapshot is a reset, not a gap


# -- REST faults ---------------------------------------------------------------------------------


async def test_failed_snapshots_are_retried_until_the_book_syncs(run_sim: Callable[..., Any]) -> None:
    async with run_sim(faults="snapshot_fail=0.5", seed=3) as run:
        await books_match_truth(run)
        fails = fired(run, "snapshot_fail", BINANCE)
        assert all(n > 0 for n in fails.values()), fails
        s = run.collector.stats
        assert s.snapshot_failures == sum(fails.values())
        assert s.snapshot_attempts == s.snapshot_failures + s.snapshots_applied


async def test_a_429_is_waited_out_and_a_418_ban_is_honoured_before_the_snapshot_succeeds(
    run_sim: Callable[..., Any],
) -> None:
    # Arrange: seed 88 rolls 429 (Retry-After 1 s) for the first depth request of each Binance venue, then
    # no fault for the next two
    async with run_sim(faults="rest429=0.5:1", seed=88) as run:
        await wait_fired(run, "rest429", BINANCE)
        # Act: another client on our IP comes back within the second: the venue bans the IP (418, 2 s)
        async with aiohttp.ClientSession() as http:
            for venue in BINANCE:
                url = run.collector.adapters[venue].snapshot_url("BTCUSDT")
                assert url is not None
                async with http.get(url) as resp:
                    assert resp.status == 418
        # Assert: the collector waited out the 429, met the ban once, waited it out, then synced
        await books_match_truth(run)
        assert fired(run, "rest429", BINANCE) == {Venue.BINANCE_SPOT: 1, Venue.BINANCE_USDM: 1}
        # a client that came back early would have turned a 429 into another ban
        assert fired(run, "rest418", BINANCE) == {Venue.BINANCE_SPOT: 1, Venue.BINANCE_USDM: 1}
        s = run.collector.stats
        assert (s.rate_limited, s.snapshot_failures) == (4, 4)  # per venue: the 429, then the 418
        assert s.snapshots_applied >= 2
