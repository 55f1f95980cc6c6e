"""Pacing and the seamless loop: one venue's recording played again and again as one endless market.

``VenueRunner`` plays a timeline at the recorded pace / ``speed`` and updates the truth (``VenueReplay``)
before handing each item to the hub. At the end of the recording, with ``loop``, it **wraps** (``Looper``):

* it publishes, per book, two diffs that turn the last book into the one the recording starts from:
  first the removal of every level the start book lacks, then the start book's levels that differ. Two
  messages, so no intermediate book is crossed and no crossed-book healing (the truth's or a client's)
  fires;
* every id and timestamp of the next pass is shifted so that the streams continue: Binance ``U``/``u``/
  ``pu`` (and bookTicker ``u``, partial-depth ``lastUpdateId``) chain onto the wrap diffs, Bybit ``u``
  counts on by one, Bybit ``seq``/``cs`` and trade ids (Binance ``t``/``a``/``f``/``l``/``L``, Bybit
  spot ``i``) move past the previous pass's, and times (``E``, ``T``, ``ts``, ``cts``, kline bounds...)
  move by a whole number of the longest kline interval in the timeline (Binance: 1 h, the synthesized
  kline streams; Bybit: the recorded ``kline.N``; else whole seconds), so candles stay on their grid.
  The venue clock therefore jumps forward at a wrap by that step less the recording's length;
* items that did not apply to a book on the first pass (Binance diffs older than the recorded snapshot;
  Bybit book messages up to and including the first snapshot) are left out of later passes: the wrap
  diffs have already brought the book to the state they established. The first pass is the recording
  exactly as recorded.

The truth applies the shifted items, so REST depth, ``reference_book`` and new subscriptions follow the
continued stream. A Binance candle open at the wrap is not closed (the next pass starts a new one).
The ``restart`` fault (``bot.sim.faults``) replaces a wrap by a venue restart: ``on_restart`` (the server
closes every connection with 1001) and a fresh replay with the recording's own ids.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import structlog

from bot.events import Venue
from bot.sim.klines import BINANCE_INTERVALS
from bot.sim.replay import APPLY, BINANCE, SKIP, BbBook, BnDiff, Item, Timeline, VenueReplay, bybit_book_msg
from bot.sim.truth import Level, SimBook

log = structlog.get_logger(__name__)

WRAP_GAP_NS = 500_000_000  # recorded time between the last item of a pass and the first of the next

# classes of the numbers a pass shifts
TIME, BOOK, SEQ, TRADE, CS = range(5)
_NUM = re.compile(r'"([A-Za-z]+)":(\d+)')
_BYBIT_TRADE_ID = re.compile(r'"i":"(\d+)"')


def _binance_keys(topic: str) -> dict[str, int]:
    kind = topic.partition("@")[2]
    if kind.startswith("depth"):
        return {"E": TIME, "T": TIME, "U": BOOK, "u": BOOK, "pu": BOOK, "lastUpdateId": BOOK}
    if kind == "bookTicker":
        return {"E": TIME, "T": TIME, "u": BOOK}
    if kind == "trade":
        return {"E": TIME, "T": TIME, "t": TRADE}
    if kind == "aggTrade":
        return {"E": TIME, "T": TIME, "a": TRADE, "f": TRADE, "l": TRADE}
    if kind.startswith("kline"):
        return {"E": TIME, "t": TIME, "T": TIME, "f": TRADE, "L": TRADE}
    return {"E": TIME, "T": TIME}


def _bybit_keys(topic: str) -> dict[str, int]:
    kind = topic.partition(".")[0]
    if kind == "orderbook":
        return {"ts": TIME, "cts": TIME, "u": BOOK, "seq": SEQ}
    if kind == "publicTrade":
        return {"ts": TIME, "T": TIME, "seq": SEQ}
    if kind == "tickers":
        return {"ts": TIME, "cs": CS}
    if kind == "kline":
        return {"ts": TIME, "start": TIME, "end": TIME, "timestamp": TIME}
    return {"ts": TIME, "T": TIME, "updatedTime": TIME}


def item_symbol(venue: Venue, topic: str) -> str:
    return topic.partition("@")[0].upper() if venue in BINANCE else topic.rpartition(".")[2]


def _kline_minutes(venue: Venue, topic: str) -> int:
    if venue in BINANCE:
        _, _, rest = topic.partition("@kline_")
        return BINANCE_INTERVALS.get(rest.partition("@")[0], 0) if rest else 0
    parts = topic.split(".")
    if len(parts) == 3 and parts[0] == "kline":
        return int(parts[1]) if parts[1].isdigit() else {"D": 1440, "W": 10080}.get(parts[1], 0)
    return 0


@dataclass
class LoopPlan:
    """What a wrap needs from a timeline, computed once per timeline (``Timeline.loop_plan``)."""

    period_ns: int  # recorded time of one pass, the gap to the next included
    shift_ms: int  # exchange-time shift of each pass
    skip: frozenset[int]  # item indexes left out of later passes
    first_applied: frozenset[int]  # Binance: the diff each book starts from (REBASE -> APPLY later)
    start: dict[str, tuple[list[Level], list[Level]]]  # symbol -> the book a pass starts from
    first_ids: dict[str, tuple[int, int]]  # Binance (U, pu) of the first applied diff; Bybit (u, seq) of the snapshot
    spans: dict[tuple[str, int], tuple[int, int]]  # (symbol, class) -> (lowest, highest) value of a pass
    keys: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> {json key: class}

    def increment(self, symbol: str, cls: int, room: int = 1) -> int:
        """How far a counter of ``cls`` moves per pass: past the highest value of the previous pass."""
        lo, hi = self.spans.get((symbol, cls), (0, -room))
        return hi - lo + room


def build_plan(tl: Timeline) -> LoopPlan:
    binance = tl.venue in BINANCE
    keys_of = _binance_keys if binance else _bybit_keys
    keys: dict[str, dict[str, int]] = {}
    spans: dict[tuple[str, int], list[int]] = {}
    times: list[int] = []
    skip: set[int] = set()
    first_applied: set[int] = set()
    start: dict[str, tuple[list[Level], list[Level]]] = {}
    first_ids: dict[str, tuple[int, int]] = {}
    align_min = 0

    def note(sym: str, cls: int, v: int) -> None:
        s = spans.get((sym, cls))
        if s is None:
            spans[(sym, cls)] = [v, v]
        elif v < s[0]:
            s[0] = v
        elif v > s[1]:
            s[1] = v

    for i, item in enumerate(tl.items):
        if item.topic not in keys:
            keys[item.topic] = keys_of(item.topic)
            align_min = max(align_min, _kline_minutes(tl.venue, item.topic))
        b = item.book
        if isinstance(b, BnDiff):
            if b.symbol not in start:
                if b.action == SKIP:
                    skip.add(i)
                    continue
                first_applied.add(i)
                snaps = tl.snapshots.get(b.symbol, [])
                start[b.symbol] = snaps[b.snap].levels() if b.snap >= 0 else ([], [])
                first_ids[b.symbol] = (b.first, b.prev)
            for v in (b.first, b.last, b.prev):
                if v >= 0:
                    note(b.symbol, BOOK, v)
            times.append(b.event_ms)
            continue
        sym = item_symbol(tl.venue, item.topic)
        if isinstance(b, BbBook):
            if b.symbol not in start:
                skip.add(i)
                if b.snapshot:
                    d = orjson.loads(item.raw)["data"]
                    start[b.symbol] = ([(p, q) for p, q in d["b"]], [(p, q) for p, q in d["a"]])
                    first_ids[b.symbol] = (b.u, b.seq)
                continue
            note(b.symbol, SEQ, b.seq)
            times.append(b.ts)
            continue
        kmap = keys[item.topic]
        for m in _NUM.finditer(item.raw):
            cls = kmap.get(m.group(1))
            if cls == TIME:
                if m.group(1) in ("E", "ts"):
                    times.append(int(m.group(2)))
            elif cls is not None:
                note(sym, cls, int(m.group(2)))
        if not binance and item.topic.startswith("publicTrade."):
            for m in _BYBIT_TRADE_ID.finditer(item.raw):
                note(sym, TRADE, int(m.group(1)))
    period_ns = (tl.items[-1].t if tl.items else 0) + WRAP_GAP_NS
    span_ms = max(max(times) - min(times) if times else 0, period_ns // 1_000_000) + 1
    align = align_min * 60_000 or 1000
    return LoopPlan(
        period_ns=period_ns,
        shift_ms=math.ceil(span_ms / align) * align,
        skip=frozenset(skip),
        first_applied=frozenset(first_applied),
        start=start,
        first_ids=first_ids,
        spans={k: (v[0], v[1]) for k, v in spans.items()},
        keys=keys,
    )


class Looper:
    """The loop state of one venue: which pass this is and how far its ids and times are shifted."""

    def __init__(self, replay: VenueReplay) -> None:
        self.replay = replay
        self.tl = replay.tl
        self.binance = self.tl.venue in BINANCE
        self.epoch = 0  # passes since the start or the last restart
        self.book_off: dict[str, int] = {}
        self.offsets: dict[str, tuple[int, int, int, int, int]] = {}  # symbol -> offset per class

    @property
    def plan(self) -> LoopPlan:
        if self.tl.loop_plan is None:
            self.tl.loop_plan = build_plan(self.tl)
        plan = self.tl.loop_plan
        assert isinstance(plan, LoopPlan)
        return plan

    @property
    def time_offset_ms(self) -> int:
        return self.epoch * self.plan.shift_ms if self.epoch else 0

    def reset(self) -> None:
        """A venue restart: the original ids and times again."""
        self.epoch = 0
        self.book_off.clear()
        self.offsets.clear()

    def _offsets(self, sym: str) -> tuple[int, int, int, int, int]:
        got = self.offsets.get(sym)
        if got is None:
            p, k = self.plan, self.epoch
            got = self.offsets[sym] = (
                k * p.shift_ms,
                self.book_off.get(sym, k * p.increment(sym, BOOK, 3)),
                k * p.increment(sym, SEQ, 3),
                k * p.increment(sym, TRADE),
                k * p.increment(sym, CS),
            )
        return got

    def cycle_item(self, index: int, item: Item) -> Item | None:
        """``item`` as this pass sends it (ids and times shifted); None when a later pass leaves it out."""
        plan = self.plan
        if index in plan.skip:
            return None
        offs = self._offsets(item_symbol(self.tl.venue, item.topic))
        kmap = plan.keys.get(item.topic) or {}

        def shifted(m: re.Match[str]) -> str:
            cls = kmap.get(m.group(1))
            if cls is None or not offs[cls]:
                return m.group(0)
            return f'"{m.group(1)}":{int(m.group(2)) + offs[cls]}'

        raw = _NUM.sub(shifted, item.raw)
        if not self.binance and offs[TRADE] and item.topic.startswith("publicTrade."):
            raw = _BYBIT_TRADE_ID.sub(lambda m: f'"i":"{int(m.group(1)) + offs[TRADE]}"', raw)
        b = item.book
        ot, ob = offs[TIME], offs[BOOK]
        if isinstance(b, BnDiff):
            b = replace(
                b,
                first=b.first + ob,
                last=b.last + ob,
                prev=b.prev + ob if b.prev >= 0 else -1,
                event_ms=b.event_ms + ot,
                trans_ms=b.trans_ms + ot if b.trans_ms else 0,
                action=APPLY if index in plan.first_applied else b.action,
            )
        elif isinstance(b, BbBook):
            b = replace(b, u=b.u + ob, seq=b.seq + offs[SEQ], ts=b.ts + ot, cts=b.cts + ot)
        return Item(item.t, item.topic, raw, item.data_at, b)

    def wrap(self) -> list[Item]:
        """Start the next pass: the diffs from every book's last state to its start state, numbered so
        that the next pass's shifted ids chain onto them."""
        plan = self.plan
        prev_seq = {s: self._offsets(s)[SEQ] for s in plan.start}
        self.epoch += 1
        self.offsets.clear()
        out: list[Item] = []
        for sym, (bids, asks) in plan.start.items():
            if self.binance:
                out.extend(self._wrap_binance(sym, bids, asks))
            else:
                out.extend(self._wrap_bybit(sym, bids, asks, prev_seq[sym]))
        return out

    def _wrap_binance(self, sym: str, bids: list[Level], asks: list[Level]) -> list[Item]:
        st = self.replay.bn.get(sym)
        topic = self.tl.depth_topic.get(sym)
        if st is None or st.book is None or topic is None:
            return []
        plan = self.plan
        usdm = self.tl.venue is Venue.BINANCE_USDM
        zero = f"{0:.{self.tl.qty_dec.get(sym, 3)}f}" if usdm else "0.00000000"
        (rb, ra), (sb, sa) = book_diff(st.book, bids, asks, zero)
        off = self.epoch * plan.increment(sym, BOOK, 3)
        self.book_off[sym] = off
        first, prev = plan.first_ids[sym]
        last = st.u
        u2 = prev + off if usdm else first + off - 1  # the next pass's first diff chains onto this one
        out = []
        for u_from, u_to, pu, b, a in ((last + 1, u2 - 1, last, rb, ra), (u2, u2, u2 - 1, sb, sa)):
            if usdm:
                body: dict[str, Any] = {"e": "depthUpdate", "E": st.event_ms, "T": st.trans_ms, "s": sym,
                                        "U": u_from, "u": u_to, "pu": pu, "b": b, "a": a}  # fmt: skip
            else:
                body = {"e": "depthUpdate", "E": st.event_ms, "s": sym, "U": u_from, "u": u_to, "b": b, "a": a}
            payload = orjson.dumps(body).decode()
            diff = BnDiff(sym, u_from, u_to, pu if usdm else -1, st.event_ms, st.trans_ms if usdm else 0)
            raw = f'{{"stream":"{topic}","data":{payload}}}'
            out.append(Item(0, topic, raw, len(topic) + len('{"stream":"","data":'), diff))
        return out

    def _wrap_bybit(self, sym: str, bids: list[Level], asks: list[Level], prev_seq: int) -> list[Item]:
        bs = self.replay.bb.get(sym)
        topic = self.tl.depth_topic.get(sym)
        if bs is None or bs.book is None or topic is None:
            return []
        plan = self.plan
        (rb, ra), (sb, sa) = book_diff(bs.book, bids, asks, "0")
        snap_u, _ = plan.first_ids[sym]
        self.book_off[sym] = bs.u + 2 - snap_u  # the next pass's first delta is u + 3
        seq = plan.spans.get((sym, SEQ), (bs.seq, bs.seq))[1] + prev_seq
        out = []
        for n, b, a in ((1, rb, ra), (2, sb, sa)):
            msg = bybit_book_msg(self.tl.venue, topic, "delta", sym, b, a, replace(bs, seq=seq + n), bs.u + n)
            book = BbBook(sym, False, bs.u + n, seq + n, bs.ts, bs.cts)
            out.append(Item(0, topic, orjson.dumps(msg).decode(), 0, book))
        return out


