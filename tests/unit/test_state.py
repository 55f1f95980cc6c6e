"""StateStore: events in -> PersistedState out, idempotent replays, failures halt, nothing dropped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import bot.state
from bot.bus import EventBus
from bot.config import RiskConfig, StateConfig
from bot.errors import ConfigError
from bot.events import Side, Venue
from bot.ledger import Ledger
from bot.orders import (
    ClockSkew,
    EquitySnapshot,
    Fill,
    Liquidity,
    OrderDenied,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionSnapshot,
    RiskStateChanged,
    StrategyHealth,
    TimeInForce,
    TradingState,
)
from bot.risk import RiskGate
from bot.signal_log import SCHEMA as SIGNAL_SCHEMA
from bot.state import StateStore
from bot.state_lock import writer_pid
from bot.state_rows import NS_PER_DAY, latched_state, order_seq
from tests.state_store import reopen, running_store

pytestmark = pytest.mark.unit

NS = 1_000_000_000
BASE = 1_763_812_800 * NS  # 2025-11-22 12:00:00 UTC
SPOT, PERP = Venue.BINANCE_SPOT, Venue.BYBIT_LINEAR
D = Decimal


def order(cid: str, status: OrderStatus, t: int, filled: str = "0", avg: str | None = None,
          qty: str = "0.0100") -> OrderUpdate:
    return OrderUpdate(ts_event=BASE + t, ts_recv=BASE + t, client_order_id=cid, strategy="mm", venue=SPOT,
                       symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT, tif=TimeInForce.GTC, qty=D(qty),
                       price=D("60000.10"), status=status, filled_qty=D(filled),
                       avg_price=None if avg is None else D(avg))


def fill(cid: str, n: int, t: int, qty: str, price: str = "60000.10") -> Fill:
    return Fill(ts_event=BASE + t, ts_recv=BASE + t, client_order_id=cid, strategy="mm", venue=SPOT, symbol="BTCUSDT",
                side=Side.BUY, qty=D(qty), price=D(price), fee=(D(qty) * D(price) * D("0.001")), fee_asset="USDT",
                liquidity=Liquidity.MAKER, trade_id=f"{cid}-{n}")


def equity(venue: Venue, ts: int, eq: str, cash: str | None = None,
           positions: tuple[PositionSnapshot, ...] = ()) -> EquitySnapshot:
    return EquitySnapshot(ts_event=ts, ts_recv=ts, venue=venue, quote="USDT", cash=D(cash or eq), equity=D(eq),
                          fees=D(0), funding=D(0), positions=positions)


def risk(prev: TradingState, state: TradingState, reason: str, t: int, detail: str = "") -> RiskStateChanged:
    return RiskStateChanged(ts_event=BASE + t, ts_recv=BASE + t, previous=prev, state=state, reason=reason,
                            detail=detail)


class Failures(list[Exception]):
    def __call__(self, exc: Exception) -> None:
        self.append(exc)


async def test_a_fresh_database_resumes_from_nothing(tmp_path: Path) -> None:
    state = await reopen(tmp_path / "out" / "state.sqlite")
    assert (state.orders, state.fills, state.trading_state, state.next_order_seq) == ([], [], TradingState.ACTIVE, 1)
    assert state.peak_equity is None
    conn = sqlite3.connect(tmp_path / "out" / "state.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"


async def test_round_trip_open_orders_fills_in_order_latched_state_and_next_sequence(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    async with running_store(db) as (_, bus):
        for ev in [
            order("mm-000001", OrderStatus.NEW, 1), order("mm-000001", OrderStatus.ACCEPTED, 2),
            fill("mm-000001", 1, 3, "0.0040"),
            order("mm-000001", OrderStatus.PARTIALLY_FILLED, 3, "0.0040", "60000.10"),
            order("mm-000002", OrderStatus.NEW, 4), order("mm-000002", OrderStatus.ACCEPTED, 5),
            fill("mm-000001", 2, 6, "0.0060", "60000.00"),
            order("mm-000001", OrderStatus.FILLED, 6, "0.0100", "60000.04"),
            order("mm-000003", OrderStatus.NEW, 7), order("mm-000003", OrderStatus.REJECTED, 8),
            order("mm-000007", OrderStatus.NEW, 9),
            order("mm-000001", OrderStatus.ACCEPTED, 10),  # a stale replay: a closed order never reopens
            OrderDenied(ts_event=BASE + 11, ts_recv=BASE + 11, strategy="mm", venue=SPOT, symbol="BTCUSDT",
                        side=Side.BUY, qty=D("0.5"), reason="max_order_notional", detail="30000 > 2000"),
            OrderDenied(ts_event=BASE + 12, ts_recv=BASE + 12, strategy="mm", venue=SPOT, symbol="BTCUSDT",
                        side=None, qty=D("0.1"), reason="halted"),
            risk(TradingState.ACTIVE, TradingState.REDUCING, "clock_skew", 13),  # live alarm: not latched
            risk(TradingState.REDUCING, TradingState.HALTED, "daily_drawdown", 14, "-5.2% from 10000"),
            StrategyHealth(ts_event=BASE + 15, ts_recv=BASE + 15, strategy="mm", enabled=False,
                           reason="model_latency"),
            StrategyHealth(ts_event=BASE + 16, ts_recv=BASE + 16, strategy="trend", enabled=False, reason="input_age"),
            StrategyHealth(ts_event=BASE + 17, ts_recv=BASE + 17, strategy="trend", enabled=True, reason="healthy"),
        ]:
            bus.publish(ev)

    state = await reopen(db)
    assert [(o.client_order_id, o.status) for o in state.orders] == [
        ("mm-000002", OrderStatus.ACCEPTED), ("mm-000007", OrderStatus.NEW)]
    assert state.orders[0] == order("mm-000002", OrderStatus.ACCEPTED, 5)  # the whole event, exactly
    assert state.fills == [fill("mm-000001", 1, 3, "0.0040"), fill("mm-000001", 2, 6, "0.0060", "60000.00")]
    assert str(state.fills[0].qty) == "0.0040"
    assert str(state.fills[0].fee) == "0.240000400"
    assert (state.trading_state, state.trading_reason, state.trading_since_ns) == (
        TradingState.HALTED, "daily_drawdown", BASE + 14)
    assert state.next_order_seq == 8
    assert state.stopped_strategies == {"mm": "model_latency"}
    assert state.counts == {"orders": 4, "open_orders": 2, "fills": 2, "denials": 2, "risk_states": 2, "equity": 0}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT status, filled_qty, avg_price FROM orders WHERE client_order_id = 'mm-000001'"
                        ).fetchone() == ("filled", "0.0100", "60000.04")
    assert conn.execute("SELECT COUNT(*) FROM order_events WHERE client_order_id = 'mm-000001'").fetchone()[0] == 5


async def test_a_duplicate_fill_is_ignored_in_one_batch_and_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    f = fill("mm-1", 1, 2, "0.0100")
    async with running_store(db) as (_, bus):
        bus.publish(order("mm-1", OrderStatus.NEW, 1))
        bus.publish(f)
        bus.publish(f)
    async with running_store(db) as (store, bus):  # a restart that replays the same events
        bus.publish(order("mm-1", OrderStatus.NEW, 1))
        bus.publish(f)
        await store.wait_idle()
    state = await reopen(db)
    assert state.fills == [f]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM order_events").fetchone()[0] == 1


async def test_fills_replayed_into_a_fresh_ledger_rebuild_the_same_books(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    balances = {SPOT: {"USDT": D(10_000)}}
    live = Ledger(balances)
    fills = [fill("mm-1", 1, 1, "0.0100", "60000.10"), fill("mm-2", 1, 2, "0.0040", "61000.00")]
    sell = Fill(ts_event=BASE + 3, ts_recv=BASE + 3, client_order_id="mm-3", strategy="mm", venue=SPOT,
                symbol="BTCUSDT", side=Side.SELL, qty=D("0.0050"), price=D("62000"), fee=D("0.31"), fee_asset="USDT",
                liquidity=Liquidity.TAKER, trade_id="mm-3-1")
    async with running_store(db) as (_, bus):
        bus.subscribe(Fill, live.on_fill)
        for f in [*fills, sell]:
            bus.publish(f)
    rebuilt = Ledger.replay(balances, (await reopen(db)).fills)
    assert rebuilt.position(SPOT, "BTCUSDT") == live.position(SPOT, "BTCUSDT") == D("0.0090")
    # 10000 - 600.001 - 0.600001 - 244 - 0.244 + 310 - 0.31 (fees at 0.1 %)
    assert rebuilt.cash(SPOT) == live.cash(SPOT) == D("9464.844999")
    assert rebuilt.realized_pnl(SPOT, "BTCUSDT") == live.realized_pnl(SPOT, "BTCUSDT")


async def test_peak_and_day_start_follow_whole_ticks_of_total_equity(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    day0 = BASE // NS_PER_DAY * NS_PER_DAY
    pos = PositionSnapshot(venue=PERP, symbol="ETHUSDT", qty=D("-0.5"), avg_price=D("3000"), realized_pnl=D("1.5"),
                           mark=D("2990"), unrealized_pnl=D("5"))
    async with running_store(db) as (_, bus):
        for ev in [equity(SPOT, BASE + 1, "10000"), equity(PERP, BASE + 1, "5000"),   # tick 1: 15000
                   equity(SPOT, BASE + 2, "10100"), equity(PERP, BASE + 2, "5050"),   # tick 2: 15150
                   equity(SPOT, BASE + 3, "9900"), equity(PERP, BASE + 3, "5005", positions=(pos,))]:  # 14905
            bus.publish(ev)
    state = await reopen(db)
    assert (state.peak_equity, state.day_start_equity, state.day_start_ns) == (D(15150), D(15000), day0)
    assert state.equity[PERP].positions == (pos,)
    assert {v: s.equity for v, s in state.equity.items()} == {SPOT: D(9900), PERP: D(5005)}

    next_day = day0 + NS_PER_DAY + 5 * NS
    async with running_store(db) as (_, bus):
        bus.publish(equity(SPOT, next_day, "9800"))  # PERP carried forward: 9800 + 5005
    state = await reopen(db)
    assert (state.peak_equity, state.day_start_equity, state.day_start_ns) == (D(15150), D(14805), day0 + NS_PER_DAY)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT venue, symbol, qty, mark FROM positions").fetchall() == [
        ("bybit_linear", "ETHUSDT", "-0.5", "2990")]


async def test_the_latch_follows_the_real_risk_gate_operator_and_alarms(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    async with running_store(db) as (store, bus):
        gate = RiskGate(RiskConfig(), Ledger({SPOT: {"USDT": D(10_000)}}), bus.publish)
        gate.on_skew(ClockSkew(ts_event=BASE + 1, ts_recv=BASE + 1, venue=SPOT, offset_ms=2500.0, round_trip_ms=3.0))
        gate.halt("operator", BASE + 2)
        await store.wait_idle()
        assert sqlite3.connect(db).execute("SELECT state, source FROM risk_latch").fetchone() == ("halted",
                                                                                                 "operator")
        gate.resume(BASE + 3)  # the effective state stays REDUCING (skew alarm); the latch is cleared
    state = await reopen(db)
    assert gate.state is TradingState.REDUCING
    assert (state.trading_state, state.trading_since_ns) == (TradingState.ACTIVE, BASE + 3)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT previous, state, reason FROM risk_states ORDER BY id").fetchall() == [
        ("active", "reducing", "clock_skew"), ("reducing", "halted", "operator"), ("halted", "reducing", "operator")]


def test_latched_state_reads_the_operator_detail_and_skips_live_alarms() -> None:
    assert latched_state(risk(TradingState.HALTED, TradingState.REDUCING, "operator", 0, "resume; alarms")) is (
        TradingState.ACTIVE)
    assert latched_state(risk(TradingState.ACTIVE, TradingState.REDUCING, "operator", 0, "reduce: x")) is (
        TradingState.REDUCING)
    assert latched_state(risk(TradingState.ACTIVE, TradingState.REDUCING, "book_resyncing", 0)) is None
    assert latched_state(risk(TradingState.ACTIVE, TradingState.HALTED, "rejects", 0)) is TradingState.HALTED
    assert (order_seq("paper-000042"), order_seq("mm-7"), order_seq("manual")) == (42, 7, None)


async def test_a_write_error_calls_on_failure_once_per_incident_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "state.sqlite"
    monkeypatch.setattr(bot.state, "RETRY_S", 0.01)
    failures = Failures()
    async with running_store(db, failures) as (store, bus):
        assert store._db is not None
        real = store._db.executemany
        broken = {"left": 3}

        async def flaky(sql: str, params: Any) -> Any:
            if broken["left"]:
                broken["left"] -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return await real(sql, params)

        monkeypatch.setattr(store._db, "executemany", flaky)
        bus.publish(order("mm-1", OrderStatus.NEW, 1))
        await asyncio.sleep(0)
        bus.publish(fill("mm-1", 1, 2, "0.0100"))  # queued behind the failing batch, in order
        await store.wait_idle()
        assert len(failures) == 1
        assert isinstance(failures[0], sqlite3.OperationalError)
        assert store.stats()["failures"] == 1
        assert store.stats()["retries"] == 3
        broken["left"] = 1  # a second incident later on
        bus.publish(order("mm-1", OrderStatus.FILLED, 2, "0.0100", "60000.10"))
        await store.wait_idle()
        assert len(failures) == 2
    state = await reopen(db)
    assert state.fills == [fill("mm-1", 1, 2, "0.0100")]
    assert state.orders == []
    assert state.counts["orders"] == 1


async def test_a_full_queue_is_a_failure_but_nothing_is_dropped(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    failures = Failures()
    async with running_store(db, failures, queue_size=3) as (store, bus):
        for i in range(6):  # no await: the writer has not run yet
            bus.publish(order(f"mm-{i}", OrderStatus.NEW, i))
        assert len(failures) == 1
        assert "passed 3 events" in str(failures[0])
        assert store.stats()["queued"] == 6
    assert (await reopen(db)).next_order_seq == 6
    assert len((await reopen(db)).orders) == 6


async def test_cancelling_the_writer_flushes_what_is_queued(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    store = StateStore(StateConfig(db=db), Failures())
    await store.open()
    bus = EventBus()
    store.attach(bus)
    task = asyncio.create_task(store.run())
    await asyncio.sleep(0)
    for i in range(1, 4):
        bus.publish(order(f"mm-{i}", OrderStatus.NEW, i))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await store.close()
    assert [o.client_order_id for o in (await reopen(db)).orders] == ["mm-1", "mm-2", "mm-3"]


async def test_a_directory_or_a_damaged_file_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ConfigError, match="is not a file"):
        await reopen(tmp_path / "dir.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match=r"cannot open state database .*junk\.sqlite: file is not a database"):
        await reopen(tmp_path / "junk.sqlite")


async def test_the_signal_log_table_lives_beside_the_state_tables(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(SIGNAL_SCHEMA)  # the signal log created the file first
    conn.close()
    async with running_store(db) as (_, bus):
        bus.publish(order("mm-1", OrderStatus.NEW, 1))
    conn = sqlite3.connect(db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"signals", "orders", "fills", "control", "meta"} <= names
    assert conn.execute("SELECT COUNT(*) FROM signals").fetchone()[0] == 0


async def test_poll_control_hands_each_request_over_once_and_survives_a_locked_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "state.sqlite"
    async with running_store(db) as (store, _):
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("INSERT INTO control (ts_ns, action, reason) VALUES (?, 'reduce', 'operator')", (BASE,))
        assert store._db is not None
        real = store._db.execute_fetchall

        async def locked(*args: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(store._db, "execute_fetchall", locked)
        assert await store.poll_control() == []  # no exception into the engine's poll task
        monkeypatch.setattr(store._db, "execute_fetchall", real)
        assert await store.poll_control() == [
            bot.state.ControlAction(id=1, action="reduce", state=TradingState.REDUCING, reason="operator", ts_ns=BASE)]
        assert await store.poll_control() == []
        assert store.stats()["control_errors"] == 1


async def test_a_second_writer_on_the_same_database_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    async with running_store(db):
        assert writer_pid(db) == os.getpid()
        with pytest.raises(ConfigError, match=rf"in use by another running bot \(pid {os.getpid()}\)"):
            await reopen(db)
    assert writer_pid(db) is None
    assert (await reopen(db)).next_order_seq == 1
