"""The loopback exchange's own order books: the truth a client's local book is compared with.

Written independently of ``bot.book`` on purpose, so a test that compares the two proves something.
Levels are keyed by ``float(price)`` (distinct decimal strings of market prices map to distinct floats)
and keep the **original price and size strings** of the message that set them, so a synthesized
snapshot is formatted exactly as the venue formats it (Binance spot 8-decimal strings, USD-M and Bybit
at the instrument's precision, Bybit spot unpadded).

Crossed-book healing, the same rule as the bot's books: a fresh non-zero bid at ``p`` removes every ask
``<= p``; a fresh non-zero ask at ``p`` removes every bid ``>= p`` (the newest update wins). Bids are
applied before asks within one message. Synthesized snapshots are therefore never crossed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple

Level = tuple[str, str]  # (price, size) as the venue wrote them


class RefBook(NamedTuple):
    """A book as seen from outside: levels best first, as floats, and the venue's update id."""

    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    update_id: int


class SimBook:
    __slots__ = ("_ask_best", "_bid_best", "asks", "bids", "healed")

    def __init__(self) -> None:
        self.bids: dict[float, Level] = {}
        self.asks: dict[float, Level] = {}
        self._bid_best: float | None = None  # cached best bid; None = recompute
        self._ask_best: float | None = None
        self.healed = 0  # levels removed by the crossed-book rule

    @classmethod
    def from_levels(cls, bids: Iterable[Level], asks: Iterable[Level]) -> SimBook:
        book = cls()
        book.apply(bids, asks)
        return book

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Absolute sizes per level (0 deletes); bids first, then asks. Hot path: kept flat."""
        bd, ad = self.bids, self.asks
        for ps, qs in bids:
            p = float(ps)
            if float(qs) == 0.0:
                if bd.pop(p, None) is not None and p == self._bid_best:
                    self._bid_best = None
                continue
            bd[p] = (ps, qs)
            if self._bid_best is not None and p > self._bid_best:
                self._bid_best = p
            ba = self._ask_best
            if ba is None and ad:
                ba = self._ask_best = min(ad)
            if ba is not None and p >= ba:
                gone = [k for k in ad if k <= p]
                for k in gone:
                    del ad[k]
                self.healed += len(gone)
                self._ask_best = None
        for ps, qs in asks:
            p = float(ps)
            if float(qs) == 0.0:
                if ad.pop(p, None) is not None and p == self._ask_best:
                    self._ask_best = None
                continue
            ad[p] = (ps, qs)
            if self._ask_best is not None and p < self._ask_best:
                self._ask_best = p
            bb = self._bid_best
            if bb is None and bd:
                bb = self._bid_best = max(bd)
            if bb is not None and p <= bb:
                gone = [k for k in bd if k >= p]
                for k in gone:
                    del bd[k]
                self.healed += len(gone)
                self._bid_best = None

    def best_bid(self) -> float | None:
        if self._bid_best is None and self.bids:
            self._bid_best = max(self.bids)
        return self._bid_best if self.bids else None

    def best_ask(self) -> float | None:
        if self._ask_best is None and self.asks:
            self._ask_best = min(self.asks)
        return self._ask_best if self.asks else None

    def top(self, depth: int | None = None) -> tuple[list[Level], list[Level]]:
        """The best ``depth`` levels per side (all when None), best first, as the original strings."""
        if depth is None:
            bk = sorted(self.bids, reverse=True)
            ak = sorted(self.asks)
        else:
            bk = heapq.nlargest(depth, self.bids)
            ak = heapq.nsmallest(depth, self.asks)
        return [self.bids[k] for k in bk], [self.asks[k] for k in ak]

    def ref(self, update_id: int, depth: int | None = None) -> RefBook:
        bids, asks = self.top(depth)
        return RefBook(
            [(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks], update_id
        )
