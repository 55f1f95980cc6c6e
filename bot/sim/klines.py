"""Candles for the loopback exchange: REST klines from CSV files, kline streams from recorded trades.

**REST klines** come from CSV files ``SYMBOL_<n>m.csv`` (or ``SYMBOL_1h.csv`` style) with the columns
``timestamp,open,high,low,close,volume``, the format of the shared data (Binance spot:
``benicio1007_bot_trading/f802e27/data``, naive UTC timestamps; Bybit linear:
``cobra0506_crypto_backtester/*/data``, ISO ``+00:00`` timestamps; timestamps are bar starts). A
``klines_dir`` may hold one subfolder per venue (``binance_spot/``, ``bybit_linear/`` ...) and files at its
top level for every venue; a venue without its own folder uses the other market of the same exchange (USD-M
the spot candles, Bybit spot the linear ones; the demo ships only those two). An interval with no file is
aggregated from the coarsest file whose interval divides it (complete buckets only). **These candles are
from other dates than the order-book sessions** (2023 and 2025 against 2024 and 2026). The CSVs carry no
quote volume, trade count or taker volumes: quote volume is estimated as ``volume * (high + low + close) /
3``, the others are 0.

**Splicing** (``LoopbackExchange(splice_klines=...)``, on by default for the embedded demo klines): a
client backfills history and then follows the live stream, so the history must end where the stream
begins. ``LiveKlines`` notes every kline bar the sim publishes, per symbol and interval, in the current
*session* (the unbroken run of the symbol's 1m bars; a loop wrap that jumps the clock by more than a bar,
as Binance's 1 h step does, or a restart starts a new one; Bybit's one-bar wrap step does not). The history
is then the finest CSV's bars moved in time by whole bars so that the last one closes exactly where the
session's first 1m bar opens, and multiplied in price by one constant per (venue, symbol) so that the last
close equals that bar's open (the recording's first trade on Binance, the recorded ``kline.1`` open on
Bybit). Coarser intervals are aggregated from those 1m bars. A request sees the history up to the
session's first bar of its interval and from there on the live bars published so far, the open one last
(as the venue answers); an interval the session does not stream (Bybit above 1m, Binance above 1h) is
aggregated from the history and the session's closed 1m bars. **What is real**: every bar's shape, every
return (each price relative to the bar's close and to the bar before: on the demo within 6e-15, Binance
spot, with its 8 decimals, 2e-13; prices keep 15 significant digits, not the tick) and every volume.
**What is not**: the history's date and price level. Known seams: a session's first bar of an interval
above 1m holds only the trades since the recording began (the history's 1m bars inside it are not in it),
and the live stream itself jumps at a Binance wrap. A symbol without a live 1m stream is served unspliced.

**Binance kline streams** are synthesized from the recorded ``@trade`` stream (the hftbacktest
captures have no kline stream): for every symbol and interval of ``STREAM_INTERVALS`` an update every
2 s of exchange time (``E`` on the 2 s grid), carrying the candle so far, and the closed candle once
with ``"x": true`` at its close (``E`` = close time + 1 ms), followed by the new candle's first update.
Trades are assigned by their trade time ``T``. Intervals without a trade repeat the last close with zero
volume, as Binance does. USD-M counts only ``"X":"MARKET"`` trades. The first candle of a session holds
only the trades recorded since the session began.
"""

from __future__ import annotations

import bisect
import csv
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bot.errors import RecordingError
from bot.events import Venue

if TYPE_CHECKING:
    from bot.sim.replay import Item

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


Row = tuple[int, str, str, str, str, str, str | None, int, str | None, str | None]
"""(open ms, open, high, low, close, volume, quote volume or None (estimated), trades, taker-buy base and
quote volume or None): one bar as the REST answers are made from it."""


@dataclass(frozen=True)
class LiveView:
    """What the REST answer for one (symbol, interval) needs from the live session, copied on the loop."""

    anchor_ms: int  # open of the session's first 1m bar: the spliced history closes here
    first_px: str  # that bar's open: the last historical close is scaled to it
    streamed: bool  # the session streams this interval (else it is aggregated from the 1m bars)
    bars: list[Row]  # the session's bars of this interval so far, the open one last (streamed intervals)
    closed_1m: list[Row]  # the session's closed 1m bars (for intervals it does not stream)


