"""Real books from the embedded demo recording, for tests of the order path (test_paper, test_strategies_limit).

``capture_session`` drives the bot's own Binance adapter (``bot.export.OfflineFeed``) over the embedded demo
recording (``bot/demo/recording``: the hftbacktest file of ``../shared/data``, unmodified) and keeps, for
every ``BookUpdate`` and ``Trade`` of Binance spot BTCUSDT, the event and the book's best ``DEPTH`` levels a
side right after it. ``ReplayBook`` then shows a paper matcher the book as it was at the event being handed
in, so a test replays a stretch of the real session. One place builds it, so both test modules see the
very same books.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import BotSettings
from bot.events import BookUpdate, Event, Trade, Venue
from bot.export import OfflineFeed
from bot.recording import iter_rows
from bot.sim.cli import DEMO_DIR

V = Venue.BINANCE_SPOT
SYM = "BTCUSDT"
DEPTH = 10
ROWS = 12_000  # binance_spot records of the demo: 23:54:13 .. 23:56:02, 3,361 book and trade events
Level = tuple[float, float]


@dataclass
class Session:
    events: list[BookUpdate | Trade]
    tops: list[tuple[list[Level], list[Level]]]  # the book's best DEPTH levels right after each event


def capture_session() -> Session:
    """The first ``ROWS`` binance_spot records of the demo through ``OfflineFeed``, captured event by event."""
    events: list[BookUpdate | Trade] = []
    tops: list[tuple[list[Level], list[Level]]] = []
    feed: OfflineFeed

    def publish(ev: Event) -> None:
        if isinstance(ev, BookUpdate | Trade) and ev.venue is V:
            book = feed.book(V, SYM)
            assert book is not None
            events.append(ev)
            tops.append(book.top(DEPTH))

    feed = OfflineFeed(BotSettings(), {V: (SYM,)}, publish)
    rows = (r for r in iter_rows(DEMO_DIR / "recording") if r[1] == V.value)
    feed.run(itertools.islice(rows, ROWS))
    return Session(events, tops)


class ReplayBook:
    """A paper matcher's ``BookView``: the captured book as of event ``i``."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.i = 0

    def top(self, n: int) -> tuple[Sequence[Level], Sequence[Level]]:
        bids, asks = self.s.tops[self.i]
        return bids[:n], asks[:n]
