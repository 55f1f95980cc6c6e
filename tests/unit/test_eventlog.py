"""The replay's event log writes each event as ``{"type": name, **msgspec.to_builtins(ev)}`` in JSON: every
line of the golden demo stream, read back into its event and written again, is the same bytes, and so are
events with the awkward values (NaN, None, empty tuples, Decimals with exponents, nested positions)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from bot.events import BookHealth, BookState, Signal, Venue
from bot.orders import EquitySnapshot, PositionSnapshot
from replay.eventlog import LOGGED, EventLog, Price

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).resolve().parents[1] / "replay" / "golden" / "replay_demo_events.jsonl.zst"
_CLASSES: list[type[Any]] = [*LOGGED, Price]
TYPES = {t.__name__: t for t in _CLASSES}


def _reference(ev: Any) -> bytes:
    return msgspec.json.encode({"type": type(ev).__name__, **msgspec.to_builtins(ev)}) + b"\n"


def _written(tmp_path: Path, events: list[Any]) -> list[bytes]:
    log = EventLog(tmp_path / "events.jsonl")
    for ev in events:
        log.write(ev)
    log.close()
    return (tmp_path / "events.jsonl").read_bytes().splitlines(keepends=True)


def test_every_golden_line_read_back_is_written_as_the_same_bytes(tmp_path: Path) -> None:
    lines = zstandard.ZstdDecompressor().decompress(GOLDEN.read_bytes()).splitlines(keepends=True)
    events = []
    for line in lines:
        d = json.loads(line)
        events.append(msgspec.convert({k: v for k, v in d.items() if k != "type"}, TYPES[d["type"]]))
    assert {type(e).__name__ for e in events} >= {"Signal", "OrderUpdate", "Fill", "EquitySnapshot", "Price"}
    assert _written(tmp_path, events) == lines


def test_awkward_values_are_written_as_to_builtins_writes_them(tmp_path: Path) -> None:
    pos = PositionSnapshot(venue=Venue.BINANCE_SPOT, symbol="BTCUSDT", qty=Decimal("-0.000"), avg_price=Decimal("1E+2"),
                           realized_pnl=Decimal("-1.50"), mark=None, unrealized_pnl=Decimal(0))
    events = [
        Price(ts_event=1, ts_recv=1, venue=Venue.BYBIT_SPOT, symbol="ETHUSDT", mid=float("nan")),
        Price(ts_event=2, ts_recv=2, venue=Venue.BYBIT_SPOT, symbol="ETHUSDT", mid=1e-7),
        Signal(ts_event=3, ts_recv=4, model="m", family="tabl", version="v", code_version="", venue=Venue.BINANCE_USDM,
               symbol="BTCUSDT", horizon="10s", probabilities=(0.1, float("inf")), confidence=None,
               inference_start_ns=5, inference_end_ns=6),
        EquitySnapshot(ts_event=7, ts_recv=7, venue=Venue.BINANCE_SPOT, quote="USDT", cash=Decimal("10.000"),
                       equity=Decimal("1E-8"), fees=Decimal(0), funding=Decimal("-0"), positions=(pos, pos)),
        EquitySnapshot(ts_event=8, ts_recv=8, venue=Venue.BINANCE_SPOT, quote="USDT", cash=Decimal(1),
                       equity=Decimal(1), fees=Decimal(0), funding=Decimal(0), positions=()),
        BookHealth(ts_event=9, ts_recv=9, venue=Venue.BYBIT_LINEAR, symbol="SOLUSDT", state=BookState.STALE,
                   reason='quote " and \\ and é'),
    ]
    assert _written(tmp_path, events) == [_reference(e) for e in events]
