"""ccxt.pro holds ``watch_order_book`` on all four markets of the loopback exchange across its loop.

One sim (the 20 s short recording at ``SPEED``), four ccxt.pro instances (Binance spot, Binance USD-M,
Bybit spot, Bybit linear; BTCUSDT each), held from the first pass of the recording until every venue has
wrapped twice, with ccxt's keep-alive at ``KEEPALIVE_MS`` (Binance: websocket ping frames; Bybit:
``{"op":"ping"}``) and the sim's own Binance server pings shortened to ``SERVER_PING_S``.

Exact book comparison, no race: the sim's truth is tapped synchronously after every replayed book item of
the symbol (``VenueRunner.on_item``), keyed by the update id the client will see for that state (Binance:
the diff's ``u``, which ccxt keeps as the book's nonce; Bybit: the ``u`` of the derived ``orderbook.50``
stream, ``DepthView.u``, which ccxt does not keep, so the test notes the ``u`` of every orderbook message
ccxt has handled). After every ccxt update the test reads ccxt's book and its id in one synchronous step
and compares the top levels, prices and sizes as ``Decimal``, with the truth recorded for that id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import ccxt.pro as ccxt_pro
import pytest
from aiohttp import WSMsgType
from ccxt.async_support.base.ws.client import Client

from bot.events import Venue
from bot.sim import LoopbackExchange, SimTimings
from bot.sim.bybit import DepthView
from bot.sim.replay import BINANCE, Item
from tests.integration.conftest import SimFactory
from tests.integration.test_sim_ccxt import closing, point_binance, point_binanceusdm, point_bybit

pytestmark = pytest.mark.integration

SPEED = 5.0  # a ~20 s pass lasts ~4 s
KEEPALIVE_MS = 1000  # ccxt pings every second; it gives up after 2 s without a pong (maxPingPongMisses)
SERVER_PING_S = 1.5  # the sim's Binance pings
WRAPS = 2  # hold until every venue has wrapped this many times
MIN_PINGS = 5
DEADLINE_S = 30.0
SYMBOL = "BTCUSDT"

Levels = list[tuple[Decimal, Decimal]]


@dataclass
class Market:
    venue: Venue
    ex: Any
    symbol: str  # ccxt's
    depth: int  # levels compared
    truth: dict[int, tuple[int, Levels, Levels]] = field(default_factory=dict)  # id -> (cycle, bids, asks)
    last_u: int | None = None  # Bybit: the u of the last orderbook message ccxt handled
    pongs: int = 0  # pong frames / pong messages ccxt received
    updates: int = 0
    compared: Counter[int] = field(default_factory=Counter)  # exact matches per cycle of the truth
    unmatched: int = 0  # ccxt's id is not a state the truth recorded
    mismatches: list[str] = field(default_factory=list)
    wrap_keys: dict[int, int] = field(default_factory=dict)  # cycle -> id of the book state its wrap left
    wrap_compared: set[int] = field(default_factory=set)  # cycles whose wrap state ccxt's book matched
    last_ts: int = 0
    ts_back: list[tuple[int, int]] = field(default_factory=list)
    client: Any = None
    established: Any = None

    @property
    def binance(self) -> bool:
        return self.venue in BINANCE

    def compare(self) -> None:
        """ccxt's book and its id, read in one synchronous step, against the truth at that id."""
        book = self.ex.orderbooks[self.symbol]
        key = book["nonce"] if self.binance else self.last_u
        ts = book["timestamp"]
        if ts is not None:
            if ts < self.last_ts:
                self.ts_back.append((self.last_ts, ts))
            self.last_ts = ts
        if key is None:
            return
        entry = self.truth.get(key)
        if entry is None:
            self.unmatched += 1
            return
        cycle, bids, asks = entry
        # Binance: the top of a deeper book; Bybit: ccxt's whole orderbook.50 book
        n = self.depth if self.binance else len(book["bids"]) + len(book["asks"])
        got = (_decimals(book["bids"][:n]), _decimals(book["asks"][:n]))
        if got == (bids, asks):
            self.compared[cycle] += 1
            if self.wrap_keys.get(cycle) == key:
                self.wrap_compared.add(cycle)
        elif len(self.mismatches) < 3:
            self.mismatches.append(f"id {key} (cycle {cycle}): ccxt {got[0][:3]} {got[1][:3]}, "
                                   f"sim {bids[:3]} {asks[:3]}")


