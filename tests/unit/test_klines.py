"""KlineStore, merge_backfill, Resampler (checked against the venues' own bars) and the CSV loader."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from bot.bus import EventBus
from bot.config import KlineConfig
from bot.errors import ConfigError, DataIntegrityError
from bot.events import KlineClosed, Venue
from bot.klines import KlineStore, Resampler, decimal_sum, load_kline_csv, merge_backfill, resample

pytestmark = pytest.mark.unit

MIN_MS = 60_000
T0 = 1_672_531_200_000  # 2023-01-01 00:00 UTC, a multiple of every interval up to 1 d


def shared_data() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


def shared_file(rel: str) -> Path:
    p = shared_data() / rel
    if not p.is_file():
        pytest.skip(f"shared data file missing: {p}")
    return p


def bar(
    open_time_ms: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    v: float,
    *,
    interval_s: int = 60,
    venue: Venue = Venue.BINANCE_SPOT,
    symbol: str = "BTCUSDT",
    source: str = "ws",
) -> KlineClosed:
    close_ns = (open_time_ms + interval_s * 1000) * 1_000_000
    return KlineClosed(
        ts_event=close_ns, ts_recv=close_ns + 5_000_000, venue=venue, symbol=symbol, interval_s=interval_s,
        open_time_ms=open_time_ms, open=o, high=h, low=lo, close=c, volume=v, source=source,
    )  # fmt: skip


def minute(i: int, price: float | None = None, **kw: object) -> KlineClosed:
    """The i-th 1m bar after T0 with simple, distinct values."""
    p = 100.0 + i if price is None else price
    return bar(T0 + i * MIN_MS, p, p + 0.5, p - 0.5, p + 0.25, 1.0 + i, **kw)  # type: ignore[arg-type]


def ohlcv(k: KlineClosed) -> tuple[int, float, float, float, float, float]:
    return (k.open_time_ms, k.open, k.high, k.low, k.close, k.volume)


def feed(r: Resampler, bars: Iterable[KlineClosed]) -> list[KlineClosed]:
    out: list[KlineClosed] = []
    for k in bars:
        out.extend(r.on_kline(k))
    return out


# -- loader ------------------------------------------------------------------------------------------------


def test_load_kline_csv_reads_naive_utc_timestamps_of_the_binance_files() -> None:
    bars = load_kline_csv(shared_file("benicio1007_bot_trading/f802e27/data/BTCUSDT_1m.csv"), venue=Venue.BINANCE_SPOT)

    assert len(bars) == 40_000
    first = bars[0]
    # 2023-01-01 00:00:00,16541.77,16544.76,16538.45,16543.67,83.08143
    assert (first.symbol, first.interval_s, first.source) == ("BTCUSDT", 60, "rest")
    assert ohlcv(first) == (T0, 16541.77, 16544.76, 16538.45, 16543.67, 83.08143)
    assert first.ts_event == (T0 + MIN_MS) * 1_000_000
    assert bars[-1].open_time_ms == T0 + 39_999 * MIN_MS  # 2023-01-28 18:39 UTC


def test_load_kline_csv_reads_iso_offset_timestamps_of_the_bybit_files_and_60m_names() -> None:
    bars = load_kline_csv(
        shared_file("cobra0506_crypto_backtester/14bef5f/data/BTCUSDT_60m.csv"), venue=Venue.BYBIT_LINEAR
    )

    assert len(bars) == 720
    # 2025-05-30 17:00:00+00:00,103875.4,104270.0,103817.0,104161.9,3544.932
    assert bars[0].interval_s == 3600
    assert ohlcv(bars[0]) == (1_748_624_400_000, 103875.4, 104270.0, 103817.0, 104161.9, 3544.932)
    assert bars[0].ts_event == (1_748_624_400_000 + 3_600_000) * 1_000_000


def write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


def test_load_kline_csv_honours_non_utc_offsets_and_epoch_ms(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "x.csv",
        "timestamp,open,high,low,close,volume\n"
        "2023-01-01T02:00:00+02:00,1,2,0.5,1.5,10\n"
        f"{T0 + MIN_MS},1.5,2,1,1.75,0\n",
    )
    bars = load_kline_csv(p, venue=Venue.BYBIT_SPOT, symbol="ethusdt", interval_s=60, source="csv")
    assert [(k.open_time_ms, k.symbol, k.source) for k in bars] == [
        (T0, "ETHUSDT", "csv"),
        (T0 + MIN_MS, "ETHUSDT", "csv"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("timestamp,open,high,low,close\n2023-01-01 00:00:00,1,2,0.5,1.5\n", r"lacks column\(s\) \['volume'\]"),
        ("timestamp,open,high,low,close,volume\n2023-01-01 00:00:00,1,2,0.5,abc,3\n", r"x_1m\.csv:2: bad number"),
        ("timestamp,open,high,low,close,volume\n2023-13-01 00:00:00,1,2,0.5,1.5,3\n", r":2: bad timestamp"),
        ("timestamp,open,high,low,close,volume\n2023-01-01 00:00:00,1,2,0.5\n", r":2: expected 6 fields, got 4"),
        ("timestamp,open,high,low,close,volume\n2023-01-01 00:00:30,1,2,0.5,1.5,3\n", r":2: .*not a multiple"),
        ("timestamp,open,high,low,close,volume\n2023-01-01 00:00:00,1,2,1.2,1.5,3\n", r":2: inconsistent bar"),
        ("timestamp,open,high,low,close,volume\n2023-01-01 00:00:00,1,2,0.5,1.5,nan\n", r":2: non-finite"),
        (
            "timestamp,open,high,low,close,volume\n2023-01-01 00:01:00,1,2,0.5,1.5,3\n"
            "2023-01-01 00:00:00,1,2,0.5,1.5,3\n",
            r":3: timestamp 2023-01-01 00:00:00 is not after the previous row",
        ),
    ],
)
def test_load_kline_csv_names_file_and_line_of_malformed_rows(tmp_path: Path, body: str, message: str) -> None:
    p = write(tmp_path, "x_1m.csv", body)
    with pytest.raises(DataIntegrityError, match=message):
        load_kline_csv(p, venue=Venue.BINANCE_SPOT)


def test_load_kline_csv_missing_file_or_unnamed_interval_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kline file not found"):
        load_kline_csv(tmp_path / "nope_1m.csv", venue=Venue.BINANCE_SPOT)
    p = write(tmp_path, "prices.csv", "timestamp,open,high,low,close,volume\n")
    with pytest.raises(ConfigError, match="cannot tell the symbol"):
        load_kline_csv(p, venue=Venue.BINANCE_SPOT)
    with pytest.raises(ConfigError, match="cannot tell the interval"):
        load_kline_csv(p, venue=Venue.BINANCE_SPOT, symbol="BTCUSDT")


# -- resampling against the venues' own bars ---------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_resampled_binance_1m_equals_binance_5m_row_for_row_over_the_overlap(symbol: str) -> None:
    base = "benicio1007_bot_trading/f802e27/data"
    m1 = load_kline_csv(shared_file(f"{base}/{symbol}_1m.csv"), venue=Venue.BINANCE_SPOT)
    venue_5m = load_kline_csv(shared_file(f"{base}/{symbol}_5m.csv"), venue=Venue.BINANCE_SPOT)

    ours = resample(m1, 300)

    overlap = venue_5m[: len(ours)]
    assert len(ours) == 8000  # 40000 minutes, every bucket complete
    assert [k.open_time_ms for k in ours] == [k.open_time_ms for k in overlap]
    mismatches = [(a, b) for a, b in zip(map(ohlcv, ours), map(ohlcv, overlap), strict=True) if a != b]
    assert mismatches == []  # exact, volume included
    assert {k.source for k in ours} == {"resampled"}
    assert all(k.ts_event == (k.open_time_ms + 300_000) * 1_000_000 for k in ours)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_resampled_bybit_1m_equals_bybit_15m_and_60m_where_complete(symbol: str) -> None:
    m1 = load_kline_csv(
        shared_file(f"cobra0506_crypto_backtester/33c8800/data/{symbol}_1m.csv"), venue=Venue.BYBIT_LINEAR
    )
    r = Resampler([900, 3600])

    ours = feed(r, m1)

    for interval, name, want_n in ((900, "15m", 2879), (3600, "60m", 719)):
        venue = load_kline_csv(
            shared_file(f"cobra0506_crypto_backtester/14bef5f/data/{symbol}_{name}.csv"), venue=Venue.BYBIT_LINEAR
        )
        by_time = {k.open_time_ms: k for k in venue}
        mine = [k for k in ours if k.interval_s == interval]
        # The 1m file starts mid-bucket (16:39 / 16:41) and ends mid-bucket: those two buckets are
        # incomplete and not emitted; every complete one lies inside the venue file's range.
        assert len(mine) == want_n
        assert all(k.open_time_ms in by_time for k in mine)
        assert [ohlcv(k) for k in mine] == [ohlcv(by_time[k.open_time_ms]) for k in mine]
    assert r.incomplete == 2  # the leading partial 15m and 60m buckets (trailing ones never closed)


def test_incomplete_leading_bybit_bucket_is_flagged_partial_and_differs_from_the_venue_bar() -> None:
    m1 = load_kline_csv(
        shared_file("cobra0506_crypto_backtester/33c8800/data/BTCUSDT_1m.csv"), venue=Venue.BYBIT_LINEAR
    )[:30]
    venue_15m = load_kline_csv(
        shared_file("cobra0506_crypto_backtester/14bef5f/data/BTCUSDT_15m.csv"), venue=Venue.BYBIT_LINEAR
    )
    by_time = {k.open_time_ms: k for k in venue_15m}

    out = feed(Resampler([900], emit_incomplete=True), m1)

    partial = out[0]  # 16:30 bucket, 1m data only from 16:39: six of fifteen minutes
    assert partial.source == "resampled_partial"
    assert partial.open_time_ms == 1_748_622_600_000  # 2025-05-30 16:30 UTC
    assert partial.open == 104217.5  # the 16:39 open, not the venue's 16:30 open
    assert ohlcv(partial) != ohlcv(by_time[partial.open_time_ms])
    assert [k.source for k in out[1:]] == ["resampled"]
    assert ohlcv(out[1]) == ohlcv(by_time[out[1].open_time_ms])


# -- resampler rules ----------------------------------------------------------------------------------------


def test_resampler_emits_a_bucket_only_when_its_last_minute_closes_with_the_bucket_close_time() -> None:
    r = Resampler([300])
    emitted_after = [len(r.on_kline(minute(i))) for i in range(10)]

    assert emitted_after == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    r2 = Resampler([300])
    out = feed(r2, [minute(i) for i in range(5)])
    k = out[0]
    assert ohlcv(k) == (T0, 100.0, 104.5, 99.5, 104.25, 15.0)  # volumes 1+2+3+4+5
    assert (k.interval_s, k.source, k.venue, k.symbol) == (300, "resampled", Venue.BINANCE_SPOT, "BTCUSDT")
    assert k.ts_event == (T0 + 300_000) * 1_000_000
    assert k.ts_recv == minute(4).ts_recv


def test_resampler_drops_incomplete_buckets_by_default_and_counts_them() -> None:
    r = Resampler([300])
    bars = [minute(i) for i in range(15) if i not in (2, 9)]  # bucket 0 lacks 00:02, bucket 1 lacks its last

    out = feed(r, bars)

    assert [k.open_time_ms for k in out] == [T0 + 10 * MIN_MS]
    assert r.incomplete == 2


def test_resampler_emit_incomplete_flags_partial_bars_at_their_own_close_time() -> None:
    r = Resampler([300], emit_incomplete=True)
    bars = [minute(i) for i in range(12) if i not in (2, 9)]

    out = feed(r, bars)

    assert [(k.open_time_ms, k.source) for k in out] == [(T0, "resampled_partial"), (T0 + 300_000, "resampled_partial")]
    assert ohlcv(out[0]) == (T0, 100.0, 104.5, 99.5, 104.25, 1.0 + 2.0 + 4.0 + 5.0)
    # bucket 1 (00:05..00:09) ends at 00:08 and is only known incomplete when 00:10 arrives
    assert ohlcv(out[1]) == (T0 + 300_000, 105.0, 108.5, 104.5, 108.25, 6.0 + 7.0 + 8.0 + 9.0)
    assert out[1].ts_event == (T0 + 600_000) * 1_000_000
    assert out[1].ts_recv == minute(10).ts_recv


def test_resampler_duplicate_minute_replaces_late_minute_is_ignored_other_intervals_ignored() -> None:
    r = Resampler([300])
    r.on_kline(minute(0))
    r.on_kline(minute(1, price=50.0))
    r.on_kline(minute(1))  # same open time again (ws then rest): replaces
    r.on_kline(minute(0, interval_s=300))  # not a base bar
    out = feed(r, [minute(i) for i in range(2, 5)])
    late = r.on_kline(minute(3, price=1.0))  # its bucket is already out

    assert [ohlcv(k) for k in out] == [(T0, 100.0, 104.5, 99.5, 104.25, 15.0)]
    assert late == []
    assert (r.late, r.ignored, r.emitted) == (1, 1, 1)


def test_resampler_keeps_venues_and_symbols_apart() -> None:
    r = Resampler([300])
    a = [minute(i, symbol="BTCUSDT") for i in range(5)]
    b = [minute(i, price=7.0, symbol="ETHUSDT", venue=Venue.BYBIT_SPOT) for i in range(5)]

    out = feed(r, [x for pair in zip(a, b, strict=True) for x in pair])

    assert [(k.venue, k.symbol, k.open, k.close) for k in out] == [
        (Venue.BINANCE_SPOT, "BTCUSDT", 100.0, 104.25),
        (Venue.BYBIT_SPOT, "ETHUSDT", 7.0, 7.25),
    ]


def test_resampler_buckets_align_to_utc_epoch_multiples_for_1h_and_4h() -> None:
    start = T0 + 30 * MIN_MS  # 00:30: the first 1h bucket (00:00) is incomplete
    bars = [bar(start + i * MIN_MS, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(5 * 60)]

    out = feed(Resampler([3600, 14400]), bars)

    assert [(k.interval_s, k.open_time_ms - T0) for k in out] == [
        (3600, 3_600_000), (3600, 7_200_000), (3600, 10_800_000), (3600, 14_400_000)
    ]  # fmt: skip


def test_resampler_from_config_skips_the_base_and_refuses_non_multiples() -> None:
    assert Resampler.from_config(KlineConfig()).targets_s == (300, 900, 3600)
    with pytest.raises(ConfigError, match="multiples"):
        Resampler([90])


def test_no_look_ahead_emitted_bars_never_outrun_the_feed_and_later_data_never_changes_them() -> None:
    # Arrange: 1500 real minutes with a few holes, so incomplete (partial) bars are exercised too
    m1 = load_kline_csv(shared_file("benicio1007_bot_trading/f802e27/data/BTCUSDT_1m.csv"), venue=Venue.BINANCE_SPOT)
    rng = random.Random(3)
    holes = set(rng.sample(range(1500), 12))
    bars = [k for i, k in enumerate(m1[:1500]) if i not in holes]

    def run(series: list[KlineClosed]) -> list[list[KlineClosed]]:
        r = Resampler([300, 900, 3600], emit_incomplete=True)
        emitted: list[list[KlineClosed]] = []  # cumulative output after each 1m bar
        so_far: list[KlineClosed] = []
        for k in series:
            for e in r.on_kline(k):
                assert e.ts_event <= k.ts_event  # never a bar closing after the latest closed minute
                so_far.append(e)
            emitted.append(list(so_far))
        return emitted

    base = run(bars)
    assert len(base[-1]) > 100
    assert any(k.source == "resampled_partial" for k in base[-1])

    for cut in (0, 4, 5, 333, 777, len(bars) - 2):
        t_ns = bars[cut].ts_event
        # Act: change every value of every minute after the cut
        changed = bars[: cut + 1] + [
            bar(k.open_time_ms, k.open * 2, k.high * 3, k.low / 2, k.close * 2, k.volume + 1.0) for k in bars[cut + 1 :]
        ]
        other = run(changed)
        # Assert: everything emitted by time t (after feeding the minute closing at t) is unchanged
        assert other[cut] == base[cut]
        assert all(e.ts_event <= t_ns for e in base[cut])


def test_decimal_sum_matches_decimal_addition_where_a_plain_float_sum_does_not() -> None:
    vals = [0.1, 0.2]
    assert sum(vals) != 0.3
    assert decimal_sum(vals) == 0.3
    assert decimal_sum([83.08143, 80.453, 1e-05]) == 83.08143 + 80.453 + 1e-05  # exponent form: fsum only
    assert decimal_sum([]) == 0.0


# -- store ---------------------------------------------------------------------------------------------------


def test_kline_store_appends_replaces_same_open_time_and_inserts_older_bars_in_order() -> None:
    store = KlineStore(capacity=5)
    assert store.add(minute(0)) == "appended"
    assert store.add(minute(3)) == "appended"  # a gap: minutes 1 and 2 missing
    assert store.add(minute(3, price=7.0)) == "replaced"
    assert store.add(minute(1)) == "inserted"
    assert store.add(minute(1, price=9.0)) == "replaced"

    assert store.times(Venue.BINANCE_SPOT, "BTCUSDT", 60).tolist() == [T0, T0 + MIN_MS, T0 + 3 * MIN_MS]
    np.testing.assert_array_equal(
        store.window(Venue.BINANCE_SPOT, "BTCUSDT", 60),
        [[100.0, 100.5, 99.5, 100.25, 1.0], [9.0, 9.5, 8.5, 9.25, 2.0], [7.0, 7.5, 6.5, 7.25, 4.0]],
    )
    assert store.window(Venue.BINANCE_SPOT, "BTCUSDT", 60, 1).tolist() == [[7.0, 7.5, 6.5, 7.25, 4.0]]
    assert store.window(Venue.BINANCE_SPOT, "ETHUSDT", 60).shape == (0, 5)
    assert store.times(Venue.BINANCE_SPOT, "ETHUSDT", 60).shape == (0,)


def test_kline_store_full_ring_drops_bars_older_than_its_oldest_and_rejects_bad_bars() -> None:
    store = KlineStore(capacity=3)
    for i in range(2, 6):
        store.add(minute(i))

    assert store.add(minute(1)) == "dropped_old"
    assert store.add(bar(T0 + 30_000, 1, 1, 1, 1, 1)) == "rejected"  # misaligned open time
    assert store.add(bar(T0, 1, 1, 2, 1, 1)) == "rejected"  # low above open
    assert store.add(bar(T0, float("nan"), 1, 1, 1, 1)) == "rejected"
    assert store.times(Venue.BINANCE_SPOT, "BTCUSDT", 60).tolist() == [T0 + i * MIN_MS for i in (3, 4, 5)]
    assert (store.dropped_old, store.rejected) == (1, 3)


def test_merge_backfill_merges_in_order_incoming_wins_same_open_time_and_refuses_open_candle() -> None:
    store = KlineStore(capacity=100)
    for i in range(10, 21):  # live bars 10..20
        store.add(minute(i))
    backfill = [minute(i, price=500.0 + i, source="rest") for i in range(0, 16)]
    still_open = minute(21, source="rest")  # REST returns the current candle last; it closes at minute 22
    now_ns = (T0 + 21 * MIN_MS + 30_000) * 1_000_000

    report = merge_backfill(store, [*backfill, still_open], now_ns=now_ns)

    times = store.times(Venue.BINANCE_SPOT, "BTCUSDT", 60).tolist()
    closes = store.window(Venue.BINANCE_SPOT, "BTCUSDT", 60)[:, 3].tolist()
    assert times == [T0 + i * MIN_MS for i in range(21)]
    assert closes == [500.25 + i for i in range(16)] + [100.25 + i for i in range(16, 21)]
    assert (report.added, report.replaced, report.not_closed, report.dropped_old, report.rejected) == (10, 6, 1, 0, 0)


def test_merge_backfill_keeps_the_newest_capacity_bars_and_reports_the_rest() -> None:
    store = KlineStore(capacity=4)
    store.add(minute(9))
    report = merge_backfill(store, [minute(i) for i in range(9)] + [bar(T0 + 1, 1, 1, 1, 1, 1)])
    assert store.times(Venue.BINANCE_SPOT, "BTCUSDT", 60).tolist() == [T0 + i * MIN_MS for i in range(6, 10)]
    assert (report.added, report.dropped_old, report.rejected) == (9, 6, 1)


def test_kline_store_memory_is_fixed_by_capacity_per_key() -> None:
    store = KlineStore(capacity=1000)
    store.add(minute(0))
    nbytes = store.nbytes
    for i in range(1, 5000):
        store.add(minute(i))
    assert store.nbytes == nbytes == 2 * 1000 * 5 * 8 + 2 * 1000 * 8
    assert len(store.ring(Venue.BINANCE_SPOT, "BTCUSDT", 60) or ()) == 1000


def test_bus_wiring_resampled_bars_reach_the_store_next_to_the_minutes() -> None:
    bus = EventBus()
    store = KlineStore(capacity=50)
    store.attach(bus)
    Resampler([300, 900]).attach(bus)

    for i in range(30):
        bus.publish(minute(i))

    assert len(store.window(Venue.BINANCE_SPOT, "BTCUSDT", 60)) == 30
    assert store.times(Venue.BINANCE_SPOT, "BTCUSDT", 300).tolist() == [T0 + i * 300_000 for i in range(6)]
    assert store.times(Venue.BINANCE_SPOT, "BTCUSDT", 900).tolist() == [T0, T0 + 900_000]
    np.testing.assert_array_equal(
        store.window(Venue.BINANCE_SPOT, "BTCUSDT", 900, 1), [[115.0, 129.5, 114.5, 129.25, sum(range(16, 31))]]
    )
    assert bus.handler_errors == 0
