"""The figures of a replay run, from its event stream (``replay.report_data``): returns, risk, trades, costs,
exposure, per strategy and per symbol, and the same for buy-and-hold and the no-model baseline.

Definitions (every time is an event's ``ts_recv``, the replay clock):

* **Equity grid.** Points ``span_start + k * bar_s`` up to the span's end (walk-forward: the same within
  each fold's test span, and nothing else: the report covers the test spans only), where the data flows:
  a stretch with no Price for more than 10 bars (sessions of different days replayed back to back) is
  skipped and its change counts as one period (``run.grid`` says how many such gaps). At each point an
  account's equity is its last ``EquitySnapshot`` at or before it (its starting balance before the first);
  the portfolio's is the sum over accounts. Per-period returns ``r = E_k / E_(k-1) - 1`` are taken between
  neighbouring points of one span (never across the gap between two test spans).
* **Total return** ``prod(1 + r) - 1``; **Sharpe** ``mean(r) / std(r, ddof=1) * sqrt(P)`` and **Sortino**
  ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(P)`` with ``P = 365 * 86400 / bar_s`` periods a year (no
  risk-free rate); **max drawdown** the largest ``1 - E / running peak`` of the compounded curve, its
  **duration** the longest stretch (s) spent below a previous peak.
* **Round trip** (a "trade"): per (strategy, venue, symbol), from the fill that takes the strategy's own
  position away from zero to the fill that brings it back to zero; a fill through zero closes one trip and
  opens the next with the rest of its quantity (its fee split pro rata). A trip's PnL is its cash flow
  ``-sum(signed qty * price) - fees`` (quote asset; funding is not allotted to trips). Trips still open at
  the end are counted apart and are not in the win rate. **Win rate**: trips with PnL > 0 over closed trips;
  **profit factor**: gross profit / gross loss of closed trips (None without a losing trip); **holding
  time**: exit fill time - entry fill time.
* **Turnover**: traded notional ``sum |qty * price|`` over fills, and that over the mean equity.
* **Fees**: the fills' fees. **Slippage** of a fill: ``side * (fill price - mid) * qty`` (side +1 buy,
  -1 sell; positive = paid), ``mid`` being the last ``Price`` of the order's symbol at or before the order's
  decision time, the ``ts_recv`` of its first ``OrderUpdate`` (status ``new``, stamped with the risk gate's
  decision time). The Price series is a grid sample, so that mid may be up to one grid step old. A fill
  whose order or mid is unknown is left out and counted. In bps: total slippage / matched notional * 1e4.
* **Exposure**: the share of grid points at which any position is open (from the snapshots; per
  strategy: from its own fills), and the mean gross notional ``sum |qty| * mark`` over equity.
* **Buy-and-hold**: the summed starting balances split equally over the strategies' (venue, symbol)s,
  each share bought at that symbol's first Price (cash until then), no fees, held to the end; valued on the
  same grid with the last Price at or before each point.

Every statistic of returns or hits carries a 95% circular block-bootstrap interval (``bot.bootstrap``;
block n^(1/3) for grid returns and trips, the horizon in signals for hit rates); comparisons resample the
two return series with the same indices and say "beats" only when the interval of the difference excludes 0
on the right side (``bot.bootstrap.verdict``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.bootstrap import (
    Interval,
    bootstrap,
    mean_stat,
    rule_of_thumb_block,
    sharpe_rows,
    sortino_rows,
    verdict,
)
from bot.orders import EquitySnapshot, Fill
from replay.report_data import Key, Run

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
NS = 1_000_000_000

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


# -- the grid --------------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Sample times of the equity curve, one array per span in scope."""

    segments: list[I64]
    bar_s: float
    gaps: int = 0  # stretches without prices longer than GAP_BARS bars, each collapsed into one period
    gap_s: float = 0.0
    thinned: int = 1  # every n-th point kept (more than MAX_GRID points)

    @property
    def times(self) -> I64:
        return np.concatenate(self.segments) if self.segments else np.zeros(0, dtype=np.int64)

    def returns(self, values: F64) -> F64:
        """Per-period simple returns within each segment of ``values`` (sampled at ``times``)."""
        out, i = [], 0
        for seg in self.segments:
            v = values[i : i + len(seg)]
            i += len(seg)
            if len(v) > 1:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out.append(np.where(v[:-1] != 0, v[1:] / np.where(v[:-1] != 0, v[:-1], 1.0) - 1.0, 0.0))
        return np.concatenate(out) if out else np.zeros(0)

    @property
    def periods_per_year(self) -> float:
        return 365 * 86400 / (self.bar_s * self.thinned)

    def describe(self) -> dict[str, Any]:
        return {"points": len(self.times), "step_s": self.bar_s * self.thinned,
                "periods_per_year": self.periods_per_year, "gaps": self.gaps,
                "gap_s": self.gap_s, "gap_rule": f"no Price for more than {GAP_BARS} bars: one period"}


GAP_BARS = 10
MAX_GRID = 2_000_000


