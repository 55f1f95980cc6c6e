"""The state database across processes: a writer kill -9'd mid-session leaves a consistent prefix, and the
operator commands (``python -m bot status|halt|resume``, the real CLI) read and steer it, the bot running or not."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main as bot_main
from bot.config import RiskConfig, StateConfig
from bot.errors import ConfigError
from bot.events import Event, Side, Signal, Venue
from bot.ledger import Ledger
from bot.orders import (
    EquitySnapshot,
    Fill,
    Liquidity,
    OrderDenied,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionSnapshot,
    StrategyHealth,
    TimeInForce,
    TradingState,
)
from bot.risk import RiskGate
from bot.signal_log import SignalLog
from bot.state import StateStore
from tests.state_store import reopen, running_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
BASE = 1_763_812_800 * NS  # 2025-11-22 12:00:00 UTC
SPOT, PERP = Venue.BINANCE_SPOT, Venue.BYBIT_LINEAR
D = Decimal


# -- a deterministic event stream (the kill -9 writer and the checks share it) ------------------------------


def stream_events() -> Iterator[Event]:
    """Per order k: NEW, its fill, FILLED; every 10th order an equity snapshot. ``ts_event`` = the index in
    the stream, so the database's rows say exactly which prefix of it they are."""
    i = 0
    for k in itertools.count():
        cid = f"k-{k:06d}"
        common: dict[str, Any] = dict(client_order_id=cid, strategy="mm", venue=SPOT, symbol="BTCUSDT", side=Side.BUY)
        yield OrderUpdate(ts_event=i, ts_recv=i, order_type=OrderType.MARKET, tif=TimeInForce.IOC, qty=D("0.001"),
                          price=None, status=OrderStatus.NEW, **common)
        yield Fill(ts_event=i + 1, ts_recv=i + 1, qty=D("0.001"), price=D("60000.1"), fee=D("0.0600001"),
                   fee_asset="USDT", liquidity=Liquidity.TAKER, trade_id=f"{cid}-1", **common)
        yield OrderUpdate(ts_event=i + 2, ts_recv=i + 2, order_type=OrderType.MARKET, tif=TimeInForce.IOC,
                          qty=D("0.001"), price=None, status=OrderStatus.FILLED, filled_qty=D("0.001"),
                          avg_price=D("60000.1"), **common)
        i += 3
        if k % 10 == 0:
            yield EquitySnapshot(ts_event=i, ts_recv=i, venue=SPOT, quote="USDT", cash=D(10_000) - k, equity=D(10_000),
                                 fees=D(0), funding=D(0))
            i += 1


WRITER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from bot.bus import EventBus
from bot.config import StateConfig
from bot.state import StateStore
from tests.integration.test_state_cli import stream_events

async def main() -> None:
    store = StateStore(StateConfig(db=Path({db!r})), lambda e: None, batch_max=400)
    await store.open()
    bus = EventBus()
    store.attach(bus)
    task = asyncio.create_task(store.run())
    events = stream_events()
    announced = False
    while True:
        for _ in range(250):
            bus.publish(next(events))
        while store.stats()["queued"] > 1000:
            await asyncio.sleep(0)
        if not announced and store.stats()["batches"] >= 3:
            print("writing", flush=True)
            announced = True

