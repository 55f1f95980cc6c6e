"""Bounded numpy rings: the LOB grid a model reads, sampled on a fixed time grid.

Memory is fixed when a ring is built (capacity x width from ``RingConfig``); a run of any length never
grows it. Reading is free: each row is written twice, at slot ``i`` and ``i + capacity`` of a buffer of
``2 * capacity`` rows, so the last ``n`` rows are always one contiguous slice and ``window(n)`` is a view,
never a copy. The price is one extra row write per append, paid once per grid step (not per book level
update: the book changes thousands of times a second, the grid ticks once a second or slower).

    buffer (capacity 4, six appends a..f; next write at slot 2):
        slot:  0 1 2 3 | 4 5 6 7
        row:   e f c d | e f c d      window(4) = buffer[2:6] = c d e f (oldest first, contiguous)

``LobGrid`` turns a stream of book changes into rows on a grid aligned to epoch multiples of
``interval_ms``. The row for grid time ``t`` is the book as it stood after the last change with time
``<= t``; it is written by the first call (a change, a timer tick or an invalidation) with a time
strictly after ``t``, so a change stamped exactly ``t`` still lands in row ``t``. Every time is passed in
(no clock is read here), so live and replay produce identical rows from identical inputs.

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

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import structlog
from numpy.typing import ArrayLike, DTypeLike, NDArray

from bot.bus import EventBus
from bot.config import BookConfig, BotSettings, RingConfig
from bot.events import BookHealth, BookState, BookUpdate, BookUpdates, Venue

log = structlog.get_logger(__name__)

NAN = math.nan
NS_PER_MS = 1_000_000


class Ring:
    """A bounded 2-D ring of ``capacity`` rows x ``width`` columns with an int64 timestamp per row.

    Views returned by ``window``, ``times`` and ``latest`` are READ-ONLY and share the ring's memory:
    later appends overwrite them in place (a window of ``n`` rows stays intact for the next
    ``capacity - n`` appends, but do not rely on that). Copy (``np.array(view)``) anything kept past the
    next append. Asking for more rows than the ring holds returns the rows it has, like ``list[-n:]``.
    """

    __slots__ = ("_buf", "_cap", "_len", "_pos", "_ts", "appended", "width")

    def __init__(self, capacity: int, width: int, dtype: DTypeLike = np.float64) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        if width < 1:
            raise ValueError(f"ring width must be >= 1, got {width}")
        self._cap = capacity
        self.width = width
        self._buf: NDArray[np.generic] = np.zeros((2 * capacity, width), dtype=dtype)
        self._ts: NDArray[np.int64] = np.zeros(2 * capacity, dtype=np.int64)
        self._pos = 0  # slot of the next write, in [0, capacity)
        self._len = 0
        self.appended = 0  # rows ever appended (a counter, not a size)

    # -- writing ------------------------------------------------------------------------------------
    def append(self, row: ArrayLike, ts: int = 0) -> None:
        """Write one row (anything numpy can broadcast to ``width``) stamped ``ts``."""
        p = self._pos
        c = self._cap
        buf = self._buf
        buf[p] = row
        buf[p + c] = buf[p]
        self._ts[p] = ts
        self._ts[p + c] = ts
        p += 1
        self._pos = 0 if p == c else p
        if self._len < c:
            self._len += 1
        self.appended += 1

    def extend(self, rows: ArrayLike, ts: ArrayLike | None = None) -> None:
        """Append several rows at once (oldest first); only the last ``capacity`` can survive."""
        arr = np.asarray(rows, dtype=self._buf.dtype)
        if arr.ndim != 2 or arr.shape[1] != self.width:
            raise ValueError(f"extend expects shape (k, {self.width}), got {arr.shape}")
        k = arr.shape[0]
        stamps = np.zeros(k, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
        if stamps.shape != (k,):
            raise ValueError(f"extend got {k} rows but timestamps of shape {stamps.shape}")
        if k == 0:
            return
        self.appended += k
        if k > self._cap:
            arr, stamps, k = arr[-self._cap :], stamps[-self._cap :], self._cap
        idx = (self._pos + np.arange(k)) % self._cap
        self._buf[idx] = arr
        self._buf[idx + self._cap] = arr
        self._ts[idx] = stamps
        self._ts[idx + self._cap] = stamps
        self._pos = (self._pos + k) % self._cap
        self._len = min(self._len + k, self._cap)

    def replace(self, age: int, row: ArrayLike, ts: int) -> None:
        """Overwrite the row ``age`` steps back (0 = latest) in place, both copies."""
        if not 0 <= age < self._len:
            raise IndexError(f"age {age} out of range for a ring holding {self._len} rows")
        slot = (self._pos - 1 - age) % self._cap
        self._buf[slot] = row
        self._buf[slot + self._cap] = self._buf[slot]
        self._ts[slot] = ts
        self._ts[slot + self._cap] = ts

    def drop_newest(self, k: int) -> None:
        """Forget the newest ``k`` rows (the older rows and their views stay as they are; ``appended``
        keeps counting every row ever appended)."""
        if not 0 <= k <= self._len:
            raise ValueError(f"cannot drop {k} rows from a ring holding {self._len}")
        self._pos = (self._pos - k) % self._cap
        self._len -= k

    def clear(self) -> None:
        """Forget every row (memory is kept, not released)."""
        self._pos = 0
        self._len = 0

    # -- reading (read-only views, no copies) -------------------------------------------------------
    def window(self, n: int | None = None) -> NDArray[np.generic]:
        """The last ``n`` rows (default: all), oldest first, as a read-only view of shape (n, width)."""
        end = self._pos + self._cap
        view = self._buf[end - self._take(n) : end]
        view.flags.writeable = False
        return view

    def times(self, n: int | None = None) -> NDArray[np.int64]:
        """The timestamps of ``window(n)``, as a read-only view."""
        end = self._pos + self._cap
        view = self._ts[end - self._take(n) : end]
        view.flags.writeable = False
        return view

    def latest(self) -> NDArray[np.generic]:
        """The newest row (read-only view of shape (width,)); IndexError when empty."""
        if self._len == 0:
            raise IndexError("latest() on an empty ring")
        i = self._pos + self._cap - 1
        view: NDArray[np.generic] = self._buf[i]
        view.flags.writeable = False
        return view

    def latest_time(self) -> int:
        if self._len == 0:
            raise IndexError("latest_time() on an empty ring")
        return int(self._ts[self._pos + self._cap - 1])

    def _take(self, n: int | None) -> int:
        if n is None:
            return self._len
        if n < 0:
            raise ValueError(f"window size must be >= 0, got {n}")
        return min(n, self._len)

    # -- size ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's arrays (fixed at construction)."""
        return int(self._buf.nbytes + self._ts.nbytes)

    @property
    def buffer(self) -> NDArray[np.generic]:
        """The whole mirrored buffer, read-only (for tests and diagnostics)."""
        view = self._buf[:]
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        return f"Ring(len={self._len}, capacity={self._cap}, width={self.width}, dtype={self._buf.dtype})"


