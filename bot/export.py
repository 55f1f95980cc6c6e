"""``python -m bot books``: rebuild the order books of a native recording and sample them on a time grid.

    python -m bot books DIR --levels 10 --interval-ms 1000 --out books.csv [--venues ...] [--symbols ...]

This is the dataset the models train on, so it is made by the very code the bot trades with: every
record goes through the venue adapter (``bot.venues.make_adapter(..., live=False)``), the local books
of ``bot.book`` and the grid builder of the rings (``bot.grid_set.GridSet``, ticked exactly as a replay ticks
the bot's ``RingSet``). One CSV row per grid point per book::

    ts_ms,venue,symbol,bid_px_1,bid_sz_1,...,bid_px_N,bid_sz_N,ask_px_1,ask_sz_1,...,ask_px_N,ask_sz_N

**Grid.** Local receive time (the recording's ``ts_recv``, the ``ts_recv`` of ``BookUpdate``), epoch
multiples of ``--interval-ms``, the time base of the live rings and of a replay. The row at ``t`` is the
book after the last record received at or before ``t``. Why receive time and not the venue's: a row then
holds exactly what the bot could have known at that instant (a venue timestamp can be later than the
moment we could act on the message: no venue-clock look-ahead); the venues' clocks differ from each
other and from ours (the shared recordings' local clocks run 1.2-1.5 s behind the venues', more than a
step of the 1 s grid), and one local clock aligns every venue on one grid, which the multi-venue
forecaster needs; in a replay the replay clock is the recorded receive time, so a replay's rows equal
these exactly, and live differs from a replay only by the network. Formats without a receive time (the
Bybit archive, Binance CSVs) carry the exchange time as their receive time from the import on.

**Validity.** (``GridSet``'s rules, so a replay's rings hold exactly these rows.) A book's rows start at
the first grid point at or after the receive time of the update that made it LIVE. When it becomes
invalid (a gap: RESYNCING) its rows stop at the receive time of its last applied update: grid points
after it, up to the first one after the update that makes it LIVE again, have no row. A book's rows
also stop ``[book] stale_after_s`` after its last update (rows start again with the next one), so a
recording whose sessions of different books lie days apart, or one book's stream that ended, never
fills the CSV with copies of a book nobody updates. The last rows are those before the recording's last
receive time (of the venues exported). Rows are written in processing order, so the books of different
venues interleave; per book they are strictly increasing and grid-aligned.

**Offline I/O.** ``ws`` records go to ``on_ws``. A ``snapshot`` record is fed to ``on_snapshot`` when
the adapter is waiting for one: it asked (``NeedSnapshot``) and has not been answered, or the book is
not LIVE (a collector may fetch the snapshot before the first diff arrives). A snapshot recorded while
the book is LIVE and nothing was asked is skipped (a live collector would not have fetched it) and
counted. ``Resubscribe`` cannot be honoured offline: it is counted, and the book stays invalid until
the recording itself carries a new Bybit snapshot. Crossed books are healed, never resynced
(``live=False``).

**Output.** Prices and sizes are ``repr`` of the float (the shortest text that reads back as the same
double): numerically equal to the venue's decimal strings, e.g. ``"61837.63000000"`` -> ``61837.63``.
Missing levels (a thin book) are blank cells. Rows are streamed (``csv`` module) to ``FILE.tmp`` and
renamed on success. A JSON summary goes to stderr: messages, gaps, resyncs, crossed-book heals and rows
per book. Same recording, same arguments: same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import structlog

from bot.book import OrderBook
from bot.config import BotSettings, load_settings
from bot.errors import BotError, ConfigError, InvariantViolation
from bot.events import BookHealth, BookState, BookUpdate, Event, Venue
from bot.grid_set import NEVER, GetBook, GridSet
from bot.recording import Block, Frames, Row, iter_frames, read_manifest
from bot.ring import LobGrid, lob_columns
from bot.venues import make_adapter
from bot.venues.base import NO_CLOCK, Action, NeedSnapshot, Publish, ReplayClock, Resubscribe, VenueAdapter

log = structlog.get_logger(__name__)

NS_PER_MS = 1_000_000
WriteRow = Callable[[list[object]], object]  # csv writer's writerow
GRID_CAPACITY = 1024  # ring rows per book beyond what the rows not yet final can take (see ExportGrids)


class BookGrid:
    """One book's grid (a ``GridSet``'s ``LobGrid``) drained into the CSV once its rows are final.

    A row is final when nothing can take it back any more (``GridSet.final_until``: stamped at or before
    the book's last update while its rows are being written, every row once they stopped, all at the end).
    The rows not yet final stay in the grid's ring until they are, and are written oldest first.
    """

    def __init__(self, venue: Venue, symbol: str, grid: LobGrid, write: WriteRow) -> None:
        self.venue = venue
        self.symbol = symbol
        self.grid = grid
        self._write = write
        self._rows = 0

    def drain(self, until_ns: int) -> None:
        """Write the rows stamped at or before ``until_ns`` that are not written yet."""
        g = self.grid
        pending = g.rows_written - g.rows_retracted - self._rows  # kept by the grid, not in the CSV yet
        if pending <= 0:
            return
        ring = g.ring
        times = ring.times()
        if pending > len(times):  # rows the ring could not keep: ExportGrids sizes it so that it never happens
            raise InvariantViolation(f"{self.venue.value}/{self.symbol}: {pending} grid rows pending, "
                                     f"the ring holds {len(times)}")
        first = len(times) - pending
        stop = int(np.searchsorted(times, until_ns, side="right"))
        if stop <= first:
            return
        head = [self.venue.value, self.symbol]
        write = self._write
        for t, row in zip(times[first:stop].tolist(), ring.window()[first:stop].tolist(), strict=True):
            write([t // NS_PER_MS, *head, *_cells(row)])
        self._rows += stop - first

    @property
    def rows(self) -> int:
        return self._rows


class ExportGrids(GridSet):
    """``bot.grid_set.GridSet`` with one grid per book, drained into the CSV (``BookGrid``) after every tick and
    every health change, when rows can have become final.

    The ring of each grid holds the rows not yet final: at most the ``stale_after_s`` after the last
    update, plus one tick's rows (themselves at most ``stale_after_s`` of grid steps), so its capacity is
    ``GRID_CAPACITY`` plus twice that.
    """

    def __init__(
        self, settings: BotSettings, keys: list[tuple[Venue, str]], get_book: GetBook, interval_ms: int, levels: int,
        write: WriteRow,
    ) -> None:  # fmt: skip
        stale_s = settings.book.stale_after_s
        capacity = GRID_CAPACITY + 2 * (int(stale_s * 1e9) // (interval_ms * NS_PER_MS) + 2)
        super().__init__([(interval_ms, levels, capacity)], get_book, keys, stale_after_s=stale_s)
        self.sinks = {(v, s): BookGrid(v, s, self.grids(v, s)[0], write) for v, s in keys}

    def on_time(self, ts_ns: int) -> None:
        if ts_ns <= self.due:
            return
        super().on_time(ts_ns)
        self.drain()

    def on_book_health(self, ev: BookHealth) -> None:
        super().on_book_health(ev)
        self.drain()

    def drain(self, final: bool = False) -> None:
        """Write every book's final rows (``final``: the recording ended, every row is)."""
        for (v, s), sink in self.sinks.items():
            sink.drain(NEVER if final else self.final_until(v, s))


def _cells(row: list[float]) -> list[str]:
    return ["" if x != x else repr(x) for x in row]


@dataclass
class FeedCounters:
    records: int = 0
    snapshots_fed: int = 0
    snapshots_skipped: int = 0
    resubscribes_unsatisfied: int = 0
    other_records: dict[str, int] = field(default_factory=dict)  # klines/info records, venues not replayed
    unroutable: dict[str, int] = field(default_factory=dict)  # records routed nowhere, by "venue/reason"


class _Lane(NamedTuple):
    """One venue's adapter with its hot methods bound once."""

    venue: Venue
    adapter: VenueAdapter
    on_ws_rows: Callable[[Iterable[Row], ReplayClock], None]
    on_ws_frames: Callable[[Frames, ReplayClock], None]
    take_actions: Callable[[], list[Action]]


_VENUE_KIND = itemgetter(1, 2)
FEED_TEXTS = ("ws", "snapshot")  # the kinds OfflineFeed reads the text of (the rest it counts): iter_frames texts


class OfflineFeed:
    """The collector's side of the adapter contract, played from a recording (see "Offline I/O" above).

    Builds one adapter per venue (``live=False``) for the given symbols, publishing to ``publish``; hands
    it the ``ws`` and ``snapshot`` records and answers its ``NeedSnapshot`` requests from the recording.
    Used by ``bot books`` and by ``bench/ingest.py``. It reads each adapter's ``books`` and ``states``
    (``BookAdapter``'s; the ``VenueAdapter`` ABC does not name them).
    """

    def __init__(self, settings: BotSettings, symbols: Mapping[Venue, tuple[str, ...]], publish: Publish) -> None:
        self.counters = FeedCounters()
        self.adapters: dict[Venue, VenueAdapter] = {}
        self.books: dict[tuple[Venue, str], OrderBook] = {}
        self._states: dict[Venue, Mapping[str, BookState]] = {}
        self.asked: set[tuple[Venue, str]] = set()  # NeedSnapshot not answered yet
        self._lanes: dict[str, _Lane] = {}
        for venue, syms in symbols.items():
            cfg = settings.venues[venue].model_copy(update={"symbols": syms})
            adapter = make_adapter(venue, cfg, settings.book, publish, live=False)
            books = getattr(adapter, "books", None)
            states = getattr(adapter, "states", None)
            if not (isinstance(books, dict) and isinstance(states, dict)):
                raise InvariantViolation(f"{venue.value} adapter exposes no books/states")
            self.adapters[venue] = adapter
            self._states[venue] = states
            for s in syms:
                self.books[(venue, s)] = books[s]
            self._lanes[venue.value] = _Lane(
                venue, adapter, adapter.on_ws_rows, adapter.on_ws_frames, adapter.take_actions
            )

    def book(self, venue: Venue, symbol: str) -> OrderBook | None:
        return self.books.get((venue, symbol))

    def run(self, records: Iterable[Row], clock: ReplayClock = NO_CLOCK) -> None:
        """Play ``records`` in order; ``clock.on_time(ts_recv)`` runs before every record it has work for
        (the LOB grids of ``bot.grid_set.RingSet`` are sampled so, as in a live run: on time, not on updates).

        Consecutive ``ws`` records of one venue (nearly all of a recording) go to the adapter as one run
        (``on_ws_rows``: its own loop, no call per record from here), and the actions they queued are taken
        after the run. That is the same as taking them after every record: the answers (``asked``) are
        only read by a snapshot record, which ends a run. Snapshots go one by one, as before.
        """
        c = self.counters
        lanes = self._lanes
        for (venue_name, kind), run in groupby(records, _VENUE_KIND):
            lane = lanes.get(venue_name)
            if lane is not None and kind == "ws":
                self._hand(lane, lane.on_ws_rows, run, clock)
            elif lane is not None and kind == "snapshot":
                for ts_recv, _, _, key, raw in run:
                    if ts_recv > clock.due:
                        clock.on_time(ts_recv)
                    c.records += 1
                    self._snapshot(lane, key, raw, ts_recv)
                    self._act(lane, lane.take_actions())
            else:
                k = f"{venue_name}/{kind}"
                why = f"{venue_name}/{'venue' if lane is None else 'kind'}_not_replayed:{kind}"
                for row in run:
                    if row[0] > clock.due:
                        clock.on_time(row[0])
                    c.records += 1
                    c.other_records[k] = c.other_records.get(k, 0) + 1
                    c.unroutable[why] = c.unroutable.get(why, 0) + 1

    def run_frames(self, items: Iterable[Frames | Block], clock: ReplayClock = NO_CLOCK) -> None:
        """``run`` for ``bot.recording.iter_frames``: a venue's websocket frames (nearly every record of a
        recording) go to its adapter as they lie in the decompressed block (``on_ws_frames``); any other
        block is played as rows."""
        lanes = self._lanes
        for item in items:
            if type(item) is not Frames:
                self.run(zip(*item, strict=True), clock)
                continue
            lane = lanes.get(item.venue)
            if lane is None:  # a venue not replayed: counted, and its receive times still move the clock
                self.run(((t, item.venue, "ws", "", "") for t in item.ts.tolist()), clock)
                continue
            self._hand(lane, lane.on_ws_frames, item, clock)

    def _hand(
        self, lane: _Lane, handle: Callable[[Any, ReplayClock], None], frames: object, clock: ReplayClock
    ) -> None:
        """Hand ``frames`` to ``lane``'s adapter, count them, then take the actions they queued."""
        stats = lane.adapter.stats
        before = stats.messages
        try:
            handle(frames, clock)
        finally:
            self.counters.records += stats.messages - before  # the adapter counts every frame it is handed
        self._act(lane, lane.take_actions())

    def _act(self, lane: _Lane, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, NeedSnapshot):
                self.asked.add((lane.venue, action.symbol))
            elif isinstance(action, Resubscribe):
                self.counters.resubscribes_unsatisfied += 1

    def _snapshot(self, lane: _Lane, symbol: str, raw: str, ts_recv: int) -> None:
        key = (lane.venue, symbol)
        if key not in self.books:  # a symbol not replayed
            why = f"{lane.venue.value}/symbol_not_replayed:snapshot {symbol}"
            self.counters.unroutable[why] = self.counters.unroutable.get(why, 0) + 1
            return
        if key in self.asked or self._states[lane.venue].get(symbol) is not BookState.LIVE:
            self.asked.discard(key)
            self.counters.snapshots_fed += 1
            lane.adapter.on_snapshot(symbol, raw, ts_recv)
        else:
            self.counters.snapshots_skipped += 1

    def unroutable(self) -> dict[str, int]:
        """What reached no book and no handler, by ``"venue/reason"``: the feed's own (a kind or a venue not
        replayed, a snapshot of a symbol not replayed) and each adapter's ``stats.skipped`` (an unknown
        topic or stream, a symbol not configured, another depth, a stream not handled such as bookTicker)."""
        out = dict(self.counters.unroutable)
        for venue, adapter in self.adapters.items():
            for reason, n in adapter.stats.skipped.items():
                key = f"{venue.value}/{reason}"
                out[key] = out.get(key, 0) + n
        return dict(sorted(out.items()))

    def check_books(self, rows: Mapping[tuple[Venue, str], int] | None = None) -> list[dict[str, Any]]:
        """The end of a replay: a structlog warning for each book that received no depth message although
        messages of its venue were there (``book_received_no_depth``, with that venue's largest unroutable
        counts, which usually say why: another depth, a symbol not configured), and for each book that did
        receive depth messages but ended with no row (``rows``, when given: ``book_has_no_rows``, with its
        gaps, resyncs and whether a snapshot was still pending). Returns the warnings' fields."""
        unroutable = self.unroutable()
        out: list[dict[str, Any]] = []
        for (venue, symbol), _ in self.books.items():
            stats = self.adapters[venue].stats
            depth = stats.book_messages.get(symbol, 0)
            n_rows = None if rows is None else rows.get((venue, symbol), 0)
            if not stats.messages or (depth and n_rows != 0):
                continue
            why = sorted(((n, k) for k, n in unroutable.items() if k.startswith(f"{venue.value}/")), reverse=True)
            fields: dict[str, Any] = {
                "event": "book_has_no_rows" if depth else "book_received_no_depth",
                "venue": venue.value, "symbol": symbol, "venue_messages": stats.messages, "depth_messages": depth,
                "rows": n_rows, "gaps": stats.gaps.get(symbol, 0), "resyncs": stats.resyncs.get(symbol, 0),
                "snapshot_pending": (venue, symbol) in self.asked, "unroutable": {k: n for n, k in why[:5]},
            }  # fmt: skip
            log.warning(**fields)
            out.append(fields)
        return out


class BooksExport:
    """``OfflineFeed`` plus ``ExportGrids`` (one grid per book, the bot's grid builder) as its clock, writing
    the CSV (see module doc)."""

    def __init__(
        self,
        settings: BotSettings,
        symbols: Mapping[Venue, tuple[str, ...]],
        interval_ms: int,
        levels: int,
        out: IO[str],
    ) -> None:
        check_grid(interval_ms, levels)
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(["ts_ms", "venue", "symbol", *lob_columns(levels)])
        self.feed = OfflineFeed(settings, symbols, self._on_event)
        keys = [(v, s) for v, syms in symbols.items() for s in syms]
        self.grids = ExportGrids(settings, keys, self.feed.book, interval_ms, levels, self._writer.writerow)
        self.health: dict[tuple[Venue, str], BookState] = {}
        self.valid_from: dict[tuple[Venue, str], int] = {}  # receive time at which a book first became LIVE

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, BookUpdate):
            self.grids.on_book_update(ev)
        elif isinstance(ev, BookHealth):
            key = (ev.venue, ev.symbol)
            self.health[key] = ev.state
            if ev.state is BookState.LIVE:
                self.valid_from.setdefault(key, ev.ts_recv)
            self.grids.on_book_health(ev)

    def run(self, items: Iterable[Frames | Block]) -> None:
        self.feed.run_frames(items, clock=self.grids)  # the grids ticked before every record, as in a replay
        self.grids.drain(final=True)

    def summary(self) -> dict[str, Any]:
        adapters = self.feed.adapters
        books: dict[str, Any] = {}
        for (venue, symbol), g in self.grids.sinks.items():
            stats = adapters[venue].stats
            first = self.valid_from.get((venue, symbol))
            books[f"{venue.value}/{symbol}"] = {
                "rows": g.rows,
                "gaps": stats.gaps.get(symbol, 0),
                "resyncs": stats.resyncs.get(symbol, 0),
                "crossed_heals": stats.crossed.get(symbol, 0),
                "depth_messages": stats.book_messages.get(symbol, 0),
                "valid_from_ms": None if first is None else first // NS_PER_MS,
                "live_at_end": self.health.get((venue, symbol)) is BookState.LIVE,
                "snapshot_pending_at_end": (venue, symbol) in self.feed.asked,
            }
        c = self.feed.counters
        return {
            "records": c.records,
            "messages": {v.value: a.stats.messages for v, a in adapters.items()},
            "malformed": {v.value: a.stats.malformed for v, a in adapters.items()},
            "level_updates": {v.value: a.stats.level_updates for v, a in adapters.items()},
            "snapshots_fed": c.snapshots_fed,
            "snapshots_skipped": c.snapshots_skipped,
            "resubscribes_unsatisfied": c.resubscribes_unsatisfied,
            "other_records": dict(sorted(c.other_records.items())),
            "unroutable": self.feed.unroutable(),
            "rows": sum(g.rows for g in self.grids.sinks.values()),
            "books": books,
        }


