"""A book for the instruments a replay knows only from kline files.

A bar says where the price closed, not what the book held, so the paper matcher gets the simplest book
that does not flatter a strategy: one level per side at each bar's close, ``[replay] bar_spread_bps`` wide
in all and ``bar_depth_notional`` (quote asset) deep, moved at the bar's close time (its receive time).
An order decided on a bar arrives after the venue's latency, so it meets the book of the *next* bar: a
kline replay fills at the close of the bar after the decision, never at the price the decision saw, one
bar later than a live bot would and at a price that the bar's range says nothing about (no high/low path
is invented). Limit orders rest and fill when the next bars' quotes reach them (no queue: a bar has no
trades to advance one).

Only instruments without an order-book source get such a book, and the LOB grids never read it (the
replay gives the rings only the recorded books).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from bot.events import BookHealth, BookState, BookUpdate, Event, KlineClosed, Venue

Level = tuple[float, float]


class BarBook:
    __slots__ = ("ask", "bid", "ts")

    def __init__(self) -> None:
        self.bid: Level = (0.0, 0.0)
        self.ask: Level = (0.0, 0.0)
        self.ts = 0

    def top(self, n: int) -> tuple[Sequence[Level], Sequence[Level]]:
        if n <= 0 or self.ts == 0:
            return [], []
        return [self.bid], [self.ask]


class BarBooks:
    """One ``BarBook`` per (venue, symbol) it is given, moved by that series' finest bars."""

    def __init__(
        self, keys: Sequence[tuple[Venue, str]], spread_bps: float, depth_notional: Decimal,
        publish: Callable[[Event], None],
    ) -> None:  # fmt: skip
        self.books = {k: BarBook() for k in keys}
        self._half = spread_bps / 2e4
        self._depth = float(depth_notional)
        self._publish = publish
        self._interval: dict[tuple[Venue, str], int] = {}
        self._seen: dict[tuple[Venue, str], bool] = {}
        self.updates = 0

    def get(self, venue: Venue, symbol: str) -> BarBook | None:
        return self.books.get((venue, symbol))

    def move(self, k: KlineClosed) -> bool:
        """Set ``k``'s book to its close without telling anyone (the replay moves every book of one bar
        time first, so that an order arriving then meets all of them at that time). False: not a bar that
        moves a book."""
        key = (k.venue, k.symbol)
        book = self.books.get(key)
        if book is None:
            return False
        iv = self._interval.setdefault(key, k.interval_s)
        if k.interval_s != iv:  # a resampled coarser bar of the same series: the finest one moved it already
            return False
        if book.ts != k.ts_recv:
            bid, ask = k.close * (1 - self._half), k.close * (1 + self._half)
            book.bid, book.ask, book.ts = (bid, self._depth / bid), (ask, self._depth / ask), k.ts_recv
        return True

    def on_bar(self, k: KlineClosed) -> None:
        """The bus handler: move ``k``'s book (if ``move`` has not) and publish its health and top."""
        book = self.books.get((k.venue, k.symbol))
        if book is None:
            return
        first = book.ts == 0 or self._seen.get((k.venue, k.symbol)) is None
        if not self.move(k):
            return
        self._seen[(k.venue, k.symbol)] = True
        self.updates += 1
        if first:
            self._publish(BookHealth(ts_event=k.ts_event, ts_recv=k.ts_recv, venue=k.venue, symbol=k.symbol,
                                     state=BookState.LIVE, reason="bar_book"))
        self._publish(BookUpdate(
            ts_event=k.ts_event, ts_recv=k.ts_recv, venue=k.venue, symbol=k.symbol, update_id=self.updates,
            bid_px=book.bid[0], bid_sz=book.bid[1], ask_px=book.ask[0], ask_sz=book.ask[1],
        ))  # fmt: skip
