"""Candles for the loopback exchange: REST klines from CSV files, kline streams from recorded trades.

**REST klines** come from CSV files ``SYMBOL_<n>m.csv`` (or ``SYMBOL_1h.csv`` style) with the columns
``timestamp,open,high,low,close,volume``, the format of the shared data (Binance spot:
``benicio1007_bot_trading/f802e27/data``, naive UTC timestamps; Bybit linear:
``cobra0506_crypto_backtester/*/data``, ISO ``+00:00`` timestamps; timestamps are bar starts). A
``klines_dir`` may hold one subfolder per venue (``binance_spot/``, ``bybit_linear/`` ...) and files at its
top level for every venue; a venue without its own folder uses the other market of the same exchange (USD-M
the spot candles, Bybit spot the linear ones; the demo ships only those two). An interval with no file is
aggregated from the coarsest file whose interval divides it (complete buckets only). **These candles are
from other dates than the order-book sessions** (2023 and 2025 against 2024 and 2026): they are real, well-formed
history for back-fill and client tests, not the replayed market. The CSVs carry no quote volume,
trade count or taker volumes: quote volume is estimated as ``volume * (high + low + close) / 3``, the others
are 0.

**Binance kline streams** are synthesized from the recorded ``@trade`` stream (the hftbacktest
captures have no kline stream): for every symbol and interval of ``STREAM_INTERVALS`` an update every
2 s of exchange time (``E`` on the 2 s grid), carrying the candle so far, and the closed candle once
with ``"x": true`` at its close (``E`` = close time + 1 ms), followed by the new candle's first update.
Trades are assigned by their trade time ``T``. Intervals without a trade repeat the last close with zero
volume, as Binance does. USD-M counts only ``"X":"MARKET"`` trades. The first candle of a session holds
only the trades recorded since the session began.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.errors import RecordingError
from bot.events import Venue

BINANCE_INTERVALS = {
    "1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240, "6h": 360,
    "8h": 480, "12h": 720, "1d": 1440, "3d": 4320, "1w": 10080,
}  # fmt: skip
BYBIT_INTERVALS = {
    "1": 1, "3": 3, "5": 5, "15": 15, "30": 30, "60": 60, "120": 120, "240": 240, "360": 360,
    "720": 720, "D": 1440, "W": 10080,
}  # fmt: skip
STREAM_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h")
TICK_MS = 2000


@dataclass
class Bars:
    """One CSV's bars, oldest first; prices kept as the file wrote them."""

    open_ms: list[int]
    o: list[str]
    h: list[str]
    low: list[str]
    c: list[str]
    v: list[str]
    minutes: int


_MIDNIGHTS: dict[str, int] = {}


def _parse_ts(text: str) -> int:
    """Epoch ms of ``2023-01-01 00:00:00`` (naive = UTC) or ``2025-05-30 16:39:00+00:00``; the common
    forms take a fast path (the date part is cached), anything else goes through ``fromisoformat``."""
    t = text.strip()
    if len(t) in (19, 25) and t[10] in " T" and (len(t) == 19 or t[19:] == "+00:00"):
        day = _MIDNIGHTS.get(t[:10])
        if day is None:
            day = _MIDNIGHTS[t[:10]] = int(datetime.fromisoformat(t[:10]).replace(tzinfo=UTC).timestamp()) * 1000
        return day + (int(t[11:13]) * 3600 + int(t[14:16]) * 60 + int(t[17:19])) * 1000
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_BARS: dict[tuple[str, int, int], Bars] = {}  # (path, mtime_ns, minutes): files are read once per process


def read_bars(path: Path, minutes: int) -> Bars:
    try:
        key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns, minutes)
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e}") from e
    if key not in _BARS:
        _BARS[key] = _read_bars(path, minutes)
    return _BARS[key]


def _read_bars(path: Path, minutes: int) -> Bars:
    bars = Bars([], [], [], [], [], [], minutes)
    try:
        with open(path, newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None or [h.strip().lower() for h in header[:6]] != [
                "timestamp", "open", "high", "low", "close", "volume"
            ]:  # fmt: skip
                raise RecordingError(f"{path}: expected header timestamp,open,high,low,close,volume")
            for n, row in enumerate(rows, 2):
                if not row:
                    continue
                try:
                    bars.open_ms.append(_parse_ts(row[0]))
                    for col, val in zip((bars.o, bars.h, bars.low, bars.c, bars.v), row[1:6], strict=True):
                        float(val)
                        col.append(val)
                except (ValueError, IndexError) as e:
                    raise RecordingError(f"{path}:{n}: bad kline row {row!r}: {e}") from None
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e}") from e
    return bars


def _decimals(values: list[str]) -> int:
    return max((len(s) - s.index(".") - 1 for s in values[:200] if "." in s), default=0)