def check_grid(interval_ms: int, levels: int) -> None:
    if interval_ms < 1:
        raise ConfigError(f"--interval-ms must be >= 1, got {interval_ms}")
    if not 1 <= levels <= 1000:
        raise ConfigError(f"--levels must be between 1 and 1000, got {levels}")


def plan(
    settings: BotSettings, manifest: Mapping[str, Any], venues: list[str] | None, symbols: list[str] | None
) -> dict[Venue, tuple[str, ...]]:
    """Which books to rebuild: the recording's venues (or ``--venues``); per venue the symbols the
    manifest names (the configured ones for an older manifest that names none), or exactly ``--symbols``."""
    known = {v.value: v for v in Venue}
    if venues:
        names = [n.strip() for v in venues for n in v.split(",") if n.strip()]
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(f"unknown venue(s) {bad}; known: {sorted(known)}")
    else:
        names = [n for n in manifest.get("venues", []) if n in known]
    wanted: tuple[str, ...] | None = None
    if symbols:
        wanted = tuple(dict.fromkeys(n.strip().upper() for s in symbols for n in s.split(",") if n.strip()))
        bad = [s for s in wanted if not s.isalnum()]
        if bad:
            raise ConfigError(f"--symbols must be like BTCUSDT: {bad}")
    recorded: Mapping[str, list[str]] = manifest.get("symbols", {}) or {}
    out: dict[Venue, tuple[str, ...]] = {}
    for name in dict.fromkeys(names):
        v = known[name]
        syms = wanted or tuple(recorded.get(name) or settings.venues[v].symbols)
        if syms:
            out[v] = syms
    if not out:
        raise ConfigError("nothing to export: no known venue in the recording (or in --venues)")
    return out


