"""The market-data side of a run, assembled: collectors, LOB rings, kline store and resampler, model workers.

    start_market_data(stack, settings, bus, clock, sim=..., ...)    # bot.app.run_bot, bench/intent_latency.py
      (--sim: the loopback exchange in this process, every venue pointed at it)
      Collector ─► bus ─► RingSet (LOB grids), KlineStore + Resampler, model workers (load_workers)
    MarketData.grid_timer(clock, then)   # one task: at every fine-grid time the rings, the workers, then ``then``

Live: the grid is sampled on the wall clock, the book then is the book at that time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.bus import EventBus
from bot.clock import Clock
from bot.config import BotSettings

if TYPE_CHECKING:
    from bot.feed import Collector
    from bot.grid_set import RingSet
    from bot.klines import KlineStore
    from bot.worker_set import WorkerSet


@dataclass
class MarketData:
    settings: BotSettings  # as running: with --sim, the venues point at the loopback exchange
    collector: Collector
    rings: RingSet
    klines: KlineStore
    workers: WorkerSet
    exchange: Any = None  # bot.sim.LoopbackExchange with --sim

    async def grid_timer(self, clock: Clock, then: Callable[[int], None] | None = None) -> None:
        """Tick the LOB grids, then the model workers (then ``then``), at every fine-grid time."""
        step = self.settings.ring.fine_interval_ms * 1_000_000
        while True:
            now = clock.now_ns()
            await asyncio.sleep(((now // step + 1) * step - now) / 1e9 + 1e-4)
            now = clock.now_ns()
            self.rings.on_time(now)
            self.workers.on_tick(now)
            if then is not None:
                then(now)


async def start_market_data(
    stack: contextlib.AsyncExitStack,
    settings: BotSettings,
    bus: EventBus,
    clock: Clock,
    *,
    sim: bool,
    sim_data: Path | None = None,
    speed: float | None = None,
) -> MarketData:
    from bot.feed import Collector
    from bot.grid_set import RingSet
    from bot.klines import KlineStore, Resampler
    from bot.record import select, start_sim
    from bot.worker_set import load_workers

    exchange = None
    if sim:
        settings, available, exchange = await start_sim(stack, settings, sim_data, speed)
        settings = select(settings, None, None, available=available)
    collector = Collector(settings, bus, clock)
    rings = RingSet.from_settings(settings, collector.get_book)
    rings.attach(bus)
    klines = KlineStore.from_config(settings.ring)
    klines.attach(bus)
    Resampler.from_config(settings.klines).attach(bus)
    workers = await load_workers(settings, rings, klines, bus, clock)
    return MarketData(settings, collector, rings, klines, workers, exchange)