def aggregate(src: Bars, minutes: int) -> Bars:
    """Complete buckets of ``minutes`` built from finer bars (whose interval divides it)."""
    step = minutes * 60_000
    per = minutes // src.minutes
    out = Bars([], [], [], [], [], [], minutes)
    vdec = _decimals(src.v)
    i, n = 0, len(src.open_ms)
    while i < n:
        start = src.open_ms[i] - src.open_ms[i] % step
        j = i
        while j < n and src.open_ms[j] - src.open_ms[j] % step == start:
            j += 1
        if j - i == per:
            hi = max(range(i, j), key=lambda k: float(src.h[k]))
            lo = min(range(i, j), key=lambda k: float(src.low[k]))
            out.open_ms.append(start)
            out.o.append(src.o[i])
            out.h.append(src.h[hi])
            out.low.append(src.low[lo])
            out.c.append(src.c[j - 1])
            out.v.append(f"{sum(float(src.v[k]) for k in range(i, j)):.{vdec}f}")
        i = j
    return out


@dataclass
class KlineStore:
    """REST klines from CSV files, read lazily and cached."""

    root: Path | None
    _cache: dict[tuple[str, str, int], Bars | None] = field(default_factory=dict)

    def _files(self, venue: Venue, symbol: str) -> dict[int, Path]:
        found: dict[int, Path] = {}
        if self.root is None:
            return found
        names = {**{f"{m}m": m for m in set(BINANCE_INTERVALS.values())}, **BINANCE_INTERVALS}
        sibling = {Venue.BINANCE_SPOT: Venue.BINANCE_USDM, Venue.BINANCE_USDM: Venue.BINANCE_SPOT,
                   Venue.BYBIT_SPOT: Venue.BYBIT_LINEAR, Venue.BYBIT_LINEAR: Venue.BYBIT_SPOT}[venue]  # fmt: skip
        for folder in (self.root / venue.value, self.root / sibling.value, self.root):
            for label, m in names.items():
                p = folder / f"{symbol}_{label}.csv"
                if m not in found and p.is_file():
                    found[m] = p
        return found

    def bars(self, venue: Venue, symbol: str, minutes: int) -> Bars | None:
        key = (venue.value, symbol, minutes)
        if key not in self._cache:
            files = self._files(venue, symbol)
            if minutes in files:
                self._cache[key] = read_bars(files[minutes], minutes)
            else:
                bases = [m for m in files if m < minutes and minutes % m == 0]
                self._cache[key] = (
                    aggregate(read_bars(files[max(bases)], max(bases)), minutes) if bases else None
                )
        return self._cache[key]

    def select(
        self, venue: Venue, symbol: str, minutes: int, start: int | None, end: int | None, limit: int
    ) -> list[int]:
        """Indexes of the bars asked for, oldest first: from ``start`` on (or the last ``limit`` before
        ``end``, or the latest ``limit``), never outside ``[start, end]``."""
        bars = self.bars(venue, symbol, minutes)
        if bars is None:
            return []
        idx = [
            i
            for i, t in enumerate(bars.open_ms)
            if (start is None or t >= start) and (end is None or t <= end)
        ]
        return idx[:limit] if start is not None else idx[-limit:] if limit else []

    def binance_rows(
        self, venue: Venue, symbol: str, minutes: int, start: int | None, end: int | None, limit: int
    ) -> list[list[object]]:
        bars = self.bars(venue, symbol, minutes)
        rows: list[list[object]] = []
        if bars is None:
            return rows
        spot = venue is Venue.BINANCE_SPOT
        for i in self.select(venue, symbol, minutes, start, end, limit):
            o, h, lo, c, v = bars.o[i], bars.h[i], bars.low[i], bars.c[i], bars.v[i]
            quote = float(v) * (float(h) + float(lo) + float(c)) / 3
            t = bars.open_ms[i]
            if spot:
                o, h, lo, c, v = (f"{float(x):.8f}" for x in (o, h, lo, c, v))
            rows.append(
                [t, o, h, lo, c, v, t + minutes * 60_000 - 1, f"{quote:.8f}" if spot else f"{quote:.4f}", 0,
                 "0.00000000" if spot else "0", "0.00000000" if spot else "0", "0"]
            )  # fmt: skip
        return rows

    def bybit_rows(
        self, venue: Venue, symbol: str, minutes: int, start: int | None, end: int | None, limit: int
    ) -> list[list[str]]:
        bars = self.bars(venue, symbol, minutes)
        if bars is None:
            return []
        rows = []
        for i in self.select(venue, symbol, minutes, start, end, limit):
            quote = float(bars.v[i]) * (float(bars.h[i]) + float(bars.low[i]) + float(bars.c[i])) / 3
            rows.append(
                [str(bars.open_ms[i]), bars.o[i], bars.h[i], bars.low[i], bars.c[i], bars.v[i], f"{quote:.4f}"]
            )
        rows.reverse()  # Bybit: newest first
        return rows


# -- kline streams synthesized from trades ---------------------------------------------------------


