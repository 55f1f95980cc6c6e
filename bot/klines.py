"""Closed candles: a bounded store per (venue, symbol, interval), resampling 1m up, and the CSV loader.

``KlineStore`` keeps a ``Ring`` of [open, high, low, close, volume] per (venue, symbol, interval_s), each
row stamped with the bar's open time in ms. Bars are kept sorted by open time: a live bar appends, a bar
with an open time already present replaces that row (and only that row), and an older bar from a REST
backfill is merged into its place. Missing bars are not invented: a gap shows in ``times()``.

``Resampler`` builds 5m/15m/1h bars from closed 1m bars with no look-ahead:

* buckets are aligned to UTC epoch multiples of the target interval (as Binance and Bybit align theirs);
* a bucket is emitted when its LAST 1m bar (open time = bucket end - 1m) arrives closed, never from a
  still-open candle, with ``ts_event`` = bucket close and ``source="resampled"``;
* a bucket with missing 1m bars is INCOMPLETE and, by default, not emitted at all (counted in
  ``incomplete``). Such a bar would differ from the venue's own (a missing minute may hold the high),
  and a plausible wrong bar is worse than a visible gap. The gap is repaired by backfilling the 1m bars
  and ``resample()``-ing them into ``merge_backfill``. With ``emit_incomplete=True`` it is emitted
  instead, with ``source="resampled_partial"``, when its last 1m bar arrives or, if that one is missing,
  when the first bar of a later bucket arrives (its ``ts_event`` is still its own bucket close).
* a 1m bar for a bucket already emitted (or given up) is late: counted, ignored, nothing re-emitted.

Values equal the venue's aggregation exactly: open/close of the first/last minute, max/min of the
highs/lows, and the volume as an exactly rounded sum (``math.fsum``) rounded to the most decimals any
input shows in its shortest repr. Venues sum decimals; a plain float sum is off in the last bit for about
a third of Binance 5m bars, the rounded sum matches all 8000 per symbol in the shared data.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import structlog
from numpy.typing import NDArray

from bot.bus import EventBus
from bot.config import INTERVALS_S, KlineConfig, RingConfig
from bot.errors import ConfigError, DataIntegrityError
from bot.events import KlineClosed, Venue
from bot.ring import Ring

log = structlog.get_logger(__name__)

KLINE_COLUMNS = ("open", "high", "low", "close", "volume")
NS_PER_MS = 1_000_000
Key = tuple[Venue, str, int]  # (venue, symbol, interval_s)
Bar = tuple[float, float, float, float, float]  # open, high, low, close, volume


def _bar(k: KlineClosed) -> Bar:
    return (k.open, k.high, k.low, k.close, k.volume)


def _bad_bar(k: KlineClosed) -> str | None:
    """Why a kline cannot be stored, or None."""
    if k.interval_s < 1:
        return f"interval_s {k.interval_s} < 1"
    if k.open_time_ms % (k.interval_s * 1000):
        return f"open_time_ms {k.open_time_ms} is not a multiple of the {k.interval_s}s interval"
    vals = _bar(k)
    if not all(math.isfinite(v) for v in vals):
        return f"non-finite value in {vals}"
    if k.low > min(k.open, k.close) or k.high < max(k.open, k.close) or k.volume < 0:
        return f"inconsistent bar o={k.open} h={k.high} l={k.low} c={k.close} v={k.volume}"
    return None


# -- the store ---------------------------------------------------------------------------------------


@dataclass
class MergeReport:
    """What ``merge_backfill`` did, summed over every key."""

    added: int = 0  # open times that were not in the store
    replaced: int = 0  # open times already present, overwritten by the incoming bar
    dropped_old: int = 0  # too old to fit in the ring's capacity
    not_closed: int = 0  # close time after ``now_ns``: a still-open candle, refused
    rejected: int = 0  # malformed (misaligned, non-finite, low > high ...)


class KlineStore:
    """Closed bars per (venue, symbol, interval_s), each a ``Ring`` of KLINE_COLUMNS stamped open_time_ms.

    A ring is created on the first bar of its key; the number of keys is bounded by the configuration
    (venues x symbols x resolutions), each ring by ``capacity``.
    """

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 2:
            raise ValueError(f"kline capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._rings: dict[Key, Ring] = {}
        self.rejected = 0
        self.dropped_old = 0

    @classmethod
    def from_config(cls, cfg: RingConfig) -> KlineStore:
        return cls(cfg.kline_capacity)

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(KlineClosed, self._on_event)

    def _on_event(self, k: KlineClosed) -> None:
        self.add(k)

    def ring(self, venue: Venue, symbol: str, interval_s: int) -> Ring | None:
        return self._rings.get((venue, symbol, interval_s))

    def _ring_for(self, key: Key) -> Ring:
        r = self._rings.get(key)
        if r is None:
            r = self._rings[key] = Ring(self.capacity, len(KLINE_COLUMNS))
        return r

    def add(self, k: KlineClosed) -> str:
        """Store one closed bar; returns "appended", "replaced", "inserted", "dropped_old" or "rejected"."""
        why = _bad_bar(k)
        if why is not None:
            self.rejected += 1
            log.warning("kline_rejected", venue=k.venue, symbol=k.symbol, interval_s=k.interval_s, reason=why)
            return "rejected"
        ring = self._ring_for((k.venue, k.symbol, k.interval_s))
        t = k.open_time_ms
        n = len(ring)
        if n == 0 or t > ring.latest_time():
            ring.append(_bar(k), t)
            return "appended"
        times = ring.times()
        i = int(np.searchsorted(times, t))
        if i < n and times[i] == t:
            ring.replace(n - 1 - i, _bar(k), t)
            return "replaced"
        if n == ring.capacity and i == 0:
            self.dropped_old += 1
            return "dropped_old"
        rows = np.insert(np.array(ring.window()), i, _bar(k), axis=0)
        stamps = np.insert(np.array(times), i, t)
        ring.clear()
        ring.extend(rows[-ring.capacity :], stamps[-ring.capacity :])
        return "inserted"

    def window(self, venue: Venue, symbol: str, interval_s: int, n: int | None = None) -> NDArray[np.generic]:
        """Last ``n`` bars, oldest first, shape (n, 5) (fewer if fewer are stored; (0, 5) for none).

        A read-only view: copy it to keep it past the next ``add`` (see ``Ring``).
        """
        r = self._rings.get((venue, symbol, interval_s))
        if r is None:
            return np.empty((0, len(KLINE_COLUMNS)))
        return r.window(n)

    def times(self, venue: Venue, symbol: str, interval_s: int, n: int | None = None) -> NDArray[np.int64]:
        """Open times (ms) of ``window(...)``."""
        r = self._rings.get((venue, symbol, interval_s))
        if r is None:
            return np.empty(0, dtype=np.int64)
        return r.times(n)

    def keys(self) -> list[Key]:
        return list(self._rings)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rings.values())


def merge_backfill(store: KlineStore, klines: Iterable[KlineClosed], now_ns: int | None = None) -> MergeReport:
    """Merge bars from a REST backfill into ``store``, in open-time order, in one pass per key.

    An incoming bar replaces a stored one only with the same open time; the rest keep their places.
    With ``now_ns``, bars that have not closed yet (``ts_event > now_ns``; REST returns the open candle
    last) are refused. The network side lives in the feed; this is the pure part.
    """
    report = MergeReport()
    groups: dict[Key, list[KlineClosed]] = {}
    for k in klines:
        if now_ns is not None and k.ts_event > now_ns:
            report.not_closed += 1
            continue
        why = _bad_bar(k)
        if why is not None:
            report.rejected += 1
            log.warning("kline_rejected", venue=k.venue, symbol=k.symbol, interval_s=k.interval_s, reason=why)
            continue
        groups.setdefault((k.venue, k.symbol, k.interval_s), []).append(k)
    for key, bars in groups.items():
        ring = store._ring_for(key)
        old_t = np.array(ring.times())
        new_t = np.array([b.open_time_ms for b in bars], dtype=np.int64)
        t = np.concatenate([old_t, new_t])
        rows = np.concatenate([np.array(ring.window()), np.array([_bar(b) for b in bars], dtype=np.float64)])
        order = np.argsort(t, kind="stable")  # equal times keep old-then-incoming order
        t, rows = t[order], rows[order]
        keep = np.append(t[1:] != t[:-1], True)  # the last of each run of equal times: incoming wins
        t, rows = t[keep], rows[keep]
        new_unique = np.unique(new_t)
        replaced = int(np.isin(new_unique, old_t).sum())
        report.replaced += replaced
        report.added += len(new_unique) - replaced
        if len(t) > ring.capacity:
            report.dropped_old += len(t) - ring.capacity
            t, rows = t[-ring.capacity :], rows[-ring.capacity :]
        ring.clear()
        ring.extend(rows, t)
    log.info("klines_backfilled", **vars(report))
    return report


# -- resampling ----------------------------------------------------------------------------------------


def _decimals(x: float) -> int | None:
    """Decimal places of ``x``'s shortest repr (83.08143 -> 5); None for exponent forms."""
    r = repr(x)
    if "e" in r or "n" in r:  # 1e-05, inf, nan
        return None
    dot = r.find(".")
    return 0 if dot < 0 else len(r) - dot - 1


