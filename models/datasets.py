"""Training samples from real data, built through ``models.inputs`` so that training and serving agree.

Sources (never hand-made arrays):

* **Books**: the CSV of ``python -m bot books`` (``ts_ms,venue,symbol,bid_px_1,...``), i.e. a recording
  replayed through the bot's own venue adapters, local books and grid sampler. tabl and lobforecast.
* **Klines**: ``timestamp,open,high,low,close,volume`` files named ``SYMBOL_<n>m.csv`` (the shared Binance
  and Bybit files, or a REST backfill saved the same way), read with ``bot.klines.load_kline_csv``. Per
  symbol the finest file is the base; coarser scales are built from it by ``bot.klines.resample`` (closed,
  complete buckets only), as the live ``Resampler`` does. multiscale and crossasset.

How a sample is made (``collect``): a sample is a time t: a grid time of the target book, or the close of a
bar. Its input is ``models.inputs.raw_input(spec, ArrayWindowSource(...).at(t), ...)``: the source shows
only rows stamped <= t and bars closed by t, so a feature cannot see the future. Its label reads only rows
after t (the mid or close h steps later, at exactly t + h steps: a gap drops the sample). Samples whose
window or label is incomplete are dropped, never padded.

Splits are by time (``split_by_time``): the first 60% of samples train, the next 20% validate (early
stopping), the last 20% test, and a sample whose label reaches the start of the next span is purged, so
nothing fitted on the training span reads a value stamped at or after the first validation sample.
``fit_spec`` then freezes the normalisation statistics and the
label thresholds/scales from the training samples only, and ``finalize`` normalises every sample with
``models.inputs.apply_norm``: the function ``build_input`` ends with.

Normalisation: per feature ``z = clip((x - mean) / scale, -10, 10)``. ``scale`` is the training span's
std, floored in the feature's own units (``_mean_std``): at least ``STD_REL_FLOOR`` (a tenth) of the
feature's mean absolute value. Without the floor, a feature that hardly moves while the model trains turns
the first ordinary value outside its narrow range into an enormous z-score: the spread of Binance spot
BTCUSDT is one tick (0.0016 bps of the mid) in every training row of the demo recording, std 1.2e-6 bps,
so a two-tick spread would be z = 1,400 and the 337-tick spread in its validation span was z = 460,000
(a validation cross-entropy of 1,264; that was the exchange-time grid of the export then: on the receive-time
grid the widest, 180 ticks, falls in the test span, z = 245,000). The clip bound (``NORM_CLIP``, stored in the spec as
``norm["clip"]``) catches what the floor cannot: that book, heavy tails, a regime the training span never
saw. Both apply to every family, in training exactly as in serving.

Labels (3 classes down/stationary/up, ``models.inputs.CLASSES``): r = mid[t+h] / mid[t] - 1 (books) or
log(close[t+h] / close[t]) (klines); up if r > θ, down if r < -θ, else stationary. θ defaults to the
1/3-quantile of |r| over the training span, which makes roughly a third of the training labels stationary
and is stored in the spec. Regression targets are r divided by its training-span standard deviation.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bot.errors import BotError, ConfigError, DataIntegrityError
from bot.events import KlineClosed, Venue
from bot.klines import load_kline_csv, resample
from bot.ring import lob_columns
from models.inputs import (
    NS_PER_MS,
    ArrayWindowSource,
    InputSpec,
    Raw,
    _levels,
    _price_mask,
    _target_block,
    apply_norm,
    lob_relative,
    raw_input,
    to_tensor,
)

__all__ = [
    "DatasetError",
    "KlineData",
    "LobData",
    "SampleSet",
    "build_samples",
    "collect",
    "finalize",
    "fit_spec",
    "load_books_csv",
    "load_data",
    "load_klines",
    "split_by_time",
]

TRAIN, VAL, TEST, PURGED = 0, 1, 2, -1
STATIONARY_QUANTILE = 1.0 / 3.0
# Normalisation (``_mean_std``, ``models.inputs.apply_norm``): the scale of a feature is at least a tenth of
# its typical magnitude (mean |x| over the training span), normalised values are clipped to +-NORM_CLIP.
STD_REL_FLOOR = 0.1
STD_ABS_FLOOR = 1e-8  # below this a feature has no usable scale at all (it was ~exactly 0): scale 1
NORM_CLIP = 10.0

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


class DatasetError(BotError):
    """Data that cannot make a dataset: wrong file, unknown instrument, too few samples."""


# -- loading ------------------------------------------------------------------------------------------


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


# -- samples ------------------------------------------------------------------------------------------


@dataclass
class Collected:
    """Raw (un-normalised) samples with their continuous labels, before any statistics are fitted."""

    times_ns: I64  # (N,) the sample times: the input's newest row or bar close
    label_end_ns: I64  # (N,) the latest time any label of the sample reads
    raw: Raw  # stacked raw_input() results: (N, ...) or {scale: (N, ...)}
    targets: dict[str, F64]  # continuous labels (see collect)
    past: dict[str, NDArray[Any]]  # the same quantity over the h steps BEFORE t (persistence); NaN if unknown
    venue: str
    symbol: str


@dataclass
class SampleSet:
    """Normalised samples ready for a model, with their split and labels."""

    spec: InputSpec
    times_ns: I64
    label_end_ns: I64
    x: torch.Tensor | dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    past: dict[str, NDArray[Any]]
    split: NDArray[np.int8]
    venue: str
    symbol: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_ns)

    def select(self, mask: NDArray[np.bool_] | NDArray[np.int64]) -> SampleSet:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        ti = torch.from_numpy(idx)
        return replace(
            self,
            times_ns=self.times_ns[idx],
            label_end_ns=self.label_end_ns[idx],
            x=index_x(self.x, ti),
            y={k: v[ti] for k, v in self.y.items()},
            past={k: v[idx] for k, v in self.past.items()},
            split=self.split[idx],
        )

    def part(self, which: int) -> SampleSet:
        return self.select(self.split == which)


def index_x(x: torch.Tensor | dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


def collect(spec: InputSpec, data: LobData | KlineData, *, target: str | None = None, stride: int = 1) -> Collected:
    """Every usable sample of ``data`` for ``spec`` (every ``stride``-th candidate time), un-normalised.

    ``target``: "VENUE:SYMBOL" (books) or "SYMBOL" (klines) of the instrument predicted; default the
    spec's. Continuous labels in ``targets``: tabl "ret" (N, H) mid returns; multiscale "ret" (N, R) and
    "ret_dir" (N,) log returns; crossasset "ret" (N, A) log returns; lobforecast "book" (N, H, 4L) target
    rows as bps from the mid at t / log1p sizes, and "mid_now" (N,).
    """
    if stride < 1:
        raise DatasetError(f"stride must be >= 1, got {stride}")
    family = spec["family"]
    if family in ("tabl", "lobforecast"):
        if not isinstance(data, LobData):
            raise DatasetError(f"{family} trains on books CSVs from `python -m bot books`, not kline files")
        if data.levels < spec["levels"]:
            raise DatasetError(f"the books have {data.levels} levels; the spec reads {spec['levels']}")
        if data.interval_ms != spec["interval_ms"]:
            raise DatasetError(f"the books are on a {data.interval_ms} ms grid; "
                               f"the spec expects {spec['interval_ms']} ms")
        return _collect_tabl(spec, data, target, stride) if family == "tabl" else _collect_lobf(spec, data, stride)
    if not isinstance(data, KlineData):
        raise DatasetError(f"{family} trains on kline files, not books CSVs")
    if family == "multiscale":
        return _collect_multiscale(spec, data, target, stride)
    return _collect_crossasset(spec, data, stride)


def _instrument(spec: InputSpec, target: str | None) -> tuple[str, str]:
    if target is None:
        return spec["venue"], spec["symbol"]
    venue, sep, symbol = target.partition(":")
    if not sep:
        raise DatasetError(f"target {target!r}: expected VENUE:SYMBOL, e.g. binance_spot:BTCUSDT")
    return venue, symbol.upper()


def _collect_tabl(spec: InputSpec, data: LobData, target: str | None, stride: int) -> Collected:
    venue, symbol = _instrument(spec, target)
    if (venue, symbol) not in data.books:
        raise DatasetError(f"no book {venue}:{symbol} in the data (have {[f'{v}:{s}' for v, s in data.books]})")
    times, rows = data.books[(venue, symbol)]
    src = ArrayWindowSource(lob={(venue, symbol, spec["grid"]): (times, rows)})
    n_lv = rows.shape[1] // 4
    mid = 0.5 * (rows[:, 0] + rows[:, 2 * n_lv])
    step = spec["interval_ms"] * NS_PER_MS
    horizons = np.asarray(spec["labels"]["horizons"], dtype=np.int64)
    fut = _at_times(times, mid, times[:, None] + horizons * step)  # (N, H)
    past = _at_times(times, mid, times[:, None] - horizons * step)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret, ret_past = fut / mid[:, None] - 1.0, mid[:, None] / past - 1.0
    keep_t, keep_raw, keep_i = [], [], []
    for i in range(spec["window"] - 1, len(times), stride):
        if not np.all(np.isfinite(ret[i])):
            continue
        raw = raw_input(spec, src.at(int(times[i])), venue=venue, symbol=symbol)
        if raw is not None:
            keep_t.append(times[i])
            keep_raw.append(raw)
            keep_i.append(i)
    idx = np.asarray(keep_i, dtype=np.int64)
    t = np.asarray(keep_t, dtype=np.int64)
    return Collected(
        times_ns=t, label_end_ns=t + int(horizons.max()) * step, raw=_stack(keep_raw, spec),
        targets={"ret": ret[idx]}, past={"ret": ret_past[idx]}, venue=venue, symbol=symbol,
    )  # fmt: skip


def _collect_lobf(spec: InputSpec, data: LobData, stride: int) -> Collected:
    venue, symbol = spec["target"]
    lob = {}
    for v in spec["venues"]:
        for p in spec["pairs"]:
            if (v, p) not in data.books:
                raise DatasetError(f"lobforecast reads {v}:{p}, which is not in the data")
            lob[(v, p, spec["grid"])] = data.books[(v, p)]
    src = ArrayWindowSource(lob=lob)
    times, rows = data.books[(venue, symbol)]
    levels = spec["levels"]
    n_lv = rows.shape[1] // 4
    step = spec["interval_ms"] * NS_PER_MS
    horizons = np.asarray(spec["labels"]["horizons"], dtype=np.int64)
    keep_t, keep_raw, books, mids = [], [], [], []
    for i in range(spec["window"] - 1, len(times), stride):
        t = int(times[i])
        j = np.searchsorted(times, t + horizons * step)
        if j[-1] >= len(times) or not np.array_equal(times[j], t + horizons * step):
            continue
        mid_now = 0.5 * (rows[i, 0] + rows[i, 2 * n_lv])
        future = lob_relative(_levels(rows[j], levels), levels, mid_ref=mid_now)
        if future is None or not np.all(np.isfinite(future)):
            continue
        raw = raw_input(spec, src.at(t), venue=venue, symbol=symbol)
        if raw is not None:
            keep_t.append(t)
            keep_raw.append(raw)
            books.append(future)
            mids.append(mid_now)
    t_arr = np.asarray(keep_t, dtype=np.int64)
    return Collected(
        times_ns=t_arr, label_end_ns=t_arr + int(horizons.max()) * step, raw=_stack(keep_raw, spec),
        targets={"book": np.asarray(books).reshape(-1, len(horizons), 4 * levels), "mid_now": np.asarray(mids)},
        past={}, venue=venue, symbol=symbol,
    )  # fmt: skip


def _kline_source(data: KlineData, symbols: Sequence[str], intervals: Sequence[int]) -> ArrayWindowSource:
    return ArrayWindowSource(klines={(data.venue, s, iv): data.arrays(s, iv) for s in symbols for iv in set(intervals)})


def _collect_multiscale(spec: InputSpec, data: KlineData, target: str | None, stride: int) -> Collected:
    symbol = (target or spec["symbol"]).upper().rpartition(":")[2]
    src = _kline_source(data, [symbol], spec["intervals_s"])
    iv = spec["intervals_s"][0]  # labels and sample times on the first (finest) scale's bars
    opens, bars = data.arrays(symbol, iv)
    close = bars[:, 3]
    step = iv * 1000 * NS_PER_MS
    closes_ns = (opens + iv * 1000) * NS_PER_MS  # a bar's close: when it becomes visible
    lab = spec["labels"]
    horizons = np.asarray([*lab["return_horizons"], lab["direction_horizon"]], dtype=np.int64)
    fut = _at_times(closes_ns, close, closes_ns[:, None] + horizons * step)
    past = _at_times(closes_ns, close, closes_ns[:, None] - horizons * step)
    ret, ret_past = np.log(fut / close[:, None]), np.log(close[:, None] / past)
    keep_t, keep_raw, keep_i = [], [], []
    for i in range(0, len(opens), stride):
        if not np.all(np.isfinite(ret[i])):
            continue
        raw = raw_input(spec, src.at(int(closes_ns[i])), venue=data.venue, symbol=symbol)
        if raw is not None:
            keep_t.append(closes_ns[i])
            keep_raw.append(raw)
            keep_i.append(i)
    idx = np.asarray(keep_i, dtype=np.int64)
    t = np.asarray(keep_t, dtype=np.int64)
    return Collected(
        times_ns=t, label_end_ns=t + int(horizons.max()) * step, raw=_stack(keep_raw, spec),
        targets={"ret": ret[idx, :-1], "ret_dir": ret[idx, -1]},
        past={"ret": ret_past[idx, :-1], "ret_dir": ret_past[idx, -1]}, venue=data.venue, symbol=symbol,
    )  # fmt: skip


def _collect_crossasset(spec: InputSpec, data: KlineData, stride: int) -> Collected:
    assets, iv, h = spec["assets"], spec["interval_s"], spec["labels"]["horizon"]
    missing = [a for a in assets if a not in data.bars]
    if missing:
        raise DatasetError(f"crossasset reads {assets}; the data lacks {missing}")
    src = _kline_source(data, assets, [iv])
    series = [data.arrays(a, iv) for a in assets]
    common = series[0][0]
    for opens, _ in series[1:]:
        common = np.intersect1d(common, opens)
    step = iv * 1000 * NS_PER_MS
    closes_ns = (common + iv * 1000) * NS_PER_MS
    ret = np.empty((len(common), len(assets)))
    ret_past = np.empty_like(ret)
    for a, (opens, bars) in enumerate(series):
        c_ns = (opens + iv * 1000) * NS_PER_MS
        now = _at_times(c_ns, bars[:, 3], closes_ns)
        ret[:, a] = np.log(_at_times(c_ns, bars[:, 3], closes_ns + h * step) / now)
        ret_past[:, a] = np.log(now / _at_times(c_ns, bars[:, 3], closes_ns - h * step))
    keep_t, keep_raw, keep_i = [], [], []
    for i in range(0, len(common), stride):
        if not np.all(np.isfinite(ret[i])):
            continue
        raw = raw_input(spec, src.at(int(closes_ns[i])), venue=data.venue, symbol=assets[0])
        if raw is not None:
            keep_t.append(closes_ns[i])
            keep_raw.append(raw)
            keep_i.append(i)
    idx = np.asarray(keep_i, dtype=np.int64)
    t = np.asarray(keep_t, dtype=np.int64)
    return Collected(
        times_ns=t, label_end_ns=t + h * step, raw=_stack(keep_raw, spec), targets={"ret": ret[idx]},
        past={"ret": ret_past[idx]}, venue=data.venue, symbol=",".join(assets),
    )  # fmt: skip


def _at_times(times: I64, values: F64, query: NDArray[np.int64]) -> F64:
    """``values`` at exactly the ``query`` times (any shape); NaN where no row has that time."""
    q = np.asarray(query, dtype=np.int64)
    j = np.clip(np.searchsorted(times, q), 0, len(times) - 1)
    out = values[j].astype(np.float64)
    out[times[j] != q] = np.nan
    return out


def _stack(raws: list[Raw], spec: InputSpec) -> Raw:
    if not raws:
        raise DatasetError("the data yields no complete sample (too short for the window and horizons?)")
    if isinstance(raws[0], dict):
        return {s: np.stack([r[s] for r in raws if isinstance(r, dict)]) for s in spec["scales"]}
    return np.stack(raws)  # type: ignore[arg-type]


# -- splits, statistics, labels ------------------------------------------------------------------------


def split_by_time(c: Collected, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> NDArray[np.int8]:
    """TRAIN / VAL / TEST by sample order (time), PURGED where a label reaches into the next span."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DatasetError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(c.times_ns)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    split = np.full(n, TEST, dtype=np.int8)
    split[:n_train] = TRAIN
    split[n_train : n_train + n_val] = VAL
    for span, nxt in ((TRAIN, n_train), (VAL, n_train + n_val)):
        if nxt < n:
            start = c.times_ns[nxt]
            split[(split == span) & (c.label_end_ns >= start)] = PURGED  # strict: no shared row either
    return split


