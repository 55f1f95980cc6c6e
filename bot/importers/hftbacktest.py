"""``hftbacktest``: gzip text, ``<local_receive_ns> <raw>`` per line; raw is a Binance combined-stream
message or a REST depth-snapshot body (``{"lastUpdateId":...}``).

The snapshot names no symbol: it is the file's symbol (a file holding several symbols and a snapshot is
refused). Venue: ``--venue``, else inferred from the messages themselves (``binance_venue_of``). Raw text
is carried over byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers._text import open_text
from bot.recording import Record


def import_hftbacktest(paths: Sequence[Path], venue: Venue | None = None) -> Iterator[Record]:
    """Records from hftbacktest raw Binance captures, in file order (files chain in the order given)."""
    if venue is not None and venue not in (Venue.BINANCE_SPOT, Venue.BINANCE_USDM):
        raise RecordingError(f"hftbacktest files are Binance captures; --venue {venue} does not fit")
    for path in paths:
        yield from _hftbacktest_file(Path(path), venue)


def _hftbacktest_file(path: Path, venue: Venue | None) -> Iterator[Record]:
    symbols: set[str] = set()
    snapshots = 0
    pending: list[tuple[int, str]] = []  # snapshots seen before the file's symbol is known
    for n, line in enumerate(open_text(path), 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        ts_s, sep, raw = line.partition(" ")
        if not sep or not ts_s.isdigit():
            raise RecordingError(f"{path}:{n}: not '<local_ns> <raw>': {line[:80]!r}")
        ts = int(ts_s)
        venue = venue or binance_venue_of(raw)
        if raw.startswith('{"lastUpdateId"'):
            snapshots += 1
            if len(symbols) > 1:
                raise RecordingError(f"{path}:{n}: several symbols and a snapshot; cannot tell whose snapshot it is")
            if not symbols:
                pending.append((ts, raw))
                continue
            assert venue is not None  # a snapshot always tells spot from USD-M
            yield Record(ts, venue, "snapshot", next(iter(symbols)), raw)
            continue
        s = stream_symbol(raw)
        if s is None:
            raise RecordingError(f"{path}:{n}: not a combined-stream message: {raw[:80]!r}")
        if s not in symbols:
            symbols.add(s)
            if len(symbols) > 1 and snapshots:
                raise RecordingError(f"{path}:{n}: several symbols and a snapshot; cannot tell whose snapshot it is")
        if venue is None:
            raise RecordingError(f"{path}:{n}: cannot tell Binance spot from USD-M; pass --venue")
        for pts, praw in pending:
            yield Record(pts, venue, "snapshot", s, praw)
        pending.clear()
        yield Record(ts, venue, "ws", "-", raw)
    if pending:
        raise RecordingError(f"{path}: a snapshot but no stream message to tell its symbol")


def stream_symbol(raw: str) -> str | None:
    """``BTCUSDT`` from ``{"stream":"btcusdt@depth@100ms",...}`` without parsing the whole message."""
    if not raw.startswith('{"stream":"'):
        return None
    end = raw.find("@", 11)
    return raw[11:end].upper() if end > 11 else None


def binance_venue_of(raw: str) -> Venue | None:
    """Spot or USD-M from one message's own fields (PROTOCOLS.md 2-3), or None if it does not tell.

    USD-M depth carries ``pu``, its bookTicker an ``e`` (spot's has none), its trade ``X`` (spot's ``M``),
    and its REST snapshot ``E``/``T`` (spot's has neither).
    """
    if raw.startswith('{"lastUpdateId"'):
        return Venue.BINANCE_USDM if '"E":' in raw[:120] else Venue.BINANCE_SPOT
    if '"depthUpdate"' in raw:
        return Venue.BINANCE_USDM if '"pu":' in raw else Venue.BINANCE_SPOT
    if "@bookTicker" in raw:
        return Venue.BINANCE_USDM if '"e":"bookTicker"' in raw else Venue.BINANCE_SPOT
    if '"e":"trade"' in raw:
        return Venue.BINANCE_USDM if '"X":' in raw else (Venue.BINANCE_SPOT if '"M":' in raw else None)
    return None
