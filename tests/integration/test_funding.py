"""Funding rates end to end: the real collector (bot.feed + bot.venues) against the loopback exchange
replaying the embedded demo recording (bot/demo/recording, real Bybit linear ``tickers`` frames).

The collector subscribes ``tickers.{symbol}`` on bybit_linear and ``<symbol>@markPrice@1s`` on
binance_usdm (``VenueConfig.funding``, on by default). The sim answers the Bybit subscription with the
current ticker as a snapshot, as the venue does, then replays the recorded frames; the Binance
recordings hold no mark price stream, so that subscription is accepted and stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from decimal import Decimal

import pytest
import websockets

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings
from bot.events import Venue
from bot.feed import Collector
from bot.orders import FundingRate
from bot.sim import LoopbackExchange
from bot.sim.cli import DEMO_DIR
from bot.venues.binance import BinanceUsdmAdapter
from bot.venues.bybit import BybitLinearAdapter

pytestmark = pytest.mark.integration

SPEED = 4.0  # the Bybit session is 44 s: its funding deltas (ETH at +3 s, SOL at +4 s) come within ~1.5 s
NEXT_FUNDING_NS = 1786320000000 * 1_000_000  # every recorded symbol's nextFundingTime
SESSION_MS = (1786310817000, 1786310862000)  # the Bybit session's venue times (ts), ms


async def _until(cond: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not cond():  # noqa: ASYNC110 - collector state, no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for: {what}") from None


async def test_collector_publishes_bybit_linear_funding_rates_from_the_loopback_exchange() -> None:
    # Arrange
    async with LoopbackExchange(DEMO_DIR / "recording", speed=SPEED, loop=False) as sim:
        settings = BotSettings(
            venues=sim.venue_overrides(),
            reconnect={"initial_s": 0.05, "max_s": 0.5, "watchdog_s": 30.0},
            book={"stale_after_s": 60.0},
            klines={"resolutions": ["1m"], "backfill": 0},
        )
        bus = EventBus()
        rates: list[FundingRate] = []
        bus.subscribe(FundingRate, rates.append)
        collector = Collector(settings, bus, LiveClock())

        # Act
        task = asyncio.create_task(collector.run())
        try:
            linear = collector.adapters[Venue.BYBIT_LINEAR]
            assert isinstance(linear, BybitLinearAdapter)
            await _until(lambda: len(rates) >= 6, "6 funding rates (4 snapshots, ETH and SOL deltas)")
            usdm = collector.adapters[Venue.BINANCE_USDM]
            assert isinstance(usdm, BinanceUsdmAdapter)
            await _until(lambda: usdm.stats.messages > 1000, "binance_usdm frames flowing")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Assert: one event per (rate, time) pair, in the recorded order per symbol
    got = [(r.venue, r.symbol, r.rate, r.funding_time_ns) for r in rates]
    by_symbol: dict[str, list[Decimal]] = {}
    for venue, symbol, rate, t in got:
        assert (venue, t) == (Venue.BYBIT_LINEAR, NEXT_FUNDING_NS)
        by_symbol.setdefault(symbol, []).append(rate)
    assert by_symbol == {
        "BTCUSDT": [Decimal("0.0001")],
        "DOGEUSDT": [Decimal("0.0001")],
        "ETHUSDT": [Decimal("0.00004617"), Decimal("0.00004709")],
        "SOLUSDT": [Decimal("0.00000876"), Decimal("0.00000952")],
    }
    assert linear.funding is not None
    assert linear.funding.stats.published == 6
    assert linear.funding.stats.unchanged > 100  # tickers repeat ~10 times a second: counted, not published
    assert all(SESSION_MS[0] * 1_000_000 <= r.ts_event <= SESSION_MS[1] * 1_000_000 for r in rates)  # venue time
    # binance_usdm subscribed its mark price streams (on the market-tier connection) and got none
    assert usdm.funding is not None
    assert usdm.funding.stats.published == usdm.funding.stats.unchanged == 0
    assert any("btcusdt@markPrice@1s" in c.url for c in usdm.connections())


async def test_sim_acknowledges_binance_mark_price_streams_it_has_no_data_for() -> None:
    async with LoopbackExchange(DEMO_DIR / "recording", speed=SPEED, loop=False) as sim:
        url = f"{sim.urls[Venue.BINANCE_USDM].ws_url}/market/stream?streams=btcusdt@markPrice@1s"
        async with websockets.connect(url, max_queue=None, close_timeout=1) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice"], "id": 1}))
            ack = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            listed = json.loads(await ws.recv())  # nothing else comes first: no recorded mark price

    assert ack == {"result": None, "id": 1}
    assert listed == {"result": ["btcusdt@markPrice@1s", "ethusdt@markPrice"], "id": 2}
