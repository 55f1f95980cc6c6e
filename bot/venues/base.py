"""The contract between a venue file and the I/O around it.

A venue adapter is a plain synchronous object: it is fed raw text (websocket frames, REST bodies) with
their local receive time, keeps one local book per symbol, publishes domain events, and asks for I/O by
queueing actions. The live collector (``bot.feed``) performs those actions over the network; the
offline tools (``bot books``, replay) satisfy them from a recording. Same parsers, same books, either way.

    feed/replay ──raw──► adapter.on_ws / on_snapshot ──► OrderBook ──► publish(BookUpdate, ...)
        ▲                       │
        └──── take_actions() ◄──┘   NeedSnapshot(symbol) | Resubscribe(symbol)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from bot.book import OrderBook
from bot.config import BookConfig, VenueConfig
from bot.events import BookState, Event, KlineClosed, Venue

if TYPE_CHECKING:
    from bot.recording import Frames

Publish = Callable[[Event], None]


class NeedSnapshot(NamedTuple):
    """Fetch ``snapshot_url(symbol)`` and pass the body to ``on_snapshot`` (or ``on_snapshot_failed``)."""

    symbol: str


class Resubscribe(NamedTuple):
    """Send ``resubscribe_payloads(symbol)`` on the connection that carries ``symbol``'s book."""

    symbol: str


Action = NeedSnapshot | Resubscribe


@dataclass(frozen=True)
class ConnectionSpec:
    """One websocket connection: where to connect and what to send after connecting."""

    name: str  # stable key, e.g. "binance_spot/depth"
    url: str
    subscribe: tuple[str, ...] = ()  # text frames sent right after connecting
    symbols: tuple[str, ...] = ()  # books carried on this connection


@dataclass
class FeedStats:
    """Counters per adapter (per symbol where it matters). Counted, never logged per tick."""

    messages: int = 0
    malformed: int = 0
    level_updates: int = 0
    gaps: dict[str, int] = field(default_factory=dict)
    resyncs: dict[str, int] = field(default_factory=dict)
    crossed: dict[str, int] = field(default_factory=dict)
    dropped_stale: dict[str, int] = field(default_factory=dict)
    buffer_overflows: dict[str, int] = field(default_factory=dict)  # diff buffer cap hit while syncing
    book_messages: dict[str, int] = field(default_factory=dict)  # depth messages per symbol, used or not
    # Well-formed frames routed to no book and no handler, by reason ("unknown_topic:allLiquidation.BTCUSDT",
    # "not_handled:btcusdt@bookTicker", "symbol_not_configured:...", "other_depth:..."): what a replay skipped.
    skipped: dict[str, int] = field(default_factory=dict)


class ReplayClock(Protocol):
    """Timers driven by recorded time (``bot.grid_set.RingSet``): a replay calls ``on_time(ts)`` before a
    record at ``ts``, and may skip the call while ``ts <= due`` (it would do nothing). ``due`` can move
    back (a grid starting) while records are handled, so a loop reads it again for every record."""

    due: int

    def on_time(self, ts_ns: int) -> None: ...


class _NoClock:
    """The clock of a replay without timers: never due."""

    due = 2**63 - 1  # the largest int64: the compiled loops take it as one

    def on_time(self, ts_ns: int) -> None:
        pass


NO_CLOCK: ReplayClock = _NoClock()


class VenueAdapter(ABC):
    venue: Venue
    books: dict[str, OrderBook]  # one local book per canonical symbol
    states: dict[str, BookState]  # its health; consumers refuse anything but LIVE

    def __init__(self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True) -> None:
        self.cfg = cfg
        self.book_cfg = book_cfg
        self.publish = publish
        self.live = live  # live: crossed books also schedule a fresh snapshot; offline: heal only
        self.stats = FeedStats()

    # -- connection plan -------------------------------------------------------------------------
    @abstractmethod
    def connections(self) -> list[ConnectionSpec]: ...

    @abstractmethod
    def resubscribe_payloads(self, symbol: str) -> list[str]: ...

    def ping_payload(self) -> str | None:
        """An application-level ping to send periodically (Bybit), or None (Binance uses ping frames)."""
        return None

    @abstractmethod
    def snapshot_url(self, symbol: str) -> str | None:
        """REST depth-snapshot URL, or None where snapshots arrive on the stream (Bybit)."""

    @abstractmethod
    def klines_url(self, symbol: str, interval: str, limit: int) -> str: ...

    # -- data ------------------------------------------------------------------------------------
    @abstractmethod
    def on_ws(self, raw: str | bytes, ts_recv: int, conn: str = "-") -> None:
        """One websocket text frame. Malformed frames are counted and dropped, never raised."""

    def on_ws_rows(self, rows: Iterable[tuple[int, str, str, str, str]], clock: ReplayClock = NO_CLOCK) -> None:
        """``on_ws`` for a run of recorded frames, rows ``(ts_recv, venue, kind, conn, raw)`` in order
        (``bot.recording.Row``), with ``clock.on_time(ts_recv)`` before each row that ``clock`` has work
        for: the same as one ``on_time`` and one ``on_ws`` per row."""
        on_ws = self.on_ws
        for ts_recv, _, _, conn, raw in rows:
            if ts_recv > clock.due:
                clock.on_time(ts_recv)
            on_ws(raw, ts_recv, conn)

    def on_ws_frames(self, frames: Frames, clock: ReplayClock = NO_CLOCK) -> None:
        """``on_ws_rows`` for recorded frames left in their decompressed block (``bot.recording.Frames``):
        the offline feed's hot loop. Each frame goes to ``on_ws`` as bytes (the recorded text, ASCII). An
        adapter may override it to skip or route its frames without looking at each one in Python."""
        on_ws = self.on_ws
        data = frames.data
        cols = (frames.ts.tolist(), frames.key.tolist(), frames.raw.tolist(), frames.end.tolist())
        for ts_recv, k, r, e in zip(*cols, strict=True):
            if ts_recv > clock.due:
                clock.on_time(ts_recv)
            on_ws(data[r:e], ts_recv, data[k : r - 1].decode())

    @abstractmethod
    def on_snapshot(self, symbol: str, raw: str | bytes, ts_recv: int) -> None: ...

    @abstractmethod
    def on_snapshot_failed(self, symbol: str, reason: str) -> None: ...

    @abstractmethod
    def parse_klines(self, symbol: str, interval: str, raw: str | bytes, ts_recv: int) -> list[KlineClosed]:
        """Closed candles from a REST klines body, oldest first (the still-open last bar excluded)."""

    @abstractmethod
    def on_disconnect(self, conn: str, ts_recv: int) -> None:
        """The connection ``conn`` is gone: its books become RESYNCING until re-synced."""

    @abstractmethod
    def check_stale(self, now_ns: int) -> None:
        """Mark LIVE books with no update for ``book_cfg.stale_after_s`` as STALE (and back)."""

    @abstractmethod
    def take_actions(self) -> list[Action]:
        """The I/O requests queued since the last call, in order."""
