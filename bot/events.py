"""Domain events: frozen, typed, two nanosecond timestamps each.

``ts_event`` is the venue's time for the thing that happened (Binance ``E``, Bybit ``ts``; a trade's own
``T``), ``ts_recv`` is our local receive time. Market data is float (it feeds numpy and tensors); anything
sent to a venue is ``Decimal`` (execution layer). Symbols are canonical: upper case, no separator
(``BTCUSDT``) on every venue; each venue file converts its own spelling in both directions.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec
import numpy as np
from numpy.typing import NDArray


class Venue(StrEnum):
    BYBIT_SPOT = "bybit_spot"
    BYBIT_LINEAR = "bybit_linear"
    BINANCE_SPOT = "binance_spot"
    BINANCE_USDM = "binance_usdm"

    @property
    def exchange(self) -> str:
        return self.value.split("_", 1)[0]

    @property
    def market(self) -> str:
        return self.value.split("_", 1)[1]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class BookState(StrEnum):
    """Health of one local book. Consumers refuse anything but LIVE."""

    SYNCING = "syncing"  # first sync after start: waiting for snapshot / first valid diff
    LIVE = "live"  # in sync, updates flowing
    RESYNCING = "resyncing"  # a gap, a disconnect or a forced resync: book invalid until re-synced
    STALE = "stale"  # in sync as far as we know, but no update for longer than the configured age


class Event(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int  # venue time, ns
    ts_recv: int  # local receive time, ns


class BookUpdate(Event, frozen=True, kw_only=True):
    """A local book changed (snapshot or diff applied). Carries the top of book after the change."""

    venue: Venue
    symbol: str
    update_id: int
    bid_px: float
    bid_sz: float
    ask_px: float
    ask_sz: float
    snapshot: bool = False


class BookUpdates:
    """A run of ``BookUpdate`` events (diffs, ``snapshot=False``) of one venue's books, as columns: what a
    replay loop that applies diffs in compiled code publishes instead of an event each, to handlers that
    take batches (``bot.bus.EventBus.publish_batch``). Event ``i`` is about ``symbols[book[i]]``; ``top[i]``
    is its (bid price, bid size, ask price, ask size). Per book ``k`` of ``symbols``: ``count[k]`` events,
    the latest receive time among them ``max_recv[k]`` (-1 without any). The arrays are the publisher's:
    read them during the call, copy what is kept."""

    __slots__ = ("book", "count", "max_recv", "symbols", "top", "ts_event", "ts_recv", "update_id", "venue")

    def __init__(
        self,
        venue: Venue,
        symbols: tuple[str, ...],
        book: NDArray[np.int64],
        ts_event: NDArray[np.int64],
        ts_recv: NDArray[np.int64],
        update_id: NDArray[np.int64],
        top: NDArray[np.float64],
        count: NDArray[np.int64],
        max_recv: NDArray[np.int64],
    ) -> None:
        self.venue = venue
        self.symbols = symbols
        self.book = book
        self.ts_event = ts_event
        self.ts_recv = ts_recv
        self.update_id = update_id
        self.top = top
        self.count = count
        self.max_recv = max_recv

    def __len__(self) -> int:
        return len(self.book)

    def events(self) -> list[BookUpdate]:
        """The batch as the ``BookUpdate`` events it stands for, in order."""
        cols = (self.book.tolist(), self.ts_event.tolist(), self.ts_recv.tolist(), self.update_id.tolist(),
                self.top.tolist())  # fmt: skip
        return [
            BookUpdate(
                ts_event=te, ts_recv=tr, venue=self.venue, symbol=self.symbols[k], update_id=u,
                bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=as_,
            )
            for k, te, tr, u, (bp, bs, ap, as_) in zip(*cols, strict=True)
        ]


class Trade(Event, frozen=True, kw_only=True):
    venue: Venue
    symbol: str
    price: float
    size: float
    taker_side: Side
    trade_id: str


class KlineClosed(Event, frozen=True, kw_only=True):
    """A closed candle. ``ts_event`` is the candle's close time (start + interval), never earlier."""

    venue: Venue
    symbol: str
    interval_s: int
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str = "ws"  # ws | rest | resampled


class BookHealth(Event, frozen=True, kw_only=True):
    venue: Venue
    symbol: str
    state: BookState
    reason: str


class BookCrossed(Event, frozen=True, kw_only=True):
    """A crossed book was detected and healed ("the newest update wins")."""

    venue: Venue
    symbol: str
    bid_px: float
    ask_px: float
    removed_levels: int


class Signal(Event, frozen=True, kw_only=True):
    """One model's prediction for one (venue, symbol), published by ``bot.workers`` on the loop thread.

    ``ts_event`` is the data time: the local (receive-clock) time of the newest input row, i.e. the grid
    time of the newest LOB row, or the receive time of the newest closed bar. ``ts_recv`` is the publish
    time. ``ts_recv - ts_event`` is how old the prediction's inputs were when consumers saw it.

    Classification heads fill ``probabilities`` (flattened horizon-major: horizon 0's classes, then
    horizon 1's ...; class order in ``classes``); regression heads fill ``values`` (their meaning in
    ``value_names``). ``confidence`` is the top class probability of the first horizon, None for a
    regression-only head. ``attention`` is a short human-readable summary (top attended steps, scales or
    assets), empty when the family exposes none.
    """

    model: str  # checkpoint name (file stem)
    family: str  # model family (models.checkpoint.FAMILIES key)
    version: str  # first 12 hex digits of the checkpoint file's sha256
    code_version: str  # the training code's version, from the checkpoint's metadata ("" if unknown)
    venue: Venue
    symbol: str
    horizon: str  # e.g. "10 steps of 1s", "5m,60m,240m"
    classes: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    value_names: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    confidence: float | None = None
    attention: str = ""
    inference_start_ns: int
    inference_end_ns: int
