"""Reading the training data files: books CSVs and kline files -> ``LobData`` / ``KlineData`` (no samples yet).

Sources (never hand-made arrays):

* **Books**: the CSV of ``python -m bot books`` (``ts_ms,venue,symbol,bid_px_1,...``), i.e. a recording
  replayed through the bot's own venue adapters, local books and grid sampler. tabl and lobforecast.
* **Klines**: ``timestamp,open,high,low,close,volume`` files named ``SYMBOL_<n>m.csv`` (the shared Binance
  and Bybit files, or a REST backfill saved the same way), read with ``bot.klines.load_kline_csv``. Per
  symbol the finest file is the base; coarser scales are built from it by ``bot.klines.resample`` (closed,
  complete buckets only), as the live ``Resampler`` does. multiscale and crossasset.

``load_data`` takes the ``--data`` values and picks the loader by what the files hold. Every file read is
fingerprinted (name, sha256, size) in ``sources``, which a checkpoint records. The samples are made from
these by ``models.samples.collect`` and ``models.datasets`` (splits, statistics, labels).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import BotError, ConfigError, DataIntegrityError
from bot.events import KlineClosed, Venue
from bot.klines import load_kline_csv, resample
from bot.ring import lob_columns
from models.inputs import NS_PER_MS

__all__ = [
    "DatasetError",
    "KlineData",
    "LobData",
    "load_books_csv",
    "load_data",
    "load_kline_csv_header",
    "load_klines",
]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


class DatasetError(BotError):
    """Data that cannot make a dataset: wrong file, unknown instrument, too few samples."""


@dataclass(frozen=True)
class LobData:
    """Grid-sampled books from ``python -m bot books`` CSVs: (venue, symbol) -> (times ns, rows (N, 4L))."""

    interval_ms: int
    levels: int
    books: dict[tuple[str, str], tuple[I64, F64]]
    sources: list[dict[str, Any]]

    kind = "lob"


@dataclass(frozen=True)
class KlineData:
    """Closed bars of one venue: symbol -> base bars (the finest interval found), sorted by open time."""

    venue: str
    base_interval_s: int
    bars: dict[str, list[KlineClosed]]
    sources: list[dict[str, Any]]

    kind = "klines"

    def arrays(self, symbol: str, interval_s: int) -> tuple[I64, F64]:
        """(open_time_ms, ohlcv) of ``symbol`` at ``interval_s``: the base bars or complete resampled ones."""
        if symbol not in self.bars:
            raise DatasetError(f"no klines for {symbol} in the data (have {sorted(self.bars)})")
        if interval_s % self.base_interval_s:
            raise DatasetError(f"interval {interval_s}s is not a multiple of the data's {self.base_interval_s}s bars")
        bars = self.bars[symbol]
        if interval_s != self.base_interval_s:
            span_ms = interval_s * 1000
            first = next((i for i, b in enumerate(bars) if b.open_time_ms % span_ms == 0), len(bars))
            bars = resample(bars[first:], interval_s, base_s=self.base_interval_s)  # complete buckets only
        opens = np.array([b.open_time_ms for b in bars], dtype=np.int64)
        ohlcv = np.array([(b.open, b.high, b.low, b.close, b.volume) for b in bars], dtype=np.float64)
        return opens, ohlcv.reshape(-1, 5)


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return {"name": path.name, "sha256_16": digest, "bytes": path.stat().st_size}


def load_books_csv(paths: Sequence[Path | str]) -> LobData:
    """Read one or more books CSVs (same grid and levels); books are keyed (venue, symbol)."""
    books: dict[tuple[str, str], tuple[I64, F64]] = {}
    interval_ms = levels = None
    sources = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DatasetError(f"books file not found: {p}")
        with p.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            n_lv = (len(header) - 3) // 4
            if header[:3] != ["ts_ms", "venue", "symbol"] or n_lv < 1 or header[3:] != lob_columns(n_lv):
                raise DatasetError(f"{p}: not a `python -m bot books` CSV (header {header[:5]}...)")
            per: dict[tuple[str, str], tuple[list[int], list[list[float]]]] = {}
            for row in reader:
                if len(row) != len(header):
                    raise DatasetError(f"{p}:{reader.line_num}: expected {len(header)} fields, got {len(row)}")
                try:
                    t = int(row[0])
                    vals = [float(x) if x else np.nan for x in row[3:]]
                except ValueError:
                    raise DatasetError(f"{p}:{reader.line_num}: bad number in {row[:4]}...") from None
                ts, rows = per.setdefault((row[1], row[2]), ([], []))
                ts.append(t)
                rows.append(vals)
        for key, (ts, rows) in per.items():
            if key in books:
                raise DatasetError(f"{p}: book {key} also appears in another --data file")
            t_ms = np.array(ts, dtype=np.int64)
            if np.any(np.diff(t_ms) <= 0):
                raise DatasetError(f"{p}: rows of {key} are not strictly increasing in time")
            books[key] = (t_ms * NS_PER_MS, np.array(rows, dtype=np.float64))
            step = int(np.min(np.diff(t_ms))) if len(t_ms) > 1 else None
            if step is not None:
                if interval_ms not in (None, step):
                    raise DatasetError(f"{p}: {key} has a {step} ms grid, other books {interval_ms} ms")
                interval_ms = step
        if levels not in (None, n_lv):
            raise DatasetError(f"{p}: {n_lv} levels, other files {levels}")
        levels = n_lv
        sources.append(_fingerprint(p))
    if not books or interval_ms is None or levels is None:
        raise DatasetError(f"no book rows in {[str(p) for p in paths]}")
    for key, (t_ns, _) in books.items():
        if np.any(t_ns % (interval_ms * NS_PER_MS)):
            raise DatasetError(f"{key}: times are not on a {interval_ms} ms grid")
    return LobData(interval_ms=interval_ms, levels=levels, books=books, sources=sources)


def load_klines(paths: Sequence[Path | str], venue: str) -> KlineData:
    """Kline CSVs (files or directories of ``SYMBOL_<n>m.csv``); per symbol the finest interval is kept."""
    try:
        v = Venue(venue)
    except ValueError:
        raise DatasetError(f"unknown venue {venue!r}; known: {[x.value for x in Venue]}") from None
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.glob("*.csv") if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"kline data not found: {p}")
    finest: dict[str, tuple[int, Path]] = {}
    for f in files:
        try:
            head = load_kline_csv_header(f)
        except (ConfigError, DataIntegrityError) as e:
            raise DatasetError(str(e)) from e
        if head is None:
            continue
        symbol, iv = head
        if symbol not in finest or iv < finest[symbol][0]:
            finest[symbol] = (iv, f)
    if not finest:
        raise DatasetError(f"no SYMBOL_<n>m.csv kline files in {[str(p) for p in paths]}")
    intervals = {iv for iv, _ in finest.values()}
    if len(intervals) != 1:
        raise DatasetError(f"symbols have different finest intervals {sorted(intervals)}: pass files of one interval")
    base = intervals.pop()
    bars: dict[str, list[KlineClosed]] = {}
    sources = []
    for symbol, (_, f) in sorted(finest.items()):
        try:
            bars[symbol] = load_kline_csv(f, venue=v, symbol=symbol, interval_s=base)
        except (ConfigError, DataIntegrityError) as e:
            raise DatasetError(str(e)) from e
        sources.append(_fingerprint(f))
    return KlineData(venue=v.value, base_interval_s=base, bars=bars, sources=sources)


def load_kline_csv_header(path: Path) -> tuple[str, int] | None:
    """(symbol, interval_s) from a kline file's name, or None when the name is not SYMBOL_<n><m|h|d>."""
    stem = path.stem
    if "_" not in stem:
        return None
    symbol, _, res = stem.rpartition("_")
    units = {"m": 60, "h": 3600, "d": 86400}
    if not symbol.isalnum() or len(res) < 2 or not res[:-1].isdigit() or res[-1] not in units:
        return None
    return symbol.upper(), int(res[:-1]) * units[res[-1]]


