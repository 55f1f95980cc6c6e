"""Binance book sync (shared/PROTOCOLS.md 2.4 spot, 3.4 USD-M), driven by real recorded sequences.

Faults (gaps, duplicates, reorders, stale snapshots) are cut out of the real streams. Where a test needs a
second snapshot (the recordings hold one), it is built by ``reference_snapshot``: an independent replay
with orjson and plain dicts of the venue's own strings, no bot code, emitted as a REST body.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest

from bot.config import BookConfig, VenueConfig
from bot.events import BookCrossed, BookHealth, BookState, BookUpdate, Event
from bot.venues.base import NeedSnapshot
from bot.venues.binance import BinanceSpotAdapter, BinanceUsdmAdapter

pytestmark = pytest.mark.unit

Line = tuple[int, bytes]
SPOT_L = 50093239218  # lastUpdateId of the spot REST snapshot
ETH_L = 4984028386786  # lastUpdateId of the ETH USD-M snapshot: its first valid event has u == L
NS = 1_000_000


def _load(rel: str) -> list[Line]:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / rel).is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    out = []
    with gzip.open(root / rel) as f:
        for line in f:
            ts, raw = line.rstrip(b"\n").split(b" ", 1)
            out.append((int(ts), raw))
    return out


@pytest.fixture(scope="module")
def spot() -> list[Line]:
    """The spot BTCUSDT 2024-08-08 file: depth and snapshot lines only (trades, bookTicker dropped)."""
    return [x for x in _load("hftbacktest/examples/spot/btcusdt_20240808.gz") if not _ticker_or_trade(x[1])]


@pytest.fixture(scope="module")
def eth() -> list[Line]:
    return [x for x in _load("hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz") if not _ticker_or_trade(x[1])]


@pytest.fixture(scope="module")
def btc_usdm() -> list[Line]:
    return [x for x in _load("hftbacktest/examples/usdm/btcusdt_20240808.gz") if not _ticker_or_trade(x[1])]


def _ticker_or_trade(raw: bytes) -> bool:
    return b"@bookTicker" in raw[:40] or b"@trade" in raw[:40]


def _is_snapshot(raw: bytes) -> bool:
    return raw.startswith(b'{"lastUpdateId"')


def _ids(raw: bytes) -> tuple[int, int]:
    d = orjson.loads(raw)["data"]
    return d["U"], d["u"]


def reference_snapshot(lines: list[Line], futures: bool, upto_u: int) -> bytes:
    """The book after the event whose final id is ``upto_u``, as a REST snapshot body (independent replay).

    The recordings are gap-free, so: the snapshot, then every diff (before or after it in the file) whose
    ``u`` is past the snapshot's id (spot ``u > L``, USD-M ``u >= L``), in file order.
    """
    snap = next(orjson.loads(raw) for _, raw in lines if _is_snapshot(raw))
    last = snap["lastUpdateId"]
    book: tuple[dict[str, str], dict[str, str]] = (dict(snap["bids"]), dict(snap["asks"]))
    for _, raw in lines:
        if _is_snapshot(raw):
            continue
        d = orjson.loads(raw)["data"]
        if d["u"] < last if futures else d["u"] <= last:
            continue
        for side, levels in zip(book, (d["b"], d["a"]), strict=True):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        if d["u"] == upto_u:
            bids = sorted(book[0].items(), key=lambda x: -float(x[0]))
            asks = sorted(book[1].items(), key=lambda x: float(x[0]))
            return orjson.dumps({"lastUpdateId": upto_u, "bids": bids, "asks": asks})
    raise AssertionError(f"no event with u={upto_u}")


def _float_book(body: bytes) -> tuple[dict[float, float], dict[float, float]]:
    m = orjson.loads(body)
    return {float(p): float(q) for p, q in m["bids"]}, {float(p): float(q) for p, q in m["asks"]}


def _adapter(cls: type, depth: str, live: bool = False, symbol: str = "BTCUSDT") -> tuple:
    events: list[Event] = []
    cfg = VenueConfig(ws_url="wss://x.test", rest_url="https://x.test", symbols=(symbol,), depth=depth, klines=())
    return cls(cfg, BookConfig(stale_after_s=10), events.append, live=live), events


def _spot_adapter(live: bool = False) -> tuple[BinanceSpotAdapter, list[Event]]:
    return _adapter(BinanceSpotAdapter, "depth@100ms", live)  # type: ignore[no-any-return]


def _feed(adapter: BinanceSpotAdapter | BinanceUsdmAdapter, lines: list[Line], symbol: str = "BTCUSDT") -> None:
    for ts, raw in lines:
        if _is_snapshot(raw):
            adapter.on_snapshot(symbol, raw, ts)
        else:
            adapter.on_ws(raw, ts, "binance/stream")


def _states(events: list[Event]) -> list[tuple[BookState, str]]:
    return [(e.state, e.reason) for e in events if isinstance(e, BookHealth)]


# -- spot -----------------------------------------------------------------------------------------------------
def test_spot_start_buffers_diffs_asks_once_and_syncs_through_the_straddling_event(spot: list[Line]) -> None:
    # Arrange: the first three diffs arrive before the snapshot (ids 189-202, 203-207, 208-224)
    adapter, events = _spot_adapter()
    before = [x for x in spot[:4] if not _is_snapshot(x[1])]
    assert [_ids(raw) for _, raw in before] == [
        (50093239189, 50093239202),
        (50093239203, 50093239207),
        (50093239208, 50093239224),
    ]
    snapshot = next(x for x in spot if _is_snapshot(x[1]))

    # Act 1: diffs only
    _feed(adapter, before)

    # Assert 1: one snapshot request, nothing published but SYNCING
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
    assert _states(events) == [(BookState.SYNCING, "start")]
    assert adapter.states["BTCUSDT"] is BookState.SYNCING

    # Act 2: the snapshot (lastUpdateId 218): drop u <= 218, apply 208-224 (208 <= 219 <= 224)
    adapter.on_snapshot("BTCUSDT", snapshot[1], snapshot[0])

    # Assert 2
    updates = [e for e in events if isinstance(e, BookUpdate)]
    assert [(e.update_id, e.snapshot) for e in updates] == [(SPOT_L, True), (50093239224, False)]
    assert updates[0].ts_event == 1723161255408 * NS  # spot snapshots carry no time: the newest diff's E
    assert (updates[0].bid_px, updates[0].bid_sz, updates[0].ask_px, updates[0].ask_sz) == (
        61837.63,
        3.78826,
        61837.64,
        1.54698,
    )
    assert _states(events)[-1] == (BookState.LIVE, "in sync")
    assert 61820.99 not in adapter.books["BTCUSDT"].to_dicts()[0]  # deleted by 208-224 although the snapshot had it
    assert adapter.take_actions() == []
    assert adapter.stats.gaps["BTCUSDT"] == 0


def test_spot_snapshot_older_than_the_first_buffered_event_is_requested_again(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    snap_ts, snap = next(x for x in spot if _is_snapshot(x[1]))
    stale = snap.replace(b'"lastUpdateId":50093239218', b'"lastUpdateId":50093239100')  # < first U 189
    _feed(adapter, spot[:3])
    adapter.take_actions()

    adapter.on_snapshot("BTCUSDT", stale, snap_ts)

    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
    assert adapter.states["BTCUSDT"] is BookState.SYNCING
    adapter.on_snapshot("BTCUSDT", snap, snap_ts)
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    assert adapter.books["BTCUSDT"].update_id == 50093239224
    assert not [e for e in events if isinstance(e, BookUpdate) and e.update_id == 50093239100]


def test_spot_snapshot_newer_than_every_buffered_event_waits_for_the_next_diff(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    diffs = [x for x in spot[:12] if not _is_snapshot(x[1])]
    snap_ts, snap = next(x for x in spot if _is_snapshot(x[1]))
    _feed(adapter, diffs[:2])  # u up to 207 < 218

    adapter.on_snapshot("BTCUSDT", snap, snap_ts)

    assert adapter.states["BTCUSDT"] is BookState.SYNCING
    assert not [e for e in events if isinstance(e, BookUpdate)]
    _feed(adapter, diffs[2:4])
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    assert [e.update_id for e in events if isinstance(e, BookUpdate)] == [SPOT_L, 50093239224, _ids(diffs[3][1])[1]]
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]  # the one request, from the first diff


def test_spot_snapshot_ending_exactly_at_the_last_buffered_event_syncs_on_the_next_diff(spot: list[Line]) -> None:
    # The first-U check of step 4 is against the first diff received, not the first one left after the drop:
    # a snapshot with lastUpdateId == u of the newest buffered diff empties the buffer, and the next diff
    # (U == L + 1) is the first kept one.
    adapter, events = _spot_adapter()
    diffs = [x for x in spot[:20] if not _is_snapshot(x[1])]
    _feed(adapter, diffs[:3])  # u up to 50093239224
    adapter.take_actions()

    adapter.on_snapshot("BTCUSDT", reference_snapshot(spot, False, 50093239224), 0)
    assert adapter.take_actions() == []
    _feed(adapter, diffs[3:5])

    assert adapter.states["BTCUSDT"] is BookState.LIVE
    assert [e.update_id for e in events if isinstance(e, BookUpdate)] == [
        50093239224,
        _ids(diffs[3][1])[1],
        _ids(diffs[4][1])[1],
    ]
    assert adapter.take_actions() == []


def test_spot_without_an_event_straddling_the_snapshot_restarts(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    diffs = [x for x in spot[:12] if not _is_snapshot(x[1])]
    snap_ts, snap = next(x for x in spot if _is_snapshot(x[1]))
    _feed(adapter, [diffs[0], diffs[1], diffs[3]])  # 208-224 lost: the next one starts at 225 > 219
    adapter.take_actions()

    adapter.on_snapshot("BTCUSDT", snap, snap_ts)

    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
    assert adapter.states["BTCUSDT"] is BookState.RESYNCING
    assert not [e for e in events if isinstance(e, BookUpdate)]


def test_spot_gap_after_sync_restarts_and_a_fresh_snapshot_restores_the_exact_book(spot: list[Line]) -> None:
    # Arrange: drop the 300th diff after the snapshot
    adapter, events = _spot_adapter()
    diffs = [x for x in spot[:4000] if not _is_snapshot(x[1])]
    k = 300
    lost_u = _ids(diffs[k][1])[1]
    gap_event_u = _ids(diffs[k + 1][1])[1]
    with_gap = [x for x in spot[:4000] if x is not diffs[k]]
    cut = with_gap.index(diffs[k + 1])

    # Act 1: up to and including the event after the lost one
    _feed(adapter, with_gap[: cut + 1])

    # Assert 1
    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.stats.resyncs["BTCUSDT"] == 1
    assert _states(events)[-1] == (BookState.RESYNCING, f"gap after update {_ids(diffs[k - 1][1])[1]}")
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT"), NeedSnapshot("BTCUSDT")]  # start, then the gap
    assert len(adapter.books["BTCUSDT"]) == 0

    # Act 2: a snapshot right after the lost event is refused (its id is below the first buffered U: the spot
    # procedure asks again); more diffs arrive (buffered); a snapshot taken a few events later is accepted.
    adapter.on_snapshot("BTCUSDT", reference_snapshot(spot, False, lost_u), 0)
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
    _feed(adapter, with_gap[cut + 1 : cut + 20])
    later_u = _ids(with_gap[cut + 5][1])[1]
    adapter.on_snapshot("BTCUSDT", reference_snapshot(spot, False, later_u), 0)
    _feed(adapter, with_gap[cut + 20 :])

    # Assert 2: in sync again from that snapshot on, and the book equals the reference
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    updates = [e.update_id for e in events if isinstance(e, BookUpdate)]
    assert gap_event_u not in updates
    assert later_u in updates
    last_u = _ids(diffs[-1][1])[1]
    assert adapter.books["BTCUSDT"].to_dicts() == _float_book(reference_snapshot(spot, False, last_u))
    assert adapter.stats.gaps["BTCUSDT"] == 1


def test_spot_duplicate_diff_is_dropped_and_counted(spot: list[Line]) -> None:
    adapter, _ = _spot_adapter()
    lines = spot[:200]
    i = max(j for j, x in enumerate(lines) if not _is_snapshot(x[1]))
    _feed(adapter, lines)
    before = adapter.books["BTCUSDT"].to_dicts()

    _feed(adapter, [lines[i], lines[i - 1]])  # the last one again, and an older one

    assert adapter.stats.dropped_stale["BTCUSDT"] == 2
    assert adapter.stats.gaps["BTCUSDT"] == 0
    assert adapter.books["BTCUSDT"].to_dicts() == before
    assert adapter.states["BTCUSDT"] is BookState.LIVE


def test_spot_reordered_diffs_are_a_gap(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    lines = spot[:200]
    a, b = lines[150], lines[151]
    assert not _is_snapshot(a[1])
    assert not _is_snapshot(b[1])

    _feed(adapter, [*lines[:150], b, a])

    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.states["BTCUSDT"] is BookState.RESYNCING
    assert adapter.take_actions()[-1] == NeedSnapshot("BTCUSDT")
    assert not [e for e in events if isinstance(e, BookUpdate) and e.update_id == _ids(b[1])[1]]


def test_buffer_overflow_while_waiting_for_a_snapshot_drops_the_buffer_and_asks_again(spot: list[Line]) -> None:
    adapter, _ = _spot_adapter()
    adapter.max_buffer_levels = 500
    diffs = [x for x in spot[:400] if not _is_snapshot(x[1])]

    _feed(adapter, diffs)

    overflows = adapter.stats.buffer_overflows["BTCUSDT"]
    assert overflows >= 2
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")] * (1 + overflows)
    assert adapter._sync["BTCUSDT"].buffered_levels <= 500


def test_failed_snapshot_request_is_asked_again_and_a_late_good_one_still_syncs(spot: list[Line]) -> None:
    adapter, _ = _spot_adapter()
    _feed(adapter, spot[:3])
    adapter.take_actions()

    adapter.on_snapshot_failed("BTCUSDT", "HTTP 503")

    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
    _feed(adapter, spot[3:40])
    assert adapter.states["BTCUSDT"] is BookState.LIVE


def test_disconnect_clears_the_book_and_the_next_diff_asks_for_a_new_snapshot(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    _feed(adapter, spot[:100])
    adapter.take_actions()
    assert adapter.states["BTCUSDT"] is BookState.LIVE

    adapter.on_disconnect("binance_spot/stream", 123)

    assert _states(events)[-1] == (BookState.RESYNCING, "disconnected (binance_spot/stream)")
    assert len(adapter.books["BTCUSDT"]) == 0
    assert adapter.stats.resyncs["BTCUSDT"] == 1
    assert adapter.take_actions() == []
    _feed(adapter, spot[100:101])
    assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]


def test_usdm_disconnect_of_the_kline_connection_leaves_the_books_alone(btc_usdm: list[Line]) -> None:
    cfg = VenueConfig(
        ws_url="wss://x.test",
        rest_url="https://x.test",
        symbols=("BTCUSDT",),
        depth="depth@0ms",
        klines=("1m",),
        ws_path="/stream",
        ws_kline_path="/market/stream",
    )
    adapter = BinanceUsdmAdapter(cfg, BookConfig(), lambda e: None, live=False)
    names = [c.name for c in adapter.connections()]
    assert names == ["binance_usdm/depth", "binance_usdm/klines"]
    _feed(adapter, btc_usdm[:100])
    assert adapter.states["BTCUSDT"] is BookState.LIVE

    adapter.on_disconnect("binance_usdm/klines", 1)

    assert adapter.states["BTCUSDT"] is BookState.LIVE


def test_live_book_without_updates_turns_stale_and_back_to_live(spot: list[Line]) -> None:
    adapter, events = _spot_adapter()
    _feed(adapter, spot[:100])
    last_ts = spot[99][0]

    adapter.check_stale(last_ts + 9 * 10**9)
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    adapter.check_stale(last_ts + 11 * 10**9)
    assert adapter.states["BTCUSDT"] is BookState.STALE
    assert _states(events)[-1] == (BookState.STALE, "no update for 11.0 s")

    _feed(adapter, spot[100:101])

    assert _states(events)[-1] == (BookState.LIVE, "updates flowing again")


@pytest.mark.parametrize("live", [False, True])
def test_crossed_book_is_healed_counted_and_resynced_only_when_live(spot: list[Line], live: bool) -> None:
    # Arrange: remove the deletion of bid 61820.99 from the event straddling the snapshot, so the stale bid of the
    # REST snapshot survives the sync (as it would with a snapshot newer than that deletion) until asks fall below it.
    adapter, events = _spot_adapter(live=live)
    lines = []
    for ts, raw in spot:
        if b'"U":50093239208,' in raw:
            raw = raw.replace(b'["61820.99000000","0.00000000"],', b"")
        lines.append((ts, raw))
        if b'"u":50093278974,' in raw:
            break

    # Act
    _feed(adapter, lines)

    # Assert
    (crossed,) = [e for e in events if isinstance(e, BookCrossed)]
    assert (crossed.bid_px, crossed.ask_px, crossed.removed_levels) == (61820.99, 61817.4, 1)
    assert adapter.stats.crossed["BTCUSDT"] == 1
    if live:
        assert adapter.states["BTCUSDT"] is BookState.RESYNCING
        assert adapter.take_actions() == [NeedSnapshot("BTCUSDT"), NeedSnapshot("BTCUSDT")]
        assert adapter.stats.resyncs["BTCUSDT"] == 1
    else:
        assert adapter.states["BTCUSDT"] is BookState.LIVE
        assert adapter.take_actions() == [NeedSnapshot("BTCUSDT")]
        assert adapter.books["BTCUSDT"].top_of_book() == (61817.39, 0.16807, 61817.4, 3.2907)
        last = [e for e in events if isinstance(e, BookUpdate)][-1]
        assert (last.update_id, last.bid_px, last.ask_px) == (50093278974, 61817.39, 61817.4)


# -- USD-M ----------------------------------------------------------------------------------------------------
def test_usdm_first_event_ending_exactly_at_the_snapshot_id_is_kept(eth: list[Line]) -> None:
    # Arrange: the ETH session's first valid event has u == lastUpdateId; the spot rule (drop u <= L) would drop it
    usdm, events = _adapter(BinanceUsdmAdapter, "depth@0ms", symbol="ETHUSDT")
    spot_rule, _ = _adapter(BinanceSpotAdapter, "depth@0ms", symbol="ETHUSDT")
    lines = eth[:200]

    # Act
    _feed(usdm, lines, "ETHUSDT")
    _feed(spot_rule, lines, "ETHUSDT")

    # Assert
    updates = [e.update_id for e in events if isinstance(e, BookUpdate)]
    assert updates[:3] == [ETH_L, ETH_L, 4984028389674]  # snapshot, then the event with u == L, then the next
    assert usdm.stats.gaps["ETHUSDT"] == 0
    assert usdm.states["ETHUSDT"] is BookState.LIVE
    assert usdm.books["ETHUSDT"].to_dicts() == _float_book(reference_snapshot(lines, True, updates[-1]))
    assert spot_rule.stats.gaps["ETHUSDT"] == 1  # U 4984028387167 > L + 1: the spot rule cannot sync here


def test_usdm_drops_events_older_than_the_snapshot_and_chains_by_pu(btc_usdm: list[Line]) -> None:
    adapter, events = _adapter(BinanceUsdmAdapter, "depth@0ms")
    lines = btc_usdm[:1500]

    _feed(adapter, lines)

    updates = [e for e in events if isinstance(e, BookUpdate)]
    assert (updates[0].update_id, updates[0].snapshot) == (5123107852948, True)
    assert updates[0].ts_event == 1723161256501 * NS  # USD-M snapshots carry E
    assert updates[1].update_id == 5123107853551  # U 5123107850310 <= L <= u
    assert adapter.stats.gaps["BTCUSDT"] == 0
    assert adapter.books["BTCUSDT"].to_dicts() == _float_book(reference_snapshot(lines, True, updates[-1].update_id))


def test_usdm_pu_break_is_a_gap_and_duplicates_are_dropped(btc_usdm: list[Line]) -> None:
    adapter, _ = _adapter(BinanceUsdmAdapter, "depth@0ms")
    lines = btc_usdm[:400]
    _feed(adapter, lines)
    diffs = [x for x in btc_usdm[400:420] if not _is_snapshot(x[1])]

    _feed(adapter, [diffs[0], diffs[0]])  # a duplicate
    assert adapter.stats.dropped_stale["BTCUSDT"] == 1
    _feed(adapter, [diffs[2]])  # diffs[1] lost: pu != previous u

    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.states["BTCUSDT"] is BookState.RESYNCING
    assert adapter.take_actions()[-1] == NeedSnapshot("BTCUSDT")


def _diff(U: int, u: int, bids: str, asks: str, *, levels_first: bool = False) -> str:
    head = f'"e":"depthUpdate","E":1723161258209,"s":"BTCUSDT","U":{U},"u":{u}'
    levels = f'"b":{bids},"a":{asks}'
    body = f"{levels},{head}" if levels_first else f"{head},{levels}"
    return f'{{"stream":"btcusdt@depth@100ms","data":{{{body}}}}}'


def test_in_sync_a_frame_with_malformed_levels_is_dropped_whole_and_other_key_orders_still_apply() -> None:
    adapter, events = _adapter(BinanceSpotAdapter, "depth@100ms")
    adapter.on_ws(_diff(100, 105, '[["100.5","1"]]', "[]"), 1)
    adapter.on_snapshot("BTCUSDT", '{"lastUpdateId":100,"bids":[["100","2"]],"asks":[["101","3"]]}', 2)
    book = adapter.books["BTCUSDT"]
    assert (book.update_id, adapter.states["BTCUSDT"]) == (105, BookState.LIVE)
    updates = len([e for e in events if isinstance(e, BookUpdate)])

    adapter.on_ws(_diff(106, 106, '[["99","1"],["abc","1"]]', "[]"), 3)  # refused by both readers
    assert adapter.stats.malformed == 1
    assert book.to_dicts() == ({100.0: 2.0, 100.5: 1.0}, {101.0: 3.0})  # not even the good first level
    assert book.update_id == 105

    adapter.on_ws(_diff(106, 107, '[["100.5","0"]]', '[ ["100.9","4"] ]', levels_first=True), 4)  # whitespace too

    assert book.to_dicts() == ({100.0: 2.0}, {100.9: 4.0, 101.0: 3.0})
    assert book.update_id == 107
    assert len([e for e in events if isinstance(e, BookUpdate)]) == updates + 1
    assert adapter.stats.gaps["BTCUSDT"] == 0


def test_a_gap_frame_with_malformed_levels_counts_as_malformed_only_and_the_book_stays_in_sync() -> None:
    adapter, _ = _adapter(BinanceSpotAdapter, "depth@100ms")
    adapter.on_ws(_diff(100, 105, '[["100.5","1"]]', "[]"), 1)
    adapter.on_snapshot("BTCUSDT", '{"lastUpdateId":100,"bids":[["100","2"]],"asks":[["101","3"]]}', 2)

    adapter.on_ws(_diff(110, 111, '[["abc","1"]]', "[]"), 3)  # a gap, and unreadable

    assert (adapter.stats.malformed, adapter.stats.gaps["BTCUSDT"]) == (1, 0)
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    adapter.on_ws(_diff(106, 106, '[["99","1"]]', "[]"), 4)
    assert adapter.books["BTCUSDT"].update_id == 106
