"""The state database's format: its tables (``SCHEMA``) and their version, the column values both sides
agree on (open order statuses, operator actions), and the checks that a file is this bot's state database.
Shared by the writer (``bot.state``) and the operator's CLI (``bot.state_cli``, plain sqlite3).

The file is shared with the signal log (``bot.signal_log``: table ``signals`` and its ``ix_signals_*``
indexes); no name here clashes with those. Decimals are stored as TEXT (exact); every event is also kept
whole as msgspec JSON in ``event`` (restored from that, exactly).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.orders import OrderStatus, TradingState

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0  # a lock held longer than this (another writer, a reader's checkpoint) is a write failure
OPEN_STATUSES = tuple(s.value for s in OrderStatus if s.is_open)
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
