"""``python -m bot record``: record raw venue traffic to a native recording (``bot.recording``).

    python -m bot record --out DIR [--duration S] [--venues bybit_spot ...] [--symbols BTCUSDT ...]
                         [--rotate-mb N] [--sim [--sim-data DIR] [--speed X]] [--config F]

The collectors run as in the bot; their ``tap`` hands every raw frame and every REST body used to a
``RecordSink`` before the adapter sees it. The tap runs on the event loop, so it only appends to a list
(O(1), never blocks, never drops). A writer task moves the list to a single writer thread every
``BATCH_S`` (zstd compression and disk I/O stay off the loop, in receive order) and flushes a complete
group of records (``bot.recording_groups``) every second, so a crash loses about a second. If the thread
ever falls behind by more than ``MAX_PENDING`` records the recording stops with an error rather than grow
without bound or drop.

On ``--duration``, SIGINT or SIGTERM: the collector is cancelled (sockets closed), everything still
pending is written, the writer is closed (manifest ``complete: true``), and a JSON summary goes to
stdout: records (on disk), records_in (tapped), files, per venue and per kind counts. Invariant:
``records_in == records + refused``; ``refused`` (raw text with a tab or newline, which the format
cannot hold losslessly) is 0 for every venue we know.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bot.bus import EventBus
from bot.clock import LiveClock
from bot.config import BotSettings, VenueConfig, load_settings
from bot.errors import ConfigError, RecordingError
from bot.events import Venue
from bot.logs import setup_logging
from bot.recording import MANIFEST, Record
from bot.recording_writer import RecordingWriter

if TYPE_CHECKING:
    from bot.sim.server import LoopbackExchange

log = structlog.get_logger(__name__)

BATCH_S = 0.1  # how often the tapped records go to the writer thread
FLUSH_S = 1.0  # how often the writer pushes a complete group to the OS
MAX_PENDING = 2_000_000  # records waiting for the writer thread before the recording stops


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("record", help="record raw venue traffic (websocket frames, REST bodies) to a directory")
    p.add_argument("--out", type=Path, required=True, help="new directory for the recording")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until ^C)")
    venues = ", ".join(v.value for v in Venue)
    p.add_argument("--venues", nargs="+", default=None, metavar="VENUE", help=f"only these venues: {venues}")
    p.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL", help="record these symbols on every venue")
    p.add_argument("--rotate-mb", type=float, default=64.0, help="start a new part after N MiB of text (default 64)")
    p.add_argument("--sim", action="store_true", help="record from the loopback exchange, started in this process")
    p.add_argument("--sim-data", type=Path, default=None, help="what the loopback exchange replays (default: demo)")
    p.add_argument("--speed", type=float, default=None, help="--sim replay speed (default from config)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    # Command-line mistakes first: they need neither the configuration nor the logging set up.
    if args.duration is not None and not args.duration > 0:
        raise ConfigError("--duration must be > 0 seconds")
    if not args.rotate_mb > 0:
        raise ConfigError("--rotate-mb must be > 0")
    if args.speed is not None and not args.speed > 0:
        raise ConfigError("--speed must be > 0")
    if (args.sim_data is not None or args.speed is not None) and not args.sim:
        raise ConfigError("--sim-data and --speed need --sim")
    if args.sim_data is not None:
        check_sim_data(args.sim_data, "--sim-data")
    chosen = parse_venues(args.venues)
    symbols = parse_symbols(args.symbols)
    out: Path = args.out
    if (out / MANIFEST).exists():
        raise ConfigError(f"{out} already holds a recording; choose a new --out directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    settings = load_settings(getattr(args, "config", None))
    if not args.sim:  # with --sim, the loopback exchange decides what is served: applied once it runs
        settings = select(settings, chosen, symbols)
    setup_logging(settings.log.level, settings.log.json_logs)
    summary = asyncio.run(
        record(
            settings,
            out,
            duration=args.duration,
            rotate_bytes=max(1, int(args.rotate_mb * (1 << 20))),
            sim=args.sim,
            sim_data=args.sim_data,
            speed=args.speed,
            venues=chosen,
            symbols=symbols,
        )
    )
    print(json.dumps(summary), flush=True)
    return 0 if summary["error"] is None else 1


def parse_venues(names: Sequence[str] | None) -> set[Venue] | None:
    """``--venues`` (space- or comma-separated) as Venues; None when not given. ConfigError names the bad."""
    if not names:
        return None
    flat = [n.strip() for v in names for n in v.split(",") if n.strip()]
    known = {v.value: v for v in Venue}
    bad = [n for n in flat if n not in known]
    if bad:
        raise ConfigError(f"unknown venue(s) {bad}; known: {sorted(known)}")
    return {known[n] for n in flat}


def parse_symbols(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--symbols`` as canonical symbols (BTCUSDT); None when not given."""
    if not names:
        return None
    flat = tuple(n.strip().upper() for s in names for n in s.split(",") if n.strip())
    bad = [n for n in flat if not n.isalnum()]
    if bad:
        raise ConfigError(f"--symbols must be like BTCUSDT (no separators): {bad}")
    return flat


