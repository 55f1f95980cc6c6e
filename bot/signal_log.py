"""The signal log: every published ``Signal`` persisted to SQLite and to JSONL files.

    bus ──Signal──► SignalLog.on_signal ──► BoundedQueue (drop_oldest, counted) ──► run(): batch
                     (loop thread, O(1))                                            ├─► SQLite (aiosqlite, WAL)
                                                                                    └─► JSONL (daily / by size)

Overflow policy. Signals must never be lost silently, and a slow disk must never stall the bus. The
consumer is block-free batching: every pass takes everything queued (up to ``batch_max``) and writes it in
one SQLite transaction and one JSONL append, so the writer's throughput grows with the backlog and the
queue only fills when the disk stalls for a long time (10 000 signals at the default: minutes of a stalled
disk at realistic signal rates). If it fills all the same, the OLDEST waiting signal is dropped: consumers
of the log (the live table, a strategy review) care most about what happens now, and by then the oldest
ones are already late. Every drop is counted (``stats()["dropped"]``) and logged as a warning on the first
drop and then every ``WARN_EVERY`` drops, never per signal. A batch that fails to write (disk full) is
logged, counted in ``lost`` and the writer goes on; it does not take the bot down.

SQLite: one table ``signals`` (columns below, the full event as JSON in ``event``), indexed on ``ts_recv``
(publish time, ns), ``(model, ts_recv)`` and ``(symbol, ts_recv)``, journal_mode WAL so readers
(``python -m bot signals --follow``) never block the writer. JSONL: one msgspec-encoded Signal per line, in
``jsonl_dir/signals-YYYY-MM-DD.jsonl`` (UTC day of ``ts_recv``), then ``signals-YYYY-MM-DD.1.jsonl`` ...
whenever a file would pass ``rotate_bytes``. A restart appends to the day's last file.

The read side (``query_signals``, ``format_table_row``) is plain ``sqlite3``: the CLI is synchronous.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiosqlite
import msgspec
import structlog

from bot.bus import BoundedQueue, EventBus
from bot.config import SignalLogConfig
from bot.errors import ConfigError
from bot.events import Signal

log = structlog.get_logger(__name__)

WARN_EVERY = 1000  # after the first drop, one warning per this many more drops
NS_PER_S = 1_000_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY,
    ts_event INTEGER NOT NULL,          -- data time (ns, local receive clock)
    ts_recv INTEGER NOT NULL,           -- publish time (ns)
    model TEXT NOT NULL,
    family TEXT NOT NULL,
    version TEXT NOT NULL,
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    horizon TEXT NOT NULL,
    confidence REAL,
    inference_start_ns INTEGER NOT NULL,
    inference_end_ns INTEGER NOT NULL,
    event TEXT NOT NULL                 -- the whole Signal, msgspec JSON
);
CREATE INDEX IF NOT EXISTS ix_signals_ts_recv ON signals (ts_recv);
CREATE INDEX IF NOT EXISTS ix_signals_model ON signals (model, ts_recv);
CREATE INDEX IF NOT EXISTS ix_signals_symbol ON signals (symbol, ts_recv);
"""

