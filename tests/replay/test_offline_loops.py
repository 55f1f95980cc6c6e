"""The venue adapters' offline loops (``on_ws_frames``: diffs applied by ``bot.venues.bybit_kernels`` and
``bot.venues.binance_kernels``, their ``BookUpdate`` events published as batches, frames whose events nobody
receives passed over or only counted) against one ``on_ws`` per frame.

Both run the embedded demo recording (the real sessions: Bybit's six books with tickers, trades, klines and
acks; Binance spot and USD-M with bookTickers, trades and REST snapshots), and a copy of it with the odd
frames a real session can hold: diffs in another layout or with levels in another shape (the loops leave
them to the Python path), duplicates (stale, or a gap on Bybit), malformed levels, a diff of the wrong
symbol, crossed diffs, a stray snapshot, trades at the edges of what decodes, frames the routers must not
take, receive times that step back, a non-ASCII frame. The reference calls ``rings.on_time`` before every
record and hands frames over one at a time, so every event received, grid row, book, counter and ticker
must come out identical, for several sets of subscribers (which decide what a loop may take and what it
passes over), with grids that also stop and restart on quiet books.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from bot.book import OrderBook
from bot.bus import EventBus
from bot.config import BotSettings
from bot.events import BookCrossed, BookHealth, BookUpdate, BookUpdates, Event, KlineClosed, Trade, Venue
from bot.export import OfflineFeed
from bot.grid_set import RingSet
from bot.orders import FundingRate
from bot.recording import Record, Row, iter_frames, iter_rows
from bot.recording_writer import RecordingWriter
from bot.sim.cli import DEMO_DIR
from bot.venues import binance, binance_kernels, binance_offline, binance_wire, bybit, bybit_kernels
from bot.venues._shared import BookAdapter
from bot.venues.base import NO_CLOCK, ReplayClock, VenueAdapter
from bot.venues.bybit import BybitLinearAdapter

pytestmark = pytest.mark.replay

RECORDING = DEMO_DIR / "recording"
Mutation = Callable[[str], list[str]]


@pytest.fixture(autouse=True)
def _every_run_looped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loops on runs of every length: a short run otherwise goes frame by frame (``BookAdapter.few_frames``), and
    this copy of the demo interleaves spot and USD-M finely."""
    monkeypatch.setattr(BookAdapter, "few_frames", 0)


def _first(raw: str, side: str, level: str) -> str:
    """``raw`` with ``level`` put first on ``side``."""
    empty = f'"{side}":[]' in raw
    return raw.replace(f'"{side}":[', f'"{side}":[{level}' + ("" if empty else ","), 1)


def _settings(usdm_depth: str | None = None) -> BotSettings:
    """The defaults; ``usdm_depth``: USD-M's depth stream (the demo's is ``depth@0ms``: routed then)."""
    base = BotSettings()
    if usdm_depth is None:
        return base
    usdm = base.venues[Venue.BINANCE_USDM].model_copy(update={"depth": usdm_depth})
    return base.model_copy(update={"venues": {**base.venues, Venue.BINANCE_USDM: usdm}})


class Family(NamedTuple):
    settings: BotSettings
    symbols: dict[Venue, tuple[str, ...]]
    records: int  # of the demo's records of these venues
    mutations: dict[tuple[str, str, int], Mutation]  # (venue, symbol, its n-th diff) -> what it becomes
    extra: dict[str, list[str]]  # venue -> frames put in now and then
    diff: Callable[[str], str | None]  # the symbol of a diff frame, or None


def _bybit_diff(raw: str) -> str | None:
    if '"topic":"orderbook.200.' not in raw[:40] or '"type":"delta"' not in raw[:70]:
        return None
    return raw[24 : raw.index('"', 24)]


def _binance_diff(raw: str) -> str | None:
    if not raw.startswith('{"stream":"') or "@depth@" not in raw[:40]:
        return None
    return raw[11 : raw.index("@")].upper()