@dataclass
class _Candle:
    start: int
    o: str
    h: str
    low: str
    c: str
    fh: float = float("-inf")
    fl: float = float("inf")
    v: float = 0.0
    q: float = 0.0
    vb: float = 0.0  # taker-buy base volume
    qb: float = 0.0
    n: int = 0
    first_id: int = -1
    last_id: int = -1


class TradeCandles:
    """Folds recorded trades into candles (by trade time ``T``) and produces Binance kline stream messages
    on a 2 s grid of exchange time. A tick at ``X`` is emitted once the records have reached ``X + GRACE_MS``
    (so trades executed before ``X`` but published just after it are in), with ``"E": X``."""

    GRACE_MS = 500

    def __init__(self, spot: bool) -> None:
        self.spot = spot
        self.next_tick: int | None = None
        self.open: dict[tuple[str, str], dict[int, _Candle]] = {}  # (symbol, interval) -> start -> candle
        self.emitted_end: dict[tuple[str, str], int] = {}  # end of the last closed candle sent
        self.last_close: dict[str, str] = {}
        self.late_trades = 0
        self._qty_dec = 3

    def on_trade(self, d: dict[str, object]) -> None:
        if not self.spot and d.get("X", "MARKET") != "MARKET":
            return
        sym, price, qty = str(d["s"]), str(d["p"]), str(d["q"])
        t = int(str(d["T"]))
        tid = int(str(d["t"]))
        if not self.spot and "." in qty:
            self._qty_dec = max(self._qty_dec, len(qty) - qty.index(".") - 1)
        fp, fq = float(price), float(qty)
        taker_buy = not d.get("m")  # m: the buyer is the maker
        for iv in STREAM_INTERVALS:
            step = BINANCE_INTERVALS[iv] * 60_000
            key = (sym, iv)
            start = t - t % step
            candles = self.open.setdefault(key, {})
            if start < self.emitted_end.get(key, 0):  # its candle was already closed and sent
                self.late_trades += 1
                start = max(candles) if candles else self.emitted_end[key]
            c = candles.get(start)
            if c is None:
                c = candles[start] = _Candle(start, price, price, price, price)
            if c.n == 0:
                c.o, c.first_id = price, tid
            if fp > c.fh:
                c.h, c.fh = price, fp
            if fp < c.fl:
                c.low, c.fl = price, fp
            c.c = price
            c.v += fq
            c.q += fp * fq
            if taker_buy:
                c.vb += fq
                c.qb += fp * fq
            c.n += 1
            c.last_id = tid
        self.last_close[sym] = price

    def ticks(self, now_ms: int) -> Iterator[tuple[str, str]]:
        """(stream name, payload JSON) for every 2 s tick that ``now_ms`` (exchange time) has passed."""
        if not self.open:
            return
        if self.next_tick is None:
            self.next_tick = now_ms - now_ms % TICK_MS + TICK_MS
        while now_ms >= self.next_tick + self.GRACE_MS:
            tick = self.next_tick
            for (sym, iv), candles in self.open.items():
                step = BINANCE_INTERVALS[iv] * 60_000
                name = f"{sym.lower()}@kline_{iv}"
                for start in sorted(candles):
                    if start + step <= tick:  # closed: sent once with x=true
                        yield name, self._payload(sym, iv, candles.pop(start), tick, True)
                        self.emitted_end[(sym, iv)] = start + step
                current = tick - tick % step
                c = candles.get(current)
                if c is None:  # no trade yet in this interval: the last close, zero volume
                    last = self.last_close.get(sym)
                    if last is None:
                        continue
                    c = candles[current] = _Candle(current, last, last, last, last)
                yield name, self._payload(sym, iv, c, tick, False)
            self.next_tick = tick + TICK_MS

    def _payload(self, sym: str, iv: str, c: _Candle, event_ms: int, closed: bool) -> str:
        step = BINANCE_INTERVALS[iv] * 60_000
        if self.spot:
            vf = qf = "{:.8f}"
            o, h, lo, cl = (f"{float(x):.8f}" for x in (c.o, c.h, c.low, c.c))
        else:
            vf, qf = f"{{:.{self._qty_dec}f}}", "{:.5f}"
            o, h, lo, cl = c.o, c.h, c.low, c.c
        return (
            f'{{"e":"kline","E":{event_ms},"s":"{sym}","k":{{"t":{c.start},"T":{c.start + step - 1},'
            f'"s":"{sym}","i":"{iv}","f":{c.first_id},"L":{c.last_id},"o":"{o}","c":"{cl}","h":"{h}",'
            f'"l":"{lo}","v":"{vf.format(c.v)}","n":{c.n},"x":{"true" if closed else "false"},'
            f'"q":"{qf.format(c.q)}","V":"{vf.format(c.vb)}","Q":"{qf.format(c.qb)}","B":"0"}}}}'
        )
