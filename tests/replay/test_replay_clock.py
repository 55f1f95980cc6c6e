"""The offline feed's replay clock: grids ticked inside the adapters' loops equal grids ticked per record.

``OfflineFeed.run_blocks(blocks, clock=rings)`` hands column blocks to the adapters' own loops, which
call ``rings.on_time`` only for records past ``rings.due``. The reference below calls ``on_time`` before
every record and hands the adapters one frame at a time through ``on_ws`` (no batched loop at all). Both
run the embedded demo recording (all four markets, shipped in the repository), so the grids, books and
counters must come out identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from bot.bus import EventBus
from bot.config import BotSettings
from bot.events import Venue
from bot.export import OfflineFeed
from bot.recording import Row, iter_blocks, iter_rows, read_manifest
from bot.ring import RingSet
from bot.sim.cli import DEMO_DIR

pytestmark = pytest.mark.replay

RECORDING = DEMO_DIR / "recording"


def _run(per_record: bool) -> tuple[OfflineFeed, RingSet]:
    symbols = {Venue(v): tuple(s) for v, s in read_manifest(RECORDING)["symbols"].items()}
    settings = BotSettings()
    bus = EventBus()
    feed = OfflineFeed(settings, symbols, bus.publish)
    rings = RingSet(settings.ring, feed.book, [(v, s) for v, ss in symbols.items() for s in ss])
    rings.attach(bus)
    if not per_record:
        feed.run_blocks(iter_blocks(RECORDING), clock=rings)
        return feed, rings

    def one_by_one(rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            rings.on_time(row[0])
            yield row

    for adapter in feed.adapters.values():  # no batched loop: one on_ws per frame
        adapter.on_ws_rows = lambda rows, clock, a=adapter: [a.on_ws(r[4], r[0], r[3]) for r in rows]  # type: ignore[method-assign]
    feed.run(one_by_one(iter_rows(RECORDING)))
    return feed, rings


def test_grids_books_and_counts_equal_ticking_and_handling_every_record_one_by_one() -> None:
    fast_feed, fast = _run(per_record=False)
    ref_feed, ref = _run(per_record=True)

    keys = fast.keys()
    assert keys == ref.keys()
    rows = 0
    for key in keys:
        for a, b in ((fast.coarse(*key), ref.coarse(*key)), (fast.fine(*key), ref.fine(*key))):
            np.testing.assert_array_equal(a.times(), b.times())
            np.testing.assert_array_equal(a.window(), b.window())
            rows += len(a)
        assert fast_feed.books[key].to_dicts() == ref_feed.books[key].to_dicts()
    assert rows > 1000  # the demo spans minutes: many grid rows on every market
    for venue, adapter in fast_feed.adapters.items():
        assert adapter.stats == ref_feed.adapters[venue].stats
