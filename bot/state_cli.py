"""``python -m bot status | halt [--reduce] | resume``: the operator's view of and hand on the state database.

    python -m bot status            # positions, accounts, open orders, risk state, stopped strategies, counts
    python -m bot status --json     # the same as one JSON object (Decimals as strings, times as ns and ISO)
    python -m bot halt              # HALTED: no new orders, only cancels (latched until resume)
    python -m bot halt --reduce     # REDUCING: only orders that reduce a position
    python -m bot resume            # back to ACTIVE (the risk gate's live alarms still apply)

They work from another terminal whether the bot runs or not: plain sqlite3 with a busy timeout, and WAL
lets them read while the bot writes. ``halt``/``resume`` write a ``control`` row (a running bot polls it
every 0.5 s and applies it to its risk gate) AND the latched state (``risk_latch``), so the state holds
across restarts until ``resume``; if the database does not exist yet they create it, and the bot starts in
that state. ``status`` only reads.

Exit codes: 0 done; 1 ``status`` found no state database (nothing to show: a script polling ``status``
should not take that for a healthy bot); 2 bad input (a file that is not a state database, bad config).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bot.clock import LiveClock
from bot.config import load_settings
from bot.errors import ConfigError
from bot.state_lock import live_db, writer_pid
from bot.state_schema import BUSY_TIMEOUT_S, CONTROL_STATES, OPEN_STATUSES, SCHEMA, TABLES_SQL, check_own, check_version

NS_PER_S = 1_000_000_000


def connect_sync(path: Path, *, create: bool) -> sqlite3.Connection:
    """A plain sqlite3 connection for the CLI (busy timeout, WAL) to this bot's state database; ``create``:
    make the file and schema when there is none. ConfigError for a file that is not one: not SQLite, another
    program's database (never written into), or, to read, one without the schema (empty)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"state database {path} is not a file")
    existed = path.exists()
    conn: sqlite3.Connection | None = None
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        tables = {r[0] for r in conn.execute(TABLES_SQL)}
        check_own(tables, path)
        if "meta" not in tables and existed and not tables:
            raise ConfigError(f"{path} is an empty file, not a state database; point [state] db (or --db) at "
                              "the bot's file, or remove it")
        if "meta" not in tables and not create:
            raise ConfigError(f"{path} holds no trading state yet (only the signal log's table)")
        if create:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        check_version(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), path)
        return conn
    except (sqlite3.Error, OSError, ConfigError) as e:
        if conn is not None:
            conn.close()
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"cannot open state database {path}: {e}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="positions, equity, open orders and risk state from the state database")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    p.add_argument("--db", type=Path, default=None, help="state database (default: [state] db of the config)")
    _live_flags(p)
    p.set_defaults(func=status_handler)
    h = sub.add_parser("halt", help="halt trading (latched until resume); --reduce: only reducing orders")
    h.add_argument("--reduce", action="store_true", help="REDUCING instead of HALTED: positions may be closed")
    h.add_argument("--reason", default="", help="why (kept with the request)")
    h.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    _live_flags(h)
    h.set_defaults(func=lambda a: control_handler(a, "reduce" if a.reduce else "halt"))
    r = sub.add_parser("resume", help="clear a halt (operator or kill switch): back to ACTIVE")
    r.add_argument("--reason", default="", help="why (kept with the request)")
    r.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    _live_flags(r)
    r.set_defaults(func=lambda a: control_handler(a, "resume"))


def _live_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--live", action="store_true", help="the live session's database (run --live)")
    p.add_argument("--sim", action="store_true", help="with --live: the run --live --sim session's")


def _db_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    db = Path(load_settings(getattr(args, "config", None)).state.db)
    if getattr(args, "live", False):
        return live_db(db, getattr(args, "sim", False))
    if getattr(args, "sim", False):
        raise ConfigError("--sim goes with --live (paper under --sim uses the usual database)")
    return db


# -- halt / resume ---------------------------------------------------------------------------------------


