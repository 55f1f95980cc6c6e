"""The local order book: one per (venue, symbol), plain synchronous, floats.

Speed is the point of this file: every depth level that arrives from a venue passes through ``apply``,
and the top of the book is read after every message (``BookUpdate``, the LOB grid). The per-level work
is compiled (``bot.book_kernels``: a hash map per side plus a short sorted list of the best prices, all
in numpy arrays this object owns); this class is the Python face of it: sizes and capacity, counters,
and the reads. Levels come in as a float array of shape (n, 2), price and size, as the venue parsers
produce them (``bot.venues.levels``); any other sequence of (price, size) pairs is converted first.

Crossed books are real: a Binance REST snapshot can carry a level whose deletion only the diff
straddling the snapshot holds (BTCUSDT spot 2024-08-08: bid 61820.99; lose that one deletion and the
stale bid sits above ask 61817.40 from update 50093278974 on, since nothing else ever removes it).
Every crossed state is detected and healed by **"the newest update wins"**, applying a message's levels
in order, bids then asks:

* a fresh non-zero bid at ``p`` removes every ask ``<= p`` (asks already in the book);
* a fresh non-zero ask at ``p`` removes every bid ``>= p`` (including bids set earlier in the same
  message, which are older in message order).

The fast path applies the whole message without looking at the other side and only then compares the
two bests (one comparison per message). A book that was not crossed before a message is crossed after
it exactly when the rules above would have removed something, so the heal runs only then, and its
result equals the level-by-level rule (given each price at most once per side in a message, as venues
send them; with repeats the last one wins for its level and the heal judges the final state). A
crossed snapshot is healed the same way: its asks come after its bids, so the bids ``>= best ask`` go.
Prices must be finite and positive (the venue parsers enforce it; the book refuses others with
``ValueError`` and keeps the levels before the bad one); sizes are absolute, 0 deletes, and deleting
an absent level is normal. The depth beyond ``max_levels`` per side is trimmed in batches (with some
slack), never per update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import msgspec
import numpy as np
from numpy.typing import NDArray

from bot import book_kernels as k

Level = tuple[float, float]
Levels = Sequence[tuple[float, float]] | np.ndarray  # (price, size) pairs; an array of shape (n, 2)

_NAN = math.nan
_CACHE = 64  # best prices kept sorted per side (up to twice as many), unless top(n) asks for more
NO_LEVELS = np.empty((0, 2))  # an empty side
_BLANK_ROWS: dict[int, NDArray[np.float64]] = {}  # top_row's NaN row of n levels a side, by n


def as_levels(levels: Levels) -> np.ndarray:
    """``levels`` as a C-contiguous float64 array of shape (n, 2)."""
    if isinstance(levels, np.ndarray) and levels.dtype == np.float64 and levels.ndim == 2:
        return levels if levels.flags.c_contiguous else np.ascontiguousarray(levels)
    if not len(levels):
        return NO_LEVELS
    return np.asarray(levels, dtype=np.float64).reshape(-1, 2)


class OrderBook:
    """Price levels of one instrument; the best prices of each side are kept sorted."""

    __slots__ = (
        "_room",
        "_st",
        "_tob",
        "crossed_count",
        "healed_levels",
        "last_cross",
        "last_healed",
        "max_levels",
        "symbol",
        "ts_event",
        "update_id",
        "venue",
    )

    def __init__(self, venue: str, symbol: str, max_levels: int = 5000) -> None:
        if max_levels < 1:
            raise ValueError("max_levels must be >= 1")
        self.venue = venue
        self.symbol = symbol
        self.max_levels = max_levels
        self._st = NO_LEVELS  # the kernels' state (see bot.book_kernels), sized by _resize
        self._room = 0  # levels one message may add without overfilling the hash
        self._resize(1024, _CACHE)
        self._tob: tuple[float, float, float, float] = (_NAN, _NAN, _NAN, _NAN)
        self.update_id = 0
        self.ts_event = 0
        self.last_healed = 0  # levels removed by the crossed-book heal of the last reset/apply
        self.last_cross: tuple[float, float] = (_NAN, _NAN)  # (best bid, best ask) when last found crossed
        self.crossed_count = 0  # crossed states detected (and healed) since construction
        self.healed_levels = 0  # levels removed by heals since construction

    # -- writing ---------------------------------------------------------------------------------
    def clear(self) -> None:
        k.clear(self._st)
        self._tob = (_NAN, _NAN, _NAN, _NAN)
        self.update_id = 0
        self.ts_event = 0

    def reset(self, bids: Levels, asks: Levels, update_id: int, ts_event: int) -> None:
        """Replace the whole book with a snapshot. A crossed snapshot is healed (see ``last_healed``)."""
        b = as_levels(bids)
        a = as_levels(asks)
        if len(b) + len(a) > self._room:
            self._resize(len(b) + len(a), self._keep)
        self._settle(k.reset(self._st, b, a), b, a)
        self.update_id = update_id
        self.ts_event = ts_event

    def apply(self, bids: Levels, asks: Levels, update_id: int, ts_event: int) -> int:
        """Apply one diff message (bids, then asks). Returns the levels removed by crossed-book healing."""
        b = as_levels(bids)
        a = as_levels(asks)
        if len(b) + len(a) > self._room:
            self._resize(len(b) + len(a), self._keep)
        result = k.apply(self._st, b, a)
        self.update_id = update_id
        self.ts_event = ts_event
        if result[0]:
            self._settle(result, b, a)
            return self.last_healed
        self._tob = result[3:]
        self.last_healed = 0
        return 0

    def apply_json(self, bids: bytes, asks: bytes, update_id: int, ts_event: int) -> int | None:
        """``apply`` with each side still the venue's JSON text (``[["61824.00000000","0.32726000"],...]``).

        The levels are read by the compiled reader straight into the book, never becoming Python objects:
        the depth hot path of both venues. Returns the number of levels applied (``last_healed`` says
        what a heal removed), or None, having applied nothing, when the text is not in the exact shape
        the venues send: ``bot.venues.levels.parse_pair`` then decides (levels for ``apply``, or the
        error the frame deserves).
        """
        most = (len(bids) + len(asks)) // 10 + 1  # a level takes at least 10 bytes: ["1","1"],
        if most > self._room:
            self._resize(most, self._keep)
        result = k.apply_json(self._st, bids, asks)
        if result[0] < 0:
            return None
        self.update_id = update_id
        self.ts_event = ts_event
        if result[1]:
            self._settle(result[1:], NO_LEVELS, NO_LEVELS)
        else:
            self._tob = result[4:]
            self.last_healed = 0
        return result[0]

    @property
    def state(self) -> np.ndarray:
        """The kernels' state array (``bot.book_kernels``), for compiled callers that apply levels themselves
        (``bot.venues.bybit_kernels``); replaced by a new one when the book grows."""
        return self._st

    @property
    def room(self) -> int:
        """Levels one message may add without the book having to grow first (``apply``/``apply_json`` grow
        it; a compiled caller of ``book_kernels.apply`` on ``state`` must stay within this)."""
        return self._room

    def applied(self, update_id: int, ts_event: int, result: k.Result) -> None:
        """Take note of a diff that a compiled caller applied to ``state`` (``book_kernels.apply``, within
        ``room``) with ``result``: what ``apply_json`` does after its kernel call."""
        self.update_id = update_id
        self.ts_event = ts_event
        if result[0]:
            self._settle(result, NO_LEVELS, NO_LEVELS)
        else:
            self._tob = result[3:]
            self.last_healed = 0

    def _settle(self, result: k.Result, b: np.ndarray, a: np.ndarray) -> None:
        removed, cross_b, cross_a = result[:3]
        if removed == k.BAD_PRICE:
            self._tob = k.top_of_book(self._st)
            self.last_healed = 0
            bad = next((p for p, _ in np.concatenate((b, a)).tolist() if not 0.0 < p < math.inf), None)
            raise ValueError(f"{self.venue} {self.symbol}: price {bad!r} is not finite and > 0")
        self._tob = result[3:]
        if cross_b == cross_b:  # not nan: the message (or snapshot) left the book crossed; now healed
            self.crossed_count += 1
            self.last_cross = (cross_b, cross_a)
        self.healed_levels += removed
        self.last_healed = removed

    @property
    def _keep(self) -> int:
        return int(self._st[0, k.H_KEEP])

    def _resize(self, message_levels: int, keep: int) -> None:
        """New state with room for a side of ``trim_at + message_levels`` at hash load <= 1/2 and a sorted
        list of ``keep`` (up to ``2 * keep``) best prices; the levels move over."""
        trim_at = self.max_levels + max(16, self.max_levels // 16)
        need = 2 * (trim_at + max(message_levels, 1024))
        slots = 1 << (need - 1).bit_length()
        st = np.zeros((2, k.HEADER + 2 * slots + 2 * keep + 1))
        st[:, k.H_SLOTS] = slots
        st[:, k.H_SHIFT] = 64 - (slots.bit_length() - 1)
        st[:, k.H_KEEP] = keep
        st[:, k.H_FLOOR] = -np.inf
        st[:, k.H_MAX] = self.max_levels
        st[:, k.H_TRIM_AT] = trim_at
        if len(self._st):
            k.rehash(self._st, st)
        self._st = st
        self._room = slots // 2 - trim_at

    # -- reading ---------------------------------------------------------------------------------
    def best_bid(self) -> tuple[float, float] | None:
        bp, bs, _, _ = self._tob
        return None if bp != bp else (bp, bs)

    def best_ask(self) -> tuple[float, float] | None:
        _, _, ap, as_ = self._tob
        return None if ap != ap else (ap, as_)

    def top_of_book(self) -> tuple[float, float, float, float]:
        """(bid price, bid size, ask price, ask size); nan for an empty side."""
        return self._tob

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` levels of each side, best first."""
        if n <= 0:
            return [], []
        if n > self._keep:  # from now on keep enough sorted prices for this reader
            self._resize(self._room, n)  # the same hash size (its room), a longer sorted list
        out = np.empty((2, n, 2))
        nb, na = k.top(self._st, out)
        return [(p, q) for p, q in out[0, :nb].tolist()], [(p, q) for p, q in out[1, :na].tolist()]

    def top_row(self, n: int) -> NDArray[np.float64]:
        """``top(n)`` as one flat row: bid price, size x ``n``, then ask price, size x ``n``, NaN where a side
        is thinner (the layout of a LOB grid row, ``bot.ring.lob_columns``); a fresh array."""
        if n > self._keep:
            self._resize(self._room, n)
        blank = _BLANK_ROWS.get(n)
        if blank is None:
            blank = _BLANK_ROWS[n] = np.full((2, n, 2), np.nan)
        out = blank.copy()  # a copy of a NaN row: cheaper than np.full
        k.top(self._st, out)
        return out.reshape(4 * n)

    def to_dicts(self) -> tuple[dict[float, float], dict[float, float]]:
        """Copies of both sides (price -> size), for checks and tests."""
        bids = k.side_levels(self._st, 0).tolist()
        asks = k.side_levels(self._st, 1).tolist()
        return {p: q for p, q in bids}, {p: q for p, q in asks}

    def depth(self) -> tuple[int, int]:
        """(number of bid levels, number of ask levels)."""
        return int(self._st[0, k.H_N]), int(self._st[1, k.H_N])

    @property
    def trimmed_levels(self) -> int:
        """Far levels dropped to respect ``max_levels``, since construction."""
        return int(self._st[0, k.H_TRIMMED] + self._st[1, k.H_TRIMMED])

    def __len__(self) -> int:
        nb, na = self.depth()
        return nb + na

    def __repr__(self) -> str:
        bp, bs, ap, as_ = self._tob
        nb, na = self.depth()
        return f"OrderBook({self.venue}, {self.symbol}, u={self.update_id}, {nb}x{na}, {bs}@{bp} / {as_}@{ap})"


