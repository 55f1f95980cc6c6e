"""The report's breakdowns: per strategy, per symbol, book health and the risk gate's record.

Per strategy and per symbol: its round trips (``replay.metrics.trade_metrics``), costs (fees, slippage,
turnover over the account's mean equity), exposure from its own fills (the share of grid points with a
non-zero position, the mean gross notional ``|qty| * mid`` in the quote asset), its PnL (closed trips plus
the open ones marked at the last mid), and for a strategy the signals of its model, its targets and its
denials. A symbol's exposure is the net position of every strategy trading it.

Book health: each ``BookHealth`` that leaves LIVE after the book was first live is an incident (by state
and reason; the first sync at start is none, and neither is a book going stale after its own last Price,
its recording having ended: ``after_data_end``); the time not live runs from it to the next LIVE, the
book's last Price or the end of the span, whichever comes first, counted in replayed-data time (between
neighbouring grid points: a gap between two recorded sessions adds nothing); ``BookCrossed`` events are
counted with the levels they removed. Risk: denials by reason (and by strategy), every trading-state
change with the time spent in each state (replayed-data time, as for books), strategy stops and restarts
by reason. Walk-forward runs count only what happened in the test spans.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from bot.events import BookState
from bot.orders import Fill, TradingState
from replay.metrics import GAP_BARS, NS, Grid, mids_at
from replay.report_data import Key, Run
from replay.report_trades import Costs, costs_by, position_paths, round_trips, trade_metrics


def _exposure(paths: list[tuple[Key, np.ndarray]], run: Run, at: np.ndarray) -> dict[str, Any]:
    if not len(at) or not paths:
        return {"time_in_market": 0.0 if len(at) else None, "mean_gross_notional": 0.0 if len(at) else None}
    gross = np.zeros(len(at))
    held = np.zeros(len(at), dtype=bool)
    for key, qty in paths:
        mid = mids_at(run, key, at)
        gross += np.where(np.isfinite(mid), np.abs(qty) * np.nan_to_num(mid), 0.0)
        held |= qty != 0
    return {"time_in_market": float(held.mean()), "mean_gross_notional": float(gross.mean())}


def _marks(run: Run, grid: Grid) -> dict[Key, float]:
    end = grid.times[-1:] if len(grid.times) else np.array([run.span_ns[1]], dtype=np.int64)
    return {k: float(mids_at(run, k, end)[0]) for k in run.events.prices}


def strategy_section(run: Run, grid: Grid, fills: list[Fill], mean_equity: float | None) -> dict[str, Any]:
    at = grid.times
    paths = position_paths(run, fills, at)
    marks = _marks(run, grid)
    costs = costs_by(run, fills, lambda f: f.strategy)
    names = [str(s["name"]) for s in run.meta["strategies"]]
    names += sorted({f.strategy for f in fills} - set(names))
    signals = Counter(s.model for s in run.events.signals if run.in_scope(s.ts_recv))
    targets = Counter(t.strategy for t in run.events.targets if run.in_scope(t.ts_recv))
    denials = Counter(d.strategy for d in run.events.denials if run.in_scope(d.ts_recv))
    conf = {str(s["name"]): s for s in run.meta["strategies"]}
    out: dict[str, Any] = {}
    for name in names:
        trips = round_trips([f for f in fills if f.strategy == name], run.fold_of)
        trades = trade_metrics(trips, marks)
        c = conf.get(name, {})
        model = c.get("model")
        out[name] = {
            "kind": c.get("kind"), "venue": c.get("venue"), "symbols": list(c.get("symbols", [])), "model": model,
            "trades": trades, "pnl": trades["closed_pnl"] + trades["open_pnl"],
            "costs": costs.get(name, Costs()).to_dict(mean_equity),
            "exposure": _exposure([((v, s), q) for (st, v, s), q in paths.items() if st == name], run, at),
            "signals": signals.get(str(model), 0) if model else sum(signals.values()),
            "targets": targets.get(name, 0), "denials": denials.get(name, 0),
        }
    return out


def symbol_section(run: Run, grid: Grid, fills: list[Fill], mean_equity: float | None) -> dict[str, Any]:
    at = grid.times
    paths = position_paths(run, fills, at)
    marks = _marks(run, grid)
    costs = costs_by(run, fills, lambda f: (f.venue.value, f.symbol))
    keys = sorted({(f.venue.value, f.symbol) for f in fills} | {(str(s.get("venue")), str(sym))
                  for s in run.meta["strategies"] for sym in s.get("symbols", [])})
    out: dict[str, Any] = {}
    for key in keys:
        net = sum((q for (_, v, s), q in paths.items() if (v, s) == key), np.zeros(len(at)))
        trips = round_trips([f for f in fills if (f.venue.value, f.symbol) == key], run.fold_of)
        trades = trade_metrics(trips, marks)
        got = run.events.prices.get(key)
        out[f"{key[0]}:{key[1]}"] = {
            "trades": trades, "pnl": trades["closed_pnl"] + trades["open_pnl"],
            "costs": costs.get(key, Costs()).to_dict(mean_equity),
            "exposure": _exposure([(key, net)], run, at),
            "first_mid": float(got[1][0]) if got is not None and len(got[1]) else None,
            "last_mid": marks.get(key),
        }
    return out


def book_section(run: Run, grid: Grid) -> dict[str, Any]:
    books: dict[str, dict[str, Any]] = defaultdict(lambda: {"incidents": 0, "by_state": Counter(),
                                                            "by_reason": Counter(), "not_live_s": 0.0,
                                                            "after_data_end": 0, "crossed": 0,
                                                            "crossed_levels_removed": 0})
    down_since: dict[str, int] = {}
    was_live: set[str] = set()
    data_end: dict[str, int] = {f"{v}:{s}": int(ts[-1]) for (v, s), (ts, _) in run.events.prices.items() if len(ts)}

    def close(key: str, until: int) -> None:
        since = down_since.pop(key)
        books[key]["not_live_s"] += _active_s(grid, since, min(until, data_end.get(key, until)))

    for h in sorted(run.events.book_health, key=lambda e: e.ts_recv):
        key = f"{h.venue.value}:{h.symbol}"
        b = books[key]
        if h.state is BookState.LIVE:
            was_live.add(key)
            if key in down_since:
                close(key, h.ts_recv)
            continue
        if key not in was_live or not run.in_scope(h.ts_recv):
            continue  # the first sync at start is no incident
        if h.ts_recv > data_end.get(key, run.span_ns[1]):
            b["after_data_end"] += 1  # the book's recording ended: stale from then on
            continue
        down_since.setdefault(key, h.ts_recv)
        b["incidents"] += 1
        b["by_state"][h.state.value] += 1
        b["by_reason"][h.reason] += 1
    for key in list(down_since):
        close(key, run.span_ns[1])
    for c in run.events.book_crossed:
        if run.in_scope(c.ts_recv):
            b = books[f"{c.venue.value}:{c.symbol}"]
            b["crossed"] += 1
            b["crossed_levels_removed"] += c.removed_levels
    return {k: v | {"by_state": dict(sorted(v["by_state"].items())), "by_reason": dict(sorted(v["by_reason"].items()))}
            for k, v in sorted(books.items())}


def _active_s(grid: Grid, a: int, b: int) -> float:
    """Seconds of [a, b] between neighbouring grid points of one span that are no gap (so the time between
    two recorded sessions, and spans out of scope, count nothing)."""
    total = 0
    limit = GAP_BARS * grid.bar_s * grid.thinned * NS
    for t in grid.segments:
        lo, hi = t[:-1], t[1:]
        keep = (hi - lo) <= limit
        total += int(np.clip(np.minimum(hi[keep], b) - np.maximum(lo[keep], a), 0, None).sum())
    return total / NS


def risk_section(run: Run, grid: Grid) -> dict[str, Any]:
    denials = [d for d in run.events.denials if run.in_scope(d.ts_recv)]
    by_reason = Counter(d.reason for d in denials)
    by_strategy: dict[str, Counter[str]] = defaultdict(Counter)
    for d in denials:
        by_strategy[d.strategy][d.reason] += 1
    changes = sorted(run.events.risk_states, key=lambda e: e.ts_recv)
    time_in: dict[str, float] = defaultdict(float)
    state, since = TradingState.ACTIVE.value, run.span_ns[0]
    for ch in changes:
        time_in[state] += _active_s(grid, since, ch.ts_recv)
        state, since = ch.state.value, ch.ts_recv
    time_in[state] += _active_s(grid, since, run.span_ns[1])
    health = Counter(f"{h.strategy}: {'restarted' if h.enabled else 'stopped'} ({h.reason})"
                     for h in run.events.strategy_health if run.in_scope(h.ts_recv))
    return {
        "denials": len(denials), "denials_by_reason": dict(sorted(by_reason.items())),
        "denials_by_strategy": {k: dict(sorted(v.items())) for k, v in sorted(by_strategy.items())},
        "state_changes": [{"ts_ns": ch.ts_recv, "previous": ch.previous.value, "state": ch.state.value,
                           "reason": ch.reason} for ch in changes if run.in_scope(ch.ts_recv)],
        "time_in_state_s": {k: v for k, v in sorted(time_in.items()) if v > 0},
        "strategy_health": dict(sorted(health.items())),
    }