# -- the LOB grid -------------------------------------------------------------------------------------


class BookLevels(Protocol):
    """What the grid needs from a local book (``bot.book.OrderBook`` satisfies it)."""

    def top(self, n: int) -> tuple[Sequence[tuple[float, float]], Sequence[tuple[float, float]]]:
        """Best ``n`` bids and asks as (price, size), best first."""
        ...


def lob_columns(levels: int) -> list[str]:
    """Column names of a grid row: bid_px_1, bid_sz_1, ..., ask_px_1, ask_sz_1, ..."""
    cols = []
    for side in ("bid", "ask"):
        for i in range(1, levels + 1):
            cols += [f"{side}_px_{i}", f"{side}_sz_{i}"]
    return cols


class LobGrid:
    """One book sampled on a fixed time grid: a ring of rows [bid px/sz x N, ask px/sz x N].

    Missing levels (a thin book) are NaN. Rows exist only while the book is valid: ``invalidate``
    writes the rows the last valid state still owns (grid times before the invalidation) and then
    writes nothing until the next ``on_book``. Grid times skipped while invalid have no row, so a gap
    shows in ``times()``. Long quiet spells are written as repeated rows (at most ``capacity`` of them).

    Two ways to feed it: per change (``on_book``, ``invalidate``, ``on_time``: the book is read at every
    change), or on ticks (``start``, ``sample``, ``stop``, ``retract_after``: the book is read once per grid
    step), which is what ``GridSet`` does for the bot, the replay and the export. Both write the same rows.
    """

    def __init__(self, venue: Venue, symbol: str, interval_ms: int, levels: int, capacity: int) -> None:
        if interval_ms < 1:
            raise ValueError(f"interval_ms must be >= 1, got {interval_ms}")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.venue = venue
        self.symbol = symbol
        self.interval_ms = interval_ms
        self.levels = levels
        self.ring = Ring(capacity, 4 * levels)
        self._iv = interval_ms * NS_PER_MS
        self._width = 4 * levels
        # The state after the last change, kept as a plain list: it is rebuilt on every book change
        # and converted to numpy only when a grid row is written (far rarer).
        self._state: list[float] | NDArray[np.float64] = [NAN] * self._width
        self._valid = False
        self._next = 0  # the earliest grid time (ns) that has no row yet
        self.rows_written = 0  # rows ever written (retracted ones included)
        self.rows_retracted = 0
        self.invalidations = 0
        self.late_changes = 0  # changes stamped before a row already written (applied to later rows only)

    @property
    def valid(self) -> bool:
        return self._valid

    @property
    def next_time(self) -> int:
        """The earliest grid time (ns) that has no row yet."""
        return self._next

    def on_book(self, ts_ns: int, book: BookLevels) -> None:
        """Call after every change of ``book`` (time ``ts_ns``); the book is taken to be valid."""
        bids, asks = book.top(self.levels)
        self.on_levels(ts_ns, bids, asks)

    def on_levels(self, ts_ns: int, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]) -> None:
        """``on_book`` with the levels already read (best first; levels beyond ``self.levels`` ignored)."""
        if self._valid:
            self._emit_before(ts_ns)
            if ts_ns <= self._next - self._iv:  # a row at or after ts_ns is already written
                self.late_changes += 1
        else:
            self._next = max(self._next, -(-ts_ns // self._iv) * self._iv)
            self._valid = True
        self._save(bids, asks)

    def on_time(self, ts_ns: int) -> None:
        """Time has reached ``ts_ns``: write the rows for every grid time strictly before it."""
        if self._valid:
            self._emit_before(ts_ns)

    # -- sampling on grid ticks (RingSet): the book is read once per grid time, not once per change --
    def start(self, ts_ns: int) -> None:
        """The book became valid at ``ts_ns``: rows start at the first grid time at or after it."""
        if not self._valid:
            self._next = max(self._next, -(-ts_ns // self._iv) * self._iv)
            self._valid = True

    def due(self, ts_ns: int) -> bool:
        """Whether a tick at ``ts_ns`` would write a row (valid, and a grid time lies before it)."""
        return self._valid and ts_ns > self._next

    def sample(self, ts_ns: int, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]) -> None:
        """Time has reached ``ts_ns`` and the book now holds ``bids``/``asks``: it held them at every grid time
        since the last tick too, provided the caller ticks before applying each change (replay driver) or
        at the grid times themselves (live timer)."""
        if self._valid:
            self._save(bids, asks)
            self._emit_before(ts_ns)

    def sample_row(self, ts_ns: int, row: NDArray[np.float64], levels: int) -> None:
        """``sample`` with the book read as one row of ``levels >= self.levels`` levels a side (the layout of a
        grid row: bids then asks, NaN where the book is thinner; ``OrderBook.top_row``), never modified."""
        if self._valid:
            n = self.levels
            self._state = row if n == levels else np.concatenate((row[: 2 * n], row[2 * levels : 2 * (levels + n)]))
            self._emit_before(ts_ns)

    def stop(self) -> None:
        """The book is no longer valid: no rows until ``start`` (rows not yet written are skipped)."""
        if self._valid:
            self._valid = False
            self.invalidations += 1

    def retract_after(self, ts_ns: int) -> int:
        """Drop the rows stamped after ``ts_ns`` (the newest ones: rows are in time order); returns how many.

        For a book found broken: its rows after the last update known good held a state that may have
        missed an update (a gap is noticed only when the next message arrives)."""
        times = self.ring.times()
        keep = int(np.searchsorted(times, ts_ns, side="right"))
        k = len(times) - keep
        if k:
            self._next = min(self._next, int(times[keep]))
            self.ring.drop_newest(k)
            self.rows_retracted += k
        return k

    def invalidate(self, ts_ns: int) -> None:
        """The book stopped being valid at ``ts_ns``: no rows from then until the next ``on_book``."""
        if self._valid:
            self._emit_before(ts_ns)
            self._valid = False
            self.invalidations += 1

    def _save(self, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]) -> None:
        n = self.levels
        row = [NAN] * self._width
        i = 0
        for px, sz in bids[:n]:
            row[i] = px
            row[i + 1] = sz
            i += 2
        i = 2 * n
        for px, sz in asks[:n]:
            row[i] = px
            row[i + 1] = sz
            i += 2
        self._state = row

    def _emit_before(self, ts_ns: int) -> None:
        nxt = self._next
        if ts_ns <= nxt:
            return
        iv = self._iv
        k = (ts_ns - nxt + iv - 1) // iv  # grid times in [nxt, ts_ns)
        if k == 1:
            self.ring.append(self._state, nxt)
        else:
            m = min(k, self.ring.capacity)
            first = nxt + (k - m) * iv
            rows = np.broadcast_to(np.asarray(self._state, dtype=np.float64), (m, self._width))
            self.ring.extend(rows, first + iv * np.arange(m, dtype=np.int64))
        self._next = nxt + k * iv
        self.rows_written += k

    # -- reading ------------------------------------------------------------------------------------
    def window(self, n: int | None = None) -> NDArray[np.generic]:
        """Last ``n`` rows, oldest first (read-only view; see ``Ring``)."""
        return self.ring.window(n)

    def times(self, n: int | None = None) -> NDArray[np.int64]:
        """Grid times (ns) of ``window(n)``."""
        return self.ring.times(n)

    @property
    def columns(self) -> list[str]:
        return lob_columns(self.levels)

    @property
    def nbytes(self) -> int:
        return self.ring.nbytes

    def __len__(self) -> int:
        return len(self.ring)


# -- the grid builder: every book's grids, fed from the bus, ticked on the receive clock ------------------

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
            at = limit + 1 if ts_ns > limit else ts_ns  # quiet for longer than stale_after_s: the rows up to then
            top_row = getattr(book, "top_row", None)
            if top_row is not None:  # one read for every grid, as a row (bot.book.OrderBook)
                row = top_row(levels)
                for g in grids:
                    g.sample_row(at, row, levels)
            else:
                bids, asks = book.top(levels)
                for g in grids:
                    g.sample(at, bids, asks)
            if at != ts_ns:  # stale: no rows after it
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
