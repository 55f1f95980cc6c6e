"""Paper trading end to end: ``python -m bot run --paper --sim`` as a user runs it, and the chain in-process.

The subprocess tests run the real command (its own config in a temp folder, started from another folder)
and read what it leaves: the status lines on stdout, the log on stderr, the state database. The
in-process tests drive ``bot.app.run_bot`` with the loopback exchange's fault injection and watch the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main as bot_main
from bot.app import run_bot
from bot.bus import EventBus
from bot.config import load_settings
from bot.events import BookHealth, BookState, Venue
from bot.orders import OrderDenied, OrderStatus, OrderUpdate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = {p.stem for p in (ROOT / "models" / "checkpoints").glob("*.pt")}
KEY, SECRET = "sentinelKEY0123456789", "sentinelSECRET9876543210"
D = Decimal


def _config(folder: Path, extra: str = "") -> Path:
    """The shipped config.toml (its strategies included) in ``folder``, with ``extra`` TOML after it. Its
    relative paths (the state database, the signal log) resolve from there."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text((ROOT / "config.toml").read_text() + "\n" + extra)
    return cfg


def _run(cfg: Path, cwd: Path, duration: float, speed: float, env: dict[str, str] | None = None,
         ) -> tuple[int, str, str, dict[str, Any]]:
    cmd = [sys.executable, "-m", "bot", "--config", str(cfg), "run", "--paper", "--sim", "--duration",
           str(duration), "--speed", str(speed), "--status-every", "5"]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=duration + 120, env=full_env,
                       check=False)
    statuses = [json.loads(line)["status"] for line in p.stdout.splitlines() if line.startswith('{"status"')]
    return p.returncode, p.stdout, p.stderr, statuses[-1] if statuses else {}


