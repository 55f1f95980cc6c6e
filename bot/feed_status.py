"""What the collector reports: its counters, its views of connections and books, and ``status()``'s shape.

``bot.feed.Collector`` keeps the counters (``CollectorStats``), one ``ConnectionStatus`` per socket and one
``_BookView`` per book (health, top of book and event counts from the bus, sampled each tick for msgs/s);
``collector_status`` turns them into ``CollectorStatus``. Nothing here logs per message, and nothing here
does I/O. ``CollectorStatus`` is plain JSON (``json.dumps(..., allow_nan=False)`` works): a number not
known yet (no top of book) is None.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, TypedDict, runtime_checkable

from bot.events import BookState, Venue
from bot.venues.base import VenueAdapter

RATE_WINDOW_S = 10.0  # msgs/s is averaged over this many seconds


@dataclass
class CollectorStats:
    """Counters over all venues, for the status display. Counted, never logged per message."""

    frames: int = 0
    # Every frame or REST body dropped as malformed: the undecodable ones below plus what the adapters
    # dropped (their FeedStats.malformed, the malformed_total of their malformed_frame_dropped lines).
    # Brought up to date whenever Collector.stats is read.
    malformed_frames: int = 0
    undecodable_frames: int = 0  # binary frames that are not UTF-8, dropped by the collector (text goes to the adapter)
    reconnects: int = 0  # an open connection was lost or closed by us and reopened
    connect_failures: int = 0  # an attempt to open a connection failed
    watchdog_trips: int = 0
    proactive_reconnects: int = 0
    pings_sent: int = 0
    resubscribes: int = 0
    snapshot_attempts: int = 0
    snapshot_failures: int = 0
    snapshots_applied: int = 0
    rest_errors: int = 0  # every failed REST request, snapshots and klines alike
    rate_limited: int = 0  # of which 429/418 (or refused locally by the rate-limit gate)
    klines_backfilled: int = 0  # KlineClosed events published from REST
    backfill_failures: int = 0


@dataclass
class ConnectionStatus:
    venue: Venue
    name: str
    url: str
    connected: bool = False
    reconnects: int = 0
    frames: int = 0
    opened_at_ns: int = 0
    last_error: str = ""


class BookStatus(TypedDict):
    venue: str
    symbol: str
    state: str  # a BookState value
    bid_px: float | None  # None until the first BookUpdate, and while that side of the book is empty
    ask_px: float | None
    msgs_per_s: float  # BookUpdate + Trade events per second over the last RATE_WINDOW_S
    gaps: int
    resyncs: int
    crossed: int  # crossed states healed


class ConnectionStatusDict(TypedDict):
    venue: str
    name: str
    url: str
    connected: bool
    reconnects: int
    frames: int
    last_error: str


class CollectorStatus(TypedDict):
    """``Collector.status()``: plain JSON-ready data for the status display."""

    books: list[BookStatus]
    connections: list[ConnectionStatusDict]
    stats: dict[str, int]


@dataclass
class _BookView:
    """What the bus has told us about one book: health, top of book, event counts for msgs/s."""

    state: BookState = BookState.SYNCING
    bid_px: float = math.nan
    ask_px: float = math.nan
    events: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=int(RATE_WINDOW_S) + 1))

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


@runtime_checkable
class BookLevels(Protocol):
    """What readers of a local book need (``bot.book.OrderBook`` has it; same shape as ``bot.ring``'s)."""

    def top(self, n: int) -> tuple[Sequence[tuple[float, float]], Sequence[tuple[float, float]]]: ...


def collector_status(
    views: Mapping[tuple[Venue, str], _BookView],
    adapters: Mapping[Venue, VenueAdapter],
    connections: Iterable[ConnectionStatus],
    stats: CollectorStats,
) -> CollectorStatus:
    """A snapshot for the status display: per book and per connection, plus the counters."""
    books: list[BookStatus] = []
    for (venue, symbol), view in views.items():
        st = adapters[venue].stats
        books.append(
            BookStatus(
                venue=venue.value,
                symbol=symbol,
                state=view.state.value,
                bid_px=_known(view.bid_px),
                ask_px=_known(view.ask_px),
                msgs_per_s=view.rate(),
                gaps=st.gaps.get(symbol, 0),
                resyncs=st.resyncs.get(symbol, 0),
                crossed=st.crossed.get(symbol, 0),
            )
        )
    conns = [
        ConnectionStatusDict(
            venue=c.venue.value,
            name=c.name,
            url=c.url,
            connected=c.connected,
            reconnects=c.reconnects,
            frames=c.frames,
            last_error=c.last_error,
        )
        for c in connections
    ]
    return CollectorStatus(books=books, connections=conns, stats=asdict(stats))


def _known(x: float) -> float | None:
    """None for a number not known (nan: no top of book yet, an empty side) or not finite: JSON has neither."""
    return x if math.isfinite(x) else None


__all__ = [
    "RATE_WINDOW_S",
    "BookLevels",
    "BookStatus",
    "CollectorStats",
    "CollectorStatus",
    "ConnectionStatus",
    "ConnectionStatusDict",
    "collector_status",
]