def warm_up() -> float:
    """Load the compiled kernels (book, level reader, recording scanner and frame router) now, not on the
    first market data message.

    The first call after an install compiles them (about 20 s on a small machine; ``make setup`` does
    it); later processes load numba's on-disk cache in well under a second. Returns the seconds taken.
    """
    from bot import recording_kernels as rk
    from bot.venues import binance_kernels, bybit_kernels
    from bot.venues.levels import parse_pair  # here: bot.venues imports this module

    t0 = time.perf_counter()
    line = np.frombuffer(b'1\tbinance_spot\tws\t-\t{"stream":"a"}\n', np.uint8)
    nl = np.flatnonzero(line == 10)
    _, off, _, _, _ = rk.scan(line, nl)
    rk.route(line, off[3], nl, 11, line, np.array([0, 5], np.int64))
    b, a = parse_pair(msgspec.Raw(b'[["2.5","1"]]'), msgspec.Raw(b'[["2.4","1"]]'))
    book = OrderBook("warm", "UP", max_levels=10)
    book.reset([(1.0, 1.0), (2.0, 1.0)], [(3.0, 1.0)], 1, 0)
    book.apply(b, a, 2, 0)  # crosses: the heal
    book.apply(as_levels([(float(p), 1.0) for p in range(3, 40)]), NO_LEVELS, 3, 0)  # trim, rebuild, grow
    book.apply_json(b'[["2.5","1"]]', b'[["60","0"]]', 4, 0)  # the depth hot path: levels still JSON text
    book.top(100)
    book.to_dicts()
    bybit_kernels.warm_up()  # the venue adapters' replay loops
    binance_kernels.warm_up()
    return time.perf_counter() - t0
