"""The grid builder: every book's LOB grids (``bot.ring.LobGrid``), fed from the bus and ticked on the receive clock.

``GridSet`` is THE grid builder of ``run``, ``replay`` and ``python -m bot books``: the LOB grids of every
(venue, symbol), fed from the bus (``BookUpdate``, ``BookHealth``) and ticked by ``on_time``, with one set
of rules wherever it runs (see its docstring). ``RingSet`` is the bot's pair of them per (venue, symbol):
a coarse grid (forecaster: 5 s x 5 levels by default) and a fine grid (TABL: 1 s x 10); ``bot.export``
uses one grid per book and writes its rows to the training CSV. The models therefore see the same rows in
training, in a replay and live.

**The time base is the local receive time** (``ts_recv``), for the live rings, the replay and the export
alike, never the venue's timestamp:

* a row then holds exactly what the bot could have known at that instant: no venue-clock look-ahead (a
  venue timestamp can be later than the moment we could act on the message, and the recordings' local
  clocks run 1.2-1.5 s behind the venues', more than a step of the 1 s grid);
* the venues' clocks differ from each other and from ours; one local clock aligns every venue on one
  grid, which the multi-venue forecaster needs;
* in a replay the replay clock IS the recorded receive time, so a replay's rows equal the export's
  exactly; live differs from a replay only by the network.

Formats without a receive time (the Bybit archive, Binance CSVs) use the exchange time as their receive
time at import (``bot.importers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import structlog

from bot.bus import EventBus
from bot.config import BookConfig, BotSettings, RingConfig
from bot.events import BookHealth, BookState, BookUpdate, BookUpdates, Venue
from bot.ring import BookLevels, LobGrid

log = structlog.get_logger(__name__)

GetBook = Callable[[Venue, str], BookLevels | None]
GridSpec = tuple[int, int, int]  # one grid of every book: (interval_ms, levels, capacity)
DEFAULT_STALE_AFTER_S: float = BookConfig.model_fields["stale_after_s"].default
NEVER = 2**63 - 1


class _Pair:
    """One (venue, symbol): its grids and what the set knows of its book."""

    __slots__ = ("grids", "health", "last_ns", "on")

    def __init__(self, grids: tuple[LobGrid, ...]) -> None:
        self.grids = grids
        self.health = BookState.LIVE  # until told otherwise (a set attached to a running feed)
        self.last_ns = 0  # receive time of the last accepted update (or of the start)
        self.on = False  # rows being written: every grid of the pair is valid


class GridSet:
    """The LOB grids of every given (venue, symbol), one ``LobGrid`` per ``GridSpec``: the one grid builder.

    Every time is a local receive time (``ts_recv``; see the module docstring for why), passed in, never
    read from a clock, so the bot, a replay and ``python -m bot books`` write the same rows from the same
    events and ticks:

    * **Ticks.** Books are read on grid ticks only, never per change: ``on_time(ts)`` reads each due book
      once (for all its grids) and writes the rows for grid times strictly before ``ts``. A replay or the
      export calls it before handing each record with receive time ``ts`` to the adapters
      (``bot.export.OfflineFeed`` with this set as its clock); live, a timer calls it at the grid times.
      Either way the row at grid time t is the book after the last change received at or before t.
    * **Start.** ``BookHealth`` LIVE, or a ``BookUpdate`` while no rows are written (and the book is not
      known to be anything but LIVE), starts a book's rows at the first grid time at or after that event's
      receive time.
    * **Quiet.** Rows stop ``stale_after_s`` (``[book] stale_after_s``) after the last update received:
      a row at t is written only if t - last update <= stale_after_s, the adapters' STALE rule, here
      exact to the nanosecond instead of at their once-a-second check. The next update starts the rows
      again. (So a recording whose session of one book ended, or whose sessions are days apart, never
      fills a grid with copies of a book nobody updates.)
    * **Invalid.** ``BookHealth`` RESYNCING (a gap, a disconnect) stops a book's rows and retracts those
      stamped after its last update: the book may have missed an update from then on, which is noticed
      only when the next message arrives. The rows up to the last applied update stay. STALE only stops
      them (nothing was missed). Rows start again with LIVE.

    Events for pairs not configured here are counted in ``unknown`` and ignored: memory stays what the
    configuration says.
    """

    def __init__(
        self,
        grids: Sequence[GridSpec],
        get_book: GetBook,
        keys: Iterable[tuple[Venue, str]],
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        if not grids:
            raise ValueError("a GridSet needs at least one grid")
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s}")
        self._get_book = get_book
        self._pairs: dict[tuple[Venue, str], _Pair] = {
            (v, s): _Pair(tuple(LobGrid(v, s, iv, levels, cap) for iv, levels, cap in grids)) for v, s in keys
        }
        self._levels = max(levels for _, levels, _ in grids)
        self._stale_ns = int(stale_after_s * 1e9)  # as the adapters count it (bot.venues._shared)
        # Earliest grid time of any valid grid (ns): on_time(ts) has work only for ts > due, so a replay
        # loop may skip the call below it (``bot.venues.base.ReplayClock``).
        self.due = 0
        self.unknown = 0
        self.missing_book = 0
        self.ignored_not_live = 0
        self.stale_stops = 0  # rows stopped by a quiet book (stale_after_s without an update)
        self.rows_retracted = 0

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(BookUpdate, self.on_book_update, batch=self.on_book_updates, batch_ok=self.takes_batch)
        bus.subscribe(BookHealth, self.on_book_health)

    def on_book_update(self, ev: BookUpdate) -> None:
        key = (ev.venue, ev.symbol)
        p = self._pairs.get(key)
        if p is None:
            self.unknown += 1
            return
        if p.health is not BookState.LIVE:
            self.ignored_not_live += 1
            return
        ts = ev.ts_recv
        if ts > p.last_ns:
            p.last_ns = ts
        if not p.on:
            self._start(key, p, ts)

    def takes_batch(self, venue: Venue, symbol: str) -> bool:
        """Whether this book's updates may come as a batch handed over late (``bot.bus``): yes unless its
        rows are stopped while it is LIVE, when an update would start them (and move ``due``). Otherwise an
        update only counts or moves the book's last update time on, and a batch handed over before the
        next tick does the same."""
        p = self._pairs.get((venue, symbol))
        return p is None or p.health is not BookState.LIVE or p.on

    def on_book_updates(self, batch: BookUpdates) -> None:
        """``on_book_update`` for each update of a batch, in order (per book: ``takes_batch``)."""
        venue = batch.venue
        for k, n in enumerate(batch.count.tolist()):
            if not n:
                continue
            symbol = batch.symbols[k]
            p = self._pairs.get((venue, symbol))
            if p is None:
                self.unknown += n
            elif p.health is not BookState.LIVE:
                self.ignored_not_live += n
            elif p.on:
                p.last_ns = max(p.last_ns, int(batch.max_recv[k]))
            else:  # a batch it did not take: one by one
                for ev in batch.events():
                    if ev.symbol == symbol:
                        self.on_book_update(ev)

    def on_book_health(self, ev: BookHealth) -> None:
        key = (ev.venue, ev.symbol)
        p = self._pairs.get(key)
        if p is None:
            self.unknown += 1
            return
        p.health = ev.state
        if ev.state is BookState.LIVE:
            self._start(key, p, ev.ts_recv)
        elif p.on:
            p.on = False
            for g in p.grids:
                if ev.state is not BookState.STALE:
                    self.rows_retracted += g.retract_after(p.last_ns)
                g.stop()

    def _start(self, key: tuple[Venue, str], p: _Pair, ts_ns: int) -> None:
        if p.on:
            return
        if self._get_book(*key) is None:
            self.missing_book += 1
            return
        for g in p.grids:
            g.start(ts_ns)
        p.on = True
        if ts_ns > p.last_ns:
            p.last_ns = ts_ns
        self.due = 0  # recompute on the next tick

    def on_time(self, ts_ns: int) -> None:
        """Time has reached ``ts_ns``: write every grid's rows for grid times strictly before it."""
        if ts_ns <= self.due:
            return  # the hot path: called before every record, almost always nothing to do
        nxt = NEVER
        levels = self._levels
        for key, p in self._pairs.items():
            if not p.on:
                continue
            grids = p.grids
            for g in grids:
                if g.due(ts_ns):
                    break
            else:
                for g in grids:
                    nxt = min(nxt, g.next_time)
                continue
            book = self._get_book(*key)
            if book is None:
                self.missing_book += 1
                continue
            limit = p.last_ns + self._stale_ns
            stale = ts_ns > limit  # quiet for longer than stale_after_s: the rows up to then, none after
            at = limit + 1 if stale else ts_ns
            top_row = getattr(book, "top_row", None)
            if top_row is not None:  # one read for every grid, as a row (bot.book.OrderBook)
                row = top_row(levels)
                for g in grids:
                    g.sample_row(at, row, levels)
            else:
                bids, asks = book.top(levels)
                for g in grids:
                    g.sample(at, bids, asks)
            if stale:
                for g in grids:
                    g.stop()
                p.on = False
                self.stale_stops += 1
                continue
            for g in grids:
                nxt = min(nxt, g.next_time)
        self.due = nxt  # NEVER while no book's rows are written: nothing to do until one starts (_start resets it)

    def grids(self, venue: Venue, symbol: str) -> tuple[LobGrid, ...]:
        return self._pairs[(venue, symbol)].grids

    def final_until(self, venue: Venue, symbol: str) -> int:
        """Rows stamped at or before this time are final (no retraction can remove them): the last update's
        receive time while the book's rows are being written, and every row once they stopped."""
        p = self._pairs[(venue, symbol)]
        return p.last_ns if p.on else NEVER

    def keys(self) -> list[tuple[Venue, str]]:
        return list(self._pairs)

    @property
    def nbytes(self) -> int:
        """Total bytes of every grid (fixed at construction)."""
        return sum(g.nbytes for p in self._pairs.values() for g in p.grids)


