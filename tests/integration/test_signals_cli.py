"""``python -m bot signals``: the table, filters, --json, clear errors, and --follow in a real subprocess."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.bus import EventBus
from bot.events import Signal, Venue
from bot.signal_log import SignalLog
from bot.signals_cli import handler, register

pytestmark = pytest.mark.integration

NS = 1_000_000_000
BASE = 1_763_812_800 * NS  # 2025-11-22 12:00:00 UTC
ROOT = Path(__file__).resolve().parents[2]


def sig(i: int, symbol: str = "BTCUSDT", model: str = "tabl-btc", recv: int | None = None) -> Signal:
    r = BASE + i * NS if recv is None else recv
    return Signal(
        ts_event=r - 2_000_000, ts_recv=r, model=model, family="tabl", version="0123456789ab", code_version="",
        venue=Venue.BINANCE_SPOT, symbol=symbol, horizon="10s", classes=("down", "stationary", "up"),
        probabilities=(0.25, 0.5, 0.25), confidence=0.5, attention="t-0 0.40", inference_start_ns=r - 1_500_000,
        inference_end_ns=r - 500_000,
    )


@contextlib.asynccontextmanager
async def log_writer(db: Path) -> AsyncIterator[EventBus]:
    bus = EventBus()
    slog = SignalLog(db, None)
    slog.attach(bus)
    task = asyncio.create_task(slog.run())
    await asyncio.sleep(0)
    try:
        yield bus
        await asyncio.wait_for(slog.wait_idle(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def write(db: Path, signals: list[Signal]) -> None:
    async with log_writer(db) as bus:
        for s in signals:
            bus.publish(s)


def parse(argv: list[str], config: Path | None = None) -> argparse.Namespace:
    """As bot/__main__.py builds it: global options, then the sub-command registered by the module."""
    parser = argparse.ArgumentParser(prog="python -m bot")
    parser.add_argument("--config", type=Path, default=None)
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args([*(["--config", str(config)] if config else []), "signals", *argv])


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "signals.sqlite"
    await write(path, [sig(0), sig(1, "ETHUSDT"), sig(2), sig(3, "ETHUSDT", model="tabl-eth")])
    return path


# -- in process ----------------------------------------------------------------------------------------------


def test_the_table_shows_a_header_and_one_line_per_signal_oldest_first(db: Path, capsys: pytest.CaptureFixture[str]
                                                                      ) -> None:
    assert handler(parse(["--db", str(db)])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time (UTC)")
    assert "prediction" in lines[0]
    assert [line[:23] for line in lines[1:]] == [f"2025-11-22 12:00:0{i}.000" for i in range(4)]
    assert "binance_spot  ETHUSDT" in lines[2]
    assert "down .25 stationary .50 up .25" in lines[2]


def test_filters_and_limit_select_the_last_matching_rows(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert handler(parse(["--db", str(db), "--symbol", "ethusdt", "--json"])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["symbol"], r["ts_recv"]) for r in rows] == [("ETHUSDT", BASE + NS), ("ETHUSDT", BASE + 3 * NS)]
    assert handler(parse(["--db", str(db), "--model", "tabl-btc", "--limit", "1", "--json"])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["ts_recv"]) for r in rows] == [("tabl-btc", BASE + 2 * NS)]
    assert handler(parse(["--db", str(db), "--since", "2025-11-22T12:00:02", "--json"])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["ts_recv"] for r in rows] == [BASE + 2 * NS, BASE + 3 * NS]
    assert rows[0] == json.loads(json.dumps({**rows[0]}))  # plain JSON objects
    assert rows[0]["probabilities"] == [0.25, 0.5, 0.25]
    assert rows[0]["venue"] == "binance_spot"


def test_a_relative_since_far_in_the_past_keeps_everything_and_nothing_matching_says_so(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert handler(parse(["--db", str(db), "--since", "36500d", "--json"])) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert handler(parse(["--db", str(db), "--since", "1m"])) == 0  # the rows are from 2025
    out = capsys.readouterr()
    assert out.out.splitlines()[1:] == []
    assert "no signals match" in out.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--since", "yesterday"], "--since 'yesterday': expected an ISO time"),
    (["--limit", "0"], "--limit must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_clear_line(db: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                                  message: str) -> None:
    assert handler(parse(["--db", str(db), *argv])) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_missing_database_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.sqlite"
    assert handler(parse(["--db", str(missing)])) == 2
    expected = f"error: signal database not found: {missing} (run the bot with models, or pass --db)\n"
    assert capsys.readouterr().err == expected


def test_the_default_database_comes_from_the_config(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[signal_log]\ndb = "{db}"\n')
    assert handler(parse(["--json"], config=config)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


# -- a real process ----------------------------------------------------------------------------------------


def _command() -> list[str]:
    """``python -m bot signals`` once the lead has registered it; the module's own entry point until then."""
    from bot import __main__ as entry

    if "bot.signals_cli" in getattr(entry, "COMMAND_MODULES", ()):
        return [sys.executable, "-m", "bot", "signals"]
    return [sys.executable, "-m", "bot.signals_cli"]


async def test_follow_prints_new_rows_as_they_are_written_and_exits_0_on_sigint(db: Path) -> None:
    # Arrange
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *_command(), "--db", str(db), "--follow", "--json", "--poll", "0.05", "--symbol", "BTCUSDT",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async def line() -> dict[str, object]:
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
            assert raw, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            return dict(json.loads(raw))

        # Act / Assert: the backlog first
        assert [(await line())["ts_recv"] for _ in range(2)] == [BASE, BASE + 2 * NS]
        # then rows written while it follows (another writer, the same database), filtered
        await write(db, [sig(10, "ETHUSDT"), sig(11), sig(12)])
        assert [(await line())["ts_recv"] for _ in range(2)] == [BASE + 11 * NS, BASE + 12 * NS]
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0
    assert b"Traceback" not in await proc.stderr.read()


async def test_a_missing_database_in_a_real_process_exits_2_without_a_traceback(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_command(), "--db", str(tmp_path / "none.sqlite"), "--follow",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().startswith("error: signal database not found")
    assert b"Traceback" not in err
    assert out == b""
