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

The grid builder that feeds these grids from the bus and ticks them (``GridSet``, ``RingSet``) is in
``bot.grid_set``.

Every time is a local receive time (``ts_recv``); ``bot.grid_set`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from bot.events import Venue

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
        self._cut = 0  # levels a side of _state when it is a wider row not cut yet (sample_row), else 0
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
            self._state = row
            self._cut = 0 if levels == self.levels else levels  # cut when a row is written (most ticks write none)
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
        self._cut = 0

    def _emit_before(self, ts_ns: int) -> None:
        nxt = self._next
        if ts_ns <= nxt:
            return
        if self._cut:
            row, m, n = self._state, self._cut, self.levels
            self._state = np.concatenate((row[: 2 * n], row[2 * m : 2 * (m + n)]))
            self._cut = 0
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
