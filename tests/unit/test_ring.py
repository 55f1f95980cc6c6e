"""Ring (mirrored numpy ring), LobGrid (book sampled on a time grid) and RingSet (grids fed from the bus)."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence

import numpy as np
import pytest

from bot.bus import EventBus
from bot.config import BotSettings, RingConfig
from bot.events import BookHealth, BookState, BookUpdate, Venue
from bot.grid_set import RingSet
from bot.ring import LobGrid, Ring, lob_columns

pytestmark = pytest.mark.unit

S = 1_000_000_000  # ns per second
NAN = math.nan


class FakeBook:
    """Stand-in for bot.book.OrderBook: only ``top(n)``, best first."""

    def __init__(self, bids: Sequence[tuple[float, float]] = (), asks: Sequence[tuple[float, float]] = ()) -> None:
        self.bids = list(bids)
        self.asks = list(asks)
        self.top_calls: list[int] = []

    def set(self, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]) -> FakeBook:
        self.bids = list(bids)
        self.asks = list(asks)
        return self

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        self.top_calls.append(n)
        return self.bids[:n], self.asks[:n]


def assert_rows_equal(actual: np.ndarray, expected: Sequence[Sequence[float]]) -> None:
    np.testing.assert_array_equal(actual, np.array(expected, dtype=np.float64))


# -- Ring ------------------------------------------------------------------------------------------------


def test_ring_window_returns_last_rows_oldest_first_before_and_after_wrapping() -> None:
    # Arrange
    ring = Ring(capacity=4, width=2)

    # Act / Assert: before wrapping
    for i in range(3):
        ring.append([i, 10 * i], ts=100 + i)
    assert_rows_equal(ring.window(), [[0, 0], [1, 10], [2, 20]])
    assert ring.times().tolist() == [100, 101, 102]
    assert len(ring) == 3

    # after wrapping twice over
    for i in range(3, 10):
        ring.append([i, 10 * i], ts=100 + i)
    assert_rows_equal(ring.window(), [[6, 60], [7, 70], [8, 80], [9, 90]])
    assert_rows_equal(ring.window(2), [[8, 80], [9, 90]])
    assert ring.times(3).tolist() == [107, 108, 109]
    assert ring.latest().tolist() == [9.0, 90.0]
    assert ring.latest_time() == 109
    assert len(ring) == 4
    assert ring.appended == 10


def test_ring_window_is_a_read_only_view_of_the_buffer_never_a_copy() -> None:
    ring = Ring(capacity=8, width=3)
    for i in range(13):  # wrapped: the window straddles the physical end of the first half
        ring.append([i, i, i], ts=i)

    w5 = ring.window(5)
    w8 = ring.window(8)
    t8 = ring.times(8)

    assert np.shares_memory(w5, ring.buffer)
    assert np.shares_memory(w5, w8)  # the last 5 rows of w8 are w5, same memory
    assert w5.base is not None
    assert w5.flags.c_contiguous
    assert w8.flags.c_contiguous
    np.testing.assert_array_equal(w8[-5:], w5)
    assert t8.tolist() == list(range(5, 13))
    with pytest.raises(ValueError, match="read-only"):
        w5[0, 0] = -1.0
    with pytest.raises(ValueError, match="read-only"):
        ring.latest()[0] = -1.0


def test_ring_views_are_overwritten_by_later_appends_so_keepers_must_copy() -> None:
    """The documented contract: a view shows the ring's memory, a copy is stable."""
    ring = Ring(capacity=3, width=1)
    for i in range(3):
        ring.append([i], ts=i)
    view = ring.window(3)
    kept = np.array(view)

    ring.append([99], ts=3)  # overwrites slot 0 in both halves of the buffer

    assert view.tolist() != [[0.0], [1.0], [2.0]]
    assert kept.tolist() == [[0.0], [1.0], [2.0]]
    assert ring.window(3).tolist() == [[1.0], [2.0], [99.0]]


