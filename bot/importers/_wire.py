"""Synthetic venue messages for formats that hold levels but no venue messages (``binance-csv``,
``tardis``): the exact wire shapes of ``shared/PROTOCOLS.md`` (key order, decimal strings), so the venue
adapters parse them on their normal paths and the official sync procedures build the book.

Prices and sizes are passed through as the text the file holds (checked to be plain numbers first).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from bot.events import Venue

Level = tuple[str, str]  # (price, size) text


def levels_json(levels: Iterable[Level]) -> str:
    return "[" + ",".join(f'["{p}","{q}"]' for p, q in levels) + "]"


def sorted_side(levels: Iterable[Level], bids: bool) -> list[Level]:
    """A snapshot side in the venue's order: bids by price descending, asks ascending."""
    return sorted(levels, key=lambda lv: Decimal(lv[0]), reverse=bids)


def binance_stream(symbol: str, name: str) -> str:
    return f"{symbol.lower()}@{name}"


def binance_depth_update(
    venue: Venue, stream: str, symbol: str, e_ms: int, first: int, last: int, prev: int,
    bids: Iterable[Level], asks: Iterable[Level],
) -> str:  # fmt: skip
    """A diff-depth event in its combined-stream envelope (PROTOCOLS.md 2.2, 3.2). USD-M adds ``T``
    (here the event time: the source has one time only) and ``pu`` (``prev``)."""
    b, a = levels_json(bids), levels_json(asks)
    if venue is Venue.BINANCE_USDM:
        head = f'"e":"depthUpdate","E":{e_ms},"T":{e_ms},"s":"{symbol}","U":{first},"u":{last},"pu":{prev}'
    else:
        head = f'"e":"depthUpdate","E":{e_ms},"s":"{symbol}","U":{first},"u":{last}'
    return f'{{"stream":"{stream}","data":{{{head},"b":{b},"a":{a}}}}}'


def binance_snapshot(venue: Venue, last_update_id: int, e_ms: int, bids: Iterable[Level], asks: Iterable[Level]) -> str:
    """A REST depth-snapshot body (PROTOCOLS.md 2.5, 3.5): USD-M's carries ``E`` and ``T``, spot's no time."""
    b, a = levels_json(bids), levels_json(asks)
    if venue is Venue.BINANCE_USDM:
        return f'{{"lastUpdateId":{last_update_id},"E":{e_ms},"T":{e_ms},"bids":{b},"asks":{a}}}'
    return f'{{"lastUpdateId":{last_update_id},"bids":{b},"asks":{a}}}'


def binance_partial(
    venue: Venue, stream: str, symbol: str, e_ms: int, update_id: int, prev: int,
    bids: Iterable[Level], asks: Iterable[Level],
) -> str:  # fmt: skip
    """A partial-depth picture (PROTOCOLS.md 2.3, 3.3): spot's payload is ``{lastUpdateId,bids,asks}``
    (no symbol, no time), USD-M's a whole ``depthUpdate``."""
    if venue is Venue.BINANCE_USDM:
        return binance_depth_update(venue, stream, symbol, e_ms, update_id, update_id, prev, bids, asks)
    body = binance_snapshot(venue, update_id, e_ms, bids, asks)
    return f'{{"stream":"{stream}","data":{body}}}'


def bybit_book(
    venue: Venue, depth: int, symbol: str, kind: str, ts_ms: int, update_id: int,
    bids: Iterable[Level], asks: Iterable[Level],
) -> str:  # fmt: skip
    """An ``orderbook.{depth}.{symbol}`` message (PROTOCOLS.md 1.4) of ``kind`` snapshot or delta, in the
    key order of its category's connection (linear ``topic,type,ts``, spot ``topic,ts,type``); ``seq`` and
    ``u`` both carry ``update_id``, ``cts`` the message time."""
    topic = f"orderbook.{depth}.{symbol}"
    data = f'{{"s":"{symbol}","b":{levels_json(bids)},"a":{levels_json(asks)},"u":{update_id},"seq":{update_id}}}'
    if venue is Venue.BYBIT_SPOT:
        return f'{{"topic":"{topic}","ts":{ts_ms},"type":"{kind}","data":{data},"cts":{ts_ms}}}'
    return f'{{"topic":"{topic}","type":"{kind}","ts":{ts_ms},"data":{data},"cts":{ts_ms}}}'
