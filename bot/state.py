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

This module is the writer (queue, batches, transactions, retries, the operator's control rows). Beside it:
``bot.state_schema``, the file's format (tables, version, the checks that a file is ours); ``bot.state_rows``,
the events as rows and the rows read back as ``PersistedState``; ``bot.state_lock``, the single-writer lock
(``open()`` takes it: a second bot on the same file is refused, it would reuse client order ids) and live
trading's own file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from bot.bus import EventBus
from bot.config import StateConfig
from bot.errors import ConfigError
from bot.events import Event
from bot.orders import (
    EquitySnapshot,
    Fill,
    OrderDenied,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TradingState,
)
from bot.state_lock import take_lock
from bot.state_rows import EquityTracker, PersistedState, Rows, batch_rows, load
from bot.state_schema import BUSY_TIMEOUT_S, CONTROL_STATES, SCHEMA, TABLES_SQL, check_own, check_version

log = structlog.get_logger(__name__)

RETRY_S = 0.5  # a failed batch is retried this often
BATCH_MAX = 5000


@dataclass(frozen=True)
class ControlAction:
    """An operator request: ``action`` is ``halt``, ``reduce`` or ``resume``; ``state`` what it latches."""

    id: int
    action: str
    state: TradingState
    reason: str
    ts_ns: int  # when the operator asked (wall clock of the CLI)


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
        self._equity = EquityTracker()
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
            self._lock_fd = take_lock(self.path)
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
            state, self._equity = await load(db)
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
                await self._write(batch, batch_rows(batch, self._equity))
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
        rows = batch_rows(batch, self._equity)  # built once: the equity tracker is updated once per event
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

    async def _write(self, batch: list[Event], rows: Rows) -> None:
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
