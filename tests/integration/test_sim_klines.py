"""The loopback exchange's REST kline history joins its live session (``bot.sim.klines``, splicing).

Everything runs on the embedded demo (``bot/demo``: the real recording and the real CSV klines of other
dates), so nothing here needs ``../shared/data``. Each test checks, through the sim's sockets, what a
client that backfills and then follows the stream sees: one series of 1m bars without a gap or an overlap
at the junction, also after a loop wrap; history whose log returns and volumes are the CSV's; a junction
price without a jump; and the bot's own ``KlineStore`` fed by a real ``Collector`` without a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings
from bot.demo import KLINES, RECORDING
from bot.events import KlineClosed, Venue
from bot.feed import Collector
from bot.klines import KlineStore, Resampler
from bot.sim import LoopbackExchange
from bot.sim.cli import add_arguments
from bot.sim.loop import build_plan

pytestmark = pytest.mark.integration

SPOT, USDM, LINEAR = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_LINEAR
MINUTE = 60_000
CSV_DIR = {SPOT: "binance_spot", USDM: "binance_spot", LINEAR: "bybit_linear"}  # USD-M: the spot CSVs
MARKETS = [(SPOT, "BTCUSDT"), (USDM, "BTCUSDT"), (USDM, "ETHUSDT"), (LINEAR, "BTCUSDT"), (LINEAR, "SOLUSDT")]

Bar = tuple[int, float, float, float, float, float]  # open ms, o, h, l, c, v


def csv_bars(venue: Venue, symbol: str) -> list[Bar]:
    with open(KLINES / CSV_DIR[venue] / f"{symbol}_1m.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [(0, *(float(x) for x in r[1:6])) for r in rows]  # type: ignore[misc]


def first_live_bar(sim: LoopbackExchange, venue: Venue, symbol: str) -> tuple[int, str]:
    """(open ms, open price) of the recording's first 1m bar of ``symbol``, read from its recorded or
    synthesized kline frames."""
    topic = f"{symbol.lower()}@kline_1m" if venue in (SPOT, USDM) else f"kline.1.{symbol}"
    item = next(i for i in sim.timelines[venue].items if i.topic == topic)
    msg = json.loads(item.raw)
    k = msg["data"]["k"] if venue in (SPOT, USDM) else msg["data"][0]
    return (int(k["t"]), k["o"]) if venue in (SPOT, USDM) else (int(k["start"]), k["open"])


async def rest_1m(http: aiohttp.ClientSession, sim: LoopbackExchange, venue: Venue, symbol: str, **q: Any) -> list[Bar]:
    """1m bars from the sim's REST klines, oldest first, in either venue's format."""
    base = sim.urls[venue].rest_url
    params = {"symbol": symbol, **{k: str(v) for k, v in q.items()}}
    if venue is LINEAR:
        params.update(category="linear", interval="1")
        async with http.get(f"{base}/v5/market/kline", params=params) as r:
            rows = (await r.json())["result"]["list"][::-1]
    else:
        params["interval"] = "1m"
        async with http.get(f"{base}{'/api/v3' if venue is SPOT else '/fapi/v1'}/klines", params=params) as r:
            rows = await r.json()
    return [(int(r[0]), *(float(x) for x in r[1:6])) for r in rows]  # type: ignore[misc]


async def until(cond: Callable[[], Awaitable[bool]], what: str, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def assert_contiguous(bars: list[Bar]) -> None:
    opens = [b[0] for b in bars]
    steps = {b - a for a, b in itertools.pairwise(opens)}
    assert steps == {MINUTE}, f"steps between open times: {sorted(steps)}"


def assert_history_is_the_csv(hist: list[Bar], venue: Venue, symbol: str, first_open: int, first_px: str) -> None:
    """The history ends where the session begins, at its price; its returns and volumes are the CSV's."""
    src = csv_bars(venue, symbol)[-len(hist) :]
    assert hist[-1][0] + MINUTE == first_open  # the last bar closes where the first live bar opens
    assert hist[-1][4] == pytest.approx(float(first_px), rel=1e-14, abs=0)  # the junction price
    factor = hist[-1][4] / src[-1][4]
    for (_, o, h, lo, c, v), (_, so, sh, slo, sc, sv) in zip(hist, src, strict=True):
        assert v == sv  # volumes unchanged
        for x, sx in ((o, so), (h, sh), (lo, slo)):  # the bar's shape: each price relative to its close
            assert math.log(x / c) == pytest.approx(math.log(sx / sc), abs=1e-12)
        assert c / sc == pytest.approx(factor, rel=1e-13)
    got = np.diff(np.log([b[4] for b in hist]))
    want = np.diff(np.log([b[4] for b in src]))
    assert np.max(np.abs(got - want)) < 1e-12  # close-to-close log returns