def _decimals(side: list[list[float]]) -> Levels:
    return [(Decimal(repr(level[0])), Decimal(repr(level[1]))) for level in side]


def tap_truth(sim: LoopbackExchange, m: Market) -> None:
    """Record the truth's top levels after every replayed book item of ``SYMBOL``, keyed as ccxt sees it."""
    runner, replay, hub = sim.runners[m.venue], sim.replays[m.venue], sim.hubs[m.venue]
    publish = runner.on_item

    def on_item(item: Item, parsed: Any) -> None:
        publish(item, parsed)  # the fan-out (and Bybit's derived books) first, as the sim does it
        b = item.book
        if b is None or b.symbol != SYMBOL:
            return
        if m.binance:
            bn = replay.bn[SYMBOL]
            book, key = bn.book, bn.u
        else:
            view = hub.views.get((SYMBOL, m.depth))
            if not isinstance(view, DepthView) or not view.ready:
                return  # ccxt has not subscribed yet
            book, key = replay.bb[SYMBOL].book, view.u
        if book is None:
            return
        if runner.pos == runner.total and runner.cycle:  # a wrap diff: the last pass is over, the next not begun
            m.wrap_keys[runner.cycle] = key
        bids, asks = book.top(m.depth)
        m.truth[key] = (
            runner.cycle,
            [(Decimal(p), Decimal(q)) for p, q in bids],
            [(Decimal(p), Decimal(q)) for p, q in asks],
        )

    runner.on_item = on_item


def tap_bybit_messages(m: Market) -> None:
    """Note the ``u`` of every orderbook message ccxt handles, and count the pongs."""
    handle = m.ex.handle_message

    def handle_message(client: Any, message: Any) -> None:
        handle(client, message)
        if not isinstance(message, dict):
            return
        if message.get("op") == "pong" or message.get("ret_msg") == "pong":
            m.pongs += 1
        data = message.get("data")
        book = str(message.get("topic", "")).startswith("orderbook.")
        if book and isinstance(data, dict) and data.get("s") == SYMBOL:
            m.last_u = int(data["u"])

    m.ex.handle_message = handle_message  # read by ccxt when it creates the connection's client


def count_pong_frames(monkeypatch: pytest.MonkeyPatch, markets: list[Market]) -> None:
    """Count the websocket pong frames each Binance connection of ccxt receives."""
    original: Callable[[Any, Any], None] = Client.handle_message

    def handle_message(client: Any, message: Any) -> None:
        if message.type == WSMsgType.PONG:
            for m in markets:
                if m.binance and any(c is client for c in (m.ex.clients or {}).values()):
                    m.pongs += 1
        original(client, message)

    monkeypatch.setattr(Client, "handle_message", handle_message)


