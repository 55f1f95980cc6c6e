"""``python -m bot run --paper [--sim]`` (or ``--live``): the bot's main job.

It starts the collectors (and, with ``--sim``, the loopback exchange in the same process), the ring
buffers and the kline store, the model workers and the signal log, the venues' reference data (instrument
rules, server time) and paper trading (``bot.trading``: strategies, risk gate, paper matcher, ledger, state
database) on one event bus, and shows a live status (books and health, signals, positions, PnL, risk
state, orders and fills) until Ctrl-C, SIGTERM or ``--duration``. On the way out it cancels open orders
and writes a last equity snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings, load_settings
from bot.errors import ConfigError
from bot.events import Signal
from bot.logs import quiet_background_errors, setup_logging

log = structlog.get_logger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the bot (paper trading; --sim: against the loopback exchange)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--paper", action="store_true",
                      help="paper trading (default): orders are simulated against the live books, no keys needed")
    mode.add_argument("--live", action="store_true", help="live trading (needs BOT_LIVE_TRADING=yes as well)")
    p.add_argument("--sim", action="store_true", help="start the loopback exchange and use it instead of the venues")
    p.add_argument("--sim-data", type=Path, default=None, help="native recording for --sim (default: embedded demo)")
    p.add_argument("--speed", type=float, default=None, help="--sim replay speed (default from config)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--status-every", type=float, default=None,
                   help="seconds between status updates (default: 1 on a terminal, 5 otherwise)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(settings.log.level, settings.log.json_logs)
    if args.live and os.environ.get("BOT_LIVE_TRADING") != "yes":
        raise ConfigError("live trading needs BOT_LIVE_TRADING=yes in the environment as well as --live")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be > 0")
    if args.speed is not None and args.speed <= 0:
        raise ConfigError("--speed must be > 0")
    tty = sys.stdout.isatty()
    every = args.status_every if args.status_every is not None else (1.0 if tty else 5.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_bot(settings, sim=args.sim, sim_data=args.sim_data, speed=args.speed,
                            duration=args.duration, status_every=every, tty=tty, live=args.live))
    return 0


async def run_bot(
    settings: BotSettings,
    *,
    sim: bool,
    sim_data: Path | None = None,
    speed: float | None = None,
    duration: float | None = None,
    status_every: float = 5.0,
    tty: bool = False,
    bus: EventBus | None = None,
    live: bool = False,
) -> dict[str, Any]:
    """Run until cancelled, SIGINT/SIGTERM or ``duration``; returns the last status. ``bus``: one to use
    (tests subscribe to it first, to see every event of the run). ``live``: orders through ccxt (the
    caller has checked the opt-in); with ``sim``, to the loopback exchange's private side."""
    from bot.book import warm_up
    from bot.market import start_market_data
    from bot.reference import ReferenceData
    from bot.signal_log import SignalLog
    from bot.trading import open_state, start_trading

    bus = bus if bus is not None else EventBus()
    clock = LiveClock()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_background_errors)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    warm_s = warm_up()  # the compiled book kernels: before any socket opens, not on the first message
    if warm_s > 1.0:
        log.info("kernels_compiled", seconds=round(warm_s, 1), note="first start after an install only")
    if live:
        from bot.live_session import live_settings

        settings = live_settings(settings, sim)
    async with contextlib.AsyncExitStack() as stack:
        state = await open_state(stack, settings)
        market = await start_market_data(stack, settings, bus, clock, sim=sim, sim_data=sim_data, speed=speed)
        settings, collector, rings, klines, workers = (
            market.settings, market.collector, market.rings, market.klines, market.workers)
        signals = _SignalTail()
        bus.subscribe(Signal, signals.on_signal)
        slog = SignalLog.from_config(settings.signal_log) if settings.signal_log.enabled else None
        if slog is not None:
            slog.attach(bus)
        reference = ReferenceData(settings, bus, clock, measure_skew=False if sim else None)  # None: [reference]
        roots = {v: u.rest_url for v, u in market.exchange.urls.items()} if market.exchange is not None else None
        trading = await start_trading(stack, settings, bus, clock, collector.get_book, workers, sim=sim,
                                      state=state, live=live, sim_roots=roots)
        log.info("bot_started", mode=trading.mode, sim=sim,
                 venues=sorted(v.value for v in settings.enabled_venues()))
        status: dict[str, Any] = {}
        started = time.monotonic()

        def snapshot() -> dict[str, Any]:
            st = _status(collector, rings, klines, started)
            st["models"] = workers.stats()
            st["signals"] = signals.summary()
            if slog is not None:
                st["signal_log"] = slog.stats()
            st["trading"] = trading.status()
            st["model_status"] = workers.status_lines()
            if market.exchange is not None:
                st["sim"] = market.exchange.stats
            return st

        async def report() -> None:
            nonlocal status
            while True:
                await asyncio.sleep(status_every)
                status = snapshot()
                _render(status, tty)

        async with asyncio.TaskGroup() as tg:
            run_task = tg.create_task(collector.run())
            helpers = [tg.create_task(report()), tg.create_task(market.grid_timer(clock)),
                       tg.create_task(workers.run()), tg.create_task(reference.run())]
            trading_tasks = await trading.run_tasks(tg)
            log_task = tg.create_task(slog.run()) if slog is not None else None
            waiter = tg.create_task(stop.wait())
            await asyncio.wait({run_task, waiter}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            # Stop trading first, while the books still flow: cancel open orders and let the cancel latency
            # pass, then a last snapshot; the state writer flushes what is queued when cancelled.
            await trading.stop(cancel_open=settings.live.cancel_on_stop if live else True)
            for t in (run_task, waiter, *helpers, *trading_tasks):
                t.cancel()
            if log_task is not None:
                log_task.cancel()  # the signal log writes what is still queued when cancelled
        status = snapshot()
        _render(status, tty, final=True)
        log.info("bot_stopped", uptime_s=round(time.monotonic() - started, 1))
        return status


class _SignalTail:
    """Counts signals per model and keeps the latest few for the status display."""

    def __init__(self, keep: int = 8) -> None:
        self.counts: dict[str, int] = {}
        self.latest: collections.deque[Signal] = collections.deque(maxlen=keep)

    def on_signal(self, s: Signal) -> None:
        self.counts[s.model] = self.counts.get(s.model, 0) + 1
        self.latest.append(s)

    def summary(self) -> dict[str, Any]:
        return {
            "published": dict(self.counts),
            "latest": [
                {"model": s.model, "venue": s.venue.value, "symbol": s.symbol, "horizon": s.horizon,
                 "confidence": s.confidence, "probabilities": [round(p, 3) for p in s.probabilities],
                 "values": [round(v, 6) for v in s.values], "attention": s.attention}
                for s in self.latest
            ],
        }


def _status(collector: Any, rings: Any, klines: Any, started: float) -> dict[str, Any]:
    st: dict[str, Any] = dict(collector.status())
    st["uptime_s"] = round(time.monotonic() - started, 1)
    st["ring_bytes"] = rings.nbytes
    st["klines"] = {f"{v.value}/{sym}/{iv}s": len(klines.ring(v, sym, iv)) for v, sym, iv in klines.keys()}  # noqa: SIM118
    return st


def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}"