async def watch_closed(venue: Venue, sim: LoopbackExchange, symbol: str, out: list[Bar]) -> None:
    """Every closed 1m bar of the live stream, from connecting on."""
    url = sim.urls[venue].ws_url
    if venue is LINEAR:
        async with websockets.connect(url, max_queue=None, close_timeout=1) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": [f"kline.1.{symbol}"]}))
            async for raw in ws:
                for k in json.loads(raw).get("data", []) if "topic" in str(raw) else []:
                    if k["confirm"]:
                        out.append((k["start"], *(float(k[f]) for f in ("open", "high", "low", "close", "volume"))))
    else:
        async with websockets.connect(f"{url}/stream?streams={symbol.lower()}@kline_1m", max_queue=None,
                                      close_timeout=1) as ws:  # fmt: skip
            async for raw in ws:
                k = json.loads(raw)["data"]["k"]
                if k["x"]:
                    out.append((k["t"], *(float(k[f]) for f in "ohlcv")))


@contextlib.asynccontextmanager
async def watching(venue: Venue, sim: LoopbackExchange, symbol: str, out: list[Bar]) -> Any:
    task = asyncio.create_task(watch_closed(venue, sim, symbol, out))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the junction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("venue", "symbol"), MARKETS)
async def test_rest_history_then_the_live_bars_make_one_series_without_gap_or_overlap(
    venue: Venue, symbol: str
) -> None:
    async with LoopbackExchange(RECORDING, speed=10, klines_dir=KLINES) as sim, aiohttp.ClientSession() as http:
        assert sim.splice_klines  # on by default for the embedded demo klines
        first_open, first_px = first_live_bar(sim, venue, symbol)
        closed: list[Bar] = []
        async with watching(venue, sim, symbol, closed):

            async def closed_one() -> bool:
                return bool(closed)

            await until(closed_one, f"a closed live 1m bar of {venue}/{symbol}")
            bars = await rest_1m(http, sim, venue, symbol, limit=1000)
        # Assert: one series; the history part is the CSV's, moved and scaled; the live part is the stream's
        assert_contiguous(bars)
        live = [b for b in bars if b[0] >= first_open]
        hist = [b for b in bars if b[0] < first_open]
        assert live[0][0] == first_open
        assert live[0][1] == float(first_px)  # the junction: the last history close is the first live open
        assert_history_is_the_csv(hist, venue, symbol, first_open, first_px)
        served = {b[0]: b for b in live}
        for bar in closed:  # every closed bar the stream sent is the REST bar of that minute
            assert served[bar[0]] == bar
        assert bars[-1][0] >= closed[-1][0]  # REST answers up to the bar now forming, as the venue does
        # startTime / endTime cut the same series: the last five history bars and what follows them
        key = "startTime" if venue is not LINEAR else "start"
        since = await rest_1m(http, sim, venue, symbol, **{key: first_open - 5 * MINUTE, "limit": 6})
        assert since == bars[len(hist) - 5 : len(hist) + 1]  # the first live bar has closed by now
        before = await rest_1m(http, sim, venue, symbol, limit=3,
                               **{"endTime" if venue is not LINEAR else "end": first_open - 1})  # fmt: skip
        assert before == hist[-3:]


def test_bybit_recorded_kline_frames_sit_on_the_minute_grid_of_the_spliced_history() -> None:
    """The recorded ``kline.1.*`` frames: ``start`` on the minute, ``end`` = start + 59999, the bar a session
    begins with is confirmed once at its close, and the next frame's bar opens where it closed."""
    from bot.sim.replay import load_timelines

    tl = load_timelines(RECORDING)[LINEAR]
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        frames = [json.loads(i.raw) for i in tl.items if i.topic == f"kline.1.{symbol}"]
        bars = [k for f in frames for k in f["data"]]
        assert all(k["start"] % MINUTE == 0 and k["end"] == k["start"] + MINUTE - 1 for k in bars)
        first = bars[0]["start"]
        confirmed = [k["start"] for k in bars if k["confirm"]]
        assert confirmed == [first]  # the 44 s session closes its first minute only
        assert {k["start"] for k in bars} == {first, first + MINUTE}
        assert all(f["ts"] >= f["data"][-1]["start"] for f in frames)


# -- after loop wraps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("venue", "symbol", "speed"), [(SPOT, "BTCUSDT", 60), (USDM, "BTCUSDT", 60), (LINEAR, "BTCUSDT", 20)]
)
async def test_after_loop_wraps_the_history_still_joins_the_live_bars(venue: Venue, symbol: str, speed: float) -> None:
    async with LoopbackExchange(RECORDING, speed=speed, klines_dir=KLINES) as sim, aiohttp.ClientSession() as http:
        first_open, first_px = first_live_bar(sim, venue, symbol)
        shift = build_plan(sim.timelines[venue]).shift_ms
        closed: list[Bar] = []
        async with watching(venue, sim, symbol, closed):
            await sim.wait_cycle(venue, 2, within_s=120)  # two wraps

            async def moved_on() -> bool:  # the live stream has sent a bar of the third pass
                return bool(closed) and closed[-1][0] >= first_open + 2 * shift

            await until(moved_on, f"a closed bar of the third pass of {venue}")
            bars = await rest_1m(http, sim, venue, symbol, limit=1000)
        assert_contiguous(bars)
        if venue is LINEAR:
            # Bybit's wrap moves the clock by one bar: one session since the start, its bars all served
            assert shift == MINUTE
            start = first_open
            assert [b[0] for b in closed] == list(range(closed[0][0], closed[-1][0] + 1, MINUTE))
        else:
            # Binance's wrap jumps the clock by a whole hour or more: the history joins the current pass
            assert shift % 3_600_000 == 0
            start = first_open + 2 * shift
        live = [b for b in bars if b[0] >= start]
        assert_history_is_the_csv([b for b in bars if b[0] < start], venue, symbol, start, first_px)
        assert live[0][1] == float(first_px)  # every pass starts from the recording's first trade
        served = {b[0]: b for b in live}
        for bar in closed:
            if bar[0] >= start:
                assert served[bar[0]] == bar