def test_ring_nbytes_is_fixed_at_construction_over_100k_appends() -> None:
    ring = Ring(capacity=720, width=20)
    expected = 2 * 720 * 20 * 8 + 2 * 720 * 8
    assert ring.nbytes == expected
    buffer_before = ring.buffer
    row = np.arange(20, dtype=np.float64)

    for i in range(100_000):
        row[0] = i
        ring.append(row, ts=i)

    assert ring.nbytes == expected
    assert np.shares_memory(ring.buffer, buffer_before)  # same allocation, never reallocated
    assert len(ring) == 720
    assert ring.window(1)[0, 0] == 99_999.0
    assert ring.window()[0, 0] == 100_000 - 720
    assert ring.times()[0] == 100_000 - 720


def test_ring_extend_equals_appending_one_by_one_against_a_deque_reference() -> None:
    rng = random.Random(7)
    cap, width = 5, 2
    a, b = Ring(cap, width), Ring(cap, width)
    ref: deque[tuple[list[float], int]] = deque(maxlen=cap)
    t = 0
    for _ in range(200):
        k = rng.randrange(0, 12)  # sometimes 0, sometimes more than the capacity
        rows = [[float(t + j), float(-(t + j))] for j in range(k)]
        stamps = [t + j for j in range(k)]
        a.extend(np.array(rows).reshape(k, width), stamps)
        for r, s in zip(rows, stamps, strict=True):
            b.append(r, s)
            ref.append((r, s))
        t += k
        for n in (0, 1, cap // 2, cap, cap + 3):
            want = list(ref)[-n:] if n else []
            assert a.window(n).tolist() == [r for r, _ in want]
            assert a.times(n).tolist() == [s for _, s in want]
            np.testing.assert_array_equal(a.window(n), b.window(n))
            np.testing.assert_array_equal(a.times(n), b.times(n))


def test_ring_replace_overwrites_both_mirrored_copies() -> None:
    ring = Ring(capacity=4, width=1)
    for i in range(6):
        ring.append([i], ts=i)  # holds 2 3 4 5

    ring.replace(2, [33], ts=303)  # the row holding 3

    for n in range(1, 5):
        assert ring.window(n).tolist() == [[2.0], [33.0], [4.0], [5.0]][-n:]
    assert ring.times().tolist() == [2, 303, 4, 5]
    # two more appends move the window across the mirror boundary; the replaced row must survive
    ring.append([6], ts=6)
    assert ring.window().tolist() == [[33.0], [4.0], [5.0], [6.0]]
    with pytest.raises(IndexError):
        ring.replace(4, [0], ts=0)


def test_ring_edge_cases_empty_short_and_bad_arguments() -> None:
    ring = Ring(capacity=3, width=2, dtype=np.float32)
    assert ring.window(5).shape == (0, 2)
    assert ring.window(5).dtype == np.float32
    with pytest.raises(IndexError):
        ring.latest()
    ring.append([1.5, 2.5])
    assert ring.window(5).tolist() == [[1.5, 2.5]]  # fewer than asked: what it has, like list[-n:]
    with pytest.raises(ValueError, match=">= 0"):
        ring.window(-1)
    with pytest.raises(ValueError, match="shape"):
        ring.extend(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="timestamps"):
        ring.extend(np.zeros((2, 2)), [1])
    with pytest.raises(ValueError, match="capacity"):
        Ring(0, 2)
    ring.clear()
    assert len(ring) == 0
    assert ring.nbytes == 2 * 3 * 2 * 4 + 2 * 3 * 8


# -- LobGrid ---------------------------------------------------------------------------------------------


def make_grid(interval_ms: int = 1000, levels: int = 2, capacity: int = 16) -> LobGrid:
    return LobGrid(Venue.BINANCE_SPOT, "BTCUSDT", interval_ms, levels, capacity)


def test_lob_columns_layout_is_bids_then_asks_price_size_pairs() -> None:
    assert lob_columns(2) == [
        "bid_px_1", "bid_sz_1", "bid_px_2", "bid_sz_2",
        "ask_px_1", "ask_sz_1", "ask_px_2", "ask_sz_2",
    ]  # fmt: skip


def test_lob_grid_row_at_t_is_the_book_after_the_last_change_at_or_before_t() -> None:
    # Arrange
    grid = make_grid()
    book = FakeBook()

    # Act: changes at 0.3 s, 1.2 s, 1.7 s and exactly on the 3 s grid point; then a tick at 4.5 s
    grid.on_book(int(0.3 * S), book.set([(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0), (101.0, 4.0)]))
    grid.on_book(int(1.2 * S), book.set([(100.1, 1.5)], [(100.5, 2.5), (101.0, 4.0)]))
    grid.on_book(int(1.7 * S), book.set([(100.2, 0.5), (100.1, 1.5)], [(100.4, 0.1), (100.5, 2.5)]))
    grid.on_book(3 * S, book.set([(100.3, 7.0), (100.2, 0.5)], [(100.6, 1.0), (100.7, 1.0)]))
    grid.on_time(int(4.5 * S))

    # Assert
    assert grid.times().tolist() == [1 * S, 2 * S, 3 * S, 4 * S]
    assert_rows_equal(
        grid.window(),
        [
            [100.0, 1.0, 99.5, 2.0, 100.5, 3.0, 101.0, 4.0],  # t=1 s: state after the 0.3 s change
            [100.2, 0.5, 100.1, 1.5, 100.4, 0.1, 100.5, 2.5],  # t=2 s: after 1.7 s (1.2 s overwritten)
            [100.3, 7.0, 100.2, 0.5, 100.6, 1.0, 100.7, 1.0],  # t=3 s: the change stamped exactly 3 s
            [100.3, 7.0, 100.2, 0.5, 100.6, 1.0, 100.7, 1.0],  # t=4 s: unchanged since
        ],
    )


def test_lob_grid_missing_levels_are_nan_and_only_top_n_is_read() -> None:
    grid = make_grid(levels=3)
    deep = FakeBook([(10.0 - i, 1.0 + i) for i in range(50)], [(10.5, 2.0)])

    grid.on_book(0, deep)
    grid.on_time(S + 1)

    assert deep.top_calls == [3]
    row = grid.window(1)[0]
    np.testing.assert_array_equal(row[:6], [10.0, 1.0, 9.0, 2.0, 8.0, 3.0])
    np.testing.assert_array_equal(row[6:8], [10.5, 2.0])
    assert np.isnan(row[8:]).all()
    assert grid.times().tolist() == [0, S]


def test_lob_grid_on_time_writes_only_grid_points_strictly_before_the_tick() -> None:
    grid = make_grid()
    book = FakeBook([(1.0, 1.0)], [(2.0, 1.0)])
    grid.on_book(0, book)

    grid.on_time(2 * S)  # rows 0 s and 1 s; the 2 s row could still get a change stamped 2 s
    assert grid.times().tolist() == [0, S]
    grid.on_book(2 * S, book.set([(1.5, 1.0)], [(2.0, 1.0)]))
    grid.on_time(2 * S + 1)

    assert grid.times().tolist() == [0, S, 2 * S]
    assert grid.window()[:, 0].tolist() == [1.0, 1.0, 1.5]


def test_lob_grid_saves_a_copy_of_the_book_not_a_reference() -> None:
    grid = make_grid(levels=1)
    book = FakeBook([(1.0, 1.0)], [(2.0, 1.0)])
    grid.on_book(0, book)
    book.bids[0] = (9.0, 9.0)  # mutated in place: the grid must still hold the 0 s state
    grid.on_book(int(1.5 * S), book)
    grid.on_time(2 * S + 1)

    assert_rows_equal(grid.window(), [[1.0, 1.0, 2.0, 1.0], [1.0, 1.0, 2.0, 1.0], [9.0, 9.0, 2.0, 1.0]])


def test_lob_grid_invalidate_stops_rows_until_the_next_valid_state_and_leaves_a_visible_gap() -> None:
    grid = make_grid(levels=1)
    book = FakeBook([(1.0, 1.0)], [(2.0, 1.0)])
    grid.on_book(int(0.5 * S), book)

    grid.invalidate(int(2.5 * S))  # valid up to 2.5 s: rows 1 s and 2 s still belong to it
    grid.on_time(10 * S)  # nothing while invalid
    assert grid.times().tolist() == [S, 2 * S]
    assert not grid.valid
    grid.on_book(int(6.2 * S), book.set([(3.0, 3.0)], [(4.0, 4.0)]))
    grid.on_time(int(8.5 * S))

    assert grid.valid
    assert grid.times().tolist() == [S, 2 * S, 7 * S, 8 * S]  # 3..6 s skipped: the gap shows
    assert grid.window()[:, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    assert grid.invalidations == 1


def test_lob_grid_long_quiet_spell_fills_only_the_last_capacity_rows() -> None:
    grid = make_grid(levels=1, capacity=4)
    book = FakeBook([(1.0, 1.0)], [(2.0, 1.0)])
    grid.on_book(0, book)
    nbytes = grid.nbytes

    grid.on_book(1000 * S + 1, book.set([(5.0, 5.0)], [(6.0, 6.0)]))

    assert grid.times().tolist() == [997 * S, 998 * S, 999 * S, 1000 * S]
    assert grid.window()[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert grid.rows_written == 1001
    assert grid.nbytes == nbytes


def test_lob_grid_matches_a_brute_force_reference_and_extra_ticks_do_not_change_rows() -> None:
    """Live (timer ticks between changes) and replay (no ticks) must give the same rows."""
    rng = random.Random(11)
    iv = 250_000_000  # 250 ms grid
    t = 1_700_000_000 * S + 123
    changes: list[tuple[int, list[tuple[float, float]], list[tuple[float, float]]]] = []
    for _ in range(400):
        t += rng.choice([1, 1_000, 40_000_000, 250_000_000, 900_000_000])
        bids = [(round(100 - i * 0.5 - rng.random(), 2), float(rng.randint(1, 9))) for i in range(rng.randint(0, 3))]
        asks = [(round(101 + i * 0.5 + rng.random(), 2), float(rng.randint(1, 9))) for i in range(rng.randint(0, 3))]
        changes.append((t, bids, asks))
    end = t + 3 * iv

    ticked, plain = make_grid(250, 2, 10_000), make_grid(250, 2, 10_000)
    book = FakeBook()
    for ts, bids, asks in changes:
        ticked.on_time(ts - rng.randint(0, 400_000_000))  # ticks lag or lead: never a change of rows
        book.set(bids, asks)
        ticked.on_book(ts, book)
        plain.on_book(ts, book)
        ticked.on_time(ts)
    ticked.on_time(end)
    plain.on_time(end)

    # brute force: every grid point in [first change, end), the state of the last change <= it
    first = -(-changes[0][0] // iv) * iv
    want_t, want_rows = [], []
    for g in range(first, end, iv):
        ts, bids, asks = [c for c in changes if c[0] <= g][-1]
        row = [NAN] * 8
        for i, (px, sz) in enumerate(bids[:2]):
            row[2 * i : 2 * i + 2] = [px, sz]
        for i, (px, sz) in enumerate(asks[:2]):
            row[4 + 2 * i : 4 + 2 * i + 2] = [px, sz]
        want_t.append(g)
        want_rows.append(row)
    assert plain.times().tolist() == want_t
    np.testing.assert_array_equal(plain.window(), np.array(want_rows))
    np.testing.assert_array_equal(ticked.window(), plain.window())
    np.testing.assert_array_equal(ticked.times(), plain.times())


# -- RingSet ---------------------------------------------------------------------------------------------


def book_update(venue: Venue, ts_recv: int, symbol: str = "BTCUSDT") -> BookUpdate:
    return BookUpdate(
        ts_event=ts_recv - 1_000, ts_recv=ts_recv, venue=venue, symbol=symbol, update_id=1,
        bid_px=0.0, bid_sz=0.0, ask_px=0.0, ask_sz=0.0,
    )  # fmt: skip


def book_health(venue: Venue, ts_recv: int, state: BookState) -> BookHealth:
    return BookHealth(ts_event=ts_recv, ts_recv=ts_recv, venue=venue, symbol="BTCUSDT", state=state, reason="test")


SMALL = RingConfig(
    lob_interval_ms=1000, lob_levels=1, lob_capacity=10, fine_interval_ms=500, fine_levels=2, fine_capacity=20
)


def test_ring_set_samples_coarse_and_fine_grids_on_ticks_before_each_change_on_receive_time() -> None:
    # Arrange
    books = {(Venue.BYBIT_LINEAR, "BTCUSDT"): FakeBook([(100.0, 1.0), (99.0, 2.0)], [(101.0, 3.0)])}
    rings = RingSet(SMALL, lambda v, s: books.get((v, s)), [(Venue.BYBIT_LINEAR, "BTCUSDT")])
    bus = EventBus()
    rings.attach(bus)

    # Act: the driver ticks at each record's receive time before the change is applied
    rings.on_time(int(0.2 * S))
    bus.publish(book_update(Venue.BYBIT_LINEAR, int(0.2 * S)))
    rings.on_time(int(1.7 * S))
    books[(Venue.BYBIT_LINEAR, "BTCUSDT")].set([(100.5, 4.0)], [(101.0, 3.0), (101.5, 5.0)])
    bus.publish(book_update(Venue.BYBIT_LINEAR, int(1.7 * S)))
    rings.on_time(int(2.2 * S))

    # Assert
    coarse = rings.coarse(Venue.BYBIT_LINEAR, "BTCUSDT")
    fine = rings.fine(Venue.BYBIT_LINEAR, "BTCUSDT")
    assert coarse.times().tolist() == [S, 2 * S]
    assert_rows_equal(coarse.window(), [[100.0, 1.0, 101.0, 3.0], [100.5, 4.0, 101.0, 3.0]])
    assert fine.times().tolist() == [int(0.5 * S), S, int(1.5 * S), 2 * S]
    assert_rows_equal(
        fine.window(),
        [
            [100.0, 1.0, 99.0, 2.0, 101.0, 3.0, NAN, NAN],
            [100.0, 1.0, 99.0, 2.0, 101.0, 3.0, NAN, NAN],
            [100.0, 1.0, 99.0, 2.0, 101.0, 3.0, NAN, NAN],
            [100.5, 4.0, NAN, NAN, 101.0, 3.0, 101.5, 5.0],
        ],
    )


def test_ring_set_book_health_not_live_invalidates_and_live_resumes_at_once() -> None:
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BINANCE_USDM, "BTCUSDT")])
    bus = EventBus()
    rings.attach(bus)

    rings.on_time(int(0.1 * S))
    bus.publish(book_update(Venue.BINANCE_USDM, int(0.1 * S)))
    rings.on_time(int(2.4 * S))
    bus.publish(book_update(Venue.BINANCE_USDM, int(2.4 * S)))  # the last update before the gap
    rings.on_time(int(2.5 * S))
    bus.publish(book_health(Venue.BINANCE_USDM, int(2.5 * S), BookState.RESYNCING))
    book.set([(1.0, 1.0)], [(2.0, 1.0)])  # garbage while resyncing: must never reach a row
    rings.on_time(int(3.1 * S))
    bus.publish(book_update(Venue.BINANCE_USDM, int(3.1 * S)))
    rings.on_time(int(4.9 * S))
    book.set([(105.0, 2.0)], [(106.0, 2.0)])
    rings.on_time(int(5.3 * S))
    bus.publish(book_health(Venue.BINANCE_USDM, int(5.3 * S), BookState.LIVE))
    rings.on_time(int(7.1 * S))

    coarse = rings.coarse(Venue.BINANCE_USDM, "BTCUSDT")
    assert coarse.times().tolist() == [S, 2 * S, 6 * S, 7 * S]
    assert_rows_equal(
        coarse.window(),
        [[100.0, 1.0, 101.0, 1.0], [100.0, 1.0, 101.0, 1.0], [105.0, 2.0, 106.0, 2.0], [105.0, 2.0, 106.0, 2.0]],
    )
    assert rings.ignored_not_live == 1
    assert rings.fine(Venue.BINANCE_USDM, "BTCUSDT").invalidations == 1


def test_ring_set_stale_book_also_stops_rows() -> None:
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BYBIT_SPOT, "BTCUSDT")])
    rings.on_book_update(book_update(Venue.BYBIT_SPOT, 0))
    rings.on_time(int(1.5 * S))
    rings.on_book_health(book_health(Venue.BYBIT_SPOT, int(1.5 * S), BookState.STALE))
    rings.on_time(10 * S)
    assert rings.coarse(Venue.BYBIT_SPOT, "BTCUSDT").times().tolist() == [0, S]