def make_grid(run: Run) -> Grid:
    """The bar_s grid of each span in scope, where the data flows: a stretch with no Price for more than
    ``GAP_BARS`` bars (recordings of different days replayed back to back) is one period, not millions of
    empty ones; more than ``MAX_GRID`` points are thinned to every n-th."""
    step = max(1, round(run.bar_s * NS))
    prices = [ts for ts, _ in run.events.prices.values() if len(ts)]
    price_ts = np.unique(np.concatenate(prices)) if prices else np.zeros(0, dtype=np.int64)
    grid = Grid([], run.bar_s)
    for a, b in run.scope():
        if b < a:
            continue
        t = price_ts[(price_ts >= a) & (price_ts <= b)]
        if not len(t):
            ks = np.arange(0, (b - a) // step + 1, dtype=np.int64)
        else:
            cuts = np.flatnonzero(np.diff(t) > GAP_BARS * step)
            starts, ends = np.r_[t[0], t[cuts + 1]], np.r_[t[cuts], t[-1]]
            grid.gaps += len(cuts)
            grid.gap_s += float(np.sum(starts[1:] - ends[:-1])) / NS
            parts = [np.arange(-(-(s0 - a) // step), (e0 - a) // step + 1, dtype=np.int64)
                     for s0, e0 in zip(starts, ends, strict=True)]
            ks = np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *parts]))
        grid.segments.append(a + ks * step)
    total = sum(len(s) for s in grid.segments)
    if total > MAX_GRID:
        grid.thinned = -(-total // MAX_GRID)
        grid.segments = [np.unique(np.r_[s[:: grid.thinned], s[-1:]]) for s in grid.segments]
    grid.segments = [s for s in grid.segments if len(s)]
    return grid


def last_at(ts: I64, values: NDArray[Any], at: I64, default: Any) -> NDArray[Any]:
    """``values`` of the last ``ts`` at or before each of ``at`` (``ts`` sorted), ``default`` before the first."""
    idx = np.searchsorted(ts, at, side="right") - 1
    out = np.where(idx >= 0, values[np.maximum(idx, 0)] if len(values) else default, default)
    return np.asarray(out)


def mids_at(run: Run, key: Key, at: I64) -> F64:
    """The last Price mid of ``key`` at or before each time (NaN before the first)."""
    got = run.events.prices.get(key)
    if got is None:
        return np.full(len(at), np.nan)
    return last_at(got[0], got[1], at, np.nan).astype(np.float64)


# -- equity and returns ------------------------------------------------------------------------------------


@dataclass
class Curve:
    """A portfolio's equity sampled on the grid, and its per-period returns."""

    name: str
    times: I64
    equity: F64
    returns: F64
    periods_per_year: float


def equity_by_account(run: Run, grid: Grid) -> dict[str, F64]:
    """Each account's equity at each grid point: its last snapshot at or before it, else its starting
    balance. With several spans in scope (walk-forward: each fold is a run of its own, its accounts
    starting afresh) only a span's own snapshots count, the first standing in before it (so no return is
    ever made of one fold's end and the next one's start)."""
    start = run.starting_equity()
    snaps: dict[str, list[EquitySnapshot]] = defaultdict(list)
    for s in run.events.equity:
        snaps[s.venue.value].append(s)
    out = {}
    for venue in sorted(set(start) | set(snaps)):
        rows = sorted(snaps.get(venue, []), key=lambda s: s.ts_recv)
        ts = np.array([s.ts_recv for s in rows], dtype=np.int64)
        eq = np.array([float(s.equity) for s in rows], dtype=np.float64)
        out[venue] = sample(grid, ts, eq, start.get(venue, 0.0), backfill=True)
    return out


def sample(grid: Grid, ts: I64, values: F64, default: float, backfill: bool = False) -> F64:
    """``values`` (at sorted ``ts``) at the grid points: the last at or before each, ``default`` before the
    first. With several spans, each span sees only its own values (``backfill``: its first one stands in
    before it, else ``default``)."""
    if len(grid.segments) <= 1:
        return last_at(ts, values, grid.times, default).astype(np.float64)
    parts = []
    for seg in grid.segments:
        inside = (ts >= seg[0]) & (ts <= seg[-1])
        first = float(values[inside][0]) if backfill and inside.any() else default
        parts.append(last_at(ts[inside], values[inside], seg, first).astype(np.float64))
    return np.concatenate(parts)


def strategy_curve(run: Run, grid: Grid) -> Curve:
    at = grid.times
    accounts = equity_by_account(run, grid)
    total = np.sum(list(accounts.values()), axis=0) if accounts else np.zeros(len(at))
    return Curve("strategy", at, total, grid.returns(total), grid.periods_per_year)


def traded_keys(run: Run) -> list[Key]:
    """Every (venue, symbol) a configured strategy trades, in run.json order, once each."""
    keys: list[Key] = []
    for s in run.meta["strategies"]:
        for sym in s.get("symbols", []):
            k = (str(s.get("venue")), str(sym))
            if k not in keys:
                keys.append(k)
    return keys


def buy_and_hold_curve(run: Run, grid: Grid) -> Curve:
    at = grid.times
    capital = sum(run.starting_equity().values())
    keys = [k for k in traded_keys(run) if k in run.events.prices]
    equity = np.full(len(at), capital, dtype=np.float64)
    if keys:
        share = capital / len(keys)
        equity = np.zeros(len(at))
        for k in keys:
            first = run.events.prices[k][1][0]
            held = mids_at(run, k, at)
            equity += np.where(np.isnan(held), share, share * held / first)
    return Curve("buy_and_hold", at, equity, grid.returns(equity), grid.periods_per_year)


def boot(stat: Any, *series: NDArray[Any], block: int) -> Interval:
    return bootstrap(stat, *series, block=block, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def interval_dict(i: Interval) -> dict[str, Any]:
    d = i.to_dict()
    return {"low": d["low"], "high": d["high"], "block": i.block}


def total_return_rows(r: F64) -> F64:
    out: F64 = np.prod(1.0 + r, axis=1) - 1.0
    return out


def drawdown_rows(r: F64) -> F64:
    """Max drawdown (a fraction) of the curve compounded from each row of returns."""
    curve = np.cumprod(1.0 + np.concatenate([np.zeros((r.shape[0], 1)), r], axis=1), axis=1)
    peak = np.maximum.accumulate(curve, axis=1)
    out: F64 = np.max(1.0 - curve / peak, axis=1)
    return out


def drawdown_duration_s(r: F64, bar_s: float) -> float:
    """The longest run of periods spent below a previous peak of the compounded curve, in seconds."""
    curve = np.cumprod(np.concatenate([[1.0], 1.0 + r]))
    peak = np.maximum.accumulate(curve)
    longest = run = 0
    for under in curve < peak * (1 - 1e-12):
        run = run + 1 if under else 0
        longest = max(longest, run)
    return longest * bar_s


def return_metrics(curve: Curve, run: Run) -> dict[str, Any]:
    """Total return, Sharpe, Sortino, drawdown (with intervals), volatility, start and end equity."""
    r = curve.returns
    n = len(r)
    ppy = curve.periods_per_year
    scale = math.sqrt(ppy)
    block = rule_of_thumb_block(n)
    out: dict[str, Any] = {"periods": n, "bar_s": run.bar_s, "periods_per_year": ppy,
                           "start_equity": float(curve.equity[0]) if len(curve.equity) else None,
                           "end_equity": float(curve.equity[-1]) if len(curve.equity) else None}
    if n == 0:
        return out | {"total_return": None, "sharpe": None, "sortino": None, "max_drawdown": None,
                      "max_drawdown_duration_s": None, "volatility": None, "mean_return": None}
    stats = {
        "total_return": total_return_rows,
        "mean_return": mean_stat,
        "sharpe": lambda x: sharpe_rows(x, scale),
        "sortino": lambda x: sortino_rows(x, scale),
        "max_drawdown": drawdown_rows,
    }
    for name, stat in stats.items():
        iv = boot(stat, r, block=block)
        out[name] = finite(iv.estimate)
        out[f"{name}_interval"] = interval_dict(iv)
    out["volatility"] = float(np.std(r, ddof=1) * scale) if n > 1 else None
    out["max_drawdown_duration_s"] = drawdown_duration_s(r, run.bar_s)
    return out


def finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def compare_curves(ours: Curve, theirs: Curve, vs: str) -> list[dict[str, Any]]:
    """Paired differences (ours - theirs) of mean period return and Sharpe, with their verdicts."""
    if len(ours.returns) != len(theirs.returns) or not np.array_equal(ours.times, theirs.times):
        return [{"vs": vs, "statistic": s, "difference": None, "interval": None, "verdict": "not comparable",
                 "why": "the two runs are not sampled on the same grid (different span or bar_s)"}
                for s in ("mean_return", "sharpe")]
    scale = math.sqrt(ours.periods_per_year)
    block = rule_of_thumb_block(len(ours.returns))
    stats = {"mean_return": lambda a, b: mean_stat(a) - mean_stat(b),
             "sharpe": lambda a, b: sharpe_rows(a, scale) - sharpe_rows(b, scale)}
    out: list[dict[str, Any]] = []
    for name, stat in stats.items():
        if len(ours.returns) == 0:
            out.append({"vs": vs, "statistic": name, "difference": None, "interval": None,
                        "verdict": "indistinguishable", "why": "no returns"})
            continue
        iv = boot(stat, ours.returns, theirs.returns, block=block)
        out.append({"vs": vs, "statistic": name, "difference": finite(iv.estimate), "interval": interval_dict(iv),
                    "verdict": verdict(iv)})
    return out


# -- the analysis of a run ------------------------------------------------------------------------------


@dataclass
class Analysis:
    """A run's report (JSON-able) and the series its plots draw."""

    report: dict[str, Any]
    grid: Grid
    strategy: Curve
    buy_and_hold: Curve
    baseline: Curve | None
    fills: list[Fill] = field(default_factory=list)