def select(
    settings: BotSettings,
    venues: set[Venue] | None,
    symbols: tuple[str, ...] | None,
    *,
    available: dict[Venue, tuple[str, ...]] | None = None,
) -> BotSettings:
    """Enable exactly ``venues`` (else keep the config's), record ``symbols`` on each (else the config's).

    ``available`` (the loopback exchange's recorded symbols per venue) restricts both: what it lacks is
    left out with a warning. ConfigError when nothing is left to record.
    """
    new: dict[Venue, VenueConfig] = {}
    for venue, cfg in settings.venues.items():
        enabled = venue in venues if venues is not None else cfg.enabled
        want = symbols if symbols is not None else cfg.symbols
        if available is not None and enabled:
            have = available.get(venue, ())
            missing = [s for s in want if s not in have]
            if missing and (venues is not None or symbols is not None):
                log.warning("sim_symbols_not_recorded", venue=venue.value, missing=missing, recorded=list(have))
            want = tuple(s for s in want if s in have)
            enabled = bool(want)
        new[venue] = cfg.model_copy(update={"enabled": enabled, "symbols": want or cfg.symbols})
    if not any(c.enabled for c in new.values()):
        raise ConfigError("nothing to record: no enabled venue has any of the symbols asked for")
    return settings.model_copy(update={"venues": new})


def check_sim_data(data: Path, what: str) -> None:
    """ConfigError (one line) unless ``data`` is a readable native recording, or a folder of them."""
    from bot.sim.replay import recording_dirs

    p = Path(data)
    if not p.exists():
        raise ConfigError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise ConfigError(f"{what} {p} is not a directory (give a native recording's directory)")
    try:
        dirs = recording_dirs(p)
        unreadable = [d for d in dirs if not os.access(d, os.R_OK | os.X_OK) or not os.access(d / MANIFEST, os.R_OK)]
    except (RecordingError, OSError) as e:
        raise ConfigError(f"{what} {p}: {e}") from e
    if unreadable:
        raise ConfigError(f"{what} {p}: cannot read {', '.join(map(str, unreadable))} (permissions?)")


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        errs = errors()
        if errs:
            return str(errs[0].get("msg", e))
    return str(e)


class RecordSink:
    """The recorder's side of the tap: a non-blocking, non-dropping handoff to one writer thread.

    ``tap`` is called on the event loop for every record; it appends to a list. ``run`` (a task) swaps
    the list out every ``BATCH_S`` and writes it on the writer thread; ``close`` writes the rest and
    closes the writer. One thread does every write, flush and close, so they happen in order even when
    a waiting task is cancelled.
    """

    def __init__(self, writer: RecordingWriter, *, max_pending: int = MAX_PENDING) -> None:
        self.writer = writer
        self.max_pending = max_pending
        self.records_in = 0
        self.refused = 0
        self.per_venue: Counter[str] = Counter()  # on disk
        self.per_kind: Counter[str] = Counter()
        self.files: list[str] = []  # part names, after close
        self._pending: list[Record] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording_writer")

    def tap(self, rec: Record) -> None:
        self._pending.append(rec)
        self.records_in += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        while True:
            await asyncio.sleep(BATCH_S)
            if len(self._pending) > self.max_pending:
                raise RecordingError(
                    f"the writer fell {len(self._pending)} records behind (disk too slow?); stopping rather than "
                    "dropping data"
                )
            await self._write_pending()
            if loop.time() - last_flush >= FLUSH_S:
                await loop.run_in_executor(self._thread, self.writer.flush)
                last_flush = loop.time()

    async def close(self) -> None:
        """Write everything tapped so far and close the writer (manifest complete)."""
        loop = asyncio.get_running_loop()
        try:
            await self._write_pending()
            await loop.run_in_executor(self._thread, self._close_writer)
        finally:
            self._thread.shutdown(wait=True)

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write_batch, batch)

    def _close_writer(self) -> None:
        """On the writer thread."""
        self.writer.close()
        self.files = sorted(p.name for p in self.writer.dir.glob("part-*.tsv.zst"))

    def _write_batch(self, batch: list[Record]) -> None:
        """On the writer thread."""
        write, per_venue, per_kind = self.writer.write, self.per_venue, self.per_kind
        for rec in batch:
            try:
                write(rec)
            except RecordingError as e:
                self.refused += 1
                if self.refused <= 5:
                    log.error("record_refused", venue=rec.venue, kind=rec.kind, key=rec.key, error=str(e))
                continue
            per_venue[rec.venue] += 1
            per_kind[rec.kind] += 1