def test_ring_set_retracts_the_rows_after_the_last_update_when_the_book_turns_out_broken() -> None:
    """A gap is noticed when the next message arrives: rows written after the last applied update held a
    book that may have missed one, so RESYNCING takes them back; the rows up to that update stay."""
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BINANCE_USDM, "BTCUSDT")])
    rings.on_time(int(0.1 * S))
    rings.on_book_update(book_update(Venue.BINANCE_USDM, int(0.1 * S)))
    rings.on_time(int(1.2 * S))
    rings.on_book_update(book_update(Venue.BINANCE_USDM, int(1.2 * S)))
    rings.on_time(int(3.7 * S))  # live: the timer wrote the 1.5 .. 3.5 s rows before the gap showed
    assert rings.fine(Venue.BINANCE_USDM, "BTCUSDT").times().tolist()[-1] == int(3.5 * S)

    rings.on_book_health(book_health(Venue.BINANCE_USDM, int(3.7 * S), BookState.RESYNCING))

    fine = rings.fine(Venue.BINANCE_USDM, "BTCUSDT")
    assert fine.times().tolist() == [int(0.5 * S), S]
    assert rings.coarse(Venue.BINANCE_USDM, "BTCUSDT").times().tolist() == [S]
    assert rings.rows_retracted == 5 + 2  # fine 1.5, 2, 2.5, 3, 3.5 s; coarse 2, 3 s
    assert fine.ring.appended == 7  # a counter of rows ever appended: readers see the ring changed
    rings.on_book_health(book_health(Venue.BINANCE_USDM, int(4.2 * S), BookState.LIVE))
    rings.on_time(int(5.1 * S))
    assert fine.times().tolist() == [int(0.5 * S), S, int(4.5 * S), 5 * S]