INSERT = """
INSERT INTO signals (ts_event, ts_recv, model, family, version, venue, symbol, horizon, confidence,
                     inference_start_ns, inference_end_ns, event)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Signal)


def utc_day(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS_PER_S, tz=UTC).strftime("%Y-%m-%d")  # integer: no float rounding


class JsonlWriter:
    """Append-only JSONL files, one per UTC day, split into numbered parts at ``rotate_bytes``.

    Blocking file I/O: the SignalLog calls it through ``asyncio.to_thread``.
    """

    def __init__(self, directory: Path, rotate_bytes: int, prefix: str = "signals") -> None:
        if rotate_bytes < 1:
            raise ValueError(f"rotate_bytes must be >= 1, got {rotate_bytes}")
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.prefix = prefix
        self._fh: IO[bytes] | None = None
        self._day = ""
        self._part = 0
        self._size = 0
        self.path: Path | None = None

    def _name(self, day: str, part: int) -> Path:
        suffix = f".{part}" if part else ""
        return self.directory / f"{self.prefix}-{day}{suffix}.jsonl"

    def _open(self, day: str) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        part = 0
        while self._name(day, part + 1).exists():  # a restart continues the day's last part
            part += 1
        self._day, self._part = day, part
        self._open_part()

    def _open_part(self) -> None:
        self.path = self._name(self._day, self._part)
        self._fh = self.path.open("ab")
        self._size = self._fh.tell()

    def write(self, day: str, lines: Iterable[bytes]) -> None:
        if self._fh is None or day != self._day:
            self._open(day)
        for line in lines:
            if self._size and self._size + len(line) > self.rotate_bytes:
                self.close()
                self._part += 1
                self._open_part()
            assert self._fh is not None
            self._fh.write(line)
            self._size += len(line)
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class SignalLogStats:
    received: int = 0  # signals seen on the bus
    written: int = 0  # rows committed to SQLite (and lines to JSONL)
    dropped: int = 0  # dropped from a full queue (the oldest waiting ones)
    lost: int = 0  # in batches that failed to write
    batches: int = 0
    queued: int = 0


class SignalLog:
    """Subscribe to ``Signal`` on the bus and persist every one; ``run()`` is the writer task."""

    def __init__(
        self,
        db_path: str | Path,
        jsonl_dir: str | Path | None,
        *,
        rotate_bytes: int = 64 * 1024 * 1024,
        queue_size: int = 10_000,
        batch_max: int = 1000,
    ) -> None:
        self.db_path = Path(db_path)
        self.jsonl = JsonlWriter(Path(jsonl_dir), rotate_bytes) if jsonl_dir is not None else None
        self.batch_max = batch_max
        self._queue: BoundedQueue[Signal] = BoundedQueue(queue_size, "drop_oldest")
        self._stats = SignalLogStats()
        self._warned_at = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def from_config(cls, cfg: SignalLogConfig) -> SignalLog:
        return cls(cfg.db, cfg.jsonl_dir, rotate_bytes=int(cfg.rotate_mb * 1024 * 1024), queue_size=cfg.queue_size)

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(Signal, self.on_signal)

    def on_signal(self, sig: Signal) -> None:
        """Bus handler (loop thread): enqueue, never block; a full queue drops its oldest, counted."""
        self._stats.received += 1
        self._idle.clear()
        if not self._queue.put_nowait(sig):
            self._stats.dropped += 1
            if self._stats.dropped == 1 or self._stats.dropped - self._warned_at >= WARN_EVERY:
                self._warned_at = self._stats.dropped
                log.warning("signal_log_overflow", dropped=self._stats.dropped, queue_size=self._queue.maxsize,
                            policy="drop_oldest")

    def stats(self) -> dict[str, Any]:
        self._stats.queued = len(self._queue)
        out = dict(vars(self._stats))
        out["db"] = str(self.db_path)
        out["jsonl"] = str(self.jsonl.path) if self.jsonl is not None and self.jsonl.path else None
        return out

    async def wait_idle(self) -> None:
        """Return once everything received so far is written (or counted lost); for tests and shutdown."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write batches until cancelled; on cancellation, write what is still queued, then close."""
        db: aiosqlite.Connection | None = None
        try:
            db = await self._open()
            while True:
                if not len(self._queue):
                    self._idle.set()
                batch = [await self._queue.get()]
                batch += self._take(self.batch_max - 1)
                await self._write(db, batch)
        except asyncio.CancelledError:
            # Shutdown: the bus may have handed over signals a moment ago; they are written, not lost.
            if len(self._queue):
                if db is None:
                    db = await self._open()
                while len(self._queue):
                    await self._write(db, self._take(self.batch_max))
            raise
        finally:
            self._idle.set()
            if db is not None:
                await db.close()
            if self.jsonl is not None:
                self.jsonl.close()
            log.info("signal_log_stopped", **{k: v for k, v in self.stats().items() if isinstance(v, int)})

    async def _open(self) -> aiosqlite.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.db_path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SCHEMA)
        await db.commit()
        log.info("signal_log_started", db=str(self.db_path),
                 jsonl_dir=str(self.jsonl.directory) if self.jsonl else None)
        return db

    def _take(self, n: int) -> list[Signal]:
        out: list[Signal] = []
        while len(out) < n and len(self._queue):
            out.append(self._queue.get_nowait())
        return out

    async def _write(self, db: aiosqlite.Connection, batch: list[Signal]) -> None:
        encoded = [_encoder.encode(s) for s in batch]
        rows = [
            (s.ts_event, s.ts_recv, s.model, s.family, s.version, s.venue.value, s.symbol, s.horizon,
             s.confidence, s.inference_start_ns, s.inference_end_ns, e.decode())
            for s, e in zip(batch, encoded, strict=True)
        ]
        try:
            await db.executemany(INSERT, rows)
            await db.commit()
            if self.jsonl is not None:
                await asyncio.to_thread(self._write_jsonl, batch, encoded)
        except (OSError, sqlite3.Error) as e:
            self._stats.lost += len(batch)
            log.error("signal_log_write_failed", error=str(e), lost=len(batch), lost_total=self._stats.lost)
            return
        self._stats.written += len(batch)
        self._stats.batches += 1

    def _write_jsonl(self, batch: Sequence[Signal], encoded: Sequence[bytes]) -> None:
        assert self.jsonl is not None
        day = ""
        lines: list[bytes] = []
        for s, e in zip(batch, encoded, strict=True):
            d = utc_day(s.ts_recv)
            if d != day and lines:
                self.jsonl.write(day, lines)
                lines = []
            day = d
            lines.append(e + b"\n")
        if lines:
            self.jsonl.write(day, lines)


