"""The replay engine: recorded sessions through the very path ``run --paper`` trades on, on a replay clock.

    run_replay(settings, ReplayRequest(sources, out=DIR, ...)) -> summary
      sources (replay.sources, merged by receive time)
        ─► OfflineFeed: the venue adapters, books and sync checks of a live run (live=False: crossed books
            are healed; a gap waits for the recording's next snapshot)      bar files ─► KlineClosed
        ─► EventBus ─► RingSet (LOB grids), KlineStore + Resampler, BarBooks (kline-only instruments)
        ─► at every grid time: rings, stale books, model workers (inline), engine.on_time (exits, equity)
        ─► strategies ─► engine ─► risk gate ─► paper matcher (latency in replay time) ─► ledger
        ─► DIR/events.jsonl (replay.eventlog), DIR/run.json; the report (replay.report) from both

**The clock.** ``bot.clock.ReplayClock`` follows the records' receive times; nothing on the path reads
the wall clock (``--speed`` only paces the loop, it never changes a time). Grid ticks happen at epoch
multiples of ``[ring] fine_interval_ms`` when the first record after one is due, exactly where a live
bot's grid timer fires between its records. While any recorded book is LIVE every grid time ticks (a
quiet book still writes rows and models still run, as live); when none is (before the first snapshot,
after a recording's end made them STALE, in a gap between sessions) only the first grid time after each
record ticks, so a kline replay over months ticks once per bar and a gap of weeks costs nothing.

**Models** run inline at each tick (``ModelWorker.tick_inline``: the worker's own input building, batching
across its targets, forward pass and decoding, on this thread), so no tick is ever skipped for a busy
model and two runs publish the same signals. **Orders** go through the paper matcher as in ``run``: a
decision at t arrives at t + ``latency_ms`` of replay time and meets the book as of the first market
event at or after that, never the book it was made from.

``--from``: records before it still build the books, rings and bars (a book needs its snapshot), but
no model runs and nothing is logged before it. ``--to``: the replay stops at the first record after it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import msgspec
import structlog

from bot.bus import EventBus
from bot.clock import ReplayClock
from bot.config import BotSettings
from bot.errors import ConfigError
from bot.events import BookHealth, BookState, KlineClosed, Venue
from bot.export import OfflineFeed
from bot.grid_set import RingSet
from bot.klines import KlineStore, Resampler
from bot.orders import Instrument, InstrumentInfo
from bot.recording import Block, Frames, Row
from bot.trading import BookHealthView, order_path, paper_execution, strategy_problems
from bot.venues.reference import parse_binance_exchange_info, parse_bybit_instruments, parse_instruments
from replay.bars import BarBooks
from replay.baseline import MidHistory, Persistence, seconds
from replay.eventlog import EventLog, Price
from replay.sources import Item, Source, item_time, merged

log = structlog.get_logger(__name__)

NS_PER_S = 1_000_000_000
ROWS_BATCH = 4096  # venue rows handed to the feed at once on the merged path


@dataclass
class ReplayRequest:
    sources: list[Source]
    out: Path
    speed: float | None = None  # None: as fast as it goes; else replay seconds per wall second
    from_ns: int | None = None
    to_ns: int | None = None
    progress: bool = False
    models_dir: Path | None = None  # None: [models] dir
    run_name: str = "replay"
    extra: dict[str, Any] = field(default_factory=dict)  # goes to run.json (walk-forward folds)


def replay_settings(settings: BotSettings, sources: Sequence[Source]) -> BotSettings:
    """The config as a replay of ``sources`` runs it: exactly the venues and symbols the sources carry
    enabled; strategies whose venue or symbols they lack disabled, with one warning each."""
    have: dict[Venue, set[str]] = {}
    for s in sources:
        for v, syms in s.available.items():
            have.setdefault(v, set()).update(syms)
    venues = {}
    for venue, cfg in settings.venues.items():
        got = tuple(sorted(have.get(venue, ())))
        venues[venue] = cfg.model_copy(update={"enabled": bool(got), "symbols": got or cfg.symbols})
    strategies = []
    for c in settings.strategies:
        missing = [s for s in c.symbols if s not in have.get(c.venue, set())]
        if c.enabled and missing:
            log.warning("replay_strategy_disabled", strategy=c.name, venue=c.venue.value, missing=missing,
                        why="the sources carry no data for it")
            c = c.model_copy(update={"enabled": False})
        strategies.append(c)
    return settings.model_copy(update={"venues": venues, "strategies": tuple(strategies)})


def static_instruments(venue: Venue, symbols: Iterable[str]) -> list[Instrument]:
    """The loopback exchange's rules for ``symbols`` (``bot.sim.instruments``: the venues' own filters for
    the usual symbols), the same ``run --paper --sim`` trades with; a recording's own ``info`` records
    replace them when the replay reaches one."""
    from bot.sim.instruments import binance_symbol_entry, bybit_static_entry

    syms = sorted(symbols)
    if venue.exchange == "binance":
        body: dict[str, Any] = {"symbols": [binance_symbol_entry(venue, s, 2, 3) for s in syms]}
        return parse_binance_exchange_info(venue, body, syms)
    body = {"retCode": 0, "retMsg": "OK", "result": {"list": [bybit_static_entry(venue, s, 2, 3) for s in syms]}}
    return parse_bybit_instruments(venue, body, syms)[0]


class Timers:
    """The replay's grid timer, in ``OfflineFeed``'s ReplayClock contract: ``on_time(ts)`` runs before a
    record at ``ts > due`` and ticks every grid time before ``ts`` (see "The clock" above)."""

    def __init__(self, step_ns: int, tick: Callable[[int], None], dense: Callable[[], bool]) -> None:
        self.step = step_ns
        self._tick = tick
        self._dense = dense
        self.next_g: int | None = None
        self.due = -1
        self.ticks = 0

    def on_time(self, ts_ns: int) -> None:
        step = self.step
        if self.next_g is None:
            self.next_g = -(-ts_ns // step) * step
        g = self.next_g
        while g < ts_ns:
            self._tick(g)
            self.ticks += 1
            g = g + step if self._dense() else max(g + step, -(-ts_ns // step) * step)
        self.next_g = g
        self.due = g


class Progress:
    """One status line on stderr (events/s, replay time, ETA), at most twice a second."""

    def __init__(self, enabled: bool, span_ns: tuple[int, int] | None) -> None:
        self.enabled = enabled
        self.span = span_ns
        self._t0 = time.monotonic()
        self._last = 0.0
        self.shown = False

    def show(self, now_ns: int, events: int, final: bool = False) -> None:
        if not self.enabled:
            return
        wall = time.monotonic()
        if not final and wall - self._last < 0.5:
            return
        self._last = wall
        el = max(wall - self._t0, 1e-9)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now_ns / NS_PER_S))
        text = f"replay {when} UTC  {events:,} records  {events / el:,.0f}/s"
        if self.span is not None and self.span[1] > self.span[0]:
            frac = min(max((now_ns - self.span[0]) / (self.span[1] - self.span[0]), 0.0), 1.0)
            eta = el * (1 - frac) / frac if frac > 0 else math.nan
            bar = "#" * int(frac * 20)
            text += f"  [{bar:<20}] {frac:6.1%}  ETA {eta:,.0f} s" if eta == eta else f"  [{bar:<20}]"
        sys.stderr.write("\r" + text + ("\n" if final else ""))
        sys.stderr.flush()
        self.shown = True


class Replay:
    """One replay run, assembled (see the module doc). ``run()`` plays the sources and writes DIR."""

    def __init__(self, settings: BotSettings, req: ReplayRequest, *, baseline: bool = False) -> None:
        from bot.worker_set import WorkerSet
        from bot.workers import checkpoint_dir

        self.req = req
        self.settings = settings = replay_settings(settings, req.sources)
        self.bus = bus = EventBus()
        self.clock = ReplayClock()
        req.out.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(req.out / "events.jsonl", since_ns=req.from_ns or 0)
        self.events.attach(bus)  # first, so that the log is in publish order
        lob: dict[Venue, set[str]] = {}
        bars: dict[Venue, set[str]] = {}
        for s in req.sources:
            into = bars if s.kind == "klines" else lob
            for v, syms in s.available.items():
                into.setdefault(v, set()).update(syms)
        self.lob_keys = sorted((v, s) for v, syms in lob.items() for s in syms)
        bar_keys = sorted((v, s) for v, syms in bars.items() for s in syms if (v, s) not in self.lob_keys)
        self.feed = OfflineFeed(settings, {v: tuple(sorted(s)) for v, s in lob.items()}, bus.publish)
        self.bars = BarBooks(bar_keys, settings.replay.bar_spread_bps, settings.replay.bar_depth_notional,
                             bus.publish)
        bus.subscribe(KlineClosed, self.bars.on_bar)  # before the strategies see the bar
        # Every instrument has rings (a worker serves only what is configured), but only recorded books feed
        # them: the rings' book lookup knows no bar book, so a bar-only instrument's grids never start.
        self.rings = RingSet(settings.ring, self.feed.book, [*self.lob_keys, *bar_keys],
                             stale_after_s=settings.book.stale_after_s)
        self.rings.attach(bus)
        self.klines = KlineStore.from_config(settings.ring)
        self.klines.attach(bus)
        Resampler.from_config(settings.klines).attach(bus)
        if settings.models.enabled:
            import torch

            torch.set_num_threads(settings.models.torch_threads)  # as run: one thread unless configured
            directory = req.models_dir if req.models_dir is not None else checkpoint_dir(settings.models.dir)
            m = settings.models
            self.workers = WorkerSet.from_dir(directory, self.rings, self.klines, bus, self.clock,
                                              max_input_age_s=m.max_input_age_s, device=m.device, serve=m.serve,
                                              serve_on=m.serve_on)  # fmt: skip
        else:
            self.workers = WorkerSet([])
        self.mids: MidHistory | None = None
        if baseline:  # the same run with persistence in every model's place (replay.baseline)
            keep = [x for w in self.workers.workers for h in w.head.horizon.split(",") if (x := seconds(h))]
            self.mids = MidHistory(max(keep, default=60.0) * 2 + 60.0)
            for w in self.workers.workers:
                w.stand_in(Persistence(w, self.mids))
        problems = strategy_problems(settings.strategies, self.workers, models_enabled=settings.models.enabled)
        if problems:
            raise ConfigError("; ".join(problems))
        health = BookHealthView()
        bus.subscribe(BookHealth, health.on_health)
        execution, self.ledger, accounts = paper_execution(settings, bus, self.book, health)
        self.accounts = accounts
        self.bar_s = self._bar_s(bars)
        self.gate, self.engine = order_path(settings, bus, execution, self.ledger, accounts,
                                            snapshot_every_s=self.bar_s)
        self.engine.attach(bus)
        self.keys = [*self.lob_keys, *bar_keys]
        self.timers = Timers(settings.ring.fine_interval_ms * 1_000_000, self._tick, self._dense)
        self.progress = Progress(req.progress, _span(req))
        self._wall0: float | None = None
        self._t0: int | None = None
        self.bar_records = 0
        self.info_records = 0
        self.kline_records = 0
        self.first_ns = 0
        self.last_ns = 0
        self._instruments_sent = False

    # -- wiring helpers ---------------------------------------------------------------------------------
    def book(self, venue: Venue, symbol: str) -> Any:
        b = self.feed.book(venue, symbol)
        return b if b is not None else self.bars.get(venue, symbol)

    def _bar_s(self, bars: dict[Venue, set[str]]) -> float:
        """The step the equity is sampled on: the fine grid with a recorded book, else the finest bar."""
        if self.lob_keys or not bars:
            return self.settings.ring.fine_interval_ms / 1e3
        from bot.klines import kline_file_key

        ivs = [k[1] for s in self.req.sources if s.kind == "klines" for p in s.paths if (k := kline_file_key(p))]
        return float(min(ivs)) if ivs else 60.0

    def _dense(self) -> bool:
        return any(st is BookState.LIVE for a in self.feed.adapters.values() for st in a.states.values())

    # -- the clock ----------------------------------------------------------------------------------------
    def _tick(self, g: int) -> None:
        self.clock.advance_to(g)
        self.rings.on_time(g + 1)  # the rows of every grid time <= g
        for a in self.feed.adapters.values():
            a.check_stale(g)
        trading = g >= (self.req.from_ns or 0)
        if trading:
            self.workers.tick_inline(g)
        self.engine.on_time(g)
        if trading:
            write = self.events.write
            for v, s in self.keys:
                b = self.book(v, s)
                if b is None:
                    continue
                bids, asks = b.top(1)
                if bids and asks:
                    write(Price(ts_event=g, ts_recv=g, venue=v, symbol=s, mid=(bids[0][0] + asks[0][0]) / 2))
                    if self.mids is not None:
                        self.mids.add(v, s, g, bids[0][0], asks[0][0])
        self._pace(g)
        self.progress.show(g, self.records)

    def _pace(self, ts: int) -> None:
        speed = self.req.speed
        if speed is None:
            return
        if self._wall0 is None or self._t0 is None:
            self._wall0, self._t0 = time.monotonic(), ts
            return
        ahead = (ts - self._t0) / NS_PER_S / speed - (time.monotonic() - self._wall0)
        if ahead > 0:
            time.sleep(ahead)

    @property
    def records(self) -> int:
        return self.feed.counters.records + self.bar_records + self.info_records + self.kline_records

    # -- playing ------------------------------------------------------------------------------------------
    def _start(self, ts: int) -> None:
        """Before the first record: the instrument rules (the sim's tables; recorded ones later replace them)."""
        self._instruments_sent = True
        self.first_ns = ts
        by_venue: dict[Venue, list[str]] = {}
        for v, s in self.keys:
            by_venue.setdefault(v, []).append(s)
        for v, syms in by_venue.items():
            for inst in static_instruments(v, syms):
                self.bus.publish(InstrumentInfo(ts_event=ts, ts_recv=ts, instrument=inst))

    def _other(self, rows: Iterable[Row]) -> None:
        """Rows the feed does not take: instrument rules (``info``) and REST kline bodies (``klines``)."""
        timers = self.timers
        for ts, venue_name, kind, key, raw in rows:
            if ts > timers.due:
                timers.on_time(ts)
            self.clock.advance_to(ts)
            venue = Venue(venue_name) if venue_name in Venue._value2member_map_ else None
            if kind == "info" and venue is not None:
                self.info_records += 1
                wanted = [s for v, s in self.keys if v is venue]
                try:
                    insts, _ = parse_instruments(venue, raw, wanted)
                except Exception as e:  # a damaged body: the rules already sent stay
                    log.warning("replay_info_unreadable", venue=venue_name, error=str(e))
                    continue
                for inst in insts:
                    self.bus.publish(InstrumentInfo(ts_event=ts, ts_recv=ts, instrument=inst))
            elif kind == "klines" and venue is not None and venue in self.feed.adapters:
                self.kline_records += 1
                symbol, _, interval = key.partition(":")
                try:
                    bars = self.feed.adapters[venue].parse_klines(symbol, interval, raw, ts)
                except Exception as e:
                    log.warning("replay_klines_unreadable", venue=venue_name, key=key, error=str(e))
                    continue
                for k in bars:
                    self.bus.publish(k)
            else:
                self.feed.run([(ts, venue_name, kind, key, raw)], timers)

    def _rows(self, rows: list[Row]) -> None:
        if rows[0][0] > self.timers.due:
            self.timers.on_time(rows[0][0])
        feed_rows: list[Row] = []
        for (_, kind), run in groupby(rows, key=lambda r: (r[1], r[2])):
            if kind in ("ws", "snapshot"):
                feed_rows.extend(run)
                continue
            if feed_rows:
                self.feed.run(feed_rows, self.timers)
                feed_rows = []
            self._other(run)
        if feed_rows:
            self.feed.run(feed_rows, self.timers)
        self.last_ns = max(self.last_ns, rows[-1][0])

    def _bars(self, group: list[KlineClosed]) -> None:
        """Bars closing at one time: every bar book moves first, then each bar is published."""
        ts = group[0].ts_recv
        if ts > self.timers.due:
            self.timers.on_time(ts)
        self.clock.advance_to(ts)
        for k in group:
            self.bars.move(k)
        for k in group:
            self.bar_records += 1
            self.bus.publish(k)
        self.last_ns = max(self.last_ns, ts)

    def _items(self) -> Iterator[Frames | Block | Item]:
        venues = [v.value for v in self.feed.adapters] + [v.value for v, _ in self.keys]
        src = self.req.sources
        if len(src) == 1 and src[0].kind == "recording" and self.req.to_ns is None:
            return src[0].frames(venues=set(venues))
        return merged(src, venues=set(venues))

    def run(self) -> dict[str, Any]:
        to = self.req.to_ns
        pending: list[Row] = []
        bars: list[KlineClosed] = []
        for item in self._items():
            if bars and (type(item) is not KlineClosed or item.ts_recv != bars[0].ts_recv):
                self._bars(bars)
                bars = []
            if type(item) is Frames:
                t0 = int(item.ts[0])
                if not self._instruments_sent:
                    self._start(t0)
                if t0 > self.timers.due:  # the grid times before this block first (an adapter may publish
                    self.timers.on_time(t0)  # at its first frame before its own loop asks the clock)
                self.feed.run_frames([item], self.timers)
                self.last_ns = max(self.last_ns, int(item.ts[-1]))
            elif type(item) is Block:
                rows = list(zip(*item, strict=True))
                if not self._instruments_sent and rows:
                    self._start(rows[0][0])
                if rows:
                    self._rows(rows)
            else:
                ts = item_time(item)  # type: ignore[arg-type]
                if to is not None and ts > to:
                    break
                if not self._instruments_sent:
                    self._start(ts)
                if type(item) is KlineClosed:
                    if pending:
                        self._rows(pending)
                        pending = []
                    bars.append(item)
                else:
                    pending.append(item)  # type: ignore[arg-type]
                    if len(pending) >= ROWS_BATCH:
                        self._rows(pending)
                        pending = []
        if pending:
            self._rows(pending)
        if bars:
            self._bars(bars)
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        end = self.last_ns
        if end:
            self.timers.on_time(end + 1)  # the grid times up to the last record
            self.clock.advance_to(end)
            self.engine.on_time(end)
            self.engine.snapshot(end)
        self.progress.show(end, self.records, final=True)
        self.events.close()
        rows = {k: self.rings.fine(*k).rows_written for k in self.lob_keys}
        self.book_warnings = self.feed.check_books(rows)  # a book its messages never built: warned, in run.json
        summary = self.summary()
        with open(self.req.out / "run.json", "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")
        return summary

    def summary(self) -> dict[str, Any]:
        s = self.settings
        feed = _feed_summary(self.feed)
        feed["unroutable"] = self.feed.unroutable()
        feed["book_warnings"] = getattr(self, "book_warnings", [])
        span = [max(self.req.from_ns or 0, self.first_ns), self.last_ns]
        return {
            "version": 1,
            "mode": self.req.run_name,
            "sources": [x.name for x in self.req.sources],
            "config_sha256": config_hash(s),
            "span_ns": span,
            "bar_s": self.bar_s,
            "accounts": {v.value: {a: str(q) for a, q in s.paper.venues[v].balances.items()} for v in self.accounts},
            "strategies": [{"name": c.name, "kind": c.kind, "venue": c.venue.value, "symbols": list(c.symbols),
                            "model": c.model} for c in s.strategies if c.enabled],
            "records": self.records,
            "grid_ticks": self.timers.ticks,
            "feed": {**feed, "bars": self.bar_records, "info_records": self.info_records,
                     "kline_bodies": self.kline_records, "bar_books": len(self.bars.books)},
            "models": _model_summary(self.workers),
            "trading": {**self.engine.summary(), "risk": dict(self.gate.stats()),
                        "equity": str(self.ledger.equity())},
            "events": dict(sorted(self.events.counts.items())),
            "bus_handler_errors": self.bus.handler_errors,
            **self.req.extra,
        }


def _span(req: ReplayRequest) -> tuple[int, int] | None:
    spans = [s.span_ns for s in req.sources if s.span_ns is not None]
    if not spans:
        return None
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    return (req.from_ns or lo, min(hi, req.to_ns) if req.to_ns else hi)


def _feed_summary(feed: OfflineFeed) -> dict[str, Any]:
    c = feed.counters
    books = {}
    for (venue, symbol), _book in sorted(feed.books.items()):
        st = feed.adapters[venue].stats
        books[f"{venue.value}/{symbol}"] = {
            "gaps": st.gaps.get(symbol, 0), "resyncs": st.resyncs.get(symbol, 0),
            "crossed_heals": st.crossed.get(symbol, 0),
        }  # fmt: skip
    return {
        "records": c.records,
        "messages": {v.value: a.stats.messages for v, a in sorted(feed.adapters.items())},
        "malformed": {v.value: a.stats.malformed for v, a in sorted(feed.adapters.items())},
        "snapshots_fed": c.snapshots_fed,
        "snapshots_skipped": c.snapshots_skipped,
        "resubscribes_unsatisfied": c.resubscribes_unsatisfied,
        "other_records": dict(sorted(c.other_records.items())),
        "books": books,
    }


def _model_summary(workers: Any) -> dict[str, Any]:
    """Per worker: what it published and why it did not (no latencies: they are not replay time)."""
    out: dict[str, Any] = {}
    for w in workers.workers:
        st = w.stats()
        out[w.name] = {k: st[k] for k in ("family", "published", "ticks", "not_published") if k in st}
    out["failed"] = dict(sorted(workers.failed.items()))
    return out


def config_hash(settings: BotSettings) -> str:
    """sha256 of the settings that decide a replay (not paths of files it writes, nor secrets)."""
    d = settings.model_dump(mode="json", exclude={"state", "signal_log", "sim", "live", "log"})
    d.get("models", {}).pop("dir", None)
    return hashlib.sha256(msgspec.json.encode(d, order="sorted")).hexdigest()


def run_replay(settings: BotSettings, req: ReplayRequest, *, baseline: bool = False) -> dict[str, Any]:
    """Play ``req`` and write its directory; ``baseline``: with persistence in the models' place."""
    from bot.book import warm_up

    warm_up()
    rp = Replay(settings, req, baseline=baseline)
    try:
        return rp.run()
    finally:
        if not rp.events._fh.closed:
            rp.events.close()