def test_ring_set_rows_stop_stale_after_s_past_the_last_update_and_resume_with_the_next() -> None:
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BYBIT_SPOT, "BTCUSDT")], stale_after_s=2.0)
    rings.on_book_update(book_update(Venue.BYBIT_SPOT, int(0.2 * S)))
    rings.on_time(int(1.1 * S))
    rings.on_time(int(9.3 * S))  # the next record, long after: rows up to 0.2 + 2 s only

    fine = rings.fine(Venue.BYBIT_SPOT, "BTCUSDT")
    assert fine.times().tolist() == [int(0.5 * S), S, int(1.5 * S), 2 * S]
    assert rings.coarse(Venue.BYBIT_SPOT, "BTCUSDT").times().tolist() == [S, 2 * S]
    assert rings.stale_stops == 1
    book.set([(102.0, 1.0)], [(103.0, 1.0)])
    rings.on_book_update(book_update(Venue.BYBIT_SPOT, int(9.3 * S)))  # updates flowing again
    rings.on_time(int(10.6 * S))
    assert fine.times().tolist()[4:] == [int(9.5 * S), 10 * S, int(10.5 * S)]
    assert fine.window()[-1, 0] == 102.0


def test_ring_set_a_tick_one_ns_past_stale_after_s_stops_the_rows() -> None:
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BYBIT_SPOT, "BTCUSDT")], stale_after_s=2.0)
    rings.on_book_update(book_update(Venue.BYBIT_SPOT, int(0.2 * S)))
    rings.on_time(int(2.2 * S) + 1)  # the first instant the book is older than stale_after_s

    assert rings.stale_stops == 1
    rings.on_time(int(5.1 * S))  # stopped: nothing more
    assert rings.fine(Venue.BYBIT_SPOT, "BTCUSDT").times().tolist() == [int(0.5 * S), S, int(1.5 * S), 2 * S]


