"""``tardis``: tardis.dev CSV datasets (``.csv`` or ``.csv.gz``), timestamps in microseconds since the epoch,
``timestamp`` the exchange's time and ``local_timestamp`` the receive time (which becomes ``ts_recv``).
Two datasets hold books:

* ``incremental_book_L2``: ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``,
  one row per level (``side`` ``bid``/``ask``, ``amount`` 0 removes the level). Rows with
  ``is_snapshot`` true are the book's initial state; a run of them after updates means the source
  reconnected and the book starts again from that snapshot.
* ``book_snapshot_N`` (``book_snapshot_25``, ...): ``exchange,symbol,timestamp,local_timestamp,
  asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,...``, one whole top-N book per row (empty
  cells where the book was thinner).

Exchanges: ``binance`` (``binance_spot``), ``binance-futures`` (``binance_usdm``), ``bybit``
(``bybit_linear``; its inverse symbols, ``BTCUSD`` and ``BTCUSDZ24``-style, are not replayed) and
``bybit-spot`` (``bybit_spot``). Rows of other exchanges or markets are skipped and counted by reason.

Rows become the venue's own messages, so the normal adapters build the books:

* incremental rows are grouped per symbol into messages: the consecutive snapshot rows of one
  ``timestamp`` are one snapshot (a snapshot whose rows are interleaved with another symbol's is
  gathered until that symbol's next update), the consecutive update rows of one ``timestamp`` and
  ``local_timestamp`` one update. On Bybit they are ``orderbook.{500|200}.{symbol}`` messages (linear,
  spot: the depths of Bybit's own archive; tardis does not say which depth it subscribed to, and the
  adapter follows the data's) of ``type`` snapshot and delta. On Binance a snapshot is a REST depth
  snapshot record and an update a diff-depth event on ``<symbol>@depth``.
* a ``book_snapshot_N`` row is a whole picture: a Bybit ``orderbook.{N}`` snapshot, or a Binance
  partial-depth message on ``<symbol>@depth{N}`` (each resets the book; spot's partial payload carries
  no time, so a spot book's exchange time is then the receive time).

**Sequence numbers are synthesized**: tardis keeps no update ids. They are made so that the venues' own
sync rules accept exactly the stream as tardis wrote it. Bybit: the snapshot and every delta after it
count up by one (``u``, also ``seq``). Binance: update ``k`` of a symbol covers ids ``[2k-1, 2k]``
(``U``, ``u``; USD-M ``pu`` = ``2k-2``), and a snapshot taken before update ``k`` has
``lastUpdateId`` ``2k-1``, inside the range of the update that follows it, as the official procedures
(PROTOCOLS.md 2.4, 3.4) expect of a real snapshot. A new tardis snapshot after updates is preceded by
one empty diff whose ids skip a range: the adapter sees a gap, drops its book and takes the new
snapshot, as a live collector would after a reconnect (this shows as one gap and one resync per
re-snapshot). Updates of a symbol before its first snapshot cannot build a book: they are skipped and
counted.

**A gap cannot be detected from this data.** Without the venue's update ids, a message tardis itself
missed is invisible: the book is as correct as the file, and only the re-snapshots tardis wrote are seen.
Exchange times are kept to the millisecond (the venues' resolution); receive times to the microsecond.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers._text import Skipped, columns, count, csv_rows, integer, number
from bot.importers._wire import (
    Level,
    binance_depth_update,
    binance_partial,
    binance_snapshot,
    binance_stream,
    bybit_book,
    sorted_side,
)
from bot.recording import Record

EXCHANGES = {
    "binance": Venue.BINANCE_SPOT,
    "binance-futures": Venue.BINANCE_USDM,
    "bybit": Venue.BYBIT_LINEAR,
    "bybit-spot": Venue.BYBIT_SPOT,
}
BASE = ("exchange", "symbol", "timestamp", "local_timestamp")
INCREMENTAL = (*BASE, "is_snapshot", "side", "price", "amount")
BYBIT_DEPTH = {Venue.BYBIT_LINEAR: 500, Venue.BYBIT_SPOT: 200}  # nominal (see the module doc)
_BYBIT = (Venue.BYBIT_LINEAR, Venue.BYBIT_SPOT)
_INVERSE = re.compile(r"USD([FGHJKMNQUVXZ][0-9]{2})?")  # Bybit inverse: BTCUSD, BTCUSDZ24
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9_-]*")
_ASK_PRICE = re.compile(r"asks\[(\d+)\]\.price")


def import_tardis(
    paths: Sequence[Path], venue: Venue | None = None, *, skipped: Skipped | None = None
) -> Iterator[Record]:
    """Records from tardis.dev ``incremental_book_L2`` / ``book_snapshot_N`` CSVs (see the module doc).

    ``venue``, when given, must be the venue of the file's exchange (it is a check, not an override).
    """
    for path in paths:
        yield from _tardis_file(Path(path), venue, skipped)


@dataclass
class _Book:
    """Synthesized ids and the snapshot being gathered, per (venue, symbol)."""

    venue: Venue
    symbol: str
    slot: int = 0  # Binance: updates so far (update k covers ids 2k-1, 2k); Bybit: the last u
    snapshots: int = 0
    updates_since_snapshot: int = 0
    snap_key: tuple[int, int] | None = None  # (timestamp, local_timestamp) of the snapshot being gathered
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


def _tardis_file(path: Path, venue: Venue | None, skipped: Skipped | None) -> Iterator[Record]:
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        return
    _, header = first
    names = [h.strip() for h in header]
    if "is_snapshot" in names:
        yield from _incremental(path, header, rows, venue, skipped)
    elif any(_ASK_PRICE.fullmatch(h) for h in names):
        yield from _snapshots(path, header, rows, venue, skipped)
    else:
        raise RecordingError(
            f"{path}:1: a tardis file of columns {','.join(names)[:120]}: only incremental_book_L2 and "
            "book_snapshot_N files hold books"
        )


def _market(
    exchange: str, symbol: str, venue: Venue | None, where: str, skipped: Skipped | None
) -> tuple[Venue, str] | None:
    """The (venue, canonical symbol) of a row, or None (counted) for a market this bot does not replay."""
    v = EXCHANGES.get(exchange)
    if v is None:
        count(skipped, f"tardis/unsupported_exchange:{exchange[:40]}")
        return None
    sym = symbol.upper()
    if _SYMBOL.fullmatch(sym) is None:
        raise RecordingError(f"{where}: symbol {symbol[:30]!r} is not a symbol")
    if v is Venue.BYBIT_LINEAR and _INVERSE.search(sym) and not sym.endswith(("USDT", "USDC")):
        count(skipped, f"tardis/unsupported_market:{exchange} {sym}")
        return None
    if venue is not None and venue is not v:
        raise RecordingError(f"{where}: tardis exchange {exchange!r} is {v.value}, not --venue {venue.value}")
    return v, sym


def _incremental(
    path: Path, header: list[str], rows: Iterator[tuple[int, list[str]]], venue: Venue | None,
    skipped: Skipped | None,
) -> Iterator[Record]:  # fmt: skip
    col = columns(path, header, INCREMENTAL, (), "tardis incremental_book_L2")
    i_ex, i_sym, i_ts, i_loc = col["exchange"], col["symbol"], col["timestamp"], col["local_timestamp"]
    i_snap, i_side, i_px, i_amt = col["is_snapshot"], col["side"], col["price"], col["amount"]
    width = len(header)
    books: dict[tuple[Venue, str], _Book] = {}
    upd: tuple[_Book, int, int] | None = None  # the update being gathered: its book, timestamp, local ts
    bids: list[Level] = []
    asks: list[Level] = []
    for n, row in rows:
        where = f"{path}:{n}"
        if len(row) != width:
            raise RecordingError(f"{where}: {len(row)} fields, the header has {width}")
        market = _market(row[i_ex], row[i_sym], venue, where, skipped)
        if market is None:
            continue
        book = books.get(market)
        if book is None:
            book = books[market] = _Book(*market)
        ts = integer(row[i_ts], where, "timestamp")
        local = integer(row[i_loc], where, "local_timestamp")
        snap = row[i_snap]
        if snap not in ("true", "false"):
            raise RecordingError(f"{where}: is_snapshot {snap[:20]!r} is neither true nor false")
        side = row[i_side]
        if side not in ("bid", "ask"):
            raise RecordingError(f"{where}: side {side[:20]!r} is neither bid nor ask")
        level = (number(row[i_px], where, "price"), number(row[i_amt], where, "amount"))
        if upd is not None and (snap == "true" or upd[0] is not book or upd[1:] != (ts, local)):
            yield _update(*upd, bids, asks)
            upd, bids, asks = None, [], []
        if snap == "true":
            if book.snap_key is not None and book.snap_key[0] != ts:  # a new snapshot right after another
                yield from _snapshot(book)
            if book.snap_key is None:
                book.snap_key = (ts, local)
            (book.bids if side == "bid" else book.asks).append(level)
            continue
        if book.snap_key is not None:
            yield from _snapshot(book)
        if not book.snapshots:
            count(skipped, f"tardis/update_before_snapshot:{book.venue.value} {book.symbol}")
            continue
        if upd is None:
            upd = (book, ts, local)
        (bids if side == "bid" else asks).append(level)
    if upd is not None:
        yield _update(*upd, bids, asks)
    for book in books.values():
        if book.snap_key is not None:
            yield from _snapshot(book)


def _snapshot(book: _Book) -> Iterator[Record]:
    """The gathered snapshot of ``book`` as the venue's records (see "Sequence numbers" above)."""
    assert book.snap_key is not None
    ts_us, local_us = book.snap_key
    ts_ms, ts_recv = ts_us // 1000, local_us * 1000
    bids, asks = sorted_side(book.bids, True), sorted_side(book.asks, False)
    book.snap_key, book.bids, book.asks = None, [], []
    v, sym = book.venue, book.symbol
    if v in _BYBIT:
        book.slot += 1
        raw = bybit_book(v, BYBIT_DEPTH[v], sym, "snapshot", ts_ms, book.slot, bids, asks)
        yield Record(ts_recv, v, "ws", "tardis", raw)
    else:
        if book.updates_since_snapshot:  # a reconnect in the source: an empty diff that reveals a gap first
            book.slot += 2
            yield _binance_diff(book, ts_ms, ts_recv, (), ())
        yield Record(ts_recv, v, "snapshot", sym, binance_snapshot(v, 2 * book.slot + 1, ts_ms, bids, asks))
    book.snapshots += 1
    book.updates_since_snapshot = 0


