"""Hand-made events and a ready threshold strategy for the strategy tests (test_strategies,
test_strategies_limit): one set of builders, so both files' hand-computed figures rest on the same book
(49,999 / 50,001, mid 50,000) and the same signal shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.events import BookUpdate, Signal, Venue
from bot.orders import Intent, TargetPosition
from strategies.config import ThresholdConfig
from strategies.threshold import ThresholdStrategy

S = 1_000_000_000
T0 = 1_700_000_000 * S
SPOT, USDM, LINEAR = Venue.BINANCE_SPOT, Venue.BINANCE_USDM, Venue.BYBIT_LINEAR
CLASSES = ("down", "stationary", "up")


def sig(ts: int, probs: tuple[float, ...] = (), *, model: str = "m", venue: Venue = SPOT, symbol: str = "BTCUSDT",
        horizon: str = "10s", names: tuple[str, ...] = (), values: tuple[float, ...] = (),
        ts_event: int | None = None) -> Signal:
    """A signal received at ``ts``: class probabilities (``CLASSES``, horizon-major) and/or named values."""
    return Signal(ts_event=ts if ts_event is None else ts_event, ts_recv=ts, model=model, family="f",
                  version="v", code_version="", venue=venue, symbol=symbol, horizon=horizon,
                  classes=CLASSES if probs else (), probabilities=probs, value_names=names, values=values,
                  inference_start_ns=ts, inference_end_ns=ts)


def book(ts: int, bid: float, ask: float, *, venue: Venue = SPOT, symbol: str = "BTCUSDT") -> BookUpdate:
    return BookUpdate(ts_event=ts, ts_recv=ts, venue=venue, symbol=symbol, update_id=1, bid_px=bid, bid_sz=1.0,
                      ask_px=ask, ask_sz=1.0)


def only_target(intents: Iterable[Intent]) -> TargetPosition:
    out = list(intents)
    assert len(out) == 1, out
    t = out[0]
    assert isinstance(t, TargetPosition)
    return t


def threshold(**kw: Any) -> ThresholdStrategy:
    """A threshold strategy (0.4, 100 USDT of BTCUSDT; ``kw``: other config fields) that has seen the book
    49,999 / 50,001 (mid 50,000: 100 USDT = 0.002 BTC)."""
    cfg: dict[str, Any] = {"name": "t", "kind": "threshold", "model": "m", "venue": SPOT, "symbols": ["BTCUSDT"],
                           "threshold": 0.4, "notional": 100, **kw}
    s = ThresholdStrategy(ThresholdConfig(**cfg))
    s.on_book(book(T0, 49_999.0, 50_001.0, venue=cfg["venue"]))
    return s
