"""Timelines: a native recording turned into one paced message list per venue, plus the truth books.

Loading (``load_timelines``): ``data`` is a native recording directory, or a folder whose subfolders are
recordings (one venue must not appear in two of them). Per venue the ``ws`` records become ``Item``s
with their recorded receive-time offsets. A silence of more than 5 minutes starts a new session: sessions
of disjoint symbols play side by side from the start (the demo recording holds an ETH and a BTC USD-M
session weeks apart), others one after the other with the silence cut to 1 s; the venue's clock is the
first session's. Binance ``snapshot`` records are kept per symbol for
``/depth``; Bybit ``info`` records (instruments-info bodies) are kept per category. Frames that are not
market data (Bybit acks and pongs) are left out. Binance kline streams are synthesized from the trades
(``bot.sim.klines``) and woven in at their exchange times.

The truth book of every Binance symbol follows the official sync rules **at load time**: each diff is
marked SKIP (older than the recorded snapshot), REBASE (the first diff that bridges a recorded snapshot:
spot ``U <= lastUpdateId+1 <= u``, USD-M ``U <= lastUpdateId <= u``; the book becomes the snapshot, then
the diff is applied) or APPLY. Exact duplicates of already-applied diffs (``u`` not past the last one, as
happens when a recorder held two connections) are removed from the timeline; a real gap in the recording
is counted in ``Timeline.load_stats`` and then, with no later snapshot to rebase on, applied best-effort.
A symbol recorded without any snapshot starts from an empty book (levels that never change stay unknown).
Bybit books start at the first recorded snapshot; any later snapshot resets them (venue rule).

``VenueReplay`` holds the runtime truth while ``bot.sim.loop.VenueRunner`` plays the timeline: items are
paced by the recorded receive-time deltas divided by ``speed``, all venues starting together; at the end
the recording loops seamlessly, ids and times continuing (``bot.sim.loop``).
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bot.errors import RecordingError
from bot.events import Venue
from bot.recording import MANIFEST, iter_records
from bot.sim.klines import TradeCandles
from bot.sim.truth import Level, RefBook, SimBook

APPLY, REBASE, SKIP = 0, 1, 2
BINANCE = (Venue.BINANCE_SPOT, Venue.BINANCE_USDM)
BYBIT = (Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR)
_PREFIX = '{"stream":"'


@dataclass(slots=True)
class BnDiff:
    """A Binance diff-depth message (levels are parsed again when it is replayed, to save memory)."""

    symbol: str
    first: int  # U
    last: int  # u
    prev: int  # pu (USD-M), -1 on spot
    event_ms: int  # E
    trans_ms: int  # T (USD-M), 0 on spot
    action: int = APPLY
    snap: int = -1  # REBASE: index into Timeline.snapshots[symbol]


@dataclass(slots=True)
class BbBook:
    """A Bybit orderbook message."""

    symbol: str
    snapshot: bool
    u: int
    seq: int
    ts: int
    cts: int


@dataclass(slots=True)
class Item:
    t: int  # ns since the venue's first item (recorded receive-time delta)
    topic: str  # Binance stream name / Bybit topic
    raw: str  # the text as sent: Binance combined-stream wrapper, Bybit message
    data_at: int = 0  # Binance: raw[data_at:-1] is the raw-stream payload
    book: BnDiff | BbBook | None = None

    def payload(self) -> str:
        return self.raw[self.data_at : -1] if self.data_at else self.raw


class Snapshot:
    """A recorded Binance REST depth snapshot; levels parsed on first use."""

    __slots__ = ("_parsed", "event_ms", "lid", "raw", "trans_ms")

    def __init__(self, raw: str) -> None:
        head = orjson.loads(raw)
        self.raw = raw
        self.lid = int(head["lastUpdateId"])
        self.event_ms = int(head.get("E", 0))
        self.trans_ms = int(head.get("T", 0))
        self._parsed: tuple[list[Level], list[Level]] | None = None

    def levels(self) -> tuple[list[Level], list[Level]]:
        if self._parsed is None:
            d = orjson.loads(self.raw)
            self._parsed = ([(p, q) for p, q in d["bids"]], [(p, q) for p, q in d["asks"]])
        return self._parsed


@dataclass
class Timeline:
    venue: Venue
    items: list[Item] = field(default_factory=list)
    snapshots: dict[str, list[Snapshot]] = field(default_factory=dict)
    depth_topic: dict[str, str] = field(default_factory=dict)  # symbol -> recorded diff stream / topic
    info: dict[str, str] = field(default_factory=dict)  # Bybit category -> instruments-info body
    price_dec: dict[str, int] = field(default_factory=dict)
    qty_dec: dict[str, int] = field(default_factory=dict)
    offset_ms: int = 0  # exchange time - recorded receive time
    t0_ns: int = 0  # receive time of the first item
    load_stats: Counter[str] = field(default_factory=Counter)
    loop_plan: Any = None  # bot.sim.loop.LoopPlan, built on first use and kept with the cached timeline

    @property
    def symbols(self) -> list[str]:
        return sorted(set(self.depth_topic) | set(self.snapshots) | set(self.price_dec))

    @property
    def duration_s(self) -> float:
        return self.items[-1].t / 1e9 if self.items else 0.0


# -- loading ---------------------------------------------------------------------------------------


def recording_dirs(data: Path) -> list[Path]:
    p = Path(data)
    if not p.is_dir():
        raise RecordingError(f"{p}: no such directory")
    if (p / MANIFEST).is_file():
        return [p]
    subs = sorted(d for d in p.iterdir() if (d / MANIFEST).is_file())
    if not subs:
        raise RecordingError(f"{p}: not a native recording (no {MANIFEST}) nor a folder of recordings")
    return subs


_CACHE: dict[tuple[str, ...], dict[Venue, Timeline]] = {}


def load_timelines(data: Path) -> dict[Venue, Timeline]:
    """Timelines of every venue in ``data`` (cached per directory set and manifest mtimes)."""
    dirs = recording_dirs(data)
    key = tuple(f"{d.resolve()}@{(d / MANIFEST).stat().st_mtime_ns}" for d in dirs)
    if key not in _CACHE:
        while len(_CACHE) >= 3:  # recordings are large: keep the last few only
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = _load(dirs)
    return _CACHE[key]


def _load(dirs: list[Path]) -> dict[Venue, Timeline]:
    builders: dict[str, _Builder] = {}
    owner: dict[Venue, Path] = {}
    known = {v.value: v for v in Venue}
    for d in dirs:
        for rec in iter_records(d):
            b = builders.get(rec.venue)
            if b is None:
                venue = known.get(rec.venue)
                if venue is None:
                    continue  # a venue the sim does not serve
                if owner.setdefault(venue, d) != d:
                    raise RecordingError(f"venue {venue} appears in both {owner[venue]} and {d}; give one of them")
                b = builders[rec.venue] = _Builder(venue, d)
            elif b.source != d:
                raise RecordingError(f"venue {rec.venue} appears in both {b.source} and {d}; give one of them")
            b.add(rec.ts_recv, rec.kind, rec.key, rec.raw)
    out = {b.tl.venue: b.finish() for b in builders.values()}
    out = {v: tl for v, tl in out.items() if tl.items}
    if not out:
        raise RecordingError(f"{', '.join(map(str, dirs))}: no websocket market data for any venue")
    return out


def _decimals(s: str) -> int:
    i = s.find(".")
    return len(s) - i - 1 if i >= 0 else 0


SESSION_GAP_NS = 300 * 10**9  # a silence longer than this in one venue's records starts a new session


@dataclass
class _Session:
    t0: int
    last: int
    candles: TradeCandles | None
    items: list[Item] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    symbols: set[str] = field(default_factory=set)


class _Builder:
    def __init__(self, venue: Venue, source: Path) -> None:
        self.source = source
        self.tl = Timeline(venue)
        self.binance = venue in BINANCE
        self.sessions: list[_Session] = []

    def add(self, ts: int, kind: str, key: str, raw: str) -> None:
        tl = self.tl
        if kind == "snapshot" and self.binance:
            try:
                tl.snapshots.setdefault(key.upper(), []).append(Snapshot(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                tl.load_stats["bad_snapshot"] += 1
            return
        if kind == "info":
            cat = "linear" if "category=linear" in key else "spot" if "category=spot" in key else ""
            if cat and not self.binance:
                tl.info[cat] = raw
            return
        if kind != "ws":
            return
        ses = self.sessions[-1] if self.sessions else None
        if ses is None or ts - ses.last > SESSION_GAP_NS:
            candles = TradeCandles(spot=self.tl.venue is Venue.BINANCE_SPOT) if self.binance else None
            ses = _Session(ts, ts, candles)
            self.sessions.append(ses)
        ses.last = max(ses.last, ts)
        if self.binance:
            self._binance(ses, ts - ses.t0, ts, raw)
        else:
            self._bybit(ses, ts - ses.t0, ts, raw)

    def _note(self, sym: str, levels: list[Any]) -> None:
        if levels:
            p, q = levels[0][0], levels[0][1]
            self.tl.price_dec[sym] = max(self.tl.price_dec.get(sym, 0), _decimals(p))
            self.tl.qty_dec[sym] = max(self.tl.qty_dec.get(sym, 0), _decimals(q))

    def _binance(self, ses: _Session, t: int, ts: int, raw: str) -> None:
        tl = self.tl
        if raw.startswith(_PREFIX):
            end = raw.find('"', len(_PREFIX))
            stream = raw[len(_PREFIX) : end]
            data_at = end + len('","data":') if raw.startswith('","data":', end) and raw.endswith("}") else 0
        else:
            stream, data_at = "", 0
        if not data_at or "@depth" in stream or "@trade" in stream:
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                tl.load_stats["unparsable"] += 1
                return
            if not data_at:  # a raw-stream payload (or a wrapper in unusual form): wrap it ourselves
                payload = msg.get("data", msg) if isinstance(msg, dict) else None
                stream = str(msg.get("stream", "")) if isinstance(msg, dict) else ""
                if not isinstance(payload, dict) or not (stream := stream or _infer_stream(payload)):
                    tl.load_stats["unknown_frame"] += 1
                    return
                raw = f'{{"stream":"{stream}","data":{orjson.dumps(payload).decode()}}}'
                data_at = len(_PREFIX) + len(stream) + len('","data":')
            else:
                payload = msg["data"]
            e = payload.get("e")
            if "E" in payload:
                if len(ses.offsets) < 200:
                    ses.offsets.append(int(payload["E"]) - ts // 1_000_000)
                if ses.candles is not None:
                    for name, text in ses.candles.ticks(int(payload["E"])):
                        ses.items.append(Item(t, name, f'{{"stream":"{name}","data":{text}}}', len(name) + 20))
            if e == "depthUpdate" and _is_diff_stream(stream):
                sym = str(payload["s"])
                tl.depth_topic.setdefault(sym, stream)
                self._note(sym, payload["b"] or payload["a"])
                diff = BnDiff(sym, int(payload["U"]), int(payload["u"]), int(payload.get("pu", -1)),
                              int(payload["E"]), int(payload.get("T", 0)))  # fmt: skip
                ses.items.append(Item(t, stream, raw, data_at, diff))
                ses.symbols.add(sym)
                return
            if e == "trade" and ses.candles is not None:
                ses.candles.on_trade(payload)
        ses.symbols.add(stream.partition("@")[0].upper())
        ses.items.append(Item(t, stream, raw, data_at))

    def _bybit(self, ses: _Session, t: int, ts: int, raw: str) -> None:
        tl = self.tl
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            tl.load_stats["unparsable"] += 1
            return
        topic = msg.get("topic") if isinstance(msg, dict) else None
        if not isinstance(topic, str):
            tl.load_stats["control_frames"] += 1  # acks, pongs
            return
        if "ts" in msg and len(ses.offsets) < 200:
            ses.offsets.append(int(msg["ts"]) - ts // 1_000_000)
        book = None
        if topic.startswith("orderbook."):
            d = msg["data"]
            sym = str(d["s"])
            tl.depth_topic.setdefault(sym, topic)
            self._note(sym, d["b"] or d["a"])
            book = BbBook(sym, msg.get("type") == "snapshot", int(d["u"]), int(d.get("seq", 0)),
                          int(msg.get("ts", 0)), int(msg.get("cts", msg.get("ts", 0))))  # fmt: skip
        ses.symbols.add(topic.rpartition(".")[2])
        ses.items.append(Item(t, topic, raw, 0, book))

    def finish(self) -> Timeline:
        """Join the sessions: side by side when their symbols are disjoint (the demo's ETH and BTC USD-M
        sessions, weeks apart, play together), else one after the other with the silence cut to 1 s."""
        tl = self.tl
        sessions = self.sessions
        if not sessions:
            return tl
        tl.t0_ns = sessions[0].t0
        tl.offset_ms = int(statistics.median(sessions[0].offsets)) if sessions[0].offsets else 0
        tl.load_stats["sessions"] = len(sessions)
        disjoint = sum(len(s.symbols) for s in sessions) == len(set().union(*(s.symbols for s in sessions)))
        if len(sessions) == 1:
            tl.items = sessions[0].items
        elif disjoint:
            tl.load_stats["sessions_side_by_side"] = len(sessions)
            tl.items = list(heapq.merge(*(s.items for s in sessions), key=lambda i: i.t))
        else:
            shift = 0
            for ses in sessions:
                for item in ses.items:
                    item.t += shift
                tl.items.extend(ses.items)
                shift = (tl.items[-1].t if tl.items else 0) + 10**9
        if self.binance:
            _mark_binance(tl)
        else:
            _dedupe_bybit(tl)
        return tl


def _is_diff_stream(stream: str) -> bool:
    """``btcusdt@depth`` or ``btcusdt@depth@100ms`` (not the partial ``@depth5``/``@depth20@100ms``)."""
    _, _, rest = stream.partition("@depth")
    return rest == "" or rest.startswith("@")


def _infer_stream(p: dict[str, Any]) -> str:
    sym = str(p.get("s", "")).lower()
    e = p.get("e")
    if not sym:
        return ""
    if e == "depthUpdate":
        return f"{sym}@depth"
    if e in ("trade", "aggTrade", "bookTicker", "markPriceUpdate", "forceOrder"):
        return f"{sym}@{'markPrice' if e == 'markPriceUpdate' else e}"
    if e == "kline" and isinstance(p.get("k"), dict):
        return f"{sym}@kline_{p['k'].get('i')}"
    if e is None and "b" in p and "A" in p:
        return f"{sym}@bookTicker"
    return ""


def _mark_binance(tl: Timeline) -> None:
    usdm = tl.venue is Venue.BINANCE_USDM
    synced: dict[str, int | None] = {}
    keep: list[Item] = []
    for item in tl.items:
        d = item.book
        if not isinstance(d, BnDiff):
            keep.append(item)
            continue
        snaps = tl.snapshots.get(d.symbol, [])
        last = synced.get(d.symbol)
        if last is not None:
            if d.last <= last:
                tl.load_stats["duplicate_diffs_removed"] += 1
                continue
            chained = d.prev == last if usdm else d.first == last + 1
            if not chained:
                tl.load_stats["recording_gaps"] += 1
                k = _bridging(snaps, d, usdm)
                if k >= 0:
                    d.action, d.snap = REBASE, k
        else:
            k = _bridging(snaps, d, usdm)
            if k >= 0:
                d.action, d.snap = REBASE, k
            elif snaps:
                d.action = SKIP
                keep.append(item)
                continue
        synced[d.symbol] = d.last
        keep.append(item)
    tl.items = keep


def _bridging(snaps: list[Snapshot], d: BnDiff, usdm: bool) -> int:
    for k, s in enumerate(snaps):
        if (d.first <= s.lid <= d.last) if usdm else (d.first <= s.lid + 1 <= d.last):
            return k
    return -1


def _dedupe_bybit(tl: Timeline) -> None:
    last: dict[str, int] = {}
    keep: list[Item] = []
    for item in tl.items:
        b = item.book
        if isinstance(b, BbBook) and not b.snapshot:
            prev = last.get(item.topic)
            if prev is not None and b.u <= prev:
                tl.load_stats["duplicate_deltas_removed"] += 1
                continue
            if prev is not None and b.u != prev + 1:
                tl.load_stats["recording_gaps"] += 1
        if isinstance(b, BbBook):
            last[item.topic] = b.u
        keep.append(item)
    tl.items = keep


# -- runtime truth ---------------------------------------------------------------------------------


@dataclass
class _BnState:
    book: SimBook | None
    u: int = 0
    event_ms: int = 0
    trans_ms: int = 0
    snap_next: int = 0


@dataclass
class _BbState:
    book: SimBook | None = None
    u: int = 0
    seq: int = 0
    ts: int = 0
    cts: int = 0


class VenueReplay:
    """The truth books of one venue as the timeline is replayed."""

    def __init__(self, tl: Timeline) -> None:
        self.tl = tl
        self.bn: dict[str, _BnState] = {}
        self.bb: dict[str, _BbState] = {}
        self.reset()

    def reset(self) -> None:
        self.bn = {s: _BnState(None if self.tl.snapshots.get(s) else SimBook()) for s in self.tl.symbols}
        self.bb = {s: _BbState() for s in self.tl.symbols}

    def apply(self, item: Item) -> Any:
        """Update the truth with ``item``; returns the parsed payload of book messages (else None)."""
        b = item.book
        if isinstance(b, BnDiff):
            st = self.bn[b.symbol]
            if b.action == SKIP:
                return None
            if b.action == REBASE:
                snap = self.tl.snapshots[b.symbol][b.snap]
                st.book = SimBook.from_levels(*snap.levels())
                st.snap_next = b.snap + 1
            payload = orjson.loads(item.payload())
            assert st.book is not None
            st.book.apply(payload["b"], payload["a"])
            st.u, st.event_ms, st.trans_ms = b.last, b.event_ms, b.trans_ms
            return payload
        if isinstance(b, BbBook):
            bs = self.bb[b.symbol]
            msg = orjson.loads(item.raw)
            d = msg["data"]
            if b.snapshot:
                bs.book = SimBook.from_levels(d["b"], d["a"])
            elif bs.book is not None:
                bs.book.apply(d["b"], d["a"])
            bs.u, bs.seq, bs.ts, bs.cts = b.u, b.seq, b.ts, b.cts
            return msg
        return None

    # -- views -------------------------------------------------------------------------------------
    def reference(self, symbol: str, depth: int | None = None) -> RefBook | None:
        if self.tl.venue in BINANCE:
            st = self.bn.get(symbol)
            return st.book.ref(st.u, depth) if st is not None and st.book is not None else None
        bs = self.bb.get(symbol)
        return bs.book.ref(bs.u, depth) if bs is not None and bs.book is not None else None

    def binance_depth(self, symbol: str, limit: int, now_ms: int) -> bytes | str | None:
        """The ``/depth`` body: the recorded snapshot until the timeline bridges it, then the truth."""
        st = self.bn.get(symbol)
        if st is None:
            return None
        usdm = self.tl.venue is Venue.BINANCE_USDM
        if st.book is None:
            snaps = self.tl.snapshots[symbol]
            snap = snaps[min(st.snap_next, len(snaps) - 1)]
            bids, asks = snap.levels()
            if limit >= max(len(bids), len(asks)):
                return snap.raw
            lid, ev, tr = snap.lid, snap.event_ms, snap.trans_ms
            bids, asks = bids[:limit], asks[:limit]
        else:
            bids, asks = st.book.top(limit)
            lid, ev, tr = st.u, now_ms, st.trans_ms
        if usdm:
            return orjson.dumps({"lastUpdateId": lid, "E": ev, "T": tr, "bids": bids, "asks": asks})
        return orjson.dumps({"lastUpdateId": lid, "bids": bids, "asks": asks})

    def bybit_book(self, symbol: str) -> _BbState | None:
        bs = self.bb.get(symbol)
        return bs if bs is not None and bs.book is not None else None


def bybit_book_msg(
    venue: Venue, topic: str, kind: str, symbol: str, bids: list[Level], asks: list[Level], st: _BbState, u: int
) -> dict[str, Any]:
    """A Bybit orderbook message, keys in the venue's own order (spot and linear differ)."""
    data = {"s": symbol, "b": bids, "a": asks, "u": u, "seq": st.seq}
    if venue is Venue.BYBIT_SPOT:
        return {"topic": topic, "ts": st.ts, "type": kind, "data": data, "cts": st.cts}
    return {"topic": topic, "type": kind, "ts": st.ts, "data": data, "cts": st.cts}


def bybit_snapshot_text(
    venue: Venue, topic: str, symbol: str, st: _BbState, depth: int | None, u: int | None = None
) -> str:
    """A ``snapshot`` message of the current truth book (top ``depth`` levels)."""
    assert st.book is not None
    bids, asks = st.book.top(depth)
    msg = bybit_book_msg(venue, topic, "snapshot", symbol, bids, asks, st, st.u if u is None else u)
    return orjson.dumps(msg).decode()
