"""Bybit book sync (shared/PROTOCOLS.md 1.4) on the real cryptofeed v3 session: six books, 200 levels each.

The reference is an independent replay with plain dicts of the venue's strings (no bot code). Faults
(gaps, duplicates, a back-end restart with ``u == 1``, a crossed delta) are cut out of the real stream;
the snapshots they need are built from the reference state at that point.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import zstandard

from bot.config import BookConfig, VenueConfig
from bot.events import BookCrossed, BookHealth, BookState, BookUpdate, Event
from bot.venues.base import Resubscribe
from bot.venues.bybit import BybitLinearAdapter, BybitSpotAdapter

pytestmark = pytest.mark.unit

LINEAR, SPOT = "BYBIT.ws.2", "BYBIT.ws.3"
Frame = tuple[int, str]  # (ts_recv ns, raw)


@pytest.fixture(scope="module")
def session() -> dict[str, list[Frame]]:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    path = root / "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"
    if not path.is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    out: dict[str, list[Frame]] = {LINEAR: [], SPOT: []}
    with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
        for line in io.TextIOWrapper(z, encoding="utf-8"):
            r = json.loads(line)
            if r["t"] == "recv":
                out[r["conn"]].append((round(r["ts"] * 1e9), r["data"]))
    return out


class Reference:
    """Plain dicts of price string -> size string, snapshot resets, deltas apply; nothing else."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.u: dict[str, int] = {}

    def feed(self, raw: str) -> str | None:
        m = json.loads(raw)
        if not m.get("topic", "").startswith("orderbook."):
            return None
        d = m["data"]
        if m["type"] == "snapshot":
            self.books[d["s"]] = ({}, {})
        for side, levels in zip(self.books[d["s"]], (d["b"], d["a"]), strict=True):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.u[d["s"]] = d["u"]
        return str(d["s"])

    def floats(self, symbol: str) -> tuple[dict[float, float], dict[float, float]]:
        b, a = self.books[symbol]
        return {float(p): float(q) for p, q in b.items()}, {float(p): float(q) for p, q in a.items()}

    def top(self, symbol: str, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        b, a = self.floats(symbol)
        return sorted(b.items(), reverse=True)[:n], sorted(a.items())[:n]

    def snapshot_frame(self, symbol: str, u: int, ts: int = 1786310830000) -> str:
        b, a = self.books[symbol]
        data = {
            "s": symbol,
            "b": sorted(b.items(), key=lambda x: -float(x[0])),
            "a": sorted(a.items(), key=lambda x: float(x[0])),
            "u": u,
            "seq": 1,
        }
        return json.dumps({"topic": f"orderbook.200.{symbol}", "type": "snapshot", "ts": ts, "data": data})


def _adapter(
    conn: str, live: bool = True, depth: str = "200"
) -> tuple[BybitLinearAdapter | BybitSpotAdapter, list[Event]]:
    events: list[Event] = []
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT") if conn == LINEAR else ("BTCUSDT", "ETHUSDT")
    cls = BybitLinearAdapter if conn == LINEAR else BybitSpotAdapter
    cfg = VenueConfig(ws_url="wss://x.test", rest_url="https://x.test", symbols=symbols, depth=depth, klines=("1m",))
    return cls(cfg, BookConfig(stale_after_s=5), events.append, live=live), events


def _book_frames(frames: list[Frame], symbol: str) -> list[Frame]:
    return [f for f in frames if f[1].startswith(f'{{"topic":"orderbook.200.{symbol}"')]


def _u(raw: str) -> int:
    return int(json.loads(raw)["data"]["u"])


@pytest.mark.parametrize("conn", [LINEAR, SPOT])
def test_every_book_matches_the_reference_after_every_message(session: dict[str, list[Frame]], conn: str) -> None:
    adapter, events = _adapter(conn)
    ref = Reference()
    checked = 0

    for ts, raw in session[conn]:
        adapter.on_ws(raw, ts, f"{adapter.venue.value}/public")
        symbol = ref.feed(raw)
        if symbol is not None:
            assert adapter.books[symbol].top(10) == ref.top(symbol, 10)
            checked += 1

    assert checked == (1598 if conn == LINEAR else 550)
    for symbol in adapter.symbols:
        assert adapter.books[symbol].to_dicts() == ref.floats(symbol)
        assert adapter.books[symbol].update_id == ref.u[symbol]
        assert adapter.states[symbol] is BookState.LIVE
    assert adapter.stats.gaps == dict.fromkeys(adapter.symbols, 0)
    assert adapter.stats.malformed == 0
    assert adapter.take_actions() == []
    assert len([e for e in events if isinstance(e, BookUpdate)]) == checked


def test_deltas_before_the_first_snapshot_are_ignored(session: dict[str, list[Frame]]) -> None:
    adapter, events = _adapter(LINEAR)
    frames = _book_frames(session[LINEAR], "SOLUSDT")
    snapshot, deltas = frames[0], frames[1:6]

    for ts, raw in deltas:
        adapter.on_ws(raw, ts)

    assert adapter.states["SOLUSDT"] is BookState.SYNCING
    assert not [e for e in events if isinstance(e, BookUpdate)]
    assert adapter.stats.gaps["SOLUSDT"] == 0
    adapter.on_ws(snapshot[1], snapshot[0])
    assert adapter.states["SOLUSDT"] is BookState.LIVE
    assert adapter.take_actions() == []


def test_gap_resyncs_through_resubscribe_and_the_next_snapshot(session: dict[str, list[Frame]]) -> None:
    # Arrange: lose the 20th ETH delta; the book must go RESYNCING, ignore deltas, and recover on a snapshot
    adapter, events = _adapter(LINEAR)
    frames = _book_frames(session[LINEAR], "ETHUSDT")
    ref = Reference()
    for _, raw in frames[:40]:
        ref.feed(raw)

    # Act 1
    for ts, raw in frames[:20] + frames[21:30]:
        adapter.on_ws(raw, ts)

    # Assert 1
    assert adapter.stats.gaps["ETHUSDT"] == 1
    assert adapter.stats.resyncs["ETHUSDT"] == 1
    health = [(e.state, e.reason) for e in events if isinstance(e, BookHealth) and e.symbol == "ETHUSDT"]
    assert health[-1] == (BookState.RESYNCING, f"gap: update {_u(frames[21][1])} after {_u(frames[19][1])}")
    assert adapter.take_actions() == [Resubscribe("ETHUSDT")]
    assert len(adapter.books["ETHUSDT"]) == 0
    assert adapter.ignored == 8  # deltas 22..29 while waiting

    # Act 2: the resubscription's snapshot (state after delta 39), then the real deltas after it
    adapter.on_ws(ref.snapshot_frame("ETHUSDT", _u(frames[39][1])), 0)
    for ts, raw in frames[40:]:
        adapter.on_ws(raw, ts)
        ref.feed(raw)

    # Assert 2
    assert adapter.states["ETHUSDT"] is BookState.LIVE
    assert adapter.books["ETHUSDT"].to_dicts() == ref.floats("ETHUSDT")
    assert adapter.stats.gaps["ETHUSDT"] == 1


def test_a_duplicate_delta_is_a_gap(session: dict[str, list[Frame]]) -> None:
    adapter, _ = _adapter(SPOT)
    frames = _book_frames(session[SPOT], "BTCUSDT")

    for ts, raw in [*frames[:10], frames[9]]:
        adapter.on_ws(raw, ts)

    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.take_actions() == [Resubscribe("BTCUSDT")]


def test_snapshot_with_u_1_after_a_backend_restart_resets_the_book(session: dict[str, list[Frame]]) -> None:
    # Arrange: after 50 deltas the venue restarts: a snapshot with u=1, then deltas numbered 2, 3, ...
    adapter, events = _adapter(SPOT)
    frames = _book_frames(session[SPOT], "ETHUSDT")
    ref = Reference()
    for _, raw in frames[:60]:
        ref.feed(raw)
    restart = ref.snapshot_frame("ETHUSDT", 1)
    offset = _u(frames[59][1]) - 1
    renumbered = [(ts, raw.replace(f'"u":{_u(raw)},', f'"u":{_u(raw) - offset},')) for ts, raw in frames[60:]]

    # Act
    for ts, raw in frames[:50]:
        adapter.on_ws(raw, ts)
    adapter.on_ws(restart, 0)
    for ts, raw in renumbered:
        adapter.on_ws(raw, ts)
        ref.feed(raw)

    # Assert
    assert adapter.stats.gaps["ETHUSDT"] == 0
    assert adapter.books["ETHUSDT"].update_id == len(renumbered) + 1
    assert adapter.books["ETHUSDT"].to_dicts() == ref.floats("ETHUSDT")
    snaps = [e.update_id for e in events if isinstance(e, BookUpdate) and e.snapshot and e.symbol == "ETHUSDT"]
    assert snaps == [_u(frames[0][1]), 1]


def test_level_1_book_pushes_snapshots_only_and_may_repeat_u(session: dict[str, list[Frame]]) -> None:
    # Arrange: orderbook.1 frames made from the real top of book, the third one a 3-second repeat with the same u
    adapter, events = _adapter(LINEAR, depth="1")
    ref = Reference()
    tops = []
    for _, raw in _book_frames(session[LINEAR], "BTCUSDT")[:3]:
        ref.feed(raw)
        (b,), (a,) = ref.top("BTCUSDT", 1)
        tops.append((b, a, ref.u["BTCUSDT"]))
    tops.append(tops[-1])

    # Act
    for (bp, bs), (ap, as_), u in tops:
        data = {"s": "BTCUSDT", "b": [[str(bp), str(bs)]], "a": [[str(ap), str(as_)]], "u": u, "seq": 1}
        adapter.on_ws(json.dumps({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1, "data": data}), 1)

    # Assert
    updates = [(e.update_id, e.bid_px, e.bid_sz, e.ask_px, e.ask_sz) for e in events if isinstance(e, BookUpdate)]
    assert updates == [(u, bp, bs, ap, as_) for (bp, bs), (ap, as_), u in tops]
    assert adapter.stats.gaps["BTCUSDT"] == 0
    assert adapter.books["BTCUSDT"].depth() == (1, 1)


@pytest.mark.parametrize("live", [True, False])
def test_crossed_delta_is_healed_and_counted_resubscribing_only_when_live(
    session: dict[str, list[Frame]], live: bool
) -> None:
    # Arrange: the 11th SOL delta also carries an ask at the best bid (the newest update wins: the bid goes)
    adapter, events = _adapter(LINEAR, live=live)
    frames = _book_frames(session[LINEAR], "SOLUSDT")
    for ts, raw in frames[:10]:
        adapter.on_ws(raw, ts)
    top = adapter.books["SOLUSDT"].best_bid()
    assert top is not None
    best_bid = top[0]
    m = json.loads(frames[10][1])
    m["data"]["a"].append([f"{best_bid:.3f}", "1.5"])

    # Act
    adapter.on_ws(json.dumps(m), frames[10][0])

    # Assert
    (crossed,) = [e for e in events if isinstance(e, BookCrossed)]
    assert crossed.ask_px == best_bid
    assert crossed.removed_levels >= 1
    assert adapter.stats.crossed["SOLUSDT"] == 1
    if live:
        assert adapter.states["SOLUSDT"] is BookState.RESYNCING
        assert adapter.take_actions() == [Resubscribe("SOLUSDT")]
    else:
        assert adapter.states["SOLUSDT"] is BookState.LIVE
        assert adapter.take_actions() == []
        assert adapter.books["SOLUSDT"].best_ask() == (best_bid, 1.5)
        assert adapter.books["SOLUSDT"].top(1)[0][0][0] < best_bid


def test_disconnect_turns_every_book_resyncing_until_its_next_snapshot(session: dict[str, list[Frame]]) -> None:
    adapter, _ = _adapter(SPOT)
    frames = session[SPOT]
    for ts, raw in frames[:200]:
        adapter.on_ws(raw, ts)
    assert all(s is BookState.LIVE for s in adapter.states.values())

    adapter.on_disconnect("bybit_spot/public", 5)

    assert adapter.states == {"BTCUSDT": BookState.RESYNCING, "ETHUSDT": BookState.RESYNCING}
    assert all(len(b) == 0 for b in adapter.books.values())
    assert adapter.stats.resyncs == {"BTCUSDT": 1, "ETHUSDT": 1}
    btc = _book_frames(frames, "BTCUSDT")
    adapter.on_ws(btc[150][1], 6)  # a delta: ignored, the book waits for the subscription's snapshot
    assert adapter.states["BTCUSDT"] is BookState.RESYNCING
    adapter.on_ws(btc[0][1], 7)
    assert adapter.states["BTCUSDT"] is BookState.LIVE
    assert adapter.take_actions() == []  # the reconnect itself resubscribes


def test_resubscribe_is_requested_again_when_no_snapshot_follows(session: dict[str, list[Frame]]) -> None:
    adapter, _ = _adapter(LINEAR)
    adapter.resubscribe_after_ignored = 5
    frames = _book_frames(session[LINEAR], "BTCUSDT")
    for ts, raw in frames[:10] + frames[11:17]:  # gap, then 5 ignored deltas
        adapter.on_ws(raw, ts)

    assert adapter.take_actions() == [Resubscribe("BTCUSDT"), Resubscribe("BTCUSDT")]


def test_live_book_goes_stale_without_updates_and_back(session: dict[str, list[Frame]]) -> None:
    adapter, events = _adapter(SPOT)
    frames = _book_frames(session[SPOT], "ETHUSDT")
    for ts, raw in frames[:3]:
        adapter.on_ws(raw, ts)

    adapter.check_stale(frames[2][0] + 6 * 10**9)
    adapter.on_ws(frames[3][1], frames[3][0])

    eth = [(e.state, e.reason) for e in events if isinstance(e, BookHealth) and e.symbol == "ETHUSDT"]
    assert eth == [
        (BookState.SYNCING, "start"),
        (BookState.LIVE, "in sync"),
        (BookState.STALE, "no update for 6.0 s"),
        (BookState.LIVE, "updates flowing again"),
    ]
    assert adapter.states["BTCUSDT"] is BookState.SYNCING  # never LIVE: not marked stale


def _linear_frame(kind: str, u: int, bids: str, asks: str) -> str:
    return (
        f'{{"topic":"orderbook.200.BTCUSDT","type":"{kind}","ts":1786310819154,"data":{{"s":"BTCUSDT",'
        f'"b":{bids},"a":{asks},"u":{u},"seq":1}},"cts":1786310819145}}'
    )


def test_a_delta_with_malformed_levels_is_dropped_whole_and_the_next_one_is_a_gap() -> None:
    adapter, _ = _adapter(LINEAR)
    adapter.on_ws(_linear_frame("snapshot", 10, '[["100","2"]]', '[["101","3"]]'), 1)
    adapter.on_ws(_linear_frame("delta", 11, '[["100.5","1"]]', '[ ["101","0"], ["102","1"] ]'), 2)  # msgspec's path
    book = adapter.books["BTCUSDT"]
    assert book.to_dicts() == ({100.0: 2.0, 100.5: 1.0}, {102.0: 1.0})

    adapter.on_ws(_linear_frame("delta", 12, '[["99","1"]]', '[["-1","1"]]'), 3)

    assert adapter.stats.malformed == 1
    assert book.to_dicts() == ({100.0: 2.0, 100.5: 1.0}, {102.0: 1.0})  # its good bid was not applied either
    adapter.on_ws(_linear_frame("delta", 13, "[]", '[["103","1"]]'), 4)
    assert adapter.stats.gaps["BTCUSDT"] == 1
    assert adapter.states["BTCUSDT"] is BookState.RESYNCING
