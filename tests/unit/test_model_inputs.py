"""bot.model_inputs: windows read up to a common bar, and the one line that says which input a model waits for.

Rings and kline stores are filled by hand (fake books, synthetic bars with exact open times), so every
expected count, time and message below is known in advance.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bot.bus import EventBus  # noqa: E402
from bot.config import RingConfig  # noqa: E402
from bot.events import BookHealth, BookState, BookUpdate, KlineClosed, Venue  # noqa: E402
from bot.grid_set import RingSet  # noqa: E402
from bot.klines import KlineStore  # noqa: E402
from bot.model_inputs import RingWindowSource, explain_wait, streams  # noqa: E402
from models.features import n_features, warmup_rows  # noqa: E402
from models.inputs import CLASSES, build_input  # noqa: E402

pytestmark = pytest.mark.unit

NS = 1_000_000_000
MS = 1_000_000
V = Venue.BYBIT_LINEAR
T0_MS = 1_751_212_800_000  # 2025-06-29 16:00 UTC, a multiple of 1 h
RING = RingConfig(lob_interval_ms=5000, lob_levels=5, lob_capacity=64, fine_interval_ms=1000, fine_levels=10,
                  fine_capacity=64, kline_capacity=600)
FEATS = {"return_lags": [1], "vol_window": 2, "volume_window": 2, "ma_windows": [2], "rsi_period": 2}


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Book:
    def __init__(self, mid: float) -> None:
        self.bids = [(mid - i - 1, 1.0 + i) for i in range(10)]
        self.asks = [(mid + i + 1, 2.0 + i) for i in range(10)]

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return self.bids[:n], self.asks[:n]


class Market:
    def __init__(self, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")) -> None:
        self.bus = EventBus()
        self.books = {(V, s): Book(100.0 * (i + 1)) for i, s in enumerate(symbols)}
        self.rings = RingSet(RING, lambda v, s: self.books.get((v, s)), list(self.books))
        self.rings.attach(self.bus)
        self.klines = KlineStore(RING.kline_capacity)
        self.klines.attach(self.bus)
        self.source = RingWindowSource(self.rings, self.klines)
        self.source.attach(self.bus)

    def bar(self, symbol: str, interval_s: int, open_ms: int, recv_ns: int | None = None, px: float = 100.0) -> None:
        close_ns = (open_ms + interval_s * 1000) * MS
        c = px * (1 + 1e-3 * np.sin(open_ms / 6e7))
        self.bus.publish(KlineClosed(
            ts_event=close_ns, ts_recv=recv_ns if recv_ns is not None else close_ns + 100 * MS, venue=V,
            symbol=symbol, interval_s=interval_s, open_time_ms=open_ms, open=px, high=max(px, c) + 1,
            low=min(px, c) - 1, close=c, volume=5.0 + (open_ms // 60_000) % 3,
        ))  # fmt: skip

    def bars(self, symbol: str, interval_s: int, n: int, last_open_ms: int) -> None:
        for k in range(n):
            self.bar(symbol, interval_s, last_open_ms - (n - 1 - k) * interval_s * 1000)

    def health(self, symbol: str, state: BookState, ts: int) -> None:
        self.bus.publish(BookHealth(ts_event=ts, ts_recv=ts, venue=V, symbol=symbol, state=state, reason="test"))

    def update(self, symbol: str, ts: int) -> None:
        """The book changed at ``ts`` (receive time): its rows are good up to here (``bot.grid_set.GridSet``)."""
        bids, asks = self.books[(V, symbol)].top(1)
        self.bus.publish(BookUpdate(ts_event=ts, ts_recv=ts, venue=V, symbol=symbol, update_id=ts, bid_px=bids[0][0],
                                    bid_sz=bids[0][1], ask_px=asks[0][0], ask_sz=asks[0][1]))


def multiscale_spec() -> dict[str, Any]:
    """The shape of the multi-scale spec before the demo retraining: 1m, 5m, 15m, 1h; history 59."""
    return {"version": 1, "family": "multiscale", "kind": "klines", "venue": V.value, "symbol": "BTCUSDT",
            "scales": ["1m", "5m", "15m", "1h"], "intervals_s": [60, 300, 900, 3600], "windows": [60, 48, 32, 24],
            "history": 59, "features": FEATS}


def crossasset_spec() -> dict[str, Any]:
    nf = n_features_small()
    return {"version": 1, "family": "crossasset", "kind": "klines", "venue": V.value,
            "assets": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "interval_s": 60, "window": 4, "features": FEATS,
            "history": history_small(), "norm": {"mean": [[0.0] * nf] * 3, "std": [[1.5] * nf] * 3},
            "labels": {"horizon": 15, "return_scale": [0.01] * 3, "thresholds": [1e-3] * 3,
                       "classes": list(CLASSES)}}


def n_features_small() -> int:
    from models.features import KlineFeatureConfig

    return n_features(KlineFeatureConfig(return_lags=(1,), vol_window=2, volume_window=2, ma_windows=(2,),
                                         rsi_period=2))


def history_small() -> int:
    from models.features import KlineFeatureConfig

    return warmup_rows(KlineFeatureConfig(return_lags=(1,), vol_window=2, volume_window=2, ma_windows=(2,),
                                          rsi_period=2))


# -- why a multi-scale model waits --------------------------------------------------------------------


def test_the_scale_with_too_few_bars_is_named_with_the_count_needed_and_held() -> None:
    # Arrange: what the demo backfill holds (500 1m, 300 5m, 99 15m, 24 1h bars), all ending at T0
    m = Market()
    for iv, n in ((60, 500), (300, 300), (900, 99), (3600, 24)):
        m.bars("BTCUSDT", iv, n, T0_MS - iv * 1000)
    # Act
    x = build_input(multiscale_spec(), m.source, venue=V.value, symbol="BTCUSDT")
    why = explain_wait(multiscale_spec(), m.source, V, "BTCUSDT")
    # Assert: 24 + 59 warm-up bars of 1h are needed
    assert x is None
    assert why == "waiting for 83 bars of 1h bybit_linear/BTCUSDT, have 24"


def test_bars_before_a_gap_do_not_count_and_the_gap_is_dated() -> None:
    # Arrange: 500 contiguous 1m bars, then one bar a year later (a live bar after an old backfill)
    m = Market()
    m.bars("BTCUSDT", 60, 500, T0_MS)
    later = T0_MS + 365 * 86_400_000
    m.bar("BTCUSDT", 60, later)
    for iv in (300, 900, 3600):
        m.bars("BTCUSDT", iv, 200, T0_MS - iv * 1000)
    # Act
    why = explain_wait(multiscale_spec(), m.source, V, "BTCUSDT")
    # Assert
    assert why == f"waiting for 119 bars of 1m bybit_linear/BTCUSDT, have 1 since a gap after {_utc(T0_MS)}"


def test_a_stream_never_received_is_reported_with_none_held() -> None:
    m = Market()
    assert explain_wait(multiscale_spec(), m.source, V, "BTCUSDT") == (
        "waiting for 119 bars of 1m bybit_linear/BTCUSDT, have 0")


# -- why a book model waits ---------------------------------------------------------------------------


def tabl_spec(window: int = 10) -> dict[str, Any]:
    return {"version": 1, "family": "tabl", "kind": "lob", "venue": V.value, "symbol": "BTCUSDT", "grid": "fine",
            "interval_ms": 1000, "levels": 5, "window": window, "extras": ["mid", "spread", "imbalance"],
            "price_mode": "relative", "size_mode": "log1p"}


def test_a_book_model_counts_the_evenly_spaced_rows_since_the_last_gap() -> None:
    # Arrange: rows at 1..5 s, the book drops out for 3 s, then rows at 9..11 s
    m = Market()
    t0 = 1_700_000_000 * NS
    m.health("BTCUSDT", BookState.LIVE, t0 + 1)  # rows from the next grid time, t0 + 1 s
    for s in range(1, 6):
        m.rings.on_time(t0 + s * NS + 1)  # writes the rows of grid times before it
    assert len(m.rings.fine(V, "BTCUSDT")) == 5
    assert explain_wait(tabl_spec(), m.source, V, "BTCUSDT") == (
        "waiting for 10 rows of the 1s fine book grid of bybit_linear/BTCUSDT, have 5")
    m.health("BTCUSDT", BookState.STALE, t0 + 5 * NS + 2)
    m.rings.on_time(t0 + 8 * NS + 1)
    m.health("BTCUSDT", BookState.LIVE, t0 + 8 * NS + 2)
    for s in range(9, 12):
        m.rings.on_time(t0 + s * NS + 1)
    # Act
    times = m.rings.fine(V, "BTCUSDT").times()
    why = explain_wait(tabl_spec(), m.source, V, "BTCUSDT")
    # Assert: the rows are 1..5 and 9..11 s; the gap follows the row at 5 s (an hour-minute-second stamp)
    assert [int((t - t0) // NS) for t in times] == [1, 2, 3, 4, 5, 9, 10, 11]
    assert build_input(tabl_spec(), m.source, venue=V.value, symbol="BTCUSDT") is None
    stamp = datetime.fromtimestamp((t0 + 5 * NS) / 1e9, UTC).strftime("%H:%M:%S")
    assert why == ("waiting for 10 rows of the 1s fine book grid of bybit_linear/BTCUSDT, "
                   f"have 3 since a gap after {stamp}")


def test_books_on_different_grid_times_are_named_with_their_newest_rows() -> None:
    # Arrange: two books of a forecaster; the second drops out after 4 rows
    m = Market(("BTCUSDT", "ETHUSDT"))
    spec = {"version": 1, "family": "lobforecast", "kind": "lob", "venues": [V.value], "pairs": ["BTCUSDT", "ETHUSDT"],
            "target": [V.value, "BTCUSDT"], "grid": "fine", "interval_ms": 1000, "levels": 2, "window": 3}
    t0 = 1_700_000_000 * NS
    for s in ("BTCUSDT", "ETHUSDT"):
        m.health(s, BookState.LIVE, t0 + 1)
    for s in range(1, 5):
        m.rings.on_time(t0 + s * NS + 1)
        for sym in ("BTCUSDT", "ETHUSDT"):
            m.update(sym, t0 + s * NS + 1)
    m.health("ETHUSDT", BookState.RESYNCING, t0 + 4 * NS + 2)
    m.rings.on_time(t0 + 5 * NS + 1)
    # Act
    why = explain_wait(spec, m.source, V, "BTCUSDT")
    # Assert: BTC rows at 1..5 s, ETH at 1..4 s
    fmt = lambda t: datetime.fromtimestamp(t / 1e9, UTC).strftime("%H:%M:%S")  # noqa: E731
    assert len(m.rings.fine(V, "BTCUSDT")) == 5
    assert len(m.rings.fine(V, "ETHUSDT")) == 4
    assert build_input(spec, m.source, venue=V.value, symbol="BTCUSDT") is None
    assert why == ("waiting for the books on the same grid times (newest rows: "
                   f"bybit_linear/BTCUSDT {fmt(t0 + 5 * NS)}, bybit_linear/ETHUSDT {fmt(t0 + 4 * NS)})")


# -- cross-asset: read up to the common newest bar ----------------------------------------------------


def test_an_asset_ahead_of_the_others_is_read_up_to_their_common_newest_bar() -> None:
    # Arrange: BTC and ETH end at T0; SOL has two more bars (its file ends later, as in the demo)
    spec = crossasset_spec()
    n = spec["window"] + spec["history"]
    ahead, level = Market(), Market()
    for mk in (ahead, level):
        mk.bars("BTCUSDT", 60, n + 5, T0_MS)
        mk.bars("ETHUSDT", 60, n + 5, T0_MS)
    ahead.bars("SOLUSDT", 60, n + 7, T0_MS + 120_000)
    level.bars("SOLUSDT", 60, n + 5, T0_MS)  # the same bars without the two newer ones
    # Act
    ahead.source.reset()
    x = build_input(spec, ahead.source, venue=V.value, symbol="BTCUSDT")
    data_ns = ahead.source.newest_ns
    ref = build_input(spec, level.source, venue=V.value, symbol="BTCUSDT")
    # Assert: the same input bit for bit, with the data time of the bars used (received 100 ms after T0's close)
    assert x is not None
    assert ref is not None
    assert torch.equal(x, ref)
    assert data_ns == (T0_MS + 60_000) * MS + 100 * MS


def test_an_asset_lacking_the_common_bar_gives_no_input_and_names_that_bar() -> None:
    # Arrange: BTC and SOL end at T0; ETH is one bar ahead but misses the bar at T0
    spec = crossasset_spec()
    n = spec["window"] + spec["history"]
    m = Market()
    m.bars("BTCUSDT", 60, n, T0_MS)
    m.bars("SOLUSDT", 60, n, T0_MS)
    m.bars("ETHUSDT", 60, n, T0_MS - 60_000)
    m.bar("ETHUSDT", 60, T0_MS + 60_000)
    # Act / Assert
    assert build_input(spec, m.source, venue=V.value, symbol="BTCUSDT") is None
    assert explain_wait(spec, m.source, V, "BTCUSDT") == (
        f"waiting for the 1m bar of {_utc(T0_MS)} of bybit_linear/ETHUSDT (the other assets' newest)")


def test_cross_asset_counts_each_assets_bars_up_to_the_common_bar() -> None:
    spec = crossasset_spec()
    m = Market()
    for s in ("BTCUSDT", "ETHUSDT"):
        m.bars(s, 60, 50, T0_MS)
    m.bars("SOLUSDT", 60, 3, T0_MS)
    assert explain_wait(spec, m.source, V, "BTCUSDT") == (
        f"waiting for {spec['window'] + spec['history']} bars of 1m bybit_linear/SOLUSDT up to {_utc(T0_MS)}, have 3")


# -- the window source ----------------------------------------------------------------------------------


def test_klines_up_to_an_open_time_return_the_last_n_bars_opened_by_then() -> None:
    m = Market()
    m.bars("BTCUSDT", 60, 10, T0_MS)
    got = m.source.klines(V.value, "BTCUSDT", 60, 3, end_ms=T0_MS - 120_000)
    assert got is not None
    assert [int(t) for t in got[0]] == [T0_MS - 240_000, T0_MS - 180_000, T0_MS - 120_000]
    # the bar at end_ms is not the newest: its data time is its close time
    assert m.source.newest_ns == (T0_MS - 60_000) * MS
    assert m.source.klines(V.value, "BTCUSDT", 60, 9, end_ms=T0_MS - 120_000) is None  # only 8 by then


def test_streams_name_every_ring_a_spec_reads() -> None:
    assert streams(crossasset_spec(), V, "BTCUSDT") == tuple(
        ("klines", "bybit_linear", s, 60) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    assert streams(tabl_spec(), Venue.BINANCE_SPOT, "ETHUSDT") == (("lob", "binance_spot", "ETHUSDT", "fine"),)