async def hold(m: Market, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.wait_for(m.ex.watch_order_book(m.symbol), 5.0)  # a stall fails the test
        m.updates += 1
        m.compare()


async def test_ccxt_pro_holds_four_order_books_across_loops_and_keepalive_pings(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spot, usdm, by_spot, by_linear = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR
    timings = SimTimings(binance_spot_ping_s=SERVER_PING_S, binance_usdm_ping_s=SERVER_PING_S)
    streaming = {"keepAlive": KEEPALIVE_MS}
    t0 = time.monotonic()
    async with make_sim(speed=SPEED, timings=timings) as sim:
        markets = [
            Market(spot, point_binance(ccxt_pro.binance(
                {"options": {"fetchMarkets": {"types": ["spot"]}}, "streaming": streaming}), sim), "BTC/USDT", 20),
            Market(usdm, point_binanceusdm(ccxt_pro.binanceusdm(
                {"options": {"fetchMarkets": {"types": ["linear"]}}, "streaming": streaming}), sim),
                "BTC/USDT:USDT", 20),
            Market(by_spot, point_bybit(ccxt_pro.bybit(
                {"options": {"fetchMarkets": {"types": ["spot"]}}, "streaming": streaming}), sim), "BTC/USDT", 50),
            Market(by_linear, point_bybit(ccxt_pro.bybit(
                {"options": {"fetchMarkets": {"types": ["linear"]}}, "streaming": streaming}), sim),
                "BTC/USDT:USDT", 50),
        ]  # fmt: skip
        for m in markets:
            tap_truth(sim, m)
            if not m.binance:
                tap_bybit_messages(m)
        count_pong_frames(monkeypatch, markets)
        stop = asyncio.Event()
        async with closing(markets[0].ex), closing(markets[1].ex), closing(markets[2].ex), closing(markets[3].ex):
            await asyncio.gather(*(m.ex.load_markets() for m in markets))
            await asyncio.gather(*(m.ex.watch_order_book(m.symbol) for m in markets))
            start_cycles = {m.venue: sim.position(m.venue)[0] for m in markets}
            for m in markets:
                assert len(m.ex.clients) == 1, m.venue
                m.client = next(iter(m.ex.clients.values()))
                m.established = m.client.connectionEstablished
            holders = [asyncio.create_task(hold(m, stop)) for m in markets]
            try:
                while not all(
                    sim.position(m.venue)[0] >= WRAPS and m.compared[WRAPS] >= 3
                    and min(sim.stats[m.venue.value].get("client_pings", 0), m.pongs) >= MIN_PINGS
                    for m in markets
                ):  # fmt: skip
                    for m in markets:  # fail at the first divergence, with the books
                        assert m.mismatches == [], (m.venue.value, m.mismatches)
                    done = [h for h in holders if h.done()]
                    if done:
                        done[0].result()  # a holder failed: its error
                    assert time.monotonic() - t0 < DEADLINE_S, {m.venue.value: sim.position(m.venue) for m in markets}
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                for h in holders:
                    h.cancel()
                await asyncio.gather(*holders, return_exceptions=True)
            clients = {m.venue: (list(m.ex.clients.values()), m.client.error, m.client.lastPong) for m in markets}
            now_ms = markets[0].ex.milliseconds()
            stats = sim.stats
            cycles = {m.venue: sim.position(m.venue)[0] for m in markets}
    wall = time.monotonic() - t0
    print(f"held {wall:.1f} s:", {
        m.venue.value: {"cycles": cycles[m.venue], "updates": m.updates, "compared": dict(m.compared),
                        "unmatched": m.unmatched, "wraps_compared": sorted(m.wrap_compared),
                        "client_pings": stats[m.venue.value].get("client_pings"),
                        "pongs": m.pongs, "server_pings": stats[m.venue.value].get("pings_sent"),
                        "server_pongs": stats[m.venue.value].get("pongs_received")}
        for m in markets
    })  # fmt: skip

    for m in markets:
        v, st = m.venue.value, stats[m.venue.value]
        # the loop was crossed while held: subscribed in the first pass, every venue wrapped twice since
        assert start_cycles[m.venue] == 0, v
        assert cycles[m.venue] >= WRAPS, v
        assert st["loop_wraps"] >= WRAPS, v
        # exact comparisons in the first pass, after the first wrap and after the second; none differed
        assert m.mismatches == [], v
        assert all(m.compared[c] >= 3 for c in range(WRAPS + 1)), (v, m.compared)
        assert m.unmatched <= 2, (v, m.unmatched, m.updates)
        # among them the very state each wrap left (the recording's start book, numbered on)
        assert m.wrap_compared >= set(range(1, WRAPS + 1)), (v, m.wrap_compared, m.wrap_keys)
        assert m.ts_back == [], (v, m.ts_back[:3])  # the venue clock as ccxt sees it never goes back
        # keep-alive: every ccxt ping answered, on one connection that never dropped or reconnected
        assert st["client_pings"] >= MIN_PINGS, v
        # +-1: a ping still in flight at the stop is counted on one side only (the websocket layer answers a
        # Binance ping frame before the sim's read loop counts it; a loaded CI machine saw pongs 8, pings 7)
        assert abs(m.pongs - st["client_pings"]) <= 1, (v, st["client_pings"], m.pongs)
        got_clients, error, last_pong = clients[m.venue]
        assert got_clients == [m.client], v
        assert m.client.connectionEstablished == m.established, v
        assert error is None, (v, error)
        assert now_ms - last_pong < 2 * KEEPALIVE_MS, v
        assert (st["connections"], st["open_connections"]) == (1, 1), v
        for bad in ("slow_client_disconnects", "rate_limit_disconnects", "pong_timeouts", "handler_errors"):
            assert st.get(bad, 0) == 0, (v, bad)
        if m.binance:  # and the sim's own pings, answered by ccxt
            assert st["pings_sent"] >= 4, v
            assert st["pings_sent"] - 1 <= st["pongs_received"] <= st["pings_sent"], v
    assert wall < 30.0
