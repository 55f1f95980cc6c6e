"""Kline features: causality (bit for bit), warm-up, hand-checked values, and the real Binance klines."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from models.features import (
    KlineFeatureConfig,
    feature_names,
    feature_warmups,
    kline_features,
    n_features,
    warmup_rows,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BTC_1M = "benicio1007_bot_trading/f802e27/data/BTCUSDT_1m.csv"
COLUMNS = ("open", "high", "low", "close", "volume")


def _shared_data() -> Path:
    return Path(os.environ.get("BOT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _random_bars(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """A valid random OHLCV series: positive prices, high >= max(open, close) >= low, some flat bars."""
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1.0 + rng.exponential(5e-4, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(5e-4, n))
    flat = rng.random(n) < 0.05
    high[flat] = low[flat] = open_[flat] = close[flat]
    volume = rng.exponential(10.0, n)
    volume[rng.random(n) < 0.05] = 0.0
    return open_, high, low, close, volume


def _col(name: str) -> int:
    return feature_names().index(name)


def test_default_feature_names_and_warmups_are_the_documented_ones() -> None:
    assert feature_warmups() == {
        "logret_1": 1, "logret_3": 3, "logret_6": 6, "logret_12": 12,
        "vol_20": 20, "volume_ratio_20": 19, "hl_range": 0, "close_pos": 0,
        "ma_ratio_5": 4, "ma_ratio_20": 19, "ma_ratio_60": 59, "rsi_14": 14,
    }  # fmt: skip
    assert n_features() == 12
    assert warmup_rows() == 59
    assert warmup_rows(KlineFeatureConfig(ma_windows=(5, 10), vol_window=30)) == 30


def test_each_feature_is_nan_exactly_for_its_warmup_rows_then_finite() -> None:
    # Arrange
    bars = _random_bars(np.random.default_rng(1), 300)
    # Act
    x = kline_features(*bars)
    # Assert
    assert x.dtype == np.float32
    assert x.shape == (300, 12)
    for j, (name, warm) in enumerate(feature_warmups().items()):
        assert np.isnan(x[:warm, j]).all(), name
        assert np.isfinite(x[warm:, j]).all(), name


def test_changing_any_bar_after_t_leaves_every_row_up_to_t_bit_identical() -> None:
    rng = np.random.default_rng(7)
    n = 400
    base = _random_bars(rng, n)
    before = kline_features(*base)
    for t in rng.integers(0, n - 1, size=25):
        # Arrange: a different, still valid future from t+1 on (all five columns change)
        future = _random_bars(rng, n)
        changed = tuple(np.r_[b[: t + 1], f[t + 1 :]] for b, f in zip(base, future, strict=True))
        # Act
        after = kline_features(*changed)
        # Assert: exact equality, NaN == NaN in the warm-up
        np.testing.assert_array_equal(after[: t + 1], before[: t + 1], err_msg=f"t={t}")
        assert not np.array_equal(after[t + 1 :], before[t + 1 :], equal_nan=True)


def test_wilder_rsi_on_hand_built_series() -> None:
    n = 40
    up = np.arange(1.0, n + 1.0) + 100.0
    alternating = 100.0 + np.array([i % 2 for i in range(n)], dtype=float)  # +1, -1, +1, ...
    flat = np.full(n, 100.0)
    rsi = _col("rsi_14")

    def rsi_of(close: np.ndarray) -> np.ndarray:
        return kline_features(close, close, close, close, np.ones_like(close))[:, rsi]

    assert np.isnan(rsi_of(up)[:14]).all()
    assert (rsi_of(up)[14:] == 100.0).all()
    assert (rsi_of(up[::-1].copy())[14:] == 0.0).all()
    assert (rsi_of(flat)[14:] == 50.0).all()
    # closes 100, 101, 100, ...: the seed (changes 0..13) holds 7 gains and 7 losses of 1 -> 50.
    # Row 15 adds a gain (c[14]=100 -> c[15]=101): g = (0.5*13 + 1)/14 = 7.5/14, l = 6.5/14.
    # Row 16 adds a loss: g = 7.5*13/14/14, l = (6.5*13/14 + 1)/14.
    alt = rsi_of(alternating)
    assert alt[14] == pytest.approx(50.0, abs=1e-5)
    assert alt[15] == pytest.approx(100.0 * 7.5 / 14.0, rel=1e-6)
    g16, l16 = 7.5 * 13 / 14, 6.5 * 13 / 14 + 1
    assert alt[16] == pytest.approx(100.0 * g16 / (g16 + l16), rel=1e-6)


def test_close_position_is_one_half_on_a_bar_with_no_range_and_volume_ratio_one_on_zero_volume() -> None:
    close = np.full(30, 50.0)
    x = kline_features(close, close, close, close, np.zeros(30))
    assert (x[:, _col("close_pos")] == 0.5).all()
    assert (x[:, _col("hl_range")] == 0.0).all()
    assert (x[19:, _col("volume_ratio_20")] == 1.0).all()
    assert np.isnan(x[:19, _col("volume_ratio_20")]).all()


def test_series_shorter_than_every_window_gives_nan_without_error() -> None:
    bars = _random_bars(np.random.default_rng(3), 5)
    x = kline_features(*bars)
    assert x.shape == (5, 12)
    assert np.isnan(x[:, _col("ma_ratio_60")]).all()
    assert np.isnan(x[:, _col("rsi_14")]).all()
    assert np.isfinite(x[:, _col("close_pos")]).all()


@pytest.mark.parametrize(
    ("column", "index", "value", "message"),
    [
        ("close", 7, np.nan, r"close\[7\] is not finite"),
        ("low", 3, -1.0, r"low\[3\] is not a positive price"),
        ("volume", 9, -0.5, r"volume\[9\] is negative"),
        ("high", 4, 1.0, r"high\[4\] is below low"),
    ],
)
def test_bad_bars_raise_a_message_naming_column_and_row(column: str, index: int, value: float, message: str) -> None:
    bars = dict(zip(COLUMNS, (np.array(b) for b in _random_bars(np.random.default_rng(0), 20)), strict=True))
    bars[column][index] = value
    with pytest.raises(ValueError, match=message):
        kline_features(*bars.values())


def test_mismatched_lengths_and_two_dimensional_input_are_refused() -> None:
    o, h, lo, c, v = _random_bars(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match="volume has 19 rows, open has 20"):
        kline_features(o, h, lo, c, v[:-1])
    with pytest.raises(ValueError, match="must be 1-D"):
        kline_features(o[None], h[None], lo[None], c[None], v[None])


# --- the real Binance 1m klines -----------------------------------------------------------------


@pytest.fixture(scope="module")
def btc_1m() -> dict[str, np.ndarray]:
    path = _shared_data() / BTC_1M
    if not path.is_file():
        pytest.skip(f"shared data not found: {path} (set BOT_SHARED_DATA)")
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(path)
    return {c: df[c].to_numpy(dtype=np.float64) for c in COLUMNS}


def test_real_btc_klines_features_are_finite_after_warmup_and_rsi_is_bounded(btc_1m: dict[str, np.ndarray]) -> None:
    x = kline_features(*(btc_1m[c] for c in COLUMNS))
    assert x.shape == (40_000, 12)
    assert not np.isinf(x).any()
    assert np.isfinite(x[warmup_rows() :]).all()
    rsi = x[14:, _col("rsi_14")]
    assert rsi.min() >= 0.0
    assert rsi.max() <= 100.0
    assert np.nanmin(x[:, _col("close_pos")]) >= 0.0
    assert np.nanmax(x[:, _col("close_pos")]) <= 1.0


def test_real_btc_klines_first_rows_match_values_worked_out_from_the_csv(btc_1m: dict[str, np.ndarray]) -> None:
    x = kline_features(*(btc_1m[c] for c in COLUMNS))
    # 2023-01-01 00:00 .. 00:04: O H L C V as in the file
    closes = [16543.67, 16539.31, 16536.43, 16533.65, 16535.38]
    assert x[0, _col("hl_range")] == pytest.approx((16544.76 - 16538.45) / 16543.67, rel=1e-6)
    assert x[0, _col("close_pos")] == pytest.approx((16543.67 - 16538.45) / (16544.76 - 16538.45), rel=1e-6)
    assert x[1, _col("logret_1")] == pytest.approx(math.log(16539.31 / 16543.67), rel=1e-6)
    assert x[3, _col("logret_3")] == pytest.approx(math.log(16533.65 / 16543.67), rel=1e-6)
    assert x[4, _col("ma_ratio_5")] == pytest.approx(16535.38 / (sum(closes) / 5) - 1.0, rel=1e-5)
    assert np.isnan(x[3, _col("ma_ratio_5")])


def test_real_btc_rolling_features_agree_with_pandas_rolling(btc_1m: dict[str, np.ndarray]) -> None:
    pd = pytest.importorskip("pandas")
    x = kline_features(*(btc_1m[c] for c in COLUMNS))
    close, volume = pd.Series(btc_1m["close"]), pd.Series(btc_1m["volume"])
    ret = np.log(close).diff()
    expected = {
        "ma_ratio_60": close / close.rolling(60).mean() - 1.0,
        "vol_20": ret.rolling(20).std(),
        "volume_ratio_20": volume / volume.rolling(20).mean(),
    }
    for name, series in expected.items():
        np.testing.assert_allclose(x[:, _col(name)], series.to_numpy(), rtol=2e-5, atol=1e-9, err_msg=name)