def test_ring_set_counts_unknown_pairs_and_missing_books_without_growing() -> None:
    rings = RingSet(SMALL, lambda v, s: None, [(Venue.BYBIT_SPOT, "BTCUSDT")])
    nbytes = rings.nbytes

    rings.on_book_update(book_update(Venue.BYBIT_SPOT, 1, symbol="DOGEUSDT"))
    rings.on_book_update(book_update(Venue.BINANCE_SPOT, 1))
    rings.on_book_update(book_update(Venue.BYBIT_SPOT, 1))

    assert rings.unknown == 2
    assert rings.missing_book == 1
    assert rings.keys() == [(Venue.BYBIT_SPOT, "BTCUSDT")]
    assert rings.nbytes == nbytes
    assert len(rings.coarse(Venue.BYBIT_SPOT, "BTCUSDT")) == 0


def test_ring_set_from_default_settings_reports_fixed_total_memory() -> None:
    settings = BotSettings()
    rings = RingSet.from_settings(settings, lambda v, s: None)

    # 4 venues x 3 symbols; coarse 720 rows x (4*5) cols, fine 600 x (4*10), mirrored, + int64 times
    coarse = 2 * 720 * 20 * 8 + 2 * 720 * 8
    fine = 2 * 600 * 40 * 8 + 2 * 600 * 8
    assert len(rings.keys()) == 12
    assert rings.nbytes == 12 * (coarse + fine) == 7_626_240
    assert rings.coarse(Venue.BINANCE_USDM, "SOLUSDT").columns[-1] == "ask_sz_5"
    assert rings.fine(Venue.BINANCE_USDM, "SOLUSDT").interval_ms == 1000


