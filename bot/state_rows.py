"""The order path's events as rows of the state database, and back: ``batch_rows`` turns a batch of events
into (statement, parameter rows) pairs in publish order, ``load`` reads back what a restart resumes from
(``PersistedState``); ``EquityTracker`` carries peak and day-start equity from one to the other.

Every statement is safe to replay after a restart: fills are unique per (venue, symbol, trade_id), order
history rows per (order, ts_event, status, filled qty), equity snapshots per (venue, ts_event), orders are
upserted (a closed order never reopens). The tables are ``bot.state_schema``'s; the writer is ``bot.state``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiosqlite
import msgspec

from bot.events import Event, Venue
from bot.orders import (
    EquitySnapshot,
    Fill,
    OrderDenied,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TradingState,
)
from bot.state_schema import OPEN_STATUSES

NS_PER_DAY = 86_400_000_000_000
# RiskStateChanged reasons of the risk gate's live alarms (bot.risk): they clear by themselves, not latched.
TRANSIENT_REASONS = frozenset({"book_resyncing", "crossed_burst", "clock_skew"})
# The gate's operator changes (reason "operator") say which in ``detail``: the effective state after a
# resume can still be REDUCING (alarms on) while the latched one is ACTIVE.
_OPERATOR_DETAIL = (("halt", TradingState.HALTED), ("reduce", TradingState.REDUCING), ("resume", TradingState.ACTIVE))

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
class EquityTracker:
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


Rows = list[tuple[str, list[tuple[Any, ...]]]]

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


def batch_rows(batch: Iterable[Event], tracker: EquityTracker) -> Rows:
    """The batch as (statement, parameter rows) pairs; each statement keeps publish order. ``tracker``
    takes in the batch's equity snapshots (once per event: build a batch's rows once)."""
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
            meta_changed |= tracker.add(ev)
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
         tracker.meta_rows() if meta_changed else []),
    ]


async def load(db: aiosqlite.Connection) -> tuple[PersistedState, EquityTracker]:
    """What a restart resumes from, and the equity tracker the writer goes on with."""

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
    eq = EquityTracker(latest=dict(latest), tick_ts=max((s.ts_event for s in latest.values()), default=None),
                       peak=Decimal(meta["peak_equity"]) if "peak_equity" in meta else None,
                       day=int(meta["day"]) if "day" in meta else None,
                       day_start=Decimal(meta["day_start_equity"]) if "day_start_equity" in meta else None)
    tracker = EquityTracker(latest=dict(eq.latest), tick_ts=eq.tick_ts, peak=eq.peak, day=eq.day,
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
    ), tracker