def book_diff(
    book: SimBook, bids: list[Level], asks: list[Level], zero: str
) -> tuple[tuple[list[Level], list[Level]], tuple[list[Level], list[Level]]]:
    """((bid, ask) removals, (bid, ask) levels to set) that turn ``book`` into ``bids``/``asks``."""
    nb = {float(p): (p, q) for p, q in bids}
    na = {float(p): (p, q) for p, q in asks}
    removals = (
        [(p, zero) for k, (p, _) in book.bids.items() if k not in nb],
        [(p, zero) for k, (p, _) in book.asks.items() if k not in na],
    )
    sets = (
        [pq for k, pq in nb.items() if book.bids.get(k) != pq],
        [pq for k, pq in na.items() if book.asks.get(k) != pq],
    )
    return removals, sets


# -- pacing ----------------------------------------------------------------------------------------


@dataclass
class RunnerStats:
    sent_items: int = 0
    cycles: int = 0
    wraps: int = 0  # seamless wraps
    restarts: int = 0  # restart faults
    wrap_items: int = 0  # diffs published by the wraps
    max_lag_ms: float = 0.0
    late_items: int = 0  # replayed more than 100 ms after their due time


class VenueRunner:
    """Plays one venue's timeline in real time / ``speed``; calls ``on_item`` after updating the truth.

    Item ``i`` is due at ``start + items[i].t / speed`` (monotonic): the pass starts when ``run`` does, or
    with ``align_ns`` up to ``align_ns`` later, on the recording's phase (``_start``; the first pass and
    each restart, not a seamless wrap, which continues at the recorded pace)."""

    YIELD_EVERY = 64  # items processed back to back before letting the writers run

    def __init__(
        self,
        replay: VenueReplay,
        speed: float,
        loop: bool,
        on_item: Callable[[Item, Any], None],
        on_restart: Callable[[], Awaitable[None]],
        restart: Callable[[], bool] = lambda: False,
        align_ns: int = 0,
    ) -> None:
        self.replay = replay
        self.speed = speed
        self.loop = loop
        self.align_ns = align_ns
        self.on_item = on_item
        self.on_restart = on_restart
        self.restart = restart
        self.looper = Looper(replay)
        self.pos = 0
        self.cycle = 0
        self.finished = False
        self.start_mono = time.monotonic()
        self.start_wall_ns = time.time_ns()  # wall time (time.time_ns) the first item is due at, once running
        self.stats = RunnerStats()

    @property
    def total(self) -> int:
        return len(self.replay.tl.items)

    def now_ms(self) -> int:
        """The venue's clock: recorded exchange time at the current replay position (shifted per pass)."""
        tl = self.replay.tl
        rec_ns = tl.t0_ns + int((time.monotonic() - self.start_mono) * self.speed * 1e9)
        return rec_ns // 1_000_000 + tl.offset_ms + self.looper.time_offset_ms

    def _start(self) -> float:
        """The monotonic time the first item of a pass is due at: now, or with ``align_ns`` the first moment
        from now whose wall time is congruent to the recording's first receive time modulo ``align_ns``:
        at speed 1 a record received at ``r`` is then due at a wall time ``r + k * align_ns`` (a whole number
        of grid steps later), so a live run's wall-clock grid cuts the recording where a replay's
        receive-time grid does. Sets ``start_wall_ns``."""
        mono, wall = time.monotonic(), time.time_ns()
        wait_ns = (self.replay.tl.t0_ns - wall) % self.align_ns if self.align_ns > 0 else 0
        self.start_wall_ns = wall + wait_ns
        return mono + wait_ns / 1e9

    async def run(self) -> None:
        items = self.replay.tl.items
        if self.loop and items:
            await asyncio.to_thread(lambda: self.looper.plan)  # one pass over the timeline, off the loop
        self.replay.reset()
        start = self._start()
        scale = 1.0 / (self.speed * 1e9)
        while True:
            self.pos = 0
            self.start_mono = start
            burst = 0
            looper = self.looper if self.looper.epoch else None
            while self.pos < len(items):
                item: Item | None = items[self.pos]
                assert item is not None
                delay = start + item.t * scale - time.monotonic()
                if delay > 0.0005:
                    burst = 0
                    await asyncio.sleep(delay)
                    continue
                if delay < 0:
                    lag = -delay * 1000
                    if lag > self.stats.max_lag_ms:
                        self.stats.max_lag_ms = lag
                    if lag > 100:
                        self.stats.late_items += 1
                if looper is not None:
                    item = looper.cycle_item(self.pos, item)
                self.pos += 1
                if item is None:
                    continue
                parsed = self.replay.apply(item)
                self.stats.sent_items += 1
                self.on_item(item, parsed)
                burst += 1
                if burst >= self.YIELD_EVERY:
                    burst = 0
                    await asyncio.sleep(0)
            self.cycle += 1
            self.stats.cycles += 1
            if not self.loop:
                self.finished = True
                log.info("sim_recording_finished", venue=self.replay.tl.venue.value)
                return
            if self.restart():
                self.stats.restarts += 1
                await self.on_restart()
                self.looper.reset()
                self.replay.reset()
                start = self._start()
                continue
            for wrap_item in self.looper.wrap():
                parsed = self.replay.apply(wrap_item)
                self.stats.wrap_items += 1
                self.on_item(wrap_item, parsed)
            self.stats.wraps += 1
            start += self.looper.plan.period_ns * scale
            await asyncio.sleep(0)
