"""Writes replay run directories from hand-made events, in exactly the replay engine's format:
``run.json`` and ``events.jsonl`` with ``{"type": <class name>, **msgspec.to_builtins(event)}`` lines
(the bot's own event classes) and ``{"type": "Price", ...}`` mids. Used by the report's tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from bot.events import BookCrossed, BookHealth, BookState, Side, Signal, Venue
from bot.orders import (
    EquitySnapshot,
    Fill,
    Liquidity,
    OrderDenied,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionSnapshot,
    RiskStateChanged,
    TimeInForce,
    TradingState,
)

T0 = 1_700_000_000 * 1_000_000_000
S = 1_000_000_000
SPOT = Venue.BINANCE_SPOT


def price(ts: int, mid: float, symbol: str = "BTCUSDT", venue: Venue = SPOT) -> dict[str, Any]:
    return {"type": "Price", "ts_event": ts, "ts_recv": ts, "venue": venue.value, "symbol": symbol, "mid": mid}


def line(event: msgspec.Struct | dict[str, Any]) -> str:
    obj = event if isinstance(event, dict) else {"type": type(event).__name__, **msgspec.to_builtins(event)}
    return json.dumps(obj)


def meta(**changes: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "version": 1, "mode": "replay", "sources": ["/abs/path/rec_spot"], "config_sha256": "ab" * 32,
        "span_ns": [T0, T0 + 240 * S], "bar_s": 60.0, "accounts": {"binance_spot": {"USDT": "10000"}},
        "strategies": [{"name": "thr", "kind": "threshold", "venue": "binance_spot", "symbols": ["BTCUSDT"],
                        "model": "tabl_x"}],
        "folds": [], "feed": {"messages": 123, "unroutable": {}}, "models": {"tabl_x": {"predictions": 3}},
        "baseline": None,
    }
    m.update(changes)
    return m


def write_run(path: Path, events: Iterable[msgspec.Struct | dict[str, Any]], run_meta: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps(run_meta, indent=1))
    (path / "events.jsonl").write_text("".join(line(e) + "\n" for e in events))
    return path


def equity(ts: int, value: str, positions: tuple[tuple[str, str], ...] = (), venue: Venue = SPOT,
           fees: str = "0", funding: str = "0") -> EquitySnapshot:
    """A snapshot with ``positions`` as (qty, mark) of BTCUSDT."""
    pos = tuple(PositionSnapshot(venue=venue, symbol="BTCUSDT", qty=Decimal(q), avg_price=Decimal(m),
                                 realized_pnl=Decimal(0), mark=Decimal(m), unrealized_pnl=Decimal(0))
                for q, m in positions)
    return EquitySnapshot(ts_event=ts, ts_recv=ts, venue=venue, quote="USDT", cash=Decimal(value),
                          equity=Decimal(value), fees=Decimal(fees), funding=Decimal(funding), positions=pos)


def order_new(ts: int, cid: str, side: Side, qty: str, strategy: str = "thr") -> OrderUpdate:
    return OrderUpdate(ts_event=ts, ts_recv=ts, client_order_id=cid, strategy=strategy, venue=SPOT,
                       symbol="BTCUSDT", side=side, order_type=OrderType.MARKET, tif=TimeInForce.IOC,
                       qty=Decimal(qty), price=None, status=OrderStatus.NEW)


def fill(ts: int, cid: str, side: Side, qty: str, px: str, fee: str, strategy: str = "thr") -> Fill:
    return Fill(ts_event=ts, ts_recv=ts, client_order_id=cid, strategy=strategy, venue=SPOT, symbol="BTCUSDT",
                side=side, qty=Decimal(qty), price=Decimal(px), fee=Decimal(fee), fee_asset="USDT",
                liquidity=Liquidity.TAKER, trade_id=f"t-{cid}-{ts}")


def signal(ts: int, probs: tuple[float, ...], attention: str = "", model: str = "tabl_x", family: str = "tabl",
           horizon: str = "1m,2m", symbol: str = "BTCUSDT", values: tuple[float, ...] = (),
           value_names: tuple[str, ...] = ()) -> Signal:
    return Signal(ts_event=ts, ts_recv=ts + S // 2, model=model, family=family, version="0" * 12, code_version="",
                  venue=SPOT, symbol=symbol, horizon=horizon, classes=("down", "stationary", "up") if probs else (),
                  probabilities=probs, value_names=value_names, values=values,
                  confidence=max(probs) if probs else None, attention=attention, inference_start_ns=ts,
                  inference_end_ns=ts + 1000)


def hand_run() -> list[msgspec.Struct | dict[str, Any]]:
    """The hand-checked run of tests/unit/test_report.py (numbers worked out in its docstring)."""
    g = [T0 + k * 60 * S for k in range(5)]
    mids = [100.0, 102.0, 101.0, 104.0, 103.0]
    ev: list[msgspec.Struct | dict[str, Any]] = []
    ev += [price(t, m) for t, m in zip(g, mids, strict=True)]
    ev += [equity(g[0], "10000"), equity(g[1], "10100", (("50", "102"),)), equity(g[2], "10050", (("50", "101"),)),
           equity(g[3], "10200"), equity(g[4], "10150", (("20", "103"),), fees="8")]
    ev += [
        signal(g[0], (0.1, 0.2, 0.7, 0.6, 0.3, 0.1), "t-0 0.50 t-2 0.30 t-1 0.20"),
        signal(g[2], (0.2, 0.7, 0.1, 0.5, 0.2, 0.3), "t-1 0.60 t-0 0.30 t-3 0.10"),
        signal(g[3], (0.8, 0.1, 0.1, 0.1, 0.1, 0.8), "t-0 0.90 t-1 0.05 t-2 0.05"),
        signal(g[0], (0.2, 0.2, 0.6), "ETHUSDT 0.70", model="ca", family="crossasset", horizon="1m"),
        signal(g[0], (0.6, 0.2, 0.2), "BTCUSDT 0.60", model="ca", family="crossasset", horizon="1m",
               symbol="ETHUSDT"),
        order_new(g[0], "o1", Side.BUY, "50"), fill(g[0] + 1 * S, "o1", Side.BUY, "50", "100.5", "2.5"),
        order_new(g[2], "o2", Side.SELL, "50"), fill(g[2] + 1 * S, "o2", Side.SELL, "50", "100.8", "2.5"),
        order_new(g[3], "o3", Side.SELL, "20"), fill(g[3] + 1 * S, "o3", Side.SELL, "20", "103.9", "1"),
        order_new(g[3] + 10 * S, "o4", Side.BUY, "40"), fill(g[3] + 20 * S, "o4", Side.BUY, "40", "104.2", "2"),
        BookHealth(ts_event=T0, ts_recv=T0, venue=SPOT, symbol="BTCUSDT", state=BookState.SYNCING, reason="start"),
        BookHealth(ts_event=T0 + 1, ts_recv=T0 + 1, venue=SPOT, symbol="BTCUSDT", state=BookState.LIVE,
                   reason="in sync"),
        BookHealth(ts_event=T0 + 10 * S, ts_recv=T0 + 10 * S, venue=SPOT, symbol="BTCUSDT",
                   state=BookState.RESYNCING, reason="gap"),
        BookHealth(ts_event=T0 + 40 * S, ts_recv=T0 + 40 * S, venue=SPOT, symbol="BTCUSDT", state=BookState.LIVE,
                   reason="synced"),
        BookCrossed(ts_event=T0 + 50 * S, ts_recv=T0 + 50 * S, venue=SPOT, symbol="BTCUSDT", bid_px=101.0,
                    ask_px=100.9, removed_levels=2),
        OrderDenied(ts_event=T0 + 100 * S, ts_recv=T0 + 100 * S, strategy="thr", venue=SPOT, symbol="BTCUSDT",
                    side=Side.BUY, qty=Decimal("0.001"), reason="min_notional"),
        OrderDenied(ts_event=T0 + 101 * S, ts_recv=T0 + 101 * S, strategy="thr", venue=SPOT, symbol="BTCUSDT",
                    side=None, qty=Decimal("1"), reason="max_position"),
        RiskStateChanged(ts_event=T0 + 150 * S, ts_recv=T0 + 150 * S, previous=TradingState.ACTIVE,
                         state=TradingState.REDUCING, reason="book_resyncing"),
        RiskStateChanged(ts_event=T0 + 210 * S, ts_recv=T0 + 210 * S, previous=TradingState.REDUCING,
                         state=TradingState.ACTIVE, reason="book_resyncing"),
    ]
    return sorted(ev, key=lambda e: e["ts_recv"] if isinstance(e, dict) else e.ts_recv)  # type: ignore[attr-defined]
