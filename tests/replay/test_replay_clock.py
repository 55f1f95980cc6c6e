"""The offline feed's loops: recorded frames handed over in bulk give what one frame at a time gives.

``OfflineFeed.run_frames(iter_frames(...), clock=rings)`` hands each venue's frames to its adapter as they
lie in the decompressed block; the adapter routes them in one compiled pass, skips the streams it does
not use without looking at them in Python, and calls ``rings.on_time`` only where a grid is due. The
reference calls ``on_time`` before every record and hands the adapters one frame at a time through
``on_ws`` (no batched loop at all). Both run the embedded demo recording (all four markets, shipped in the
repository), and a copy of it with the odd frames a real session can hold (unknown streams, responses,
truncated frames, malformed levels, a dropped diff, receive times that step back, a non-ASCII frame), so
every published event, grid, book and counter must come out identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bot.bus import EventBus
from bot.config import BotSettings
from bot.events import Event, Venue
from bot.export import OfflineFeed
from bot.grid_set import RingSet
from bot.recording import Record, Row, iter_frames, iter_rows, read_manifest
from bot.recording_writer import RecordingWriter
from bot.sim.cli import DEMO_DIR

pytestmark = pytest.mark.replay

RECORDING = DEMO_DIR / "recording"


def _run(recording: Path, per_record: bool) -> tuple[OfflineFeed, RingSet, list[Event]]:
    symbols = {Venue(v): tuple(s) for v, s in read_manifest(RECORDING)["symbols"].items()}
    settings = BotSettings()
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(Event, events.append)
    feed = OfflineFeed(settings, symbols, bus.publish)
    rings = RingSet(settings.ring, feed.book, [(v, s) for v, ss in symbols.items() for s in ss])
    rings.attach(bus)
    if not per_record:
        feed.run_frames(iter_frames(recording), clock=rings)
        return feed, rings, events

    def one_by_one(rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            rings.on_time(row[0])
            yield row

    for adapter in feed.adapters.values():  # no batched loop: one on_ws per frame
        adapter.on_ws_rows = lambda rows, clock, a=adapter: [a.on_ws(r[4], r[0], r[3]) for r in rows]  # type: ignore[method-assign]
    feed.run(one_by_one(iter_rows(recording)))
    return feed, rings, events


def _odd_copy(out: Path, only: str | None = None) -> Path:
    """The demo recording with odd frames put in, in small parts (many blocks, many runs); ``only``: one
    venue's records alone (long runs of frames), ending with bookTickers past its last diff."""
    odd = {
        1000: '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}',  # a stream not routed
        1001: '{"result":null,"id":1}',  # a subscribe response
        1002: '{"stream":"btcusdt@trade","data":{"e":"trade","E":1',  # truncated
        1003: '{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":1,"p":"1.0","q":"1.0","T":1,"m":true}',  # raw
        1004: '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,'
        '"b":[["x","1"]],"a":[]}}',  # malformed levels (an old update id: dropped as stale)
    }
    with RecordingWriter(out, rotate_records=7000) as w:
        depth_seen = 0
        last = 0
        for i, (ts, venue, kind, key, raw) in enumerate(iter_rows(RECORDING)):
            if i in odd:
                w.write(Record(ts, "binance_spot", "ws", "-", odd[i]))
            if only is not None and venue != only:
                continue
            if venue == "binance_usdm" and kind == "ws" and "@depth" in raw[:30]:
                depth_seen += 1
                if depth_seen == 2000:
                    continue  # a dropped diff: a gap, then a resync the recording cannot answer
            if i % 997 == 0:
                ts -= 3_000_000_000  # the local clock stepped back
            elif i % 331 == 0:
                ts += 2_500_000_000  # one receive time far ahead of the next ones
            if i == 117_000 and venue.startswith("bybit"):
                raw = raw.replace("}", ',"note":"ünïcödé"}', 1)  # this block takes the text path
            w.write(Record(ts, venue, kind, key, raw))
            last = ts
        if only is not None:
            ticker = '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}'
            for k in range(1, 6):
                w.write(Record(last + k * 1_500_000_000, only, "ws", "-", ticker))
    return out


@pytest.mark.parametrize(
    ("odd", "only"),
    [(False, None), (True, None), (True, "binance_spot")],
    ids=["demo", "demo_with_odd_frames", "binance_spot_alone_with_odd_frames"],
)
def test_events_grids_books_and_counts_equal_handling_every_record_one_by_one(
    odd: bool, only: str | None, tmp_path: Path
) -> None:
    recording = _odd_copy(tmp_path / "odd", only) if odd else RECORDING
    fast_feed, fast, fast_events = _run(recording, per_record=False)
    ref_feed, ref, ref_events = _run(recording, per_record=True)

    assert fast_events == ref_events
    assert len(ref_events) > 10_000
    keys = fast.keys()
    assert keys == ref.keys()
    rows = 0
    for key in keys:
        for a, b in ((fast.coarse(*key), ref.coarse(*key)), (fast.fine(*key), ref.fine(*key))):
            np.testing.assert_array_equal(a.times(), b.times())
            np.testing.assert_array_equal(a.window(), b.window())
            rows += len(a)
        assert fast_feed.books[key].to_dicts() == ref_feed.books[key].to_dicts()
    assert rows > (1000 if only is None else 300)  # the demo spans minutes: many grid rows on every market
    assert fast_feed.counters == ref_feed.counters
    for venue, adapter in fast_feed.adapters.items():
        assert adapter.stats == ref_feed.adapters[venue].stats
        assert adapter.ignored == ref_feed.adapters[venue].ignored  # type: ignore[attr-defined]
    if odd:
        assert fast_feed.adapters[Venue.BINANCE_SPOT].stats.malformed >= 1  # the truncated frame
    if odd and only is None:
        assert sum(fast_feed.adapters[Venue.BINANCE_USDM].stats.gaps.values()) >= 1  # the dropped diff