def fit_spec(
    spec: InputSpec, c: Collected, train: NDArray[np.bool_], *, threshold_bps: float | None = None
) -> InputSpec:
    """A copy of ``spec`` with ``norm`` and the label thresholds/scales fitted on the ``train`` samples only.

    ``threshold_bps``: a fixed class threshold in basis points instead of the 1/3 quantile of |r|.
    """
    if not np.any(train):
        raise DatasetError("no training samples: the data is too short for this window and horizon")
    out = {**spec, "labels": dict(spec["labels"])}
    out["norm"] = _fit_norm(spec, _select_raw(c.raw, train))
    family = spec["family"]
    lab = out["labels"]
    if family == "tabl":
        lab["thresholds"] = [_threshold(c.targets["ret"][train, k], threshold_bps) for k in range(len(lab["horizons"]))]
    elif family == "multiscale":
        lab["return_scale"] = [_scale(c.targets["ret"][train, k]) for k in range(len(lab["return_horizons"]))]
        lab["threshold"] = _threshold(c.targets["ret_dir"][train], threshold_bps)
    elif family == "crossasset":
        ret = c.targets["ret"][train]
        lab["return_scale"] = [_scale(ret[:, a]) for a in range(ret.shape[1])]
        lab["thresholds"] = [_threshold(ret[:, a], threshold_bps) for a in range(ret.shape[1])]
    return out