def decimal_sum(values: list[float]) -> float:
    """Sum as a venue does on decimals: exact float sum rounded to the inputs' decimal places."""
    s = math.fsum(values)
    places = [_decimals(v) for v in values]
    if not places or any(p is None for p in places):
        return s
    return round(s, max(p for p in places if p is not None))


@dataclass
class _Bucket:
    start_ms: int
    bars: dict[int, Bar]  # 1m open time -> bar (a repeated open time replaces)


class Resampler:
    """Closed base bars (1m) in, closed higher-resolution bars out, with no look-ahead (see module doc)."""

    def __init__(self, targets_s: Iterable[int], base_s: int = 60, *, emit_incomplete: bool = False) -> None:
        self.base_s = base_s
        self.targets_s = tuple(sorted(set(targets_s)))
        bad = [t for t in self.targets_s if t <= base_s or t % base_s]
        if bad:
            raise ConfigError(f"resample targets {bad} must be larger multiples of the {base_s}s base interval")
        self.emit_incomplete = emit_incomplete
        self._open: dict[Key, _Bucket] = {}  # (venue, symbol, target_s) -> the bucket being filled
        self._floor: dict[Key, int] = {}  # earliest bucket start still accepted (later ones are done)
        self.emitted = 0
        self.incomplete = 0
        self.late = 0
        self.ignored = 0

    @classmethod
    def from_config(cls, cfg: KlineConfig, base: str = "1m", *, emit_incomplete: bool = False) -> Resampler:
        base_s = INTERVALS_S[base]
        return cls(
            [INTERVALS_S[r] for r in cfg.resolutions if INTERVALS_S[r] > base_s],
            base_s,
            emit_incomplete=emit_incomplete,
        )

    def attach(self, bus: EventBus) -> None:
        """Resample every closed base bar on the bus and publish the results on it."""

        def handler(k: KlineClosed) -> None:
            if k.interval_s == self.base_s and not k.source.startswith("resampled"):
                for out in self.on_kline(k):
                    bus.publish(out)

        bus.subscribe(KlineClosed, handler)

    def on_kline(self, k: KlineClosed) -> list[KlineClosed]:
        """Feed one closed base bar; returns the bars it closes (oldest first, then by interval)."""
        if k.interval_s != self.base_s:
            self.ignored += 1
            return []
        base_ms = self.base_s * 1000
        t = k.open_time_ms
        out: list[KlineClosed] = []
        for target in self.targets_s:
            span = target * 1000
            key = (k.venue, k.symbol, target)
            start = t - t % span
            if start < self._floor.get(key, start):
                self.late += 1
                continue
            b = self._open.get(key)
            if b is not None and start > b.start_ms:  # a later bucket began: the open one lacks its end
                self._finish(key, b, k, out)
                b = None
            if b is None:
                b = self._open[key] = _Bucket(start, {})
            b.bars[t] = _bar(k)
            if t == start + span - base_ms:  # the bucket's last base bar has closed
                self._finish(key, b, k, out)
        return out

    def _finish(self, key: Key, b: _Bucket, trigger: KlineClosed, out: list[KlineClosed]) -> None:
        venue, symbol, target = key
        span = target * 1000
        del self._open[key]
        self._floor[key] = b.start_ms + span
        complete = len(b.bars) == target // self.base_s
        if not complete:
            self.incomplete += 1
            log.info(
                "resample_incomplete",
                venue=venue,
                symbol=symbol,
                interval_s=target,
                open_time_ms=b.start_ms,
                bars=len(b.bars),
                emitted=self.emit_incomplete,
            )
            if not self.emit_incomplete:
                return
        bars = [b.bars[t] for t in sorted(b.bars)]
        out.append(
            KlineClosed(
                ts_event=(b.start_ms + span) * NS_PER_MS,
                ts_recv=trigger.ts_recv,
                venue=venue,
                symbol=symbol,
                interval_s=target,
                open_time_ms=b.start_ms,
                open=bars[0][0],
                high=max(x[1] for x in bars),
                low=min(x[2] for x in bars),
                close=bars[-1][3],
                volume=decimal_sum([x[4] for x in bars]),
                source="resampled" if complete else "resampled_partial",
            )
        )
        self.emitted += 1