# -- reading -------------------------------------------------------------------------------------------


class SignalRow(msgspec.Struct, frozen=True):
    id: int
    signal: Signal


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """Open a signal database for reading; ConfigError (one clear line) if it is missing or not one."""
    p = Path(db_path)
    if not p.is_file():
        raise ConfigError(f"signal database not found: {p} (run the bot with models, or pass --db)")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ConfigError(f"{p} is not a signal database: {e}") from None
    try:
        conn.execute("SELECT id, event FROM signals LIMIT 1").fetchall()
    except sqlite3.Error as e:
        conn.close()
        if "no such table" in str(e):  # e.g. the state database, before the first signal was logged
            raise ConfigError(f"{p} is not a signal database yet: no signal has been logged there") from None
        raise ConfigError(f"{p} is not a signal database: {e}") from None
    return conn


def query_signals(
    conn: sqlite3.Connection,
    *,
    model: str | None = None,
    symbol: str | None = None,
    since_ns: int | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> list[SignalRow]:
    """Matching signals in publish order (oldest first); with ``limit``, the LAST ``limit`` of them.

    ``model`` matches the checkpoint name or the family; ``symbol`` is compared upper-cased; ``since_ns``
    bounds the publish time (``ts_recv``); ``after_id`` returns only rows written after that row.
    """
    where: list[str] = ["id > ?"]
    args: list[str | int] = [after_id]
    if model:
        where.append("(model = ? OR family = ?)")
        args += [model, model]
    if symbol:
        where.append("symbol = ?")
        args.append(symbol.upper())
    if since_ns is not None:
        where.append("ts_recv >= ?")
        args.append(since_ns)
    sql = f"SELECT id, event FROM signals WHERE {' AND '.join(where)} ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    rows = conn.execute(sql, args).fetchall()
    out = []
    for row_id, event in reversed(rows):
        try:
            out.append(SignalRow(row_id, _decoder.decode(event)))
        except msgspec.ValidationError as e:  # a row written by another version of the Signal type
            log.warning("signal_row_unreadable", id=row_id, error=str(e))
    return out


# -- formatting (the live table of ``python -m bot signals``) -------------------------------------------

COLUMNS = (
    ("time (UTC)", 23), ("model", 16), ("venue", 12), ("symbol", 9), ("horizon", 12),
    ("prediction", 36), ("conf", 5), ("attention", 26), ("age ms", 8), ("inf ms", 7),
)  # fmt: skip


def table_header() -> str:
    return "  ".join(f"{name:<{w}}" if i < 8 else f"{name:>{w}}" for i, (name, w) in enumerate(COLUMNS))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _prob(p: float) -> str:
    """0.58 -> ".58" (1.00 stays): probabilities in a narrow column."""
    return f"{p:.2f}".removeprefix("0")


def format_prediction(sig: Signal, width: int = 36) -> str:
    """First horizon's class probabilities ("down .12 flat .30 up .58"), then as many named values as fit
    in ``width``, then "(+k)" for the values left out."""
    parts: list[str] = []
    k = len(sig.classes)
    if sig.probabilities and k:
        parts += [f"{c} {_prob(p)}" for c, p in zip(sig.classes, sig.probabilities[:k], strict=False)]
        if len(sig.probabilities) > k:
            parts.append(f"(+{len(sig.probabilities) // k - 1}h)")
    elif sig.probabilities:
        parts += [_prob(p) for p in sig.probabilities[:3]]
    names = sig.value_names or tuple(f"v{i}" for i in range(len(sig.values)))
    shown = 0
    for name, v in zip(names, sig.values, strict=False):
        cell = f"{name} {v:+.4g}"
        left = len(sig.values) - shown - 1
        if len(" ".join([*parts, cell])) + (len(f" (+{left})") if left else 0) > width:
            break
        parts.append(cell)
        shown += 1
    if shown < len(sig.values):
        parts.append(f"(+{len(sig.values) - shown})")
    return " ".join(parts) or "-"


def format_table_row(sig: Signal) -> str:
    secs, ns = divmod(sig.ts_recv, NS_PER_S)
    cells = (
        datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{ns // 1_000_000:03d}",
        sig.model,
        sig.venue.value,
        sig.symbol,
        sig.horizon,
        format_prediction(sig),
        "-" if sig.confidence is None else f"{sig.confidence:.2f}",
        sig.attention or "-",
        f"{(sig.ts_recv - sig.ts_event) / 1e6:.1f}",
        f"{(sig.inference_end_ns - sig.inference_start_ns) / 1e6:.1f}",
    )
    return "  ".join(
        f"{_clip(c, w):<{w}}" if i < 8 else f"{_clip(c, w):>{w}}"
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def to_json_line(sig: Signal) -> str:
    return _encoder.encode(sig).decode()