def _db(cfg: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(cfg.parent / "out" / "state.sqlite")
    conn.row_factory = sqlite3.Row
    return conn


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _check_ledger(conn: sqlite3.Connection) -> None:
    """At every equity snapshot: equity == cash + the positions' values; at the last one, the fees, the
    positions and (spot) the cash equal what the fills up to then add up to, computed here independently."""
    snaps = conn.execute("SELECT venue, ts_event, cash, equity, fees, positions FROM equity ORDER BY id").fetchall()
    assert snaps, "no equity snapshot was written"
    for s in snaps:
        total, exact = D(s["cash"]), True
        for p in json.loads(s["positions"]):
            qty, spot = D(p["qty"]), Venue(s["venue"]).market == "spot"
            if p["mark"] is None:  # never marked (a restart before its first book): valued at its entry
                total += qty * D(p["avg_price"]) if spot else D(0)
                exact = exact and not spot
                continue
            mark = D(p["mark"])
            total += qty * mark if spot else qty * (mark - D(p["avg_price"]))
        if exact:
            assert D(s["equity"]) == total, (s["venue"], s["ts_event"])
        else:  # the average entry is rounded; the ledger keeps the exact cost
            assert abs(D(s["equity"]) - total) < D("1e-9"), (s["venue"], s["ts_event"])
    last: dict[str, sqlite3.Row] = {}
    for s in snaps:
        last[s["venue"]] = s
    for venue, s in last.items():
        fills = conn.execute("SELECT side, qty, price, fee, symbol FROM fills WHERE venue = ? AND ts_event <= ?",
                             (venue, s["ts_event"])).fetchall()
        assert D(s["fees"]) == sum((D(f["fee"]) for f in fills), D(0))
        held: dict[str, Decimal] = {}
        flows = D(0)
        for f in fills:
            sign = 1 if f["side"] == "buy" else -1
            held[f["symbol"]] = held.get(f["symbol"], D(0)) + sign * D(f["qty"])
            flows -= sign * D(f["qty"]) * D(f["price"]) + D(f["fee"])
        for p in json.loads(s["positions"]):
            assert D(p["qty"]) == held.get(p["symbol"], D(0)), (venue, p["symbol"])
        if Venue(venue).market == "spot":
            assert D(s["cash"]) == D(10_000) + flows, venue


def test_embedded_default_loops_twice_clean_trades_and_keeps_a_consistent_ledger(tmp_path: Path) -> None:
    # Arrange: the shipped config, keys in the environment (paper mode must never use or show them)
    cfg = _config(tmp_path / "cfg")
    other = tmp_path / "elsewhere"
    other.mkdir()
    env = {f"BOT_{v}_{k}": val for v in ("BINANCE", "BYBIT_LINEAR")
           for k, val in (("API_KEY", KEY), ("API_SECRET", SECRET))}
    # Act: speed 16 plays the longest demo session (Binance spot, 346 s) in 22 s: 55 s is two loops and more
    rc, out, err, status = _run(cfg, other, duration=55, speed=16, env=env)
    # Assert: clean
    assert rc == 0, err[-3000:]
    assert "Traceback" not in out + err
    assert all(c["reconnects"] == 0 for c in status["connections"]), status["connections"]
    assert all(b["state"] == "live" for b in status["books"]), status["books"]
    wraps = {k: v["loop_wraps"] for k, v in status["sim"].items()}
    assert all(n >= 2 for n in wraps.values()), wraps
    assert all(v.get("signed_requests", 0) == 0 for v in status["sim"].values())
    # every shipped model published, orders were placed and filled
    conn = _db(cfg)
    models = {r[0] for r in conn.execute("SELECT DISTINCT model FROM signals")}
    assert models == SHIPPED_MODELS
    assert _count(conn, "SELECT COUNT(*) FROM orders") > 0
    assert _count(conn, "SELECT COUNT(*) FROM fills") > 0
    assert _count(conn, "SELECT COUNT(*) FROM orders WHERE status IN ('new', 'accepted', 'partially_filled')") == 0
    _check_ledger(conn)
    conn.close()
    # the keys appear nowhere: not in the output, the log or the state database
    blob = out + err + (cfg.parent / "out" / "state.sqlite").read_bytes().decode("latin-1")
    assert KEY not in blob
    assert SECRET not in blob
    assert not (other / "out").exists()  # nothing written relative to the working directory


def test_halt_holds_across_a_restart_and_resume_trades_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    assert bot_main(["--config", str(cfg), "halt"]) == 0  # the bot is not running: applies at its start
    rc, _, err, status = _run(cfg, tmp_path, duration=15, speed=4)
    assert rc == 0, err[-3000:]
    conn = _db(cfg)
    assert _count(conn, "SELECT COUNT(*) FROM orders") == 0
    assert _count(conn, "SELECT COUNT(*) FROM denials WHERE reason = 'halted'") > 0
    assert status["trading"]["state"] == "halted"
    conn.close()
    assert bot_main(["--config", str(cfg), "resume"]) == 0
    rc, _, err, status = _run(cfg, tmp_path, duration=15, speed=4)
    assert rc == 0, err[-3000:]
    conn = _db(cfg)
    assert _count(conn, "SELECT COUNT(*) FROM orders") > 0
    assert _count(conn, "SELECT COUNT(*) FROM fills") > 0
    _check_ledger(conn)
    conn.close()
    capsys.readouterr()
    assert bot_main(["--config", str(cfg), "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["orders"] > 0


class Watch:
    """Every book's health as the bus says it, and every order's birth checked against it."""

    def __init__(self, bus: EventBus) -> None:
        self.state: dict[tuple[Venue, str], BookState] = {}
        self.resyncs = 0
        self.orders = 0
        self.on_unhealthy_book: list[tuple[str, str, str]] = []
        self.denied: dict[str, int] = {}
        bus.subscribe(BookHealth, self.on_health)
        bus.subscribe(OrderUpdate, self.on_order)
        bus.subscribe(OrderDenied, self.on_denied)

    def on_health(self, ev: BookHealth) -> None:
        self.state[(ev.venue, ev.symbol)] = ev.state
        self.resyncs += ev.state is BookState.RESYNCING

    def on_order(self, o: OrderUpdate) -> None:
        if o.status is OrderStatus.NEW:
            self.orders += 1
            st = self.state.get((o.venue, o.symbol))
            if st is not BookState.LIVE:
                self.on_unhealthy_book.append((o.venue.value, o.symbol, str(st)))

    def on_denied(self, d: OrderDenied) -> None:
        self.denied[d.reason] = self.denied.get(d.reason, 0) + 1


async def _session(tmp_path: Path, extra: str, duration: float, speed: float) -> Watch:
    settings = load_settings(_config(tmp_path, extra))
    bus = EventBus()
    watch = Watch(bus)
    await run_bot(settings, sim=True, speed=speed, duration=duration, status_every=3600, bus=bus)
    return watch


async def test_no_order_is_sent_on_a_book_that_is_resyncing_under_the_sims_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # drops and reorders break the diff chains: books resync again and again while strategies trade
    monkeypatch.setenv("BOT_SIM__FAULTS", "drop=0.01,reorder=0.005")
    monkeypatch.setenv("BOT_SIM__SEED", "3")
    watch = await _session(tmp_path, "", duration=30, speed=4)
    assert watch.resyncs > 0
    assert watch.orders > 0
    assert watch.on_unhealthy_book == []


async def test_no_order_is_sent_from_a_stale_signal(tmp_path: Path) -> None:
    # every signal is older than 1 us by the time its intent reaches the gate: all of them are refused
    watch = await _session(tmp_path, "[risk]\nmax_signal_age_s = 0.000001\n", duration=20, speed=4)
    assert watch.denied.get("stale_signal", 0) > 0
    assert watch.orders == 0


async def test_nothing_is_sent_while_halted_by_the_operator_in_another_terminal(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    bus = EventBus()
    watch = Watch(bus)
    run = asyncio.create_task(run_bot(settings, sim=True, speed=4, duration=20, status_every=3600, bus=bus))
    await asyncio.sleep(9)
    before = watch.orders
    assert await asyncio.to_thread(bot_main, ["--config", str(tmp_path / "config.toml"), "halt"]) == 0
    await asyncio.sleep(1.5)  # the running bot polls the state database every 0.5 s
    halted_at = watch.orders
    await run
    assert before > 0
    assert watch.orders == halted_at
    assert watch.denied.get("halted", 0) > 0


MAKER = """
[[strategies]]
name = "maker_spot_btc"
kind = "threshold"
model = "tabl_binance-spot-btcusdt_h10"
venue = "binance_spot"
symbols = ["BTCUSDT"]
threshold = 0.34
notional = 100
order_type = "limit"
limit_offset_bps = 3
post_only = true
limit_timeout_s = 600
"""


def test_kill_9_with_orders_resting_then_restart_orphans_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    # Arrange: a maker strategy whose post-only orders rest 3 bps behind the touch
    cfg = _config(tmp_path, MAKER)
    db = cfg.parent / "out" / "state.sqlite"
    cmd = [sys.executable, "-m", "bot", "--config", str(cfg), "run", "--paper", "--sim", "--duration", "150",
           "--status-every", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
    resting: list[str] = []
    try:
        # Act: kill -9 as soon as a limit order rests (and was written)
        deadline = 120.0
        while deadline > 0 and not resting:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            if db.exists():
                with contextlib.closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
                    resting = [r[0] for r in conn.execute(
                            "SELECT client_order_id FROM orders WHERE status = 'accepted' AND order_type = 'limit'")]
            time.sleep(0.25)
            deadline -= 0.25
        assert resting, "no limit order rested within 120 s"
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(timeout=30)
        log.close()
    with contextlib.closing(_db(cfg)) as conn:
        before_ids = {r[0] for r in conn.execute("SELECT client_order_id FROM orders")}
        before_fills = _count(conn, "SELECT COUNT(*) FROM fills")
    # restart: the ledger and the resting orders come back; at the end the bot cancels what is open
    rc, _, err, _ = _run(cfg, tmp_path, duration=20, speed=1)
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    ready = [json.loads(line) for line in err.splitlines() if '"paper_trading_ready"' in line]
    assert ready
    assert ready[0]["restored_open_orders"] >= len(resting)
    assert ready[0]["restored_fills"] == before_fills
    with contextlib.closing(_db(cfg)) as conn:
        # nothing orphaned: every order resting at the kill ended (filled or cancelled), none is left open
        for cid in resting:
            (st,) = conn.execute("SELECT status FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
            assert st in ("filled", "cancelled"), (cid, st)
        assert _count(conn, "SELECT COUNT(*) FROM orders WHERE status IN ('new', 'accepted', 'partially_filled')") == 0
        # nothing doubled: one NEW per order, ids never reused, each order's fills add up to its filled qty
        news = conn.execute("SELECT client_order_id, COUNT(*) FROM order_events WHERE status = 'new' "
                            "GROUP BY client_order_id").fetchall()
        assert all(n == 1 for _, n in news)
        after_ids = {r[0] for r in conn.execute("SELECT client_order_id FROM orders")}
        assert before_ids <= after_ids
        for cid, filled in conn.execute("SELECT client_order_id, filled_qty FROM orders"):
            qty = sum((D(q) for (q,) in conn.execute("SELECT qty FROM fills WHERE client_order_id = ?", (cid,))), D(0))
            assert qty == D(filled), cid
        _check_ledger(conn)


async def test_a_failed_write_to_the_state_database_halts_trading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the disk fails from the 4th batch on (a write error, as when the disk is full)
    import sqlite3 as sq

    from bot.orders import RiskStateChanged, TradingState
    from bot.state import StateStore

    real_write = StateStore._write
    calls = {"n": 0}

    async def failing_write(self: StateStore, batch: Any, rows: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise sq.OperationalError("disk I/O error")
        await real_write(self, batch, rows)

    monkeypatch.setattr(StateStore, "_write", failing_write)
    settings = load_settings(_config(tmp_path))
    bus = EventBus()
    watch = Watch(bus)
    halted_after: list[int] = []

    def on_state(ev: RiskStateChanged) -> None:
        if ev.state is TradingState.HALTED and "state_db_write_failed" in ev.detail:
            halted_after.append(watch.orders)

    bus.subscribe(RiskStateChanged, on_state)
    # Act
    status = await run_bot(settings, sim=True, speed=4, duration=20, status_every=3600, bus=bus)
    # Assert: halted at the first failure, and not one order after it
    assert halted_after, "trading was not halted"
    assert watch.orders == halted_after[0]
    assert status["trading"]["state"] == "halted"