def _update(book: _Book, ts_us: int, local_us: int, bids: list[Level], asks: list[Level]) -> Record:
    ts_ms, ts_recv = ts_us // 1000, local_us * 1000
    book.slot += 1
    book.updates_since_snapshot += 1
    v = book.venue
    if v in _BYBIT:
        raw = bybit_book(v, BYBIT_DEPTH[v], book.symbol, "delta", ts_ms, book.slot, bids, asks)
        return Record(ts_recv, v, "ws", "tardis", raw)
    return _binance_diff(book, ts_ms, ts_recv, bids, asks)


def _binance_diff(book: _Book, ts_ms: int, ts_recv: int, bids: Iterable[Level], asks: Iterable[Level]) -> Record:
    """The diff of update slot ``k = book.slot``: ids ``[2k-1, 2k]``, ``pu`` ``2k-2``."""
    k, v, sym = book.slot, book.venue, book.symbol
    raw = binance_depth_update(v, binance_stream(sym, "depth"), sym, ts_ms, 2 * k - 1, 2 * k, 2 * k - 2, bids, asks)
    return Record(ts_recv, v, "ws", "tardis", raw)


def _snapshots(
    path: Path, header: list[str], rows: Iterator[tuple[int, list[str]]], venue: Venue | None,
    skipped: Skipped | None,
) -> Iterator[Record]:  # fmt: skip
    names = [h.strip() for h in header]
    depth = sum(1 for h in names if _ASK_PRICE.fullmatch(h))
    sides = [f"{s}[{i}].{f}" for i in range(depth) for s in ("asks", "bids") for f in ("price", "amount")]
    col = columns(path, header, (*BASE, *sides), (), f"tardis book_snapshot_{depth}")
    i_ex, i_sym, i_ts, i_loc = col["exchange"], col["symbol"], col["timestamp"], col["local_timestamp"]
    at = [(col[f"bids[{i}].price"], col[f"bids[{i}].amount"], col[f"asks[{i}].price"], col[f"asks[{i}].amount"])
          for i in range(depth)]  # fmt: skip
    width = len(header)
    ids: dict[tuple[Venue, str], int] = {}
    for n, row in rows:
        where = f"{path}:{n}"
        if len(row) != width:
            raise RecordingError(f"{where}: {len(row)} fields, the header has {width}")
        market = _market(row[i_ex], row[i_sym], venue, where, skipped)
        if market is None:
            continue
        v, sym = market
        ts_ms = integer(row[i_ts], where, "timestamp") // 1000
        ts_recv = integer(row[i_loc], where, "local_timestamp") * 1000
        bids: list[Level] = []
        asks: list[Level] = []
        for bp, bq, ap, aq in at:
            if row[bp]:
                bids.append((number(row[bp], where, "bid price"), number(row[bq], where, "bid amount")))
            if row[ap]:
                asks.append((number(row[ap], where, "ask price"), number(row[aq], where, "ask amount")))
        uid = ids.get(market, 0) + 1
        ids[market] = uid
        if v in _BYBIT:
            raw = bybit_book(v, depth, sym, "snapshot", ts_ms, uid, bids, asks)
        else:
            raw = binance_partial(v, binance_stream(sym, f"depth{depth}"), sym, ts_ms, uid, uid - 1, bids, asks)
        yield Record(ts_recv, v, "ws", "tardis", raw)