def export_books(
    recording: Path,
    out: Path,
    *,
    levels: int,
    interval_ms: int,
    settings: BotSettings,
    venues: list[str] | None = None,
    symbols: list[str] | None = None,
) -> dict[str, Any]:
    """Write the CSV to ``out`` (atomically) and return the summary."""
    check_grid(interval_ms, levels)
    manifest = read_manifest(recording)
    books = plan(settings, manifest, venues, symbols)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            exp = BooksExport(settings, books, interval_ms, levels, fh)
            exp.run(iter_frames(recording, venues={v.value for v in books}, texts=FEED_TEXTS))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary = exp.summary()
    exp.feed.check_books({(v, s): summary["books"][f"{v.value}/{s}"]["rows"] for v, s in exp.feed.books})
    return summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("books", help="rebuild books from a recording and write a grid-sampled CSV dataset")
    p.add_argument("recording", type=Path, metavar="DIR", help="native recording directory")
    p.add_argument("--levels", type=int, required=True, help="levels per side in each row")
    p.add_argument("--interval-ms", type=int, required=True, help="grid step in ms of local receive time")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--venues", nargs="+", default=None, metavar="VENUE", help="only these venues")
    p.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL", help="exactly these symbols per venue")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(getattr(args, "config", None))
        if not args.out.parent.is_dir():
            raise ConfigError(f"--out: directory {args.out.parent} does not exist")
        summary = export_books(
            args.recording, args.out, levels=args.levels, interval_ms=args.interval_ms, settings=settings,
            venues=args.venues, symbols=args.symbols,
        )  # fmt: skip
    except BotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return 0