def _threshold(r: F64, bps: float | None) -> float:
    if bps is not None:
        return float(bps) * 1e-4
    return float(np.quantile(np.abs(r), STATIONARY_QUANTILE))


def _scale(r: F64) -> float:
    s = float(np.std(r))
    return s if s > 0 else 1.0


def _select_raw(raw: Raw, mask: NDArray[np.bool_]) -> Raw:
    return {k: v[mask] for k, v in raw.items()} if isinstance(raw, dict) else raw[mask]


def _mean_std(x: NDArray[Any], axes: tuple[int, ...], rel_floor: float | F64 = STD_REL_FLOOR) -> tuple[F64, F64]:
    """Per-feature mean and scale over ``axes`` (NaN ignored): the one place normalisation is fitted.

    ``scale = max(std, rel_floor * mean|x|)``, i.e. a change of a tenth of what the feature typically is
    counts as at most one unit. That floor is in the feature's own units (bps, log sizes, RSI points), so
    it bites only where the std says "constant" but the values say "not zero": the one-tick spread
    (mean 0.0016 bps, std 1.2e-6 bps: a two-tick spread becomes z = 10 instead of 1,400), a resting size
    that never changed. Features that really vary keep their std: in the shipped checkpoints' training
    spans every book and kline feature has std >= 0.17 mean|x| (RSI, the closest: 0.18 to 0.23).
    ``rel_floor`` may be per feature: 0 for a price level (raw-price mode), whose |mean| says where the
    market is, not how far it moves. A scale still below ``STD_ABS_FLOOR`` (the feature was ~exactly 0,
    or all NaN, in the whole training span: nothing says what its units are) is 1, as it always was.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature: NaN statistics, handled below
        mean = np.nanmean(x, axis=axes)
        std = np.nanstd(x, axis=axes)
        magnitude = np.nanmean(np.abs(x), axis=axes)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.fmax(np.where(np.isfinite(std), std, 0.0), np.asarray(rel_floor) * np.nan_to_num(magnitude))
    scale = np.where(scale >= STD_ABS_FLOOR, scale, 1.0)
    return mean, scale


def _fit_norm(spec: InputSpec, raw: Raw) -> dict[str, Any]:
    norm = _fit_mean_std(spec, raw)
    norm["clip"] = NORM_CLIP
    return norm


def _fit_mean_std(spec: InputSpec, raw: Raw) -> dict[str, Any]:
    family = spec["family"]
    if isinstance(raw, dict):  # multiscale: (N, T_s, F) per scale -> (F,) per scale
        stats = [_mean_std(raw[s], (0, 1)) for s in spec["scales"]]
        return {"mean": [m.tolist() for m, _ in stats], "std": [s.tolist() for _, s in stats]}
    if family == "crossasset":  # (N, A, T, F) -> (A, F)
        mean, std = _mean_std(raw, (0, 2))
        return {"mean": mean.tolist(), "std": std.tolist()}
    if family == "tabl":  # (N, T, D) -> (D,)
        rel = np.full(raw.shape[-1], STD_REL_FLOOR)
        if spec.get("price_mode") == "raw":  # price levels and the raw mid: location, not magnitude
            levels = spec["levels"]
            rel[: 4 * levels][_price_mask(levels)] = 0.0
            if "mid" in spec["extras"]:
                rel[4 * levels + list(spec["extras"]).index("mid")] = 0.0
        mean, std = _mean_std(raw, (0, 1), rel)
        return {"mean": mean.tolist(), "std": std.tolist()}
    # lobforecast (N, T, F): sizes per column; prices of a book share one scale around 0 (bps from mid), so
    # the map stays increasing and identical for every price column (the structural regulariser needs it).
    width = 4 * spec["levels"]
    mean, std = _mean_std(raw, (0, 1))
    px = _price_mask(spec["levels"])
    for b in range(raw.shape[2] // width):
        cols = slice(b * width, (b + 1) * width)
        prices = raw[:, :, cols][:, :, px]
        rms = float(np.sqrt(np.nanmean(prices**2))) if np.isfinite(prices).any() else 1.0
        mean[cols][px] = 0.0
        std[cols][px] = rms if rms >= STD_ABS_FLOOR else 1.0  # an RMS is a magnitude: no relative floor
    return {"mean": mean.tolist(), "std": std.tolist()}


def finalize(spec: InputSpec, c: Collected, split: NDArray[np.int8] | None = None) -> SampleSet:
    """Normalise with ``spec``'s frozen statistics (the ``build_input`` code) and make the model's targets."""
    x = to_tensor(spec, apply_norm(spec, c.raw))
    family = spec["family"]
    lab = spec["labels"]
    y: dict[str, torch.Tensor] = {}
    past: dict[str, NDArray[Any]] = {}
    if family == "tabl":
        th = np.asarray(lab["thresholds"])
        y["direction"] = torch.from_numpy(classify(c.targets["ret"], th))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        past["direction"] = classify(c.past["ret"], th)
    elif family == "multiscale":
        scale = np.asarray(lab["return_scale"])
        y["returns"] = torch.from_numpy((c.targets["ret"] / scale).astype(np.float32))
        y["direction"] = torch.from_numpy(classify(c.targets["ret_dir"], lab["threshold"]))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        y["ret_dir"] = torch.from_numpy(c.targets["ret_dir"])
        past["direction"] = classify(c.past["ret_dir"], lab["threshold"])
        past["ret"] = c.past["ret"]
    elif family == "crossasset":
        scale, th = np.asarray(lab["return_scale"]), np.asarray(lab["thresholds"])
        y["returns"] = torch.from_numpy((c.targets["ret"] / scale).astype(np.float32))
        y["direction"] = torch.from_numpy(classify(c.targets["ret"], th))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        past["direction"] = classify(c.past["ret"], th)
        past["ret"] = c.past["ret"]
    else:
        t0 = _target_block(spec) * 4 * spec["levels"]
        width = 4 * spec["levels"]
        mean = np.asarray(spec["norm"]["mean"][t0 : t0 + width])
        std = np.asarray(spec["norm"]["std"][t0 : t0 + width])
        y["book"] = torch.from_numpy(((c.targets["book"] - mean) / std).astype(np.float32))
        y["mid_now"] = torch.from_numpy(c.targets["mid_now"])
        # persistence (the current target book) in the labels' space: normalised like them, NOT clipped
        now = np.asarray(c.raw)[:, -1, t0 : t0 + width]
        past["book"] = ((now - mean) / std).astype(np.float32)
    n = len(c.times_ns)
    return SampleSet(
        spec=spec, times_ns=c.times_ns, label_end_ns=c.label_end_ns, x=x, y=y, past=past,
        split=np.full(n, TEST, dtype=np.int8) if split is None else split, venue=c.venue, symbol=c.symbol,
    )  # fmt: skip


def classify(r: NDArray[Any], threshold: float | NDArray[Any]) -> NDArray[np.int64]:
    """0 down (r < -θ), 1 stationary, 2 up (r > θ); -1 where r is NaN (unknown)."""
    r = np.asarray(r, dtype=np.float64)
    th = np.asarray(threshold, dtype=np.float64)
    out = np.ones(r.shape, dtype=np.int64)
    out[r > th] = 2
    out[r < -th] = 0
    out[~np.isfinite(r)] = -1
    return out


def build_samples(
    spec: InputSpec,
    data: LobData | KlineData,
    *,
    target: str | None = None,
    stride: int = 1,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    threshold_bps: float | None = None,
) -> SampleSet:
    """collect -> split by time -> fit statistics on the training span -> finalize (training)."""
    c = collect(spec, data, target=target, stride=stride)
    split = split_by_time(c, fractions)
    fitted = fit_spec(spec, c, split == TRAIN, threshold_bps=threshold_bps)
    s = finalize(fitted, c, split)
    s.info = {"sources": data.sources, "stride": stride, "fractions": list(fractions)}
    return s