def test_ring_set_reads_each_book_once_per_grid_tick_for_both_grids_never_per_change() -> None:
    book = FakeBook([(100.0, 1.0)], [(101.0, 1.0)])
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BYBIT_SPOT, "BTCUSDT")])

    rings.on_book_update(book_update(Venue.BYBIT_SPOT, 1))
    for k in range(2, 400):  # 398 changes within the first 0.4 s: no grid time passed, no read
        rings.on_time(k * 1_000_000)
        rings.on_book_update(book_update(Venue.BYBIT_SPOT, k * 1_000_000))
    assert book.top_calls == []
    rings.on_time(int(0.6 * S))  # fine grid time 0.5 s passed: one read serves both grids

    assert book.top_calls == [2]  # max(coarse 1, fine 2) levels


def test_ring_set_samples_the_real_order_book_after_snapshot_and_diffs() -> None:
    book_mod = pytest.importorskip("bot.book")
    book = book_mod.OrderBook("binance_spot", "BTCUSDT")
    rings = RingSet(SMALL, lambda v, s: book, [(Venue.BINANCE_SPOT, "BTCUSDT")])

    book.reset([(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 4.0), (102.0, 5.0)], 10, 0)
    rings.on_book_update(book_update(Venue.BINANCE_SPOT, int(0.1 * S)))
    rings.on_time(int(0.7 * S))
    book.apply([(100.0, 0.0), (99.5, 7.0)], [(100.5, 0.25)], 11, 0)  # best bid removed, new levels
    rings.on_book_update(book_update(Venue.BINANCE_SPOT, int(0.7 * S)))
    rings.on_time(int(1.1 * S))

    fine = rings.fine(Venue.BINANCE_SPOT, "BTCUSDT")
    assert fine.times().tolist() == [int(0.5 * S), S]
    assert_rows_equal(
        fine.window(),
        [
            [100.0, 1.0, 99.0, 2.0, 101.0, 4.0, 102.0, 5.0],
            [99.5, 7.0, 99.0, 2.0, 100.5, 0.25, 101.0, 4.0],
        ],
    )
    coarse = rings.coarse(Venue.BINANCE_SPOT, "BTCUSDT")  # fewer levels: its part of the one row read
    assert coarse.times().tolist() == [S]
    assert_rows_equal(coarse.window(), [[99.5, 7.0, 100.5, 0.25]])


