"""Tick-to-intent latency: from a depth frame's arrival to the risk-checked order intent, p50 / p99.

    python bench/intent_latency.py [--duration 30] [--speed 1]

The live path, with real sockets: the loopback exchange replays real recorded traffic for 16 books (the 8
recorded books that config.toml trades plus 8 copies of recorded sessions under other names: BTCX1USDT ...
are real BTC/ETH streams replayed a second time, so the load is real traffic), the collector parses frames into
books, the bus fans out to the LOB rings, the kline store and the engine, and all shipped model families
run on their threads beside it. A probe strategy answers every book update of every book with an order
intent (a passive limit order at the best bid), which goes through the engine and the real risk gate
(instrument rules from the exchange, every limit checked); execution is a null sink, so what is timed ends
at the gate's verdict. Latency = wall clock when the gate returned - the frame's receive stamp (taken by the
collector right after the socket read).

Two runs in the same process: the baseline without model workers, then with all model families loaded;
the ratio says what the models' threads cost the hot path. Target: p99 under 5 ms on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bot.bus import EventBus  # noqa: E402
from bot.clock import LiveClock  # noqa: E402
from bot.config import BotSettings, RiskConfig, load_settings  # noqa: E402
from bot.demo import DEMO_DIR  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.events import BookUpdate, Side, Venue  # noqa: E402
from bot.ledger import Ledger  # noqa: E402
from bot.orders import Intent, OrderIntent, OrderRequest, OrderType, OrderUpdate  # noqa: E402
from bot.recording import Record, iter_records  # noqa: E402
from bot.recording_writer import RecordingWriter  # noqa: E402
from bot.risk import RiskGate  # noqa: E402
from strategies.base import Strategy  # noqa: E402

# (venue, recorded symbol, copy name): 8 copies beside the 8 recorded books config.toml trades -> 16 books
COPIES = (
    ("binance_spot", "BTCUSDT", "BTCX1USDT"),
    ("binance_spot", "BTCUSDT", "BTCX2USDT"),
    ("binance_usdm", "BTCUSDT", "BTCX1USDT"),
    ("binance_usdm", "BTCUSDT", "BTCX2USDT"),
    ("binance_usdm", "ETHUSDT", "ETHX1USDT"),
    ("bybit_linear", "BTCUSDT", "BTCX1USDT"),
    ("bybit_linear", "ETHUSDT", "ETHX1USDT"),
    ("bybit_spot", "BTCUSDT", "BTCX1USDT"),
)


def make_recording(out: Path) -> dict[str, list[str]]:
    """The demo recording plus the copies (each copy's records renamed in key and raw text)."""
    symbols: dict[str, set[str]] = {}
    copies: dict[tuple[str, str], list[str]] = {}
    for venue, sym, name in COPIES:
        copies.setdefault((venue, sym), []).append(name)
    with RecordingWriter(out) as w:
        for rec in iter_records(DEMO_DIR / "recording"):
            if rec.kind == "info":  # the recorded instruments-info: each copy gets its original's entry
                w.write(rec._replace(raw=_with_copies(rec.raw, [(s, n) for (v, s), ns in copies.items()
                                                                if v == rec.venue for n in ns])))
                continue
            w.write(rec)
            for (venue, sym), names in copies.items():
                if rec.venue != venue or (sym not in rec.raw and sym.lower() not in rec.raw):
                    continue
                for name in names:
                    raw = rec.raw.replace(sym, name).replace(sym.lower(), name.lower())
                    w.write(Record(rec.ts_recv, rec.venue, rec.kind, rec.key.replace(sym, name), raw))
                    symbols.setdefault(venue, set()).add(name)
    return {v: sorted(s) for v, s in symbols.items()}


def _with_copies(raw: str, pairs: list[tuple[str, str]]) -> str:
    body = json.loads(raw)
    entries = body.get("result", {}).get("list", [])
    by_symbol = {e.get("symbol"): e for e in entries}
    for sym, name in pairs:
        if sym in by_symbol:
            entries.append({**by_symbol[sym], "symbol": name})
    return json.dumps(body)


class Probe(Strategy):
    """An order intent for every book update: a passive limit buy at the best bid (never crosses)."""

    kind = "probe"

    def __init__(self, venue: Venue, symbols: Sequence[str]) -> None:
        super().__init__(f"probe_{venue.value}", venue, symbols)

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        if not b.bid_px > 0:
            return ()
        qty = (Decimal(150) / Decimal(repr(b.bid_px))).quantize(Decimal("0.001"))
        return [OrderIntent(ts_event=b.ts_event, ts_recv=b.ts_recv, strategy=self.name, venue=b.venue,
                            symbol=b.symbol, side=Side.BUY, qty=qty, order_type=OrderType.LIMIT,
                            price=Decimal(repr(b.bid_px)))]


class NullExecution:
    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, request: OrderRequest) -> None:
        self.submitted += 1

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        pass

    def on_time(self, ts_ns: int) -> None:
        pass

    def open_orders(self) -> list[OrderUpdate]:
        return []


