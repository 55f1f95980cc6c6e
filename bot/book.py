"""The local order book: one per (venue, symbol), plain synchronous, floats.

Speed is the point of this file: every depth level that arrives from a venue passes through ``apply``,
and the top of the book is read after every message (``BookUpdate``, the LOB grid). So:

* each side is a ``dict`` price -> size: one hash insert or delete per level, no per-level objects;
* each side also keeps a small sorted list of its best prices (``_CACHE`` of them, plain floats,
  ascending) together with a bound: the list holds *exactly* the book's prices at or better than the
  bound. A level beyond the bound costs one float comparison; a new or deleted level inside it one
  ``bisect`` on a list of 64-128 floats (C code). The best price is the end of that list, so deleting the
  best level never triggers a scan of the whole side, and ``top(n)`` is a slice. The list is as short as
  the readers allow: 64 (on real BTC sessions about half of all level updates fall inside the best 128
  prices and a third inside the best 64, and each of those costs a bisect), longer once ``top(n)`` has
  been asked for more.
  When deletions empty the list (the price ran away) it is rebuilt with one numpy partition of the
  side; when insertions grow it past twice its size it is cut back and the bound moves in.
* the depth beyond ``max_levels`` per side is trimmed in batches (with some slack), never per update.

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
Prices must be finite and positive (the venue parsers enforce it); sizes are absolute, 0 deletes, and
deleting an absent level is normal.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Sequence

import numpy as np

Level = tuple[float, float]
Levels = Sequence[tuple[float, float]]

_INF = math.inf
_NAN = math.nan
_CACHE = 64  # best prices kept sorted per side (up to twice as many), unless top(n) asks for more


class OrderBook:
    """Price levels of one instrument, with the best prices of each side kept sorted (``_keep`` or more)."""

    __slots__ = (
        "_ask_cache",
        "_ask_ceil",
        "_asks",
        "_bid_cache",
        "_bid_floor",
        "_bids",
        "_keep",
        "_trim_at",
        "crossed_count",
        "healed_levels",
        "last_cross",
        "last_healed",
        "max_levels",
        "symbol",
        "trimmed_levels",
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
        self._trim_at = max_levels + max(16, max_levels // 16)
        self._keep = _CACHE  # sorted prices kept per side: the largest top(n) asked for, at least _CACHE
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        # Sorted ascending. _bid_cache == sorted(p for p in _bids if p >= _bid_floor), best last;
        # _ask_cache == sorted(p for p in _asks if p <= _ask_ceil), best first. An infinite bound
        # means the list holds the whole side.
        self._bid_cache: list[float] = []
        self._ask_cache: list[float] = []
        self._bid_floor = -_INF
        self._ask_ceil = _INF
        self.update_id = 0
        self.ts_event = 0
        self.last_healed = 0  # levels removed by the crossed-book heal of the last reset/apply
        self.last_cross: tuple[float, float] = (_NAN, _NAN)  # (best bid, best ask) when last found crossed
        self.crossed_count = 0  # crossed states detected (and healed) since construction
        self.healed_levels = 0  # levels removed by heals since construction
        self.trimmed_levels = 0  # far levels dropped to respect max_levels

    # -- writing ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_cache.clear()
        self._ask_cache.clear()
        self._bid_floor = -_INF
        self._ask_ceil = _INF
        self.update_id = 0
        self.ts_event = 0

    def reset(self, bids: Levels, asks: Levels, update_id: int, ts_event: int) -> None:
        """Replace the whole book with a snapshot. A crossed snapshot is healed (see ``last_healed``)."""
        b = dict(bids)
        a = dict(asks)
        if 0.0 in b.values():  # a snapshot should not list empty levels; tolerate them
            b = {p: q for p, q in b.items() if q}
        if 0.0 in a.values():
            a = {p: q for p, q in a.items() if q}
        self._bids = b
        self._asks = a
        self.update_id = update_id
        self.ts_event = ts_event
        if len(b) > self.max_levels:
            self._trim_bids()
        if len(a) > self.max_levels:
            self._trim_asks()
        self._rebuild_bids()
        self._rebuild_asks()
        removed = 0
        if self._bid_cache and self._ask_cache and self._bid_cache[-1] >= self._ask_cache[0]:
            # All snapshot levels are equally fresh; in message order the asks come last and win.
            self._note_cross()
            removed = self._remove_bids_from(self._ask_cache[0])
            self.healed_levels += removed
        self.last_healed = removed

    def apply(self, bids: Levels, asks: Levels, update_id: int, ts_event: int) -> int:
        """Apply one diff message (bids, then asks). Returns the levels removed by crossed-book healing."""
        if bids:
            d = self._bids
            pop = d.pop
            cache = self._bid_cache
            floor = self._bid_floor
            for p, q in bids:
                if p >= floor:
                    if q:
                        if p not in d:
                            insort(cache, p)
                        d[p] = q
                    elif pop(p, None) is not None:
                        del cache[bisect_left(cache, p)]
                elif q:
                    d[p] = q
                else:
                    pop(p, None)
            if len(cache) > 2 * self._keep:
                del cache[: len(cache) - self._keep]
                self._bid_floor = cache[0]
            if len(d) > self._trim_at:
                self._trim_bids()
        if asks:
            d = self._asks
            pop = d.pop
            cache = self._ask_cache
            ceil = self._ask_ceil
            for p, q in asks:
                if p <= ceil:
                    if q:
                        if p not in d:
                            insort(cache, p)
                        d[p] = q
                    elif pop(p, None) is not None:
                        del cache[bisect_left(cache, p)]
                elif q:
                    d[p] = q
                else:
                    pop(p, None)
            if len(cache) > 2 * self._keep:
                del cache[self._keep :]
                self._ask_ceil = cache[-1]
            if len(d) > self._trim_at:
                self._trim_asks()
        self.update_id = update_id
        self.ts_event = ts_event
        bc = self._bid_cache
        ac = self._ask_cache
        if not bc and self._bids:
            self._rebuild_bids()
            bc = self._bid_cache
        if not ac and self._asks:
            self._rebuild_asks()
            ac = self._ask_cache
        if bc and ac and bc[-1] >= ac[0]:
            return self._heal(bids, asks)
        self.last_healed = 0
        return 0

    # -- reading ---------------------------------------------------------------------------------
    def best_bid(self) -> tuple[float, float] | None:
        c = self._bid_cache
        if not c:
            if not self._bids:
                return None
            self._rebuild_bids()
            c = self._bid_cache
        p = c[-1]
        return p, self._bids[p]

    def best_ask(self) -> tuple[float, float] | None:
        c = self._ask_cache
        if not c:
            if not self._asks:
                return None
            self._rebuild_asks()
            c = self._ask_cache
        p = c[0]
        return p, self._asks[p]

    def top_of_book(self) -> tuple[float, float, float, float]:
        """(bid price, bid size, ask price, ask size); nan for an empty side."""
        bc = self._bid_cache
        ac = self._ask_cache
        if bc and ac:  # the common case, after apply() (which refills emptied caches)
            bp = bc[-1]
            ap = ac[0]
            return bp, self._bids[bp], ap, self._asks[ap]
        b = self.best_bid()
        a = self.best_ask()
        return (
            b[0] if b else _NAN,
            b[1] if b else _NAN,
            a[0] if a else _NAN,
            a[1] if a else _NAN,
        )

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` levels of each side, best first."""
        if n <= 0:
            return [], []
        if n > self._keep:  # from now on keep enough sorted prices for this reader
            self._keep = n
            self._rebuild_bids()
            self._rebuild_asks()
        b = self._bids
        c = self._bid_cache
        if len(c) < n and self._bid_floor != -_INF:  # deletions thinned the list: there is more below
            self._rebuild_bids()
            c = self._bid_cache
        bids = [(p, b[p]) for p in c[: -n - 1 : -1]]
        a = self._asks
        c = self._ask_cache
        if len(c) < n and self._ask_ceil != _INF:
            self._rebuild_asks()
            c = self._ask_cache
        asks = [(p, a[p]) for p in c[:n]]
        return bids, asks

    def to_dicts(self) -> tuple[dict[float, float], dict[float, float]]:
        """Copies of both sides (price -> size), for checks and tests."""
        return dict(self._bids), dict(self._asks)

    def depth(self) -> tuple[int, int]:
        """(number of bid levels, number of ask levels)."""
        return len(self._bids), len(self._asks)

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        bp, bs, ap, as_ = self.top_of_book()
        return (
            f"OrderBook({self.venue}, {self.symbol}, u={self.update_id}, "
            f"{len(self._bids)}x{len(self._asks)}, {bs}@{bp} / {as_}@{ap})"
        )

    # -- internals -------------------------------------------------------------------------------
    def _rebuild_bids(self) -> None:
        d = self._bids
        if len(d) <= self._keep:
            self._bid_cache = sorted(d)
            self._bid_floor = -_INF
            return
        c = _select(d, len(d) - self._keep, len(d))
        self._bid_cache = c
        self._bid_floor = c[0]

    def _rebuild_asks(self) -> None:
        d = self._asks
        if len(d) <= self._keep:
            self._ask_cache = sorted(d)
            self._ask_ceil = _INF
            return
        c = _select(d, 0, self._keep)
        self._ask_cache = c
        self._ask_ceil = c[-1]

    def _heal(self, bids: Levels, asks: Levels) -> int:
        """The book is crossed after applying ``bids`` then ``asks``: remove what the newest levels overrule."""
        self._note_cross()
        removed = 0
        # Fresh asks are the newest: they remove every bid at or above the lowest of them.
        fresh_asks = [p for p, q in asks if q]
        if fresh_asks:
            removed += self._remove_bids_from(min(fresh_asks))
        # Fresh bids remove the asks at or below the highest of them that this message did not set again.
        fresh_bids = [p for p, q in bids if q]
        if fresh_bids:
            hi = max(fresh_bids)
            touched = {p for p, _ in asks}
            victims = [p for p in self._asks if p <= hi and p not in touched]
            if victims:
                for p in victims:
                    del self._asks[p]
                removed += len(victims)
                self._rebuild_asks()
        bc = self._bid_cache
        ac = self._ask_cache
        if bc and ac and bc[-1] >= ac[0]:
            # Only possible when the book was already crossed before this message (reset and apply
            # always leave it uncrossed): fall back to the asks-win rule of a snapshot.
            removed += self._remove_bids_from(ac[0])
        self.healed_levels += removed
        self.last_healed = removed
        return removed

    def _note_cross(self) -> None:
        self.crossed_count += 1
        bc = self._bid_cache
        ac = self._ask_cache
        self.last_cross = (bc[-1] if bc else _NAN, ac[0] if ac else _NAN)

    def _remove_bids_from(self, price: float) -> int:
        victims = [p for p in self._bids if p >= price]
        for p in victims:
            del self._bids[p]
        self._rebuild_bids()
        return len(victims)

    def _trim_bids(self) -> None:
        d = self._bids
        extra = len(d) - self.max_levels
        if extra > 0:
            gone = heapq.nsmallest(extra, d)  # ascending: the last one is the highest removed
            for p in gone:
                del d[p]
            self.trimmed_levels += extra
            if gone[-1] >= self._bid_floor:  # the sorted cache held some of them too
                self._rebuild_bids()

    def _trim_asks(self) -> None:
        d = self._asks
        extra = len(d) - self.max_levels
        if extra > 0:
            gone = heapq.nlargest(extra, d)  # descending: the last one is the lowest removed
            for p in gone:
                del d[p]
            self.trimmed_levels += extra
            if gone[-1] <= self._ask_ceil:
                self._rebuild_asks()


def _select(prices: dict[float, float], lo: int, hi: int) -> list[float]:
    """Prices ranked ``lo``..``hi`` (ascending) of a side, sorted: one O(n) partition in numpy.

    A rebuild happens when the price has run through the whole cache; partitioning in C costs about as
    much as one ``max()`` over the side, a third of ``heapq.nlargest`` (a Python loop) on 5000 levels.
    """
    a = np.fromiter(prices, dtype=np.float64, count=len(prices))
    kth = lo if lo > 0 else hi - 1
    part = np.partition(a, kth)
    return sorted(part[lo:hi].tolist())
