"""The signal log: every Signal from the bus lands in SQLite (WAL, indexed) and JSONL, exactly as published."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from bot.bus import EventBus
from bot.errors import ConfigError
from bot.events import Signal, Venue
from bot.signal_log import (
    JsonlWriter,
    SignalLog,
    format_prediction,
    format_table_row,
    open_readonly,
    query_signals,
    table_header,
)
from bot.signals_cli import parse_since

pytestmark = pytest.mark.unit

NS = 1_000_000_000
DAY1 = 1_763_769_600 * NS  # 2025-11-22 00:00:00 UTC


def make_signal(i: int, *, model: str = "tabl-btc", family: str = "tabl", symbol: str = "BTCUSDT",
                ts_recv: int | None = None, venue: Venue = Venue.BYBIT_LINEAR) -> Signal:
    recv = DAY1 + 3_600 * NS + i * NS if ts_recv is None else ts_recv
    return Signal(
        ts_event=recv - 5_000_000,
        ts_recv=recv,
        model=model,
        family=family,
        version="0123456789ab",
        code_version="abc1234",
        venue=venue,
        symbol=symbol,
        horizon="10s,30s",
        classes=("down", "stationary", "up"),
        probabilities=(0.125, 0.25, 0.625, 0.5, 0.25, 0.25),
        confidence=0.625,
        attention=f"t-0 0.50 t-{i % 5} 0.30",
        inference_start_ns=recv - 3_000_000,
        inference_end_ns=recv - 1_000_000,
    )


def forecast_signal(i: int) -> Signal:
    recv = DAY1 + 7_200 * NS + i * NS
    return Signal(
        ts_event=recv - NS, ts_recv=recv, model="fc", family="lobforecast", version="ffffeeeeaaaa", code_version="",
        venue=Venue.BINANCE_USDM, symbol="ETHUSDT", horizon="1m,2m",
        value_names=("mid_bps_1m", "mid_bps_2m", "spread_bps_1m", "spread_bps_2m"),
        values=(1.5, -2.25, 0.75, 0.5), inference_start_ns=recv - 2 * NS // 1000, inference_end_ns=recv - NS // 1000,
    )


@contextlib.asynccontextmanager
async def writer(db: Path, jsonl: Path | None, **kw: int) -> AsyncIterator[tuple[EventBus, SignalLog]]:
    """A bus with a running SignalLog; leaving the block cancels the writer (which writes what is queued)."""
    bus = EventBus()
    slog = SignalLog(db, jsonl, **kw)
    slog.attach(bus)
    task = asyncio.create_task(slog.run())
    await asyncio.sleep(0)  # let it start: a task cancelled before its first step runs nothing at all
    try:
        yield bus, slog
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def jsonl_lines(directory: Path) -> list[Signal]:
    out = []
    for f in sorted(directory.glob("*.jsonl")):
        out += [msgspec.json.decode(line, type=Signal) for line in f.read_bytes().splitlines()]
    return out


# -- writing ---------------------------------------------------------------------------------------------


async def test_every_published_signal_round_trips_through_sqlite_and_jsonl_exactly(tmp_path: Path) -> None:
    # Arrange
    sigs = [make_signal(i) for i in range(3)] + [forecast_signal(0), make_signal(3, symbol="ETHUSDT")]
    db, jdir = tmp_path / "sig" / "signals.sqlite", tmp_path / "jsonl"
    # Act
    async with writer(db, jdir) as (bus, slog):
        for s in sigs:
            bus.publish(s)
        await asyncio.wait_for(slog.wait_idle(), 10)
        stats = slog.stats()
    # Assert
    assert stats["received"] == 5
    assert stats["written"] == 5
    assert stats["dropped"] == 0
    assert stats["lost"] == 0
    conn = open_readonly(db)
    rows = query_signals(conn)
    assert [r.signal for r in rows] == sigs
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    assert jsonl_lines(jdir) == sigs
    assert [p.name for p in jdir.iterdir()] == ["signals-2025-11-22.jsonl"]
    line = json.loads((jdir / "signals-2025-11-22.jsonl").read_text().splitlines()[3])
    assert line["values"] == [1.5, -2.25, 0.75, 0.5]
    assert line["confidence"] is None
    assert line["venue"] == "binance_usdm"
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT model, symbol, ts_recv, confidence FROM signals WHERE id = 4").fetchone() == (
        "fc", "ETHUSDT", sigs[3].ts_recv, None)
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_signals_ts_recv", "ix_signals_model", "ix_signals_symbol"} <= indexes


async def test_a_restarted_log_appends_to_the_same_database_and_jsonl_file(tmp_path: Path) -> None:
    db, jdir = tmp_path / "s.sqlite", tmp_path / "j"
    async with writer(db, jdir) as (bus, _):
        bus.publish(make_signal(0))
    async with writer(db, jdir) as (bus, _):
        bus.publish(make_signal(1))
    assert [r.signal for r in query_signals(open_readonly(db))] == [make_signal(0), make_signal(1)]
    assert jsonl_lines(jdir) == [make_signal(0), make_signal(1)]
    assert len(list(jdir.iterdir())) == 1


async def test_cancelling_the_writer_still_writes_everything_queued(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    sigs = [make_signal(i) for i in range(250)]
    async with writer(db, None, batch_max=100) as (bus, slog):
        for s in sigs:
            bus.publish(s)
        # no wait: leaving the block cancels the writer with (nearly) everything still queued
    assert slog.stats()["written"] == 250
    assert [r.signal for r in query_signals(open_readonly(db))] == sigs


async def test_a_full_queue_drops_the_oldest_signals_counts_them_and_warns_once(tmp_path: Path) -> None:
    # Arrange: five signals published before the writer gets a turn, into a queue of three
    db = tmp_path / "s.sqlite"
    bus = EventBus()
    slog = SignalLog(db, None, queue_size=3)
    slog.attach(bus)
    sigs = [make_signal(i) for i in range(5)]
    # Act
    with capture_logs() as logs:
        for s in sigs:
            bus.publish(s)
    task = asyncio.create_task(slog.run())
    await asyncio.wait_for(slog.wait_idle(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Assert
    assert slog.stats()["dropped"] == 2
    assert slog.stats()["written"] == 3
    assert [r.signal for r in query_signals(open_readonly(db))] == sigs[2:]  # the newest three kept
    warnings = [e for e in logs if e["event"] == "signal_log_overflow"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["policy"] == "drop_oldest"


async def test_a_jsonl_write_failure_is_counted_and_the_writer_keeps_going(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the JSONL directory should be")
    db = tmp_path / "s.sqlite"
    with capture_logs() as logs:
        async with writer(db, blocker) as (bus, slog):
            bus.publish(make_signal(0))
            await asyncio.wait_for(slog.wait_idle(), 10)
            bus.publish(make_signal(1))
            await asyncio.wait_for(slog.wait_idle(), 10)
    assert slog.stats()["lost"] == 2
    assert slog.stats()["batches"] == 0
    assert any(e["event"] == "signal_log_write_failed" for e in logs)


def test_jsonl_files_rotate_by_utc_day_and_by_size(tmp_path: Path) -> None:
    # Arrange
    w = JsonlWriter(tmp_path, rotate_bytes=25)
    line = b'{"n": 1234567890}\n'  # 18 bytes: one per file at 25 bytes
    # Act
    w.write("2025-11-22", [line, line, line])
    w.write("2025-11-23", [line])
    w.close()
    w2 = JsonlWriter(tmp_path, rotate_bytes=40)  # a restart continues the day's last part
    w2.write("2025-11-22", [line])
    w2.close()
    # Assert
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert sizes == {
        "signals-2025-11-22.jsonl": 18,
        "signals-2025-11-22.1.jsonl": 18,
        "signals-2025-11-22.2.jsonl": 36,
        "signals-2025-11-23.jsonl": 18,
    }


async def test_signals_on_two_utc_days_go_to_two_files(tmp_path: Path) -> None:
    late = make_signal(0, ts_recv=DAY1 + 86_400 * NS - 1)
    early = make_signal(1, ts_recv=DAY1 + 86_400 * NS)
    async with writer(tmp_path / "s.sqlite", tmp_path / "j") as (bus, _):
        bus.publish(late)
        bus.publish(early)
    names = sorted(p.name for p in (tmp_path / "j").iterdir())
    assert names == ["signals-2025-11-22.jsonl", "signals-2025-11-23.jsonl"]
    assert jsonl_lines(tmp_path / "j") == [late, early]


# -- reading ---------------------------------------------------------------------------------------------


@pytest.fixture
async def filled_db(tmp_path: Path) -> Path:
    db = tmp_path / "s.sqlite"
    async with writer(db, None) as (bus, _):
        for i in range(6):
            bus.publish(make_signal(i, symbol=("BTCUSDT", "ETHUSDT")[i % 2]))
        bus.publish(forecast_signal(0))
    return db


async def test_queries_filter_by_model_or_family_symbol_time_and_keep_the_last_n_in_order(filled_db: Path) -> None:
    conn = open_readonly(filled_db)
    assert [r.id for r in query_signals(conn, model="fc")] == [7]
    assert [r.id for r in query_signals(conn, model="lobforecast")] == [7]
    assert [r.id for r in query_signals(conn, model="tabl")] == [1, 2, 3, 4, 5, 6]
    assert [r.id for r in query_signals(conn, symbol="ethusdt")] == [2, 4, 6, 7]
    assert [r.id for r in query_signals(conn, symbol="ETHUSDT", model="tabl-btc")] == [2, 4, 6]
    since = make_signal(3).ts_recv
    assert [r.id for r in query_signals(conn, since_ns=since)] == [4, 5, 6, 7]
    assert [r.id for r in query_signals(conn, limit=2)] == [6, 7]
    assert [r.id for r in query_signals(conn, after_id=5)] == [6, 7]
    assert query_signals(conn, model="nope") == []


def test_opening_a_missing_or_foreign_database_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="signal database not found"):
        open_readonly(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ConfigError, match="is not a signal database"):
        open_readonly(other)
    text = tmp_path / "text.sqlite"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="is not a signal database"):
        open_readonly(text)


# -- formatting --------------------------------------------------------------------------------------------


def test_a_table_row_shows_time_model_instrument_prediction_confidence_attention_and_latencies() -> None:
    s = make_signal(2)
    row = format_table_row(s)
    assert row.startswith("2025-11-22 01:00:02.000  tabl-btc ")
    assert "bybit_linear  BTCUSDT    10s,30s " in row
    assert "down .12 stationary .25 up .62 (+1h)" in row  # 0.125 -> .12, 0.625 -> .62; one more horizon
    assert "0.62" in row
    assert "t-0 0.50 t-2 0.30" in row
    assert row.endswith("     5.0      2.0")  # age 5 ms, inference 2 ms
    assert len(row) == len(table_header())


def test_regression_predictions_show_the_first_values_by_name() -> None:
    assert format_prediction(forecast_signal(0)) == "mid_bps_1m +1.5 (+3)"  # what fits in 36 columns
    assert format_prediction(forecast_signal(0), width=37) == "mid_bps_1m +1.5 mid_bps_2m -2.25 (+2)"
    assert format_prediction(forecast_signal(0), width=80) == (
        "mid_bps_1m +1.5 mid_bps_2m -2.25 spread_bps_1m +0.75 spread_bps_2m +0.5")
    row = format_table_row(forecast_signal(0))
    assert "  -    " in row  # no confidence


# -- --since -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ago_s"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1.5d", 129_600),
                                             (" 5M ", 300)])
def test_since_accepts_an_age_before_now(text: str, ago_s: float) -> None:
    now = DAY1 + 12 * 3600 * NS
    assert parse_since(text, now) == now - int(ago_s * NS)


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-11-22T10:00", datetime(2025, 11, 22, 10, tzinfo=UTC)),
    ("2025-11-22 10:00:00.250", datetime(2025, 11, 22, 10, 0, 0, 250_000, tzinfo=UTC)),
    ("2025-11-22T12:00:00+02:00", datetime(2025, 11, 22, 10, tzinfo=UTC)),
    ("2025-11-22T10:00:00Z", datetime(2025, 11, 22, 10, tzinfo=UTC)),
])
def test_since_accepts_iso_times_utc_unless_an_offset_is_given(text: str, expected: datetime) -> None:
    want = (expected - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert parse_since(text, 0) == want


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "-5m", "2025-13-01", ""])
def test_since_rejects_anything_else_with_a_message_naming_both_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"ISO time .* or an age like 30s, 10m, 2h, 1d"):
        parse_since(text, 0)