def control_handler(args: argparse.Namespace, action: str) -> int:
    path = _db_path(args)
    state = CONTROL_STATES[action]
    now = LiveClock().now_ns()
    reason = f"operator: {args.reason}" if args.reason else "operator"
    conn = connect_sync(path, create=True)
    try:
        with conn:  # one transaction: the request and the latch together
            conn.execute("INSERT INTO control (ts_ns, action, reason) VALUES (?, ?, ?)", (now, action, reason))
            conn.execute("UPDATE risk_latch SET state = ?, reason = ?, ts_ns = ?, source = 'cli' WHERE id = 1",
                         (state.value, reason if action != "resume" else "", now))
    except sqlite3.Error as e:
        raise ConfigError(f"cannot write to state database {path}: {e}") from None
    finally:
        conn.close()
    pid = writer_pid(path)
    when = (f"the running bot (pid {pid}) applies it within a second" if pid is not None
            else "no bot is running with this database; it applies at its next start")
    _out(f"{state.value.upper()}: {when} ({path})")
    return 0


# -- status ----------------------------------------------------------------------------------------------


def status_handler(args: argparse.Namespace) -> int:
    path = _db_path(args)
    if not path.exists():
        sys.stderr.write(f"no state database at {path} (the bot has not run with this config)\n")
        return 1
    conn = connect_sync(path, create=False)
    try:
        report = collect(conn, path)
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path} is not a readable state database: {e}") from None
    finally:
        conn.close()
    try:
        _out(json.dumps(report, allow_nan=False) if args.json else render(report))
    except BrokenPipeError:
        return 0
    return 0


def _iso(ns: int | None) -> str | None:
    if not ns:
        return None
    secs, rest = divmod(int(ns), NS_PER_S)
    return datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest // 1_000_000:03d}Z"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _dicts(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _sum(values: Sequence[str | None]) -> str:
    total = Decimal(0)
    for v in values:
        try:
            total += Decimal(v) if v is not None else 0
        except InvalidOperation:
            continue
    return str(total)


def collect(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """Everything ``status`` shows, as plain JSON-able values (Decimals stay exact strings)."""
    tables = _tables(conn)
    report: dict[str, Any] = {"db": str(path), "bot_pid": writer_pid(path)}
    counts: dict[str, Any] = {"signals": None}
    if "signals" in tables:
        counts["signals"] = int(conn.execute("SELECT COUNT(*) FROM signals").fetchone()[0])
    if "orders" not in tables:  # only the signal log has written to this file so far
        report.update(risk={"state": "active", "reason": "", "since_ns": None, "since": None}, accounts=[],
                      total_equity=None, positions=[], open_orders=[], strategies_stopped=[],
                      counts={**counts, "orders": 0, "open_orders": 0, "fills": 0, "denials": 0,
                              "denials_by_reason": {}}, pending_control=0)
        return report
    latch = conn.execute("SELECT state, reason, ts_ns, source FROM risk_latch WHERE id = 1").fetchone()
    last = conn.execute("SELECT state, reason, detail, ts_event FROM risk_states ORDER BY id DESC LIMIT 1").fetchone()
    risk: dict[str, Any] = {"latched": latch[0] if latch else "active", "latched_reason": latch[1] if latch else "",
                            "latched_since_ns": latch[2] if latch else None,
                            "latched_since": _iso(latch[2]) if latch else None,
                            "latched_by": latch[3] if latch else None}
    if last is not None:
        risk.update(effective=last[0], effective_reason=last[1], effective_detail=last[2],
                    effective_since_ns=last[3], effective_since=_iso(last[3]))
    report["risk"] = risk
    accounts = _dicts(conn, "SELECT venue, quote, cash, equity, fees, funding, ts_event AS ts_ns FROM equity "
                            "WHERE id IN (SELECT MAX(id) FROM equity GROUP BY venue) ORDER BY venue")
    for a in accounts:
        a["time"] = _iso(a["ts_ns"])
    report["accounts"] = accounts
    report["total_equity"] = _sum([a["equity"] for a in accounts]) if accounts else None
    report["positions"] = _dicts(conn, "SELECT venue, symbol, qty, avg_price, mark, unrealized_pnl, realized_pnl "
                                       "FROM positions ORDER BY venue, symbol")
    marks = ",".join("?" * len(OPEN_STATUSES))
    report["open_orders"] = _dicts(
        conn, "SELECT client_order_id, strategy, venue, symbol, side, order_type, tif, qty, price, filled_qty, "
              f"status, ts_updated AS updated_ns FROM orders WHERE status IN ({marks}) ORDER BY ts_created",
        OPEN_STATUSES)
    stopped = _dicts(conn, "SELECT strategy, reason, detail, ts_event AS since_ns FROM strategy_health WHERE id IN "
                           "(SELECT MAX(id) FROM strategy_health GROUP BY strategy) AND enabled = 0 ORDER BY strategy")
    for s in stopped:
        s["since"] = _iso(s["since_ns"])
    report["strategies_stopped"] = stopped
    by_reason = dict(conn.execute("SELECT reason, COUNT(*) FROM denials GROUP BY reason ORDER BY COUNT(*) DESC"))
    counts.update(
        orders=int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]),
        open_orders=len(report["open_orders"]),
        fills=int(conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]),
        denials=sum(by_reason.values()),
        denials_by_reason=by_reason,
    )
    report["counts"] = counts
    report["pending_control"] = int(conn.execute("SELECT COUNT(*) FROM control WHERE applied = 0").fetchone()[0])
    return report


