"""Binance USD-M mark price stream (``<symbol>@markPrice@1s``): the funding rate and the next funding time.

Its own file, one job: ``binance_wire.py`` decodes the stream with the wire struct, ``binance.py`` routes
it here (``funding_args``). Venue spellings (``r``, ``T``, ``p``) stay in these files. The recordings hold
no markPrice stream; the example is the venue's own (Binance USD-M docs, "Mark Price Stream")::

    {"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091",
     "P":"11784.25641265","r":"0.00038167","T":1562306400000}

``r`` is ``""`` and ``T`` is 0 for delivery contracts (no funding): ``FundingFilter`` skips those.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import msgspec

from bot.venues.funding import NS_PER_MS, parse_decimal

MARK_PRICE_STREAM = "markPrice@1s"  # every second; plain ``markPrice`` is every 3 s


class MarkPriceUpdate(msgspec.Struct):
    """``markPriceUpdate``: prices and the rate kept as text (exact Decimals)."""

    E: int  # event time, ms
    s: str
    p: str  # mark price
    r: str = ""  # funding rate ("" for delivery contracts)
    T: int = 0  # next funding time, ms (0 for delivery contracts)
    i: str = ""  # index price


class FundingArgs(NamedTuple):
    """What ``FundingFilter.update`` takes from one message."""

    rate: str
    next_funding_ms: int
    mark: Decimal | None
    ts_event: int


def funding_args(m: MarkPriceUpdate) -> FundingArgs:
    """The funding fields of a mark price update; ``MalformedMessage`` for a mark that is no decimal."""
    mark = parse_decimal(m.p, f"binance_usdm {m.s} mark price") if m.p else None
    return FundingArgs(m.r, m.T, mark, m.E * NS_PER_MS)
