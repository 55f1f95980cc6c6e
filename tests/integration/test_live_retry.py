"""LiveExecution (ccxt.pro 4.5.90, ``build_exchange``) against the loopback exchange's new-order faults.

``order_timeout``: the sim places the order and answers late, after the client's 1 s timeout; the order
must be found by its client id, never sent twice, and end as the venue has it. ``order_lost``: the sim
drops the request and answers 503 late; the order must end REJECTED ``unknown_after_timeout`` whether the
client gave up first (1 s timeout) or heard the 503 (5 s timeout). Speed 1, the short recording, Binance
spot, one sim per fault spec for the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.config import LiveConfig
from bot.events import Event, Side, Venue
from bot.execution.live import LiveExecution
from bot.execution.venues import build_exchange
from bot.orders import Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, TimeInForce
from bot.sim import LoopbackExchange

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

KEY, SECRET = "KEY", "SECRET"
SPOT = Venue.BINANCE_SPOT
_ids = itertools.count(1)


async def _start(data: Path, klines: Path, faults: str) -> LoopbackExchange:
    sim = LoopbackExchange(data, speed=1, klines_dir=klines, api_key=KEY, api_secret=SECRET, faults=faults)
    await sim.start()
    await sim.wait_position(SPOT, 0.05)
    return sim


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim_timeout(sim_recording_short: Path, sim_klines_dir: Path) -> AsyncIterator[LoopbackExchange]:
    sim = await _start(sim_recording_short, sim_klines_dir, "order_timeout=1:3")
    yield sim
    await sim.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim_lost(sim_recording_short: Path, sim_klines_dir: Path) -> AsyncIterator[LoopbackExchange]:
    sim = await _start(sim_recording_short, sim_klines_dir, "order_lost=1:2")
    yield sim
    await sim.stop()


@contextlib.asynccontextmanager
async def running(sim: LoopbackExchange, timeout_s: float = 1.0) -> AsyncIterator[tuple[LiveExecution, list[Event]]]:
    """A prepared LiveExecution on the sim's Binance spot, its ``run()`` as a task; what it publishes."""
    ex = build_exchange(SPOT, KEY, SECRET, LiveConfig(request_timeout_s=timeout_s), root=sim.urls[SPOT].rest_url)
    events: list[Event] = []
    live = LiveExecution({SPOT: ex}, events.append, fill_wait_s=0.5)
    task: asyncio.Task[None] | None = None
    try:
        await live.prepare({SPOT: ["BTCUSDT"]})
        task = asyncio.create_task(live.run())
        yield live, events
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ex.close()


def request(sim: LoopbackExchange, order_type: OrderType, qty: str = "0.01") -> OrderRequest:
    ref = sim.reference_book(SPOT, "BTCUSDT", 1)
    assert ref is not None
    assert ref.bids
    far = Decimal(int(ref.bids[0][0] * 0.9))  # far below the touch: it rests
    return OrderRequest(client_order_id=f"retry-{next(_ids)}-{int(time.time())}", strategy="t", venue=SPOT,
                        symbol="BTCUSDT", side=Side.BUY, qty=Decimal(qty), order_type=order_type,
                        price=far if order_type is OrderType.LIMIT else None, tif=TimeInForce.GTC,
                        reduce_only=False, ts_decision=time.time_ns())  # fmt: skip


def updates(events: list[Event], cid: str) -> list[OrderUpdate]:
    return [e for e in events if isinstance(e, OrderUpdate) and e.client_order_id == cid]


async def until(ok: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def settled(live: LiveExecution, events: list[Event], cid: str, status: OrderStatus) -> None:
    """The request has timed out and been looked up (the stream may have told the order's state before:
    the sim pushes it when it places the order), and the order is in ``status``."""
    await until(lambda: live.stats["uncertain"] >= 1 and live.summary()["queued"] == 0, 8.0)
    await until(lambda: last_status(events, cid) is status, 5.0)
    await asyncio.sleep(0.3)  # anything the lookup set going has landed


def sim_orders(sim: LoopbackExchange, cid: str) -> list[Any]:
    assert sim.account is not None
    return [o for o in sim.account.orders.values() if o.venue is SPOT and o.client_id == cid]


def last_status(events: list[Event], cid: str) -> OrderStatus | None:
    ups = updates(events, cid)
    return ups[-1].status if ups else None


async def test_order_timeout_limit_is_found_and_accepted_once(sim_timeout: LoopbackExchange) -> None:
    fired = sim_timeout.fault_counts[(SPOT, "order_timeout")]
    async with running(sim_timeout) as (live, events):
        req = request(sim_timeout, OrderType.LIMIT)
        live.submit(req)
        await settled(live, events, req.client_order_id, OrderStatus.ACCEPTED)
        await asyncio.sleep(2.0)  # the sim lets go of the held answer: nothing more happens
        ups = updates(events, req.client_order_id)
        assert ups[-1].status is OrderStatus.ACCEPTED
        assert ups[-1].venue_order_id
        assert live.stats["uncertain"] == 1
        assert live.stats["orders_sent"] == 1
        assert len(sim_orders(sim_timeout, req.client_order_id)) == 1  # never sent twice
        assert sim_timeout.fault_counts[(SPOT, "order_timeout")] == fired + 1
        assert live.open_orders() == [ups[-1]]


async def test_order_timeout_market_is_found_and_filled_once(sim_timeout: LoopbackExchange) -> None:
    async with running(sim_timeout) as (live, events):
        req = request(sim_timeout, OrderType.MARKET)
        live.submit(req)
        await settled(live, events, req.client_order_id, OrderStatus.FILLED)
        ups = updates(events, req.client_order_id)
        fills = [e for e in events if isinstance(e, Fill) and e.client_order_id == req.client_order_id]
        assert sum(f.qty for f in fills) == Decimal("0.01") == ups[-1].filled_qty
        assert len({f.trade_id for f in fills}) == len(fills)
        assert events.index(fills[-1]) < events.index(ups[-1])  # the fill before the state that counts it
        assert live.stats["uncertain"] == 1
        orders = sim_orders(sim_timeout, req.client_order_id)
        assert len(orders) == 1
        assert orders[0].status is OrderStatus.FILLED


@pytest.mark.parametrize("timeout_s", [1.0, 5.0], ids=["client_gives_up", "client_hears_503"])
async def test_order_lost_is_rejected_unknown(sim_lost: LoopbackExchange, timeout_s: float) -> None:
    fired = sim_lost.fault_counts[(SPOT, "order_lost")]
    async with running(sim_lost, timeout_s) as (live, events):
        req = request(sim_lost, OrderType.LIMIT)
        live.submit(req)
        await settled(live, events, req.client_order_id, OrderStatus.REJECTED)
        ups = updates(events, req.client_order_id)
        assert [u.status for u in ups] == [OrderStatus.NEW, OrderStatus.REJECTED]
        assert ups[-1].reason == "unknown_after_timeout"
        assert live.stats["uncertain"] == 1
        assert sim_orders(sim_lost, req.client_order_id) == []
        assert sim_lost.fault_counts[(SPOT, "order_lost")] == fired + 1
