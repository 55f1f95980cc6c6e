"""What every book-keeping venue adapter does the same way: health states, publishing, counters.

The venue files (``binance*.py``, ``bybit*.py``) hold everything venue-specific: wire structs, parsers,
topic and URL templates, and the sync algorithm. This base only turns their decisions into domain
events, so both venues publish the same events in the same order:

* ``BookHealth`` on every state change: SYNCING for every book on the first frame of the session,
  LIVE once a book is in sync, RESYNCING on a gap, a disconnect or (live) a crossed book, STALE from
  ``check_stale``, LIVE again on the next applied update. ``ts_event`` of a health event is the local
  time of the decision (health is our judgement, not the venue's).
* ``BookUpdate`` after every applied snapshot or diff, with the top of book after it (nan for an
  empty side).
* ``BookCrossed`` when the book healed a crossed state.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import structlog

from bot.book import OrderBook
from bot.bus import EventBus, bus_of
from bot.config import BookConfig, VenueConfig
from bot.events import BookCrossed, BookHealth, BookState, BookUpdate, BookUpdates, KlineClosed
from bot.venues import json_kernels as jk
from bot.venues.base import Action, Publish, VenueAdapter

log = structlog.get_logger(__name__)

DECODE_ERRORS = (msgspec.MsgspecError, UnicodeError)
NS_PER_MS = 1_000_000
_MALFORMED_LOG_FIRST = 5  # log the first few malformed frames, then every _MALFORMED_LOG_EVERY-th
_MALFORMED_LOG_EVERY = 1000
_NAN = float("nan")

Handler = Callable[[str | bytes, str, int], None]  # a routed frame's handler: (frame, symbol, ts_recv)


class BookAdapter(VenueAdapter):
    """A venue adapter that keeps one ``OrderBook`` and one ``BookState`` per configured symbol."""

    # on_ws_frames' compiled paths: a run of up to this many frames goes to on_ws frame by frame instead
    # (a replay merging venues by receive time slices that finely; routing arrays would cost more)
    few_frames = 32

    def __init__(self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True) -> None:
        super().__init__(cfg, book_cfg, publish, live=live)
        self.symbols: tuple[str, ...] = cfg.symbols
        self.books: dict[str, OrderBook] = {s: OrderBook(self.venue, s, book_cfg.max_levels) for s in cfg.symbols}
        self.states: dict[str, BookState] = dict.fromkeys(cfg.symbols, BookState.SYNCING)
        self.last_update_ns: dict[str, int] = dict.fromkeys(cfg.symbols, 0)  # ts_recv of the last applied update
        self.ignored = 0  # well-formed frames we have no use for (streams not subscribed, tickers, acks)
        self._actions: list[Action] = []
        self._started = False
        self._stale_ns = int(book_cfg.stale_after_s * 1e9)
        self._closed_kline: dict[tuple[str, int], int] = {}  # (symbol, interval_ms) -> last open time sent
        self._bus: EventBus | None = bus_of(publish)  # what a replay loop may ask before publishing (batches)
        stats = self.stats
        for counter in (stats.gaps, stats.resyncs, stats.crossed, stats.buffer_overflows, stats.book_messages):
            for s in cfg.symbols:
                counter[s] = 0

    # -- actions ---------------------------------------------------------------------------------
    def take_actions(self) -> list[Action]:
        actions = self._actions
        self._actions = []
        return actions

    # -- health ----------------------------------------------------------------------------------
    def _start(self, ts_recv: int) -> None:
        """The first frame of the session: announce every book as SYNCING."""
        self._started = True
        for s in self.symbols:
            if self.states[s] is BookState.SYNCING:
                self.publish(
                    BookHealth(
                        ts_event=ts_recv, ts_recv=ts_recv, venue=self.venue, symbol=s, state=BookState.SYNCING,
                        reason="start",
                    )
                )

    def _set_state(self, symbol: str, state: BookState, reason: str, ts_recv: int) -> None:
        if self.states[symbol] is state:
            return
        self.states[symbol] = state
        self.publish(
            BookHealth(ts_event=ts_recv, ts_recv=ts_recv, venue=self.venue, symbol=symbol, state=state, reason=reason)
        )

    def check_stale(self, now_ns: int) -> None:
        for s, state in self.states.items():
            if state is BookState.LIVE and now_ns - self.last_update_ns[s] > self._stale_ns:
                age = (now_ns - self.last_update_ns[s]) / 1e9
                self._set_state(s, BookState.STALE, f"no update for {age:.1f} s", now_ns)

    # -- publishing ------------------------------------------------------------------------------
    def _publish_top(self, symbol: str, book: OrderBook, ts_recv: int, snapshot: bool = False) -> None:
        bp, bs, ap, as_ = book.top_of_book()
        self.publish(
            BookUpdate(
                ts_event=book.ts_event, ts_recv=ts_recv, venue=self.venue, symbol=symbol,
                update_id=book.update_id, bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=as_, snapshot=snapshot,
            )
        )

    def _crossed(self, symbol: str, book: OrderBook, removed: int, ts_recv: int) -> None:
        """The book just healed a crossed state: count it and say so (the caller decides on a resync)."""
        self.stats.crossed[symbol] += 1
        bid, ask = book.last_cross
        self.publish(
            BookCrossed(
                ts_event=book.ts_event, ts_recv=ts_recv, venue=self.venue, symbol=symbol,
                bid_px=bid, ask_px=ask, removed_levels=removed,
            )
        )
        log.warning(
            "book_crossed_healed", venue=self.venue.value, symbol=symbol, update_id=book.update_id,
            bid_px=bid, ask_px=ask, removed_levels=removed, resync=self.live,
        )

    def _kline_closed(
        self, symbol: str, open_ms: int, interval_ms: int, values: tuple[float, float, float, float, float],
        ts_recv: int, source: str,
    ) -> KlineClosed | None:
        """A closed candle as a domain event, or None if this candle was already sent (venues repeat)."""
        if not self._seen_closed(symbol, interval_ms, open_ms):
            return None
        o, h, lo, c, v = values
        return KlineClosed(
            ts_event=(open_ms + interval_ms) * NS_PER_MS, ts_recv=ts_recv, venue=self.venue, symbol=symbol,
            interval_s=interval_ms // 1000, open_time_ms=open_ms, open=o, high=h, low=lo, close=c, volume=v,
            source=source,
        )

    def _seen_closed(self, symbol: str, interval_ms: int, open_ms: int) -> bool:
        """Note a closed candle (WS or REST); False if it, or a later one, was noted before."""
        key = (symbol, interval_ms)
        if self._closed_kline.get(key, -1) >= open_ms:
            return False
        self._closed_kline[key] = open_ms
        return True

    def _skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` well-formed frames that go nowhere, by reason (``stats.skipped``; ``ignored`` is the
        caller's to count)."""
        skipped = self.stats.skipped
        skipped[reason] = skipped.get(reason, 0) + n

    # -- the compiled replay loops (bot.venues.json_kernels) ------------------------------------
    def _loop_books(self, bus: EventBus, books: np.ndarray, in_sync: Callable[[str], bool]) -> tuple[np.ndarray, ...]:
        """Each book's update id, whether the loop may take its diffs (in sync, LIVE, its updates batchable
        now) and its room, into ``books``; returns the books' kernel states (``MAX_BOOKS`` of them, the
        first standing in for the missing ones)."""
        mine = [self.books[s] for s in self.symbols]
        nb = len(mine)
        books[:nb, jk.B_UID] = [b.update_id for b in mine]
        books[:nb, jk.B_ROOM] = [b.room for b in mine]
        venue = self.venue
        live = BookState.LIVE
        batches = bus.batches
        books[:nb, jk.B_OK] = [
            in_sync(s) and self.states[s] is live and batches(BookUpdate, venue, s) for s in self.symbols
        ]
        states = [b.state for b in mine]
        return (*states, *[states[0]] * (jk.MAX_BOOKS - nb))

    def _loop_took(
        self, bus: EventBus, books: np.ndarray, tops: np.ndarray, rows: np.ndarray, row_tops: np.ndarray,
        levels: int,
    ) -> None:  # fmt: skip
        """The diffs a loop read: per book what the Python path does for each (counters, the book's update
        id, time and top), and their ``BookUpdate`` events as one batch."""
        stats = self.stats
        stats.level_updates += levels
        cols = books.tolist()
        for k, row in enumerate(cols):
            if not row[jk.B_SEEN]:
                continue
            symbol = self.symbols[k]
            stats.book_messages[symbol] += row[jk.B_SEEN]
            if row[jk.B_STALE]:
                stats.dropped_stale[symbol] = stats.dropped_stale.get(symbol, 0) + row[jk.B_STALE]
            if row[jk.B_COUNT]:
                bp, bs, ap, as_ = tops[k].tolist()
                self.books[symbol].applied(row[jk.B_UID], row[jk.B_LAST_EVENT], (0, _NAN, _NAN, bp, bs, ap, as_))
                self.last_update_ns[symbol] = row[jk.B_LAST_RECV]
        if len(rows):
            batch = BookUpdates(
                self.venue, self.symbols, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], row_tops,
                books[:, jk.B_COUNT], books[:, jk.B_MAX_RECV],
            )  # fmt: skip
            bus.publish_batch(BookUpdate, batch)

    # -- bad input -------------------------------------------------------------------------------
    def _malformed(self, what: str, err: Exception, raw: str | bytes) -> None:
        self.stats.malformed += 1
        n = self.stats.malformed
        if n <= _MALFORMED_LOG_FIRST or n % _MALFORMED_LOG_EVERY == 0:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            log.warning(
                "malformed_frame_dropped", venue=self.venue.value, what=what, error=str(err)[:200],
                frame=text[:200], malformed_total=n,
            )
