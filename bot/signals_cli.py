"""``python -m bot signals``: the signal log as a readable table, optionally following new rows live.

    python -m bot signals                          # the last 50 signals
    python -m bot signals --follow --symbol BTCUSDT --since 10m
    python -m bot signals --model tabl --json      # one JSON object per line (the stored events)

Reads the SQLite log written by ``bot.signal_log`` (read-only; WAL lets it read while the bot writes).
``--follow`` polls the database for rows after the last one shown; Ctrl-C exits 0. A missing database or
a bad argument prints one line and exits 2. Also runnable on its own: ``python -m bot.signals_cli``.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.clock import LiveClock
from bot.config import load_settings
from bot.errors import ConfigError
from bot.signal_log import SignalRow, format_table_row, open_readonly, query_signals, table_header, to_json_line

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$", re.IGNORECASE)
_UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_since(text: str, now_ns: int) -> int:
    """``--since`` as epoch ns: an age before ``now_ns`` (``90s``, ``10m``, ``2h``, ``1.5d``) or an ISO time
    (``2026-11-22T10:00``, ``2026-11-22 10:00:00+02:00``, ``...Z``; no offset means UTC)."""
    m = _AGE.match(text)
    if m:
        return now_ns - int(float(m.group(1)) * _UNIT_NS[m.group(2).lower()])
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected an ISO time (2026-11-22T10:00, UTC unless an offset is given) "
            "or an age like 30s, 10m, 2h, 1d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("signals", help="show model signals from the signal log (--follow: live)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    _add_arguments(p)
    p.set_defaults(func=handler)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, help="signal database (default: [signal_log] db of the config)")
    p.add_argument("--follow", "-f", action="store_true", help="keep showing new signals until Ctrl-C")
    p.add_argument("--model", default=None, help="only this model (checkpoint name or family)")
    p.add_argument("--symbol", default=None, help="only this symbol (BTCUSDT)")
    p.add_argument("--since", default=None, metavar="T",
                   help="only signals published at or after T: ISO time (UTC unless an offset is given) "
                        "or an age like 30s, 10m, 2h, 1d")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="show at most the last N matching (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)  # --follow polling period, s


def handler(args: argparse.Namespace) -> int:
    try:
        return _show(args)
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into head & co.
        return 0


def _show(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.poll <= 0:
        raise ConfigError("--poll must be > 0")
    db = args.db
    if db is None:
        db = load_settings(getattr(args, "config", None)).signal_log.db
    since = parse_since(args.since, LiveClock().now_ns()) if args.since is not None else None
    conn = open_readonly(db)
    try:
        rows = query_signals(conn, model=args.model, symbol=args.symbol, since_ns=since, limit=args.limit)
        if not args.json:
            _write([table_header()])
        _emit(rows, args.json)
        if not args.follow:
            if not rows and not args.json:
                sys.stderr.write("no signals match\n")
            return 0
        last = rows[-1].id if rows else _max_id(conn)
        while True:
            time.sleep(args.poll)
            new = query_signals(conn, model=args.model, symbol=args.symbol, since_ns=since, after_id=last)
            if new:
                _emit(new, args.json)
                last = new[-1].id
    finally:
        conn.close()


def _max_id(conn: sqlite3.Connection) -> int:
    """Rows filtered out of the first page are not shown later either: follow from the newest row."""
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM signals").fetchone()
    return int(row[0])


def _emit(rows: Sequence[SignalRow], as_json: bool) -> None:
    _write([to_json_line(r.signal) if as_json else format_table_row(r.signal) for r in rows])


def _write(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.signals_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="config file (for the default --db)")
    _add_arguments(parser)
    return handler(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
