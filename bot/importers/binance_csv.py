"""``binance-csv``: Binance's public order-book depth CSVs (data.binance.vision style), a header line and one
row per level change::

    symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu
    BTCUSDT,1667347199939,2098041693435,2098041696700,a,set,20472.80,0.500,2098041693400

``timestamp`` is exchange time in ms, ``side`` ``b`` or ``a``, ``update_type`` ``snap`` (a row of a depth
snapshot) or ``set`` (a level of a diff; ``qty`` 0 removes it). Extra columns are ignored, ``pu`` may be
missing (spot). Rows are turned into the venue's own messages, so the normal adapter and the official sync
procedure (PROTOCOLS.md 2.4, 3.4) build the book, gaps included:

* consecutive ``set`` rows of one update-id range (symbol, timestamp, first and last update id) become
  one diff-depth event on stream ``<symbol>@depth`` in the venue's exact wire shape: ``U`` =
  ``first_update_id``, ``u`` = ``last_update_id``, and on USD-M ``pu`` = ``pu`` (and ``T`` = ``E``);
* consecutive ``snap`` rows (symbol, timestamp, update ids) become one REST depth-snapshot body
  (``lastUpdateId`` = ``last_update_id``, bids descending, asks ascending; USD-M's with ``E``/``T``),
  a ``snapshot`` record of the symbol. A file that has its snapshot in another file (Binance ships
  ``..._depth_snap.csv`` beside ``..._depth_update.csv``) must come first in the list of files: files are
  read in the order given.

Spot or USD-M: ``--venue``, else the ``pu`` of the first ``set`` row (or of a ``snap`` row that has one)
of the files: ``-1``, empty or no ``pu`` column is spot (its diffs have no ``pu``), anything else USD-M.

**No receive time.** The files hold exchange time only, so the exchange time stands in for the receive
time of every record (``ts_recv`` = ``timestamp`` ms): latency between the venue and a collector is not in
this data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers._text import columns, csv_rows, integer, number
from bot.importers._wire import Level, binance_depth_update, binance_snapshot, binance_stream, sorted_side
from bot.recording import Record

HEADER = ("symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty")
NS_PER_MS = 1_000_000
_SYMBOL = re.compile(r"[A-Z0-9]+")

Key = tuple[str, str, int, int, int]  # (symbol, update_type, timestamp ms, first update id, last update id)


def import_binance_csv(paths: Sequence[Path], venue: Venue | None = None) -> Iterator[Record]:
    """Records from Binance depth CSVs, file by file in the order given (see the module doc)."""
    if venue is not None and venue not in (Venue.BINANCE_SPOT, Venue.BINANCE_USDM):
        raise RecordingError(f"binance-csv files are Binance books; --venue {venue} does not fit")
    state = _State(venue)
    for path in paths:
        yield from _csv_file(Path(path), state)
    if state.pending:
        raise RecordingError(f"{paths[-1]}: snapshot rows only; cannot tell Binance spot from USD-M: pass --venue")


class _Group:
    """The rows of one update-id range (or one snapshot) read so far."""

    __slots__ = ("asks", "bids", "key", "line", "prev")

    def __init__(self, key: Key, prev: int, line: int) -> None:
        self.key = key
        self.prev = prev
        self.line = line
        self.bids: list[Level] = []
        self.asks: list[Level] = []


class _State:
    """The venue (given or told by the first diff) and the snapshots read before it was known, across the
    files of one import (a snapshot file comes before its update file)."""

    def __init__(self, venue: Venue | None) -> None:
        self.venue = venue
        self.pending: list[tuple[_Group, Path]] = []


def _csv_file(path: Path, state: _State) -> Iterator[Record]:
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        return
    _, header = first
    col = columns(path, header, HEADER, ("pu",), "binance-csv")
    i_sym, i_ts, i_first, i_last = col["symbol"], col["timestamp"], col["first_update_id"], col["last_update_id"]
    i_side, i_type, i_px, i_qty = col["side"], col["update_type"], col["price"], col["qty"]
    i_pu = col.get("pu")
    width = len(header)
    group: _Group | None = None
    for n, row in rows:
        where = f"{path}:{n}"
        if len(row) != width:
            raise RecordingError(f"{where}: {len(row)} fields, the header has {width}")
        kind = row[i_type]
        if kind not in ("set", "snap"):
            raise RecordingError(f"{where}: update_type {kind[:20]!r} is neither 'set' nor 'snap'")
        symbol = row[i_sym].upper()
        if _SYMBOL.fullmatch(symbol) is None:
            raise RecordingError(f"{where}: symbol {row[i_sym][:20]!r} is not like BTCUSDT")
        key: Key = (
            symbol, kind, integer(row[i_ts], where, "timestamp"), integer(row[i_first], where, "first_update_id"),
            integer(row[i_last], where, "last_update_id"),
        )  # fmt: skip
        pu_text = row[i_pu].strip() if i_pu is not None else ""
        pu = integer(pu_text, where, "pu") if pu_text else -1
        if state.venue is None and (kind == "set" or pu != -1):
            state.venue = Venue.BINANCE_SPOT if pu == -1 else Venue.BINANCE_USDM
        if group is None or group.key != key:
            if group is not None:
                yield from _emit(group, state, path)
            group = _Group(key, pu, n)
        side = row[i_side]
        level = (number(row[i_px], where, "price"), number(row[i_qty], where, "qty"))
        if side == "b":
            group.bids.append(level)
        elif side == "a":
            group.asks.append(level)
        else:
            raise RecordingError(f"{where}: side {side[:20]!r} is neither 'b' nor 'a'")
    if group is not None:
        yield from _emit(group, state, path)


def _emit(group: _Group, state: _State, path: Path) -> Iterator[Record]:
    if state.venue is None:  # only snapshots so far: they wait for the first diff to tell the venue
        state.pending.append((group, path))
        return
    for g, p in (*state.pending, (group, path)):
        yield _record(g, state.venue, p)
    state.pending.clear()


def _record(g: _Group, venue: Venue, path: Path) -> Record:
    symbol, kind, ts_ms, first, last = g.key
    ts = ts_ms * NS_PER_MS
    if kind == "snap":
        body = binance_snapshot(venue, last, ts_ms, sorted_side(g.bids, True), sorted_side(g.asks, False))
        return Record(ts, venue, "snapshot", symbol, body)
    if venue is Venue.BINANCE_USDM and g.prev == -1:
        raise RecordingError(f"{path}:{g.line}: a USD-M diff needs its pu (the previous event's last update id)")
    stream = binance_stream(symbol, "depth")
    raw = binance_depth_update(venue, stream, symbol, ts_ms, first, last, g.prev, g.bids, g.asks)
    return Record(ts, venue, "ws", "-", raw)
