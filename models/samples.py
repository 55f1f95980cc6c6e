"""Raw samples: every usable sample time of the data with its un-normalised input and continuous labels.

How a sample is made (``collect``): a sample is a time t: a grid time of the target book, or the close of a
bar. Its input is ``models.inputs.raw_input(spec, ArrayWindowSource(...).at(t), ...)``: the source shows
only rows stamped <= t and bars closed by t, so a feature cannot see the future. Its label reads only rows
after t (the mid or close h steps later, at exactly t + h steps: a gap drops the sample). Samples whose
window or label is incomplete are dropped, never padded.

Per family: ``_collect_tabl`` / ``_collect_lobf`` on books (``models.loaders.LobData``),
``_collect_multiscale`` / ``_collect_crossasset`` on klines (``models.loaders.KlineData``). The result
(``Collected``) has no statistics fitted yet: ``models.datasets`` splits it by time, fits the normalisation
and label thresholds on the training span and finalizes it into a ``SampleSet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.inputs import NS_PER_MS, ArrayWindowSource, InputSpec, Raw, _levels, lob_relative, raw_input
from models.loaders import DatasetError, KlineData, LobData

__all__ = ["Collected", "collect"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


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
    t, idx, raw = _samples(spec, src, ret, times, range(spec["window"] - 1, len(times), stride), venue, symbol)
    return Collected(
        times_ns=t, label_end_ns=t + int(horizons.max()) * step, raw=raw,
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
    t, idx, raw = _samples(spec, src, ret, closes_ns, range(0, len(opens), stride), data.venue, symbol)
    return Collected(
        times_ns=t, label_end_ns=t + int(horizons.max()) * step, raw=raw,
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
    t, idx, raw = _samples(spec, src, ret, closes_ns, range(0, len(common), stride), data.venue, assets[0])
    return Collected(
        times_ns=t, label_end_ns=t + h * step, raw=raw, targets={"ret": ret[idx]},
        past={"ret": ret_past[idx]}, venue=data.venue, symbol=",".join(assets),
    )  # fmt: skip


def _samples(
    spec: InputSpec, src: ArrayWindowSource, ret: F64, times: NDArray[np.int64], rows: range, venue: str, symbol: str
) -> tuple[NDArray[np.int64], NDArray[np.int64], Raw]:
    """The rows among ``rows`` whose labels ``ret`` are all finite and whose input window at ``times[i]`` is
    complete: their times, their row indices and their raw inputs stacked."""
    keep_raw, keep_i = [], []
    for i in rows:
        if not np.all(np.isfinite(ret[i])):
            continue
        raw = raw_input(spec, src.at(int(times[i])), venue=venue, symbol=symbol)
        if raw is not None:
            keep_raw.append(raw)
            keep_i.append(i)
    idx = np.asarray(keep_i, dtype=np.int64)
    return np.asarray(times[idx], dtype=np.int64), idx, _stack(keep_raw, spec)


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