def resample(
    klines: Iterable[KlineClosed], interval_s: int, *, base_s: int = 60, emit_incomplete: bool = False
) -> list[KlineClosed]:
    """Batch form of ``Resampler`` (e.g. over a 1m backfill): bars of ``interval_s`` in open-time order."""
    r = Resampler([interval_s], base_s, emit_incomplete=emit_incomplete)
    out: list[KlineClosed] = []
    for k in sorted(klines, key=lambda k: k.open_time_ms):
        out.extend(r.on_kline(k))
    return out


# -- CSV loader ----------------------------------------------------------------------------------------

_NAME = re.compile(r"^([A-Za-z0-9]+)_(\d+)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_time_ms(text: str) -> int:
    """'2023-01-01 00:00:00' (naive = UTC), ISO with an offset ('...+00:00', 'Z'), or epoch ms digits."""
    s = text.strip()
    if s.isdigit():
        return int(s)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def load_kline_csv(
    path: str | Path,
    *,
    venue: Venue,
    symbol: str | None = None,
    interval_s: int | None = None,
    source: str = "rest",
) -> list[KlineClosed]:
    """Read a ``timestamp,open,high,low,close,volume`` file (timestamp = bar open, UTC) into closed bars:
    ``iter_kline_csv``'s bars as a list."""
    return list(iter_kline_csv(path, venue=venue, symbol=symbol, interval_s=interval_s, source=source))


def kline_file_key(path: str | Path) -> tuple[str, int] | None:
    """(symbol, interval_s) from a file name like ``BTCUSDT_1m.csv`` / ``ETHUSDT_60m.csv``, or None."""
    m = _NAME.match(Path(path).stem)
    return None if m is None else (m.group(1).upper(), int(m.group(2)) * _UNIT_S[m.group(3)])


def iter_kline_csv(
    path: str | Path,
    *,
    venue: Venue,
    symbol: str | None = None,
    interval_s: int | None = None,
    source: str = "rest",
) -> Iterator[KlineClosed]:
    """The closed bars of a ``timestamp,open,high,low,close,volume`` file (timestamp = bar open, UTC), read
    as they are needed (a file of any length in constant memory).

    ``symbol`` and ``interval_s`` default to the file name (``BTCUSDT_1m.csv``, ``ETHUSDT_60m.csv``).
    ``ts_event`` and ``ts_recv`` are both the bar's close time (the file records no receive time).
    Raises ``ConfigError`` for a missing file or unusable name, ``DataIntegrityError`` naming the file
    and line for anything malformed: a bad number or timestamp, an inconsistent bar, a timestamp that is
    misaligned or not strictly after the previous one.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"kline file not found: {p}")
    m = _NAME.match(p.stem)
    if symbol is None:
        if m is None:
            raise ConfigError(f"cannot tell the symbol from file name {p.name!r}; pass symbol=")
        symbol = m.group(1)
    if interval_s is None:
        if m is None:
            raise ConfigError(f"cannot tell the interval from file name {p.name!r}; pass interval_s=")
        interval_s = int(m.group(2)) * _UNIT_S[m.group(3)]
    symbol = symbol.upper()
    span_ms = interval_s * 1000
    with p.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in ("timestamp", *KLINE_COLUMNS) if c not in header]
        if missing:
            raise DataIntegrityError(f"{p}:1: header {header} lacks column(s) {missing}")
        ti = header.index("timestamp")
        vi = [header.index(c) for c in KLINE_COLUMNS]
        prev = None
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataIntegrityError(f"{p}:{line}: expected {len(header)} fields, got {len(row)}")
            try:
                t = _parse_time_ms(row[ti])
            except ValueError:
                raise DataIntegrityError(f"{p}:{line}: bad timestamp {row[ti]!r}") from None
            try:
                o, h, lo, c, v = (float(row[i]) for i in vi)
            except ValueError:
                raise DataIntegrityError(f"{p}:{line}: bad number in {row}") from None
            if prev is not None and t <= prev:
                raise DataIntegrityError(f"{p}:{line}: timestamp {row[ti]} is not after the previous row")
            prev = t
            close_ns = (t + span_ms) * NS_PER_MS
            k = KlineClosed(
                ts_event=close_ns,
                ts_recv=close_ns,
                venue=venue,
                symbol=symbol,
                interval_s=interval_s,
                open_time_ms=t,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=v,
                source=source,
            )
            why = _bad_bar(k)
            if why is not None:
                raise DataIntegrityError(f"{p}:{line}: {why}")
            yield k