def _show(value: Any) -> str:
    """A stored Decimal for people: ``0E-13`` -> ``0``, ``10000.000`` -> ``10000`` (--json keeps it exact)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            return value
        if d.is_finite() and any(ch.isdigit() for ch in value):
            return format(d.normalize(), "f")
    return str(value)


def _table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    cells = [[str(h) for h in header]] + [[_show(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"{title}:"]
    for r in cells:
        lines.append("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                                      enumerate(zip(r, widths, strict=True))).rstrip())
    return lines


def render(r: dict[str, Any]) -> str:
    """The report as readable tables."""
    risk = r["risk"]
    running = f"a bot is running on it, pid {r['bot_pid']}" if r["bot_pid"] is not None else "no bot running on it"
    lines = [f"state database: {r['db']} ({running})"]
    if "latched" in risk:
        line = f"risk state: {str(risk['latched']).upper()}"
        if risk["latched_reason"]:
            line += f" ({risk['latched_reason']}"
            line += f", since {risk['latched_since']})" if risk["latched_since"] else ")"
        if risk.get("effective") and risk["effective"] != risk["latched"]:
            line += (f"; effective now {str(risk['effective']).upper()} ({risk['effective_reason']}, "
                     f"since {risk['effective_since']})")
        lines.append(line)
    else:
        lines.append("risk state: ACTIVE (nothing persisted yet)")
    if r["pending_control"]:
        lines.append(f"operator requests not yet applied by the bot: {r['pending_control']}")
    lines += _table("accounts", [(a["venue"], a["quote"], a["cash"], a["equity"], a["fees"], a["funding"], a["time"])
                                 for a in r["accounts"]], ("venue", "quote", "cash", "equity", "fees", "funding",
                                                           "as of (UTC)"))
    if r["total_equity"] is not None:
        lines.append(f"  total equity: {_show(r['total_equity'])}")
    lines += _table("positions", [(p["venue"], p["symbol"], p["qty"], p["avg_price"], p["mark"], p["unrealized_pnl"],
                                   p["realized_pnl"]) for p in r["positions"]],
                    ("venue", "symbol", "qty", "avg entry", "mark", "unrealised", "realised"))
    lines += _table("open orders", [(o["client_order_id"], o["strategy"], o["venue"], o["symbol"], o["side"],
                                     o["order_type"], o["qty"], o["price"], o["filled_qty"], o["status"])
                                    for o in r["open_orders"]],
                    ("id", "strategy", "venue", "symbol", "side", "type", "qty", "price", "filled", "status"))
    lines += _table("strategies stopped", [(s["strategy"], s["reason"], s["detail"], s["since"])
                                           for s in r["strategies_stopped"]], ("strategy", "reason", "detail", "since"))
    c = r["counts"]
    signals = "-" if c["signals"] is None else c["signals"]
    lines.append(f"counts: signals {signals}, orders {c['orders']} ({c['open_orders']} open), fills {c['fills']}, "
                 f"denials {c['denials']}")
    lines += [f"  denied {reason}: {n}" for reason, n in c["denials_by_reason"].items()]
    return "\n".join(lines)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.state_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="config file (for the default --db)")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
