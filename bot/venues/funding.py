"""Funding rates of perpetuals, venue-neutral: the venue files hand over what their streams say (rate as
the venue's decimal string, next funding time in ms, mark price) and ``FundingFilter`` turns it into a
``FundingRate`` event only when the (rate, funding time) pair changes.

Why a filter: Bybit repeats its ticker ~10 times a second and Binance its mark price every second, while
the predicted rate changes far less often; the ledger needs only the last rate heard for each funding
time (``bot.ledger.Ledger.on_funding``), so repeats are counted, not published. A pair whose rate is
empty or whose time is 0 (a delivery contract, a field the venue did not send) is no funding and is
skipped; a rate that is not a finite decimal raises ``MalformedMessage`` (the adapter counts the frame).

The mark price travels with the event of the change. The ledger values a funding payment at the mark of
the last event for that funding time, so for a rate that stays unchanged for hours that mark is as old.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from bot.errors import MalformedMessage
from bot.events import Venue
from bot.orders import FundingRate

NS_PER_MS = 1_000_000


def parse_decimal(text: str, what: str) -> Decimal:
    """A venue's decimal string as a finite ``Decimal``; ``MalformedMessage`` otherwise."""
    try:
        d = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as e:
        raise MalformedMessage(f"{what} {text!r} is not a decimal") from e
    if not d.is_finite():
        raise MalformedMessage(f"{what} {text!r} is not finite")
    return d


def float_decimal(x: float) -> Decimal | None:
    """A float parsed from a venue's decimal string back as that decimal (shortest repr: ``65117.44``,
    trailing zeros dropped); None for nan (a field never sent)."""
    return None if math.isnan(x) else Decimal(repr(x))


@dataclass
class FundingStats:
    published: int = 0  # FundingRate events (a new rate or a new funding time)
    unchanged: int = 0  # messages repeating the last published pair
    no_funding: int = 0  # messages with no rate or no funding time


class FundingFilter:
    """The last published (rate, funding time) per symbol of one venue; see the module docstring."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.stats = FundingStats()
        self._last: dict[str, tuple[Decimal, int]] = {}
        self._last_text: dict[str, tuple[str, int]] = {}  # the last pair given whose value is _last's, as given

    def repeats(self, symbol: str, rate: str | None, next_funding_ms: int | None) -> bool:
        """True, counted as ``unchanged``, when ``update`` with this rate text and funding time would find the
        pair it published last: the same text as a pair it last found so. A cheap test before ``update`` (no
        decimal parsed, no mark price needed) for venues that repeat the pair many times a second."""
        if rate and next_funding_ms and self._last_text.get(symbol) == (rate, next_funding_ms):
            self.stats.unchanged += 1
            return True
        return False

    def update(
        self, symbol: str, rate: str | None, next_funding_ms: int | None, mark: Decimal | None,
        ts_event: int, ts_recv: int,
    ) -> FundingRate | None:
        """The event to publish for this message, or None (unchanged, or no funding in it)."""
        if not rate or not next_funding_ms:
            self.stats.no_funding += 1
            return None
        value = parse_decimal(rate, f"{self.venue.value} {symbol} funding rate")
        pair = (value, next_funding_ms)
        self._last_text[symbol] = (rate, next_funding_ms)
        if self._last.get(symbol) == pair:
            self.stats.unchanged += 1
            return None
        self._last[symbol] = pair
        self.stats.published += 1
        return FundingRate(
            ts_event=ts_event, ts_recv=ts_recv, venue=self.venue, symbol=symbol, rate=value,
            funding_time_ns=next_funding_ms * NS_PER_MS, mark_price=mark,
        )