BYBIT = Family(
    _settings(),
    {Venue.BYBIT_LINEAR: ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"), Venue.BYBIT_SPOT: ("BTCUSDT", "ETHUSDT")},
    10**9,
    {
        ("bybit_linear", "BTCUSDT", 50): lambda raw: [raw.replace(',"a":', ', "a":', 1)],  # valid JSON, another layout
        ("bybit_linear", "BTCUSDT", 100): lambda raw: [raw.replace('"]', '" ]', 1)],  # whitespace in a level
        ("bybit_linear", "BTCUSDT", 150): lambda raw: [raw.replace('"cts":', '"xx":1,"cts":', 1)],  # another key
        ("bybit_linear", "ETHUSDT", 120): lambda raw: [_first(raw, "b", '["99999","1"]')],  # crossed, healed
        ("bybit_linear", "ETHUSDT", 200): lambda raw: [raw, raw],  # a duplicate: a gap (the book waits)
        ("bybit_linear", "SOLUSDT", 300): lambda raw: [_first(raw, "a", '["x","1"]')],  # malformed, then a gap
        ("bybit_linear", "DOGEUSDT", 330): lambda raw: [raw.replace('"s":"', '"s":"X', 1)],  # the wrong symbol
    },
    {
        "bybit_linear": [
            '{"topic":"orderbook.200.BTCUSDT"',  # truncated, routed
            '{"x":1,"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1,"data":{}}',  # routed, not first
            '{"topic":"orderbook.200.BTCUSDTX","type":"delta"}',  # a topic that only starts like ours
            '{"topic":"liquidation.BTCUSDT","ts":1,"data":[]}',  # a topic we do not know
            '{"op":"pong","args":["1"],"conn_id":"c"}',
            '{"topic":"publicTrade.BTCUSDT","data":[{"T":"x"}],"ts":1}',  # a malformed trade (passed over)
            '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":"x"},"ts":1}',
            '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}',
        ],
    },
    _bybit_diff,
)

_TRADE = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"%s","q":"1","T":1,"m":true,'
          '"M":true}}')  # fmt: skip
BINANCE = Family(
    _settings("depth@0ms"),
    {Venue.BINANCE_SPOT: ("BTCUSDT",), Venue.BINANCE_USDM: ("BTCUSDT", "ETHUSDT")},
    45_000,
    {
        ("binance_spot", "BTCUSDT", 50): lambda raw: [raw.replace(',"a":', ', "a":', 1)],  # valid JSON, another layout
        ("binance_spot", "BTCUSDT", 100): lambda raw: [raw.replace('"]', '" ]', 1)],  # whitespace in a level
        ("binance_spot", "BTCUSDT", 150): lambda raw: [raw, raw],  # a duplicate: stale, dropped
        ("binance_spot", "BTCUSDT", 200): lambda raw: [raw.replace('"E":', '"x":1,"E":', 1)],  # another key
        ("binance_spot", "BTCUSDT", 300): lambda raw: [_first(raw, "b", '["999999.00","1.0"]')],  # crossed, healed
        ("binance_usdm", "ETHUSDT", 100): lambda raw: [raw, raw],  # stale
        ("binance_usdm", "ETHUSDT", 150): lambda raw: [_first(raw, "a", '["0.01","1.0"]')],  # crossed, healed
        ("binance_usdm", "BTCUSDT", 60): lambda raw: [raw, _first(raw, "b", '["x","1"]')],  # stale, malformed levels
        ("binance_usdm", "BTCUSDT", 1500): lambda raw: [raw.replace('"s":"', '"s":"X', 1)],  # the wrong symbol
    },
    {
        "binance_spot": [
            _TRADE % "0",  # a price of 0: malformed
            _TRADE % "99999999999999.5",  # the largest the loop counts
            _TRADE % "100000000000000",  # decoded in Python: it is below 1e15
            _TRADE % "1e3",  # another shape: decoded in Python
            _TRADE.replace('"t":1', '"t":1,"x":[1]'),  # another key
            _TRADE[:60],  # truncated
            '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}',  # a stream not routed
            '{"result":null,"id":1}',  # a subscribe response
            '{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":1,"p":"1.0","q":"1.0","T":1,"m":true}',  # raw
        ],
        "binance_usdm": [
            '{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"T":1,"s":"ETHUSDT","t":1,"p":"1.5","q":"0",'
            '"X":"MARKET","m":false}}',
            '{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"T":1,"s":"ETHUSDT","t":1,"p":"1.5","q":"1",'
            '"X":"MAR KET","m":false}}',  # a space in X: decoded in Python
        ],
    },
    _binance_diff,
)
# The defaults (USD-M @depth@100ms) on the demo's @depth@0ms session: offline, a diff stream of another speed
# is the book's all the same, and it takes the same route (the compiled loop), not the parse_frame detour.
BINANCE_DEFAULT = BINANCE._replace(settings=_settings())
FAMILIES = {"bybit": BYBIT, "binance": BINANCE, "binance_default": BINANCE_DEFAULT}


