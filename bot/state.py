"""The state database: the order path's ledger in one SQLite file, so a restarted session resumes it.

    bus ──OrderUpdate, Fill, OrderDenied, RiskStateChanged, StrategyHealth, EquitySnapshot──►
        StateStore.on_event (loop thread, O(1): append) ──► run(): every pass takes what is queued and
        writes it in ONE transaction (aiosqlite, WAL, synchronous=FULL)

Why one transaction per batch, in publish order: the database is then always a consistent prefix of the
event stream. A kill -9 loses at most the batch being written, never half of one, and an order's
``OrderUpdate(NEW)`` is never missing while one of its fills is present (they are published in that order).
A restart reads back (``open()`` -> ``PersistedState``) the last update of every open order, every fill in
order (the ledger and the strategies' positions are rebuilt by replaying them), the latched trading state
and the next client order sequence number. Writes replayed after a restart do not double anything: fills
are unique per (venue, symbol, trade_id), order history rows per (order, ts_event, status, filled qty),
equity snapshots per (venue, ts_event), orders are upserted (a closed order never reopens).

Nothing is ever dropped: a gap in the middle would break the prefix property. The queue's bound
(``StateConfig.queue_size``) is a tripwire: passing it is a failure (``on_failure``, the engine halts
trading) but the event is kept. A write error (disk full, a lock held past ``BUSY_TIMEOUT_S``, a damaged
file) calls ``on_failure(exc)`` once per incident (until a write succeeds again), is logged without a
traceback, and the batch is retried every ``RETRY_S``: events keep queueing, in order, meanwhile.

Operator requests (``python -m bot halt|resume``, ``bot.state_cli``) arrive as rows in ``control``; the
engine calls ``poll_control()`` every 0.5 s. The CLI also writes the latched state (``risk_latch``) itself,
so it holds across restarts; while a request is pending the writer leaves the latch to it.

One writer per database: ``open()`` takes an OS lock (flock) on ``<db>.lock`` and a second bot on the same
file is refused (it would reuse client order ids); the lock dies with its process, kill -9 included, and
tells the CLI whether a bot is running.

The file is shared with the signal log (``bot.signal_log``: table ``signals`` and its ``ix_signals_*``
indexes); no name here clashes with those. Decimals are stored as TEXT (exact); every event is also kept
whole as msgspec JSON in ``event`` (restored from that, exactly).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
import structlog

from bot.bus import EventBus
from bot.config import StateConfig
from bot.errors import ConfigError
from bot.events import Event, Venue
from bot.orders import (
    EquitySnapshot,
    Fill,
    OrderDenied,
    OrderStatus,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TradingState,
)

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0  # a lock held longer than this (another writer, a reader's checkpoint) is a write failure
RETRY_S = 0.5  # a failed batch is retried this often
BATCH_MAX = 5000
NS_PER_DAY = 86_400_000_000_000
OPEN_STATUSES = tuple(s.value for s in OrderStatus if s.is_open)
# RiskStateChanged reasons of the risk gate's live alarms (bot.risk): they clear by themselves, not latched.
TRANSIENT_REASONS = frozenset({"book_resyncing", "crossed_burst", "clock_skew"})
# The gate's operator changes (reason "operator") say which in ``detail``: the effective state after a
# resume can still be REDUCING (alarms on) while the latched one is ACTIVE.
_OPERATOR_DETAIL = (("halt", TradingState.HALTED), ("reduce", TradingState.REDUCING), ("resume", TradingState.ACTIVE))
CONTROL_STATES = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS orders (          -- the latest state of every order
    client_order_id TEXT PRIMARY KEY, seq INTEGER, strategy TEXT NOT NULL, venue TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, order_type TEXT NOT NULL, tif TEXT NOT NULL, qty TEXT NOT NULL,
    price TEXT, status TEXT NOT NULL, filled_qty TEXT NOT NULL, avg_price TEXT, reduce_only INTEGER NOT NULL,
    reason TEXT NOT NULL, venue_order_id TEXT NOT NULL, ts_created INTEGER NOT NULL, ts_updated INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_orders_status ON orders (status);
CREATE TABLE IF NOT EXISTS order_events (    -- every OrderUpdate, in order
    id INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL, ts_event INTEGER NOT NULL, ts_recv INTEGER NOT NULL,
    status TEXT NOT NULL, filled_qty TEXT NOT NULL, event TEXT NOT NULL,
    UNIQUE (client_order_id, ts_event, status, filled_qty)
);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY, trade_id TEXT NOT NULL, client_order_id TEXT NOT NULL, strategy TEXT NOT NULL,
    venue TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL,
    fee TEXT NOT NULL, fee_asset TEXT NOT NULL, liquidity TEXT NOT NULL, ts_event INTEGER NOT NULL,
    ts_recv INTEGER NOT NULL, event TEXT NOT NULL, UNIQUE (venue, symbol, trade_id)
);
CREATE INDEX IF NOT EXISTS ix_fills_order ON fills (client_order_id);
CREATE TABLE IF NOT EXISTS denials (
    id INTEGER PRIMARY KEY, ts_event INTEGER NOT NULL, ts_recv INTEGER NOT NULL, strategy TEXT NOT NULL,
    venue TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT, qty TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_denials_reason ON denials (reason);
CREATE TABLE IF NOT EXISTS risk_states (     -- every RiskStateChanged (the effective state)
    id INTEGER PRIMARY KEY, ts_event INTEGER NOT NULL, ts_recv INTEGER NOT NULL, previous TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS risk_latch (      -- the latched state a restart starts from (one row)
    id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, reason TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    source TEXT NOT NULL
);
INSERT OR IGNORE INTO risk_latch (id, state, reason, ts_ns, source) VALUES (1, 'active', '', 0, 'default');
CREATE TABLE IF NOT EXISTS strategy_health (
    id INTEGER PRIMARY KEY, ts_event INTEGER NOT NULL, ts_recv INTEGER NOT NULL, strategy TEXT NOT NULL,
    enabled INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_strategy_health ON strategy_health (strategy, id);
CREATE TABLE IF NOT EXISTS equity (          -- every EquitySnapshot, positions as JSON
    id INTEGER PRIMARY KEY, ts_event INTEGER NOT NULL, ts_recv INTEGER NOT NULL, venue TEXT NOT NULL,
    quote TEXT NOT NULL, cash TEXT NOT NULL, equity TEXT NOT NULL, fees TEXT NOT NULL, funding TEXT NOT NULL,
    positions TEXT NOT NULL, event TEXT NOT NULL, UNIQUE (venue, ts_event)
);
CREATE INDEX IF NOT EXISTS ix_equity_venue ON equity (venue, id);
CREATE TABLE IF NOT EXISTS positions (       -- the latest snapshot's positions per venue account
    venue TEXT NOT NULL, symbol TEXT NOT NULL, qty TEXT NOT NULL, avg_price TEXT NOT NULL,
    realized_pnl TEXT NOT NULL, mark TEXT, unrealized_pnl TEXT NOT NULL, ts_event INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol)
);
CREATE TABLE IF NOT EXISTS control (         -- operator requests (python -m bot halt|resume)
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_control_pending ON control (applied, id);
"""

