"""Convert public recording formats into the native recording format (``bot.recording``).

    python -m bot import --format hftbacktest --venue binance_spot btcusdt_20240808.gz btcusdt_20240809.gz --out DIR
    python -m bot import --format cryptofeed BYBIT.jsonl.zst --out DIR
    python -m bot import --format bybit-archive --venue bybit_linear BTCUSDT_ob200.data.zip --out DIR

Formats read (raw text is carried over byte for byte; only the framing changes):

* ``hftbacktest``: gzip text, ``<local_receive_ns> <raw>`` per line; raw is a Binance combined-stream
  message or a REST depth-snapshot body (``{"lastUpdateId":...}``). The snapshot names no symbol: it is
  the file's symbol (a file holding several symbols and a snapshot is refused). Venue: ``--venue``, else
  inferred from the snapshot (USD-M snapshots carry ``E``/``T``, spot ones do not).
* ``cryptofeed``: cryptofeed v3 capture, zstd JSON lines ``{"t":"recv"|"http"|..., "conn", "ts", ...}``;
  the venue of a connection follows from its URL (``/v5/public/linear`` → ``bybit_linear``, ...).
* ``bybit-archive``: Bybit's public order-book archive (``ob500``/``ob200``): one raw websocket message per
  line, in a ``.zip``, ``.gz``, ``.zst`` or plain file. It has no receive time: the message's ``ts`` (ms)
  stands in for it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import zstandard

from bot.errors import BotError, RecordingError
from bot.events import Venue
from bot.recording import Record, RecordingWriter

FORMATS = ("hftbacktest", "cryptofeed", "bybit-archive")


def open_text(path: Path) -> Iterator[str]:
    """Lines of a plain, .gz, .zst or .zip (first member) text file."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".gz":
            with gzip.open(p, "rt", encoding="utf-8", newline="\n") as fh:
                yield from fh
        elif suffix == ".zst":
            with open(p, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
                yield from io.TextIOWrapper(zr, encoding="utf-8", newline="\n")
        elif suffix == ".zip":
            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if not names:
                    raise RecordingError(f"{p}: empty zip archive")
                with zf.open(names[0]) as member:
                    yield from io.TextIOWrapper(member, encoding="utf-8", newline="\n")
        else:
            with open(p, encoding="utf-8", newline="\n") as fh:
                yield from fh
    except (OSError, EOFError, zipfile.BadZipFile, zstandard.ZstdError, UnicodeDecodeError) as e:
        raise RecordingError(f"{p}: cannot read: {e}") from e


def import_hftbacktest(paths: Sequence[Path], venue: Venue | None = None) -> Iterator[Record]:
    """Records from hftbacktest raw Binance captures, in file order (files chain in the order given)."""
    for path in paths:
        yield from _hftbacktest_file(Path(path), venue)


def _hftbacktest_file(path: Path, venue: Venue | None) -> Iterator[Record]:
    symbols: set[str] = set()
    snapshots = 0
    pending: list[tuple[int, str]] = []  # snapshots seen before the file's symbol is known
    for n, line in enumerate(open_text(path), 1):
        line = line.rstrip("\n")
        if not line:
            continue
        ts_s, sep, raw = line.partition(" ")
        if not sep or not ts_s.isdigit():
            raise RecordingError(f"{path}:{n}: not '<local_ns> <raw>': {line[:80]!r}")
        ts = int(ts_s)
        venue = venue or _binance_venue_of(raw)
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
        s = _stream_symbol(raw)
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


def _stream_symbol(raw: str) -> str | None:
    """``BTCUSDT`` from ``{"stream":"btcusdt@depth@100ms",...}`` without parsing the whole message."""
    if not raw.startswith('{"stream":"'):
        return None
    end = raw.find("@", 11)
    return raw[11:end].upper() if end > 11 else None


def _binance_venue_of(raw: str) -> Venue | None:
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


_URL_VENUES = (
    ("/v5/public/linear", Venue.BYBIT_LINEAR),
    ("/v5/public/spot", Venue.BYBIT_SPOT),
    ("fstream.", Venue.BINANCE_USDM),
    ("fapi.", Venue.BINANCE_USDM),
    ("stream.binance.", Venue.BINANCE_SPOT),
    ("api.binance.", Venue.BINANCE_SPOT),
)


def _url_venue(url: str) -> Venue | None:
    if "bybit" in url and "/v5/market/" in url:
        cat = parse_qs(urlsplit(url).query).get("category", [""])[0]
        return {"linear": Venue.BYBIT_LINEAR, "spot": Venue.BYBIT_SPOT}.get(cat)
    for needle, v in _URL_VENUES:
        if needle in url:
            return v
    return None


def import_cryptofeed(paths: Sequence[Path]) -> Iterator[Record]:
    """Records from cryptofeed v3 JSONL captures: websocket frames and REST bodies of known venues."""
    for path in paths:
        conn_venue: dict[str, Venue | None] = {}
        for n, line in enumerate(open_text(Path(path)), 1):
            if not line.strip():
                continue
            try:
                r = orjson.loads(line)
                kind = r["t"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                raise RecordingError(f"{path}:{n}: not a cryptofeed v3 record: {e}") from e
            if kind == "connect":
                conn_venue[r["conn"]] = _url_venue(r.get("addr") or r.get("url") or "")
            elif kind in ("recv", "http"):
                ts = round(float(r["ts"]) * 1e9)
                data = r.get("data")
                if not isinstance(data, str):
                    continue
                if kind == "recv":
                    venue = conn_venue.get(r["conn"]) or _url_venue(r.get("addr") or "")
                    if venue is not None:
                        yield Record(ts, venue, "ws", r["conn"], data)
                else:
                    url = r.get("url") or ""
                    venue = _url_venue(url)
                    if venue is not None:
                        parts = urlsplit(url)
                        yield Record(ts, venue, "info", parts.path + ("?" + parts.query if parts.query else ""), data)


def import_bybit_archive(paths: Sequence[Path], venue: Venue) -> Iterator[Record]:
    """Records from Bybit order-book archive files; ``ts`` stands in for the missing receive time."""
    if venue not in (Venue.BYBIT_LINEAR, Venue.BYBIT_SPOT):
        raise RecordingError(f"bybit-archive needs --venue bybit_linear or bybit_spot, not {venue}")
    for path in paths:
        for n, line in enumerate(open_text(Path(path)), 1):
            raw = line.strip()
            if not raw:
                continue
            try:
                ts_ms = int(orjson.loads(raw)["ts"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise RecordingError(f"{path}:{n}: not a Bybit archive message: {raw[:80]!r}") from e
            yield Record(ts_ms * 1_000_000, venue, "ws", "archive", raw)


def records_for(fmt: str, paths: Sequence[Path], venue: Venue | None) -> Iterator[Record]:
    if fmt == "hftbacktest":
        if venue is not None and venue not in (Venue.BINANCE_SPOT, Venue.BINANCE_USDM):
            raise RecordingError(f"hftbacktest files are Binance captures; --venue {venue} does not fit")
        return import_hftbacktest(paths, venue)
    if fmt == "cryptofeed":
        return import_cryptofeed(paths)
    if fmt == "bybit-archive":
        if venue is None:
            raise RecordingError("bybit-archive needs --venue bybit_linear or bybit_spot")
        return import_bybit_archive(paths, venue)
    raise RecordingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def convert(
    fmt: str, paths: Sequence[Path], out: Path, venue: Venue | None = None, rotate_bytes: int = 64 << 20
) -> dict[str, object]:
    """Write a native recording to ``out``; returns a summary (records per venue and kind).

    On any error the partly written ``out`` is removed (if this call created it) and the error re-raised;
    the input files are only ever read.
    """
    out = Path(out)
    created = not out.exists()
    counts: dict[str, int] = {}
    meta: dict[str, object] = {"imported_from": fmt, "sources": [Path(p).name for p in paths]}
    try:
        with RecordingWriter(out, rotate_bytes=rotate_bytes, meta=meta) as w:
            for rec in records_for(fmt, paths, venue):
                w.write(rec)
                key = f"{rec.venue}/{rec.kind}"
                counts[key] = counts.get(key, 0) + 1
            total = w.records
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {"out": str(out), "records": total, "by_venue_kind": dict(sorted(counts.items()))}


def slice_records(recs: Iterable[Record], seconds: float) -> Iterator[Record]:
    """The first ``seconds`` of each venue's records (receive time), for small excerpts."""
    first: dict[str, int] = {}
    limit = int(seconds * 1e9)
    for rec in recs:
        t0 = first.setdefault(rec.venue, rec.ts_recv)
        if rec.ts_recv - t0 <= limit:
            yield rec


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import", help="convert public recording formats into the native format")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--venue", choices=[v.value for v in Venue], default=None)
    p.add_argument("--out", required=True, type=Path, help="new directory for the native recording")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    venue = Venue(args.venue) if args.venue else None
    try:
        summary = convert(args.format, args.files, args.out, venue)
    except BotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