def load_data(items: Sequence[str], venue: str | None = None) -> LobData | KlineData:
    """``--data`` values: books CSVs, or kline files/directories of one venue (``VENUE=PATH``; ``venue`` names
    the venue of those given without one)."""
    if not items:
        raise DatasetError("no --data given")
    paths: list[Path] = []
    venues = set()
    for item in items:
        v, sep, p = item.partition("=")
        if sep:
            venues.add(v)
            paths.append(Path(p))
        else:
            paths.append(Path(item))
            if venue:  # the fallback venue names only the files given without one
                venues.add(venue)
    kinds = {_kind(p) for p in paths}
    if len(kinds) != 1:
        raise DatasetError("--data mixes books CSVs and kline files; train on one kind at a time")
    if kinds == {"lob"}:
        return load_books_csv(paths)
    if len(venues) != 1:
        raise DatasetError("kline files do not say which venue they come from: pass --venue binance_spot "
                           f"(or VENUE=PATH); got {sorted(venues) or 'none'}")
    return load_klines(paths, venues.pop())


def _kind(p: Path) -> str:
    if p.is_dir():
        return "klines"
    if not p.is_file():
        raise DatasetError(f"--data: {p} not found")
    with p.open(newline="") as fh:
        first = fh.readline()
    return "lob" if first.startswith("ts_ms,venue,symbol") else "klines"
