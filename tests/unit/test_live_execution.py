"""LiveExecution against a hand-written fake ccxt exchange: no network, no real sleeps."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt
import msgspec
import pytest

from bot.events import Event, Side, Venue
from bot.execution.live import LiveExecution, TokenBucket
from bot.orders import Fill, Liquidity, OrderRequest, OrderStatus, OrderType, OrderUpdate, TimeInForce

pytestmark = pytest.mark.unit
SPOT = Venue.BINANCE_SPOT


class FakeExchange:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.fail_next_create: Exception | None = None
        self.store_before_fail = True
        self.answer: dict[str, Any] = {"status": "open", "filled": 0}
        self.trades: list[dict[str, Any]] = []

    async def create_order(
        self, symbol: str, type_: str, side: str, amount: float, price: Any, params: dict[str, Any]
    ) -> dict[str, Any]:
        cid = params["clientOrderId"]
        self.created.append(cid)
        vo = {"id": f"v{len(self.created)}", "clientOrderId": cid, **self.answer}
        if self.fail_next_create is not None:
            e, self.fail_next_create = self.fail_next_create, None
            if self.store_before_fail:
                self.orders[cid] = vo
            raise e
        self.orders[cid] = vo
        return vo

    async def fetch_order(self, oid: Any, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        cid = params["clientOrderId"]
        if cid not in self.orders:
            raise ccxt.OrderNotFound("no such order")
        return self.orders[cid]

    async def fetch_my_trades(self, symbol: str, since: int | None = None, limit: int | None = None,
                              params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.trades

    async def fetch_open_orders(self, symbol: str) -> list[dict[str, Any]]:
        return [vo for vo in self.orders.values() if vo["status"] == "open"]

    async def cancel_order(self, oid: Any, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        cid = params.get("clientOrderId") or next(c for c, vo in self.orders.items() if vo["id"] == oid)
        vo = self.orders[cid]
        vo["status"] = "canceled"
        return vo


def request(cid: str = "b000000001") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        strategy="s",
        venue=Venue.BINANCE_SPOT,
        symbol="BTC/USDT",
        side=Side.BUY,
        qty=Decimal("0.01"),
        order_type=OrderType.LIMIT,
        price=Decimal(60000),
        tif=TimeInForce.GTC,
        reduce_only=False,
        ts_decision=1,
    )


def make() -> tuple[LiveExecution, FakeExchange, list[OrderUpdate]]:
    ex = FakeExchange()
    events: list[Event] = []
    live = LiveExecution({SPOT: ex}, events.append, max_orders_per_s=1000, clock_ns=lambda: 5, fill_wait_s=0.01)
    return live, ex, events  # type: ignore[return-value]


def trade(tid: str, qty: str, order: str = "v1") -> dict[str, Any]:
    return {"id": tid, "order": order, "symbol": "BTC/USDT", "amount": qty, "price": 60000, "timestamp": 7,
            "fee": {"cost": 0.06, "currency": "USDT"}, "takerOrMaker": "maker"}  # fmt: skip


async def test_submit_publishes_new_at_once_then_accepted_partial_filled() -> None:
    live, _ex, ev = make()
    live.submit(request())
    assert [e.status for e in ev] == [OrderStatus.NEW]
    await live.run_once()
    assert ev[-1].status is OrderStatus.ACCEPTED
    assert ev[-1].venue_order_id == "v1"
    live.apply_venue_trade(SPOT, trade("t1", "0.004"))
    live.apply_venue_order("b000000001", {"id": "v1", "status": "open", "filled": 0.004})
    assert ev[-1].status is OrderStatus.PARTIALLY_FILLED
    assert ev[-1].filled_qty == Decimal("0.004")
    live.apply_venue_trade(SPOT, trade("t2", "0.006"))
    live.apply_venue_order("b000000001", {"id": "v1", "status": "closed", "filled": 0.01, "average": 60000})
    assert ev[-1].status is OrderStatus.FILLED
    assert live.open_orders() == []
    live.apply_venue_order("b000000001", {"id": "v1", "status": "canceled", "filled": 0.01})
    assert ev[-1].status is OrderStatus.FILLED  # a closed order never moves again


async def test_an_order_reported_filled_before_its_trades_waits_for_them() -> None:
    # Arrange: the order stream says closed before the trade stream has delivered the fill
    live, _ex, ev = make()
    live.submit(request())
    await live.run_once()
    # Act
    live.apply_venue_order("b000000001", {"id": "v1", "status": "closed", "filled": 0.01, "average": 60000})
    held = ev[-1]
    live.apply_venue_trade(SPOT, trade("t1", "0.01"))
    # Assert: held open without fills, then the Fill, then FILLED
    assert held.status is OrderStatus.ACCEPTED
    assert held.filled_qty == 0
    assert isinstance(ev[-2], Fill)
    assert ev[-1].status is OrderStatus.FILLED
    assert ev[-1].filled_qty == Decimal("0.01")


async def test_a_trade_seen_before_its_order_id_is_applied_once_the_id_is_known() -> None:
    live, ex, ev = make()
    live.submit(request())
    live.apply_venue_trade(SPOT, trade("t1", "0.01"))  # a market order's fill, ahead of the REST answer
    assert not any(isinstance(e, Fill) for e in ev)
    ex.answer = {"status": "closed", "filled": 0.01}
    await live.run_once()
    assert [e.trade_id for e in ev if isinstance(e, Fill)] == ["t1"]
    assert ev[-1].status is OrderStatus.FILLED


async def test_a_closed_order_whose_trades_never_stream_gets_them_by_rest() -> None:
    live, ex, ev = make()
    ex.answer = {"status": "closed", "filled": 0.01}
    ex.trades = [trade("t1", "0.01")]
    live.submit(request())
    await live.run_once()
    await asyncio.sleep(0.05)  # fill_wait_s
    assert [e.trade_id for e in ev if isinstance(e, Fill)] == ["t1"]
    assert ev[-1].status is OrderStatus.FILLED


async def test_timeout_is_resolved_by_client_id_never_sent_twice() -> None:
    live, ex, ev = make()
    ex.fail_next_create = ccxt.RequestTimeout("timed out")
    live.submit(request())
    await live.run_once()
    assert ex.created == ["b000000001"]
    assert ev[-1].status is OrderStatus.ACCEPTED


async def test_timeout_of_an_order_the_venue_never_got_is_rejected_not_resent() -> None:
    live, ex, ev = make()
    ex.fail_next_create, ex.store_before_fail = ccxt.RequestTimeout("timed out"), False
    live.submit(request())
    await live.run_once()
    assert ex.created == ["b000000001"]
    assert ev[-1].status is OrderStatus.REJECTED
    assert ev[-1].reason == "unknown_after_timeout"


async def test_a_cancel_is_confirmed_by_the_venue() -> None:
    live, _ex, ev = make()
    live.submit(request())
    await live.run_once()
    live.cancel("b000000001", 2)
    await live.run_once()
    assert ev[-1].status is OrderStatus.CANCELLED
    assert live.open_orders() == []


async def test_a_resync_leaves_an_order_in_flight_alone_and_resends_unconfirmed_cancels() -> None:
    # Arrange: one order queued (not answered yet), one resting whose cancel was lost
    live, ex, ev = make()
    live.submit(request("b000000001"))
    await live.run_once()
    live.cancel("b000000001", 2)
    live._queues[SPOT].get_nowait()  # the cancel request is lost
    live.submit(request("b000000002"))
    # Act
    await live.resync(SPOT)
    # Assert: the queued order is not judged unknown; the lost cancel goes out again
    assert {e.client_order_id: e.status for e in ev if isinstance(e, OrderUpdate)}["b000000002"] is OrderStatus.NEW
    await live.run_once()  # the order
    await live.run_once()  # the cancel, re-sent
    assert ex.orders["b000000001"]["status"] == "canceled"
    assert live.stats["cancels_resent"] == 1


async def test_spot_orders_never_carry_reduce_only() -> None:
    live, ex, _ev = make()
    seen: list[dict[str, Any]] = []
    create = ex.create_order

    async def spy(*a: Any) -> dict[str, Any]:
        seen.append(a[-1])
        return await create(*a)

    ex.create_order = spy  # type: ignore[method-assign]
    live.submit(msgspec.structs.replace(request(), reduce_only=True))
    await live.run_once()
    assert "reduceOnly" not in seen[0]


async def test_a_system_error_is_looked_up_not_rejected() -> None:
    live, ex, ev = make()
    ex.fail_next_create = ccxt.ExchangeNotAvailable("busy")  # a NetworkError: looked up
    live.submit(request())
    await live.run_once()
    assert ev[-1].status is OrderStatus.ACCEPTED
    ex.fail_next_create = ccxt.ExchangeError("system error, try again")
    live.submit(request("b000000002"))
    await live.run_once()
    assert ev[-1].status is OrderStatus.ACCEPTED
    assert ex.created.count("b000000002") == 1


async def test_secret_in_an_exception_text_is_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    live, ex, _ev = make()
    ex.fail_next_create = ccxt.RequestTimeout("GET https://x/?signature=SECRETKEY123 X-MBX-APIKEY: SECRETKEY123")
    live.submit(request())
    await live.run_once()
    out = capsys.readouterr()
    assert "SECRETKEY123" not in out.out + out.err


def test_token_bucket_allows_a_burst_then_spaces_requests() -> None:
    t = [0.0]
    b = TokenBucket(2, now=lambda: t[0])
    assert b.delay() == 0
    assert b.delay() == 0
    assert b.delay() == pytest.approx(0.5)
    t[0] = 10.0
    assert b.delay() == 0


async def test_a_trade_becomes_one_fill_even_when_seen_twice() -> None:
    live, _ex, ev = make()
    live.submit(request())
    await live.run_once()
    live.apply_venue_trade(SPOT, trade("t1", "0.01"))
    live.apply_venue_trade(SPOT, trade("t1", "0.01"))
    fills = [e for e in ev if isinstance(e, Fill)]
    assert len(fills) == 1
    assert fills[0].client_order_id == "b000000001"
    assert fills[0].fee == Decimal("0.06")


def test_live_without_the_environment_opt_in_refuses_with_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.__main__ import main

    monkeypatch.delenv("BOT_LIVE_TRADING", raising=False)
    monkeypatch.setattr("bot.app.setup_logging", lambda *a: None)  # keeps structlog off capsys's stream
    code = main(["run", "--live"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "BOT_LIVE_TRADING=yes" in err


async def test_reconcile_after_restart_fills_once_and_rejects_orders_the_venue_does_not_know() -> None:
    # Arrange: two orders open in the state database; one filled at the venue while we were down
    # (two trades, one of which we already persisted), the other unknown to the venue.
    live, ex, ev = make()
    live.submit(request("b000000001"))
    live.submit(request("b000000002"))
    persisted = live.open_orders()
    ex.orders["b000000001"] = {"id": "v9", "status": "closed", "filled": 0.01, "average": 60000}
    t = {"order": "v9", "symbol": "BTC/USDT", "amount": 0.005, "price": 60000, "timestamp": 1,
         "fee": {"cost": 0, "currency": "USDT"}}
    ex.trades = [{**t, "id": "t1"}, {**t, "id": "t2"}]
    fresh = LiveExecution({SPOT: ex}, ev.append, clock_ns=lambda: 9)  # type: ignore[arg-type]
    ev.clear()
    old = Fill(
        ts_event=1,
        ts_recv=1,
        client_order_id="b000000001",
        strategy="s",
        venue=Venue.BINANCE_SPOT,
        symbol="BTC/USDT",
        side=Side.BUY,
        qty=Decimal("0.005"),
        price=Decimal(60000),
        fee=Decimal(0),
        fee_asset="USDT",
        liquidity=Liquidity.TAKER,
        trade_id="t1",
    )
    # Act
    await fresh.reconcile(persisted, [old])
    # Assert
    fills = [e for e in ev if isinstance(e, Fill)]
    assert [f.trade_id for f in fills] == ["t2"]
    status = {e.client_order_id: e.status for e in ev if isinstance(e, OrderUpdate)}
    assert status == {"b000000001": OrderStatus.FILLED, "b000000002": OrderStatus.REJECTED}
    assert fresh.open_orders() == []


async def test_reconcile_cancels_venue_orders_of_ours_the_database_never_recorded() -> None:
    # Arrange: a crash between sending and writing NEW left one of our orders open at the venue; another
    # client's order (another prefix) rests there too
    live, ex, _ev = make()
    live._symbols[SPOT] = {"BTCUSDT": "BTC/USDT"}
    ex.orders = {cid: {"id": vid, "clientOrderId": cid, "status": "open", "filled": 0}
                 for cid, vid in (("bqwerty000000007", "v7"), ("manual-1", "m1"))}
    # Act
    await live.reconcile([], [], "bqwerty")
    # Assert
    assert ex.orders["bqwerty000000007"]["status"] == "canceled"
    assert ex.orders["manual-1"]["status"] == "open"
    assert live.stats["orphans_cancelled"] == 1
