"""bot.book.OrderBook: levels, the sorted best-price cache, crossed-book healing, trimming.

The randomized tests compare against a deliberately naive reference that applies the healing rule level
by level ("a fresh bid at p removes asks <= p, a fresh ask at p removes bids >= p", bids then asks), so
the fast path (apply everything, compare the bests once, heal after the fact) is checked against the
rule as written. The last test replays a real USD-M session and compares the top 10 after every message.
"""

from __future__ import annotations

import gzip
import heapq
import math
import os
import random
from pathlib import Path

import msgspec
import pytest

from bot.book import OrderBook

pytestmark = pytest.mark.unit


class ReferenceBook:
    """Level by level, no caches: the healing rule exactly as documented."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def reset(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        self.bids = {p: q for p, q in bids if q}
        self.asks = {p: q for p, q in asks if q}
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            lo = min(self.asks)
            self.bids = {p: q for p, q in self.bids.items() if p < lo}

    def apply(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> int:
        removed = 0
        for p, q in bids:
            if q:
                self.bids[p] = q
                gone = [x for x in self.asks if x <= p]
                for x in gone:
                    del self.asks[x]
                removed += len(gone)
            else:
                self.bids.pop(p, None)
        for p, q in asks:
            if q:
                self.asks[p] = q
                gone = [x for x in self.bids if x >= p]
                for x in gone:
                    del self.bids[x]
                removed += len(gone)
            else:
                self.asks.pop(p, None)
        return removed

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return (
            [(p, self.bids[p]) for p in heapq.nlargest(n, self.bids)],
            [(p, self.asks[p]) for p in heapq.nsmallest(n, self.asks)],
        )


def _book(bids: list[tuple[float, float]], asks: list[tuple[float, float]], **kw: int) -> OrderBook:
    book = OrderBook("binance_spot", "BTCUSDT", **kw)
    book.reset(bids, asks, 100, 1_000)
    return book


# -- basics ---------------------------------------------------------------------------------------------
def test_reset_then_read_top_best_first_with_sizes_and_ids() -> None:
    # Arrange / Act
    book = _book([(99.0, 1.0), (100.0, 2.0), (98.5, 3.0)], [(101.0, 4.0), (100.5, 5.0)])

    # Assert
    assert book.best_bid() == (100.0, 2.0)
    assert book.best_ask() == (100.5, 5.0)
    assert book.top(2) == ([(100.0, 2.0), (99.0, 1.0)], [(100.5, 5.0), (101.0, 4.0)])
    assert book.top(10) == ([(100.0, 2.0), (99.0, 1.0), (98.5, 3.0)], [(100.5, 5.0), (101.0, 4.0)])
    assert book.top_of_book() == (100.0, 2.0, 100.5, 5.0)
    assert (book.update_id, book.ts_event, len(book), book.depth()) == (100, 1_000, 5, (3, 2))


def test_apply_size_zero_deletes_and_deleting_an_absent_level_is_harmless() -> None:
    book = _book([(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0)])

    removed = book.apply([(100.0, 0.0), (42.0, 0.0)], [(101.0, 0.0), (103.0, 7.0)], 101, 2_000)

    assert removed == 0
    assert book.top(5) == ([(99.0, 1.0)], [(103.0, 7.0)])
    assert (book.update_id, book.ts_event) == (101, 2_000)


def test_apply_replaces_size_of_an_existing_level() -> None:
    book = _book([(100.0, 1.0)], [(101.0, 1.0)])

    book.apply([(100.0, 0.25)], [(101.0, 9.5)], 101, 0)

    assert book.top_of_book() == (100.0, 0.25, 101.0, 9.5)


def test_empty_sides_read_as_none_and_nan() -> None:
    book = OrderBook("bybit_linear", "ETHUSDT")
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.top(3) == ([], [])
    assert all(math.isnan(x) for x in book.top_of_book())

    book.apply([(10.0, 1.0)], [], 1, 0)
    bp, bs, ap, as_ = book.top_of_book()
    assert (bp, bs) == (10.0, 1.0)
    assert math.isnan(ap)
    assert math.isnan(as_)


def test_clear_empties_both_sides_and_ids() -> None:
    book = _book([(100.0, 1.0)], [(101.0, 1.0)])
    book.clear()
    assert len(book) == 0
    assert book.update_id == 0
    assert book.best_bid() is None


def test_deleting_the_best_levels_one_by_one_walks_down_a_deep_side() -> None:
    # 300 levels: past the 128-price cache, so the cache must be rebuilt from the dict on the way down.
    bids = [(1000.0 - i, float(i + 1)) for i in range(300)]
    book = _book(bids, [(2000.0, 1.0)])

    for i in range(299):
        book.apply([(1000.0 - i, 0.0)], [], 101 + i, 0)
        assert book.best_bid() == (1000.0 - i - 1, float(i + 2))

    assert book.top(3) == ([(701.0, 300.0)], [(2000.0, 1.0)])


def test_top_beyond_the_cache_size_is_still_exact() -> None:
    bids = [(1000.0 - i, 1.0) for i in range(500)]
    asks = [(2000.0 + i, 2.0) for i in range(500)]
    book = _book(bids, asks)

    top_bids, top_asks = book.top(200)

    assert top_bids == bids[:200]
    assert top_asks == asks[:200]


def test_max_levels_trims_the_far_end_of_each_side_in_batches() -> None:
    book = _book([(1000.0 - i, 1.0) for i in range(50)], [(2000.0 + i, 1.0) for i in range(50)], max_levels=20)
    assert book.depth() == (20, 20)  # a snapshot is cut at once
    assert book.top(1) == ([(1000.0, 1.0)], [(2000.0, 1.0)])

    # New far levels are accepted, then dropped in a batch once the slack (16 here) is used up.
    book.apply([(500.0 + i, 1.0) for i in range(17)], [], 101, 0)
    assert book.depth()[0] == 20
    assert book.best_bid() == (1000.0, 1.0)
    assert min(book.to_dicts()[0]) == 981.0
    assert book.trimmed_levels == 30 + 30 + 17


# -- crossed books --------------------------------------------------------------------------------------
def test_crossed_snapshot_is_healed_asks_win_and_counted() -> None:
    book = _book([(102.0, 1.0), (101.0, 1.0), (99.0, 1.0)], [(100.0, 1.0), (103.0, 1.0)])

    assert book.top(5) == ([(99.0, 1.0)], [(100.0, 1.0), (103.0, 1.0)])
    assert (book.last_healed, book.crossed_count, book.healed_levels) == (2, 1, 2)
    assert book.last_cross == (102.0, 100.0)


def test_fresh_ask_below_a_stale_bid_removes_the_bid() -> None:
    # The real case: a stale bid 61820.99 the diff stream never removed, then asks fall to 61817.40.
    book = _book([(61820.99, 0.05009), (61817.39, 0.168)], [(61830.0, 1.0)])

    removed = book.apply([], [(61817.40, 3.2907)], 50093278974, 0)

    assert removed == 1
    assert book.top_of_book() == (61817.39, 0.168, 61817.40, 3.2907)
    assert book.last_cross == (61820.99, 61817.40)
    assert book.crossed_count == 1


def test_fresh_bid_at_or_above_asks_removes_those_asks() -> None:
    book = _book([(99.0, 1.0)], [(100.0, 1.0), (100.5, 1.0), (101.0, 1.0)])

    removed = book.apply([(100.5, 2.0)], [], 101, 0)

    assert removed == 2  # 100.0 and 100.5 (an equal price is crossed too)
    assert book.top(3) == ([(100.5, 2.0), (99.0, 1.0)], [(101.0, 1.0)])


def test_in_one_message_the_asks_are_newer_than_the_bids() -> None:
    # bid 101 (fresh) would remove ask 100.5; but the ask 100.8 that follows in the same message removes the bid.
    book = _book([(99.0, 1.0)], [(100.5, 1.0), (102.0, 1.0)])

    book.apply([(101.0, 1.0)], [(100.8, 1.0)], 101, 0)

    assert book.top(3) == ([(99.0, 1.0)], [(100.8, 1.0), (102.0, 1.0)])


def test_an_ask_removed_by_a_fresh_bid_but_set_again_later_in_the_message_survives() -> None:
    book = _book([(99.0, 1.0)], [(100.0, 1.0), (103.0, 1.0)])

    book.apply([(101.0, 1.0)], [(100.0, 5.0)], 101, 0)  # ask 100 re-set after the bid: the ask wins

    assert book.top(3) == ([(99.0, 1.0)], [(100.0, 5.0), (103.0, 1.0)])


def test_duplicate_prices_in_one_message_last_one_wins() -> None:
    book = _book([(100.0, 1.0)], [(105.0, 1.0)])

    book.apply([(101.0, 1.0), (101.0, 0.0), (99.0, 0.0), (99.0, 3.0)], [], 101, 0)

    assert book.top(5) == ([(100.0, 1.0), (99.0, 3.0)], [(105.0, 1.0)])


def _random_side(rng: random.Random, mid: float, sign: float, cross: bool) -> list[tuple[float, float]]:
    """Up to 12 distinct prices on one side of ``mid`` (or reaching across it when ``cross``), 40% deletes."""
    prices = {mid + sign * 0.5 * rng.randint(0 if cross else 1, 60) for _ in range(rng.randint(0, 12))}
    return [(p, 0.0 if rng.random() < 0.4 else round(rng.uniform(0.1, 5), 3)) for p in sorted(prices)]


@pytest.mark.parametrize("seed", range(6))
def test_random_messages_match_the_level_by_level_reference(seed: int) -> None:
    # Arrange: prices on a 0.5 grid around a wandering mid; some messages cross the book on purpose.
    rng = random.Random(seed)
    ref = ReferenceBook()
    book = OrderBook("bybit_spot", "BTCUSDT", max_levels=10_000)
    mid = 1000.0
    bids = [(mid - 0.5 * i, float(i)) for i in range(1, 120)]
    asks = [(mid + 0.5 * i, float(i)) for i in range(1, 120)]
    ref.reset(bids, asks)
    book.reset(bids, asks, 1, 0)
    heals = 0

    for u in range(2, 1500):
        mid += rng.choice((-1.0, -0.5, 0.0, 0.5, 1.0))
        cross = rng.random() < 0.05

        b, a = _random_side(rng, mid, -1.0, cross), _random_side(rng, mid, 1.0, cross)

        # Act
        removed = book.apply(b, a, u, u)
        ref_removed = ref.apply(b, a)

        # Assert: identical books; a heal happens exactly when the rule removes something
        assert (removed > 0) == (ref_removed > 0), u
        assert book.top(25) == ref.top(25), u
        assert book.to_dicts() == (ref.bids, ref.asks), u
        heals += removed > 0
    assert heals > 10
    assert book.crossed_count == heals


# -- real data ------------------------------------------------------------------------------------------
def _shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


class _Levels(msgspec.Struct):
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]
    u: int


class _Env(msgspec.Struct):
    data: _Levels


class _Snap(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


def test_real_usdm_session_top10_matches_a_plain_dict_replay_after_every_message() -> None:
    # Arrange: the BTCUSDT USD-M session, snapshot then every diff it covers (pu-chained), no sync logic here.
    path = _shared() / "hftbacktest/examples/usdm/btcusdt_20240808.gz"
    env = msgspec.json.Decoder(_Env, strict=False)
    snap_dec = msgspec.json.Decoder(_Snap, strict=False)
    snap: _Snap | None = None
    diffs: list[_Levels] = []
    with gzip.open(path) as f:
        for line in f:
            raw = line.split(b" ", 1)[1]
            if raw.startswith(b'{"lastUpdateId"'):
                snap = snap_dec.decode(raw)
            elif b"@depth" in raw[:40]:
                d = env.decode(raw).data
                if snap is not None and d.u >= snap.lastUpdateId:
                    diffs.append(d)
    assert snap is not None
    assert len(diffs) > 6000
    book = OrderBook("binance_usdm", "BTCUSDT")
    ref = ReferenceBook()
    book.reset(snap.bids, snap.asks, snap.lastUpdateId, 0)
    ref.reset(snap.bids, snap.asks)

    for d in diffs:
        # Act
        removed = book.apply(d.b, d.a, d.u, 0)
        for side, levels in ((ref.bids, d.b), (ref.asks, d.a)):  # plain dicts: this session never crosses
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)

        # Assert
        assert removed == 0
        assert book.top(10) == ref.top(10), d.u
    assert book.to_dicts() == (ref.bids, ref.asks)
    assert book.top_of_book() == (61659.7, 1.486, 61659.8, 0.981)


def test_a_bad_price_is_refused_and_the_levels_before_it_stay_applied() -> None:
    book = OrderBook("binance_spot", "BTCUSDT")
    book.reset([(100.0, 1.0)], [(101.0, 1.0)], 1, 0)

    with pytest.raises(ValueError, match="price nan is not finite and > 0"):
        book.apply([(99.0, 2.0), (math.nan, 1.0), (98.0, 1.0)], [], 2, 0)

    assert book.top(5) == ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])
    assert book.top_of_book() == (100.0, 1.0, 101.0, 1.0)


def test_one_message_larger_than_the_tables_grows_them_and_keeps_the_best_max_levels() -> None:
    book = OrderBook("bybit_linear", "BTCUSDT", max_levels=10)
    book.reset([(1.0, 1.0)], [(9000.0, 1.0)], 1, 0)

    book.apply([(float(p), p / 10) for p in range(2, 8002)], [(8999.0 - p, 1.0) for p in range(200)], 2, 0)

    assert book.depth() == (10, 10)
    bids, asks = book.top(200)
    assert bids == [(float(p), p / 10) for p in range(8001, 7991, -1)]
    assert asks[0] == (8800.0, 1.0)
    assert asks[-1] == (8809.0, 1.0)
    assert book.trimmed_levels == 8001 - 10 + 201 - 10


def test_apply_json_equals_apply_of_the_parsed_levels_and_refuses_other_shapes_untouched() -> None:
    text = OrderBook("binance_spot", "BTCUSDT")
    parsed = OrderBook("binance_spot", "BTCUSDT")
    for book in (text, parsed):
        book.reset([(61820.99, 1.0), (61800.0, 2.0), (61000.0, 3.0)], [(61830.0, 1.0)], 1, 0)

    n = text.apply_json(b'[["61821.00000000","0.5"],["61800.00000000","0"]]', b'[["61817.40","0.25"]]', 2, 7)
    removed = parsed.apply([(61821.0, 0.5), (61800.0, 0.0)], [(61817.4, 0.25)], 2, 7)

    assert n == 3
    assert text.last_healed == removed == 2  # the fresh ask at 61817.40 removes both bids above it
    assert text.to_dicts() == parsed.to_dicts()
    assert text.top_of_book() == parsed.top_of_book()
    assert (text.update_id, text.ts_event, text.crossed_count) == (2, 7, 1)
    before = text.to_dicts()
    assert text.apply_json(b'[["1e3","1"]]', b"[]", 3, 8) is None
    assert text.apply_json(b'[["100","1"]]', b'[["0","1"]]', 3, 8) is None  # a zero price: msgspec says why
    assert text.to_dicts() == before
    assert text.update_id == 2