class TimedGate(RiskGate):
    """The real gate; each verdict's latency since the frame's receive stamp is recorded."""

    latencies_ns: list[int]
    verdicts: dict[str, int]

    def check(self, intent: OrderIntent, client_order_id: str, now_ns: int) -> Any:
        result = super().check(intent, client_order_id, now_ns)
        self.latencies_ns.append(time.time_ns() - intent.ts_recv)
        key = "accepted" if isinstance(result, OrderRequest) else f"denied:{result.reason}"
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        return result


async def one_run(settings: BotSettings, data: Path, duration: float, speed: float, models: bool) -> dict[str, Any]:
    from bot.market import start_market_data
    from bot.reference import ReferenceData

    bus, clock = EventBus(), LiveClock()
    async with contextlib.AsyncExitStack() as stack:
        settings = settings.model_copy(update={"models": settings.models.model_copy(update={"enabled": models})})
        market = await start_market_data(stack, settings, bus, clock, sim=True, sim_data=data, speed=speed)
        settings, collector, workers = market.settings, market.collector, market.workers
        venues = settings.enabled_venues()
        ledger = Ledger({v: {"USDT": Decimal(10**9)} for v in venues})
        risk = RiskConfig(max_orders_per_minute=10**9, max_order_notional=Decimal(10**6),
                          max_position_notional=Decimal(10**9), max_gross_exposure=Decimal(10**12))
        gate = TimedGate(risk, ledger, bus.publish)
        gate.latencies_ns, gate.verdicts = [], {}
        probes = [Probe(v, cfg.symbols) for v, cfg in venues.items()]
        execution = NullExecution()
        engine = Engine(probes, gate, execution, ledger, accounts=list(venues), snapshot_every_ns=10**9)
        engine.attach(bus)
        reference = ReferenceData(settings, bus, clock, measure_skew=False)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collector.run()), tg.create_task(workers.run()),
                     tg.create_task(market.grid_timer(clock, engine.on_time)), tg.create_task(reference.run())]
            await asyncio.sleep(duration)
            for t in tasks:
                t.cancel()
        books = sum(len(c.symbols) for c in venues.values())
        live = sum(1 for b in collector.status()["books"] if b["state"] == "live")
        signals = sum(w["published"] for w in workers.stats()["workers"]) if models else 0
        return {"books": books, "live": live, "latencies": np.array(gate.latencies_ns) / 1e6,
                "verdicts": gate.verdicts, "signals": signals, "models": len(workers) if models else 0}


def summary(label: str, r: dict[str, Any]) -> dict[str, float]:
    lat = r["latencies"]
    if len(lat) == 0:
        print(f"{label}: no intents measured ({r['live']}/{r['books']} books live)")
        return {}
    q = {p: float(np.percentile(lat, p)) for p in (50, 90, 99)}
    print(f"{label:<22} books {r['live']:>2}/{r['books']:<2} models {r['models']}  signals {r['signals']:>4}  "
          f"intents {len(lat):>6}  p50 {q[50]:6.3f} ms  p90 {q[90]:6.3f} ms  p99 {q[99]:6.3f} ms  "
          f"max {lat.max():7.3f} ms  mean {statistics.fmean(lat):6.3f} ms")
    print(f"{'':<22} verdicts {r['verdicts']}")
    return q


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per run (default 30)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed of the loopback exchange")
    args = ap.parse_args()
    import torch

    from bot.book import warm_up
    from bot.logs import setup_logging

    setup_logging("warning", False)  # the figures on stdout; warnings (if any) on stderr
    torch.set_num_threads(1)
    warm_up()  # the compiled book kernels, as run_bot does before any socket opens
    settings = load_settings(ROOT / "config.toml")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench16"
        extra = make_recording(data)
        venues = dict(settings.venues)
        for venue, cfg in venues.items():
            syms = tuple(dict.fromkeys((*cfg.symbols, *extra.get(venue.value, ()))))
            venues[venue] = cfg.model_copy(update={"symbols": syms})
        settings = settings.model_copy(update={"venues": venues, "strategies": ()})
        base = asyncio.run(one_run(settings, data, args.duration, args.speed, models=False))
        full = asyncio.run(one_run(settings, data, args.duration, args.speed, models=True))
    print(f"tick-to-intent latency, {args.duration:.0f} s per run at speed {args.speed:g}, CPU "
          f"(torch threads 1):")
    b = summary("baseline (no models)", base)
    f = summary("all model families", full)
    if b and f:
        print(f"ratio all-models / baseline: p50 {f[50] / b[50]:.2f}x  p99 {f[99] / b[99]:.2f}x   "
              f"target p99 < 5 ms: {'met' if f[99] < 5.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