# -- the bot's own store ----------------------------------------------------------------------------


async def test_the_bots_kline_store_fed_by_a_collector_shows_no_gap() -> None:
    # Arrange: the real collector (REST backfill of 1m/5m/15m, then the 1m streams) and the bot's store
    async with LoopbackExchange(RECORDING, speed=4, klines_dir=KLINES) as sim:
        # Bybit closes its first minute 1 s into the recording: start the bot after that, as `run --sim`
        # does (its models load first). A bar that closes between the collector's REST backfill and its
        # subscription is missed by the collector (on a real venue too), which is not what this tests.
        await sim.wait_position(LINEAR, 0.1, within_s=60)
        resolutions = ["1m", "5m", "15m"]
        settings = BotSettings(venues=sim.venue_overrides(), klines={"resolutions": resolutions, "backfill": 500})
        bus = EventBus()
        store = KlineStore(capacity=1000)
        store.attach(bus)
        Resampler.from_config(settings.klines).attach(bus)
        live: list[KlineClosed] = []
        bus.subscribe(KlineClosed, lambda k: live.append(k) if k.source == "ws" else None)
        collector = Collector(settings, bus, LiveClock())
        task = asyncio.create_task(collector.run())
        markets = [(SPOT, "BTCUSDT"), (USDM, "BTCUSDT"), (USDM, "ETHUSDT"),
                   (LINEAR, "BTCUSDT"), (LINEAR, "ETHUSDT"), (LINEAR, "SOLUSDT")]  # fmt: skip
        # Binance: one live bar before its first wrap (ETH USD-M closes only two minutes in its pass, and the
        # REST backfill's open bar may stand for the first: the bot's clock is not the sim's, so it takes
        # that bar as closed and drops its live close); Bybit: two, across its loop wraps
        wanted = {m: 2 if m[0] is LINEAR else 1 for m in markets}
        try:
            # Act: until every market has its live closed 1m bars
            async def enough() -> bool:
                n = {m: sum(1 for k in live if (k.venue, k.symbol) == m and k.interval_s == 60) for m in markets}
                return all(n[m] >= wanted[m] for m in markets)

            await until(enough, "live 1m bars of every market", within=120)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        wraps = {v: sim.stats[v.value]["loop_wraps"] for v in (SPOT, USDM, LINEAR)}
    # Assert: every 1m ring is one evenly spaced run from the backfill through the live bars
    assert wraps[LINEAR] >= 1
    assert wraps[SPOT] == wraps[USDM] == 0  # a Binance wrap jumps the live stream itself (loop.py)
    for venue, symbol in markets:
        times = store.times(venue, symbol, 60)
        assert len(times) >= 500 + wanted[(venue, symbol)] - 1, (venue, symbol)
        assert set(np.diff(times).tolist()) == {MINUTE}, (venue, symbol)
        newest_live = max(k.open_time_ms for k in live if (k.venue, k.symbol) == (venue, symbol))
        assert times[-1] == newest_live
        for interval_s in (300, 900):
            t = store.times(venue, symbol, interval_s)
            assert len(t) >= 30, (venue, symbol, interval_s)
            assert set(np.diff(t).tolist()) == {interval_s * 1000}, (venue, symbol, interval_s)


# -- the setting ------------------------------------------------------------------------------------


async def test_without_splicing_the_csv_bars_keep_their_own_dates_and_prices(tmp_path: Path) -> None:
    async with LoopbackExchange(RECORDING, speed=1, klines_dir=KLINES, splice_klines=False) as sim, \
            aiohttp.ClientSession() as http:  # fmt: skip
        bars = await rest_1m(http, sim, SPOT, "BTCUSDT", limit=3)
    # BTCUSDT_1m.csv ends: 2023-01-28 18:39:00,22984.83,22986.35,22980.66,22981.83,124.53787
    assert bars[-1] == (1674931140000, 22984.83, 22986.35, 22980.66, 22981.83, 124.53787)
    assert not LoopbackExchange(RECORDING, klines_dir=tmp_path).splice_klines  # other klines: off by default
    assert LoopbackExchange(RECORDING, klines_dir=tmp_path, splice_klines=True).splice_klines
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--no-splice-klines"]).splice_klines is False
    assert p.parse_args([]).splice_klines is None  # the default: on for the demo klines
