"""Convert public recording formats into the native recording format (``bot.recording``).

    python -m bot import BYBIT.jsonl.zst --out DIR                                  # --format auto (default)
    python -m bot import --format hftbacktest --venue binance_spot btcusdt_20240808.gz btcusdt_20240809.gz --out DIR
    python -m bot import --format bybit-archive --venue bybit_linear 2024-12-01_BTCUSDT_ob500.data.zip --out DIR
    python -m bot import --format binance-csv BTCUSDT_depth_snap.csv BTCUSDT_depth_update.csv --out DIR
    python -m bot import --format tardis binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz --out DIR

One module per format, each with its exact rules in its docstring:

* ``hftbacktest`` (``bot.importers.hftbacktest``): Binance raw captures, ``<local_ns> <raw>`` lines.
* ``cryptofeed`` (``bot.importers.cryptofeed``): cryptofeed v3 raw captures (Bybit and Binance), REST
  bodies included: Binance depth snapshots become ``snapshot`` records.
* ``bybit-archive`` (``bot.importers.bybit_archive``): Bybit's order-book archive, at the depth of its
  topic (``orderbook.500`` linear, ``orderbook.200`` spot, ...).
* ``binance-csv`` (``bot.importers.binance_csv``): Binance's depth CSVs (``snap``/``set`` rows) as
  synthetic venue messages; exchange time stands in for the receive time.
* ``tardis`` (``bot.importers.tardis``): tardis.dev ``incremental_book_L2`` and ``book_snapshot_N``
  CSVs as synthetic venue messages, with synthesized sequence numbers.

Raw venue text is carried over byte for byte where the source has it; formats that hold levels only get
messages in the venue's exact wire shape, so that the venue adapters and their official sync procedures
build the books (``bot.export.OfflineFeed``, replay) exactly as from a live recording.

Streaming, for the replay engine: ``iter_import(paths, fmt, venue)`` yields the records file by file, each
file in its own order (receive order for captures, exchange-time order for archives and CSVs; records are
never reordered), holding at most one message's rows in memory. ``detect_format(path)`` tells a file's
format from its first line (its name for an empty file). Nothing is dropped silently: input records that
are not imported (control records, other venues or markets) are counted by reason in ``skipped`` and in
``convert``'s summary; bad input (a malformed line, a missing column, an unknown format) raises
``RecordingError`` naming ``file:line``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from pathlib import Path

import orjson

from bot.errors import BotError, RecordingError
from bot.events import Venue
from bot.importers._text import Skipped, count, first_line, open_text
from bot.importers.binance_csv import import_binance_csv
from bot.importers.bybit_archive import import_bybit_archive
from bot.importers.cryptofeed import import_cryptofeed, url_venue
from bot.importers.hftbacktest import binance_venue_of, import_hftbacktest, stream_symbol
from bot.importers.tardis import import_tardis
from bot.recording import Record
from bot.recording_writer import RecordingWriter

FORMATS = ("hftbacktest", "cryptofeed", "bybit-archive", "binance-csv", "tardis")
AUTO = "auto"

__all__ = [
    "AUTO",
    "FORMATS",
    "binance_venue_of",
    "convert",
    "detect_format",
    "import_binance_csv",
    "import_bybit_archive",
    "import_cryptofeed",
    "import_hftbacktest",
    "import_tardis",
    "iter_import",
    "open_text",
    "plan_formats",
    "records_for",
    "register",
    "slice_records",
    "stream_symbol",
    "url_venue",
]

_CRYPTOFEED_KINDS = frozenset({"header", "http", "connect", "send", "recv"})
_HFTBACKTEST = re.compile(r"[0-9]+ [{\[]")


def detect_format(path: Path) -> str:
    """The format of ``path`` (one of ``FORMATS``), sniffed from its first line; an empty file by its name.

    Raises ``RecordingError`` naming the file when it is missing, unreadable or of no known format.
    """
    p = Path(path)
    line = first_line(p)
    fmt = _sniff(line) if line else _by_name(p.name)
    if fmt is None:
        what = f"its first line {line[:60]!r}" if line else "an empty file's name"
        raise RecordingError(f"{p}: cannot tell the format from {what}; pass --format (one of {', '.join(FORMATS)})")
    return fmt


def _sniff(line: str) -> str | None:
    if _HFTBACKTEST.match(line):
        return "hftbacktest"
    if line.startswith("{"):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if isinstance(obj, dict):
            if obj.get("t") in _CRYPTOFEED_KINDS:
                return "cryptofeed"
            if isinstance(obj.get("topic"), str) and "ts" in obj:
                return "bybit-archive"
        return None
    names = {c.strip() for c in line.split(",")}
    if {"first_update_id", "last_update_id", "update_type", "side"} <= names:
        return "binance-csv"
    if {"exchange", "symbol", "timestamp", "local_timestamp"} <= names:
        return "tardis"
    return None


def _by_name(name: str) -> str | None:
    low = name.lower()
    if "incremental_book_l2" in low or "book_snapshot_" in low:
        return "tardis"
    if re.search(r"_ob[0-9]+\.data", low):
        return "bybit-archive"
    if "depth_update" in low or "depth_snap" in low:
        return "binance-csv"
    if ".jsonl" in low:
        return "cryptofeed"
    return None


def plan_formats(paths: Sequence[Path], fmt: str | None = None) -> list[tuple[str, list[Path]]]:
    """The files as runs of one format, in the order given: ``fmt`` for all, or each file's own
    (``None`` or ``"auto"``: ``detect_format``). Raises ``RecordingError`` for an unknown format."""
    files = [Path(p) for p in paths]
    if fmt is not None and fmt != AUTO:
        _check_format(fmt)
        return [(fmt, files)] if files else []
    return [(f, [p for _, p in run]) for f, run in groupby(((detect_format(p), p) for p in files), key=lambda x: x[0])]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise RecordingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or {AUTO}")


def iter_import(
    paths: Sequence[Path], fmt: str | None = None, venue: Venue | None = None, *, skipped: Skipped | None = None
) -> Iterator[Record]:
    """The records of ``paths`` as native ``Record``s, streamed: file by file in the order given, each in its
    own order (see the module doc). ``fmt`` ``None``/``"auto"`` detects each file's format.

    ``venue`` is the venue where the format needs one (``hftbacktest`` and ``binance-csv``: Binance spot
    or USD-M, inferred when omitted; ``bybit-archive``: Bybit spot or linear), a check for ``tardis``, and
    a filter for ``cryptofeed``. Input records not imported are counted into ``skipped`` by reason.
    Formats are checked (and detected) at the call; bad input raises ``RecordingError`` while iterating.
    """
    plan = plan_formats(paths, fmt)
    for f, _ in plan:
        _check_venue(f, venue)
    return _chain(plan, venue, skipped)


def _chain(plan: list[tuple[str, list[Path]]], venue: Venue | None, skipped: Skipped | None) -> Iterator[Record]:
    for f, files in plan:
        yield from records_for(f, files, venue, skipped=skipped)


def _check_venue(fmt: str, venue: Venue | None) -> None:
    if venue is None:
        return
    binance = (Venue.BINANCE_SPOT, Venue.BINANCE_USDM)
    if fmt == "hftbacktest" and venue not in binance:
        raise RecordingError(f"hftbacktest files are Binance captures; --venue {venue} does not fit")
    if fmt == "binance-csv" and venue not in binance:
        raise RecordingError(f"binance-csv files are Binance books; --venue {venue} does not fit")
    if fmt == "bybit-archive" and venue not in (Venue.BYBIT_LINEAR, Venue.BYBIT_SPOT):
        raise RecordingError(f"bybit-archive needs --venue bybit_linear or bybit_spot, not {venue}")


def records_for(
    fmt: str, paths: Sequence[Path], venue: Venue | None, *, skipped: Skipped | None = None
) -> Iterator[Record]:
    """The records of ``paths``, all of format ``fmt`` (see ``iter_import``)."""
    _check_format(fmt)
    _check_venue(fmt, venue)
    if fmt == "hftbacktest":
        return import_hftbacktest(paths, venue)
    if fmt == "cryptofeed":
        recs = import_cryptofeed(paths, skipped=skipped)
        return recs if venue is None else _only(recs, venue, skipped)
    if fmt == "bybit-archive":
        return import_bybit_archive(paths, venue)
    if fmt == "binance-csv":
        return import_binance_csv(paths, venue)
    return import_tardis(paths, venue, skipped=skipped)


def _only(recs: Iterable[Record], venue: Venue, skipped: Skipped | None) -> Iterator[Record]:
    for rec in recs:
        if rec.venue == venue:
            yield rec
        else:
            count(skipped, f"not --venue {venue.value}: {rec.venue}/{rec.kind}")


def convert(
    fmt: str | None, paths: Sequence[Path], out: Path, venue: Venue | None = None, rotate_bytes: int = 64 << 20
) -> dict[str, object]:
    """Write a native recording to ``out``; returns a summary (records per venue and kind, input records
    skipped by reason, the format of each file).

    A conversion that imports no record at all is refused. On any error the partly written ``out`` is
    removed (if this call created it) and the error re-raised; the input files are only ever read.
    """
    out = Path(out)
    plan = plan_formats(paths, fmt)
    for f, _ in plan:
        _check_venue(f, venue)
    created = not out.exists()
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    formats = list(dict.fromkeys(f for f, _ in plan))
    meta: dict[str, object] = {"imported_from": "+".join(formats), "sources": [Path(p).name for p in paths]}
    try:
        with RecordingWriter(out, rotate_bytes=rotate_bytes, meta=meta) as w:
            for rec in _chain(plan, venue, skipped):
                w.write(rec)
                key = f"{rec.venue}/{rec.kind}"
                counts[key] = counts.get(key, 0) + 1
            total = w.records
        if not total:
            names = ", ".join(Path(p).name for p in paths) or "no files"
            raise RecordingError(f"nothing to import from {names} (skipped: {dict(sorted(skipped.items()))})")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "records": total,
        "by_venue_kind": dict(sorted(counts.items())),
        "skipped": dict(sorted(skipped.items())),
        "formats": {p.name: f for f, files in plan for p in files},
    }


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
    p.add_argument(
        "--format", default=AUTO, choices=(AUTO, *FORMATS),
        help="the files' format (default auto: detected per file from its first line)",
    )  # fmt: skip
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
