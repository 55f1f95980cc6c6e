"""What ``python -m bot replay`` reads, as streams merged by time.

    SOURCE                          read as
    DIR (holding manifest.json)     a native recording (``bot.recording``), streamed block by block
    VENUE=DIR | VENUE=FILE.csv      kline files ``SYMBOL_<n><m|h|d>.csv`` (``timestamp,open,high,low,close,volume``,
                                    bar open times, UTC; ``bot.klines.iter_kline_csv``)
    FILE | VENUE=FILE               a file in a public format (``bot.importers.detect_format``), converted on the
                                    fly (``VENUE=`` for formats that do not name their venue)

Every source is streamed: nothing is loaded whole, so memory does not grow with the recording's length.
Items are ``bot.recording.Row`` tuples ``(ts_recv, venue, kind, key, raw)`` for venue traffic and
``KlineClosed`` events for bars (their receive time is their close time: a kline file records no other);
several sources merge by that time, ties in the order the sources were given.

Kline files: per (venue, symbol) only the finest interval given is read; the coarser resolutions are
resampled from it on the bus (``bot.klines.Resampler``), as a live run builds them, so a 5m file beside
the 1m one is left out (and said so) rather than published twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bot.errors import ConfigError
from bot.events import KlineClosed, Venue
from bot.klines import iter_kline_csv, kline_file_key
from bot.recording import MANIFEST, Block, Frames, Row, book_symbol, iter_frames, iter_rows, read_manifest

log = structlog.get_logger(__name__)

Item = Row | KlineClosed
KLINE_HEADER = "timestamp,open,high,low,close,volume"


@dataclass
class Source:
    """One SOURCE argument: what it holds and how to stream it."""

    name: str  # as given on the command line
    kind: str  # "recording" | "import" | "klines"
    available: dict[Venue, set[str]] = field(default_factory=dict)  # books / bar series it carries
    span_ns: tuple[int, int] | None = None  # first and last receive time, when known before reading
    paths: tuple[Path, ...] = ()
    venue: Venue | None = None
    fmt: str = ""
    skipped: list[str] = field(default_factory=list)  # kline files left out (coarser than another)

    def items(self, venues: Iterable[str] | None = None) -> Iterator[Item]:
        if self.kind == "recording":
            return iter_rows(self.paths[0], venues=venues)
        if self.kind == "klines":
            return _bars(self)
        return _imported(self)

    def frames(self, venues: Iterable[str] | None = None) -> Iterator[Frames | Block]:
        """A native recording's blocks (the fast path of a replay from one recording), each venue's records
        in file order and the venues merged by receive time (``merge_runs``): a recording made of captures
        appended one connection after another (the demo's Bybit session) is replayed as it happened."""
        if self.kind != "recording":
            raise ValueError(f"{self.name}: not a native recording")
        have = sorted(v.value for v in self.available)
        names = [v for v in have if venues is None or v in set(venues)]
        if len(names) <= 1:
            return iter_frames(self.paths[0], venues=names or venues)
        return merge_runs([iter_frames(self.paths[0], venues=[v]) for v in names])


def _times(x: Frames | Block) -> Any:
    return x.ts if type(x) is Frames else x[0]


def _cut(x: Frames | Block, a: int, b: int) -> Frames | Block:
    if type(x) is Frames:
        return Frames(x.venue, x.data, x.ts[a:b], x.key[a:b], x.raw[a:b], x.end[a:b])
    return Block(*(col[a:b] for col in x))  # type: ignore[arg-type]


def merge_runs(streams: Sequence[Iterator[Frames | Block]]) -> Iterator[Frames | Block]:
    """Merge streams of ``Frames`` / ``Block`` runs by receive time without unpacking them: the stream with
    the earliest next record gives every record up to the others' next time, as one slice of its run
    (a stream's own order is kept even where its times step back). Ties go to the first stream."""
    # per stream: [run, its times, offset of its next record, that record's time], or None when done
    heads: list[list[Any] | None] = []
    for st in streams:
        first = next(st, None)
        if first is None:
            heads.append(None)
        else:
            times = _times(first)
            heads.append([first, times, 0, int(times[0])])
    while True:
        best = -1
        best_t = 0
        limit: int | None = None  # the earliest next time of the other streams
        for i, h in enumerate(heads):
            if h is None:
                continue
            t = h[3]
            if best < 0 or t < best_t:
                if best >= 0 and (limit is None or best_t < limit):
                    limit = best_t
                best, best_t = i, t
            elif limit is None or t < limit:
                limit = t
        if best < 0:
            return
        h = heads[best]
        assert h is not None
        item, times, off = h[0], h[1], h[2]
        n = len(times)
        if limit is not None:
            upto = off + int(np.searchsorted(times[off:], limit, side="right"))
            end = max(off + 1, min(upto, n))
        else:
            end = n
        yield item if (off == 0 and end == n) else _cut(item, off, end)
        if end < n:
            h[2] = end
            h[3] = int(times[end])
        else:
            nxt = next(streams[best], None)
            if nxt is None:
                heads[best] = None
            else:
                times = _times(nxt)
                heads[best] = [nxt, times, 0, int(times[0])]


def item_time(x: Item) -> int:
    return x.ts_recv if type(x) is KlineClosed else x[0]  # type: ignore[index]


def merged(sources: Sequence[Source], venues: Iterable[str] | None = None) -> Iterator[Item]:
    """Every source's items in receive-time order (a stable merge: ties keep the sources' order)."""
    keep = list(venues) if venues is not None else None
    streams = [s.items(keep) for s in sources]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=item_time)


