"""Venue adapters: one adapter module per venue (its wire formats beside it, ``<venue>_wire.py``), one registry.

``make_adapter`` is the only way the rest of the bot gets an adapter, so adding a venue means adding
its files and one line to ``ADAPTERS``.
"""

from __future__ import annotations

from bot.config import BookConfig, VenueConfig
from bot.events import Venue
from bot.venues.base import Publish, VenueAdapter
from bot.venues.binance import BinanceSpotAdapter, BinanceUsdmAdapter
from bot.venues.bybit import BybitLinearAdapter, BybitSpotAdapter

ADAPTERS: dict[Venue, type[VenueAdapter]] = {
    Venue.BINANCE_SPOT: BinanceSpotAdapter,
    Venue.BINANCE_USDM: BinanceUsdmAdapter,
    Venue.BYBIT_SPOT: BybitSpotAdapter,
    Venue.BYBIT_LINEAR: BybitLinearAdapter,
}


def make_adapter(
    venue: Venue, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True
) -> VenueAdapter:
    """The adapter for ``venue``. ``live=False`` (offline tools, replay) heals crossed books without resyncing."""
    try:
        cls = ADAPTERS[Venue(venue)]
    except (KeyError, ValueError):
        raise ValueError(f"no adapter for venue {venue!r}; known: {sorted(v.value for v in ADAPTERS)}") from None
    return cls(cfg, book_cfg, publish, live=live)


__all__ = [
    "ADAPTERS",
    "BinanceSpotAdapter",
    "BinanceUsdmAdapter",
    "BybitLinearAdapter",
    "BybitSpotAdapter",
    "make_adapter",
]