class RingSet(GridSet):
    """The bot's LOB grids of every configured (venue, symbol): ``coarse`` for the forecaster, ``fine`` for
    TABL (sizes from ``RingConfig``), built and fed by the ``GridSet`` rules."""

    def __init__(
        self,
        cfg: RingConfig,
        get_book: GetBook,
        keys: Iterable[tuple[Venue, str]],
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.cfg = cfg
        grids = [(cfg.lob_interval_ms, cfg.lob_levels, cfg.lob_capacity),
                 (cfg.fine_interval_ms, cfg.fine_levels, cfg.fine_capacity)]  # fmt: skip
        super().__init__(grids, get_book, keys, stale_after_s=stale_after_s)

    @classmethod
    def from_settings(cls, settings: BotSettings, get_book: GetBook) -> RingSet:
        keys = [(v, s) for v, c in settings.enabled_venues().items() for s in c.symbols]
        return cls(settings.ring, get_book, keys, stale_after_s=settings.book.stale_after_s)

    def attach(self, bus: EventBus) -> None:
        super().attach(bus)
        log.info("ring_set_attached", pairs=len(self.keys()), nbytes=self.nbytes, ring=self.cfg.model_dump())

    def coarse(self, venue: Venue, symbol: str) -> LobGrid:
        return self._pairs[(venue, symbol)].grids[0]

    def fine(self, venue: Venue, symbol: str) -> LobGrid:
        return self._pairs[(venue, symbol)].grids[1]
