"""The trading side of a replay run: round trips, costs (fees, slippage, turnover), exposure, and the
whole account's section of the report (``portfolio_section``). Definitions: ``replay.metrics``'s
docstring (round trips, turnover, fees, slippage, exposure).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from bot.bootstrap import mean_stat, rule_of_thumb_block
from bot.events import Side
from bot.orders import ZERO, EquitySnapshot, Fill
from replay.metrics import (
    F64,
    I64,
    NS,
    Curve,
    Grid,
    boot,
    finite,
    interval_dict,
    last_at,
    mids_at,
    return_metrics,
    sample,
    strategy_curve,
)
from replay.report_data import Key, Run

# -- trades -----------------------------------------------------------------------------------------------


@dataclass
class Trip:
    strategy: str
    venue: str
    symbol: str
    side: int  # +1 long, -1 short
    entry_ns: int
    exit_ns: int | None = None
    qty: Decimal = ZERO  # the largest absolute position held
    cash: Decimal = ZERO  # -sum(signed qty * price) of its fill parts
    fees: Decimal = ZERO
    fills: int = 0
    open_qty: Decimal = ZERO  # signed position while open

    @property
    def pnl(self) -> Decimal:
        return self.cash - self.fees


def round_trips(fills: Sequence[Fill], fold_of: Callable[[int], int] | None = None) -> list[Trip]:
    """Round trips per (strategy, venue, symbol) from fills in publish order (see the module docstring);
    ``fold_of(ts)``: walk-forward fold of a fill (each fold's positions start flat, so trips never span two)."""
    open_: dict[tuple[int, str, str, str], Trip] = {}
    done: list[Trip] = []
    for f in fills:
        key = (fold_of(f.ts_recv) if fold_of else 0, f.strategy, f.venue.value, f.symbol)
        q = f.qty if f.side is Side.BUY else -f.qty
        rest, fee = q, f.fee
        while rest != 0:
            trip = open_.get(key)
            if trip is None:
                trip = open_[key] = Trip(f.strategy, f.venue.value, f.symbol, 1 if rest > 0 else -1, f.ts_recv)
            part = rest
            if (trip.open_qty > 0 > rest) or (trip.open_qty < 0 < rest):
                part = max(rest, -trip.open_qty) if rest < 0 else min(rest, -trip.open_qty)
            share = fee * abs(part) / abs(q) if q else fee
            trip.cash -= part * f.price
            trip.fees += share
            trip.fills += 1
            trip.open_qty += part
            trip.qty = max(trip.qty, abs(trip.open_qty))
            rest -= part
            if trip.open_qty == 0:
                trip.exit_ns = f.ts_recv
                done.append(trip)
                del open_[key]
    return done + sorted(open_.values(), key=lambda t: (t.entry_ns, t.strategy, t.venue, t.symbol))


def trade_metrics(trips: Sequence[Trip], marks: dict[Key, float]) -> dict[str, Any]:
    """Counts, win rate, profit factor, mean PnL (intervals), holding time; open trips marked at ``marks``."""
    closed = sorted((t for t in trips if t.exit_ns is not None), key=lambda t: (t.exit_ns or 0, t.entry_ns))
    still = [t for t in trips if t.exit_ns is None]
    pnl = np.array([float(t.pnl) for t in closed], dtype=np.float64)
    out: dict[str, Any] = {"round_trips": len(closed), "open_trips": len(still),
                           "long": sum(t.side > 0 for t in closed), "short": sum(t.side < 0 for t in closed)}
    unreal = 0.0
    for t in still:
        mark = marks.get((t.venue, t.symbol))
        if mark is not None and math.isfinite(mark):
            unreal += float(t.cash) + float(t.open_qty) * mark - float(t.fees)
    out["open_pnl"] = unreal
    out["closed_pnl"] = float(pnl.sum()) if len(pnl) else 0.0
    if not len(pnl):
        return out | {"win_rate": None, "profit_factor": None, "mean_pnl": None, "mean_holding_s": None}
    block = rule_of_thumb_block(len(pnl))
    for name, stat in (("win_rate", lambda x: mean_stat(x > 0)), ("profit_factor", _profit_factor_rows),
                       ("mean_pnl", mean_stat)):
        iv = boot(stat, pnl, block=block)
        out[name] = finite(iv.estimate)
        out[f"{name}_interval"] = interval_dict(iv)
    out["mean_holding_s"] = float(np.mean([((t.exit_ns or 0) - t.entry_ns) / NS for t in closed]))
    return out


def _profit_factor_rows(x: F64) -> F64:
    gain = np.where(x > 0, x, 0.0).sum(axis=1)
    loss = -np.where(x < 0, x, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = np.where(loss > 0, gain / np.where(loss > 0, loss, 1.0), np.nan)
    return out


# -- costs and exposure -----------------------------------------------------------------------------------


@dataclass
class Costs:
    notional: float = 0.0
    fees: float = 0.0
    slippage: float = 0.0
    matched_notional: float = 0.0
    unmatched_fills: int = 0
    fills: int = 0

    def to_dict(self, mean_equity: float | None) -> dict[str, Any]:
        return {"fills": self.fills, "traded_notional": self.notional, "fees": self.fees,
                "slippage": self.slippage, "unmatched_fills": self.unmatched_fills,
                "slippage_bps": self.slippage / self.matched_notional * 1e4 if self.matched_notional else None,
                "turnover": self.notional / mean_equity if mean_equity else None}


def decision_times(run: Run) -> dict[str, int]:
    """client order id -> ts_recv of its first OrderUpdate (the risk gate's decision)."""
    out: dict[str, int] = {}
    for o in run.events.orders:
        out.setdefault(o.client_order_id, o.ts_recv)
    return out


def costs_by(run: Run, fills: Sequence[Fill], group: Any) -> dict[Any, Costs]:
    """Fees, notional and slippage per ``group(fill)`` (see the module docstring for slippage)."""
    decided = decision_times(run)
    out: dict[Any, Costs] = defaultdict(Costs)
    for f in fills:
        c = out[group(f)]
        qty, px = float(f.qty), float(f.price)
        c.fills += 1
        c.notional += abs(qty * px)
        c.fees += float(f.fee)
        t = decided.get(f.client_order_id)
        mid = math.nan
        if t is not None:
            mid = float(mids_at(run, (f.venue.value, f.symbol), np.array([t], dtype=np.int64))[0])
        if not math.isfinite(mid):
            c.unmatched_fills += 1
            continue
        sign = 1.0 if f.side is Side.BUY else -1.0
        c.slippage += sign * (px - mid) * qty
        c.matched_notional += abs(qty * mid)
    return out


def snapshot_exposure(run: Run, grid: Grid, equity: F64) -> dict[str, Any]:
    """Share of grid points with an open position, and mean gross notional / equity, from the snapshots."""
    at = grid.times
    if not len(at):
        return {"time_in_market": None, "mean_gross_leverage": None}
    by_venue: dict[str, list[EquitySnapshot]] = defaultdict(list)
    for s in run.events.equity:
        by_venue[s.venue.value].append(s)
    gross = np.zeros(len(at))
    for rows in by_venue.values():
        rows.sort(key=lambda s: s.ts_recv)
        ts = np.array([s.ts_recv for s in rows], dtype=np.int64)
        g = np.array([sum(abs(float(p.qty)) * float(p.mark if p.mark is not None else p.avg_price)
                          for p in s.positions) for s in rows], dtype=np.float64)
        gross += sample(grid, ts, g, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lev = np.where(equity > 0, gross / np.where(equity > 0, equity, 1.0), np.nan)
    return {"time_in_market": float(np.mean(gross > 0)), "mean_gross_leverage": finite(float(np.nanmean(lev)))
            if np.isfinite(lev).any() else None}


def position_paths(run: Run, fills: Sequence[Fill], at: I64) -> dict[tuple[str, str, str], F64]:
    """Each (strategy, venue, symbol)'s own signed position at each time, from its fills."""
    rows: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    pos: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
    fold: dict[tuple[str, str, str], int] = {}
    spans = run.scope()
    for f in fills:
        key = (f.strategy, f.venue.value, f.symbol)
        k = run.fold_of(f.ts_recv)
        if fold.get(key, k) != k:  # a new walk-forward fold: its run started flat
            pos[key] = ZERO
            rows[key].append((spans[k][0], 0.0))
        fold[key] = k
        pos[key] += f.qty if f.side is Side.BUY else -f.qty
        rows[key].append((f.ts_recv, float(pos[key])))
    out = {}
    for key, r in sorted(rows.items()):
        ts = np.array([t for t, _ in r], dtype=np.int64)
        q = np.array([v for _, v in r], dtype=np.float64)
        out[key] = last_at(ts, q, at, 0.0).astype(np.float64)
    return out


def scoped_fills(run: Run) -> list[Fill]:
    return [f for f in run.events.fills if run.in_scope(f.ts_recv)]


def portfolio_section(run: Run, grid: Grid) -> tuple[dict[str, Any], Curve, list[Fill]]:
    """The whole account's figures (returns, trades, costs, exposure, fees and funding)."""
    curve = strategy_curve(run, grid)
    fills = scoped_fills(run)
    trips = round_trips(fills, run.fold_of)
    end = grid.times[-1:] if len(grid.times) else np.array([run.span_ns[1]], dtype=np.int64)
    marks = {k: float(mids_at(run, k, end)[0]) for k in run.events.prices}
    mean_eq = float(np.mean(curve.equity)) if len(curve.equity) else None
    cost = costs_by(run, fills, lambda f: "all").get("all", Costs())
    section = {"returns": return_metrics(curve, run), "trades": trade_metrics(trips, marks),
               "costs": cost.to_dict(mean_eq), "exposure": snapshot_exposure(run, grid, curve.equity),
               "funding": cumulative(run, "funding"), "fees_booked": cumulative(run, "fees")}
    return section, curve, fills


def cumulative(run: Run, name: str) -> float:
    """A cumulative snapshot field (fees, funding) summed over accounts: its change over the span (a replay),
    or, with several spans in scope (walk-forward folds, each a run starting from zero), the sum of each
    span's last value."""
    total = 0.0
    by_venue: dict[str, list[EquitySnapshot]] = defaultdict(list)
    for s in run.events.equity:
        by_venue[s.venue.value].append(s)
    spans = run.scope()
    for rows in by_venue.values():
        rows.sort(key=lambda s: s.ts_recv)
        ts = np.array([s.ts_recv for s in rows], dtype=np.int64)
        v = np.array([float(getattr(s, name)) for s in rows], dtype=np.float64)
        for a, b in spans:
            if len(spans) > 1:
                inside = (ts >= a) & (ts <= b)
                total += float(v[inside][-1]) if inside.any() else 0.0
                continue
            ends = last_at(ts, v, np.array([a - 1, b], dtype=np.int64), 0.0)
            total += float(ends[1] - ends[0])
    return total