asyncio.run(main())
"""


def _rows_ts(conn: sqlite3.Connection) -> list[int]:
    out: list[int] = []
    for table in ("order_events", "fills", "equity"):
        out += [int(r[0]) for r in conn.execute(f"SELECT ts_event FROM {table}")]
    return sorted(out)


@pytest.mark.parametrize("delay_s", [0.0, 0.15, 0.4])
async def test_a_writer_killed_mid_session_leaves_a_consistent_prefix_and_a_restart_resumes_it(
    tmp_path: Path, delay_s: float
) -> None:
    # Arrange: a second process writing through StateStore as fast as it can
    db = tmp_path / "state.sqlite"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER.format(root=str(ROOT), db=str(db)), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        while (line := await asyncio.wait_for(proc.stdout.readline(), 60)).strip() != b"writing":
            assert line, "the writer process ended before writing"
        await asyncio.sleep(delay_s)
        # Act
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    # Assert: the rows are exactly the first n events of the stream, nothing half-written
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ts = _rows_ts(conn)
    n = len(ts)
    assert n >= 3 * 400
    assert ts == list(range(n))
    conn.close()
    prefix = list(itertools.islice(stream_events(), n))
    state = await reopen(db)
    assert state.fills == [e for e in prefix if isinstance(e, Fill)]
    last: dict[str, OrderUpdate] = {e.client_order_id: e for e in prefix if isinstance(e, OrderUpdate)}
    assert state.orders == [o for o in last.values() if o.status.is_open]  # only a cut order can be open
    assert len(state.orders) <= 1
    assert state.next_order_seq == len(last)  # ids k-000000 ... : the highest number + 1

    # A restart that replays the first events again and goes on: nothing doubled, a longer prefix.
    async with running_store(db, idle_s=20) as (_, bus):
        for ev in itertools.islice(stream_events(), n + 100):
            bus.publish(ev)
    assert _rows_ts(sqlite3.connect(db)) == list(range(n + 100))


# -- the operator commands -----------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[state]\ndb = "{tmp_path / "out" / "state.sqlite"}"\n')
    return path


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process (as from another terminal)."""
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, check=False)


def test_status_without_a_database_says_so_and_exits_1(config: Path, tmp_path: Path) -> None:
    done = cli(config, "status")
    assert done.returncode == 1
    assert done.stderr == (f"no state database at {tmp_path / 'out' / 'state.sqlite'} "
                           "(the bot has not run with this config)\n")
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()  # status never creates anything


def _session_events() -> list[Event]:
    btc = PositionSnapshot(venue=SPOT, symbol="BTCUSDT", qty=D("0.0100"), avg_price=D("60000.10"),
                           realized_pnl=D("-0.600001"), mark=D("60100.05"), unrealized_pnl=D("0.9995"))
    eth = PositionSnapshot(venue=PERP, symbol="ETHUSDT", qty=D("-0.50"), avg_price=D("3000.00"),
                           realized_pnl=D("0"), mark=D("2990.00"), unrealized_pnl=D("5.0000"))
    common: dict[str, Any] = dict(strategy="mm", venue=SPOT, symbol="BTCUSDT", side=Side.BUY,
                                  order_type=OrderType.LIMIT, tif=TimeInForce.GTC, qty=D("0.0100"))
    return [
        OrderUpdate(ts_event=BASE, ts_recv=BASE, client_order_id="mm-1", price=D("60000.10"), status=OrderStatus.NEW,
                    **common),
        Fill(ts_event=BASE + 1, ts_recv=BASE + 1, client_order_id="mm-1", strategy="mm", venue=SPOT, symbol="BTCUSDT",
             side=Side.BUY, qty=D("0.0100"), price=D("60000.10"), fee=D("0.600001"), fee_asset="USDT",
             liquidity=Liquidity.MAKER, trade_id="mm-1-1"),
        OrderUpdate(ts_event=BASE + 1, ts_recv=BASE + 1, client_order_id="mm-1", price=D("60000.10"),
                    status=OrderStatus.FILLED, filled_qty=D("0.0100"), avg_price=D("60000.10"), **common),
        OrderUpdate(ts_event=BASE + 2, ts_recv=BASE + 2, client_order_id="mm-2", price=D("59000.00"),
                    status=OrderStatus.ACCEPTED, **common),
        OrderDenied(ts_event=BASE + 3, ts_recv=BASE + 3, strategy="mm", venue=SPOT, symbol="BTCUSDT", side=Side.BUY,
                    qty=D("1"), reason="max_order_notional"),
        OrderDenied(ts_event=BASE + 4, ts_recv=BASE + 4, strategy="mm", venue=SPOT, symbol="BTCUSDT", side=Side.BUY,
                    qty=D("1"), reason="max_order_notional"),
        OrderDenied(ts_event=BASE + 5, ts_recv=BASE + 5, strategy="trend", venue=PERP, symbol="ETHUSDT", side=None,
                    qty=D("0.1"), reason="stale_signal"),
        StrategyHealth(ts_event=BASE + 6, ts_recv=BASE + 6, strategy="trend", enabled=False, reason="model_latency",
                       detail="1200 ms > 1000 ms"),
        EquitySnapshot(ts_event=BASE + 7, ts_recv=BASE + 7, venue=SPOT, quote="USDT", cash=D("9399.399999"),
                       equity=D("10000.400499"), fees=D("0.600001"), funding=D(0), positions=(btc,)),
        EquitySnapshot(ts_event=BASE + 7, ts_recv=BASE + 7, venue=PERP, quote="USDT", cash=D("5000"),
                       equity=D("5005.0000"), fees=D(0), funding=D(0), positions=(eth,)),
    ]


