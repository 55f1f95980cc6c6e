"""ReferenceData (bot.reference) against the loopback exchange: instrument rules for every configured symbol
of all four markets (Binance from the sim's tables, Bybit from the real recorded instruments-info), the
refresh, retries after failures, a refused symbol, and what clock skew against the sim means (its time
endpoints answer the replay clock: the recording's day, so the skew is the recording's age and only
``measure_skew=False`` is honest there)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings, RiskConfig
from bot.errors import RateLimited, VenueUnavailable
from bot.events import Venue
from bot.orders import ClockSkew, InstrumentInfo, TradingState
from bot.reference import ReferenceData
from bot.rest import RestClient
from bot.risk import RiskGate
from bot.sim import LoopbackExchange
from tests.integration.conftest import SimFactory

pytestmark = pytest.mark.integration

D = Decimal
FAST = {"initial_s": 0.01, "max_s": 0.05, "jitter": 0.0}


class Recorder:
    def __init__(self, bus: EventBus) -> None:
        self.infos: list[InstrumentInfo] = []
        self.skews: list[ClockSkew] = []
        bus.subscribe(InstrumentInfo, self.infos.append)
        bus.subscribe(ClockSkew, self.skews.append)


async def until(cond: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not cond():  # noqa: ASYNC110 - state of the sim and the client, no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for: {what}") from None


@contextlib.asynccontextmanager
async def running(ref: ReferenceData) -> AsyncIterator[ReferenceData]:
    task = asyncio.create_task(ref.run())
    try:
        yield ref
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def settings_for(sim: LoopbackExchange, **reference: Any) -> BotSettings:
    return BotSettings(venues=sim.venue_overrides(), reconnect=FAST, reference=reference)


async def test_rules_for_every_configured_symbol_of_all_four_markets(make_sim: SimFactory) -> None:
    async with make_sim(loop=False) as sim:
        settings = settings_for(sim)
        bus = EventBus()
        rec = Recorder(bus)
        async with running(ReferenceData(settings, bus, LiveClock(), measure_skew=False)) as ref:
            async with asyncio.timeout(20):
                await ref.wait_ready()
            wanted = {(v, s) for v, cfg in settings.enabled_venues().items() for s in cfg.symbols}
            got = ref.instruments()
            assert set(got) == wanted
            assert {(i.instrument.venue, i.instrument.symbol) for i in rec.infos} == wanted
            assert len(wanted) == 8  # binance spot + usdm BTC, bybit spot BTC/ETH, linear BTC/ETH/SOL/DOGE
            bn = got[(Venue.BINANCE_SPOT, "BTCUSDT")]
            assert (bn.tick_size, bn.step_size, bn.min_qty, bn.min_notional, bn.max_qty) == (
                D("0.01"), D("0.00001"), D("0.00001"), D(5), D(9000))  # fmt: skip
            um = got[(Venue.BINANCE_USDM, "BTCUSDT")]
            assert (um.tick_size, um.step_size, um.min_notional) == (D("0.1"), D("0.001"), D(100))
            # Bybit: the real recorded instruments-info bodies (2026-08-09)
            bl = got[(Venue.BYBIT_LINEAR, "DOGEUSDT")]
            assert (bl.tick_size, bl.step_size, bl.min_qty, bl.min_notional, bl.max_qty) == (
                D("0.00001"), D(1), D(1), D(5), D(43_678_900))  # fmt: skip
            bs = got[(Venue.BYBIT_SPOT, "ETHUSDT")]
            assert (bs.tick_size, bs.step_size, bs.min_notional, bs.max_qty) == (D("0.01"), D("0.00001"), D(5), D(8118))
            assert ref.stats.rules_failures == 0
            assert ref.stats.skew_measurements == 0
            assert rec.skews == []  # measure_skew=False: no skew task at all


async def test_rules_are_fetched_again_every_refresh(make_sim: SimFactory) -> None:
    async with make_sim(loop=False) as sim:
        bus = EventBus()
        rec = Recorder(bus)
        settings = settings_for(sim, refresh_s=0.2, measure_skew=False)
        wanted = {(v, s) for v, cfg in settings.enabled_venues().items() for s in cfg.symbols}

        def published(key: tuple[Venue, str]) -> list[InstrumentInfo]:
            return [i for i in rec.infos if (i.instrument.venue, i.instrument.symbol) == key]

        ref = ReferenceData(settings, bus, LiveClock())
        async with running(ref):
            await until(lambda: all(len(published(k)) >= 2 for k in wanted), "every symbol's rules twice")
        for key in wanted:
            first, second = published(key)[:2]
            assert first.instrument == second.instrument
            assert second.ts_recv > first.ts_recv
        assert ref.stats.rules_fetches >= 8
        assert ref.stats.rules_failures == 0


class FlakyRest(RestClient):
    """The real client, but the first requests to ``fail_path`` fail as a venue would."""

    def __init__(self, fail_path: str, errors: list[Exception]) -> None:
        super().__init__(5.0)
        self.fail_path = fail_path
        self.errors = errors

    async def get_text(self, url: str) -> tuple[int, str]:
        if self.fail_path in url and self.errors:
            raise self.errors.pop(0)
        return await super().get_text(url)


async def test_failures_are_retried_with_backoff_and_retry_after(make_sim: SimFactory) -> None:
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(s if s >= 100 else 0)  # retries at once, the refresh (3600 s) for real

    async with make_sim(loop=False) as sim:
        settings = settings_for(sim, measure_skew=False)
        settings = settings.model_copy(update={"venues": {Venue.BINANCE_USDM: settings.venues[Venue.BINANCE_USDM]}})
        errors: list[Exception] = [VenueUnavailable("HTTP 503"), RateLimited("429", retry_after=7.0, status=429)]
        rest = FlakyRest("/fapi/v1/exchangeInfo", errors)
        bus = EventBus()
        rec = Recorder(bus)
        try:
            async with running(ReferenceData(settings, bus, LiveClock(), rest, sleep=sleep)) as ref:
                async with asyncio.timeout(20):
                    await ref.wait_ready()
                assert ref.stats.rules_failures == 2
                assert sleeps[0] == pytest.approx(0.01)  # the first backoff step (no jitter)
                assert sleeps[1] == 7.0  # at least the Retry-After
                assert [i.instrument.symbol for i in rec.infos] == ["BTCUSDT"]
        finally:
            await rest.close()


async def test_a_symbol_the_venue_refuses_waits_for_the_next_refresh(make_sim: SimFactory) -> None:
    async with make_sim(loop=False) as sim:
        overrides = sim.venue_overrides()
        for name in overrides:
            overrides[name]["enabled"] = name == "binance_spot"
        overrides["binance_spot"]["symbols"] = ("BTCUSDT", "NOSUCHUSDT")
        settings = BotSettings(venues=overrides, reconnect=FAST, reference={"measure_skew": False})
        sleeps: list[float] = []

        async def sleep(s: float) -> None:
            sleeps.append(s)
            await asyncio.sleep(s)

        bus = EventBus()
        rec = Recorder(bus)
        async with running(ReferenceData(settings, bus, LiveClock(), sleep=sleep)) as ref:
            await until(lambda: ref.stats.rules_failures == 1, "the refusal")
            await until(lambda: len(sleeps) == 1, "the wait after it")
        assert sleeps == [3600.0]  # not hammered: the next refresh
        assert rec.infos == []
        assert ref.instruments() == {}


async def test_clock_skew_against_the_sim_is_the_recordings_age(make_sim: SimFactory) -> None:
    """What the sim's time endpoints give: its replay clock, so the 'skew' is months to years and would
    put the risk gate in REDUCING at once. Hence ``measure_skew=False`` for ``--sim``."""
    async with make_sim(loop=False) as sim:
        settings = settings_for(sim, skew_every_s=60.0)
        bus = EventBus()
        rec = Recorder(bus)
        gate = RiskGate(RiskConfig(), _NoExposure(), bus.publish)
        bus.subscribe(ClockSkew, gate.on_skew)
        venues = set(settings.enabled_venues())
        async with running(ReferenceData(settings, bus, LiveClock())) as ref:
            await until(lambda: {s.venue for s in rec.skews} == venues, "a skew per venue")
            wall_ms = time.time() * 1000
            for s in rec.skews:
                replay_minus_wall = sim.clock_ms(s.venue) - wall_ms
                assert abs(s.offset_ms - replay_minus_wall) < 5_000  # the replay clock, within a few s
                assert s.offset_ms < -30 * 86_400_000  # the recordings are from 2024 and 2026-08
                assert 0 < s.round_trip_ms < 5_000
            by = {s.venue: s for s in rec.skews if s.venue.exchange == "bybit"}
            assert by[Venue.BYBIT_SPOT].offset_ms == by[Venue.BYBIT_LINEAR].offset_ms  # one host, one measurement
            assert ref.stats.skew_measurements == 3  # binance spot, binance usdm, bybit
        assert gate.state is TradingState.REDUCING
        assert "clock_skew" in gate.alarms


class _NoExposure:
    def position(self, venue: Venue, symbol: str) -> Decimal:
        return D(0)

    def mark(self, venue: Venue, symbol: str) -> Decimal | None:
        return None

    def equity(self, venue: Venue | None = None) -> Decimal:
        return D(0)

    def gross_exposure(self) -> Decimal:
        return D(0)


class ScriptedClock:
    def __init__(self) -> None:
        self.wall = 1_765_000_000 * 1_000_000_000
        self.mono = 0

    def now_ns(self) -> int:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns


class ScriptedRest:
    """Each request takes ``rtt`` ns and answers Bybit's time as the scripted server clock."""

    def __init__(self, clock: ScriptedClock, answers: list[tuple[int, int]]) -> None:
        self.clock = clock
        self.answers = answers

    async def get_text(self, url: str) -> tuple[int, str]:
        rtt, server_ns = self.answers.pop(0)
        self.clock.advance(rtt)
        return 200, f'{{"retCode":0,"retMsg":"OK","result":{{"timeSecond":"0","timeNano":"{server_ns}"}}}}'


async def test_skew_is_taken_at_the_midpoint_of_the_shortest_round_trip() -> None:
    clock = ScriptedClock()
    t0 = clock.wall
    ms = 1_000_000
    answers = [
        (40 * ms, t0 + 20 * ms + 250 * ms),  # rtt 40 ms, sent at t0: midpoint t0+20 ms, server +250 ms
        (10 * ms, t0 + 45 * ms + 200 * ms),  # sent at t0+40 ms, midpoint t0+45 ms: +200 ms, the tightest
        (30 * ms, t0 + 65 * ms + 300 * ms),
    ]
    settings = BotSettings(reference={"skew_samples": 3})
    ref = ReferenceData(settings, EventBus(), clock, measure_skew=True)
    sample = await ref.measure(ScriptedRest(clock, answers), "http://127.0.0.1/v5/market/time", Venue.BYBIT_SPOT)
    assert (sample.offset_ms, sample.round_trip_ms) == (200.0, 10.0)
    assert sample.local_ns == t0 + 50 * ms
    assert sample.server_ns == t0 + 245 * ms