def _copy(out: Path, family: Family, odd: bool) -> Path:
    """The demo's records of ``family``'s venues in small parts (many blocks), odd frames put in when ``odd``."""
    venues = {v.value for v in family.symbols}
    snapshot = None
    seen: dict[tuple[str, str], int] = {}
    with RecordingWriter(out, rotate_records=700) as w:
        n = 0
        for ts, venue, kind, key, raw in iter_rows(RECORDING):
            if venue not in venues:
                continue
            n += 1
            if n > family.records:
                break
            raws = [raw]
            if odd and kind == "ws":
                symbol = family.diff(raw)
                if symbol is not None:
                    seen[(venue, symbol)] = count = seen.get((venue, symbol), 0) + 1
                    mutate = family.mutations.get((venue, symbol, count))
                    raws = [raw] if mutate is None else mutate(raw)
                if snapshot is None and '"type":"snapshot"' in raw[:70] and "SOLUSDT" in raw[:40]:
                    snapshot = raw
                extra = family.extra.get(venue, [])
                if extra and n % 150 == 0:
                    raws.append(extra[(n // 150) % len(extra)])
                if n == 1100 and snapshot is not None:
                    raws.append(snapshot)  # an old snapshot again: the book restarts from it, then a gap
                if n == 1300:
                    raws.append(raw.replace("}", ',"note":"ünïcödé"}', 1))  # this block takes the text path
            if odd and n % 97 == 0:
                ts -= 3_000_000_000  # the local clock stepped back
            elif odd and n % 61 == 0:
                ts += 2_500_000_000  # one receive time far ahead of the next ones
            for r in raws:
                w.write(Record(ts, venue, kind, key, r))
    return out


Subscribe = Callable[[EventBus, list[Any], OfflineFeed], None]


def _rings_only(bus: EventBus, got: list[Any], feed: OfflineFeed) -> None:
    return None


def _lists(bus: EventBus, got: list[Any], feed: OfflineFeed) -> None:
    """Everything but BookUpdate: trades, klines and tickers are then handled in order, not passed over."""
    for t in (BookHealth, BookCrossed, Trade, KlineClosed, FundingRate):
        bus.subscribe(t, got.append)


def _updates(bus: EventBus, got: list[Any], feed: OfflineFeed) -> None:
    """BookUpdate events too, from a handler that takes batches (each one's events, in order)."""
    bus.subscribe(BookHealth, got.append)

    def batch(b: BookUpdates) -> None:
        got.extend(b.events())

    bus.subscribe(BookUpdate, got.append, batch=batch, batch_ok=lambda v, s: True)


def _late(bus: EventBus, got: list[Any], feed: OfflineFeed) -> None:
    """Trades subscribed, by a handler that reads the book at each one (as the paper matcher would), when a
    book is found crossed: in the middle of a block, where the loop applied that diff."""

    def on_trade(ev: Trade) -> None:
        book = feed.books[(ev.venue, ev.symbol)]
        got.append((repr(ev), book.update_id, repr(book.top_of_book())))

    def on_book(ev: BookHealth | BookCrossed) -> None:
        got.append(repr(ev))
        if isinstance(ev, BookCrossed) and not bus.wants(Trade):
            bus.subscribe(Trade, on_trade)

    bus.subscribe(BookHealth, on_book)
    bus.subscribe(BookCrossed, on_book)


def _one_by_one(adapter: VenueAdapter) -> Callable[[Iterable[Row], ReplayClock], None]:
    """``on_ws_rows`` without the batched loop: one ``on_ws`` per frame."""

    def on_ws_rows(rows: Iterable[Row], clock: ReplayClock = NO_CLOCK) -> None:
        for r in rows:
            adapter.on_ws(r[4], r[0], r[3])

    return on_ws_rows


def _run(
    recording: Path, family: Family, subscribe: Subscribe, per_record: bool, stale_s: float
) -> dict[str, Any]:
    settings = family.settings
    bus = EventBus()
    got: list[Any] = []
    feed = OfflineFeed(settings, family.symbols, bus.publish)
    keys = [(v, s) for v, ss in family.symbols.items() for s in ss]
    rings = RingSet(settings.ring, feed.book, keys, stale_after_s=stale_s)
    rings.attach(bus)
    if per_record:
        # the reference subscribes plain handlers (no batch form): the same events, one by one
        if subscribe is _updates:
            bus.subscribe(BookHealth, got.append)
            bus.subscribe(BookUpdate, got.append)
        else:
            subscribe(bus, got, feed)

        def one_by_one(rows: Iterator[Row]) -> Iterator[Row]:
            for row in rows:
                rings.on_time(row[0])
                yield row

        for adapter in feed.adapters.values():
            adapter.on_ws_rows = _one_by_one(adapter)  # type: ignore[method-assign,assignment]
        feed.run(one_by_one(iter_rows(recording)))
    else:
        subscribe(bus, got, feed)
        feed.run_frames(iter_frames(recording), clock=rings)
    # repr: an empty side's nan in an event makes two equal events compare unequal
    events = [e if isinstance(e, tuple | str) else repr(e) for e in got]
    out: dict[str, Any] = {"events": events, "counters": feed.counters, "published": bus.published}
    for key in rings.keys():  # noqa: SIM118 - a GridSet method, not a dict
        book = feed.books[key]
        out[f"book {key}"] = (book.to_dicts(), book.update_id, book.ts_event, book.top_of_book(), book.last_healed,
                              book.crossed_count, book.healed_levels)  # fmt: skip
        for g, grid in enumerate(rings.grids(*key)):
            out[f"grid {key} {g}"] = (grid.times().tolist(), np.nan_to_num(grid.window(), nan=-1.0).tolist())
    for name in ("unknown", "missing_book", "ignored_not_live", "stale_stops", "rows_retracted"):
        out[f"rings.{name}"] = getattr(rings, name)
    for venue, a in feed.adapters.items():
        for name in ("stats", "ignored", "pongs", "subscribe_failures", "funding_views", "synced",
                     "states", "last_update_ns", "_closed_kline", "_waiting", "_book_depth", "shutdown_notices",
                     "asked"):  # fmt: skip
            out[f"{venue.value}.{name}"] = getattr(a, name, None)
        sync = getattr(a, "_sync", None)
        if sync is not None:
            out[f"{venue.value}._sync"] = {
                s: (st.synced, st.last_event_ms, st.first_u, st.requested, [(e.U, e.u) for e in st.buffer])
                for s, st in sync.items()
            }
        funding = getattr(a, "funding", None)
        out[f"{venue.value}.funding"] = None if funding is None else funding.stats
    return out


@pytest.mark.parametrize("subscribe", [_rings_only, _lists, _updates, _late], ids=["rings", "lists", "updates", "late"])
@pytest.mark.parametrize(("odd", "stale_s"), [(False, 30.0), (True, 30.0), (True, 0.3)],
                         ids=["demo", "odd", "odd_quiet_books"])  # fmt: skip
@pytest.mark.parametrize("family", ["bybit", "binance"])
def test_offline_loop_equals_on_ws_one_frame_at_a_time(
    family: str, subscribe: Subscribe, odd: bool, stale_s: float, tmp_path: Path
) -> None:
    fam = FAMILIES[family]
    recording = _copy(tmp_path / "rec", fam, odd)
    fast = _run(recording, fam, subscribe, per_record=False, stale_s=stale_s)
    ref = _run(recording, fam, subscribe, per_record=True, stale_s=stale_s)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key] == ref[key], key
    main = ref["bybit_linear.stats" if family == "bybit" else "binance_usdm.stats"]
    assert main.level_updates > 10_000
    assert sum(len(v[0]) for k, v in ref.items() if k.startswith("grid")) > 100
    if odd and family == "bybit":
        assert main.malformed >= 4
        assert sum(main.gaps.values()) >= 3
        assert main.crossed["ETHUSDT"] == 1
    if odd and family == "binance":
        spot = ref["binance_spot.stats"]
        assert spot.crossed["BTCUSDT"] >= 1
        assert main.crossed["ETHUSDT"] >= 1
        assert spot.dropped_stale["BTCUSDT"] >= 1
        assert main.dropped_stale["ETHUSDT"] >= 1
        assert spot.malformed >= 3
    if stale_s < 1:
        assert ref["rings.stale_stops"] > 0


@pytest.mark.parametrize("family", ["bybit", "binance", "binance_default"])
def test_the_loop_takes_the_diffs_and_passes_over_what_nobody_receives(family: str, tmp_path: Path) -> None:
    """The fast path is taken: nearly every diff by the compiled loop, the tickers passed over (Bybit), the
    trades only counted (Binance)."""
    calls: list[tuple[int, ...]] = []
    mod: Any = bybit_kernels if family == "bybit" else binance_kernels
    name = "apply_deltas" if family == "bybit" else "apply_diffs"
    seen: list[str] = []
    parse = binance_wire.parse_frame
    users: tuple[Any, ...] = (binance, binance_offline)  # where on_ws and on_ws_frames look parse_frame up

    def spy_parse(raw: str | bytes, futures: bool = False) -> Any:
        seen.append(str(raw[:40]))
        return parse(raw, futures)

    loop = getattr(mod, name)

    def spy(*args: Any) -> tuple[int, ...]:
        r: tuple[int, ...] = loop(*args)
        calls.append(r)
        return r

    put_off: list[int] = []  # Bybit: ticker frames that carry no funding pair, settled in bulk
    repeats = bybit._BybitAdapter._repeats

    def spy_repeats(self: Any, symbol: str, mark_frame: bytes | None, count: int) -> None:
        put_off.append(count)
        repeats(self, symbol, mark_frame, count)

    setattr(mod, name, spy)
    for m in users:
        m.parse_frame = spy_parse
    bybit._BybitAdapter._repeats = spy_repeats  # type: ignore[method-assign]
    try:
        out = _run(_copy(tmp_path / "rec", FAMILIES[family], False), FAMILIES[family], _rings_only, False, 30.0)
    finally:
        setattr(mod, name, loop)
        for m in users:
            m.parse_frame = parse
        bybit._BybitAdapter._repeats = repeats  # type: ignore[method-assign]
    levels = sum(c[4] for c in calls)
    later = sum(c[2] for c in calls)
    quiet = sum(c[5] for c in calls) if family != "bybit" else 0
    applied = sum(v.level_updates for k, v in out.items() if k.endswith(".stats"))
    assert levels > 0.7 * applied  # the rest: snapshots, and diffs while a book syncs (Binance buffers them)
    assert later + quiet + sum(put_off) > 800
    if family == "bybit":
        assert sum(put_off) > 500  # most tickers never reach Python one by one
    if family == "bybit":
        assert len(calls) < (sum(c[3] for c in calls) + later) / 5  # stops are few: ticks, acks, snapshots
    else:
        assert not [h for h in seen if "@depth" in h]  # no diff took the detour, whatever speed is configured


def test_a_diff_stream_of_another_speed_replays_as_the_configured_one(tmp_path: Path) -> None:
    """Offline, the demo's @depth@0ms frames give with the defaults (@depth@100ms) what they give configured."""
    recording = _copy(tmp_path / "rec", BINANCE, True)
    configured = _run(recording, BINANCE, _lists, False, 30.0)
    default = _run(recording, BINANCE_DEFAULT, _lists, False, 30.0)
    assert configured.keys() == default.keys()
    for key in configured:
        assert default[key] == configured[key], key
    assert configured["binance_usdm.stats"].level_updates > 10_000


def _interleaved(out: Path, venue: str, symbol: str, first: str, diff: str, trade: str, cross_at: int = -1) -> Path:
    """One block of ``venue``'s real records of ``symbol`` from the first one holding ``first`` on: its diffs
    with one of its trades after every third diff (the trades' receive times moved up to their place); the
    diff number ``cross_at`` gets an ask far below the book (crossed, healed)."""
    head: list[Row] = []
    diffs: list[Row] = []
    trades: list[Row] = []
    for row in iter_rows(RECORDING):
        ours = row[3] == symbol if row[2] == "snapshot" else row[2] == "ws" and symbol.lower() in row[4][:40].lower()
        if row[1] != venue or not ours:
            continue
        if not head:
            if first in row[4][:80]:
                head.append(row)
            continue
        if row[2] == "snapshot":
            diffs.append(row)
        elif diff in row[4][:40] and len(diffs) < 60:
            if len(diffs) == cross_at:
                row = (*row[:4], _first(row[4], "a", '["0.01","1.0"]'))
            diffs.append(row)
        elif trade in row[4][:40] and len(trades) < 20:
            trades.append(row)
    with RecordingWriter(out) as w:
        rows = [*head, (head[0][0], venue, "info", "/x", "{}")]  # another kind: the frames after it are a new run
        for k, d in enumerate(diffs):
            rows.append(d)
            if k % 3 == 0 and trades:
                t = trades.pop(0)
                rows.append((d[0], *t[1:]))
        for r in rows:
            w.write(Record(*r))
    return out


@pytest.mark.parametrize("family", ["bybit", "binance"])
def test_a_subscription_made_inside_a_block_is_honoured_from_the_next_frame(family: str, tmp_path: Path) -> None:
    """A handler subscribes trades (reading the book at each one) inside a block, when a diff the loop applied
    crossed the book: the trades after it are handled in order, on the book as it stands then, not passed
    over (Bybit) or only counted (Binance)."""
    if family == "bybit":
        rec = _interleaved(tmp_path / "rec", "bybit_linear", "BTCUSDT", '"orderbook', "orderbook.", "publicTrade", 20)
        fam = BYBIT._replace(symbols={Venue.BYBIT_LINEAR: ("BTCUSDT",)})
    else:
        rec = _interleaved(tmp_path / "rec", "binance_usdm", "ETHUSDT", "@", "@depth@", "@trade", cross_at=20)
        fam = BINANCE._replace(symbols={Venue.BINANCE_USDM: ("ETHUSDT",)})
    fast = _run(rec, fam, _late, per_record=False, stale_s=30.0)
    ref = _run(rec, fam, _late, per_record=True, stale_s=30.0)
    assert fast == ref
    assert sum(isinstance(e, tuple) for e in ref["events"]) >= 5  # trades seen, after the crossed diff


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
    got = bybit_kernels.route_topics(np.frombuffer(data, np.uint8), starts, ends, packed, bounds).tolist()
    assert got == [on_ws(f) for f in frames]
    assert got[:3] == [0, 1, 1]  # "...BTCUSDT" unclosed reads as "...BTCUSD"
    assert got[5:8] == [3, 2, -1]


def _books_of(adapter: BybitLinearAdapter) -> Callable[[Venue, str], OrderBook | None]:
    def get(venue: Venue, symbol: str) -> OrderBook | None:
        return adapter.books.get(symbol)

    return get


def test_a_crossed_delta_taken_by_the_loop_resyncs_a_live_adapter_as_on_ws_does(tmp_path: Path) -> None:
    rec = _copy(tmp_path / "rec", BYBIT, True)
    rows = [r for r in iter_rows(rec) if r[1] == "bybit_linear" and r[2] == "ws"]
    settings = BotSettings()
    cfg = settings.venues[Venue.BYBIT_LINEAR].model_copy(update={"symbols": BYBIT.symbols[Venue.BYBIT_LINEAR]})
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


@pytest.mark.parametrize("family", ["bybit", "binance"])
def test_frames_replay_without_a_clock(family: str, tmp_path: Path) -> None:
    """``run_frames`` without a clock (``NO_CLOCK``, never due: its time is the largest int64 the compiled
    loops take) applies every diff as with one; no grid rows are written then."""
    fam = FAMILIES[family]
    recording = _copy(tmp_path / "rec", fam, False)
    ref = _run(recording, fam, _rings_only, False, 30.0)  # first: the loops compiled for a real clock's int64
    bus = EventBus()
    feed = OfflineFeed(fam.settings, fam.symbols, bus.publish)
    rings = RingSet(fam.settings.ring, feed.book, [(v, s) for v, ss in fam.symbols.items() for s in ss])
    rings.attach(bus)  # batches taken: the compiled loops run
    feed.run_frames(iter_frames(recording))
    for venue, adapter in feed.adapters.items():
        assert adapter.stats.level_updates == ref[f"{venue.value}.stats"].level_updates > 1000
    assert all(len(g.times()) == 0 for key in rings.keys() for g in rings.grids(*key))  # noqa: SIM118


@pytest.mark.parametrize("family", ["bybit", "binance"])
def test_short_runs_frame_by_frame_give_what_the_loop_gives(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of up to ``BookAdapter.few_frames`` frames go to ``on_ws`` one by one: the same events, books, grids and
    counters as the loop on every run (here every run of the copy goes so)."""
    fam = FAMILIES[family]
    recording = _copy(tmp_path / "rec", fam, True)
    looped = _run(recording, fam, _lists, False, 30.0)
    monkeypatch.setattr(BookAdapter, "few_frames", 10**9)
    mixed = _run(recording, fam, _lists, False, 30.0)
    assert looped.keys() == mixed.keys()
    for key in looped:
        assert mixed[key] == looped[key], key
