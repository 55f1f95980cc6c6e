"""Reference data, the async edge: instrument rules and venue server time, fetched over REST and
published on the bus (``InstrumentInfo``, ``ClockSkew``) for the risk gate and execution.

    ReferenceData.run ── TaskGroup
      ├── _rules_loop ×venue     at start (retried with backoff until it works), then every refresh_s
      └── _skew_loop ×time URL   every skew_every_s: skew_samples round trips, the shortest one counts

The parsers are pure and live with the venue spellings (``bot.venues.reference``). Errors follow
``bot.feed``: ``VenueUnavailable``/``RateLimited`` and malformed bodies are retried with capped exponential
backoff (a 429/418 waits at least its Retry-After, and ``bot.rest`` refuses to ask a gated host sooner);
``VenueRejected`` (a symbol the venue does not know, say) is logged and tried again only at the next refresh.

Clock skew: ``offset_ms = server time - local time at the middle of the round trip`` (Binance answers whole
ms, so +-1 ms of that is the venue's rounding); ``round_trip_ms`` bounds the error. Bybit spot and linear
share one host and one ``/v5/market/time``: one measurement, a ``ClockSkew`` for each venue.

Against the loopback exchange (``--sim``) skew means nothing: its time endpoints answer the replay clock
(the recording's exchange time, ``bot.sim.rest``), i.e. another day, so the offset is the age of the
recording (months to years). ``measure_skew=False`` (or ``[reference] measure_skew = false``) turns the
measurement off so the risk gate's skew alarm cannot trip on it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from bot.backoff import Backoff
from bot.bus import EventBus
from bot.clock import Clock
from bot.config import BotSettings
from bot.errors import DataIntegrityError, RateLimited, VenueError, VenueRejected
from bot.events import Venue
from bot.orders import ClockSkew, Instrument, InstrumentInfo
from bot.rest import RestClient
from bot.venues.reference import instruments_url, parse_instruments, parse_server_time, time_url

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
MAX_PAGES = 20  # Bybit linear: ~800 instruments, one page of 1000


@dataclass
class ReferenceStats:
    rules_fetches: int = 0  # successful instrument-rule fetches (all pages of one venue)
    rules_failures: int = 0
    instruments_published: int = 0
    skew_measurements: int = 0
    skew_failures: int = 0


@dataclass(frozen=True)
class SkewSample:
    offset_ms: float
    round_trip_ms: float
    server_ns: int
    local_ns: int  # local wall time when the answer was read


class ReferenceData:
    """Fetches and publishes every enabled venue's instrument rules and server-time offset until cancelled."""

    def __init__(
        self,
        settings: BotSettings,
        bus: EventBus,
        clock: Clock,
        rest: RestClient | None = None,
        *,
        measure_skew: bool | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.reference
        self.bus = bus
        self.clock = clock
        self.measure_skew = self.cfg.measure_skew if measure_skew is None else measure_skew
        self.stats = ReferenceStats()
        self._rest = rest
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._instruments: dict[tuple[Venue, str], Instrument] = {}
        self._skew: dict[Venue, ClockSkew] = {}
        self._pending = set(settings.enabled_venues())  # venues whose rules were never fetched
        self._ready = asyncio.Event()
        if not self._pending:
            self._ready.set()

    # -- what it has ------------------------------------------------------------------------------------------

    def instruments(self) -> dict[tuple[Venue, str], Instrument]:
        """Every instrument's rules fetched so far, by (venue, symbol)."""
        return dict(self._instruments)

    def skew(self) -> dict[Venue, ClockSkew]:
        """The last clock-skew measurement per venue."""
        return dict(self._skew)

    async def wait_ready(self) -> None:
        """Return once every enabled venue's rules have been fetched once."""
        await self._ready.wait()

    # -- running ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        own = self._rest is None
        rest = self._rest or RestClient(self.settings.reconnect.rest_timeout_s, clock=self.clock)
        venues = self.settings.enabled_venues()
        log.info("reference_starting", venues=[v.value for v in venues], measure_skew=self.measure_skew,
                 cfg=self.cfg.model_dump())  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                for venue in venues:
                    tg.create_task(self._rules_loop(rest, venue), name=f"reference_rules:{venue.value}")
                if self.measure_skew:
                    for url, group in self._time_groups().items():
                        tg.create_task(self._skew_loop(rest, url, group), name=f"reference_skew:{group[0].value}")
        finally:
            if own:
                await rest.close()

    def _time_groups(self) -> dict[str, list[Venue]]:
        groups: dict[str, list[Venue]] = {}
        for venue, cfg in self.settings.enabled_venues().items():
            groups.setdefault(time_url(venue, cfg.rest_url), []).append(venue)
        return groups

    def _backoff(self) -> Backoff:
        rc = self.settings.reconnect
        return Backoff(rc.initial_s, rc.max_s, rc.jitter, self._rng)

    # -- instrument rules -------------------------------------------------------------------------------------

    async def _rules_loop(self, rest: RestClient, venue: Venue) -> None:
        backoff = self._backoff()
        vlog = log.bind(venue=venue.value)
        while True:
            try:
                found = await self.fetch_instruments(rest, venue)
            except VenueRejected as e:
                self.stats.rules_failures += 1
                vlog.error("instrument_rules_rejected", error=str(e), retry_in_s=self.cfg.refresh_s)
                await self._sleep(self.cfg.refresh_s)
                continue
            except (VenueError, DataIntegrityError) as e:
                self.stats.rules_failures += 1
                delay = max(e.retry_after if isinstance(e, RateLimited) else 0.0, backoff.next())
                vlog.warning("instrument_rules_failed", error=str(e), attempt=backoff.attempts,
                             retry_in_s=round(delay, 3))  # fmt: skip
                await self._sleep(delay)
                continue
            backoff.reset()
            self.stats.rules_fetches += 1
            missing = sorted(set(self.settings.venues[venue].symbols) - {i.symbol for i in found})
            vlog.info("instrument_rules_fetched", symbols=sorted(i.symbol for i in found), missing=missing)
            if self._pending:
                self._pending.discard(venue)
                if not self._pending:
                    self._ready.set()
            await self._sleep(self.cfg.refresh_s)

    async def fetch_instruments(self, rest: RestClient, venue: Venue) -> list[Instrument]:
        """Fetch ``venue``'s configured symbols' rules (all pages), publish an ``InstrumentInfo`` each."""
        cfg = self.settings.venues[venue]
        wanted = set(cfg.symbols)
        found: dict[str, Instrument] = {}
        cursor = ""
        for _ in range(MAX_PAGES):
            _, body = await rest.get_text(instruments_url(venue, cfg.rest_url, cfg.symbols, cursor))
            page, cursor = parse_instruments(venue, body, wanted)
            found.update((i.symbol, i) for i in page)
            if not cursor or wanted <= found.keys():
                break
        ts = self.clock.now_ns()
        for inst in found.values():
            self._instruments[(venue, inst.symbol)] = inst
            self.bus.publish(InstrumentInfo(ts_event=ts, ts_recv=ts, instrument=inst))
        self.stats.instruments_published += len(found)
        return list(found.values())

    # -- server time --------------------------------------------------------------------------------------------

    async def _skew_loop(self, rest: RestClient, url: str, venues: list[Venue]) -> None:
        names = [v.value for v in venues]
        failures = 0
        while True:
            wait = self.cfg.skew_every_s
            try:
                sample = await self.measure(rest, url, venues[0])
            except (VenueError, DataIntegrityError) as e:
                self.stats.skew_failures += 1
                failures += 1
                if isinstance(e, RateLimited):
                    wait = max(wait, e.retry_after)
                if failures == 1 or failures % 100 == 0:  # every 30 s: say it, not every time
                    log.warning("clock_skew_failed", venues=names, error=str(e), failures=failures)
            else:
                failures = 0
                self.stats.skew_measurements += 1
                for venue in venues:
                    ev = ClockSkew(ts_event=sample.server_ns, ts_recv=sample.local_ns, venue=venue,
                                   offset_ms=sample.offset_ms, round_trip_ms=sample.round_trip_ms)  # fmt: skip
                    self._skew[venue] = ev
                    self.bus.publish(ev)
            await self._sleep(wait)

    async def measure(self, rest: RestClient, url: str, venue: Venue) -> SkewSample:
        """``skew_samples`` round trips to ``url``; the one with the shortest round trip (the tightest bound)."""
        best: SkewSample | None = None
        for _ in range(self.cfg.skew_samples):
            wall0, mono0 = self.clock.now_ns(), self.clock.monotonic_ns()
            _, body = await rest.get_text(url)
            rtt = self.clock.monotonic_ns() - mono0
            server = parse_server_time(venue, body)
            offset = server - (wall0 + rtt // 2)
            sample = SkewSample(offset / 1e6, rtt / 1e6, server, wall0 + rtt)
            if best is None or sample.round_trip_ms < best.round_trip_ms:
                best = sample
        assert best is not None  # skew_samples >= 1
        return best


__all__ = ["ReferenceData", "ReferenceStats", "SkewSample"]