def _live_row(b: dict[str, Any], binance: bool) -> tuple[Row, bool]:
    if binance:
        row: Row = (int(b["t"]), b["o"], b["h"], b["l"], b["c"], b["v"], b["q"], int(b["n"]), b["V"], b["Q"])
        return row, bool(b["x"])
    return (int(b["start"]), b["open"], b["high"], b["low"], b["close"], b["volume"], b["turnover"], 0, None,
            None), bool(b["confirm"])  # fmt: skip


class LiveKlines:
    """The kline bars one venue's sim has published in the current session, per (symbol, minutes).

    A symbol's session is the unbroken run of its 1m bars: a bar that does not continue it (a loop wrap
    that moves the clock by more than a bar, as Binance's 1 h step does; a restart, which moves it back)
    starts a new session for every interval of the symbol. Bybit's wraps move the clock by exactly one
    bar, so its session runs on across them. Fed by ``on_item`` on the event loop with every item the
    runner publishes; read (``view``) on the loop too."""

    MAX_BARS = 20_000  # per (symbol, interval); a longer session keeps its newest half

    def __init__(self, venue: Venue, first: dict[str, tuple[int, str]], streamed: dict[str, set[int]]) -> None:
        self.binance = venue in (Venue.BINANCE_SPOT, Venue.BINANCE_USDM)
        self.first = first  # symbol -> (open ms, open price) of the recording's first 1m bar
        self.streamed = streamed  # symbol -> the intervals (minutes) its kline streams carry
        self.runs: dict[tuple[str, int], list[tuple[Row, bool]]] = {}  # -> (bar, closed), oldest first
        self.bad_frames = 0
        self._topics: dict[str, tuple[str, int]] = {}

    @classmethod
    def from_items(cls, venue: Venue, items: Iterable[Item]) -> LiveKlines:
        live = cls(venue, {}, {})
        for item in items:
            key = live._topic(item.topic)
            if key[1] == 0:
                continue
            live.streamed.setdefault(key[0], set()).add(key[1])
            if key[1] == 1 and key[0] not in live.first:
                try:
                    row = next(live._rows(item.raw))[0]
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, StopIteration):
                    live.bad_frames += 1
                    continue
                live.first[key[0]] = (row[0], row[1])
        return live

    def _topic(self, topic: str) -> tuple[str, int]:
        """(symbol, minutes) of a kline topic; minutes 0 for any other topic."""
        key = self._topics.get(topic)
        if key is None:
            if self.binance:
                sym, _, iv = topic.partition("@kline_")
                key = (sym.upper(), BINANCE_INTERVALS.get(iv, 0))
            else:
                parts = topic.split(".")
                ok = len(parts) == 3 and parts[0] == "kline"
                key = (parts[-1], BYBIT_INTERVALS.get(parts[1], 0) if ok else 0)
            self._topics[topic] = key
        return key

    def _rows(self, raw: str) -> Iterator[tuple[Row, bool]]:
        msg = orjson.loads(raw)
        bars = [msg["data"]["k"]] if self.binance else msg["data"]
        return (_live_row(b, self.binance) for b in bars)

    def on_item(self, topic: str, raw: str) -> None:
        sym, minutes = self._topic(topic)
        if minutes:
            try:
                bars = list(self._rows(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.bad_frames += 1  # a recorded frame of another shape: the stream carries it, REST skips it
                return
            for bar in bars:
                self._note(sym, minutes, bar)

    def tap(self, publish: Callable[[Item, Any], None]) -> Callable[[Item, Any], None]:
        """``publish`` noting every kline item on its way: the runner's ``on_item``."""

        def on_item(item: Item, parsed: Any) -> None:
            self.on_item(item.topic, item.raw)
            publish(item, parsed)

        return on_item

    def _note(self, sym: str, minutes: int, bar: tuple[Row, bool]) -> None:
        key, t, step = (sym, minutes), bar[0][0], minutes * 60_000
        run = self.runs.get(key)
        last = run[-1][0][0] if run else None
        if run is None or last is None or not last - step <= t <= last + step:
            if minutes == 1:  # a new session for every interval of the symbol
                for k in [k for k in self.runs if k[0] == sym]:
                    del self.runs[k]
            self.runs[key] = [bar]
        elif t > last:
            run.append(bar)
            if len(run) > self.MAX_BARS:
                self.runs[key] = run[-self.MAX_BARS // 2 :]
        else:
            for i in range(len(run) - 1, max(-1, len(run) - 3), -1):
                if run[i][0][0] == t:
                    run[i] = bar
                    break

    def view(self, symbol: str, minutes: int) -> LiveView | None:
        """None when the symbol has no live 1m bars in the recording (its history is served unspliced)."""
        first = self.first.get(symbol)
        if first is None:
            return None
        run_1m = self.runs.get((symbol, 1)) or []
        streamed = minutes in self.streamed.get(symbol, ())
        bars = [r for r, _ in self.runs.get((symbol, minutes)) or []] if streamed else []
        closed = [] if streamed else [r for r, x in run_1m if x]
        return LiveView(run_1m[0][0][0] if run_1m else first[0], first[1], streamed, bars, closed)


def _px(x: float) -> str:
    """A scaled price to 15 significant digits (returns kept to ~1e-15, not rounded to the tick)."""
    s = f"{x:.15g}"
    return s if "e" not in s else f"{x:.20f}".rstrip("0")


def _scaled(values: list[str], factor: float) -> list[str]:
    return [_px(float(x) * factor) for x in values]


@dataclass
class KlineStore:
    """REST klines from CSV files, read lazily and cached; with ``sessions`` (one ``LiveKlines`` per
    venue), spliced onto the live session (module docstring)."""

    root: Path | None
    sessions: dict[Venue, LiveKlines] = field(default_factory=dict)
    _cache: dict[tuple[str, str, int], Bars | None] = field(default_factory=dict)
    _spliced: dict[tuple[str, str, int], tuple[int, Bars | None]] = field(default_factory=dict)
    # the REST handlers read on worker threads (asyncio.to_thread), several at once: the caches are shared
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

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
        """The CSV bars of ``minutes`` as recorded (a file of that interval, else aggregated)."""
        key = (venue.value, symbol, minutes)
        with self._lock:
            return self._bars(key, venue, symbol, minutes)

    def _bars(self, key: tuple[str, str, int], venue: Venue, symbol: str, minutes: int) -> Bars | None:
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

    def live_view(self, venue: Venue, symbol: str, minutes: int) -> LiveView | None:
        """The live part of an answer (call on the event loop, where the session is fed)."""
        live = self.sessions.get(venue)
        return live.view(symbol, minutes) if live is not None else None

    def history(self, venue: Venue, symbol: str, minutes: int, live: LiveView) -> Bars | None:
        """The finest CSV's bars moved in time so that the last one closes where the session's first 1m
        bar opens and scaled in price so that its close is that bar's open; coarser intervals aggregated
        from them (complete buckets only; the session's closed 1m bars included where the session does
        not stream the interval). Cached per session anchor."""
        with self._lock:
            return self._history(venue, symbol, minutes, live)

    def _history(self, venue: Venue, symbol: str, minutes: int, live: LiveView) -> Bars | None:
        files = self._files(venue, symbol)
        if not files or minutes % min(files):
            return None
        m = min(files)
        key = (venue.value, symbol, m)
        cached = self._spliced.get(key)
        if cached is None or cached[0] != live.anchor_ms:
            src = read_bars(files[m], m)
            step = m * 60_000
            if not src.open_ms:
                cached = (live.anchor_ms, None)
            else:
                delta = live.anchor_ms - live.anchor_ms % step - (src.open_ms[-1] + step)
                f = float(live.first_px) / float(src.c[-1])
                shifted = Bars([t + delta for t in src.open_ms], _scaled(src.o, f), _scaled(src.h, f),
                               _scaled(src.low, f), _scaled(src.c, f), list(src.v), m)  # fmt: skip
                cached = (live.anchor_ms, shifted)
            self._spliced = {k: v for k, v in self._spliced.items() if k[:2] != key[:2]}
            self._spliced[key] = cached
        base = cached[1]
        if base is None or minutes == m:
            return base
        bkey = (venue.value, symbol, minutes)
        agg = self._spliced.get(bkey)
        if agg is None or agg[0] != live.anchor_ms:
            agg = self._spliced[bkey] = (live.anchor_ms, aggregate(base, minutes))
        out = agg[1]
        if live.streamed or not live.closed_1m or m != 1 or out is None:
            return out
        # buckets that the session's closed 1m bars complete: the history's 1m tail plus those bars
        step = minutes * 60_000
        since = live.anchor_ms - live.anchor_ms % step
        i = bisect.bisect_left(base.open_ms, since)
        tail = Bars(base.open_ms[i:], base.o[i:], base.h[i:], base.low[i:], base.c[i:], base.v[i:], 1)
        for r in live.closed_1m:
            tail.open_ms.append(r[0])
            for col, val in zip((tail.o, tail.h, tail.low, tail.c, tail.v), r[1:6], strict=True):
                col.append(val)
        more = aggregate(tail, minutes)
        return Bars(out.open_ms + more.open_ms, out.o + more.o, out.h + more.h, out.low + more.low,
                    out.c + more.c, out.v + more.v, minutes)  # fmt: skip

    def series(self, venue: Venue, symbol: str, minutes: int, live: LiveView | None) -> list[Row]:
        """Every bar a REST answer may hold, oldest first: the CSV's, or with ``live`` the spliced history
        (up to the session's first bar of this interval) followed by the session's bars."""
        bars = self.bars(venue, symbol, minutes) if live is None else self.history(venue, symbol, minutes, live)
        rows: list[Row] = []
        if bars is not None:
            cols = zip(bars.open_ms, bars.o, bars.h, bars.low, bars.c, bars.v, strict=True)
            rows = [(t, o, h, lo, c, v, None, 0, None, None) for t, o, h, lo, c, v in cols]
        if live is not None and live.streamed:
            step = minutes * 60_000
            start = live.bars[0][0] if live.bars else live.anchor_ms - live.anchor_ms % step
            rows = rows[: bisect.bisect_left([r[0] for r in rows], start)] + live.bars
        return rows

    @staticmethod
    def select(rows: list[Row], start: int | None, end: int | None, limit: int) -> list[Row]:
        """The bars asked for, oldest first: from ``start`` on (or the last ``limit`` before ``end``, or
        the latest ``limit``), never outside ``[start, end]``."""
        got = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end)]
        return got[:limit] if start is not None else got[-limit:] if limit else []

    def binance_rows(
        self, venue: Venue, symbol: str, minutes: int, start: int | None, end: int | None, limit: int,
        live: LiveView | None = None,
    ) -> list[list[object]]:  # fmt: skip
        spot = venue is Venue.BINANCE_SPOT
        zero = "0.00000000" if spot else "0"
        out: list[list[object]] = []
        chosen = self.select(self.series(venue, symbol, minutes, live), start, end, limit)
        for t, o, h, lo, c, v, q, n, vb, qb in chosen:
            if q is None:
                quote = float(v) * (float(h) + float(lo) + float(c)) / 3
                q = f"{quote:.8f}" if spot else f"{quote:.4f}"
            if spot:
                o, h, lo, c, v = (f"{float(x):.8f}" for x in (o, h, lo, c, v))
            out.append([t, o, h, lo, c, v, t + minutes * 60_000 - 1, q, n, vb or zero, qb or zero, "0"])
        return out

    def bybit_rows(
        self, venue: Venue, symbol: str, minutes: int, start: int | None, end: int | None, limit: int,
        live: LiveView | None = None,
    ) -> list[list[str]]:  # fmt: skip
        rows = []
        chosen = self.select(self.series(venue, symbol, minutes, live), start, end, limit)
        for t, o, h, lo, c, v, q, *_ in chosen:
            if q is None:
                q = f"{float(v) * (float(h) + float(lo) + float(c)) / 3:.4f}"
            rows.append([str(t), o, h, lo, c, v, q])
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
            for (sym, iv), candles in list(self.open.items()):  # the consumer may add a symbol meanwhile
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