def open_sources(args: Sequence[str]) -> list[Source]:
    """Parse the SOURCE arguments (see the module doc); ConfigError, one line, for anything unusable."""
    if not args:
        raise ConfigError("replay needs at least one SOURCE (a recording directory, VENUE=klines, or a file)")
    return [_open(a) for a in args]


def _venue(name: str, arg: str) -> Venue:
    try:
        return Venue(name)
    except ValueError:
        raise ConfigError(f"{arg}: unknown venue {name!r}; known: {', '.join(v.value for v in Venue)}") from None


def _open(arg: str) -> Source:
    venue: Venue | None = None
    text = arg
    head, sep, rest = arg.partition("=")
    if sep and head in {v.value for v in Venue}:
        venue, text = Venue(head), rest
    elif sep and not Path(arg).exists():
        _venue(head, arg)
    p = Path(text)
    if not p.exists():
        raise ConfigError(f"source {arg}: no such file or directory")
    if p.is_dir() and (p / MANIFEST).is_file():
        return _recording(arg, p)
    if p.is_dir() or _is_kline_csv(p):
        if venue is None:
            raise ConfigError(f"source {arg}: kline files need their venue: give it as VENUE={text}")
        return _klines(arg, venue, p)
    return _import(arg, p, venue)


def _recording(arg: str, p: Path) -> Source:
    try:
        m: dict[str, Any] = read_manifest(p)
    except Exception as e:  # RecordingError and friends: the message names the file
        raise ConfigError(f"source {arg}: {e}") from None
    avail: dict[Venue, set[str]] = {}
    for name, syms in (m.get("symbols") or {}).items():
        if name in {v.value for v in Venue}:
            avail[Venue(name)] = set(syms)
    files = m.get("files") or []
    first = [f["first_ts_recv"] for f in files if f.get("first_ts_recv")]
    last = [f["last_ts_recv"] for f in files if f.get("last_ts_recv")]
    span = (min(first), max(last)) if first and last else None
    return Source(arg, "recording", avail, span, (p,))


def _is_kline_csv(p: Path) -> bool:
    if p.suffix.lower() != ".csv":
        return False
    try:
        with p.open(encoding="utf-8") as fh:
            head = fh.readline().strip().lower().replace(" ", "")
    except (OSError, UnicodeDecodeError):
        return False
    return head == KLINE_HEADER


def _klines(arg: str, venue: Venue, p: Path) -> Source:
    files = sorted(f for f in p.iterdir() if _is_kline_csv(f)) if p.is_dir() else [p]
    finest: dict[str, tuple[int, Path]] = {}
    skipped: list[str] = []
    for f in files:
        key = kline_file_key(f)
        if key is None:
            raise ConfigError(f"source {arg}: cannot tell symbol and interval from {f.name!r} (want BTCUSDT_1m.csv)")
        sym, iv = key
        have = finest.get(sym)
        if have is None or iv < have[0]:
            if have is not None:
                skipped.append(have[1].name)
            finest[sym] = (iv, f)
        else:
            skipped.append(f.name)
    if not finest:
        raise ConfigError(f"source {arg}: no kline files ({KLINE_HEADER}) in {p}")
    if skipped:
        log.info("replay_kline_files_resampled_instead", source=arg, left_out=sorted(skipped),
                 why="coarser bars are resampled from the finest file, as a live run builds them")
    chosen = tuple(f for _, f in sorted(finest.values(), key=lambda x: x[1].name))
    return Source(arg, "klines", {venue: set(finest)}, None, chosen, venue, skipped=sorted(skipped))


def _bars(src: Source) -> Iterator[KlineClosed]:
    assert src.venue is not None
    streams = [iter_kline_csv(f, venue=src.venue, source="replay") for f in src.paths]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=item_time)


def _import(arg: str, p: Path, venue: Venue | None) -> Source:
    from bot import importers

    try:
        fmt = importers.detect_format(p)
        avail: dict[Venue, set[str]] = {}
        first = last = None
        for rec in importers.iter_import([p], fmt, venue):  # one pass to learn what it holds
            if rec.kind in ("ws", "snapshot"):
                sym = rec.key if rec.kind == "snapshot" else book_symbol(rec.raw)
                if sym is not None:
                    avail.setdefault(Venue(rec.venue), set()).add(sym)
            first = rec.ts_recv if first is None else first
            last = rec.ts_recv
    except ConfigError:
        raise
    except Exception as e:  # RecordingError / DataIntegrityError name the file and line
        raise ConfigError(f"source {arg}: {e}") from None
    if not avail:
        raise ConfigError(f"source {arg}: no order-book data in it (format {fmt})")
    span = (first, last) if first is not None and last is not None else None
    return Source(arg, "import", avail, span, (p,), venue, fmt)


def _imported(src: Source) -> Iterator[Row]:
    from bot import importers

    for rec in importers.iter_import(list(src.paths), src.fmt, src.venue):
        yield (rec.ts_recv, rec.venue, rec.kind, rec.key, rec.raw)
