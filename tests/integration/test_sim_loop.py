"""The loopback exchange runs clean: seamless loop, keep-alive with real clients, handler errors answered.

Recordings are the real shared data (``conftest.py``; skipped without it). The loop tests play
``sim_recording_short`` (the first 20 s of every venue) at a high speed so that several wraps fit in a
few seconds; the collector tests use the bot's real ``Collector`` as ``test_collectors.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ccxt.pro as ccxt_pro
import pytest
import structlog
import websockets

import bot.sim.binance
import bot.sim.bybit
from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings
from bot.events import BookState, Venue
from bot.feed import Collector
from bot.sim import LoopbackExchange, SimTimings
from bot.sim.loop import book_diff
from bot.sim.replay import VenueReplay
from bot.sim.rest import BybitRest
from bot.sim.truth import SimBook
from tests.integration.conftest import SimFactory
from tests.integration.test_collectors import ALL, Run, books_match_truth, until

pytestmark = pytest.mark.integration

SPOT, USDM, BY_SPOT, BY_LINEAR = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR
SPEED = 10.0  # the 20 s recording: one pass every ~2 s


@contextlib.asynccontextmanager
async def collector_on(sim: LoopbackExchange) -> AsyncIterator[Run]:
    settings = BotSettings(
        venues=sim.venue_overrides(),
        reconnect={"initial_s": 0.05, "max_s": 0.5, "watchdog_s": 30.0},
        book={"resync_backoff_initial_s": 0.05, "resync_backoff_max_s": 0.5, "stale_after_s": 30.0},
        klines={"resolutions": ["1m"], "backfill": 0},
    )
    collector = Collector(settings, EventBus(), LiveClock())
    task = asyncio.create_task(collector.run())
    try:
        yield Run(sim, collector, [])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- (b) the seamless loop -------------------------------------------------------------------------


async def test_across_two_wraps_the_collector_books_stay_live_with_no_gap_resync_or_reconnect(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=SPEED, loop=True) as sim, collector_on(sim) as run:
        await books_match_truth(run)  # synced in the first pass
        cycles0 = {v: sim.position(v)[0] for v in ALL}
        assert all(c == 0 for c in cycles0.values()), cycles0
        for venue in ALL:
            await sim.wait_cycle(venue, 2, within_s=30)
        compared = await books_match_truth(run)  # after two wraps: still equal to the truth

        assert len(compared) == 8
        for (venue, symbol), u in compared.items():
            assert run.adapter(venue).states[symbol] is BookState.LIVE
            first_pass_max = max(i.book.last if venue in (SPOT, USDM) else i.book.u  # type: ignore[union-attr]
                                 for i in sim.timelines[venue].items if i.book is not None and i.book.symbol == symbol)
            assert u > first_pass_max, (venue, symbol)  # ids went on counting past the recording's
        for venue in ALL:
            assert run.total(venue, "gaps") == 0, venue
            assert run.total(venue, "resyncs") == 0, venue
            assert run.adapter(venue).stats.malformed == 0, venue
            st = sim.stats[venue.value]
            assert st["loop_wraps"] >= 2, st
            assert st.get("loop_restarts", 0) == 0
            assert st.get("handler_errors", 0) == 0
        s = run.collector.stats
        assert (s.reconnects, s.watchdog_trips, s.snapshot_failures, s.malformed_frames) == (0, 0, 0, 0)
        assert s.snapshots_applied == 2  # one per Binance book, in the first pass, never again
        assert all(c["connected"] and c["reconnects"] == 0 for c in run.collector.status()["connections"])


async def test_after_a_wrap_ids_and_times_continue_and_rest_depth_chains_with_the_stream(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=SPEED, loop=True) as sim, aiohttp.ClientSession() as http:
        base = sim.urls[USDM].ws_url
        streams = "btcusdt@depth@0ms/btcusdt@trade/btcusdt@kline_1m"
        depth: list[tuple[int, int, int, int]] = []  # (U, u, pu, E)
        trades: list[tuple[int, int]] = []  # (t, T)
        klines: list[tuple[int, int]] = []  # (E, k.t)
        async with websockets.connect(f"{base}/stream?streams={streams}", max_queue=None, max_size=None) as ws:
            while sim.position(USDM)[0] < 2:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                d = msg["data"]
                if d["e"] == "depthUpdate":
                    depth.append((d["U"], d["u"], d["pu"], d["E"]))
                elif d["e"] == "trade":
                    trades.append((d["t"], d["T"]))
                elif d["e"] == "kline":
                    klines.append((d["E"], d["k"]["t"]))
            # the stream position now is a later pass: a REST snapshot must bridge into the live stream
            async with http.get(f"{sim.urls[USDM].rest_url}/fapi/v1/depth", params={"symbol": "BTCUSDT"}) as r:
                snap = await r.json()
            nxt = json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]
            while nxt["e"] != "depthUpdate" or nxt["u"] <= snap["lastUpdateId"]:  # skip what was queued before
                nxt = json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]
        # USD-M chain: every diff's pu is the previous diff's u, through both wraps
        assert all(b[2] == a[1] for a, b in itertools_pairs(depth)), "a break in the pu chain"
        assert all(b[3] >= a[3] for a, b in itertools_pairs(depth)), "event time went back"
        assert sim.stats["binance_usdm"]["loop_wraps"] >= 2
        assert all(b[0] > a[0] and b[1] >= a[1] for a, b in itertools_pairs(trades)), "trade ids or times went back"
        assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in itertools_pairs(klines))
        assert all(t % 60_000 == 0 for _, t in klines)  # candles stay on the minute grid
        assert snap["lastUpdateId"] > depth[-1][1]  # a later pass's position, not the recording's
        assert nxt["pu"] == snap["lastUpdateId"]  # the first diff after it continues the snapshot


async def test_bybit_books_and_trades_continue_across_wraps_with_one_snapshot_and_contiguous_u(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=SPEED, loop=True) as sim:
        got: dict[str, list[dict[str, Any]]] = {"orderbook.200.BTCUSDT": [], "orderbook.50.BTCUSDT": []}
        trades: dict[str, list[tuple[int, int]]] = {"BTCUSDT": [], "ETHUSDT": []}  # spot: (numeric id, T)
        async with (
            websockets.connect(sim.urls[BY_LINEAR].ws_url, max_queue=None, max_size=None) as lin,
            websockets.connect(sim.urls[BY_SPOT].ws_url, max_queue=None, max_size=None) as spot,
        ):
            await lin.send(json.dumps({"op": "subscribe", "args": list(got)}))
            await spot.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"]}))

            async def read_spot() -> None:
                async for text in spot:
                    m = json.loads(text)
                    if str(m.get("topic", "")).startswith("publicTrade."):
                        for t in m["data"]:
                            trades[t["s"]].append((int(t["i"]), t["T"]))

            reader = asyncio.create_task(read_spot())
            while min(sim.position(BY_LINEAR)[0], sim.position(BY_SPOT)[0]) < 2:
                m = json.loads(await asyncio.wait_for(lin.recv(), 5))
                if m.get("topic") in got:
                    got[m["topic"]].append(m)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for topic, msgs in got.items():
            assert [m["type"] for m in msgs].count("snapshot") == 1, topic  # the subscription's only
            us = [m["data"]["u"] for m in msgs]
            assert all(b == a + 1 for a, b in itertools_pairs(us)), topic  # no gap through two wraps
            assert all(b["ts"] >= a["ts"] for a, b in itertools_pairs(msgs)), topic
        seqs = [m["data"]["seq"] for m in got["orderbook.200.BTCUSDT"]]
        assert all(b > a for a, b in itertools_pairs(seqs))
        for symbol, ts in trades.items():
            assert len(ts) >= 4, symbol
            assert all(b[0] > a[0] and b[1] >= a[1] for a, b in itertools_pairs(ts)), symbol
        assert sim.stats["bybit_linear"]["loop_wraps"] >= 2
        assert sim.stats["bybit_spot"]["loop_wraps"] >= 2


def itertools_pairs(xs: list[Any]) -> list[tuple[Any, Any]]:
    return list(itertools.pairwise(xs))


def test_the_wrap_diff_turns_the_last_book_into_the_start_book_without_crossing_it() -> None:
    # Arrange: the market ended lower than it started: the start's best bid (101) is above the last ask (100.5)
    last = SimBook.from_levels([("100.0", "1"), ("99.0", "2")], [("100.5", "3"), ("102.0", "4")])
    start_bids, start_asks = [("101.0", "5"), ("99.0", "2")], [("102.0", "6"), ("103.0", "7")]
    # Act
    (rm_b, rm_a), (set_b, set_a) = book_diff(last, start_bids, start_asks, "0")
    # Assert: first every level the start lacks goes, then the start's levels that differ are set
    assert (rm_b, rm_a) == ([("100.0", "0")], [("100.5", "0")])
    assert (set_b, set_a) == ([("101.0", "5")], [("102.0", "6"), ("103.0", "7")])
    last.apply(rm_b, rm_a)
    last.apply(set_b, set_a)
    assert last.top() == (start_bids, start_asks)
    assert last.healed == 0  # no intermediate book was crossed
    one_message = SimBook.from_levels([("100.0", "1"), ("99.0", "2")], [("100.5", "3"), ("102.0", "4")])
    one_message.apply(rm_b + set_b, rm_a + set_a)  # the same levels in one message would heal 100.5 away first
    assert one_message.healed == 1


# -- (c) the restart fault -------------------------------------------------------------------------


async def test_the_restart_fault_makes_the_collector_reconnect_resync_and_end_equal_to_the_truth(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=SPEED, loop=True, faults="restart=1") as sim, collector_on(sim) as run:
        await books_match_truth(run)
        for venue in ALL:
            await sim.wait_cycle(venue, 1, within_s=30)
        await until(lambda: run.collector.stats.reconnects >= 4, "every connection reconnected after the restart")
        await books_match_truth(run, within_s=20)
        for venue in ALL:
            assert sim.stats[venue.value]["loop_restarts"] >= 1
            assert sim.stats[venue.value]["loop_wraps"] == 0
        assert run.collector.stats.snapshots_applied > 2  # Binance books synced again from REST


# -- (a) keep-alive: pings answered by real clients ----------------------------------------------------

FAST_PINGS = SimTimings(
    binance_spot_ping_s=0.3, binance_spot_pong_timeout_s=1.0, binance_usdm_ping_s=0.3, binance_usdm_pong_timeout_s=1.0
)


async def test_websockets_clients_answer_several_pings_and_stay_connected_on_spot_and_usdm(
    make_sim: SimFactory,
) -> None:
    async with make_sim(speed=SPEED, loop=True, timings=FAST_PINGS) as sim:
        urls = {v: f"{sim.urls[v].ws_url}/ws/btcusdt@trade" for v in (SPOT, USDM)}
        async with (
            websockets.connect(urls[SPOT], max_queue=None) as a,
            websockets.connect(urls[USDM], max_queue=None) as b,
        ):
            await until(lambda: all(sim.stats[v.value].get("pongs_received", 0) >= 5 for v in (SPOT, USDM)),
                        "five pongs on each market", within_s=10)  # fmt: skip
            for ws in (a, b):
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["e"] == "trade"
        for v in (SPOT, USDM):
            st = sim.stats[v.value]
            assert st["connections"] == 1, st
            assert st.get("pong_timeouts", 0) == st.get("handler_errors", 0) == 0, st
            assert st["pings_sent"] >= 5


async def test_ccxt_pro_answers_several_pings_and_keeps_one_connection_on_spot_and_usdm(make_sim: SimFactory) -> None:
    async with make_sim(speed=SPEED, loop=True, timings=FAST_PINGS) as sim:
        spot = ccxt_pro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
        spot.urls["api"]["public"] = f"{sim.urls[SPOT].rest_url}/api/v3"
        spot.urls["api"]["ws"]["spot"] = f"{sim.urls[SPOT].ws_url}/ws"
        usdm = ccxt_pro.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}}})
        for key, version in (("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3")):
            usdm.urls["api"][key] = f"{sim.urls[USDM].rest_url}/fapi/{version}"
        for key in ("future", "linear"):
            usdm.urls["api"]["ws"][key] = f"{sim.urls[USDM].ws_url}/ws"
        try:
            updates = {SPOT: 0, USDM: 0}

            async def watch(ex: Any, symbol: str, venue: Venue) -> None:
                while True:
                    await ex.watch_trades(symbol)
                    updates[venue] += 1

            tasks = [asyncio.create_task(watch(spot, "BTC/USDT", SPOT)),
                     asyncio.create_task(watch(usdm, "BTC/USDT:USDT", USDM))]  # fmt: skip
            try:
                await until(lambda: all(sim.stats[v.value].get("pongs_received", 0) >= 5 for v in (SPOT, USDM)),
                            "five pongs from ccxt.pro on each market", within_s=20)  # fmt: skip
                seen = dict(updates)
                await until(lambda: all(updates[v] > seen[v] for v in (SPOT, USDM)), "trades still arriving")
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await spot.close()
            await usdm.close()
        for v in (SPOT, USDM):
            st = sim.stats[v.value]
            assert st["connections"] == 1, st  # never reconnected
            assert st.get("pong_timeouts", 0) == st.get("handler_errors", 0) == 0, st


# -- (d) handler errors are counted and answered, never a traceback -------------------------------------


def _boom(*_: Any, **__: Any) -> Any:
    raise KeyError("injected")


async def test_injected_handler_errors_are_counted_answered_in_the_venue_shape_and_logged_once_without_traceback(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange: every Binance method frame, Bybit op, Binance REST depth and Bybit instruments list fails
    monkeypatch.setattr(bot.sim.binance, "_binance_method", _boom)
    monkeypatch.setattr(bot.sim.bybit, "_bybit_op", _boom)
    monkeypatch.setattr(VenueReplay, "binance_depth", _boom)
    monkeypatch.setattr(BybitRest, "_instrument_list", _boom)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        async with make_sim(speed=SPEED, loop=False) as sim, aiohttp.ClientSession() as http:
            # Act
            async with websockets.connect(f"{sim.urls[SPOT].ws_url}/ws", max_queue=None) as ws:
                for rid in (7, 8):
                    await asyncio.sleep(0.25)  # under the 5 frames/s limit
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": rid}))
                    bn_answers = [json.loads(await asyncio.wait_for(ws.recv(), 5))]
                    assert bn_answers == [{"error": {"code": -1000, "msg": "An unknown error occurred while "
                                                                         "processing the request."}, "id": rid}]
                await ws.ping()  # the connection is still served
            async with websockets.connect(sim.urls[BY_LINEAR].ws_url, max_queue=None) as ws:
                await ws.send(json.dumps({"op": "subscribe", "req_id": "r1", "args": ["orderbook.50.BTCUSDT"]}))
                by_answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            async with http.get(f"{sim.urls[SPOT].rest_url}/api/v3/depth", params={"symbol": "BTCUSDT"}) as r:
                bn_rest = (r.status, await r.json())
            async with http.get(f"{sim.urls[BY_LINEAR].rest_url}/v5/market/instruments-info",
                                params={"category": "linear"}) as r:  # fmt: skip
                by_rest = (r.status, await r.json())
            stats = sim.stats
    # Assert: the venues' own error shapes
    assert by_answer["success"] is False
    assert (by_answer["ret_msg"], by_answer["req_id"], by_answer["op"]) == ("error:internal error", "r1", "subscribe")
    assert bn_rest == (500, {"code": -1000, "msg": "An unknown error occurred while processing the request."})
    assert by_rest[0] == 200
    assert (by_rest[1]["retCode"], by_rest[1]["retMsg"]) == (10016, "Internal server error.")
    # counted per venue and place
    assert stats["binance_spot"]["handler_errors"] == 3  # two method frames, one REST depth
    assert stats["binance_spot"]["handler_errors_ws_method"] == 2
    assert stats["binance_spot"]["handler_errors_rest"] == 1
    assert stats["bybit_linear"]["handler_errors"] == 2
    assert stats["bybit_linear"]["connections"] == 1  # no reconnect: the socket stayed open
    # one warning per (venue, place, error type), with the error but no traceback
    warned = [e for e in logs if e["event"] == "sim_handler_error"]
    assert sorted((e["venue"], e["where"]) for e in warned) == [
        ("binance_spot", "rest"), ("binance_spot", "ws_method"), ("bybit_linear", "rest"), ("bybit_linear", "ws_op")
    ]  # fmt: skip
    assert all(e["log_level"] == "warning" and e["error"] == "KeyError: 'injected'" for e in warned)
    assert not any("exc_info" in e or "exception" in e for e in warned)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_a_fanout_error_is_counted_and_the_replay_goes_on(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = bot.sim.binance._publish_binance

    def flaky(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("injected")
        real(*args)

    monkeypatch.setattr(bot.sim.binance, "_publish_binance", flaky)
    async with make_sim(speed=SPEED, loop=False) as sim:
        async with websockets.connect(f"{sim.urls[SPOT].ws_url}/ws/btcusdt@trade", max_queue=None) as ws:
            got = [json.loads(await asyncio.wait_for(ws.recv(), 5))["t"] for _ in range(5)]
        assert sim.stats["binance_spot"]["handler_errors_publish"] == 1
        assert got == sorted(got)
        await sim.wait_position(SPOT, 0.5)  # the replay did not die