_SEQ = re.compile(r"(\d+)$")
_enc = msgspec.json.Encoder()
_dec_order = msgspec.json.Decoder(OrderUpdate)
_dec_fill = msgspec.json.Decoder(Fill)
_dec_equity = msgspec.json.Decoder(EquitySnapshot)


def order_seq(client_order_id: str) -> int | None:
    """The sequence number a client order id ends with (``paper-000042`` -> 42), if any."""
    m = _SEQ.search(client_order_id)
    return int(m.group(1)) if m else None


def latched_state(ev: RiskStateChanged) -> TradingState | None:
    """The latched state a change leaves (None: a live alarm, the latch is unchanged). Kill switches latch
    HALTED, the worst state, so their effective state is the latched one."""
    if ev.reason in TRANSIENT_REASONS:
        return None
    if ev.reason == "operator":
        for prefix, state in _OPERATOR_DETAIL:
            if ev.detail.startswith(prefix):
                return state
    return ev.state


def _dec(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def check_version(row: Any, path: Path) -> None:
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise ConfigError(f"state database {path} has schema version {row[0]}; this build knows {SCHEMA_VERSION}")


# the tables this bot writes into the state database: the schema's and the signal log's (bot.signal_log)
OWN_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)) | {"signals"}
TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


def check_own(tables: Iterable[str], path: Path) -> None:
    """ConfigError when ``path`` holds tables of something else: it is not this bot's database, and
    writing our schema into it would damage another program's file."""
    foreign = sorted(set(tables) - OWN_TABLES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(f"{path} is not this bot's state database (it holds other tables: {shown}); "
                          "point [state] db (or --db) at the bot's own file")


def live_db(db: Path, sim: bool = False) -> Path:
    """Live trading's own state database: where ``db`` is the default ``state.sqlite`` (paper's),
    ``live.sqlite`` beside it (``live-sim.sqlite`` under ``--sim``); a database named otherwise is used
    as it is."""
    return db if db.name != "state.sqlite" else db.with_name("live-sim.sqlite" if sim else "live.sqlite")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def writer_pid(db: Path) -> int | None:
    """The pid of the process holding ``db``'s writer lock (a running bot), or None. The lock is the OS's
    (flock): it goes with the process, so a kill -9 never leaves a stale one."""
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _take_lock(db: Path) -> int:
    """One writer per database: two bots on one ledger would reuse client order ids and drop each other's
    fills as duplicates."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"state database {db} is in use by another running bot (pid {text or '?'}); "
                          "stop it or give this one another [state] db") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


@dataclass(frozen=True)
class ControlAction:
    """An operator request: ``action`` is ``halt``, ``reduce`` or ``resume``; ``state`` what it latches."""

    id: int
    action: str
    state: TradingState
    reason: str
    ts_ns: int  # when the operator asked (wall clock of the CLI)


@dataclass(frozen=True)
class PersistedState:
    """What a restart resumes from."""

    orders: list[OrderUpdate]  # the last update of every order still open
    fills: list[Fill]  # every fill, in the order it happened
    trading_state: TradingState  # latched (operator halt/reduce, kill switch)
    trading_reason: str
    trading_since_ns: int
    next_order_seq: int  # 1 + the highest number an order id ends with (none: 1 + the number of orders)
    equity: dict[Venue, EquitySnapshot]  # the last snapshot of every venue account
    peak_equity: Decimal | None  # highest total equity (all accounts) ever snapshotted
    day_start_equity: Decimal | None  # first total equity of the UTC day of the last snapshot
    day_start_ns: int | None  # 00:00 UTC of that day
    stopped_strategies: dict[str, str] = field(default_factory=dict)  # strategy -> reason, as last persisted
    counts: dict[str, int] = field(default_factory=dict)  # orders, open_orders, fills, denials, ...


@dataclass
class _Equity:
    """Peak and day-start of the TOTAL equity. Snapshots with the same ts_event are one tick (the engine
    snapshots every account at once); a tick's total (latest snapshot of each account) counts once the
    next tick starts, so a tick half-seen never sets a day's start."""

    latest: dict[Venue, EquitySnapshot] = field(default_factory=dict)
    tick_ts: int | None = None
    peak: Decimal | None = None
    day: int | None = None
    day_start: Decimal | None = None

    def add(self, snap: EquitySnapshot) -> bool:
        changed = False
        if self.tick_ts is not None and snap.ts_event != self.tick_ts:
            changed = self.close_tick()
        self.latest[snap.venue] = snap
        self.tick_ts = snap.ts_event
        return changed

    def close_tick(self) -> bool:
        if self.tick_ts is None or not self.latest:
            return False
        total = sum((s.equity for s in self.latest.values()), Decimal(0))
        if self.peak is None or total > self.peak:
            self.peak = total
        day = self.tick_ts // NS_PER_DAY
        if self.day != day:
            self.day, self.day_start = day, total
        return True

    def meta_rows(self) -> list[tuple[str, str]]:
        rows = []
        if self.peak is not None:
            rows.append(("peak_equity", str(self.peak)))
        if self.day is not None and self.day_start is not None:
            rows += [("day", str(self.day)), ("day_start_equity", str(self.day_start))]
        return rows


_Rows = list[tuple[str, list[tuple[Any, ...]]]]


class StateStore:
    """Persist the order path's events; ``open()`` first, then ``attach`` and run ``run()`` as a task."""

    def __init__(self, cfg: StateConfig, on_failure: Callable[[Exception], None], *, batch_max: int = BATCH_MAX):
        self.cfg = cfg
        self.path = Path(cfg.db)
        self.on_failure = on_failure
        self.batch_max = batch_max
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self._equity = _Equity()
        self._failing = False  # a write incident is going on
        self._overflowing = False
        self._stopping = False  # run() was cancelled: a failing batch is not retried forever
        self._stats = {"received": 0, "written": 0, "batches": 0, "failures": 0, "overflows": 0, "retries": 0,
                       "control_errors": 0}

    # -- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> PersistedState:
        """Create the file and schema (WAL) if needed and read back what a restart resumes from."""
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"state database {self.path} is not a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _take_lock(self.path)
            db = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except (sqlite3.Error, OSError) as e:
            self._release()
            raise ConfigError(f"cannot open state database {self.path}: {e}") from None
        try:
            check_own((r[0] for r in await db.execute_fetchall(TABLES_SQL)), self.path)  # before any write
            mode = await db.execute_fetchall("PRAGMA journal_mode=WAL")
            if str(next(iter(mode))[0]).lower() != "wal":
                raise ConfigError(f"state database {self.path}: WAL journal mode refused")
            await db.execute("PRAGMA synchronous=FULL")  # a committed batch survives power loss too
            await db.executescript(SCHEMA)
            await db.commit()
            check_version(next(iter(await db.execute_fetchall(
                "SELECT value FROM meta WHERE key = 'schema_version'")), None), self.path)
            state = await self._load(db)
        except (sqlite3.Error, OSError, ConfigError) as e:
            await db.close()
            self._release()
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"cannot open state database {self.path}: {e}") from None
        self._db = db
        log.info("state_opened", db=str(self.path), open_orders=len(state.orders), fills=len(state.fills),
                 trading_state=state.trading_state.value, next_order_seq=state.next_order_seq)
        return state

    def attach(self, bus: EventBus) -> None:
        for t in (OrderUpdate, Fill, OrderDenied, RiskStateChanged, StrategyHealth, EquitySnapshot):
            bus.subscribe(t, self.on_event)

    def on_event(self, ev: Event) -> None:
        """Bus handler (loop thread): append, never block, never drop; past the bound is a failure."""
        self._stats["received"] += 1
        self._queue.append(ev)
        self._idle.clear()
        self._ready.set()
        if len(self._queue) > self.cfg.queue_size and not self._overflowing:
            self._overflowing = True
            self._stats["overflows"] += 1
            exc = RuntimeError(f"state write queue passed {self.cfg.queue_size} events (the disk is not keeping up)")
            log.error("state_queue_overflow", queued=len(self._queue), queue_size=self.cfg.queue_size)
            self._notify(exc)

    async def run(self) -> None:
        """Write batches until cancelled; on cancellation, write what is still queued (one try), then stop."""
        if self._db is None:
            raise RuntimeError("StateStore.open() must be awaited before run()")
        inflight: asyncio.Task[None] | None = None
        try:
            while True:
                if not self._queue:
                    self._idle.set()
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                inflight = asyncio.ensure_future(self._write_until_done(self._take()))
                await asyncio.shield(inflight)
                inflight = None
        except asyncio.CancelledError:
            # The batch in flight finishes by itself (never re-written, never half-written); a failing one
            # tries once more and then goes back to the queue for the last flush.
            self._stopping = True
            if inflight is not None:
                with contextlib.suppress(sqlite3.Error, OSError):
                    await inflight
            await self._flush()
            raise
        finally:
            self._idle.set()

    async def _flush(self) -> None:
        while self._queue:
            batch = self._take()
            try:
                await self._write(batch, self._rows(batch))
            except (sqlite3.Error, OSError) as e:
                lost = len(batch) + len(self._queue)
                self._queue.clear()
                log.error("state_flush_failed", error=f"{type(e).__name__}: {e}", unwritten=lost)
                self._notify(e)
                return

    async def close(self) -> None:
        if self._db is None:
            return
        await self._db.close()
        self._db = None
        self._release()
        log.info("state_closed", **self.stats())

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file releases the flock
            self._lock_fd = None

    async def wait_idle(self) -> None:
        """Return once everything received so far is committed (tests, shutdown)."""
        await self._idle.wait()

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "queued": len(self._queue)}

    # -- operator control --------------------------------------------------------------------------------

    async def poll_control(self) -> list[ControlAction]:
        """Operator requests not yet applied, oldest first; they are marked applied (returned once)."""
        if self._db is None:
            return []
        async with self._lock:
            try:
                rows = await self._db.execute_fetchall(
                    "SELECT id, ts_ns, action, reason FROM control WHERE applied = 0 ORDER BY id")
                out = [ControlAction(int(i), str(a), CONTROL_STATES[str(a)], str(r), int(t))
                       for i, t, a, r in rows if str(a) in CONTROL_STATES]
                if rows:
                    await self._db.execute("UPDATE control SET applied = 1 WHERE applied = 0 AND id <= ?",
                                           (max(int(r[0]) for r in rows),))
                    await self._db.commit()
            except (sqlite3.Error, OSError) as e:  # the writer reports the incident; the poll just tries again
                with contextlib.suppress(sqlite3.Error):
                    await self._db.rollback()
                self._stats["control_errors"] += 1
                if self._stats["control_errors"] == 1:
                    log.warning("state_control_poll_failed", error=f"{type(e).__name__}: {e}")
                return []
        for a in out:
            log.info("operator_control", action=a.action, reason=a.reason, control_id=a.id)
        return out

    # -- session facts ------------------------------------------------------------------------------------

    async def meta(self, prefix: str) -> dict[str, str]:
        """The ``meta`` rows whose key starts with ``prefix`` (the session's mode, live starting balances)."""
        if self._db is None:
            raise RuntimeError("StateStore.open() must be awaited first")
        async with self._lock:
            rows = await self._db.execute_fetchall("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                                               (len(prefix), prefix))
        return {str(k): str(v) for k, v in rows}

    async def set_meta(self, rows: dict[str, str]) -> None:
        """Write ``rows`` into ``meta`` at once (committed before this returns)."""
        if self._db is None:
            raise RuntimeError("StateStore.open() must be awaited first")
        async with self._lock:
            await self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(rows.items()))
            await self._db.commit()

    # -- writing -----------------------------------------------------------------------------------------

    def _take(self) -> list[Event]:
        n = min(self.batch_max, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def _write_until_done(self, batch: list[Event]) -> None:
        rows = self._rows(batch)  # built once: the equity tracker is updated once per event
        while True:
            try:
                await self._write(batch, rows)
            except (sqlite3.Error, OSError) as e:
                self._stats["retries"] += 1
                if not self._failing:
                    self._failing = True
                    self._stats["failures"] += 1
                    log.error("state_write_failed", error=f"{type(e).__name__}: {e}", batch=len(batch),
                              queued=len(self._queue))
                    self._notify(e)
                if self._stopping:
                    self._queue.extendleft(reversed(batch))
                    raise
                await asyncio.sleep(RETRY_S)
                continue
            if self._failing:
                self._failing = False
                log.warning("state_write_recovered", retries=self._stats["retries"])
            return

    def _notify(self, exc: Exception) -> None:
        try:
            self.on_failure(exc)
        except Exception as e:  # the halt callback must not kill the writer
            log.error("state_on_failure_raised", error=f"{type(e).__name__}: {e}")

    async def _write(self, batch: list[Event], rows: _Rows) -> None:
        assert self._db is not None
        async with self._lock:
            try:
                for sql, params in rows:
                    if params:
                        await self._db.executemany(sql, params)
                await self._db.commit()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.rollback()
                raise
        self._stats["written"] += len(batch)
        self._stats["batches"] += 1
        if self._overflowing and len(self._queue) <= self.cfg.queue_size:
            self._overflowing = False
        if not self._queue:
            self._idle.set()

    def _rows(self, batch: Iterable[Event]) -> _Rows:
        """The batch as (statement, parameter rows) pairs; each statement keeps publish order."""
        orders: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        fills: list[tuple[Any, ...]] = []
        denials: list[tuple[Any, ...]] = []
        risk: list[tuple[Any, ...]] = []
        health: list[tuple[Any, ...]] = []
        equity: list[tuple[Any, ...]] = []
        latch: tuple[TradingState, str, int] | None = None
        last_snap: dict[Venue, EquitySnapshot] = {}
        meta_changed = False
        for ev in batch:
            if isinstance(ev, OrderUpdate):
                e = _enc.encode(ev).decode()
                orders.append((ev.client_order_id, order_seq(ev.client_order_id), ev.strategy, ev.venue.value,
                               ev.symbol, ev.side.value, ev.order_type.value, ev.tif.value, str(ev.qty),
                               _dec(ev.price), ev.status.value, str(ev.filled_qty), _dec(ev.avg_price),
                               int(ev.reduce_only), ev.reason, ev.venue_order_id, ev.ts_event, ev.ts_event, e))
                history.append((ev.client_order_id, ev.ts_event, ev.ts_recv, ev.status.value, str(ev.filled_qty), e))
            elif isinstance(ev, Fill):
                fills.append((ev.trade_id, ev.client_order_id, ev.strategy, ev.venue.value, ev.symbol, ev.side.value,
                              str(ev.qty), str(ev.price), str(ev.fee), ev.fee_asset, ev.liquidity.value, ev.ts_event,
                              ev.ts_recv, _enc.encode(ev).decode()))
            elif isinstance(ev, OrderDenied):
                denials.append((ev.ts_event, ev.ts_recv, ev.strategy, ev.venue.value, ev.symbol,
                                ev.side.value if ev.side else None, str(ev.qty), ev.reason, ev.detail))
            elif isinstance(ev, RiskStateChanged):
                risk.append((ev.ts_event, ev.ts_recv, ev.previous.value, ev.state.value, ev.reason, ev.detail))
                latched = latched_state(ev)
                if latched is not None:
                    latch = (latched, ev.reason, ev.ts_event)
            elif isinstance(ev, StrategyHealth):
                health.append((ev.ts_event, ev.ts_recv, ev.strategy, int(ev.enabled), ev.reason, ev.detail))
            elif isinstance(ev, EquitySnapshot):
                equity.append((ev.ts_event, ev.ts_recv, ev.venue.value, ev.quote, str(ev.cash), str(ev.equity),
                               str(ev.fees), str(ev.funding), _enc.encode(ev.positions).decode(),
                               _enc.encode(ev).decode()))
                last_snap[ev.venue] = ev
                meta_changed |= self._equity.add(ev)
        positions_del = [(v.value,) for v in last_snap]
        positions = [(s.venue.value, p.symbol, str(p.qty), str(p.avg_price), str(p.realized_pnl), _dec(p.mark),
                      str(p.unrealized_pnl), s.ts_event) for s in last_snap.values() for p in s.positions]
        # who latched it: the operator's request as the gate applied it, or one of the gate's own switches
        latch_rows = [] if latch is None else [
            (latch[0].value, latch[1], latch[2], "operator" if latch[1] == "operator" else "risk_gate")]
        return [
            (_UPSERT_ORDER, orders),
            ("INSERT OR IGNORE INTO order_events (client_order_id, ts_event, ts_recv, status, filled_qty, event) "
             "VALUES (?, ?, ?, ?, ?, ?)", history),
            ("INSERT OR IGNORE INTO fills (trade_id, client_order_id, strategy, venue, symbol, side, qty, price, fee, "
             "fee_asset, liquidity, ts_event, ts_recv, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             fills),
            ("INSERT INTO denials (ts_event, ts_recv, strategy, venue, symbol, side, qty, reason, detail) "
             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", denials),
            ("INSERT INTO risk_states (ts_event, ts_recv, previous, state, reason, detail) VALUES (?, ?, ?, ?, ?, ?)",
             risk),
            ("UPDATE risk_latch SET state = ?, reason = ?, ts_ns = ?, source = ? WHERE id = 1 "
             "AND NOT EXISTS (SELECT 1 FROM control WHERE applied = 0)", latch_rows),
            ("INSERT INTO strategy_health (ts_event, ts_recv, strategy, enabled, reason, detail) "
             "VALUES (?, ?, ?, ?, ?, ?)", health),
            ("INSERT OR IGNORE INTO equity (ts_event, ts_recv, venue, quote, cash, equity, fees, funding, positions, "
             "event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", equity),
            ("DELETE FROM positions WHERE venue = ?", positions_del),
            ("INSERT INTO positions (venue, symbol, qty, avg_price, realized_pnl, mark, unrealized_pnl, ts_event) "
             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", positions),
            ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
             self._equity.meta_rows() if meta_changed else []),
        ]

    # -- reading back ------------------------------------------------------------------------------------

    async def _load(self, db: aiosqlite.Connection) -> PersistedState:
        async def rows(sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
            return list(await db.execute_fetchall(sql, args))

        marks = ",".join("?" * len(OPEN_STATUSES))
        orders = [_dec_order.decode(r[0]) for r in await rows(
            f"SELECT event FROM orders WHERE status IN ({marks}) ORDER BY ts_created, rowid", OPEN_STATUSES)]
        fills = [_dec_fill.decode(r[0]) for r in await rows("SELECT event FROM fills ORDER BY id")]
        state, reason, since = (await rows("SELECT state, reason, ts_ns FROM risk_latch WHERE id = 1"))[0]
        max_seq, n_orders = (await rows("SELECT MAX(seq), COUNT(*) FROM orders"))[0]
        latest = {}
        for (e,) in await rows("SELECT event FROM equity WHERE id IN (SELECT MAX(id) FROM equity GROUP BY venue)"):
            snap = _dec_equity.decode(e)
            latest[snap.venue] = snap
        meta = dict(await rows("SELECT key, value FROM meta"))
        eq = _Equity(latest=dict(latest), tick_ts=max((s.ts_event for s in latest.values()), default=None),
                     peak=Decimal(meta["peak_equity"]) if "peak_equity" in meta else None,
                     day=int(meta["day"]) if "day" in meta else None,
                     day_start=Decimal(meta["day_start_equity"]) if "day_start_equity" in meta else None)
        self._equity = _Equity(latest=dict(eq.latest), tick_ts=eq.tick_ts, peak=eq.peak, day=eq.day,
                               day_start=eq.day_start)
        eq.close_tick()  # the last tick, not yet folded in (the writer folds it when the next tick starts)
        stopped = {str(s): str(r) for s, en, r in await rows(
            "SELECT strategy, enabled, reason FROM strategy_health WHERE id IN "
            "(SELECT MAX(id) FROM strategy_health GROUP BY strategy)") if not en}
        counts = {t: int((await rows(f"SELECT COUNT(*) FROM {t}"))[0][0])  # fixed names
                  for t in ("orders", "fills", "denials", "risk_states", "equity")}
        counts["open_orders"] = len(orders)
        return PersistedState(
            orders=orders, fills=fills, trading_state=TradingState(state), trading_reason=str(reason),
            trading_since_ns=int(since), equity=latest,
            next_order_seq=(int(n_orders) if max_seq is None else int(max_seq)) + 1,
            peak_equity=eq.peak, day_start_equity=eq.day_start,
            day_start_ns=None if eq.day is None else eq.day * NS_PER_DAY, stopped_strategies=stopped, counts=counts,
        )


_UPSERT_ORDER = """
INSERT INTO orders (client_order_id, seq, strategy, venue, symbol, side, order_type, tif, qty, price, status,
                    filled_qty, avg_price, reduce_only, reason, venue_order_id, ts_created, ts_updated, event)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (client_order_id) DO UPDATE SET
    status = excluded.status, filled_qty = excluded.filled_qty, avg_price = excluded.avg_price,
    price = excluded.price, qty = excluded.qty, reason = excluded.reason, venue_order_id = excluded.venue_order_id,
    ts_updated = excluded.ts_updated, event = excluded.event
WHERE orders.status IN ('new', 'accepted', 'partially_filled')  -- a closed order never reopens
"""