def _finite(x: Any) -> Any:
    """The status as strict JSON: NaN and infinities become null (``json`` would write ``NaN``)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _render(status: dict[str, Any], tty: bool, final: bool = False) -> None:
    if not tty:
        print(json.dumps({"status": _finite(status)}, default=str, allow_nan=False), flush=True)
        return
    mb = status.get("ring_bytes", 0) / 1e6
    mode = (status.get("trading") or {}).get("mode", "paper")
    lines = [f"bot run --{mode}   uptime {status.get('uptime_s', 0)} s   rings {mb:.1f} MB"]
    lines.append(f"{'venue':<14}{'symbol':<10}{'state':<11}{'bid':>14}{'ask':>14}{'spread bp':>10}"
                 f"{'msg/s':>8}{'gaps':>6}{'resync':>7}{'crossed':>8}")
    for b in status.get("books", []):
        bid, ask = b.get("bid_px"), b.get("ask_px")
        spread = (ask - bid) / ((ask + bid) / 2) * 1e4 if bid and ask and not math.isnan(bid + ask) else None
        lines.append(
            f"{b['venue']:<14}{b['symbol']:<10}{b['state']:<11}{_fmt(bid):>14}{_fmt(ask):>14}{_fmt(spread):>10}"
            f"{_fmt(b.get('msgs_per_s'), 1):>8}{b.get('gaps', 0):>6}{b.get('resyncs', 0):>7}{b.get('crossed', 0):>8}"
        )
    for c in status.get("connections", []):
        up = "up" if c.get("connected") else "DOWN"
        lines.append(f"  conn {c['name']:<28} {up:<5} reconnects {c.get('reconnects', 0)}")
    sig = status.get("signals", {})
    lines.append(f"signals published: {sig.get('published') or 'none yet'}")
    for x in sig.get("latest", []):
        probs = " ".join(f"{p:.2f}" for p in x["probabilities"]) or " ".join(f"{v:+.4g}" for v in x["values"])
        lines.append(f"  {x['model']:<22} {x['venue']:<13} {x['symbol']:<9} {x['horizon']:<16} {probs}")
    lines.extend(f"  model {m}" for m in status.get("model_status", []))
    lines.extend(_trading_lines(status.get("trading") or {}))
    if not final:
        sys.stdout.write("\x1b[H\x1b[2J")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _money(x: str | None, nd: int = 2) -> str:
    """A Decimal string for people: ``nd`` places, thousands separated (the ledger keeps every digit)."""
    if x is None:
        return "-"
    return f"{Decimal(x):,.{nd}f}"


def _trading_lines(t: dict[str, Any]) -> list[str]:
    if not t:
        return []
    risk = t.get("risk") or {}
    alarms = risk.get("alarms") or {}
    why = []
    if risk.get("latched") and risk["latched"] != t.get("state"):
        why.append(f"latched {risk['latched']}")
    why.extend(f"{k}: {v}" for k, v in alarms.items())
    because = " (" + "; ".join(why) + ")" if why else ""
    lines = [
        f"{t.get('mode', 'paper')} trading   {t.get('state', '?').upper()}{because}   "
        f"equity {_money(t.get('equity'))} USDT   orders {t.get('orders', 0)}  fills {t.get('fills', 0)}  "
        f"denied {t.get('denied', 0)}  open {t.get('open_orders', 0)}"
    ]
    for venue, a in (t.get("accounts") or {}).items():
        lines.append(f"  account {venue:<14} cash {_money(a['cash']):>12}  equity {_money(a['equity']):>12}  "
                     f"fees {_money(a['fees'], 4)}")
    for p in t.get("positions") or []:
        if Decimal(p["qty"]) == 0 and Decimal(p["realized_pnl"]) == 0:
            continue
        lines.append(f"  pos {p['venue']:<14}{p['symbol']:<10} qty {Decimal(p['qty']).normalize():>12}  "
                     f"avg {_money(p['avg_price'], 4):>12}  mark {_money(p['mark'], 4):>12}  "
                     f"upnl {_money(p['unrealized_pnl'], 4):>9}  rpnl {_money(p['realized_pnl'], 4):>9}")
    for f in t.get("latest_fills") or []:
        lines.append(f"  fill {f['strategy']:<22} {f['venue']:<13} {f['symbol']:<9} {f['side']:<4} {f['qty']:>12} "
                     f"@ {f['price']:<12} {f['liquidity']}")
    live = t.get("live")
    if live:
        lines.append(f"  live: queued {live.get('queued', 0)}  sent {live.get('orders_sent', 0)}  "
                     f"cancels {live.get('cancels_sent', 0)}  uncertain {live.get('uncertain', 0)}  "
                     f"stream errors {live.get('stream_errors_orders', 0) + live.get('stream_errors_trades', 0)}  "
                     f"resyncs {live.get('resyncs', 0)}  clock offset ms {live.get('time_offset_ms', {})}")
    denials = risk.get("denied_by_reason") or {}
    if denials:
        lines.append("  denied by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(denials.items())))
    return lines