async def record(
    settings: BotSettings,
    out: Path,
    *,
    duration: float | None = None,
    rotate_bytes: int = 64 << 20,
    sim: bool = False,
    sim_data: Path | None = None,
    speed: float | None = None,
    venues: set[Venue] | None = None,
    symbols: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Record until ``duration``, SIGINT or SIGTERM; return the summary (also when the collector failed)."""
    from bot.feed import Collector

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        stopped_by.append(name)
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / not POSIX
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
    error: str | None = None
    clock = LiveClock()
    started = loop.time()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if sim:
                settings, available, _ = await start_sim(stack, settings, sim_data, speed)
                settings = select(settings, venues, symbols, available=available)
            enabled = settings.enabled_venues()
            try:
                writer = RecordingWriter(
                    out,
                    rotate_bytes=rotate_bytes,
                    meta={"recorder": {"command": "record", "sim": sim, "started_ns": clock.now_ns()}},
                )
            except OSError as e:
                raise ConfigError(f"cannot write a recording to {out}: {e}") from e
            for venue, cfg in enabled.items():
                writer.note_symbols(venue.value, cfg.symbols)
            sink = RecordSink(writer)
            started = loop.time()  # the recording's duration, not the loopback exchange's start-up
            collector = Collector(settings, EventBus(), clock, tap=sink.tap)
            log.info(
                "recording_started",
                out=str(out),
                venues={v.value: list(c.symbols) for v, c in enabled.items()},
                rotate_bytes=rotate_bytes,
                duration_s=duration,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    run = tg.create_task(collector.run(), name="collector")
                    sink_task = tg.create_task(sink.run(), name="recording_sink")
                    waiter = tg.create_task(stop.wait(), name="stop_signal")
                    await asyncio.wait({run, sink_task, waiter}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
                    if not stopped_by:
                        stopped_by.append("duration" if not (run.done() or sink_task.done()) else "error")
                    for t in (run, sink_task, waiter):
                        t.cancel()
            except* Exception as eg:
                error = "; ".join(f"{type(e).__name__}: {e}" for e in eg.exceptions)
                log.error("recording_failed", error=error)
            finally:
                await sink.close()  # everything tapped is on disk after this
            stats = collector.stats
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    summary: dict[str, Any] = {
        "out": str(out),
        "records": writer.records,
        "records_in": sink.records_in,
        "refused": sink.refused,
        "files": sink.files,
        "venues": dict(sorted(sink.per_venue.items())),
        "kinds": dict(sorted(sink.per_kind.items())),
        "duration_s": round(loop.time() - started, 3),
        "stopped_by": stopped_by[0] if stopped_by else "error",
        "reconnects": stats.reconnects,
        "rest_errors": stats.rest_errors,
        "error": error,
    }
    log.info("recording_finished", **{k: v for k, v in summary.items() if k not in ("files", "venues", "kinds")})
    return summary


async def start_sim(
    stack: contextlib.AsyncExitStack, settings: BotSettings, sim_data: Path | None, speed: float | None
) -> tuple[BotSettings, dict[Venue, tuple[str, ...]], LoopbackExchange]:
    """Start the loopback exchange in this process; every venue points at it (its URLs and depth).

    Returns the settings and the symbols the exchange serves per venue (venues it lacks: none).
    """
    from bot.sim.cli import DEMO_DIR
    from bot.sim.server import LoopbackExchange

    data = sim_data or settings.sim.data
    what = "--sim-data" if sim_data else "[sim] data"
    klines = None
    if data is None:  # the embedded demo, with its klines for the REST backfill
        data = DEMO_DIR / "recording"
        klines = DEMO_DIR / "klines"
        what = "the embedded demo recording"
    check_sim_data(data, what)  # before anything starts: a bad directory is the user's input, exit 2
    try:
        exchange = await stack.enter_async_context(
            LoopbackExchange(
                data,
                speed=speed or settings.sim.speed,
                seed=settings.sim.seed,
                faults=settings.sim.faults,
                loop=settings.sim.loop,
                host=settings.sim.host,
                klines_dir=klines,
                api_key=settings.sim.api_key.get_secret_value(),
                api_secret=settings.sim.api_secret.get_secret_value(),
                balances=settings.sim.balances,
                align_ns=settings.sim.align_ms * 1_000_000,
            )
        )
    except RecordingError as e:  # a damaged recording: the input again, not a failure of the bot
        raise ConfigError(f"{what} {data} cannot be replayed: {e}") from e
    venues: dict[Venue, VenueConfig] = {}
    available: dict[Venue, tuple[str, ...]] = {}
    overrides = exchange.venue_overrides()
    for venue, cfg in settings.venues.items():
        ov = dict(overrides.get(venue.value, {"enabled": False}))
        if ov.get("enabled"):
            available[venue] = tuple(ov.get("symbols", ()))
        ov.pop("enabled", None)
        ov.pop("symbols", None)
        venues[venue] = cfg.model_copy(update=ov)
    return settings.model_copy(update={"venues": venues}), available, exchange