def _signal(i: int) -> Signal:
    r = BASE + i * NS
    return Signal(ts_event=r - 2_000_000, ts_recv=r, model="tabl-btc", family="tabl", version="0123456789ab",
                  code_version="", venue=SPOT, symbol="BTCUSDT", horizon="10s", classes=("down", "flat", "up"),
                  probabilities=(0.2, 0.5, 0.3), confidence=0.5, attention="", inference_start_ns=r - 1_500_000,
                  inference_end_ns=r - 500_000)


async def _write_session(db: Path) -> None:
    slog = SignalLog(db, None)  # the signal log shares the file (its default is the state database's path)
    async with running_store(db) as (_, bus):
        slog.attach(bus)
        task = asyncio.create_task(slog.run())
        for ev in [*_session_events(), _signal(0), _signal(1), _signal(2)]:
            bus.publish(ev)
        await asyncio.wait_for(slog.wait_idle(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_status_shows_positions_accounts_orders_risk_and_counts_as_a_table_and_as_json(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "out" / "state.sqlite"
    await _write_session(db)
    capsys.readouterr()  # the writers' logs

    assert bot_main(["--config", str(config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total_equity"] == "15005.400499"  # 10000.400499 + 5005.0000
    assert [(a["venue"], a["cash"], a["equity"]) for a in report["accounts"]] == [
        ("binance_spot", "9399.399999", "10000.400499"), ("bybit_linear", "5000", "5005.0000")]
    assert [(p["symbol"], p["qty"], p["avg_price"], p["mark"], p["unrealized_pnl"], p["realized_pnl"])
            for p in report["positions"]] == [("BTCUSDT", "0.0100", "60000.10", "60100.05", "0.9995", "-0.600001"),
                                              ("ETHUSDT", "-0.50", "3000.00", "2990.00", "5.0000", "0")]
    assert [(o["client_order_id"], o["status"], o["price"]) for o in report["open_orders"]] == [
        ("mm-2", "accepted", "59000.00")]
    assert report["counts"] == {"signals": 3, "orders": 2, "open_orders": 1, "fills": 1, "denials": 3,
                                "denials_by_reason": {"max_order_notional": 2, "stale_signal": 1}}
    assert [(s["strategy"], s["reason"]) for s in report["strategies_stopped"]] == [("trend", "model_latency")]
    assert report["risk"]["latched"] == "active"

    done = cli(config, "status")  # the table, from another process
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "risk state: ACTIVE" in out
    assert "total equity: 15005.400499" in out
    assert any(line.split()[:3] == ["binance_spot", "BTCUSDT", "0.01"] for line in out.splitlines())
    assert any(line.split()[:2] == ["mm-2", "mm"] for line in out.splitlines())
    assert "counts: signals 3, orders 2 (1 open), fills 1, denials 3" in out
    assert "denied max_order_notional: 2" in out
    assert "trend" in out.split("strategies stopped:")[1]


async def test_halt_reduce_and_resume_persist_the_latched_state_without_a_running_bot(
    config: Path, tmp_path: Path
) -> None:
    db = tmp_path / "out" / "state.sqlite"
    done = cli(config, "halt")  # before the bot ever ran: creates the database
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"HALTED: no bot is running with this database; it applies at its next start ({db})\n"
    assert (await reopen(db)).trading_state is TradingState.HALTED

    assert cli(config, "halt", "--reduce", "--reason", "closing out").stdout.startswith("REDUCING: no bot")
    state = await reopen(db)
    assert (state.trading_state, state.trading_reason) == (TradingState.REDUCING, "operator: closing out")

    assert cli(config, "resume").stdout.startswith("ACTIVE: ")
    assert (await reopen(db)).trading_state is TradingState.ACTIVE

    # The requests wait for the bot, in order, and are handed over once.
    store = StateStore(StateConfig(db=db), lambda e: None)
    await store.open()
    try:
        actions = await store.poll_control()
        assert [(a.action, a.state, a.reason) for a in actions] == [
            ("halt", TradingState.HALTED, "operator"), ("reduce", TradingState.REDUCING, "operator: closing out"),
            ("resume", TradingState.ACTIVE, "operator")]
        assert await store.poll_control() == []
    finally:
        await store.close()
    report = json.loads(cli(config, "status", "--json").stdout)
    assert report["pending_control"] == 0
    assert report["risk"]["latched"] == "active"


async def test_a_running_bot_picks_up_a_cli_halt_at_its_next_poll_and_persists_the_gate_state(
    config: Path, tmp_path: Path
) -> None:
    db = tmp_path / "out" / "state.sqlite"
    async with running_store(db) as (store, bus):
        gate = RiskGate(RiskConfig(), Ledger({SPOT: {"USDT": D(10_000)}}), bus.publish)
        assert await store.poll_control() == []
        # Act: another terminal
        done = await asyncio.to_thread(cli, config, "halt")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"HALTED: the running bot (pid {os.getpid()}) applies it within a second")
        # Assert: the very next poll (the engine polls every 0.5 s) has it; the gate applies it
        actions = await store.poll_control()
        assert [a.action for a in actions] == ["halt"]
        gate.halt(actions[0].reason, BASE)
        await store.wait_idle()
        assert gate.state is TradingState.HALTED
        assert await store.poll_control() == []
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT state, reason, source FROM risk_latch").fetchone() == ("halted", "operator",
                                                                                     "operator")
    assert conn.execute("SELECT previous, state, reason FROM risk_states").fetchall() == [
        ("active", "halted", "operator")]
    done = cli(config, "resume")
    assert done.stdout.startswith("ACTIVE: no bot is running")  # the store closed: the pid is gone from meta


def test_a_file_that_is_not_a_state_database_is_one_clear_line_exit_2(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "out" / "state.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"\x00garbage" * 512)
    for argv in (["status"], ["halt"]):
        done = cli(config, *argv)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1
        assert "file is not a database" in done.stderr
        assert "Traceback" not in done.stderr



@pytest.mark.parametrize("kind", ["empty", "foreign"])
async def test_an_empty_file_or_another_programs_database_is_refused_and_left_untouched(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    db = tmp_path / "out" / "state.sqlite"
    db.parent.mkdir()
    if kind == "empty":
        db.touch()
        why = "is an empty file, not a state database"
    else:
        with contextlib.closing(sqlite3.connect(db)) as other, other:
            other.execute("CREATE TABLE invoices (id INTEGER)")
        why = "is not this bot's state database (it holds other tables: invoices)"
    before = db.read_bytes()
    for argv in (["status"], ["status", "--json"], ["halt"], ["resume"]):
        assert bot_main(["--config", str(config), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert why in err, argv
        assert len(err.strip().splitlines()) == 1
    # the bot itself will not write its schema into another program's file either
    if kind == "foreign":
        with pytest.raises(ConfigError, match="it holds other tables: invoices"):
            await reopen(db)
    assert db.read_bytes() == before
    lock = ["state.sqlite.lock"] if kind == "foreign" else []  # the bot's writer lock, beside, not inside
    assert sorted(p.name for p in db.parent.iterdir()) == ["state.sqlite", *lock]