def test_order_book_top_row_is_top_flattened_bids_then_asks_nan_where_thin() -> None:
    book_mod = pytest.importorskip("bot.book")
    book = book_mod.OrderBook("bybit_linear", "BTCUSDT")
    book.reset([(100.0, 1.0), (99.0, 2.0)], [(101.0, 4.0)], 1, 0)

    row = book.top_row(3)

    bids, asks = book.top(3)
    expected = [NAN] * 12
    for i, (px, sz) in enumerate(bids):
        expected[2 * i : 2 * i + 2] = [px, sz]
    for i, (px, sz) in enumerate(asks):
        expected[6 + 2 * i : 6 + 2 * i + 2] = [px, sz]
    assert_rows_equal(row, expected)
    assert_rows_equal(row, [100.0, 1.0, 99.0, 2.0, NAN, NAN, 101.0, 4.0, NAN, NAN, NAN, NAN])


def test_lob_grid_sample_row_writes_what_sample_writes_for_any_wider_row() -> None:
    bids, asks = [(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 4.0)]
    wide = np.full(4 * 4, NAN)  # the book read at 4 levels a side
    for i, (px, sz) in enumerate(bids):
        wide[2 * i : 2 * i + 2] = px, sz
    wide[8:10] = asks[0]
    for levels in (1, 2, 4):
        a, b = LobGrid(Venue.BYBIT_SPOT, "X", 1000, levels, 8), LobGrid(Venue.BYBIT_SPOT, "X", 1000, levels, 8)
        for g in (a, b):
            g.start(0)
        a.sample(int(2.5 * S), bids, asks)
        b.sample_row(int(2.5 * S), wide, 4)
        np.testing.assert_array_equal(a.window(), b.window())
        np.testing.assert_array_equal(a.times(), b.times())
        assert len(a) == 3


def test_lob_grid_change_older_than_a_written_row_applies_only_to_later_rows_and_is_counted() -> None:
    grid = make_grid(levels=1)
    book = FakeBook([(1.0, 1.0)], [(2.0, 1.0)])
    grid.on_book(0, book)
    grid.on_time(2 * S + 1)  # rows 0, 1 s, 2 s written

    grid.on_book(2 * S, book.set([(5.0, 1.0)], [(6.0, 1.0)]))  # stamped at the written 2 s row: late
    grid.on_time(3 * S + 1)

    assert grid.window()[:, 0].tolist() == [1.0, 1.0, 1.0, 5.0]
    assert grid.late_changes == 1
