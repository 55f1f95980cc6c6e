"""The Bybit adapters' offline loop (``on_ws_frames``: orderbook deltas applied by ``bot.venues.bybit_kernels``,
their ``BookUpdate`` events published as batches) against one ``on_ws`` per frame.

Both run the Bybit half of the embedded demo recording (the real cryptofeed session: six books, tickers,
trades, klines, acks), and a copy of it with the odd frames a real session can hold: deltas in another
layout or with levels in another shape (the loop leaves them to the Python path), malformed levels, a
delta of the wrong symbol, a crossed delta, a stray snapshot, frames the router must not take, receive
times that step back, a non-ASCII frame. The reference calls ``rings.on_time`` before every record and
hands frames over one at a time, so every event received, grid row, book, counter and ticker must come
out identical, for several sets of subscribers (which decide what the loop may take and what it passes
over), with grids that also stop and restart on quiet books.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.book import OrderBook
from bot.bus import EventBus
from bot.config import BotSettings
from bot.events import BookCrossed, BookHealth, BookUpdate, BookUpdates, Event, KlineClosed, Trade, Venue
from bot.export import OfflineFeed
from bot.orders import FundingRate
from bot.recording import Record, RecordingWriter, Row, iter_frames, iter_rows
from bot.ring import RingSet
from bot.sim.cli import DEMO_DIR
from bot.venues import bybit_kernels as bk
from bot.venues.base import NO_CLOCK, ReplayClock, VenueAdapter
from bot.venues.bybit import BybitLinearAdapter

pytestmark = pytest.mark.replay

RECORDING = DEMO_DIR / "recording"
VENUES = ("bybit_linear", "bybit_spot")
SYMBOLS = {
    Venue.BYBIT_LINEAR: ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"),
    Venue.BYBIT_SPOT: ("BTCUSDT", "ETHUSDT"),
}


MUTATIONS: dict[tuple[str, int], Callable[[str], list[str]]] = {  # (symbol, its n-th linear delta) -> what it becomes
    ("BTCUSDT", 50): lambda raw: [raw.replace(',"a":', ', "a":', 1)],  # valid JSON, another layout: msgspec reads it
    ("BTCUSDT", 100): lambda raw: [raw.replace('"]', '" ]', 1)],  # whitespace in a level: read by msgspec
    ("BTCUSDT", 150): lambda raw: [raw.replace('"cts":', '"xx":1,"cts":', 1)],  # another key: not the loop's
    ("ETHUSDT", 120): lambda raw: [_first(raw, "b", '["99999","1"]')],  # a bid above every ask: crossed, healed
    ("ETHUSDT", 200): lambda raw: [raw, raw],  # a duplicate: a gap (the book waits for a snapshot)
    ("SOLUSDT", 300): lambda raw: [_first(raw, "a", '["x","1"]')],  # malformed levels: dropped, then a gap
    ("DOGEUSDT", 330): lambda raw: [raw.replace('"s":"', '"s":"X', 1)],  # the wrong symbol: malformed, then a gap
}


def _first(raw: str, side: str, level: str) -> str:
    """``raw`` with ``level`` put first on ``side``."""
    empty = f'"{side}":[]' in raw
    return raw.replace(f'"{side}":[', f'"{side}":[{level}' + ("" if empty else ","), 1)


def _odd(raw: str, seen: dict[str, int]) -> list[str]:
    """What a linear record becomes in the odd copy (usually itself); ``seen`` counts deltas per symbol."""
    if '"topic":"orderbook.200.' not in raw[:40] or '"type":"delta"' not in raw[:70]:
        return [raw]
    symbol = raw[24 : raw.index('"', 24)]
    seen[symbol] = seen.get(symbol, 0) + 1
    mutate = MUTATIONS.get((symbol, seen[symbol]))
    return [raw] if mutate is None else mutate(raw)


def _copy(out: Path, odd: bool) -> Path:
    """The demo's Bybit records in small parts (many blocks), odd frames put in when ``odd``."""
    extra = [
        '{"topic":"orderbook.200.BTCUSDT"',  # truncated, routed
        '{"x":1,"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1,"data":{}}',  # routed, not first
        '{"topic":"orderbook.200.BTCUSDTX","type":"delta"}',  # a topic that only starts like ours
        '{"topic":"liquidation.BTCUSDT","ts":1,"data":[]}',  # a topic we do not know
        '{"op":"pong","args":["1"],"conn_id":"c"}',
        '{"topic":"publicTrade.BTCUSDT","data":[{"T":"x"}],"ts":1}',  # a malformed trade (passed over)
        '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":"x"},"ts":1}',
        '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}',
    ]
    snapshot = None
    seen: dict[str, int] = {}
    with RecordingWriter(out, rotate_records=700) as w:
        n = 0
        for ts, venue, kind, key, raw in iter_rows(RECORDING):
            if venue not in VENUES:
                continue
            n += 1
            raws = [raw]
            if odd:
                if venue == "bybit_linear" and kind == "ws":
                    raws = _odd(raw, seen)
                    if snapshot is None and '"type":"snapshot"' in raw[:70] and "SOLUSDT" in raw[:40]:
                        snapshot = raw
                if n % 97 == 0:
                    ts -= 3_000_000_000  # the local clock stepped back
                elif n % 61 == 0:
                    ts += 2_500_000_000  # one receive time far ahead of the next ones
                if n % 150 == 0:
                    raws.append(extra[(n // 150) % len(extra)])
                if n == 1100 and snapshot is not None:
                    raws.append(snapshot)  # an old snapshot again: the book restarts from it, then a gap
                if n == 1300:
                    raws.append(raw.replace("}", ',"note":"ünïcödé"}', 1))  # this block takes the text path
            for r in raws:
                w.write(Record(ts, venue, kind, key, r))
    return out


Subscribe = Callable[[EventBus, list[Any]], None]


def _rings_only(bus: EventBus, got: list[Any]) -> None:
    return None


def _lists(bus: EventBus, got: list[Any]) -> None:
    """Everything but BookUpdate: trades, klines and tickers are then handled in order, not passed over."""
    for t in (BookHealth, BookCrossed, Trade, KlineClosed, FundingRate):
        bus.subscribe(t, got.append)


def _updates(bus: EventBus, got: list[Any]) -> None:
    """BookUpdate events too, from a handler that takes batches (each one's events, in order)."""
    bus.subscribe(BookHealth, got.append)

    def batch(b: BookUpdates) -> None:
        got.extend(b.events())

    bus.subscribe(BookUpdate, got.append, batch=batch, batch_ok=lambda v, s: True)


def _one_by_one(adapter: VenueAdapter) -> Callable[[Iterable[Row], ReplayClock], None]:
    """``on_ws_rows`` without the batched loop: one ``on_ws`` per frame."""

    def on_ws_rows(rows: Iterable[Row], clock: ReplayClock = NO_CLOCK) -> None:
        for r in rows:
            adapter.on_ws(r[4], r[0], r[3])

    return on_ws_rows


def _run(recording: Path, subscribe: Subscribe, per_record: bool, stale_s: float) -> dict[str, Any]:
    settings = BotSettings()
    bus = EventBus()
    got: list[Any] = []
    feed = OfflineFeed(settings, SYMBOLS, bus.publish)
    rings = RingSet(settings.ring, feed.book, [(v, s) for v, ss in SYMBOLS.items() for s in ss], stale_after_s=stale_s)
    rings.attach(bus)
    if per_record:
        # the reference subscribes plain handlers (no batch form): the same events, one by one
        if subscribe is _updates:
            bus.subscribe(BookHealth, got.append)
            bus.subscribe(BookUpdate, got.append)
        else:
            subscribe(bus, got)

        def one_by_one(rows: Iterator[Row]) -> Iterator[Row]:
            for row in rows:
                rings.on_time(row[0])
                yield row

        for adapter in feed.adapters.values():
            adapter.on_ws_rows = _one_by_one(adapter)  # type: ignore[method-assign,assignment]
        feed.run(one_by_one(iter_rows(recording)))
    else:
        subscribe(bus, got)
        feed.run_frames(iter_frames(recording), clock=rings)
    out: dict[str, Any] = {"events": got, "counters": feed.counters, "published": bus.published}
    for key in rings.keys():  # noqa: SIM118 - a GridSet method, not a dict
        book = feed.books[key]
        out[f"book {key}"] = (book.to_dicts(), book.update_id, book.ts_event, book.top_of_book(), book.last_healed,
                              book.crossed_count, book.healed_levels)  # fmt: skip
        for g, grid in enumerate(rings.grids(*key)):
            out[f"grid {key} {g}"] = (grid.times().tolist(), np.nan_to_num(grid.window(), nan=-1.0).tolist())
    for name in ("unknown", "missing_book", "ignored_not_live", "stale_stops", "rows_retracted"):
        out[f"rings.{name}"] = getattr(rings, name)
    for venue, a in feed.adapters.items():
        for name in ("stats", "ignored", "pongs", "subscribe_failures", "tickers", "funding_views", "synced",
                     "states", "last_update_ns", "_closed_kline", "_waiting", "_book_depth"):  # fmt: skip
            out[f"{venue.value}.{name}"] = getattr(a, name)
        funding = getattr(a, "funding", None)
        out[f"{venue.value}.funding"] = None if funding is None else funding.stats
    return out


@pytest.mark.parametrize("subscribe", [_rings_only, _lists, _updates], ids=["rings", "lists", "updates"])
@pytest.mark.parametrize(("odd", "stale_s"), [(False, 30.0), (True, 30.0), (True, 0.3)],
                         ids=["demo", "odd", "odd_quiet_books"])  # fmt: skip
def test_offline_loop_equals_on_ws_one_frame_at_a_time(
    subscribe: Subscribe, odd: bool, stale_s: float, tmp_path: Path
) -> None:
    recording = _copy(tmp_path / "rec", odd)
    fast = _run(recording, subscribe, per_record=False, stale_s=stale_s)
    ref = _run(recording, subscribe, per_record=True, stale_s=stale_s)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key] == ref[key], key
    linear = ref["bybit_linear.stats"]
    assert linear.level_updates > 10_000
    assert sum(len(v[0]) for k, v in ref.items() if k.startswith("grid")) > 100
    if odd:
        assert linear.malformed >= 4
        assert sum(linear.gaps.values()) >= 3
        assert linear.crossed["ETHUSDT"] == 1
    if stale_s < 1:
        assert ref["rings.stale_stops"] > 0


def test_the_loop_takes_the_deltas_and_passes_over_what_nobody_receives(tmp_path: Path) -> None:
    """The fast path is taken: nearly every delta by the compiled loop, the tickers passed over."""
    calls: list[tuple[int, int, int, int, int]] = []
    loop = bk.apply_deltas

    def spy(*args: Any) -> tuple[int, int, int, int, int]:
        r = loop(*args)
        calls.append(r)
        return r

    bk.apply_deltas = spy  # type: ignore[assignment]
    try:
        _run(_copy(tmp_path / "rec", False), _rings_only, per_record=False, stale_s=30.0)
    finally:
        bk.apply_deltas = loop
    deltas = sum(c[3] for c in calls)
    later = sum(c[2] for c in calls)
    assert deltas > 2000
    assert later > 800
    assert len(calls) < (deltas + later) / 5  # stops are few: ticks, acks, snapshots


def test_route_topics_is_the_lookup_of_on_ws() -> None:
    names = [b"orderbook.200.BTCUSDT", b"orderbook.200.BTCUSD", b"tickers.BTCUSDT", b"kline.1.BTCUSDT"]
    frames = [
        b'{"topic":"orderbook.200.BTCUSDT","type":"delta"}',
        b'{"topic":"orderbook.200.BTCUSD","type":"delta"}',
        b'{"topic":"orderbook.200.BTCUSDT',  # no closing quote: the name runs to the last byte, left out
        b'{"topic":"orderbook.200.BTCUSDTx',
        b'{"topic":"orderbook.200.BTCUSD',
        b'{"type":"snapshot","topic":"kline.1.BTCUSDT","data":[]}',
        b'{"a":"' + b"x" * 31 + b'","topic":"tickers.BTCUSDT"}',  # the key ends at byte 48: found
        b'{"a":"' + b"x" * 32 + b'","topic":"tickers.BTCUSDT"}',  # one byte later: not
        b'{"topic":""}',
        b'{"topic":"',
        b'{"op":"pong"}',
        b"",
        b'{"topic":"tickers.BTCUSDT"',
        b'"topic":"tickers.BTCUSDT""',
    ]
    table = {n: i for i, n in enumerate(names)}

    def on_ws(raw: bytes) -> int:
        j = raw.find(b'"topic":"', 0, 48)
        return -1 if j < 0 else table.get(raw[j + 9 : raw.find(b'"', j + 9)], -1)

    data = b"\n".join(frames)
    starts = np.cumsum([0, *(len(f) + 1 for f in frames[:-1])], dtype=np.int64)
    ends = starts + np.array([len(f) for f in frames], np.int64)
    packed = np.frombuffer(b"".join(names), np.uint8)
    bounds = np.cumsum([0, *map(len, names)], dtype=np.int64)
    got = bk.route_topics(np.frombuffer(data, np.uint8), starts, ends, packed, bounds).tolist()
    assert got == [on_ws(f) for f in frames]
    assert got[:3] == [0, 1, 1]  # "...BTCUSDT" unclosed reads as "...BTCUSD"
    assert got[5:8] == [3, 2, -1]


def _books_of(adapter: BybitLinearAdapter) -> Callable[[Venue, str], OrderBook | None]:
    def get(venue: Venue, symbol: str) -> OrderBook | None:
        return adapter.books.get(symbol)

    return get


def test_a_crossed_delta_taken_by_the_loop_resyncs_a_live_adapter_as_on_ws_does(tmp_path: Path) -> None:
    rec = _copy(tmp_path / "rec", True)
    rows = [r for r in iter_rows(rec) if r[1] == "bybit_linear" and r[2] == "ws"]
    settings = BotSettings()
    cfg = settings.venues[Venue.BYBIT_LINEAR].model_copy(update={"symbols": SYMBOLS[Venue.BYBIT_LINEAR]})
    results = []
    for fast in (True, False):
        bus = EventBus()
        got: list[Event] = []
        for t in (BookHealth, BookCrossed):
            bus.subscribe(t, got.append)
        adapter = BybitLinearAdapter(cfg, settings.book, bus.publish, live=True)
        keys = [(Venue.BYBIT_LINEAR, s) for s in cfg.symbols]
        rings = RingSet(settings.ring, _books_of(adapter), keys)
        rings.attach(bus)
        if fast:
            for item in iter_frames(rec, venues=["bybit_linear"]):
                if hasattr(item, "end"):
                    adapter.on_ws_frames(item, rings)  # type: ignore[arg-type]
                else:
                    for ts, _, kind, _, raw in zip(*item, strict=True):
                        if kind == "ws":
                            rings.on_time(ts)
                            adapter.on_ws(raw, ts)
        else:
            for ts, _, _, _, raw in rows:
                rings.on_time(ts)
                adapter.on_ws(raw, ts)
        books = {s: b.to_dicts() for s, b in adapter.books.items()}
        results.append((got, adapter.stats, adapter.take_actions(), books))
    assert results[0] == results[1]
    assert sum(results[1][1].crossed.values()) >= 1  # healed...
    assert results[1][2]  # ...and resubscribed


def test_bus_batches_only_where_every_handler_takes_them() -> None:
    bus = EventBus()
    assert bus.batches(BookUpdate, Venue.BYBIT_SPOT, "BTCUSDT")
    assert not bus.wants(BookUpdate)
    seen: list[int] = []
    ok = {"BTCUSDT": True, "ETHUSDT": False}
    bus.subscribe(BookUpdate, lambda ev: None, batch=lambda b: seen.append(len(b)), batch_ok=lambda v, s: ok[s])
    assert bus.wants(BookUpdate)
    assert bus.takes_batches(BookUpdate)
    assert bus.batches(BookUpdate, Venue.BYBIT_SPOT, "BTCUSDT")
    assert not bus.batches(BookUpdate, Venue.BYBIT_SPOT, "ETHUSDT")
    z = np.zeros(3, np.int64)
    batch = BookUpdates(Venue.BYBIT_SPOT, ("BTCUSDT",), z, z, z, z, np.zeros((3, 4)), z[:1], z[:1])
    bus.publish_batch(BookUpdate, batch)
    assert seen == [3]
    assert bus.published == 3
    bus.subscribe(Event, lambda ev: None)  # a catch-all takes no batches
    assert not bus.takes_batches(BookUpdate)
    assert not bus.batches(BookUpdate, Venue.BYBIT_SPOT, "BTCUSDT")
    with pytest.raises(ValueError, match="takes no batches"):
        bus.publish_batch(BookUpdate, [])
    with pytest.raises(ValueError, match="go together"):
        bus.subscribe(BookUpdate, lambda ev: None, batch=lambda b: None)
